"""generator_health on a stub f_g whose per-head logits are the clip features themselves,
against values worked out by hand; is_healthy against its stated thresholds."""

import json
import math

import pytest
import torch

from cupl.data.split import Split
from cupl.experiments.health import (MAX_LABEL_MAE, MAX_SATURATED_NORMAL, MIN_AUC, failed_criteria, generator_health,
                                     health_note, is_healthy, seeds_health)

L3, L199 = math.log(3.0), math.log(199.0)  # sigmoid: 0.75 and 0.995


class FeaturesAreLogits(torch.nn.Module):
    """A K-head f_g stand-in: forward(x [..., K]) = x."""

    def forward(self, x):
        return x


def split_of(clip_logits, lengths, labels):
    """One crop; features [N, 1, K] = the given per-head logits."""
    x = torch.tensor(clip_logits, dtype=torch.float32).unsqueeze(1)
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    v = len(lengths)
    return Split(features=x, offsets=offsets, labels=torch.tensor(labels), names=[f"v{i}" for i in range(v)],
                 categories=["x"] * v, num_frames=torch.tensor(lengths) * 16)


def test_health_by_hand():
    # abnormal video (4 clips), heads (a, b) -> clip label sigmoid((a + b) / 2):
    #   (0, 0) -> 0.5, (ln 3, ln 3) -> 0.75, (ln 199, ln 199) -> 0.995, (ln 199, -ln 199) -> 0.5
    # normal video (2 clips): (-ln 3, -ln 3), (0, 0)
    split = split_of([[0, 0], [L3, L3], [L199, L199], [L199, -L199], [-L3, -L3], [0, 0]], [4, 2], [1, 0])
    oracle = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    h = generator_health(FeaturesAreLogits(), split, oracle, num_segments=2)
    # positives 0.75, 0.5 against negatives 0.5, 0.995: 1 + 0 + 0.5 + 0 of 4 pairs
    assert h["label_auc"] == pytest.approx(1.5 / 4)
    assert h["label_mae"] == pytest.approx((0.5 + 0.25 + 0.995 + 0.5) / 4, abs=1e-6)
    assert h["saturated"] == pytest.approx(0.25)
    assert h["saturated_high"] == pytest.approx(0.25)
    assert h["saturated_normal"] == pytest.approx(0.5)  # oracle-0 clips score 0.5 and 0.995
    # head scores .5 .5 .75 .75 .995 .995 .995 .005: four of eight saturated
    assert h["head_saturated"] == pytest.approx(0.5)
    assert h["head_gap"] == pytest.approx(0.99 / 4, abs=1e-6)
    # two segments: (clips 0-1), (clips 2-3). head a: [ln3 / 2, ln 199], head b: [ln3 / 2, 0];
    # softmax proportional to [sqrt 3, 199] and [sqrt 3, 1]
    cos = (3 + 199) / (math.sqrt(3 + 199 ** 2) * math.sqrt(3 + 1))
    assert h["head_cosine"] == pytest.approx(cos, abs=1e-6)
    # top A^avg: abnormal max(ln3 / 2, ln199 / 2) = ln199 / 2, normal max(-ln 3, 0) = 0
    ya = math.sqrt(199) / (math.sqrt(199) + 1)
    assert h["hinge_active"] == 1.0  # 1 - ya + 0.5 > 0
    assert h["hinge_grad"] == pytest.approx(ya * (1 - ya) + 0.25, abs=1e-6)
    assert not is_healthy(h)


def test_saturated_generator_is_unhealthy_and_its_hinge_has_no_gradient():
    # every head scores every clip at logit 30: labels 1, the fault the diagnostic exists for
    split = split_of([[30.0, 30.0]] * 6, [4, 2], [1, 0])
    oracle = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    h = generator_health(FeaturesAreLogits(), split, oracle, num_segments=2)
    assert h["label_mae"] == pytest.approx(0.75, abs=1e-6)  # three of four clips have oracle 0
    assert h["saturated"] == h["saturated_normal"] == h["head_saturated"] == 1.0
    assert h["head_cosine"] == pytest.approx(1.0)
    assert h["hinge_active"] == 1.0  # 1 - 1 + 1 > 0, yet the slope at logit 30 is ~1e-13
    assert h["hinge_grad"] < 1e-12
    assert not is_healthy(h)


