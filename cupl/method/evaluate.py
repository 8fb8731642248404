"""Evaluation (Sec. 4.1): clip scores to frame scores, frame-level ROC-AUC and AP.

The field's protocol, stated once: a video of T clips is scored over T x 16 frames, each
clip's score repeated for its 16 frames (crops averaged before). Ground truth is built on the
same T x 16 frames: the annotated frame mask of the video, zero beyond its real frame count.
Scores and labels of each video must have equal length, checked per video and naming it;
videos are then concatenated in list order and one curve is computed over all frames.
UCF-Crime and TAD report ROC-AUC; XD-Violence reports AP, which the papers compared in
Table 3 compute as ``auc(recall, precision)`` (`pr_auc`); scikit-learn's step-wise
`average_precision_score` is `frame_ap`.
"""

from __future__ import annotations

import numpy as np
import torch

from cupl.util import to_numpy


def frame_scores(clip_scores, frames_per_clip: int = 16):
    """[T] clip scores -> [frames_per_clip * T] frame scores, each clip repeated."""
    if clip_scores.ndim != 1:
        raise ValueError(f"clip_scores: expected shape [T], got {tuple(clip_scores.shape)}")
    if isinstance(clip_scores, torch.Tensor):
        return clip_scores.repeat_interleave(frames_per_clip)
    return np.repeat(clip_scores, frames_per_clip)


def _check_pair(scores, labels):
    s, y = to_numpy(scores).ravel(), to_numpy(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} differ in length")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    if len(np.unique(y)) < 2:
        raise ValueError("labels hold a single class: ROC-AUC / AP are undefined")
    return s, y


def frame_auc(scores, labels) -> float:
    """Frame-level ROC-AUC (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(*reversed(_check_pair(scores, labels))))


def frame_ap(scores, labels) -> float:
    """Frame-level average precision, scikit-learn's step-wise sum."""
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(*reversed(_check_pair(scores, labels))))


def pr_auc(scores, labels) -> float:
    """Frame-level AP as the XD-Violence papers compute it: trapezoidal ``auc(recall, precision)``."""
    from sklearn.metrics import auc, precision_recall_curve

    s, y = _check_pair(scores, labels)
    precision, recall, _ = precision_recall_curve(y, s)
    return float(auc(recall, precision))


def roc_curve(scores, labels):
    """(fpr, tpr) arrays for plotting."""
    from sklearn.metrics import roc_curve as _roc

    s, y = _check_pair(scores, labels)
    fpr, tpr, _ = _roc(y, s)
    return fpr, tpr


def pr_curve(scores, labels):
    """(recall, precision) arrays for plotting."""
    from sklearn.metrics import precision_recall_curve

    s, y = _check_pair(scores, labels)
    precision, recall, _ = precision_recall_curve(y, s)
    return recall, precision


def video_frame_targets(frame_mask: np.ndarray, num_clips: int, frames_per_clip: int = 16,
                        name: str = "?") -> np.ndarray:
    """Ground truth of one video over its feature length: [num_clips * frames_per_clip] uint8.

    frame_mask: [num_frames] annotated frames. Frames past num_frames (the padded end of the
    last clip) are normal. A video with more real frames than its features cover means the
    features and the annotation disagree: that is an error naming the video.
    """
    length = num_clips * frames_per_clip
    mask = np.asarray(frame_mask).astype(np.uint8).ravel()
    if len(mask) > length:
        raise ValueError(
            f"video {name}: annotation has {len(mask)} frames but its {num_clips} clips cover only "
            f"{length}; features and annotation do not belong together"
        )
    target = np.zeros(length, dtype=np.uint8)
    target[: len(mask)] = mask
    return target


def _frame_targets(split, fpc: int, caller: str) -> np.ndarray:
    """[fpc N] ground truth of a whole test split (`video_frame_targets`), in list order."""
    if split.frame_labels is None:
        raise ValueError(f"{caller}: the split has no frame labels (is it a test split?)")
    lengths = split.lengths.cpu().numpy()
    return np.concatenate([
        video_frame_targets(m, int(t), fpc, name) for m, t, name in zip(split.frame_labels, lengths, split.names)
    ])


