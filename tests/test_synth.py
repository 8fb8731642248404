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
from cupl.data.reference import load_reference

RESOURCES = Path(__file__).resolve().parents[1] / "cupl" / "data" / "resources"
UCF, XD, TAD = (RESOURCES / d for d in ("ucf-crime", "xd-violence", "tad"))


def reference_test_table():
    """The real test videos parsed here, independently of cupl: name -> (class, intervals
    with the project's rule (0-based, end exclusive), frames), in the test list's order."""
    rows = {}
    for line in (UCF / "Temporal_Anomaly_Annotation.txt").read_text().splitlines():
        video, cls, s1, e1, s2, e2, frames = line.split()
        pairs = [(int(s), int(e)) for s, e in ((s1, e1), (s2, e2)) if int(s) != -1]
        rows[video.removesuffix(".mp4")] = (cls, pairs, int(frames))
    return {name: rows[name] for name in (UCF / "test_videos.txt").read_text().split()}


def reference_train_frames():
    """name -> real frame count of the 1,610 UCF-Crime training videos (train_frames.txt)."""
    rows = (line.split() for line in (UCF / "train_frames.txt").read_text().splitlines())
    return {path.rsplit("/", 1)[1].removesuffix(".mp4"): int(frames) for path, _, frames, _ in rows}


def reference_mask(intervals, frames):
    mask = np.zeros(frames, np.uint8)
    for s, e in intervals:
        mask[s:min(e, frames)] = 1
    return mask


