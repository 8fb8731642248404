"""The pseudo-label step between the stages (`cupl.method.refine`) against hand values and numpy."""

import numpy as np
import pytest
import torch

from cupl.config import make_config
from cupl.data.split import Split
from cupl.method.refine import minmax_per_video, refine_labels, smooth_box
from cupl.experiments.train import run
from toy import toy_split


def np_box(v, box=5):
    """MIST's smoothing of one video: edge values repeated box // 2 times, then a valid box convolution."""
    padded = np.pad(np.asarray(v, dtype=np.float64), box // 2, mode="edge")
    return np.convolve(padded, np.ones(box) / box, mode="valid")


def np_smooth_minmax(v):
    s = np_box(np_box(v))
    if len(s) >= 2 and s.max() > s.min():
        s = (s - s.min()) / (s.max() - s.min())
    return s


def offsets_of(lengths):
    return torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.long)


def label_split(lengths, video_labels):
    n = int(sum(lengths))
    return Split(features=torch.zeros(n, 1, 1), offsets=offsets_of(lengths), labels=torch.tensor(video_labels),
                 names=[f"v{i}" for i in range(len(lengths))], categories=["x"] * len(lengths),
                 num_frames=torch.tensor(lengths) * 16)


def test_box_of_five_by_hand():
    # one spike of 5 spreads to 1 over the five clips around it; the edges repeat zeros
    values = torch.tensor([0, 0, 0, 0, 5, 0, 0, 0, 0], dtype=torch.float64)
    out = smooth_box(values, offsets_of([9]))
    assert out.tolist() == pytest.approx([0, 0, 1, 1, 1, 1, 1, 0, 0])


def test_box_edges_repeat_the_first_and_last_clip():
    # [1, 2] padded to [1, 1, 1, 2, 2, 2]: (1+1+1+2+2)/5 and (1+1+2+2+2)/5
    out = smooth_box(torch.tensor([1.0, 2.0], dtype=torch.float64), offsets_of([2]))
    assert out.tolist() == pytest.approx([1.4, 1.6])
    # a one-clip video is its own neighbourhood
    assert smooth_box(torch.tensor([0.3], dtype=torch.float64), offsets_of([1])).tolist() == pytest.approx([0.3])


def test_box_over_a_split_equals_np_convolve_per_video():
    rng = np.random.default_rng(0)
    lengths = [1, 2, 3, 4, 7, 20, 5]
    values = rng.random(sum(lengths))
    out = smooth_box(torch.from_numpy(values), offsets_of(lengths)).numpy()
    ends = np.cumsum(lengths)
    expected = np.concatenate([np_box(values[e - t:e]) for t, e in zip(lengths, ends)])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    # box 3 as well: the window is a parameter, not a constant
    out3 = smooth_box(torch.from_numpy(values), offsets_of(lengths), box=3).numpy()
    expected3 = np.concatenate([np_box(values[e - t:e], 3) for t, e in zip(lengths, ends)])
    np.testing.assert_allclose(out3, expected3, rtol=0, atol=1e-12)


def test_minmax_per_video_by_hand():
    values = torch.tensor([2.0, 4.0, 3.0, 0.7, 3.0, 3.0, -1.0, 1.0], dtype=torch.float64)
    out = minmax_per_video(values, offsets_of([3, 1, 2, 2]))
    # [2, 4, 3] -> [0, 1, 0.5]; one clip and a flat video are left as they are; [-1, 1] -> [0, 1]
    assert out.tolist() == pytest.approx([0.0, 1.0, 0.5, 0.7, 3.0, 3.0, 0.0, 1.0])


def test_refine_labels_matches_mist_on_abnormal_videos_only():
    rng = np.random.default_rng(1)
    lengths = [12, 6, 1, 30, 9]
    video_labels = [1, 0, 1, 1, 0]
    values = rng.random(sum(lengths)).astype(np.float32)
    out = refine_labels(torch.from_numpy(values), label_split(lengths, video_labels)).numpy()
    ends = np.cumsum(lengths)
    for t, e, label in zip(lengths, ends, video_labels):
        video = values[e - t:e]
        expected = np_smooth_minmax(video) if label == 1 else video
        np.testing.assert_allclose(out[e - t:e], expected, rtol=0, atol=1e-6)


def test_refine_none_is_the_identity():
    labels = torch.rand(10)
    assert torch.equal(refine_labels(labels, label_split([4, 6], [1, 0]), "none"), labels)


def test_refine_rejects_bad_input():
    split = label_split([4, 6], [1, 0])
    with pytest.raises(ValueError, match="method"):
        refine_labels(torch.rand(10), split, "median")
    with pytest.raises(ValueError, match="9 labels"):
        refine_labels(torch.rand(9), split)
    with pytest.raises(ValueError, match="non-finite"):
        refine_labels(torch.tensor([float("nan")] * 10), split)
    with pytest.raises(ValueError, match="odd"):
        smooth_box(torch.rand(10), split.offsets, box=4)


def test_config_switch_is_validated():
    assert make_config("ucf", "smoke").self_train.refine == "none"
    with pytest.raises(ValueError, match="self_train.refine"):
        make_config("ucf", "smoke", **{"self_train.refine": "smooth"})


def test_run_refines_the_first_labels_only():
    train, _ = toy_split(6, 6, dim=8, seed=3)
    test, _ = toy_split(3, 3, dim=8, seed=4, test=True)
    over = {"generator.steps": 20, "clip.epochs": 1, "self_train.iterations": 2, "self_train.refine": "smooth_minmax"}
    refined = run(make_config("ucf", "smoke", **over), train, test, progress=False, keep_arrays=True)
    plain = run(make_config("ucf", "smoke", **{**over, "self_train.refine": "none"}), train, test,
                progress=False, keep_arrays=True)
    first, raw = refined.arrays[0]["labels"].double().numpy(), plain.arrays[0]["labels"].double().numpy()
    ends = np.cumsum(train.lengths.numpy())
    for t, e, label in zip(train.lengths.tolist(), ends, train.labels.tolist()):
        expected = np_smooth_minmax(raw[e - t:e]) if label == 1 else np.zeros(t)  # normal: zero by the weak label
        np.testing.assert_allclose(first[e - t:e], expected, rtol=0, atol=1e-5)
    # the uncertainty is f_g's either way; only the targets change
    assert torch.equal(refined.arrays[0]["uncertainty"], plain.arrays[0]["uncertainty"])
    # iteration 2's labels are f_c's MC means, not refined: abnormal videos need not span [0, 1]
    second = refined.arrays[1]["labels"].numpy()
    spans = [second[e - t:e].max() - second[e - t:e].min()
             for t, e, label in zip(train.lengths.tolist(), ends, train.labels.tolist()) if label == 1]
    assert min(spans) < 0.999
