"""The evaluation protocol (Sec. 4.1) on cases small enough to score by hand."""

import numpy as np
import pytest
import torch

from cupl.data.split import Split
from cupl.evaluate import (evaluate_scores, frame_ap, frame_auc, frame_scores, pr_auc, pr_curve, protocol_arrays,
                           roc_curve, video_frame_targets)


def test_frame_scores_repeat_each_clip():
    out = frame_scores(np.array([0.1, 0.9]))
    assert isinstance(out, np.ndarray) and out.shape == (32,)
    assert (out[:16] == 0.1).all() and (out[16:] == 0.9).all()
    out = frame_scores(torch.tensor([1.0, 2.0, 3.0]), frames_per_clip=2)
    assert torch.equal(out, torch.tensor([1.0, 1, 2, 2, 3, 3]))
    with pytest.raises(ValueError, match=r"\[T\].*\(2, 2\)"):
        frame_scores(np.zeros((2, 2)))


# scores [0.1, 0.4, 0.35, 0.8], labels [0, 0, 1, 1]
SCORES, LABELS = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])


def test_frame_auc_by_counting_pairs():
    # (pos, neg) pairs: 0.35 > 0.1 yes, 0.35 > 0.4 no, 0.8 > 0.1 yes, 0.8 > 0.4 yes -> 3 / 4
    assert frame_auc(SCORES, LABELS) == pytest.approx(0.75)
    # a tie counts one half: pos 0.5 vs neg 0.5 -> 0.5, vs neg 0.2 -> 1; (0.5 + 1) / 2
    assert frame_auc(torch.tensor([0.5, 0.5, 0.2]), torch.tensor([1, 0, 0])) == pytest.approx(0.75)


def test_frame_ap_by_hand():
    # descending: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-)
    # precision at each recall step: R 0 -> 0.5 at P = 1/1; R 0.5 -> 1 at P = 2/3
    # AP = sum (R_n - R_{n-1}) P_n = 0.5 * 1 + 0.5 * 2/3 = 0.8333333
    assert frame_ap(SCORES, LABELS) == pytest.approx(0.8333333, abs=1e-6)


def test_pr_auc_by_hand():
    # PR points (recall, precision) by threshold: 0.1 -> (1, 1/2), 0.35 -> (1, 2/3), 0.4 -> (1/2, 1/2),
    # 0.8 -> (1/2, 1), then the end point (0, 1). Trapezoids over recall: only the two drops in recall
    # have width: (1 -> 1/2) at heights 2/3, 1/2: 0.5 * 7/12 = 0.2916667; (1/2 -> 0) at 1, 1: 0.5
    # total 0.7916667
    assert pr_auc(SCORES, LABELS) == pytest.approx(0.7916667, abs=1e-6)


def test_curves_for_plotting():
    fpr, tpr = roc_curve(SCORES, LABELS)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    recall, precision = pr_curve(SCORES, LABELS)
    assert recall.shape == precision.shape and recall.max() == 1


