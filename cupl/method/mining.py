"""Reliable clip mining (Sec. 3.3): which pseudo labels to trust, and the temporal memory.

`reliable_indices` keeps the R% least uncertain clips of a video (Algorithm 1, l. 11-12);
`temporal_context` builds the temporal clip feature c-bar_t = [c_t, mean(c_{t-w} .. c_{t-1})]
from a long-term feature memory of the video's own clips (window w = 5 in the released code).
The `*_split` / `context_features` forms do the same for every video of a split at once.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from cupl._checks import check_finite, check_ndim, check_nonempty


def _check_window(window: int):
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")


def _check_ratio(ratio: float):
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")


def keep_count(num_clips: torch.Tensor | int, ratio: float):
    """max(1, ceil(ratio * T)), with ratio * T rounded to 1e-9 first so that 0.3 * 10 keeps 3."""
    _check_ratio(ratio)
    if isinstance(num_clips, torch.Tensor):
        kept = torch.ceil(torch.round(num_clips.double() * ratio, decimals=9)).long()
        return kept.clamp(min=1)
    return max(1, math.ceil(round(num_clips * ratio, 9)))


def context_memory(features: torch.Tensor, starts: torch.Tensor, index: torch.Tensor,
                   window: int = 5, crop: torch.Tensor | None = None) -> torch.Tensor:
    """The long-term feature memory mean(c_{t-w} .. c_{t-1}) of chosen rows of a whole split.

    features: [N, *rest, D] clips of all videos concatenated (contiguous, else it is copied);
    starts: [N] first row of each clip's video (`Split.starts`); index: [B] rows; crop:
    optional [B] crop per row, for features [N, C, D], to take one crop of each row.
    returns: [B, *rest, D] ([B, D] with `crop`) in the features' dtype: the mean of the
    previous min(w, t - start) clips of the same video, and c_t itself at a video's first clip
    (the released code's edge rule).

    One `embedding_bag` gathers and averages the w previous rows (float32 accumulation for
    half-precision features), so no [B, w, D] stack or float32 copy is ever made; the sum runs
    over t-1, t-2, ... in that order and is then divided by the count.
    """
    _check_window(window)
    table = features.reshape(-1, features.shape[-1])  # [N R, D]: row n, part r is n R + r
    per_row = table.shape[0] // max(1, features.shape[0])
    prev = index[:, None] - torch.arange(1, window + 1, device=index.device)  # [B, w]: t-1 .. t-w
    ok = prev >= starts[index][:, None]
    if crop is None:
        current = features[index]
        parts = torch.arange(per_row, device=index.device)
        slots = prev[:, None, :] * per_row + parts[None, :, None]  # [B, R, w]
        ok = ok[:, None, :]
    else:
        current = features[index, crop]
        slots = prev * per_row + crop[:, None]
    # The table's last row is nobody's previous clip (no clip follows the split's last one),
    # so it marks empty slots: embedding_bag leaves padding out of the sum and the count.
    pad = table.shape[0] - 1
    bags = torch.where(ok, slots, pad).reshape(-1, window)
    memory = F.embedding_bag(bags, table, mode="mean", padding_idx=pad).view(current.shape)
    first = ~ok[..., 0]  # t - 1 < start: a video's first clip is its own memory
    return torch.where(first.view(*first.shape, *[1] * (current.ndim - first.ndim)), current, memory)


def context_features(features: torch.Tensor, starts: torch.Tensor, index: torch.Tensor,
                     window: int = 5, crop: torch.Tensor | None = None) -> torch.Tensor:
    """Temporal clip features for chosen rows of a whole split.

    features: [N, *rest, D] clips of all videos concatenated; starts: [N] first row of each
    clip's video (`Split.starts`); index: [B] rows; crop: optional [B] crop per row, for
    features [N, C, D], to take one crop of each row.
    returns: [B, *rest, 2D] ([B, 2D] with `crop`), row b = concat(c_t, mean(c_{t-w} .. c_{t-1}))
    with t = index[b], the memory as in `context_memory`.
    """
    current = features[index] if crop is None else features[index, crop]
    return torch.cat([current, context_memory(features, starts, index, window, crop)], dim=-1)


def temporal_context(clips: torch.Tensor, window: int = 5) -> torch.Tensor:
    """Long-term feature memory of one video (Sec. 3.3).

    clips: [T, *rest, D]. returns [T, *rest, 2D]; row t is concat(c_t, mean(c_{t-w}..c_{t-1})),
    using the previous t clips when t < w, and c_0 itself at t = 0.
    """
    check_ndim("clips", clips, "[T, *rest, D]", min_ndim=2)
    check_nonempty("clips", clips)
    _check_window(window)
    t = torch.arange(clips.shape[0], device=clips.device)
    return context_features(clips, torch.zeros_like(t), t, window)


def reliable_indices(uncertainty: torch.Tensor, ratio: float) -> torch.Tensor:
    """The R% most reliable clips of one video (Algorithm 1, l. 11-12).

    uncertainty: [T] (Eq. 10). returns the indices of the max(1, ceil(ratio T)) least
    uncertain clips, ties broken by lower index, in ascending temporal order.
    """
    check_ndim("uncertainty", uncertainty, "[T]", ndim=1)
    check_nonempty("uncertainty", uncertainty)
    check_finite("uncertainty", uncertainty)
    n = keep_count(uncertainty.shape[0], ratio)
    order = torch.sort(uncertainty, stable=True).indices
    return torch.sort(order[:n]).values


def reliable_mask_split(uncertainty: torch.Tensor, offsets: torch.Tensor, ratio: float) -> torch.Tensor:
    """`reliable_indices` for every video of a split at once, as a mask.

    uncertainty: [N] per clip of all videos; offsets: [V + 1]. returns a [N] bool mask
    that, restricted to video v, marks exactly ``reliable_indices(uncertainty[v-rows], ratio)``.
    Random keys in place of uncertainty give "standard self-training" (same counts, random clips).
    """
    check_ndim("uncertainty", uncertainty, "[N]", ndim=1)
    check_finite("uncertainty", uncertainty)
    lengths = offsets[1:] - offsets[:-1]
    video = torch.repeat_interleave(torch.arange(len(lengths), device=offsets.device), lengths)
    by_value = torch.sort(uncertainty, stable=True).indices
    order = by_value[torch.sort(video[by_value], stable=True).indices]  # by video, then value, then index
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    rank -= offsets[:-1][video]
    return rank < keep_count(lengths, ratio)[video]
