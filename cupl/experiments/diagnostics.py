"""Diagnostics: what the method claims to improve, measured where the truth is known.

Training never calls these (it only logs `pseudo_label_quality`). Most need clip-level
truth, which only the synthetic benchmark has: the quality of pseudo labels and of the
reliable clips mined from them (Sec. 3.3), how uncertainty tracks their error (Eq. 8-10),
and how completely they cover the anomalous events of a video (Sec. 3.2). `event_runs`
also finds the annotated intervals of test frames, and `example_videos` picks the test videos
the book looks at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from cupl.method.losses import diversity_loss, norm_loss
from cupl.method.mining import reliable_mask_split
from cupl.method.models import MultiHeadClassifier
from cupl.method.pooling import segment_split
from cupl.util import to_numpy

if TYPE_CHECKING:
    import pandas as pd


def _auc(scores: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(truth)) < 2:
        return float("nan")
    return float(roc_auc_score(truth, scores))


def pseudo_label_quality(labels: torch.Tensor, uncertainty: torch.Tensor, selected: torch.Tensor,
                         oracle: torch.Tensor, split) -> dict[str, float]:
    """How good are the pseudo labels of the abnormal training videos, all and selected?

    labels, uncertainty, oracle: [N] over the split's clips (oracle in [0, 1], > 0.5 = anomalous);
    selected: [N] bool. Normal videos are left out: their clips are normal by the weak label.
    returns: label_auc / label_auc_selected (ROC-AUC of pseudo labels against the truth),
    label_mae / label_mae_selected, unc_error_corr (Spearman correlation of uncertainty
    with the absolute pseudo-label error), and event_share / event_share_selected (share of
    anomalous clips among all clips of abnormal videos, and among the selected ones: a
    selection that avoids the events shows as event_share_selected < event_share).
    """
    from scipy.stats import spearmanr

    abnormal = split.labels.repeat_interleave(split.lengths).bool().cpu().numpy()
    y, u, s = labels.cpu().numpy(), uncertainty.cpu().numpy(), selected.cpu().numpy()
    truth = oracle.cpu().numpy()
    y, u, s, truth = y[abnormal], u[abnormal], s[abnormal], truth[abnormal]
    hard = (truth > 0.5).astype(np.uint8)
    err = np.abs(y - truth)
    return {
        "label_auc": _auc(y, hard),
        "label_auc_selected": _auc(y[s], hard[s]),
        "label_mae": float(err.mean()),
        "label_mae_selected": float(err[s].mean()) if s.any() else float("nan"),
        # undefined (NaN) when either side is constant, as when every label is exact
        "unc_error_corr": (float(spearmanr(u, err).statistic) if len(u) > 2 and np.ptp(u) > 0 and np.ptp(err) > 0
                           else float("nan")),
        "event_share": float(hard.mean()) if len(hard) else float("nan"),
        "event_share_selected": float(hard[s].mean()) if s.any() else float("nan"),
    }


def _check_rows(name: str, x: np.ndarray, num_clips: int):
    if x.shape != (num_clips,):
        raise ValueError(f"{name}: expected shape [{num_clips}] (one value per clip of the split), got {x.shape}")


def event_runs(mask, offsets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The events of every video: maximal runs of True that do not cross a video boundary.

    mask: [N] bool over the rows of all videos concatenated (clips with oracle > 0.5, or
    test frames); offsets: [V + 1], video v is rows offsets[v]:offsets[v + 1].
    returns: (video [E], start [E], end [E]) int64, start/end relative to the video's first
    row, end exclusive, sorted by video then start.
    """
    m, off = to_numpy(mask).astype(bool), to_numpy(offsets).astype(np.int64)
    _check_rows("event_runs mask", m, int(off[-1]))
    video = np.repeat(np.arange(len(off) - 1), np.diff(off))
    first = np.zeros(len(m), dtype=bool)
    first[off[:-1][np.diff(off) > 0]] = True
    prev = np.concatenate([[False], m[:-1]]) & ~first
    nxt = np.concatenate([m[1:], [False]]) & ~np.roll(first, -1)
    starts, lasts = np.flatnonzero(m & ~prev), np.flatnonzero(m & ~nxt)
    return video[starts], starts - off[video[starts]], lasts + 1 - off[video[starts]]


