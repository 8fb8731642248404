"""Sweeps as one batched model: every model of a batch against its run alone, bit for bit."""

import pytest
import torch

from cupl.config import make_config
from cupl.experiments.batched import Streams, batch_key, init_from, run_many, train_clip_classifiers
from cupl.experiments.train import run, train_clip_classifier
from cupl.method.models import ClipClassifier
from toy import toy_split

# the defaults of every open choice, at a size a test affords
TINY = {"generator.steps": 6, "generator.batch_size": 4, "generator.mc_passes": 4, "clip.steps": 12,
        "clip.batch_size": 96, "clip.mc_passes": 3, "self_train.iterations": 2}


@pytest.fixture(scope="module")
def data():
    train, oracle = toy_split(12, 12, seed=1)
    test, _ = toy_split(6, 6, seed=2, test=True)
    return train, test, oracle


def tiny(variant="full", **overrides):
    return make_config("xd", "smoke", variant, **{**TINY, **overrides})


def assert_equal_models(a: torch.nn.Module, b: torch.nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def alone(train, labels, selected, cfg, seed, model=None):
    """`train_clip_classifier` as `run` calls it after seeding both streams with `seed`."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    return train_clip_classifier(train, labels, selected, cfg, 3, rng=rng, model=model), rng


@pytest.mark.parametrize("budget", ["steps", "epochs"])
def test_fc_batched_equals_each_alone_bit_for_bit(data, budget):
    """Three f_c on reliable sets of their own, two of one seed; with the epochs budget, sets
    of other sizes make schedules of other lengths, trained in stacks of their own."""
    train, _, _ = data
    cfg = tiny(**({"clip.budget": "epochs", "clip.epochs": 2} if budget == "epochs" else {})).clip
    torch.manual_seed(7)
    labels = list(torch.rand(3, train.num_clips))
    keep = torch.rand(3, train.num_clips)
    selected = [keep[0] < 0.5, keep[1] < 0.5, keep[2] < 0.3]
    seeds = [11, 11, 12]
    streams = [Streams.seeded(s, torch.device("cpu")) for s in seeds]
    batched = train_clip_classifiers(train, labels, selected, cfg, 3, streams)
    for n, seed in enumerate(seeds):
        model, rng = alone(train, labels[n], selected[n], cfg, seed)
        assert_equal_models(model, batched[n])
        # the streams end where the run's do: the global RNG and the explicit generator
        assert torch.equal(streams[n].glob.get_state(), torch.get_rng_state())
        assert torch.equal(streams[n].explicit.get_state(), rng.get_state())


def test_fc_batched_goes_on_training_given_models_as_alone(data):
    """clip.reinit False: each model trains on from its own classifier, with a new optimiser."""
    train, _, _ = data
    cfg = tiny(**{"clip.reinit": False}).clip
    torch.manual_seed(3)
    starts = [ClipClassifier(32, cfg.hidden, cfg.dropout) for _ in range(2)]
    labels, selected = list(torch.rand(2, train.num_clips)), list(torch.rand(2, train.num_clips) < 0.5)
    copies = [ClipClassifier(32, cfg.hidden, cfg.dropout) for _ in range(2)]
    for c, s in zip(copies, starts):
        c.load_state_dict(s.state_dict())
    batched = train_clip_classifiers(train, labels, selected, cfg, 3, [Streams.seeded(s, torch.device("cpu"))
                                                                       for s in (0, 1)], models=starts)
    for n in range(2):
        assert_equal_models(alone(train, labels[n], selected[n], cfg, n, model=copies[n].train())[0], batched[n])


def test_fc_batched_names_a_model_without_selected_clips(data):
    train, _, _ = data
    selected = [torch.ones(train.num_clips, dtype=torch.bool), torch.zeros(train.num_clips, dtype=torch.bool)]
    with pytest.raises(ValueError, match=r"no clip is selected for model\(s\) \[1\]"):
        train_clip_classifiers(train, list(torch.rand(2, train.num_clips)), selected, tiny().clip, 3,
                               [Streams.seeded(0, torch.device("cpu"))] * 2)


def test_init_from_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    glob = torch.Generator().manual_seed(5)
    made = init_from(glob, lambda: torch.rand(3))
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(5)
    assert torch.equal(made, torch.rand(3)) and torch.equal(glob.get_state(), torch.get_rng_state())


def test_run_many_equals_run_bit_for_bit(data):
    """A small grid over seeds, alpha and the selection rule, and two Table 4 rows of other
    shapes (one head, one iteration), with the oracle's diagnostics and every array kept."""
    train, test, oracle = data
    configs = [tiny(seed=s, **{"generator.alpha": a}) for a in (0.1, 1.0) for s in (0, 1)]
    configs += [tiny("standard", seed=0), tiny("baseline", seed=1), tiny("completeness", seed=0)]
    generators = {}
    batched = run_many(configs, train, test, oracle=oracle, keep_arrays=True, generators=generators)
    # the standard and completeness rows of seed 0 share its f_g at the preset's alpha 0.1
    assert len(generators) == 5
    for config, b in zip(configs, batched):
        a = run(config, train, test, oracle=oracle, progress=False, keep_arrays=True)
        assert b.config == a.config and b.history == a.history and b.metrics == a.metrics
        for x, y in zip(a.arrays, b.arrays):
            assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        assert_equal_models(a.f_g, b.f_g)
        assert_equal_models(a.f_c, b.f_c)
        assert torch.equal(a.test_scores, b.test_scores)


def test_run_many_in_chunks_and_with_known_generators_changes_nothing(data):
    train, test, _ = data
    configs = [tiny(seed=s, **{"self_train.selection": sel}) for s in (0, 1) for sel in ("uncertainty", "random")]
    whole = run_many(configs, train, test)
    generators = {}
    chunked = run_many(configs, train, test, max_models=3, generators=generators)
    assert len(generators) == 2
    again = run_many(configs, train, test, generators=generators)  # no stage 1 trained
    for a, b, c in zip(whole, chunked, again):
        assert a.history == b.history == c.history and torch.equal(a.test_scores, c.test_scores)
        assert c.timings["stage1"] == 0.0
    with pytest.raises(ValueError, match="max_models must be >= 1, got 0"):
        run_many(configs, train, test, max_models=0)


def test_run_many_leaves_the_global_rng_alone(data):
    train, test, _ = data
    torch.manual_seed(99)
    before = torch.get_rng_state()
    run_many([tiny(seed=0), tiny(seed=1)], train, test)
    assert torch.equal(torch.get_rng_state(), before)


def test_batch_key_groups_what_can_share_a_stack():
    base = batch_key(tiny())
    assert batch_key(tiny(seed=4, **{"generator.alpha": 3.0, "generator.num_heads": 3})) == base
    assert batch_key(tiny(**{"self_train.selection": "random"})) == base
    assert batch_key(tiny(**{"self_train.iterations": 3})) != base
    assert batch_key(tiny(**{"generator.mc_passes": 9})) != base  # the first iteration's M
    assert batch_key(tiny(**{"clip.hidden": (64, 8)})) != base


def test_sweep_benchmark_reports_equal_runs(load_benchmark, tmp_path, monkeypatch):
    monkeypatch.setenv("CUPL_CACHE", str(tmp_path / "cache"))
    sweep = load_benchmark("sweep")
    out = tmp_path / "sweep.json"
    assert sweep.main(["--profile", "smoke", "--alphas", "1", "10", "--seeds", "0", "--threads", "1",
                       "--json", str(out)]) == 0
    import json

    result = json.loads(out.read_text())
    assert result["runs"] == 2 and result["max_abs_auc_diff"] == 0.0 and result["max_abs_auc_diff_any_iteration"] == 0.0
    assert result["separate_s"] > 0 and result["batched_s"] > 0
    assert result["ratio"] == pytest.approx(result["separate_s"] / result["batched_s"])


def test_stage_totals_fold_iterations_and_runs():
    from cupl.experiments.timing import stage_totals

    runs = [{"load": 1.0, "stage1": 2.0, "iter1.train": 0.5, "iter2.train": 0.25},
            {"stage1": 3.0, "iter1.train": 1.0, "iter1.score": 0.125}]
    assert stage_totals(runs) == {"load": 1.0, "stage1": 5.0, "train": 1.75, "score": 0.125}
    assert stage_totals([]) == {}


def test_headroom_benchmark_bound_follows_from_its_own_numbers(load_benchmark, tmp_path, monkeypatch):
    """The bound is recomputed here from the JSON's stage seconds and headrooms (each headroom from
    its two step times), so a wrong formula in the script fails."""
    monkeypatch.setenv("CUPL_CACHE", str(tmp_path / "cache"))
    headroom = load_benchmark("headroom")
    out = tmp_path / "headroom.json"
    assert headroom.main(["--profile", "smoke", "--models", "3", "--steps", "2", "--repeats", "1", "--threads", "1",
                          "--json", str(out)]) == 0
    import json

    r = json.loads(out.read_text())
    assert r["models"] == 3 and r["machine"] and r["date"]
    for h in r["headroom"].values():
        assert h["alone_ms"] > 0 and h["stacked_ms"] > 0
        assert h["headroom"] == pytest.approx(h["alone_ms"] / h["stacked_ms"])
    stages = r["run_stages_s"]
    assert 0 < stages["stage1"] + stages["train"] < r["run_s"]
    floor = sum(stages[k] / max(1.0, r["headroom"][k]["headroom"]) for k in ("stage1", "train"))
    assert r["bound"] == pytest.approx(r["run_s"] / floor) and r["bound"] >= 1.0
    with pytest.raises(SystemExit):
        headroom.main(["--models", "1"])


def test_fresh_book_refuses_a_folder_in_use_and_names_a_failed_step(load_benchmark, tmp_path, capsys):
    fresh = load_benchmark("fresh_book")
    (tmp_path / "in_use").mkdir()
    (tmp_path / "in_use" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        fresh.main(["--dir", str(tmp_path / "in_use")])
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "in_use" / "keep.txt").read_text() == "mine"
    numbers = {}
    with pytest.raises(SystemExit, match="broken failed"):
        fresh.step("broken", ["sh", "-c", "echo oops; exit 3"], tmp_path, numbers)
    assert "exited with 3" in numbers["failed"] and "oops" in (tmp_path / "broken.log").read_text()
    assert fresh.step("fine", ["true"], tmp_path, numbers) >= 0