def test_metric_bad_input():
    with pytest.raises(ValueError, match="single class"):
        frame_auc(np.array([0.1, 0.2]), np.array([1, 1]))
    with pytest.raises(ValueError, match="single class"):
        frame_ap(np.array([0.1, 0.2]), np.array([0, 0]))
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        frame_auc(np.array([0.1, 0.2, 0.3]), np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        pr_auc(np.array([0.1, np.nan]), np.array([0, 1]))


def test_video_frame_targets_zero_pad():
    mask = np.zeros(20, dtype=np.uint8)
    mask[5:18] = 1
    target = video_frame_targets(mask, num_clips=2, frames_per_clip=16, name="Fight001")
    assert target.shape == (32,) and target.dtype == np.uint8
    assert target[5:18].all() and target[:5].sum() == 0 and target[18:].sum() == 0


def test_video_frame_targets_rejects_longer_annotation():
    with pytest.raises(ValueError, match=r"Fight001.*33 frames.*2 clips.*32"):
        video_frame_targets(np.zeros(33), num_clips=2, frames_per_clip=16, name="Fight001")


def _two_video_split():
    # video A (abnormal): 2 clips, 30 real frames, frames 16..29 anomalous; 2 padded frames (30, 31)
    # video B (normal): 1 clip, 16 frames
    mask_a = np.zeros(30, dtype=np.uint8)
    mask_a[16:] = 1
    return Split(
        features=torch.zeros(3, 1, 4), offsets=torch.tensor([0, 2, 3]), labels=torch.tensor([1, 0]),
        names=["A", "B"], categories=["Toy", "Normal"], num_frames=torch.tensor([30, 16]),
        frame_labels=[mask_a, np.zeros(16, dtype=np.uint8)],
    )


def test_evaluate_scores_by_hand():
    # clip scores: A = [0.2, 0.9], B = [0.5] -> frames: A 16 x 0.2, 16 x 0.9; B 16 x 0.5
    # positives: 14 frames at 0.9; negatives: 16 at 0.2, 2 padded at 0.9, 16 at 0.5 (34 in all)
    # AUC: each positive beats 32 negatives and ties 2 -> (32 + 0.5 * 2) / 34 = 33/34
    # AP: the one threshold 0.9 reaches recall 1 at precision 14/16 -> 0.875
    # PR-AUC: recall stays 1 for thresholds 0.2, 0.5, 0.9 then drops to 0 at precision 1:
    #         1 * (0.875 + 1) / 2 = 0.9375
    # abnormal video only: 14 positives vs 16 at 0.2 and 2 ties -> (16 + 1) / 18 = 17/18
    result = evaluate_scores(torch.tensor([0.2, 0.9, 0.5]), _two_video_split())
    assert result["auc"] == pytest.approx(33 / 34)
    assert result["ap"] == pytest.approx(0.875)
    assert result["pr_auc"] == pytest.approx(0.9375)
    assert result["auc_abnormal"] == pytest.approx(17 / 18)


def test_evaluate_scores_bad_input():
    split = _two_video_split()
    with pytest.raises(ValueError, match=r"\[3\].*\(2,\)"):
        evaluate_scores(np.array([0.1, 0.2]), split)
    split.frame_labels[0] = np.zeros(40, dtype=np.uint8)  # longer than 2 clips x 16 frames
    with pytest.raises(ValueError, match="video A"):
        evaluate_scores(np.array([0.1, 0.2, 0.3]), split)
    split.frame_labels[0] = np.zeros(30, dtype=np.uint8)  # now no anomalous frame at all
    with pytest.raises(ValueError, match="single class"):
        evaluate_scores(np.array([0.1, 0.2, 0.3]), split)
    split.frame_labels = None
    with pytest.raises(ValueError, match="frame labels"):
        evaluate_scores(np.array([0.1, 0.2, 0.3]), split)


def _random_split(seed: int, videos: int = 12):
    """Videos of 1-9 clips whose annotations start and end inside clips, with some frames
    past the real frame count, abnormal and normal videos."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 10, videos)
    frames = lengths * 16 - rng.integers(0, 16, videos)
    labels = np.arange(videos) % 2
    masks = []
    for n, abnormal in zip(frames, labels):
        mask = np.zeros(n, dtype=np.uint8)
        if abnormal:
            start = rng.integers(0, n)
            mask[start:start + rng.integers(1, 40)] = 1
        masks.append(mask)
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]))
    return Split(features=torch.zeros(int(lengths.sum()), 1, 2), offsets=offsets, labels=torch.from_numpy(labels),
                 names=[f"v{i}" for i in range(videos)], categories=["Toy"] * videos,
                 num_frames=torch.from_numpy(frames), frame_labels=masks)


@pytest.mark.parametrize("seed", range(6))
def test_clip_weighted_metrics_equal_the_frame_level_ones(seed):
    split = _random_split(seed)
    rng = np.random.default_rng(100 + seed)
    clip_scores = np.round(rng.uniform(size=split.num_clips), 1).astype(np.float32)  # many ties
    result = evaluate_scores(clip_scores, split)
    scores, labels, abnormal = protocol_arrays(clip_scores, split)  # frames, scored by scikit-learn
    assert result["auc"] == pytest.approx(frame_auc(scores, labels), abs=1e-12)
    assert result["ap"] == pytest.approx(frame_ap(scores, labels), abs=1e-12)
    assert result["pr_auc"] == pytest.approx(pr_auc(scores, labels), abs=1e-12)
    if len(np.unique(labels[abnormal])) == 2:
        assert result["auc_abnormal"] == pytest.approx(frame_auc(scores[abnormal], labels[abnormal]), abs=1e-12)
    else:
        assert np.isnan(result["auc_abnormal"])


def test_evaluation_benchmark_agrees_on_the_ucf_test_structure(load_benchmark):
    module = load_benchmark("evaluation")
    split = module.ucf_test_split()
    assert split.num_videos == 290 and split.num_clips == 69634  # the real test list, ceil(frames / 16)
    assert module.main(["--repeats", "1"]) == 0  # both ways within 1e-9
