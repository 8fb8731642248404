"""The pseudo-label step between the stages: f_g's clip scores made into f_c's targets.

The paper trains f_c on f_g's MC-Dropout means (Eq. 9) as they are (`method="none"`).
MIST (Feng et al., CVPR 2021), whose stage-2 conventions the released f_c shares, refines its
generator's scores of each abnormal video first (`method="smooth_minmax"`): a moving box of
5 clips, applied twice, with the video's first and last score repeated past its ends, then
min-max normalisation, so that every abnormal video's labels span [0, 1]. Normal videos'
labels are left alone (MIST never trains on them: their clips are normal by the weak label).

Shapes: N clips of all videos concatenated, V videos, `offsets` [V + 1] as in `Split`.
"""

from __future__ import annotations

import torch

from cupl._checks import check_finite, check_ndim
from cupl.data.split import Split

METHODS = ("none", "smooth_minmax")


def _video_index(offsets: torch.Tensor) -> torch.Tensor:
    lengths = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(len(lengths), device=offsets.device), lengths)


def smooth_box(values: torch.Tensor, offsets: torch.Tensor, box: int = 5) -> torch.Tensor:
    """Moving average over `box` clips within each video, edges padded by repetition.

    values: [N]; returns [N]: clip t of a video with rows s..e-1 becomes
    ``mean(values[clamp(t + k, s, e - 1)] for k in -box//2 .. box//2)``, which is
    ``np.convolve(np.pad(v, box // 2, mode="edge"), np.ones(box) / box, mode="valid")`` per video.
    """
    check_ndim("smooth_box values", values, "[N]", ndim=1)
    if not isinstance(box, int) or box < 1 or box % 2 == 0:
        raise ValueError(f"smooth_box: box must be a positive odd integer, got {box!r}")
    video = _video_index(offsets)
    first, last = offsets[:-1][video], offsets[1:][video] - 1  # [N]
    half = box // 2
    rows = torch.arange(len(values), device=values.device)[:, None] + torch.arange(-half, half + 1, device=values.device)
    rows = torch.minimum(torch.maximum(rows, first[:, None]), last[:, None])  # [N, box]
    return values[rows].mean(dim=1)


def minmax_per_video(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """(v - min) / (max - min) within each video. values: [N]; returns [N].

    A video whose values are all equal (one clip, or a flat score) is returned unchanged,
    where MIST's division would give NaN (or, for one clip, skips the step as here).
    """
    check_ndim("minmax_per_video values", values, "[N]", ndim=1)
    video = _video_index(offsets)
    count = len(offsets) - 1
    low = values.new_full((count,), float("inf")).scatter_reduce(0, video, values, "amin")
    high = values.new_full((count,), float("-inf")).scatter_reduce(0, video, values, "amax")
    span = (high - low)[video]
    flat = span <= 0
    return torch.where(flat, values, (values - low[video]) / torch.where(flat, torch.ones_like(span), span))


def refine_labels(labels: torch.Tensor, split: Split, method: str = "smooth_minmax", *,
                  box: int = 5, passes: int = 2) -> torch.Tensor:
    """Pseudo labels of every clip of a split after the refinement `method`. labels: [N]; returns [N].

    "none": unchanged. "smooth_minmax": on the clips of abnormal videos (weak label 1),
    `smooth_box` `passes` times, then `minmax_per_video`; clips of normal videos unchanged.
    """
    if method not in METHODS:
        raise ValueError(f"refine_labels: method must be one of {METHODS}, got {method!r}")
    check_ndim("refine_labels labels", labels, "[N]", ndim=1)
    if labels.shape[0] != split.num_clips:
        raise ValueError(f"refine_labels: {labels.shape[0]} labels for a split of {split.num_clips} clips")
    check_finite("refine_labels labels", labels)
    if method == "none":
        return labels
    offsets = split.offsets.to(labels.device)
    refined = labels
    for _ in range(passes):
        refined = smooth_box(refined, offsets, box)
    refined = minmax_per_video(refined, offsets)
    abnormal = (split.labels.to(labels.device) == 1)[_video_index(offsets)]
    return torch.where(abnormal, refined, labels)
