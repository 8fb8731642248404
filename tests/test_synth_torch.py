"""The embedded benchmark made on a device (`cupl.data.synth_torch`): event strengths by hand,
and the structure that the plan fixes (clip counts, frame labels, oracle) against the numpy
generator's `generate`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cupl.data import synth
from cupl.data.synth import PREMISES, VideoPlan
from cupl.data.synth_torch import (build_split, clip_event_strength, evenly_spaced, plan_events, stretch,
                                   synthesize)


@pytest.fixture(scope="module")
def smoke():
    """(plans, videos) of the first 4 videos of each split of the `smoke` bank, from numpy."""
    plans = list(synth.video_plan("ucf", "smoke", 0, max_videos=4))
    videos = list(synth.generate("ucf", "smoke", 0, max_videos=4))
    return plans, videos


def test_clip_event_strength_by_hand():
    # video 0: 48 frames (3 clips), event [8, 24) amplitude 2 and [20, 48) amplitude 1;
    # video 1: 24 frames (2 clips, the second of 8 frames), [0, 16) amplitude 4, [18, 22) amplitude 2.
    # clip 0: 8 frames at 2 -> 16/16 = 1.0; clip 1 (16-31): 4 at 2, 4 at 3, 8 at 1 -> 28/16 = 1.75;
    # clip 2: 16 at 1 -> 1.0; clip 3: 16 at 4 -> 4.0; clip 4 (frames 16-23): 4 at 2 -> 8/8 = 1.0.
    strength = clip_event_strength(torch.tensor([48, 24]), torch.tensor([0, 0, 1, 1]), torch.tensor([8, 20, 0, 18]),
                                   torch.tensor([24, 48, 16, 22]), torch.tensor([2.0, 1.0, 4.0, 2.0]))
    torch.testing.assert_close(strength, torch.tensor([1.0, 1.75, 1.0, 4.0, 1.0]))


def test_clip_event_strength_names_an_event_outside_its_video():
    with pytest.raises(ValueError, match=r"event \[10, 30\) of video 1 .* 24 frames"):
        clip_event_strength(torch.tensor([48, 24]), torch.tensor([0, 1]), torch.tensor([0, 10]),
                            torch.tensor([4, 30]), torch.ones(2))


def test_unit_strength_is_the_numpy_oracle(smoke):
    plans, videos = smoke
    train = [p for p in plans if p.split == "train"]
    oracle = np.concatenate([v.oracle_clip_labels for v in videos if v.split == "train"])
    assert len(train) == 4 and oracle.max() > 0  # abnormal videos with events are among them
    num_frames, video, start, end = plan_events(train)
    strength = clip_event_strength(num_frames, video, start, end, torch.ones(len(video)))
    np.testing.assert_allclose(strength.numpy(), oracle, rtol=0, atol=1e-6)


@pytest.mark.parametrize("split", ["train", "test"])
def test_split_has_the_numpy_banks_structure(smoke, split):
    plans, videos = smoke
    planned = [p for p in plans if p.split == split]
    made = [v for v in videos if v.split == split]
    s = build_split(planned, dim=8, crops=3, seed=0, frame_scale=synth.PROFILES["smoke"].frame_scale,
                    dtype=torch.float32)
    lengths = [len(v.features["rgb"]) for v in made]
    assert s.features.shape == (sum(lengths), 3, 8) and s.offsets.tolist() == [0, *np.cumsum(lengths)]
    assert s.names == [v.name for v in made] and s.categories == [v.category for v in made]
    assert s.labels.tolist() == [v.label for v in made] and s.num_frames.tolist() == [v.num_frames for v in made]
    if split == "test":
        assert all(np.array_equal(a, b.frame_labels) for a, b in zip(s.frame_labels, made))
    else:
        assert s.frame_labels is None


def test_full_training_split_has_the_real_clip_count():
    plans = [p for p in synth.video_plan("ucf", "full", 0) if p.split == "train"]
    num_frames, video, start, end = plan_events(plans)
    oracle = clip_event_strength(num_frames, video, start, end, torch.ones(len(video)))
    assert len(oracle) == sum(p.num_clips for p in plans)
    events = sum(e - s for p in plans for s, e in p.events)
    # each clip's share times its frames adds up to the frames inside events
    frames = torch.cat([torch.full((p.num_clips,), 16) for p in plans])
    frames[torch.tensor([p.num_clips for p in plans]).cumsum(0) - 1] = torch.tensor(
        [p.num_frames - 16 * (p.num_clips - 1) for p in plans])
    assert float((oracle.double() * frames).sum()) == pytest.approx(events, rel=1e-9)


def test_build_split_refuses_mixed_splits(smoke):
    plans, _ = smoke
    with pytest.raises(ValueError, match="mix training and test"):
        build_split(plans, dim=4, crops=1, seed=0)


def test_synthesize_without_noise():
    # no scene, drift or noise: a clip without event is z = 0, x = g softplus(-theta), the
    # same for every such clip and crop; event clips differ from it
    quiet = dataclasses.replace(PREMISES, scene_std=0.0, drift_std=0.0, clip_noise_std=0.0, crop_noise_std=0.0)
    strength = torch.tensor([0, 0, 2.0, 0, 0, 1.0])
    x = synthesize(torch.tensor([4, 2]), torch.tensor([3, 5]), strength, num_classes=13, dim=32,
                   crops=3, seed=0, premises=quiet, dtype=torch.float32, chunk_vectors=4)
    assert x.shape == (6, 3, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, :1].expand_as(x), x)
    calm = x[strength == 0]
    assert torch.equal(calm, calm[:1].expand_as(calm))
    assert bool((x[2] != x[0]).any()) and bool((x[5] != x[0]).any())


def test_synthesize_is_seeded_and_nonnegative():
    args = (torch.tensor([5, 3]), torch.tensor([0, 1]), torch.linspace(0, 2, 8))
    kw = dict(num_classes=2, dim=16, crops=2, dtype=torch.bfloat16)
    a, b = synthesize(*args, seed=1, **kw), synthesize(*args, seed=1, **kw)
    c = synthesize(*args, seed=2, **kw)
    assert a.dtype == torch.bfloat16 and torch.equal(a, b) and not torch.equal(a, c)
    assert bool(torch.isfinite(a).all()) and bool((a >= 0).all())


def test_stretch_and_spacing():
    plan = VideoPlan("train", 0, "Arson001_x264", 1, "Arson", 100, ((10, 20), (90, 100)))
    (video,) = stretch([plan], 2.0)
    assert video.num_frames == 200 and video.events == ((20, 40), (180, 200)) and video.name == plan.name
    assert stretch([plan], 1.0) == [plan]
    (short,) = stretch([plan], 0.01)  # one frame: the events keep it
    assert short.num_frames == 1 and short.events == ((0, 1), (0, 1))
    assert evenly_spaced(4, 10) == [0, 2, 5, 7]
    assert evenly_spaced(20, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="factor"):
        stretch([plan], 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_strength_equals_the_cpu_strength(smoke):
    plans, _ = smoke
    train = [p for p in plans if p.split == "train"]
    cpu = clip_event_strength(*plan_events(train), torch.linspace(1, 3, sum(len(p.events) for p in train)))
    cuda = clip_event_strength(*plan_events(train, "cuda"),
                               torch.linspace(1, 3, sum(len(p.events) for p in train), device="cuda"))
    torch.testing.assert_close(cuda.cpu(), cpu)