def test_inactive_hinge():
    # abnormal top logit 40 -> score 1.0 in double; normal -800 -> 0.0: margin met, no gradient
    split = split_of([[40.0, 40.0], [-800.0, -800.0]], [1, 1], [1, 0])
    h = generator_health(FeaturesAreLogits(), split, torch.tensor([1.0, 0.0]), num_segments=1)
    assert h["hinge_active"] == 0.0 and h["hinge_grad"] == 0.0


def test_thresholds():
    good = {"label_auc": MIN_AUC, "label_mae": MAX_LABEL_MAE, "saturated_normal": MAX_SATURATED_NORMAL}
    assert is_healthy(good)
    assert not is_healthy({**good, "label_auc": MIN_AUC - 0.01})
    assert not is_healthy({**good, "label_mae": MAX_LABEL_MAE + 0.01})
    assert not is_healthy({**good, "saturated_normal": MAX_SATURATED_NORMAL + 0.01})
    assert not is_healthy({**good, "label_auc": float("nan")})


def test_oracle_shape_is_checked():
    split = split_of([[0.0, 0.0]] * 3, [2, 1], [1, 0])
    with pytest.raises(ValueError, match=r"oracle must be \[3\].*\(2,\)"):
        generator_health(FeaturesAreLogits(), split, torch.zeros(2))


def test_real_generator_runs_and_is_restored_to_training_mode():
    from cupl.models import MultiHeadClassifier

    torch.manual_seed(0)
    x = torch.randn(10, 2, 8)
    split = Split(features=x, offsets=torch.tensor([0, 6, 10]), labels=torch.tensor([1, 0]), names=["a", "n"],
                  categories=["x", "Normal"], num_frames=torch.tensor([96, 64]))
    model = MultiHeadClassifier(8, 2, (4, 3), 0.5).train()
    h = generator_health(model, split, (torch.arange(10) % 2).float(), num_segments=3)
    assert model.training
    assert 0.0 <= h["label_mae"] <= 1.0 and 0.0 <= h["head_cosine"] <= 1.0 + 1e-9


def test_readings_sweep_plan_and_decision(load_benchmark):
    bench = load_benchmark("generator_readings")
    runs = bench.plan(default_batch=16)
    # 3 reference runs (L_MIL only), 32 readings x 5 alphas x 3 seeds at batch 16, and the 16
    # summed-hinge readings again at 32
    assert len(runs) == 3 + 32 * 5 * 3 + 16 * 5 * 3
    assert len({bench.run_key(r) for r in runs}) == len(runs)
    assert [r["switches"] for r in runs[:3]] == [{"diversity": False}] * 3
    first = runs[3:35]  # every per-video-regulariser reading at alpha 10 and 100, seed 0, first
    assert {r["alpha"] for r in first} == {10.0, 100.0} and {r["seed"] for r in first} == {0}
    assert len({r["reading"] for r in first}) == 16
    assert first[0]["reading"] == "logit/paper/abn-bags/mil-mean/reg-mean"
    assert len(bench.plan(default_batch=32)) == 3 + 32 * 5 * 3  # no second pass at the same batch
    # every reading at alpha 10 and 100, all seeds, before any other alpha: a sweep stopped early
    # can still apply the decision rule
    decisive = 3 + 32 * 2 * 3 + 16 * 2 * 3
    assert {r["alpha"] for r in runs[3:decisive]} == {10.0, 100.0}
    assert {r["alpha"] for r in runs[decisive:]} == {1.0, 0.1, 0.01}
    assert {(r["reading"], r["batch_size"]) for r in runs[3:decisive]} == {(r["reading"], r["batch_size"])
                                                                            for r in runs[3:]}

    def cell(reading, alpha, healthy):
        r = next(x for x in bench.readings() if bench.reading_name(x) == reading)
        return {"reading": reading, "switches": r, "alpha": alpha, "batch_size": 16, "healthy": healthy}

    near, far = "logit/paper/abn-bags/mil-mean/reg-mean", "sig/cmcs/abn-bags/mil-mean/reg-mean"
    ref = {"reading": bench.REFERENCE, "switches": {"diversity": False}, "alpha": 0.0, "batch_size": 16,
           "healthy": True}
    rows = [ref, cell(far, 10.0, True), cell(far, 100.0, False), cell(near, 10.0, True), cell(near, 100.0, True)]
    assert bench.decide(rows)["choice"] == f"{far} @ batch 16"  # near stays healthy at 100
    rows[4] = cell(near, 100.0, False)
    assert bench.decide(rows)["qualifying"] == [f"{near} @ batch 16", f"{far} @ batch 16"]
    rows[4] = cell(near, 100.0, None)  # seeds missing: neither qualifies nor fails
    assert bench.decide(rows)["undecided (seeds missing)"] == [f"{near} @ batch 16"]