def event_coverage(labels, oracle, split, *, min_events: int = 2, level: float = 0.9,
                   threshold: float = 0.5) -> dict[str, float]:
    """Completeness (Sec. 3.2): do the pseudo labels reach *every* event of a video, or one?

    labels, oracle: [N] over the split's clips (pseudo labels, clip truth in [0, 1]).
    An event is a maximal run of clips with oracle > `threshold` (`event_runs`); the
    video's normal clips are those with oracle == 0 (clips partly inside an event are
    neither). Only abnormal videos with at least `min_events` events and at least one normal
    clip count. An event's score is the share of its video's normal clips whose pseudo label
    lies below the event's highest pseudo label (ties count one half): 1 when the event's best
    clip outranks every normal clip of the video, 0.5 at chance. The event is *covered* when
    its score is at least `level`, i.e. its best clip rises above the video's normal level
    (the `level`-quantile of its normal clips).

    returns: coverage (share of events covered), event_score (mean event score),
    all_covered (share of videos with every event covered), events, videos (counts; the
    shares are NaN when no video qualifies).
    """
    if not 0.0 < level <= 1.0:
        raise ValueError(f"event_coverage: level must be in (0, 1], got {level!r}")
    y, truth, off = to_numpy(labels).astype(np.float64), to_numpy(oracle), to_numpy(split.offsets).astype(np.int64)
    _check_rows("event_coverage labels", y, split.num_clips)
    _check_rows("event_coverage oracle", truth, split.num_clips)
    video, start, end = event_runs(truth > threshold, off)
    counts = np.bincount(video, minlength=split.num_videos)
    clip_video = np.repeat(np.arange(split.num_videos), np.diff(off))
    normal = truth == 0
    normal_counts = np.bincount(clip_video[normal], minlength=split.num_videos)
    keep = (to_numpy(split.labels) == 1) & (counts >= min_events) & (normal_counts > 0)
    events = keep[video]
    video, start, end = video[events], start[events], end[events]
    if len(video) == 0:
        nan = float("nan")
        return {"coverage": nan, "event_score": nan, "all_covered": nan, "events": 0, "videos": 0}
    bounds = np.stack([off[video] + start, off[video] + end], axis=1).ravel()
    peak = np.maximum.reduceat(np.append(y, 0.0), bounds)[::2]  # max over each event's clips
    score = _count_below(peak, video, y[normal], clip_video[normal]) / normal_counts[video]
    covered = score >= level
    per_video = np.bincount(video, weights=covered, minlength=split.num_videos)
    return {
        "coverage": float(covered.mean()),
        "event_score": float(score.mean()),
        "all_covered": float((per_video[keep] == counts[keep]).mean()),
        "events": int(len(video)),
        "videos": int(keep.sum()),
    }


def _count_below(values, groups, pool, pool_groups) -> np.ndarray:
    """Per value: how many entries of `pool` in the same group lie below it, ties counting 1/2.

    One sort of values and pool together by (group, value, kind): a value placed before the
    pool entries equal to it counts those below, one placed after them those not above.
    """
    n = len(values)
    group = np.concatenate([groups, groups, pool_groups])
    value = np.concatenate([values, values, pool])
    kind = np.concatenate([np.zeros(n), np.full(n, 2.0), np.ones(len(pool))])
    order = np.lexsort((kind, value, group))
    is_pool = (kind[order] == 1).astype(np.int64)
    pool_before = np.empty(len(order), dtype=np.int64)
    pool_before[order] = np.cumsum(is_pool) - is_pool
    first_of_group = np.searchsorted(np.sort(pool_groups), groups, "left")
    below, not_above = pool_before[:n] - first_of_group, pool_before[n:2 * n] - first_of_group
    return 0.5 * (below + not_above)


def _abnormal_rows(split) -> np.ndarray:
    """[N] bool: clips of abnormal videos, the only ones whose pseudo labels can be wrong."""
    return np.repeat(to_numpy(split.labels) == 1, to_numpy(split.lengths))


def uncertainty_bins(labels, uncertainty, oracle, split, bins: int = 10) -> pd.DataFrame:
    """Is MC-Dropout uncertainty (Eq. 10) high where the pseudo label (Eq. 9) is wrong?

    labels, uncertainty, oracle: [N] over the split's clips. Clips of abnormal videos are
    sorted by uncertainty (ties by index) and cut into `bins` groups of equal size (sizes
    differ by at most one). returns: DataFrame, one row per bin from the least uncertain:
    uncertainty (mean), error (mean |pseudo label - oracle|), clips.
    """
    import pandas as pd

    if bins < 1:
        raise ValueError(f"uncertainty_bins: bins must be >= 1, got {bins!r}")
    arrays = [to_numpy(a).astype(np.float64) for a in (labels, uncertainty, oracle)]
    for name, a in zip(("labels", "uncertainty", "oracle"), arrays):
        _check_rows(f"uncertainty_bins {name}", a, split.num_clips)
    y, u, truth = (a[_abnormal_rows(split)] for a in arrays)
    groups = np.array_split(np.argsort(u, kind="stable"), bins)
    return pd.DataFrame({
        "uncertainty": [u[g].mean() for g in groups],
        "error": [np.abs(y[g] - truth[g]).mean() for g in groups],
        "clips": [len(g) for g in groups],
    })