def _clip_scores(clip_scores, split) -> np.ndarray:
    s = to_numpy(clip_scores).ravel()
    if s.shape[0] != split.num_clips:
        raise ValueError(f"clip_scores: expected [{split.num_clips}] for the split, got {tuple(s.shape)}")
    return s


def protocol_arrays(clip_scores, split, frames_per_clip: int | None = None):
    """Frame scores and targets of a whole test split, concatenated in list order.

    clip_scores: [N] one (crop-averaged) score per clip of `split`.
    returns: (scores [16 N], labels [16 N], abnormal_video [16 N] bool).
    """
    fpc = frames_per_clip or split.frames_per_clip
    labels = _frame_targets(split, fpc, "protocol_arrays")
    scores = np.repeat(_clip_scores(clip_scores, split), fpc)
    abnormal = np.repeat(np.repeat(split.labels.cpu().numpy() > 0, split.lengths.cpu().numpy()), fpc)
    return scores, labels, abnormal


def clip_frame_counts(split, frames_per_clip: int | None = None):
    """How many frames of each clip the protocol counts as anomalous and as normal.

    Every frame of a clip carries the clip's score, so the frame-level curves over 16 N frames
    equal curves over N clips weighted by these counts (`evaluate_scores`).
    returns: (positive [N], negative [N]) int64, summing to frames_per_clip per clip.
    """
    fpc = frames_per_clip or split.frames_per_clip
    positive = _frame_targets(split, fpc, "clip_frame_counts").reshape(-1, fpc).sum(axis=1, dtype=np.int64)
    return positive, fpc - positive


def _weighted_curves(scores: np.ndarray, positive: np.ndarray, negative: np.ndarray) -> dict[str, float]:
    """ROC-AUC, AP and PR-AUC of clips weighted by their frame counts: each clip is one sample
    of label 1 weighing its positive frames and one of label 0 weighing its negative ones.
    The curves' points are those of the frames (the same thresholds, the same integer counts
    summed in float64), so the numbers equal the frame-level ones, from 16 times fewer samples."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

    if positive.sum() == 0 or negative.sum() == 0:
        raise ValueError("labels hold a single class: ROC-AUC / AP are undefined")
    score = np.concatenate([scores, scores])
    label = np.concatenate([np.ones(len(scores), np.int8), np.zeros(len(scores), np.int8)])
    weight = np.concatenate([positive, negative]).astype(np.float64)
    keep = weight > 0
    score, label, weight = score[keep], label[keep], weight[keep]
    precision, recall, _ = precision_recall_curve(label, score, sample_weight=weight)
    return {"auc": float(roc_auc_score(label, score, sample_weight=weight)),
            "ap": float(average_precision_score(label, score, sample_weight=weight)),
            "pr_auc": float(auc(recall, precision))}


def evaluate_scores(clip_scores, split, frames_per_clip: int | None = None) -> dict[str, float]:
    """The field's protocol on a test split (module docstring).

    Computed on clips weighted by their frame counts (`clip_frame_counts`), which gives the
    frame-level numbers of `protocol_arrays` with `frame_auc`, `frame_ap` and `pr_auc`.
    returns: {"auc", "ap" (scikit-learn), "pr_auc" (XD form), "auc_abnormal" (abnormal videos only)}.
    """
    if split.frame_labels is None:
        raise ValueError("evaluate_scores: the split has no frame labels (is it a test split?)")
    s = _clip_scores(clip_scores, split).astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    positive, negative = clip_frame_counts(split, frames_per_clip)
    result = _weighted_curves(s, positive, negative)
    abnormal = np.repeat(split.labels.cpu().numpy() > 0, split.lengths.cpu().numpy())
    if positive[abnormal].sum() > 0 and negative[abnormal].sum() > 0:
        result["auc_abnormal"] = _weighted_curves(s[abnormal], positive[abnormal], negative[abnormal])["auc"]
    else:
        result["auc_abnormal"] = float("nan")
    return result
