"""How the steps of Algorithm 1 run fast on one device, beside the algorithm itself.

Stage 1 replays its optimiser step as a CUDA graph (`run_steps`); f_c reads its temporal
features through a split first layer (`first_layer`) and a memory table of the selected clips
(`memory_table`); host tensors reach the device without waiting (`to_device`); bf16 autocast
on CUDA (`autocast`). None of this changes what is computed, only how.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch.nn import functional as F

from cupl.method.mining import context_features, context_memory
from cupl.util import progress as progress_bar


def autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        # no cast cache: each region casts its weights once anyway, and CUDA graphs forbid it
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()

def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)

def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to the device without waiting for queued work (pinned memory on CUDA)."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)

def feature_dtype(device, amp: bool) -> torch.dtype:
    """bfloat16 on CUDA with amp (half the memory of float32; autocast runs every matmul in
    bfloat16 anyway), float32 otherwise."""
    return torch.bfloat16 if amp and torch.device(device).type == "cuda" else torch.float32

def run_steps(step, videos: torch.Tensor, crops: torch.Tensor, optimizer, *, graph: bool, progress: bool,
               desc: str, warmup: int = 3):
    """step(videos[s], crops[s]) for every step s in order, gradients cleared before each.

    With `graph` (CUDA): the first `warmup` steps run eagerly on a side stream, as CUDA graphs
    need; one step is captured, and the graph is replayed for the remaining steps with their
    indices copied into its input buffers, one launch per step instead of a few hundred
    small kernels launched from Python (a stage-1 step was 4 ms of launches on an H200).
    The optimizer must be `capturable`. Should capture fail, the remaining steps run eagerly.
    """
    steps, done = len(videos), 0
    if graph and steps > warmup:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for s in range(warmup):
                optimizer.zero_grad(set_to_none=True)
                step(videos[s], crops[s])
        torch.cuda.current_stream().wait_stream(side)
        done = warmup
        static_v, static_c = videos[warmup].clone(), crops[warmup].clone()
        captured = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)  # backward in the graph then writes, not adds, the gradients
        try:
            with torch.cuda.graph(captured):
                step(static_v, static_c)
        except RuntimeError as err:
            warnings.warn(f"{desc}: CUDA graph capture failed, the remaining steps run eagerly ({err})")
        else:
            for s in progress_bar(range(warmup, steps), progress, desc=desc, leave=False):
                static_v.copy_(videos[s])
                static_c.copy_(crops[s])
                captured.replay()
            done = steps
    for s in progress_bar(range(done, steps), progress, desc=desc, leave=False):
        optimizer.zero_grad(set_to_none=True)
        step(videos[s], crops[s])
    optimizer.zero_grad(set_to_none=True)

def first_layer(model, split: Split, window: int | None, batch_size: int, amp: bool,
                 project: bool | None = None):
    """Yield (lo, hi, h) over runs of clips: h [(hi - lo) C, K, h1] = ReLU of the first layer
    of every crop of clips lo..hi-1, at most about `batch_size` vectors at a time.

    f_g (window None) reads the clip features. f_c (window w) reads temporal features
    [c_t, m_t], built per run of clips, when D <= h1. When D > h1 (I3D's 2048 against 512)
    its first layer is split instead, W_a c_t + W_b m_t + b1, and as m_t is a mean of clips,
    W_b m_t is the same mean of W_b c: each clip is projected once and the window mean is
    taken over h1-d projections, so the w gathers per clip move h1 values instead of D and
    no [b, C, 2D] input is built, at the same FLOPs (the w clips before a run are projected
    again as its halo). Exact up to float rounding (ReLU outputs within 4e-6 at 2048-d).
    Measured (`benchmarks/pipeline.py`, one CPU thread, quick-profile video lengths): 1.4-1.5x
    faster at D = 2048, 1.4-1.7x slower at D = 256, where the projections are the wider
    rows. `project` forces either way.
    """
    features, device = split.features, split.features.device
    rows = max(1, batch_size // features.shape[1])
    starts = None if window is None else split.starts
    if project is None:
        project = features.shape[-1] > model.hidden[0]
    for lo in range(0, split.num_clips, rows):
        hi = min(lo + rows, split.num_clips)
        with autocast(device, amp):
            if window is None:
                h = model.hidden1(features[lo:hi].flatten(0, 1))
            elif not project:
                x = context_features(features, starts, torch.arange(lo, hi, device=device), window)
                h = model.hidden1(x.flatten(0, 1))
            else:
                w_a, w_b, b1 = model.context_weights()
                halo = max(lo - window, 0)
                projected = F.linear(features[halo:hi], w_b)  # [hi - halo, C, h1]
                local = torch.arange(lo - halo, hi - halo, device=device)
                memory = context_memory(projected, starts[halo:hi] - halo, local, window)
                h = F.relu(F.linear(features[lo:hi], w_a, b1) + memory).flatten(0, 1).unsqueeze(1)
        yield lo, hi, h

def memory_table(split: Split, rows: torch.Tensor, window: int, chunk: int = 65536) -> torch.Tensor:
    """[S, C, D] long-term feature memory (`context_memory`) of the clips `rows` [S] of a split,
    every crop, in the features' dtype, built `chunk` vectors at a time."""
    features = split.features
    table = features.new_empty((len(rows), *features.shape[1:]))
    step = max(1, chunk // features.shape[1])
    for lo in range(0, len(rows), step):
        table[lo:lo + step] = context_memory(features, split.starts, rows[lo:lo + step], window)
    return table
