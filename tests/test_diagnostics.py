"""Diagnostics on hand-made splits: events, coverage, uncertainty bins, selection.

Expected values are worked out by hand in the comments, or by a plain per-event loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cupl.data.split import Split
from cupl.experiments.diagnostics import (event_coverage, event_runs, pseudo_label_quality, selection_quality,
                                          uncertainty_bins)


def split_of(lengths, labels) -> Split:
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.long)
    n = int(offsets[-1])
    return Split(features=torch.zeros(n, 1, 2), offsets=offsets, labels=torch.tensor(labels),
                 names=[f"v{i}" for i in range(len(lengths))],
                 categories=["Toy" if l else "Normal" for l in labels],
                 num_frames=torch.tensor(lengths) * 16)


# ---------------------------------------------------------------- event_runs


def test_event_runs_do_not_cross_video_boundaries():
    # videos: [1 1 0 1 | 1 0 0 | 0 1 1]; rows 3 and 4 touch but belong to two videos
    mask = np.array([1, 1, 0, 1, 1, 0, 0, 0, 1, 1], dtype=bool)
    video, start, end = event_runs(mask, [0, 4, 7, 10])
    assert video.tolist() == [0, 0, 1, 2]
    assert start.tolist() == [0, 3, 0, 1]
    assert end.tolist() == [2, 4, 1, 3]


def test_event_runs_empty_videos_and_no_events():
    video, start, end = event_runs(torch.zeros(5, dtype=torch.bool), torch.tensor([0, 2, 2, 5]))
    assert len(video) == len(start) == len(end) == 0
    video, start, end = event_runs(np.ones(5, dtype=bool), [0, 2, 2, 5])  # video 1 has no rows
    assert video.tolist() == [0, 2] and start.tolist() == [0, 0] and end.tolist() == [2, 3]


def test_event_runs_rejects_a_mask_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"\[6\]"):
        event_runs(np.ones(5, dtype=bool), [0, 2, 6])


# ---------------------------------------------------------------- event_coverage


def coverage_case():
    """v0 abnormal, two events (rows 1-2 and 5), a boundary clip (oracle 0.5) with a high
    label that must count neither as event nor as normal; v1 abnormal with one event (left
    out); v2 normal (left out); v3 abnormal, two one-clip events."""
    oracle = [0, 1, 1, 0, 0.5, 1, 0, 0, 0,   1, 1, 0,   0, 0,   1, 0, 1, 0]
    labels = [0.1, 0.9, 0.2, 0.3, 0.95, 0.3, 0.2, 0.6, 0.5,   0.9, 0.9, 0.0,   0.99, 0.99,
              0.05, 0.01, 0.04, 0.03]
    split = split_of([9, 3, 2, 4], [1, 1, 0, 1])
    return torch.tensor(labels), torch.tensor(oracle), split


def test_event_coverage_by_hand():
    labels, oracle, split = coverage_case()
    out = event_coverage(labels, oracle, split)
    # v0 normal clips (oracle 0): 0.1 0.3 0.2 0.6 0.5. Event 1 peak 0.9 beats all 5 -> 1.0;
    # event 2 peak 0.3: below 0.1 0.2, tie 0.3 -> 2.5 / 5 = 0.5.
    # v3 normal clips: 0.01 0.03. Peaks 0.05 -> 1.0 and 0.04 -> 1.0.
    assert out["events"] == 4 and out["videos"] == 2
    assert out["event_score"] == pytest.approx((1.0 + 0.5 + 1.0 + 1.0) / 4)
    assert out["coverage"] == pytest.approx(3 / 4)  # level 0.9
    assert out["all_covered"] == pytest.approx(1 / 2)  # v3 yes, v0 no


def test_event_coverage_level_and_min_events():
    labels, oracle, split = coverage_case()
    assert event_coverage(labels, oracle, split, level=0.5)["coverage"] == 1.0
    out = event_coverage(labels, oracle, split, min_events=1)
    # v1 joins: one event (rows 0-1) peak 0.9 vs its normal clip 0.0 -> 1.0
    assert out["events"] == 5 and out["videos"] == 3
    assert out["event_score"] == pytest.approx(4.5 / 5)
    out = event_coverage(labels, oracle, split, min_events=3)
    assert out["events"] == 0 and np.isnan(out["coverage"])


def test_event_coverage_against_a_plain_loop():
    rng = np.random.default_rng(3)
    lengths = rng.integers(5, 40, size=30)
    split = split_of(lengths.tolist(), rng.integers(0, 2, size=30).tolist())
    oracle = (rng.random(int(lengths.sum())) < 0.3).astype(np.float32)
    labels = np.round(rng.random(len(oracle)), 1)  # coarse values: many ties
    off = split.offsets.numpy()
    scores = []
    for v in range(split.num_videos):
        truth, y = oracle[off[v]:off[v + 1]], labels[off[v]:off[v + 1]]
        normal = y[truth == 0]
        runs, t = [], 0
        while t < len(truth):
            if truth[t] > 0.5:
                e = t
                while e < len(truth) and truth[e] > 0.5:
                    e += 1
                runs.append(y[t:e].max())
                t = e
            else:
                t += 1
        if split.labels[v] == 1 and len(runs) >= 2 and len(normal):
            scores += [((normal < p).sum() + 0.5 * (normal == p).sum()) / len(normal) for p in runs]
    out = event_coverage(torch.tensor(labels), torch.tensor(oracle), split, level=0.8)
    assert out["events"] == len(scores) > 10
    assert out["event_score"] == pytest.approx(np.mean(scores))
    assert out["coverage"] == pytest.approx(np.mean(np.array(scores) >= 0.8))


def test_event_coverage_rejects_bad_input():
    labels, oracle, split = coverage_case()
    with pytest.raises(ValueError, match="labels.*18"):
        event_coverage(labels[:-1], oracle, split)
    with pytest.raises(ValueError, match="level"):
        event_coverage(labels, oracle, split, level=0.0)


# ---------------------------------------------------------------- uncertainty and selection


def test_uncertainty_bins_by_hand():
    # abnormal video: sorted by uncertainty the rows are 1 (0.1), 3 (0.2) | 2 (0.3), 0 (0.4)
    # bin 0: errors |0-0|, |0-0| -> 0; bin 1: |0.5-1|, |1-0| -> 0.75. The normal video is left out.
    split = split_of([4, 2], [1, 0])
    labels = torch.tensor([1.0, 0.0, 0.5, 0.0, 9.0, 9.0])
    unc = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.0, 5.0])
    oracle = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    out = uncertainty_bins(labels, unc, oracle, split, bins=2)
    assert out["uncertainty"].tolist() == pytest.approx([0.15, 0.35])
    assert out["error"].tolist() == pytest.approx([0.0, 0.75])
    assert out["clips"].tolist() == [2, 2]
    assert uncertainty_bins(labels, unc, oracle, split, bins=3)["clips"].tolist() == [2, 1, 1]


def test_selection_quality_by_hand():
    # abnormal video, keys rank rows 0 < 1 < 2 < 3; truth: row 0 anomalous.
    # R = 1: AUC 0.7 vs (0.2, 0.8, 0.1) = 2/3, MAE (0.3 + 0.2 + 0.8 + 0.1) / 4 = 0.35
    # R = 0.5: rows 0, 1: AUC 1, MAE 0.25.  R = 0.1: max(1, ceil(0.4)) = 1 row: AUC undefined.
    split = split_of([4, 3], [1, 0])
    labels = torch.tensor([0.7, 0.2, 0.8, 0.1, 0.9, 0.9, 0.9])
    keys = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0, 0.0, 0.0])
    oracle = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    out = selection_quality(labels, keys, oracle, split, [1.0, 0.5, 0.1]).set_index("ratio")
    assert out["kept"].tolist() == pytest.approx([1.0, 0.5, 0.25])
    assert out.loc[1.0, "label_auc"] == pytest.approx(2 / 3)
    assert out.loc[0.5, "label_auc"] == pytest.approx(1.0)
    assert np.isnan(out.loc[0.1, "label_auc"])
    assert out["label_mae"].tolist() == pytest.approx([0.35, 0.25, 0.3])
    assert out["anomalous"].tolist() == pytest.approx([0.25, 0.5, 1.0])


def test_selection_at_r_equal_one_agrees_with_pseudo_label_quality():
    rng = np.random.default_rng(0)
    split = split_of([7, 5, 9], [1, 0, 1])
    labels, unc = torch.rand(21, generator=torch.Generator().manual_seed(1)), torch.rand(21)
    oracle = torch.tensor((rng.random(21) < 0.4).astype(np.float32))
    row = selection_quality(labels, unc, oracle, split, [1.0]).iloc[0]
    quality = pseudo_label_quality(labels, unc, torch.ones(21, dtype=torch.bool), oracle, split)
    assert row["label_auc"] == pytest.approx(quality["label_auc"])
    assert row["label_mae"] == pytest.approx(quality["label_mae"])


def test_event_share_of_selected_clips_by_hand():
    # one abnormal video of 4 clips (truth 1, 0, 0, 1) and one normal video of 2 clips;
    # selecting clips 1 and 3 of the abnormal video keeps one event clip of two: 1/2;
    # all clips of the abnormal video: 2 event clips of 4 = 1/2 too; selecting 1 and 2: 0
    from cupl.data.split import Split

    split = Split(features=torch.zeros(6, 1, 2), offsets=torch.tensor([0, 4, 6]), labels=torch.tensor([1, 0]),
                  names=["a", "n"], categories=["X", "Normal"], num_frames=torch.tensor([64, 32]))
    oracle = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    labels = torch.tensor([0.9, 0.2, 0.1, 0.8, 0.0, 0.0])
    unc = torch.zeros(6)
    q = pseudo_label_quality(labels, unc, torch.tensor([False, True, False, True, True, True]), oracle, split)
    assert q["event_share"] == 0.5 and q["event_share_selected"] == 0.5
    q = pseudo_label_quality(labels, unc, torch.tensor([False, True, True, False, True, True]), oracle, split)
    assert q["event_share_selected"] == 0.0


def test_uncertainty_bins_and_selection_reject_bad_input():
    split = split_of([4, 2], [1, 0])
    ok = torch.zeros(6)
    with pytest.raises(ValueError, match="bins"):
        uncertainty_bins(ok, ok, ok, split, bins=0)
    with pytest.raises(ValueError, match=r"uncertainty.*\[6\]"):
        uncertainty_bins(ok, torch.zeros(5), ok, split)
    with pytest.raises(ValueError, match=r"keys.*\[6\]"):
        selection_quality(ok, torch.zeros(7), ok, split, [0.5])
    with pytest.raises(ValueError, match="ratio"):
        selection_quality(ok, ok, ok, split, [0.0])
