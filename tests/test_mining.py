"""Reliable clip mining and the long-term temporal memory (Sec. 3.3) on hand cases."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from cupl.mining import context_features, reliable_indices, reliable_mask_split, temporal_context


# ---- temporal context -------------------------------------------------------------------

def test_temporal_context_by_hand():
    # c_t = t + 1, w = 5. Memory: t=0 -> c_0 = 1 (edge rule); t=1 -> mean(c_0) = 1;
    # t=2 -> mean(1, 2) = 1.5; t=3 -> 2; t=4 -> mean(1..4) = 2.5; t=5 -> mean(1..5) = 3 (exactly w);
    # t=6 -> mean(c_1..c_5) = mean(2..6) = 4; t=7 -> mean(3..7) = 5
    clips = torch.arange(1.0, 9.0)[:, None]
    out = temporal_context(clips, window=5)
    assert out.shape == (8, 2)
    assert torch.equal(out[:, 0], clips[:, 0])
    torch.testing.assert_close(out[:, 1], torch.tensor([1, 1, 1.5, 2, 2.5, 3, 4, 5.0]))


def test_temporal_context_window_two_with_crops():
    # [T=4, C=2, D=1]; crop 0 holds t, crop 1 holds 10 t. w = 2:
    # memory crop 0: t=0 -> 0; t=1 -> 0; t=2 -> mean(0, 1) = 0.5; t=3 -> mean(1, 2) = 1.5; crop 1 is 10x
    t = torch.arange(4.0)
    clips = torch.stack([t, 10 * t], dim=1)[:, :, None]
    out = temporal_context(clips, window=2)
    assert out.shape == (4, 2, 2)
    assert torch.equal(out[..., 0], clips[..., 0])
    torch.testing.assert_close(out[:, 0, 1], torch.tensor([0, 0, 0.5, 1.5]))
    torch.testing.assert_close(out[:, 1, 1], torch.tensor([0, 0, 5, 15.0]))


def reference_context(clips: np.ndarray, window: int) -> np.ndarray:
    out = []
    for t in range(len(clips)):
        prev = clips[max(0, t - window):t]
        out.append(np.concatenate([clips[t], clips[0] if t == 0 else prev.mean(0)], axis=-1))
    return np.stack(out)


@pytest.mark.parametrize("t,window", [(1, 5), (3, 5), (5, 5), (20, 5), (12, 1), (9, 8)])
def test_temporal_context_matches_reference(t, window):
    clips = np.random.default_rng(t).normal(size=(t, 3, 4)).astype(np.float32)
    out = temporal_context(torch.from_numpy(clips), window)
    np.testing.assert_allclose(out.numpy(), reference_context(clips, window), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window", [0, -1, 2.5, "5", None])
def test_bad_window(window):
    with pytest.raises(ValueError, match="window"):
        temporal_context(torch.zeros(4, 2), window)
    with pytest.raises(ValueError, match="window"):
        context_features(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.arange(4), window)


def test_temporal_context_bad_input():
    with pytest.raises(ValueError, match=r"clips.*\(0, 3\)"):
        temporal_context(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"\[T, \*rest, D\].*\(4,\)"):
        temporal_context(torch.zeros(4))


def _two_videos():
    # video 0: rows 0..5 with value 100 + t; video 1: rows 6..9 with value t (t = 0..3)
    values = torch.tensor([100, 101, 102, 103, 104, 105, 0, 1, 2, 3.0])
    features = torch.stack([values, -values], dim=1)[:, None, :]  # [N=10, C=1, D=2]
    starts = torch.tensor([0] * 6 + [6] * 4)
    return features, starts


def test_context_features_do_not_cross_videos():
    features, starts = _two_videos()
    out = context_features(features, starts, torch.arange(10), window=5)
    assert out.shape == (10, 1, 4)
    # second video: t=0 -> itself (0), t=1 -> mean(0) = 0, t=2 -> mean(0, 1) = 0.5, t=3 -> mean(0, 1, 2) = 1
    torch.testing.assert_close(out[6:, 0, 2], torch.tensor([0, 0, 0.5, 1.0]))
    torch.testing.assert_close(out[6:, 0, 3], -torch.tensor([0, 0, 0.5, 1.0]))
    # first video, t = 5: mean(100..104) = 102
    assert out[5, 0, 2].item() == pytest.approx(102.0)


def test_context_features_on_chosen_rows_and_crops():
    rng = np.random.default_rng(0)
    lengths = [4, 1, 7, 1]  # single-clip videos, one of them last in the split
    clips = [rng.normal(size=(t, 3, 2)).astype(np.float32) for t in lengths]
    features = torch.from_numpy(np.concatenate(clips))
    starts = torch.tensor(np.repeat(np.cumsum([0] + lengths[:-1]), lengths))
    refs = np.concatenate([reference_context(c, 3) for c in clips])
    rows = torch.tensor([12, 0, 4, 5, 11, 7, 4])
    out = context_features(features, starts, rows, window=3)
    np.testing.assert_allclose(out.numpy(), refs[rows.numpy()], rtol=1e-5, atol=1e-6)
    crop = torch.tensor([2, 1, 0, 2, 1, 0, 2])
    one = context_features(features, starts, rows, window=3, crop=crop)
    assert one.shape == (7, 4)
    np.testing.assert_allclose(one.numpy(), refs[rows.numpy(), crop.numpy()], rtol=1e-5, atol=1e-6)


# ---- reliable clip selection ------------------------------------------------------------

def reference_indices(u, ratio):
    """max(1, ceil(ratio T)) least uncertain, ties by lower index, ascending; decimal ratio."""
    n = max(1, math.ceil(Fraction(str(ratio)) * len(u)))
    return sorted(sorted(range(len(u)), key=lambda i: (u[i], i))[:n])


def test_reliable_indices_ties_by_lower_index():
    # [0.2, 0.1, 0.2, 0.2], R = 0.5 -> keep 2: 0.1 at 1, then of the three 0.2 the lowest index, 0
    u = torch.tensor([0.2, 0.1, 0.2, 0.2])
    assert reliable_indices(u, 0.5).tolist() == [0, 1]
    assert reliable_indices(torch.full((6,), 0.3), 0.5).tolist() == [0, 1, 2]


def test_reliable_indices_ascending_by_hand():
    # [0.3, 0.1, 0.2, 0.1, 0.2], R = 0.6 -> ceil(3) = 3: 0.1@1, 0.1@3, 0.2@2 -> in time order [1, 2, 3]
    u = torch.tensor([0.3, 0.1, 0.2, 0.1, 0.2])
    assert reliable_indices(u, 0.6).tolist() == [1, 2, 3]
    # R = 0.4 -> ceil(2) = 2 -> [1, 3]
    assert reliable_indices(u, 0.4).tolist() == [1, 3]


def test_reliable_indices_ratio_one_keeps_all_and_tiny_ratio_keeps_one():
    u = torch.tensor([0.5, 0.4, 0.9, 0.05, 0.3])
    assert reliable_indices(u, 1.0).tolist() == [0, 1, 2, 3, 4]
    assert reliable_indices(u, 1e-6).tolist() == [3]
    assert reliable_indices(torch.tensor([0.7]), 0.5).tolist() == [0]


def test_reliable_indices_count_is_decimal():
    # 0.3 * 10 is 3.0000000000000004 in floating point; the rule means 3
    u = torch.arange(10.0)
    assert len(reliable_indices(u, 0.3)) == 3
    assert len(reliable_indices(torch.arange(100.0), 0.07)) == 7
    assert len(reliable_indices(torch.arange(7.0), 0.5)) == 4  # ceil(3.5)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.01, float("nan")])
def test_reliable_indices_bad_ratio(ratio):
    with pytest.raises(ValueError, match="ratio"):
        reliable_indices(torch.rand(5), ratio)
    with pytest.raises(ValueError, match="ratio"):
        reliable_mask_split(torch.rand(5), torch.tensor([0, 5]), ratio)


def test_reliable_indices_bad_input():
    with pytest.raises(ValueError, match=r"uncertainty.*non-finite"):
        reliable_indices(torch.tensor([0.1, float("nan"), 0.2]), 0.5)
    with pytest.raises(ValueError, match=r"uncertainty.*non-finite"):
        reliable_mask_split(torch.tensor([0.1, float("inf"), 0.2]), torch.tensor([0, 3]), 0.5)
    with pytest.raises(ValueError, match=r"uncertainty.*\(0,\)"):
        reliable_indices(torch.zeros(0), 0.5)
    with pytest.raises(ValueError, match=r"\[T\].*\(2, 3\)"):
        reliable_indices(torch.zeros(2, 3), 0.5)


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7, 1.0, 0.01])
def test_reliable_mask_split_equals_per_video(ratio):
    rng = np.random.default_rng(int(ratio * 100))
    lengths = [1, 10, 3, 57, 2, 33, 1]
    # values on a coarse grid, so that ties within a video are common
    u = rng.integers(0, 4, size=sum(lengths)).astype(np.float32) / 4
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]))
    mask = reliable_mask_split(torch.from_numpy(u), offsets, ratio)
    assert mask.dtype == torch.bool and mask.shape == (sum(lengths),)
    for v in range(len(lengths)):
        lo, hi = int(offsets[v]), int(offsets[v + 1])
        chosen = torch.nonzero(mask[lo:hi]).flatten().tolist()
        assert chosen == reference_indices(u[lo:hi].tolist(), ratio)
        assert chosen == reliable_indices(torch.from_numpy(u[lo:hi]), ratio).tolist()