def test_readings_sweep_runs_and_resumes(load_benchmark, tmp_path):
    from cupl.experiments.cache import synthetic_bank

    bench = load_benchmark("generator_readings")
    smoke_bank = synthetic_bank("smoke", tmp_path / "cache", progress=False)
    out = tmp_path / "readings"
    assert bench.main(["--bank", str(smoke_bank), "--profile", "smoke", "--out", str(out), "--limit", "2"]) == 0
    first = json.loads(out.with_suffix(".json").read_text())
    assert len(first["runs"]) == 2 and first["runs"][0]["reading"] == bench.REFERENCE
    assert 0.0 <= first["runs"][0]["label_auc"] <= 1.0
    assert bench.main(["--bank", str(smoke_bank), "--profile", "smoke", "--out", str(out), "--limit", "1",
                       "--resume"]) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["runs"][:2] == first["runs"] and len(again["runs"]) == 3
    assert "3 of 723 planned runs done" in out.with_suffix(".md").read_text()
    # two shards take alternate missing runs into files of their own; --merge folds them in, in plan order
    for k in (0, 1):
        assert bench.main(["--bank", str(smoke_bank), "--profile", "smoke", "--out", str(out), "--limit", "1",
                           "--shard", f"{k}/2"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == again["runs"]  # untouched until merged
    assert bench.main(["--out", str(out), "--profile", "smoke", "--merge"]) == 0
    merged = json.loads(out.with_suffix(".json").read_text())["runs"]
    order = [bench.run_key(r) for r in bench.plan(default_batch=8)]
    assert [bench.run_key(r) for r in merged] == order[:5] and merged[:3] == again["runs"]


def test_health_note_names_each_failed_threshold():
    good = {"label_auc": 0.81, "label_mae": 0.19, "saturated_normal": 0.0, "seeds": 3}
    assert failed_criteria(good) == []
    note = health_note(good)
    assert note.startswith("The stage-1 generator this chapter rests on is healthy")
    assert "over 3 seeds" in note and "AUC 0.81" in note and "0.19 from the truth" in note
    bad = {**good, "label_auc": 0.74, "saturated_normal": 0.5}
    assert failed_criteria(bad) == ["pseudo-label AUC ≥ 0.75", "at most 25 % of normal clips scored above 0.99"]
    note = health_note(bad)
    assert "is unhealthy" in note and "AUC 0.74" in note and "50 %" in note and "outside its working regime" in note
    assert failed_criteria({**good, "label_mae": float("nan")}) == ["mean |label − oracle| ≤ 0.3"]
    assert "cannot be measured" in health_note(None)


def test_seeds_health_is_the_mean_over_the_chapters_generators(tmp_path):
    from cupl.config import make_config
    from cupl.experiments import load_data
    from cupl.experiments.cache import synthetic_bank
    from cupl.experiments.train import stage1

    data = load_data(synthetic_bank("smoke", tmp_path / "cache", progress=False), "smoke", cache=None)
    overrides = {"generator.steps": 5}
    health = seeds_health(data, 2, profile="smoke", **overrides)
    per_seed = [generator_health(stage1(make_config("ucf", "smoke", seed=s, **overrides), data.train), data.train,
                                 data.oracle) for s in (0, 1)]
    assert health["seeds"] == 2
    for key in ("label_auc", "label_mae", "saturated_normal"):
        assert health[key] == pytest.approx((per_seed[0][key] + per_seed[1][key]) / 2, abs=1e-12)
    assert len(data.generators) == 2  # kept for the chapter's runs
    data.oracle = None
    assert seeds_health(data, 2, profile="smoke") is None


def test_the_default_reading_is_the_recorded_choice_of_the_readings_rule(load_benchmark):
    """The defaults of GeneratorConfig are the reading that the committed sweep's rule chose."""
    from cupl.config import make_config

    bench = load_benchmark("generator_readings")
    result = json.loads((bench.RESULTS / "generator_readings.json").read_text())
    assert result["decision"] == bench.decide(bench.summarise(result["runs"]))  # the file agrees with its runs
    choice = result["decision"]["choice"]
    assert choice is not None and not result["decision"]["undecided (seeds missing)"]
    reading, batch = choice.split(" @ batch ")
    [switches] = [r for r in bench.readings() if bench.reading_name(r) == reading]
    g = make_config("ucf", "quick").generator
    assert {k: getattr(g, k) for k in switches} == switches and int(batch) == g.batch_size
