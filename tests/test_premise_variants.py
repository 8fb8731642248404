"""The benchmark with one premise moved (`cupl.data.synth.PREMISE_VARIANTS`): each variant
checked on plans and draws against numbers worked out from the premises."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from cupl.data import synth
from cupl.data.bank import FeatureBank
from cupl.experiments.cache import synthetic_bank


def train_plans(variant: str):
    return [p for p in synth.video_plan("ucf", "quick", seed=0, premise_variant=variant) if p.split == "train"]


def test_default_variant_is_the_benchmark():
    assert synth.premises_of("default") == synth.PREMISES
    assert list(synth.video_plan("ucf", "smoke", seed=3)) == list(
        synth.video_plan("ucf", "smoke", seed=3, premise_variant="default"))


def test_one_event_per_abnormal_video():
    plans = train_plans("one_event")
    assert Counter(len(p.events) for p in plans if p.label) == Counter({1: sum(p.label for p in plans)})


def test_three_events_with_gaps_at_least_the_mean_event():
    plans = [p for p in train_plans("three_spaced_events") if p.label]
    assert plans and all(len(p.events) == 3 for p in plans)  # real lengths leave room for three
    for p in plans:
        lengths = [e - s for s, e in p.events]
        mean = sum(lengths) / 3
        gaps = [s - e for (_, e), (s, _) in zip(p.events, p.events[1:])]
        assert min(gaps) >= mean and min(lengths) >= 1
        assert 0 <= p.events[0][0] and p.events[-1][1] <= p.num_frames
        # the anomalous share stays below the benchmark's cap of 0.9
        assert sum(lengths) <= 0.9 * p.num_frames


def test_fit_gaps_by_hand():
    # 90 anomalous frames in 3 events need 2 gaps of 30: 150 frames; a 120-frame video holds
    # b + 2 ceil(b / 3) <= 120 -> b = 72 (72 + 48 = 120)
    assert synth._fit_gaps(90, 3, 150, 1.0) == (90, 30)
    assert synth._fit_gaps(90, 3, 120, 1.0) == (72, 24)
    assert synth._fit_gaps(90, 3, 120, 0.0) == (90, 0)
    assert synth._fit_gaps(50, 1, 60, 1.0) == (50, 0)


@pytest.mark.parametrize("variant", ["weak_events", "strong_events", "no_hard_normals", "many_hard_normals"])
def test_strength_and_hard_normal_variants_keep_the_plans(variant):
    assert list(synth.video_plan("ucf", "smoke", seed=1, premise_variant=variant)) == list(
        synth.video_plan("ucf", "smoke", seed=1))


def moments(variant: str, seed: int, minutes: float = 10.0, fps: float = 30.0):
    frames = int(minutes * 60 * fps)
    plan = synth.VideoPlan("train", 0, "v", 1, "Abuse", frames, ((100, 400), (9000, 9600)))
    rng = np.random.default_rng(seed)
    return synth._moments(rng, plan, 1 / fps, synth.premises_of(variant))


@pytest.mark.parametrize("variant, scale", [("weak_events", 0.5), ("strong_events", 2.0)])
def test_event_amplitudes_scale_with_the_median(variant, scale):
    for seed in range(5):
        base, moved = moments("default", seed)[1], moments(variant, seed)[1]
        np.testing.assert_array_equal(moved, scale * base)


@pytest.mark.parametrize("variant, rate", [("default", 0.2), ("no_hard_normals", 0.0), ("many_hard_normals", 0.8)])
def test_hard_normal_rate(variant, rate):
    """Poisson(rate x minutes) moments per video: the mean count of 2000 ten-minute videos lies
    within 5 standard errors of 10 x rate."""
    counts = np.array([len(moments(variant, seed)[3]) for seed in range(2000)])
    lam = 10 * rate
    if lam == 0:
        assert counts.max() == 0
    else:
        assert abs(counts.mean() - lam) <= 5 * math.sqrt(lam / len(counts))


def test_unknown_variant_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown premise variant 'loud'"):
        synth.premises_of("loud")
    with pytest.raises(ValueError, match="unknown premise variant 'loud'"):
        synthetic_bank("smoke", tmp_path, progress=False, premise_variant="loud")
    assert not list(tmp_path.iterdir())


def test_cached_bank_names_its_variant(tmp_path):
    path = synthetic_bank("smoke", tmp_path, progress=False, premise_variant="strong_events")
    assert "-strong_events-smoke-" in path.name
    with FeatureBank.open(path) as fb:
        attrs = dict(fb.attrs)
    assert attrs["premise_variant"] == "strong_events" and "strong_events" in attrs["source"]
    assert json.loads(attrs["premises"])["event_amplitude_median"] == 2 * synth.PREMISES.event_amplitude_median
    assert "-default-smoke-" in synthetic_bank("smoke", tmp_path, progress=False).name