def selection_quality(labels, keys, oracle, split, ratios) -> pd.DataFrame:
    """Reliable clip mining (Sec. 3.3): the pseudo labels kept at each ratio R, against the truth.

    labels, keys, oracle: [N] over the split's clips; keys rank the clips of each video (the
    MC-Dropout uncertainty, or random numbers for standard self-training) and the
    max(1, ceil(R T)) clips with the lowest keys are kept, exactly as in training
    (`cupl.mining.reliable_mask_split`). Scored on abnormal videos only, as
    `pseudo_label_quality`. returns: DataFrame, one row per R: ratio, kept (share of the
    clips kept), label_auc (ROC-AUC of the kept pseudo labels against oracle > 0.5),
    label_mae (mean |pseudo label - oracle| over the kept clips) and anomalous (share of the
    kept clips with oracle > 0.5).
    """
    import pandas as pd


    arrays = [to_numpy(a).astype(np.float64) for a in (labels, keys, oracle)]
    for name, a in zip(("labels", "keys", "oracle"), arrays):
        _check_rows(f"selection_quality {name}", a, split.num_clips)
    abnormal = _abnormal_rows(split)
    y, truth = arrays[0][abnormal], arrays[2][abnormal]
    hard = (truth > 0.5).astype(np.uint8)
    rows = []
    for ratio in ratios:
        kept = reliable_mask_split(torch.as_tensor(arrays[1]), torch.as_tensor(split.offsets).cpu(), float(ratio)).numpy()[abnormal]
        rows.append({"ratio": float(ratio), "kept": float(kept.mean()), "label_auc": _auc(y[kept], hard[kept]),
                     "label_mae": float(np.abs(y[kept] - truth[kept]).mean()), "anomalous": float(hard[kept].mean())})
    return pd.DataFrame(rows)


def example_videos(split) -> dict[str, int]:
    """Three test videos to look at (the paper's Fig. 5): indices into `split`.

    "multi-event": the abnormal video with the most annotated intervals (the longer video on
    ties); "long event": another abnormal video with the longest single interval (in frames);
    "normal": the longest normal video, where false alarms have the most room.
    """
    if split.frame_labels is None:
        raise ValueError("example_videos: the split has no frame labels (is it a test split?)")
    lengths = np.array([len(m) for m in split.frame_labels])
    video, start, end = event_runs(np.concatenate(split.frame_labels).astype(bool),
                                   np.concatenate([[0], np.cumsum(lengths)]))
    counts = np.bincount(video, minlength=split.num_videos)
    longest = np.zeros(split.num_videos, dtype=np.int64)
    np.maximum.at(longest, video, end - start)
    abnormal = split.labels.cpu().numpy() == 1
    if counts[abnormal].max(initial=0) == 0 or not (~abnormal).any():
        raise ValueError("example_videos: the split needs an annotated abnormal video and a normal video")
    multi = int(np.lexsort((lengths, np.where(abnormal, counts, -1)))[-1])
    others = np.where(abnormal & (np.arange(split.num_videos) != multi), longest, -1)
    long = int(np.argmax(others)) if others.max() > 0 else multi
    normal = int(np.argmax(np.where(abnormal, -1, lengths)))
    return {"multi-event": multi, "long event": long, "normal": normal}


def busiest_video(split, oracle=None) -> tuple[int, int | None]:
    """The abnormal video to look at: (index into `split`, its number of events).

    With clip-level truth (`oracle` [N], synthetic banks): the abnormal video with the most
    events (runs of oracle > 0.5), the longer one on ties; without (a real bank): the longest
    abnormal video, and None events.
    """
    abnormal = np.flatnonzero(to_numpy(split.labels) == 1)
    if len(abnormal) == 0:
        raise ValueError("busiest_video: the split has no abnormal video")
    lengths = to_numpy(split.lengths)
    if oracle is None:
        return int(abnormal[np.argmax(lengths[abnormal])]), None
    video, _, _ = event_runs(to_numpy(oracle) > 0.5, split.offsets)
    events = np.bincount(video, minlength=split.num_videos)
    pick = int(abnormal[np.lexsort((lengths[abnormal], events[abnormal]))[-1]])
    return pick, int(events[pick])


def head_statistics(model, split, *, num_segments: int = 32, head_scores: str = "sigmoid") -> dict[str, float]:
    """What a stage-1 generator f_g does on the segments of every video of `split` (crops
    averaged, dropout off): the mean highest segment score (Eq. 4) of abnormal and of normal
    videos, the two sides of the ranking loss (Eq. 6), and L_diver (Eq. 2) and L_norm (Eq. 3)
    over abnormal bags, on A^k as the loss reads it (`head_scores`: sigmoid scores or logits)."""
    bags = segment_split(split.features, split.offsets, num_segments).float().mean(dim=2)  # [V, S, D]
    abnormal = split.labels.cpu() == 1
    with torch.no_grad():
        logits = model.eval()(bags).transpose(1, 2)  # [V, K, S]
    best = torch.sigmoid(logits.mean(dim=1)).max(dim=1).values
    heads = torch.sigmoid(logits) if head_scores == "sigmoid" else logits
    multi = logits.shape[1] >= 2
    return {"max score, abnormal": float(best[abnormal].mean()), "max score, normal": float(best[~abnormal].mean()),
            "L_diver": float(diversity_loss(heads[abnormal])) if multi else float("nan"),
            "L_norm": float(norm_loss(heads[abnormal]))}


def initial_generator(in_dim: int, num_heads: int, seed: int, **model_kw):
    """f_g at its initial weights, as `cupl.experiments.train.run` draws them for `seed`."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MultiHeadClassifier(in_dim, num_heads, **model_kw).eval()
