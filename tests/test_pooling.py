"""Segment pooling (Sec. 3.1) against hand-worked boundaries and a plain-python reference."""

import numpy as np
import pytest
import torch

from cupl.pooling import segment, segment_split


def reference_segment(clips: np.ndarray, num_segments: int) -> np.ndarray:
    """The contract read literally, one segment at a time."""
    t = clips.shape[0]
    b = [int(v) for v in np.floor(np.linspace(0, t, num_segments + 1))]
    out = []
    for s in range(num_segments):
        rows = clips[b[s]:b[s + 1]] if b[s + 1] > b[s] else clips[b[s]:b[s] + 1]
        out.append(rows.astype(np.float64).sum(0) / len(rows))
    return np.stack(out)


def test_t10_s4_by_hand():
    # b = floor(linspace(0, 10, 5)) = floor([0, 2.5, 5, 7.5, 10]) = [0, 2, 5, 7, 10]
    # segments: mean(0, 1) = 0.5, mean(2, 3, 4) = 3, mean(5, 6) = 5.5, mean(7, 8, 9) = 8
    clips = np.arange(10, dtype=np.float64)
    np.testing.assert_allclose(segment(clips, 4), [0.5, 3.0, 5.5, 8.0])


def test_fewer_clips_than_segments_repeats_clips():
    # T = 3, S = 5: b = floor([0, 0.6, 1.2, 1.8, 2.4, 3]) = [0, 0, 1, 1, 2, 3]
    # s0 [0:0] empty -> c0; s1 [0:1] -> c0; s2 [1:1] empty -> c1; s3 [1:2] -> c1; s4 [2:3] -> c2
    clips = np.array([10.0, 20.0, 30.0])
    np.testing.assert_allclose(segment(clips, 5), [10, 10, 20, 20, 30])


def test_single_clip_fills_every_segment():
    clips = torch.tensor([[1.5, -2.0]])
    out = segment(clips, 32)
    assert out.shape == (32, 2)
    assert torch.equal(out, clips.expand(32, 2))


def test_t_equals_s_is_identity():
    clips = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(segment(clips, 7), clips)


def test_trailing_dims_match_reference():
    rng = np.random.default_rng(0)
    clips = rng.normal(size=(37, 3, 5)).astype(np.float32)
    out = segment(clips, 32)
    assert out.shape == (32, 3, 5)
    np.testing.assert_allclose(out, reference_segment(clips, 32), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("t,s", [(1, 32), (31, 32), (33, 32), (100, 32), (90, 10), (61, 7), (1000, 32)])
def test_numpy_and_torch_match_reference(t, s):
    rng = np.random.default_rng(t * 100 + s)
    clips = rng.normal(size=(t, 4))
    np_out = segment(clips, s)
    torch_out = segment(torch.from_numpy(clips), s)
    ref = reference_segment(clips, s)
    np.testing.assert_allclose(np_out, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(torch_out.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_same_library_and_dtype_out():
    clips = np.ones((5, 2), dtype=np.float32)
    out = segment(clips, 3)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    out = segment(torch.ones(5, 2, dtype=torch.float16), 3)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float16


def test_bad_input():
    with pytest.raises(ValueError, match=r"clips.*\(0, 4\)"):
        segment(np.zeros((0, 4)), 32)
    with pytest.raises(ValueError, match="num_segments"):
        segment(np.zeros((3, 4)), 0)
    with pytest.raises(ValueError, match=r"\[T, \*rest\]"):
        segment(np.float64(3.0), 4)


def _ragged(lengths, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    feats = [torch.from_numpy(rng.normal(size=(t, 2, dim)).astype(np.float32)) for t in lengths]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.long)
    return feats, torch.cat(feats), offsets


# 90 clips into 10 segments is a case where floor(T * linspace(0, 1, S + 1)) and
# floor(linspace(0, T, S + 1)) differ (boundary 63 vs 62), so the split form must follow the latter.
@pytest.mark.parametrize("num_segments", [32, 10, 7])
@pytest.mark.parametrize("chunk_elements", [2**26, 1, 200])
def test_segment_split_equals_per_video_segment(num_segments, chunk_elements):
    lengths = [1, 5, 90, 3, 32, 33, 170, 2]
    videos, features, offsets = _ragged(lengths)
    out = segment_split(features, offsets, num_segments, chunk_elements=chunk_elements)
    assert out.shape == (len(lengths), num_segments, 2, 3)
    for v, clips in enumerate(videos):
        torch.testing.assert_close(out[v], segment(clips, num_segments), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out[v].numpy(), reference_segment(clips.numpy(), num_segments), rtol=1e-5, atol=1e-6)


def test_segment_split_boundaries_follow_numpy_over_many_lengths():
    # one value per clip = its index in the video, so a segment's mean reveals its boundaries exactly
    lengths = list(range(1, 400))
    features = torch.cat([torch.arange(t, dtype=torch.float64) for t in lengths])[:, None, None]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.long)
    for s in (10, 12, 32):
        out = segment_split(features, offsets, s)[:, :, 0, 0].numpy()
        for v, t in enumerate(lengths):
            np.testing.assert_allclose(out[v], reference_segment(np.arange(t, dtype=np.float64), s), atol=1e-9)


def test_segment_split_rejects_empty_video():
    features = torch.zeros(4, 1, 2)
    with pytest.raises(ValueError, match="no clips"):
        segment_split(features, torch.tensor([0, 2, 2, 4]))
