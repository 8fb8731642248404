"""The claims map and the sensitivity table (`cupl.experiments.claims`) on the toy bank of
`tests/toy.py`: the pre-registered grid as data, and every verdict and mechanism figure
recomputed from the runs it summarises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cupl import experiments as ex
from cupl.data.synth import PREMISE_VARIANTS
from cupl.experiments import claims
from cupl.experiments.paper import TABLE4_GAINS
from test_experiments import toy_bank

SEEDS = [0, 1]


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    return toy_bank(tmp_path_factory.mktemp("bank") / "toy.h5")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def cell(bank, cache):
    data = ex.load_data(bank, cache=cache)
    return data, claims.claims_cell(data, claims.MAP_CELLS[0], SEEDS, "smoke", workers=1)


def test_the_map_is_the_preregistered_grid():
    cells = {c.name: c for c in claims.MAP_CELLS}
    assert len(cells) == 8 and claims.MAP_CELLS[0].name == "default"
    assert all(c.premise_variant in PREMISE_VARIANTS for c in cells.values())
    # one premise moved per cell: a premise variant or the stage-1 budget, never both
    assert all((c.premise_variant == "default") + (c.steps_factor == 1) >= 1 for c in cells.values())
    assert cells["long_stage1"].overrides("smoke") == {"generator.steps": 4 * 60}
    assert cells["long_stage1"].overrides("quick") == {"generator.steps": 4 * 300}
    assert cells["weak_events"].overrides("quick") == {}
    assert [c.premise for c in claims.MAP_CELLS].count("event strength") == 2


def by_hand(a, b):
    a, b = 100 * np.asarray(a, float), 100 * np.asarray(b, float)
    return a.mean() - b.mean(), np.sqrt(a.var(ddof=1) + b.var(ddof=1))


def test_cell_verdicts_come_from_the_runs(cell):
    data, result = cell
    frame = result["frame"]
    assert sorted(frame["variant"].unique()) == sorted(claims.VARIANTS) and len(frame) == 5 * len(SEEDS)
    for name, (treated, control, paper) in claims.CLAIMS.items():
        ours = ex.run_seeds(data, SEEDS, profile="smoke", variant=treated, workers=1)[0]["auc"]
        other = ex.run_seeds(data, SEEDS, profile="smoke", variant=control, workers=1)[0]["auc"]
        difference, spread = by_hand(ours, other)
        v = result["verdicts"][name]
        assert v.difference == pytest.approx(difference) and v.spread == pytest.approx(spread)
        assert v.seeds == (2, 2) and v.paper == paper
    assert result["verdicts"]["full"].paper == TABLE4_GAINS["full"]


def test_mechanism_figures_come_from_the_runs_and_the_oracle(cell):
    data, result = cell
    m = result["mechanism"]
    abnormal = data.train.labels.repeat_interleave(data.train.lengths).bool().numpy()
    event = data.oracle.numpy() > 0.5
    assert m["event_share"] == pytest.approx(event[abnormal].mean())
    _, history, runs = ex.run_seeds(data, SEEDS, profile="smoke", variant="full", keep=True, workers=1)
    first = history[history["iteration"] == 1]
    assert m["event_share_selected"] == pytest.approx(first["event_share_selected"].mean())
    assert m["label_auc_selected"] == pytest.approx(first["label_auc_selected"].mean())
    # f_g's labels at iteration 1 of the runs themselves, on their event clips
    labels = [r.arrays[0]["labels"].numpy() for r in runs]
    assert m["fg_event_label"] == pytest.approx(np.mean([y[event & abnormal].mean() for y in labels]), abs=1e-6)
    assert m["fg_background_label"] == pytest.approx(np.mean([y[~event & abnormal].mean() for y in labels]), abs=1e-6)
    assert 0 <= m["fg_event_label_one_head"] <= 1


def test_status_of_hand_made_verdicts():
    assert claims.status(ex.verdict([0.9, 0.91], [0.8, 0.81])) == "holds"
    assert claims.status(ex.verdict([0.8, 0.81], [0.9, 0.91])) == "fails"
    assert claims.status(ex.verdict([0.8, 0.9], [0.82, 0.88])) == "neither"
    assert claims.status(ex.verdict([0.9], [0.8])) == "neither"  # one seed: nothing to judge


def test_a_given_bank_runs_only_the_default_premises(bank, cache):
    frame = claims.claims_map(SEEDS, "smoke", bank=str(bank), cells=claims.MAP_CELLS[:2], workers=1, cache=cache)
    assert list(frame.index) == ["default"] and frame.attrs["skipped"] == ["one_event"]
    assert all(isinstance(frame.loc["default", c], ex.Verdict) for c in claims.CLAIMS)
    assert frame.loc["default", "event_share"] > 0
    statuses = claims.status_table(frame)
    assert set(statuses.loc["default"]) <= {"holds", "fails", "neither"}
    sentence = claims.claim_sentence(frame, "completeness")
    assert "the default benchmark" in sentence and sentence.startswith("The completeness gain")
    empty = claims.claims_map(SEEDS, "smoke", bank=str(bank), cells=claims.MAP_CELLS[1:2], cache=cache)
    assert empty.empty and empty.attrs["skipped"] == ["one_event"]


def fake_grid(calls):
    def grid(data, name, values, seeds, **kwargs):
        calls.append(kwargs)
        auc = {"baseline": 0.5, "completeness": 0.6, "uncertainty": 0.4, "full": 0.7, "standard": 0.7}
        return pd.DataFrame([{name: v, "seed": s, "auc": auc[v] + 0.01 * s} for v in values for s in seeds])
    return grid


def test_sensitivity_flips_one_choice_at_a_time_and_skips_crops_on_one_crop(bank, monkeypatch):
    calls = []
    monkeypatch.setattr(claims, "grid", fake_grid(calls))
    data = ex.load_data(bank, cache=None)
    table = claims.sensitivity(data, [0, 1, 2], "smoke")
    assert list(table.index) == [c.name for c in claims.SENSITIVITY] and not table["skipped"].any()
    flipped = [{k: v for k, v in kw.items() if "." in k or k == "crops"} for kw in calls]
    assert flipped == [c.overrides for c in claims.SENSITIVITY]
    row = table.loc["clip.loss = weighted"]
    assert row["completeness"].difference == pytest.approx(10.0) and claims.status(row["completeness"]) == "holds"
    assert claims.status(row["uncertainty"]) == "fails" and claims.status(row["self_training"]) == "neither"
    one_crop = ex.Data(data.path, data.attrs, data.train.to(dtype=data.train.features.dtype), data.test, data.oracle)
    one_crop.train.features = one_crop.train.features[:, :1]
    calls.clear()
    crops = [c for c in claims.SENSITIVITY if c.needs_crops]
    skipped = claims.sensitivity(one_crop, [0, 1], "smoke", choices=crops)
    assert not calls and "one crop" in skipped.loc["crops = mean", "skipped"]


def test_crop_choice_on_a_one_crop_embedded_benchmark_runs_on_its_several_crop_twin(monkeypatch, tmp_path):
    monkeypatch.setenv("CUPL_CACHE", str(tmp_path))
    calls, banks = [], []
    fake = fake_grid(calls)

    def grid(data, *args, **kwargs):
        banks.append(data)
        return fake(data, *args, **kwargs)

    monkeypatch.setattr(claims, "grid", grid)
    data = ex.load_data("", "smoke", cache=None)
    one_crop = ex.Data(data.path, data.attrs, data.train.to(dtype=data.train.features.dtype), data.test, data.oracle)
    one_crop.train.features = one_crop.train.features[:, :1]
    crops = [c for c in claims.SENSITIVITY if c.needs_crops]
    table = claims.sensitivity(one_crop, [0, 1], "smoke", choices=crops)
    n = claims.SEVERAL_CROPS
    assert n > 1 and list(table.index) == [f"default ({n}-crop bank)", f"crops = mean ({n}-crop bank)"]
    assert [kw.get("crops") for kw in calls] == [None, "mean"]
    for bank in banks:  # the same benchmark, with n crops of every clip
        assert bank.train.features.shape[1] == n and bank.test.features.shape[1] == n
        assert bank.train.names == data.train.names and torch.equal(bank.train.lengths, data.train.lengths)
        assert f"{n} crops" in bank.attrs["source"]
    # a given bank of one crop cannot be regenerated: the choice is skipped, as on the toy bank
    real = ex.Data(one_crop.path, {**data.attrs, "source": "imported"}, one_crop.train, one_crop.test, None)
    calls.clear()
    assert "one crop" in claims.sensitivity(real, [0, 1], "smoke", choices=crops).loc["crops = mean", "skipped"]
    assert not calls


def test_every_two_valued_open_choice_is_flipped_once():
    from cupl.config import CHOICES, check_value, make_config, to_dict

    defaults = to_dict(make_config("ucf"))
    for key in claims.FLIPPED:
        section, name = key.split(".")
        default, flipped = defaults[section][name], claims.flip(key)
        assert flipped != default and check_value(key, flipped) == flipped
        assert isinstance(default, bool) or set(CHOICES[key]) == {default, flipped}
    two_valued = {k for k, v in CHOICES.items() if len(v) == 2 and k not in ("crops",)}
    assert two_valued <= set(claims.FLIPPED)  # crops: its own row, on banks with several crops
    with pytest.raises(ValueError, match="3 settings"):
        claims.flip("self_train.selection")
    assert [c.name for c in claims.SENSITIVITY].count("default") == 1


def test_a_cell_judges_the_health_of_its_own_generator(cell):
    from cupl.experiments.health import failed_criteria, generator_health
    from cupl.experiments.cache import stage1_model
    from cupl.config import make_config

    data, result = cell
    models = [stage1_model(data, make_config(data.preset, "smoke", "full", seed=s)) for s in SEEDS]
    each = [generator_health(m, data.train, data.oracle) for m in models]
    assert result["health"]["label_auc"] == pytest.approx(np.mean([h["label_auc"] for h in each]))
    assert result["health"]["seeds"] == len(SEEDS)
    row = claims._row(result)
    assert row["fg_label_mae"] == pytest.approx(np.mean([h["label_mae"] for h in each]))
    assert row["fg_healthy"] == (not failed_criteria(result["health"]))
