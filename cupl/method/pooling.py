"""Segment pooling (Sec. 3.1): a video of T clips becomes S segments.

Videos differ in length, so, as in Sultani et al. and RTFM, the clip sequence is cut into
S = 32 contiguous ranges and each range is averaged. Boundaries are
``b = floor(linspace(0, T, S + 1))``; segment s is ``mean(clips[b[s]:b[s+1]])``, or
``clips[b[s]]`` when that range is empty, which happens when T < S (short clips repeat).
"""

from __future__ import annotations

import numpy as np
import torch

from cupl._checks import check_ndim, check_nonempty


def boundaries(num_clips: int, num_segments: int = 32) -> np.ndarray:
    """[S + 1] int boundaries ``floor(linspace(0, T, S + 1))``."""
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    return np.floor(np.linspace(0, num_clips, num_segments + 1)).astype(np.int64)


def segment(clips, num_segments: int = 32):
    """Pool one video's clips into segments (Sec. 3.1).

    clips: [T, *rest] numpy array or torch tensor, T >= 1.
    returns: [S, *rest], same library and dtype as the input.
    """
    check_ndim("clips", clips, "[T, *rest]", min_ndim=1)
    check_nonempty("clips", clips)
    b = boundaries(clips.shape[0], num_segments)
    start, end = b[:-1], np.maximum(b[1:], b[:-1] + 1)
    if isinstance(clips, torch.Tensor):
        csum = torch.cat([torch.zeros_like(clips[:1], dtype=torch.float64), clips.double().cumsum(0)])
        s, e = torch.as_tensor(start, device=clips.device), torch.as_tensor(end, device=clips.device)
        count = (e - s).to(torch.float64).reshape(-1, *[1] * (clips.ndim - 1))
        return ((csum[e] - csum[s]) / count).to(clips.dtype)
    csum = np.concatenate([np.zeros_like(clips[:1], dtype=np.float64), np.cumsum(clips, 0, dtype=np.float64)])
    count = (end - start).astype(np.float64).reshape(-1, *[1] * (clips.ndim - 1))
    return ((csum[end] - csum[start]) / count).astype(clips.dtype)


def segment_split(
    features: torch.Tensor, offsets: torch.Tensor, num_segments: int = 32, chunk_elements: int = 2**26
) -> torch.Tensor:
    """Pool every video of a split at once: a batched gather on prefix sums, no loop over videos.

    features: [N, *rest] clips of all videos concatenated; offsets: [V + 1].
    returns: [V, S, *rest] with ``out[v] == segment(features[offsets[v]:offsets[v+1]])``.
    Prefix sums are float64 for exactness; they are taken over runs of whole videos of at most
    `chunk_elements` values so memory stays bounded at any scale.
    """
    check_ndim("offsets", offsets, "[V + 1]", ndim=1)
    lengths = offsets[1:] - offsets[:-1]
    if bool((lengths <= 0).any()):
        raise ValueError("segment_split: a video has no clips (offsets must be strictly increasing)")
    # numpy's linspace arithmetic, i * (T / S) with the end set to T, so that boundaries equal
    # `boundaries` bit for bit; T * (i / S) rounds differently (T = 90, S = 10: 62 vs 63).
    step = lengths.double()[:, None] / num_segments
    b = torch.floor(torch.arange(num_segments + 1, dtype=torch.float64, device=offsets.device) * step).long()
    b[:, -1] = lengths  # [V, S+1]
    start, end = b[:, :-1], torch.maximum(b[:, 1:], b[:, :-1] + 1)
    out = features.new_empty((len(lengths), num_segments, *features.shape[1:]))
    row_values = max(1, features[:1].numel())
    max_rows = max(int(lengths.max()), chunk_elements // row_values)
    v0, bounds = 0, offsets.cpu()
    while v0 < len(lengths):
        v1 = int(torch.searchsorted(bounds, bounds[v0] + max_rows, right=True)) - 1
        v1 = max(v1, v0 + 1)
        lo, hi = int(bounds[v0]), int(bounds[v1])
        block = features[lo:hi].double()
        csum = torch.cat([torch.zeros_like(block[:1]), block.cumsum(0)])
        base = (offsets[v0:v1] - lo)[:, None]
        s, e = base + start[v0:v1], base + end[v0:v1]
        count = (e - s).double().reshape(*e.shape, *[1] * (features.ndim - 1))
        out[v0:v1] = ((csum[e] - csum[s]) / count).to(features.dtype)
        v0 = v1
    return out
