"""The `Verdict` of two sets of seeds: its numbers worked out by hand, and its wording for one
seed, unclear, clear and far-beyond effects, and chance level."""

from __future__ import annotations

import math

import pytest

from cupl.experiments.stats import Verdict, pair_spread, verdict


def test_numbers_by_hand():
    # means 82 and 79 (points), sample standard deviations 2 and 1: spread sqrt(4 + 1)
    v = verdict([0.80, 0.82, 0.84], [0.78, 0.79, 0.80])
    assert v.difference == pytest.approx(3.0)
    assert v.spread == pytest.approx(math.sqrt(5.0))
    assert v.means == pytest.approx((82.0, 79.0)) and v.stds == pytest.approx((2.0, 1.0))
    assert v.seeds == (3, 3) and v.sign == 1 and v.clear
    assert v.magnitude == pytest.approx(3.0 / math.sqrt(5.0))
    assert pair_spread(3.0, 4.0) == 5.0


def test_words_of_ordinary_effects():
    assert str(verdict([0.80, 0.82, 0.84], [0.78, 0.79, 0.80])) == "higher by 3.0 ± 2.2 points"
    assert str(verdict([0.78, 0.79, 0.80], [0.80, 0.82, 0.84])) == "lower by 3.0 ± 2.2 points"
    unclear = verdict([0.80, 0.82, 0.84], [0.81, 0.80, 0.82])  # means 82 and 81, spread sqrt(5)
    assert not unclear.clear
    assert str(unclear) == "no clear difference (+1.0 ± 2.2 points, within one standard deviation)"
    assert str(verdict([0.4, 0.6], [0.1, 0.1], scale=1, unit="", digits=2, higher="more")) == "more by 0.40 ± 0.14"


def test_one_seed_is_never_clear():
    v = verdict([0.9], [0.8, 0.7])
    assert not v.judged and not v.clear and math.isnan(v.spread) and math.isnan(v.magnitude)
    assert str(v) == "higher by 15.0 points (one seed: no spread to judge)"
    assert str(verdict([0.5], [0.5])) == "no difference (one seed: no spread to judge)"


def test_a_large_effect_says_so():
    # 83.75 -> 44.57 with standard deviations of about 1: 39.2 points, ~28 spreads
    v = verdict([0.4357, 0.4457, 0.4557], [0.8275, 0.8375, 0.8475])
    assert v.clear and v.sign == -1 and v.magnitude > 5
    assert str(v) == "lower by 39.2 points, far beyond its spread of ± 1.4"


def test_chance_level_is_named():
    # 51.4 and 45.6 against 50 with standard deviations of 3 and 5: both within one of chance
    both = verdict([0.484, 0.514, 0.544], [0.406, 0.456, 0.506], chance=50.0)
    assert both.at_chance(0) and both.at_chance(1)
    assert str(both).startswith("both at chance level (50 points): ")
    one = verdict([0.80, 0.82, 0.84], [0.49, 0.50, 0.51], chance=50.0)
    assert not one.at_chance(0) and one.at_chance(1)
    assert str(one).endswith("; the second is at chance level (50 points)")
    assert not verdict([0.80, 0.82, 0.84], [0.49, 0.50, 0.51]).at_chance(1)  # no chance given


def test_paper_claims():
    v = verdict([0.80, 0.82, 0.84], [0.78, 0.79, 0.80], digits=2, paper=2.03)
    assert v.reproduces
    assert not verdict([0.80, 0.82, 0.84], [0.78, 0.79, 0.80], paper=-1.0).reproduces
    with pytest.raises(ValueError, match="no paper value"):
        verdict([0.8, 0.9], [0.7, 0.8]).reproduces


def test_empty_side_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        verdict([], [0.1])


def test_a_verdict_is_a_value():
    v = verdict([0.80, 0.82, 0.84], [0.78, 0.79, 0.80])
    assert isinstance(v, Verdict) and v == verdict([0.80, 0.82, 0.84], [0.78, 0.79, 0.80])
    with pytest.raises(AttributeError):
        v.difference = 0.0  # frozen
