"""Sweeps as one batched model: N runs of Algorithm 1 side by side (`run_many`), each equal to
its run alone (`cupl.experiments.train.run`), bit for bit on the CPU.

A sweep (alpha x seeds, the rows of Table 4 x seeds) is many small runs. What batches is f_c's
training, thousands of small optimiser steps per iteration: N classifiers are weight stacks
[N, ...], and one step computes every model's first two layers with one batched matmul each
and takes one Adam step for all (`train_clip_classifiers`). Everything else calls, model by
model, the function `run` calls: stage 1 (`train_generator`, trained once per `stage1_key`),
MC-Dropout, the step between the stages, mining, scoring and evaluation.

Exactness. Every model keeps its run's two streams (`Streams`): the seeded `torch.Generator` of
explicit draws (MC masks, random selections, f_c's batches) and a generator standing for the
global RNG of `run` (f_c's init and training dropout), both seeded with `seed + 7919` as `run`
seeds stage 2. On the CPU the batched matmuls of the first two layers, Adam's elementwise step
on the stacks and the gathers give the same bits as the model alone (tested); the last layer
(one output) and the loss are computed per model, because a one-column matmul takes another
kernel than its batched form and rounds otherwise. On CUDA the same code runs, with device
generators for dropout seeded alike, and no promise of equal bits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from cupl._checks import check_finite
from cupl.config import ClipConfig, RunConfig, to_dict
from cupl.data.split import Split
from cupl.experiments.cache import stage1_key
from cupl.experiments.steps import autocast, feature_dtype, memory_table, sync
from cupl.experiments.train import (STAGE2_SEED_OFFSET, RunResult, check_finite_videos, clip_batches, clip_targets,
                                    iteration_record, prepare_split, pseudo_labels, score_clips, select_reliable,
                                    train_generator)
from cupl.method.evaluate import evaluate_scores
from cupl.method.losses import clip_loss
from cupl.method.models import ClipClassifier, dropout_masks_stacked
from cupl.util import progress as progress_bar



def run_many(configs, train: Split, test: Split, *, oracle: torch.Tensor | None = None, keep_arrays: bool = False,
             progress: bool = False, max_models: int | None = None,
             generators: dict | None = None) -> list[RunResult]:
    """`run(config, train, test, ...)` of every config; results in the order of `configs`.

    Configs that differ only in seed, generator settings and self_train.selection form one
    batch (`batch_key`); others go to batches of their own. A stage-1 f_g is trained once per
    `stage1_key` (`cupl.experiments.cache.stage1_key`) and shared by the runs that have it;
    `generators` maps such keys to f_g trained before (read, and extended with the new ones).
    max_models caps the models of one batch (memory: f_c keeps every model's memory table).
    Each result's `timings` holds its own stage 1 and MC-Dropout, mining, scoring and
    evaluation times, and its share (1 / models) of each batched f_c training.
    """
    configs = [c.validate() for c in configs]
    if not configs:
        return []
    check_finite_videos("train features", train)
    check_finite_videos("test features", test)
    if max_models is not None and max_models < 1:
        raise ValueError(f"run_many: max_models must be >= 1, got {max_models}")
    batches: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        batches.setdefault(batch_key(config), []).append(i)
    results: list[RunResult | None] = [None] * len(configs)
    generators = {} if generators is None else generators
    devices = sorted({c.device for c in configs if torch.device(c.device).type == "cuda"})
    with torch.random.fork_rng(devices=devices):  # as `run`, the caller's global RNG is left as it was
        for members in batches.values():
            size = max_models or len(members)
            for lo in range(0, len(members), size):
                chunk = members[lo:lo + size]
                out = _run_batch([configs[i] for i in chunk], train, test, oracle, keep_arrays, progress, generators)
                for i, result in zip(chunk, out):
                    results[i] = result
    return results


def batch_key(config: RunConfig) -> str:
    """What the runs of one batch share: everything but the seed, the generator's settings
    (stage 1 runs per model) and the selection rule."""
    data = to_dict(config)
    del data["seed"], data["generator"], data["self_train"]["selection"]
    data["mc_passes"] = config.generator.mc_passes  # the first iteration's M
    return repr(sorted(data.items()))


@dataclass
class Streams:
    """One model's random streams as `run` has them in stage 2 (module docstring).

    explicit: CPU generator of the explicit draws; glob: CPU generator standing for the global
    RNG (f_c's init); dropout: training dropout's generator (glob on the CPU, a device
    generator seeded alike on CUDA, where `run` draws dropout from the device's RNG)."""

    explicit: torch.Generator
    glob: torch.Generator
    dropout: torch.Generator

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> "Streams":
        glob = torch.Generator().manual_seed(seed)
        dropout = glob if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
        return cls(torch.Generator().manual_seed(seed), glob, dropout)


def init_from(glob: torch.Generator, make):
    """make() with the global RNG in `glob`'s state, as `run` inits its models; `glob` advances
    as the global RNG would, and the global RNG is left as it was."""
    saved = torch.get_rng_state()
    torch.set_rng_state(glob.get_state())
    try:
        out = make()
        glob.set_state(torch.get_rng_state())
    finally:
        torch.set_rng_state(saved)
    return out


# ---------------------------------------------------------------- f_c, batched


# `ClipClassifier.regressor` layers as stacks: (weight, bias) of layers 0, 3 and 5; the weights of
# layers 0 and 3 are stacked transposed, [N, in, out], so that their gradients come out of the
# batched matmul in the stack's own layout (a transposed stack costs a copy of each gradient)
LAYERS = ("regressor.0.weight", "regressor.0.bias", "regressor.3.weight", "regressor.3.bias",
          "regressor.5.weight", "regressor.5.bias")
TRANSPOSED = ("regressor.0.weight", "regressor.3.weight")


def stack_classifiers(models: list[ClipClassifier], device) -> list[torch.Tensor]:
    """The `LAYERS` of N classifiers of one layout as trainable stacks [N, ...] on `device`."""
    states = [m.state_dict() for m in models]
    stacks = []
    for name in LAYERS:
        stack = torch.stack([s[name] for s in states])
        if name in TRANSPOSED:
            stack = stack.transpose(1, 2)
        stacks.append(stack.to(device).contiguous().requires_grad_())
    return stacks


def unstack_classifier(params: list[torch.Tensor], n: int, like: ClipClassifier) -> ClipClassifier:
    """A `ClipClassifier` of `like`'s layout holding member n of the stacks, in eval mode."""
    model = ClipClassifier(like.in_dim, like.hidden, like.dropout, like.two_way).to(params[0].device)
    model.load_state_dict({name: (p[n].T if name in TRANSPOSED else p[n]).detach().clone()
                           for name, p in zip(LAYERS, params)})
    return model.eval()


def stacked_logits(params: list[torch.Tensor], x: torch.Tensor, masks, two_way: bool) -> list[torch.Tensor]:
    """Training-mode logits of N classifiers: x [N, B, 2D], masks (m1 [N, B, h1], m2 [N, B, h2])
    -> N logits [B]. The first two layers as batched matmuls, the last one per model (module
    docstring)."""
    w1, b1, w2, b2, w3, b3 = params
    h = F.relu(torch.baddbmm(b1[:, None], x, w1)) * masks[0]
    z = torch.baddbmm(b2[:, None], h, w2) * masks[1]
    out = [F.linear(z[n], w3[n], b3[n]) for n in range(len(z))]
    return [o[..., 1] - o[..., 0] if two_way else o[..., 0] for o in out]


def train_clip_classifiers(train: Split, labels: list[torch.Tensor], selected: list[torch.Tensor], cfg: ClipConfig,
                           window: int, streams: list[Streams], *, models: list[ClipClassifier] | None = None,
                           amp: bool = False, progress: bool = False) -> list[ClipClassifier]:
    """`train_clip_classifier` of N models (Algorithm 1, l. 19-22, Eq. 11), each on its own
    reliable set, as one stacked model: labels[n], selected[n] [clips]; streams[n] the run's
    streams (`explicit` draws the batches, `glob` inits, `dropout` masks). models: the
    classifiers to go on training (clip.reinit False), else new ones. Models whose batch
    schedules differ in length or batch sizes (the epochs budget with sets of other sizes)
    are trained in separate stacks. returns: the N trained classifiers, in eval mode.
    """
    device = train.features.device
    num_crops, dim = train.features.shape[1], train.features.shape[2]
    rows = [torch.nonzero(s).flatten() for s in selected]
    empty = [n for n, r in enumerate(rows) if len(r) == 0]
    if empty:
        raise ValueError(f"train_clip_classifiers: no clip is selected for model(s) {empty}")
    video_normal = (train.labels == 0).repeat_interleave(train.lengths)
    schedules = []
    for r, s in zip(rows, streams):
        clips = torch.arange(len(r), device=device).repeat_interleave(num_crops)
        normal = video_normal[r][clips]
        schedules.append(list(clip_batches(normal, cfg, s.explicit)))
    if models is None:
        models = [init_from(s.glob, lambda: ClipClassifier(2 * dim, cfg.hidden, cfg.dropout, cfg.two_way)).to(device)
                  for s in streams]
    groups: dict[tuple, list[int]] = {}
    for n, schedule in enumerate(schedules):
        groups.setdefault(tuple(len(b) for b in schedule), []).append(n)
    out: list[ClipClassifier | None] = [None] * len(rows)
    for members in groups.values():
        trained = _train_stack(train, [labels[n] for n in members], [rows[n] for n in members], cfg, window,
                               [streams[n] for n in members], [schedules[n] for n in members],
                               [models[n] for n in members], amp, progress)
        for n, model in zip(members, trained):
            out[n] = model
    return out


def _train_stack(train: Split, labels, rows, cfg: ClipConfig, window: int, streams, schedules, models, amp: bool,
                 progress: bool) -> list[ClipClassifier]:
    """The training loop of `train_clip_classifier` for models whose schedules have one shape."""
    device = train.features.device
    num_crops = train.features.shape[1]
    # every model's selected clips, memory rows and targets, end to end; a model's samples
    # index its own part through `base`
    all_rows = torch.cat(rows)
    memory = torch.cat([memory_table(train, r, window) for r in rows])
    targets = torch.cat([y[r] for y, r in zip(labels, rows)])
    base = torch.tensor([0] + [len(r) for r in rows[:-1]], device=device).cumsum(0)[:, None]  # [N, 1]
    params = stack_classifiers(models, device)
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    weights = cfg.class_weights if cfg.loss == "weighted" else None
    (h1, h2), p = cfg.hidden, models[0].dropout
    # rows of [clips * crops, D] tables: one gather per table and step
    features = train.features.reshape(-1, train.features.shape[-1])
    memory = memory.reshape(-1, memory.shape[-1])
    count = len(rows)
    for step in progress_bar(range(len(schedules[0])), progress, leave=False, desc=f"f_c, {count} models"):
        sample = torch.stack([s[step] for s in schedules]).to(device)  # [N, B] into each model's samples
        clip = base + torch.div(sample, num_crops, rounding_mode="floor")
        crop = sample % num_crops
        b = sample.shape[1]
        x = torch.cat([features.index_select(0, (all_rows[clip] * num_crops + crop).flatten()),
                       memory.index_select(0, (clip * num_crops + crop).flatten())], dim=-1).view(count, b, -1)
        if p > 0:  # as each model alone draws them: its first site, then its second
            masks = dropout_masks_stacked(count, [(b, h1), (b, h2)], p, [s.dropout for s in streams], device=device)
        else:
            masks = [torch.ones(count, b, h, device=device) for h in (h1, h2)]
        with autocast(device, amp):
            logits = stacked_logits(params, x, masks, models[0].two_way)
        loss = sum(clip_loss(z.float(), targets[c], class_weights=weights, label_smoothing=cfg.label_smoothing)
                   for z, c in zip(logits, clip))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return [unstack_classifier(params, n, models[0]) for n in range(len(rows))]


# ---------------------------------------------------------------- one batch


def _run_batch(configs: list[RunConfig], train: Split, test: Split, oracle, keep_arrays: bool, progress: bool,
               generators: dict) -> list[RunResult]:
    """Algorithm 1 for the configs of one `batch_key`, as `run` makes each of them."""
    first = configs[0]
    device, amp, st = torch.device(first.device), first.amp, first.self_train
    num_models = len(configs)
    timings: list[dict[str, float]] = [{} for _ in configs]

    def timed(n, key, fn, *args, **kw):
        """fn(...) timed into model n's timings (n None: shared by all models, split evenly)."""
        sync(device)
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        sync(device)
        seconds = time.perf_counter() - t0
        for m in (range(num_models) if n is None else [n]):
            share = seconds / num_models if n is None else seconds
            timings[m][key] = timings[m].get(key, 0.0) + share
        return out

    dtype = feature_dtype(device, amp)
    train = timed(None, "load", prepare_split, train, first.crops, device, dtype)
    test = timed(None, "load", prepare_split, test, first.crops, device, dtype)
    keys = [stage1_key(c) for c in configs]
    for n, (key, config) in enumerate(zip(keys, configs)):
        timings[n]["stage1"] = 0.0
        if key not in generators:
            generators[key] = timed(n, "stage1", _stage1, config, train, progress)
    f_g = [generators[k].to(device).eval() for k in keys]

    streams = [Streams.seeded(c.seed + STAGE2_SEED_OFFSET, device) for c in configs]
    normal_rows = (train.labels == 0).repeat_interleave(train.lengths)
    models, window, f_c, scores = f_g, None, None, [None] * num_models
    histories: list[list[dict]] = [[] for _ in configs]
    arrays: list[list[dict]] = [[] for _ in configs]
    for it in range(1, st.iterations + 1):
        passes = first.generator.mc_passes if it == 1 else first.clip.mc_passes
        labels, uncertainty, selected = [], [], []
        for n, (config, s) in enumerate(zip(configs, streams)):
            y, unc = timed(n, f"iter{it}.mc_dropout", pseudo_labels, models[n], train, passes, window=window,
                           rng=s.explicit, batch_size=first.eval_batch_size, amp=amp, masks=st.mc_masks)
            labels.append(clip_targets(y, train, st, it, normal_rows))
            uncertainty.append(unc)
            selected.append(timed(n, f"iter{it}.mining", select_reliable, unc, train, config.self_train, s.explicit))
        f_c = timed(None, f"iter{it}.train", train_clip_classifiers, train, labels, selected, first.clip, st.window,
                    streams, models=None if (first.clip.reinit or f_c is None) else f_c, amp=amp, progress=progress)
        for n in range(num_models):
            scores[n] = timed(n, f"iter{it}.score", score_clips, f_c[n], test, st.window,
                              batch_size=first.eval_batch_size, amp=amp)
            metrics = timed(n, f"iter{it}.evaluate", evaluate_scores, scores[n], test)
            histories[n].append(iteration_record(it, passes, metrics, labels[n], uncertainty[n], selected[n],
                                                 oracle, train))
            if keep_arrays:
                arrays[n].append({"labels": labels[n].cpu(), "uncertainty": uncertainty[n].cpu(),
                                  "selected": selected[n].cpu()})
        models, window = f_c, st.window
    return [RunResult(to_dict(c), dict(histories[n][-1]), histories[n], timings[n], generators[keys[n]].cpu(),
                      f_c[n].cpu(), scores[n].cpu(), arrays[n]) for n, c in enumerate(configs)]


def _stage1(config: RunConfig, train: Split, progress: bool):
    """Stage 1 of `run` for `config` on the prepared split: its seeded streams, as `run` has them."""
    device = train.features.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        rng = torch.Generator().manual_seed(config.seed)
        return train_generator(train, config.generator, rng=rng, amp=config.amp, progress=progress)