def systematic(n, k):
    """How many videos a 1/k systematic sample (from the (k // 2)-th) of n videos keeps."""
    return len(range(k // 2, n, k))


def digest(videos) -> str:
    h = hashlib.sha256()
    for v in videos:
        h.update(v.name.encode())
        for key in sorted(v.features):
            h.update(np.ascontiguousarray(v.features[key]).tobytes())
    return h.hexdigest()


def split(plans, name):
    return [p for p in plans if p.split == name]


# --------------------------------------------------------------------------- real structure


def test_full_plan_is_the_real_ucf_crime():
    plans = list(synth.video_plan("ucf", "full", seed=0))
    train, test = split(plans, "train"), split(plans, "test")
    frames = reference_train_frames()
    assert [p.name for p in train] == (UCF / "train_videos.txt").read_text().split()
    assert sum(p.label for p in train) == 810 and len(train) == 1610
    assert [p.num_frames for p in train] == [frames[p.name] for p in train]
    assert (train[0].name, train[0].num_frames) == ("Abuse001_x264", 2728)  # line 1 of train_frames.txt
    reference = reference_test_table()
    assert [p.name for p in test] == list(reference)
    for p in test:
        cls, intervals, frames = reference[p.name]
        assert (p.category, p.num_frames, p.label) == (cls, frames, int(cls != "Normal"))
        assert p.events == tuple((s, min(e, frames)) for s, e in intervals)
    assert sum(len(p.events) == 2 for p in test) == 16


def test_full_plan_is_the_real_xd_violence():
    plans = list(synth.video_plan("xd", "full", seed=0))
    train, test = split(plans, "train"), split(plans, "test")
    clips = [line.split("\t") for line in (XD / "test_videos.txt").read_text().splitlines()]
    assert [(p.name, p.num_clips, p.num_frames) for p in test] == [(n, int(c), 16 * int(c)) for n, c in clips]
    annotated = {}
    for line in (XD / "annotations.txt").read_text().splitlines():
        name, *frames = line.split()
        annotated[name.removesuffix(".mp4")] = [(int(s), int(e)) for s, e in zip(frames[::2], frames[1::2])]
    assert sum(p.label for p in test) == 500 == len(annotated)
    for p in test:
        expected = [(s, min(e, p.num_frames)) for s, e in annotated.get(p.name, [])]
        assert list(p.events) == expected and p.label == int(p.name in annotated)
    assert sum(e > p.num_frames for p in test for _, e in annotated.get(p.name, [])) == 71
    assert test[2].events == ((2610, 2670), (2760, 3060), (3167, 4310))
    names = (XD / "train_videos.txt").read_text().split()
    assert [p.name for p in train] == names and len(train) == 3954
    assert sum(p.label for p in train) == sum("_label_A" not in n for n in names) == 1905
    # unpublished training lengths: a real test length of the same label, jittered by 0.8-1.25
    for label in (0, 1):
        lengths = np.array([p.num_frames for p in test if p.label == label])
        drawn = np.array([p.num_frames for p in train if p.label == label])
        assert drawn.min() >= 0.8 * lengths.min() - 1 and drawn.max() <= 1.25 * lengths.max() + 1
        assert abs(np.median(drawn) / np.median(lengths) - 1) < 0.1


def test_full_plan_is_the_real_tad():
    plans = list(synth.video_plan("tad", "full", seed=0))
    train, test = split(plans, "train"), split(plans, "test")
    rows = [line.split() for line in (TAD / "TAD_train.txt").read_text().splitlines()]
    assert [(p.name, p.num_frames, p.label) for p in train] == [
        (path.rsplit("/", 1)[1][:-4], int(frames), int(cls != "0")) for path, _, frames, cls in rows]
    rows = [line.split() for line in (TAD / "TAD_test.txt").read_text().splitlines()]
    assert len(train) == 400 and len(test) == 100
    for p, (path, frames, cls, start, end) in zip(test, rows):
        assert (p.name, p.num_frames, p.label) == (path.rsplit("/", 1)[1][:-4], int(frames), int(cls != "0"))
        assert p.events == (((int(start), min(int(end), int(frames))),) if cls != "0" else ())
    assert test[0].events == ((75, 110),) and test[2].events == ((16, 66),)
    assert test[3].events == ((86, 243),)  # 01_Accident_014: annotated [86, 244) in 243 frames


def test_smoke_test_videos_are_the_real_ones_at_one_sixteenth_the_frame_rate():
    scale = synth.PROFILES["smoke"].frame_scale
    assert scale == 16
    reference = reference_test_table()
    videos = [v for v in synth.generate("ucf", "smoke", seed=0) if v.split == "test"]
    assert len(videos) == systematic(290, synth.PROFILES["smoke"].test_every)
    for v in videos:
        cls, intervals, frames = reference[v.name]
        assert v.category == cls and v.label == int(cls != "Normal")
        assert v.num_frames == math.ceil(frames / 16)
        # frame i of the synthetic video is real frame 16 i, with its real label
        np.testing.assert_array_equal(v.frame_labels, reference_mask(intervals, frames)[::16])
        assert v.features["rgb"].shape == (math.ceil(v.num_frames / 16), 2, 64)


def test_quick_is_in_real_time_on_a_systematic_sample_of_the_real_lists():
    profile = synth.PROFILES["quick"]
    assert profile.frame_scale == 1
    plans = list(synth.video_plan("ucf", "quick", seed=0))
    train, test = split(plans, "train"), split(plans, "test")
    k = profile.train_every
    assert len(train) == systematic(1610, k) and len(test) == systematic(290, profile.test_every)
    frames, reference = reference_train_frames(), reference_test_table()
    assert all(p.num_frames == frames[p.name] for p in train)
    for p in test:
        cls, intervals, real_frames = reference[p.name]
        assert p.num_frames == real_frames and p.events == tuple((s, min(e, real_frames)) for s, e in intervals)
    names = (UCF / "train_videos.txt").read_text().split()
    counts = Counter(p.category for p in train)
    for category, n in Counter(n.rstrip("0123456789_x264").removesuffix("_Videos") for n in names).items():
        assert abs(counts[category] - n / k) <= 1
    order = {n: i for i, n in enumerate(names)}
    assert [order[p.name] for p in train] == sorted(order[p.name] for p in train)


def test_a_quick_video_is_the_full_video_of_the_same_name():
    full = {p.name: p for p in synth.video_plan("ucf", "full", seed=4)}
    quick = list(synth.video_plan("ucf", "quick", seed=4))
    assert all(p == full[p.name] for p in quick)
    train = [p for p in quick if p.split == "train"]
    assert all(p.events for p in train if p.label) and sum(p.label for p in train) > 0  # drawn events compared


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


# --------------------------------------------------------------------------- the time regime


def plan(split, index, num_frames, events=(), label=None):
    label = int(bool(events)) if label is None else label
    return synth.VideoPlan(split, index, f"{split}{index}", label, "Abuse" if label else "Normal", num_frames, events)


def test_regime_stats_on_a_hand_made_plan():
    plans = [plan("train", 0, 16 * 31, ((0, 40), (100, 164))),   # 31 clips: short; events 2.5, 4 clips
             plan("train", 1, 16 * 32 + 1, ((16, 48),)),          # 33 clips; event 2 clips
             plan("train", 2, 16 * 100),                           # normal
             plan("test", 0, 16 * 10, ((0, 160),))]               # short; test events do not count
    regime = synth.regime_stats(plans)
    assert (regime.videos, regime.short_share) == (4, 2 / 4)
    assert (regime.events, regime.median_event_clips) == (3, 2.5)
    assert synth.regime_stats(plans, num_segments=8).short_share == 0
    with pytest.raises(ValueError, match="no videos"):
        synth.regime_stats([])


def test_quick_keeps_the_time_regime_of_full():
    """Share of videos shorter than S = 32 clips (train and test) and median training-event
    span in clips: quick within 10 % of full, from the plans and their event draws.

    The events are pooled over seeds 0-4: quick's median over its ~130 drawn events alone
    moves by about 15 % from seed to seed, which would measure the draw, not the profile."""
    def pooled(profile):
        return synth.regime_stats(itertools.chain.from_iterable(
            synth.video_plan("ucf", profile, seed=seed) for seed in range(5)))

    quick, full = pooled("quick"), pooled("full")
    assert abs(quick.short_share / full.short_share - 1) <= 0.10
    assert abs(quick.median_event_clips / full.median_event_clips - 1) <= 0.10
    # the real lists themselves: 91 of 1,610 training and 23 of 290 test videos under 32 clips
    assert full.short_share == (91 + 23) / 1900


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


def test_crops_given_change_the_crop_count_only():
    default = list(synth.generate("ucf", "smoke", seed=0, max_videos=3))
    more = list(synth.generate("ucf", "smoke", seed=0, max_videos=3, crops=5))
    for a, b in zip(default, more):
        assert (a.name, a.split, a.num_frames, a.label) == (b.name, b.split, b.num_frames, b.label)
        assert b.features["rgb"].shape == (a.features["rgb"].shape[0], 5, a.features["rgb"].shape[2])
        # the same video: frame labels and oracle are drawn before any feature
        for field in ("frame_labels", "oracle_clip_labels"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or np.array_equal(x, y)
    attrs = synth.bank_attrs("ucf", "smoke", crops=5)
    assert attrs["crops"] == 5 and "5 crops" in attrs["source"]
    assert synth.bank_attrs("xd", "smoke", crops=1)["crops"] == 1  # also over a preset's own count
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="crops must be a whole number >= 1"):
            next(synth.generate("ucf", "smoke", crops=bad))


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
        ref = load_reference(preset)
        assert len(train) == systematic(len(ref.train), profile.train_every)
        assert len(test) == systematic(len(ref.test), profile.test_every)
        assert all(r.num_clips == math.ceil(r.num_frames / 16) for r in train + test)
        split = bank.load_split("test", modality="rgb+audio" if preset == "xd" else "rgb")
        assert len(split.frame_labels) == len(test)
        oracle = bank.oracle_split_labels("train")
        labels = bank.load_split("train").labels
        lengths = [r.num_clips for r in train]
        per_video = np.split(oracle.numpy(), np.cumsum(lengths)[:-1])
        assert all(o.max() == 0 for o, lab in zip(per_video, labels) if lab == 0)
        assert all(o.max() > 0 for o, lab in zip(per_video, labels) if lab == 1)
