"""The embedded synthetic benchmark: real UCF-Crime structure, premises, determinism, the command."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cupl.data import synth
from cupl.data.bank import FeatureBank

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucf-crime"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"real UCF-Crime reference files not at {SHARED}")


def reference_test_table():
    """The real test videos parsed here, independently of cupl: name -> (class, intervals
    with the project's rule (0-based, end exclusive), frames), in the test list's order."""
    rows = {}
    for line in (SHARED / "Temporal_Anomaly_Annotation.txt").read_text().splitlines():
        video, cls, s1, e1, s2, e2, frames = line.split()
        pairs = [(int(s), int(e)) for s, e in ((s1, e1), (s2, e2)) if int(s) != -1]
        rows[video.removesuffix(".mp4")] = (cls, pairs, int(frames))
    return {name: rows[name] for name in (SHARED / "test_videos.txt").read_text().split()}


def reference_mask(intervals, frames):
    mask = np.zeros(frames, np.uint8)
    for s, e in intervals:
        mask[s:min(e, frames)] = 1
    return mask


def digest(videos) -> str:
    h = hashlib.sha256()
    for v in videos:
        h.update(v.name.encode())
        for key in sorted(v.features):
            h.update(np.ascontiguousarray(v.features[key]).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def quick_test_videos():
    return [v for v in synth.generate("ucf", "quick", seed=0) if v.split == "test"]


# --------------------------------------------------------------------------- real structure


@needs_shared
def test_full_plan_is_the_real_ucf_crime():
    plans = list(synth.video_plan("ucf", "full", seed=0))
    train = [p for p in plans if p.split == "train"]
    test = [p for p in plans if p.split == "test"]
    assert [p.name for p in train] == (SHARED / "train_videos.txt").read_text().split()
    assert sum(p.label for p in train) == 810 and len(train) == 1610
    reference = reference_test_table()
    assert [p.name for p in test] == list(reference)
    for p in test:
        cls, intervals, frames = reference[p.name]
        assert (p.category, p.num_frames, p.label) == (cls, frames, int(cls != "Normal"))
        assert p.events == tuple((s, min(e, frames)) for s, e in intervals)
    assert sum(len(p.events) == 2 for p in test) == 16


@needs_shared
def test_quick_test_videos_are_the_real_ones_at_one_eighth_the_frame_rate(quick_test_videos):
    scale = synth.PROFILES["quick"].frame_scale
    assert scale == 8
    reference = reference_test_table()
    assert [v.name for v in quick_test_videos] == list(reference) and len(reference) == 290
    for v in quick_test_videos:
        cls, intervals, frames = reference[v.name]
        assert v.category == cls and v.label == int(cls != "Normal")
        assert v.num_frames == math.ceil(frames / 8)
        # frame i of the synthetic video is real frame 8 i, with its real label
        np.testing.assert_array_equal(v.frame_labels, reference_mask(intervals, frames)[::8])
        assert v.features["rgb"].shape == (math.ceil(v.num_frames / 16), 2, 256)


@needs_shared
def test_quick_training_videos_follow_the_real_class_mix():
    train = [p for p in synth.video_plan("ucf", "quick", seed=0) if p.split == "train"]
    real = (SHARED / "train_videos.txt").read_text().split()
    assert len(train) == 240 and {p.name for p in train} <= set(real)
    real_abnormal = sum(not n.startswith("Normal") for n in real) / len(real)
    assert abs(sum(p.label for p in train) / 240 - real_abnormal) < 0.01
    counts = Counter(p.category for p in train)
    real_counts = Counter(n.rstrip("0123456789_x264").removesuffix("_Videos") for n in real)
    for category, n in real_counts.items():   # evenly spaced along the sorted list: within one video
        assert abs(counts[category] - n * 240 / 1610) <= 1


def test_training_events():
    """1-3 non-overlapping events per abnormal video, inside the video; none in normal ones."""
    plans = [p for p in synth.video_plan("ucf", "quick", seed=0) if p.split == "train"]
    counts = Counter(len(p.events) for p in plans if p.label)
    assert set(counts) == {1, 2, 3} and not any(p.events for p in plans if not p.label)
    for p in plans:
        ends = [0] + [e for _, e in p.events]
        for (s, e), previous_end in zip(p.events, ends):
            assert previous_end <= s < e <= p.num_frames
        assert sum(e - s for s, e in p.events) <= max(1, 0.9 * p.num_frames)


def test_clips_and_oracle_follow_the_16_frame_rule():
    for plan, video in zip(synth.video_plan("ucf", "smoke", seed=3), synth.generate("ucf", "smoke", seed=3)):
        assert video.name == plan.name
        clips = math.ceil(plan.num_frames / 16)
        assert video.features["rgb"].shape[0] == clips
        if plan.split == "test":
            assert video.oracle_clip_labels is None
            continue
        inside = np.zeros(clips * 16)
        for s, e in plan.events:
            inside[s:e] = 1
        valid = np.minimum(16, plan.num_frames - 16 * np.arange(clips))
        expected = inside.reshape(clips, 16).sum(1) / valid
        np.testing.assert_allclose(video.oracle_clip_labels, expected, rtol=1e-6)
        assert video.frame_labels is None


# --------------------------------------------------------------------------- premises


def test_features_are_non_negative_heavy_tailed_and_crops_are_close():
    videos = list(synth.generate("ucf", "smoke", seed=0))
    x = np.concatenate([v.features["rgb"] for v in videos])
    assert x.min() >= 0 and x.shape[1:] == (2, 64)
    assert np.mean(x) > np.median(x) and np.percentile(x, 99.9) > 4 * np.mean(x)
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    crops = np.sum(unit[:, 0] * unit[:, 1], axis=-1).mean()
    neighbours = np.sum(unit[1:, 0] * unit[:-1, 0], axis=-1).mean()
    shuffled = np.sum(unit[:, 0] * unit[np.random.default_rng(0).permutation(len(x)), 0], axis=-1).mean()
    assert crops > neighbours > shuffled


def test_xd_audio_is_a_correlated_stream():
    videos = list(itertools.islice(synth.generate("xd", "smoke", seed=0), 40))
    assert all(v.features["audio"].shape == (v.features["rgb"].shape[0], 1, 128) for v in videos)
    assert all(v.features["rgb"].shape[1] == 5 for v in videos)
    # events are heard: audio departs from the video's usual sound inside events
    inside, outside = [], []
    for v in videos:
        a = v.features["audio"][:, 0]
        departure = np.linalg.norm(a - np.median(a, axis=0), axis=1)
        inside += list(departure[v.oracle_clip_labels > 0.5])
        outside += list(departure[v.oracle_clip_labels == 0])
    assert np.mean(inside) > np.mean(outside)


def test_tad_has_longer_events_and_fewer_videos():
    def anomalous_fraction(preset):
        plans = [p for p in synth.video_plan(preset, "quick", seed=0) if p.split == "train"]
        return len(plans), np.mean([sum(e - s for s, e in p.events) / p.num_frames for p in plans if p.label])

    ucf_videos, ucf_fraction = anomalous_fraction("ucf")
    tad_videos, tad_fraction = anomalous_fraction("tad")
    assert tad_videos == ucf_videos // 2 and tad_fraction > 1.5 * ucf_fraction


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_other_data():
    first = digest(synth.generate("ucf", "smoke", seed=7))
    assert digest(synth.generate("ucf", "smoke", seed=7)) == first
    assert digest(synth.generate("ucf", "smoke", seed=8)) != first
    assert digest(synth.generate("tad", "smoke", seed=7)) != first


def test_a_video_does_not_depend_on_what_was_generated_before():
    complete = list(synth.generate("ucf", "smoke", seed=1))
    first_three = list(synth.generate("ucf", "smoke", seed=1, max_videos=3))
    assert [v.split for v in first_three] == ["train"] * 3 + ["test"] * 3
    expected = complete[:3] + [v for v in complete if v.split == "test"][:3]
    assert digest(first_three) == digest(expected)


def test_written_banks_hold_identical_arrays(tmp_path):
    paths = [synth.write_synthetic(tmp_path / f"{i}.h5", "ucf", "smoke", seed=2, progress=False)
             for i in range(2)]
    banks = [FeatureBank.open(p) for p in paths]
    try:
        a, b = (bank.load_split("train").features.numpy() for bank in banks)
        assert a.tobytes() == b.tobytes()
    finally:
        for bank in banks:
            bank.close()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown preset 'shanghai'"):
        next(synth.generate("shanghai", "smoke"))
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        next(synth.generate("ucf", "huge"))
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        next(synth.generate("ucf", "smoke", seed=-1))


# --------------------------------------------------------------------------- the bank and the command


@pytest.mark.parametrize("preset", ["ucf", "xd", "tad"])
def test_cupl_synth_writes_a_bank_that_reads_back(tmp_path, capsys, preset):
    from cupl.cli import main

    out = tmp_path / f"{preset}.h5"
    assert main(["synth", "--preset", preset, "--profile", "smoke", "--seed", "0", "--out", str(out),
                 "--no-progress"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out}: {preset}/smoke seed 0:") and "\n" not in line
    profile, preset_ = synth.PROFILES["smoke"], synth.PRESETS[preset]
    with FeatureBank.open(out) as bank:
        a = bank.attrs
        assert (a["preset"], a["profile"], a["seed"], a["generator_version"]) == (
            preset, "smoke", 0, synth.GENERATOR_VERSION)
        assert a["frames_per_clip"] == 16 and a["crops"] == (preset_.crops or profile.crops)
        assert a["modalities"] == (["rgb", "audio"] if preset == "xd" else ["rgb"])
        assert a["dim_rgb"] == profile.feature_dim
        train, test = bank.videos("train"), bank.videos("test")
        assert len(train) == round(profile.num_train * preset_.video_fraction)
        assert len(test) == round(profile.num_test * preset_.video_fraction)
        assert all(r.num_clips == math.ceil(r.num_frames / 16) for r in train + test)
        split = bank.load_split("test", modality="rgb+audio" if preset == "xd" else "rgb")
        assert len(split.frame_labels) == len(test)
        oracle = bank.oracle_split_labels("train")
        labels = bank.load_split("train").labels
        lengths = [r.num_clips for r in train]
        per_video = np.split(oracle.numpy(), np.cumsum(lengths)[:-1])
        assert all(o.max() == 0 for o, lab in zip(per_video, labels) if lab == 0)
        assert all(o.max() > 0 for o, lab in zip(per_video, labels) if lab == 1)
