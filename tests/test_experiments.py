"""Experiments: banks loaded for training, multi-seed runs sharing stage 1 (in memory and on
disk), summaries, verdicts and the example videos, on the toy data of `tests/toy.py`."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from cupl import experiments as ex
from cupl.experiments import cache as cache_module
from cupl.experiments import workers as workers_module
from cupl.config import make_config
from cupl.data.bank import VideoData, write_bank
from cupl.data.split import Split
from cupl.experiments.train import run, stage1, train_generator
from toy import toy_split

TINY = {"generator.steps": 30, "generator.batch_size": 4, "generator.mc_passes": 4, "clip.epochs": 1,
        "clip.batch_size": 256, "clip.mc_passes": 2, "self_train.iterations": 2}


def split_videos(split: Split, oracle, name: str):
    """The videos of a toy split as the bank writer takes them."""
    off = split.offsets.tolist()
    for v in range(split.num_videos):
        rows = slice(off[v], off[v + 1])
        yield VideoData(
            name=f"{name}_{split.names[v]}", split=name, label=int(split.labels[v]), category=split.categories[v],
            num_frames=int(split.num_frames[v]), features={"rgb": split.features[rows].numpy()},
            frame_labels=split.frame_labels[v] if split.frame_labels is not None else None,
            oracle_clip_labels=oracle[rows].numpy() if name == "train" and oracle is not None else None,
        )


def toy_bank(path, oracle: bool = True):
    train, truth = toy_split(6, 6, seed=1)
    test, _ = toy_split(4, 4, seed=2, test=True)
    videos = [*split_videos(train, truth if oracle else None, "train"), *split_videos(test, None, "test")]
    attrs = dict(source="toy bank of tests/toy.py", feature_kind="toy", frames_per_clip=16, crops=2,
                 modalities=["rgb"])
    return write_bank(path, videos, attrs=attrs, dtype="float32", progress=False)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    return toy_bank(tmp_path_factory.mktemp("bank") / "toy.h5")


# ---------------------------------------------------------------- loading


def test_load_data_reads_both_splits_and_the_oracle(bank, tmp_path):
    data = ex.load_data(bank, cache=tmp_path / "cache")
    truth = toy_split(6, 6, seed=1)[1]
    assert data.train.num_videos == 12 and data.test.num_videos == 8
    assert torch.equal(data.oracle, truth)
    assert data.test.frame_labels is not None
    assert data.cache == tmp_path / "cache"
    assert data.preset == "ucf"  # a bank naming no dataset runs with the UCF-Crime settings


def test_load_data_without_oracle_and_without_disk_cache(tmp_path):
    path = toy_bank(tmp_path / "real-like.h5", oracle=False)
    data = ex.load_data(path, cache=None)
    assert data.oracle is None and data.cache is None


def test_missing_bank_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        ex.load_data(tmp_path / "nope.h5")


# ---------------------------------------------------------------- stage 1 shared


def test_stage1_key_ignores_stage2_and_the_unused_diversity_settings():
    base = make_config("ucf", "smoke", "full", seed=1)
    assert ex.stage1_key(base) == ex.stage1_key(make_config("ucf", "smoke", "standard", seed=1))
    assert ex.stage1_key(base) == ex.stage1_key(make_config("ucf", "smoke", seed=1, **{"self_train.ratio": 0.3}))
    assert ex.stage1_key(base) == ex.stage1_key(make_config("ucf", "smoke", seed=1, **{"generator.mc_passes": 9}))
    assert ex.stage1_key(base) != ex.stage1_key(make_config("ucf", "smoke", seed=2))
    assert ex.stage1_key(base) != ex.stage1_key(make_config("ucf", "smoke", seed=1, **{"generator.alpha": 1.0}))
    one_head = make_config("ucf", "smoke", seed=1, **{"generator.num_heads": 1, "generator.alpha": 3.0})
    assert ex.stage1_key(one_head) == ex.stage1_key(make_config("ucf", "smoke", "baseline", seed=1))
    # the readings of the completeness terms change nothing without them
    readings = {"generator.head_scores": "logits", "generator.norm_form": "cmcs", "generator.regularizer_reduction": "sum"}
    assert ex.stage1_key(make_config("ucf", "smoke", "baseline", seed=1, **readings)) == ex.stage1_key(
        make_config("ucf", "smoke", "baseline", seed=1))
    assert ex.stage1_key(make_config("ucf", "smoke", seed=1, **readings)) != ex.stage1_key(
        make_config("ucf", "smoke", seed=1))


def test_one_head_trains_the_same_generator_with_or_without_diversity():
    # the premise of stage1_key: with K = 1, Eq. 7 is L_MIL whatever alpha and the switch say
    train, _ = toy_split(4, 4, seed=3)
    models = []
    for diversity, alpha in ((True, 10.0), (False, 0.0)):
        cfg = make_config("ucf", "smoke", **TINY, **{"generator.num_heads": 1, "generator.diversity": diversity,
                                                     "generator.alpha": alpha}).generator
        torch.manual_seed(0)
        models.append(train_generator(train, cfg, rng=torch.Generator().manual_seed(0)))
    for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values()):
        assert torch.equal(a, b)


def test_run_seeds_reuses_stage1_from_disk_in_a_new_process_state(bank, tmp_path):
    cache = tmp_path / "cache"
    first = ex.load_data(bank, cache=cache)
    runs, history, results = ex.run_seeds(first, [0, 1], profile="smoke", keep=True, workers=1, **TINY)
    assert len(list(cache.glob("f_g-*"))) == 2 and len(list(cache.glob("run-*"))) == 2
    assert all(r.timings["stage1"] > 0 for r in results)
    again = ex.load_data(bank, cache=cache)  # a fresh Data: nothing in memory
    # keep=True needs models and arrays, so the runs are made again, from the stored stage 1
    runs2, history2, results2 = ex.run_seeds(again, [0, 1], profile="smoke", keep=True, workers=1, **TINY)
    assert all(r.timings["stage1"] == 0.0 for r in results2)
    pd.testing.assert_frame_equal(runs.drop(columns="seconds"), runs2.drop(columns="seconds"))
    pd.testing.assert_frame_equal(history, history2)
    assert not list(cache.glob(".*tmp")), "no temporary file is left behind"


def test_run_seeds_reuses_whole_runs_from_disk(bank, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    runs, history = ex.run_seeds(ex.load_data(bank, cache=cache), [0, 1], profile="smoke", workers=1, **TINY)

    def no_training(*args, **kwargs):
        raise AssertionError("the run should have come from the cache")

    monkeypatch.setattr(cache_module, "run", no_training)
    fresh = ex.load_data(bank, cache=cache)
    runs2, history2 = ex.run_seeds(fresh, [0, 1], profile="smoke", **TINY)
    pd.testing.assert_frame_equal(runs, runs2)
    pd.testing.assert_frame_equal(history, history2)
    with pytest.raises(AssertionError, match="from the cache"):  # another configuration is trained
        ex.run_seeds(fresh, [0], profile="smoke", **{**TINY, "self_train.ratio": 0.3})
    with pytest.raises(AssertionError, match="from the cache"):  # keep=True needs the models
        ex.run_seeds(fresh, [0], profile="smoke", keep=True, **TINY)


def test_run_seeds_shapes_and_grid_rows(bank):
    data = ex.load_data(bank, cache=None)
    runs, history = ex.run_seeds(data, 2, profile="smoke", **TINY)
    assert list(runs["seed"]) == [0, 1]
    assert list(history["iteration"]) == [1, 2, 1, 2]
    assert {"auc", "ap", "pr_auc", "auc_abnormal", "label_auc"} <= set(history.columns)
    # the final metrics are the last iteration's, never the best one
    last = history[history["iteration"] == 2].reset_index(drop=True)
    assert np.allclose(runs["auc"], last["auc"])
    frame = ex.grid(data, "R", [0.3, 0.6], [0], key="self_train.ratio", profile="smoke", progress=False, **TINY)
    assert list(frame["R"]) == [0.3, 0.6] and list(frame["seed"]) == [0, 0]


def test_a_repeated_configuration_is_run_once(bank):
    data = ex.load_data(bank, cache=None)
    _, _, (first,) = ex.run_seeds(data, [0], profile="smoke", **TINY, keep=True)
    # the default R = 0.5, named explicitly, is the same configuration
    _, _, (again,) = ex.run_seeds(data, [0], profile="smoke", keep=True, **TINY, **{"self_train.ratio": 0.5})
    assert again is first
    _, _, (other,) = ex.run_seeds(data, [0], profile="smoke", keep=True, **TINY, **{"self_train.ratio": 0.4})
    assert other is not first and other.f_g is first.f_g  # stage 1 shared


def test_stage1_alone_is_the_generator_a_run_trains(bank):
    data = ex.load_data(bank, cache=None)
    config = make_config("ucf", "smoke", seed=4, **TINY)
    whole = run(config, data.train, data.test, progress=False)
    alone = stage1(config, data.train)
    for a, b in zip(whole.f_g.state_dict().values(), alone.state_dict().values()):
        assert torch.equal(a, b)


def test_grid_in_two_processes_gives_the_one_process_results(bank, tmp_path):
    values, settings = [0.3, 0.6], dict(key="self_train.ratio", profile="smoke", progress=False, **TINY)
    alone = ex.grid(ex.load_data(bank, cache=tmp_path / "one"), "R", values, [0, 1], workers=1, **settings)
    data = ex.load_data(bank, cache=tmp_path / "two")
    configs = [make_config("ucf", "smoke", seed=s, **TINY, **{"self_train.ratio": r}) for r in values for s in (0, 1)]
    # the two values of R share each seed's stage 1: two jobs, one per seed
    assert ex.prefetch(data, configs, workers=2) == 2
    assert len(list((tmp_path / "two").glob("f_g-*"))) == 2 and len(list((tmp_path / "two").glob("run-*"))) == 4
    assert ex.prefetch(data, configs, workers=2) == 0  # nothing left to make
    side_by_side = ex.grid(data, "R", values, [0, 1], workers=2, **settings)
    pd.testing.assert_frame_equal(alone.drop(columns="seconds"), side_by_side.drop(columns="seconds"),
                                  check_exact=False, atol=1e-6)
    assert data.pool[0] == 2  # the processes stay for the next sweep
    data.pool[1].shutdown()


def test_a_batched_grid_equals_the_grid_of_runs_alone_and_fills_the_cache(bank, tmp_path):
    values, settings = [0.3, 0.6], dict(key="self_train.ratio", profile="smoke", progress=False, **TINY)
    alone = ex.grid(ex.load_data(bank, cache=tmp_path / "one"), "R", values, [0, 1], workers=1, batched=False,
                    **settings)
    data = ex.load_data(bank, cache=tmp_path / "batched")
    together = ex.grid(data, "R", values, [0, 1], workers=1, batched=True, **settings)
    pd.testing.assert_frame_equal(alone.drop(columns="seconds"), together.drop(columns="seconds"), check_exact=True)
    # the runs and the two seeds' stage-1 models are kept for the next notebook
    assert len(list((tmp_path / "batched").glob("run-*"))) == 4
    assert len(list((tmp_path / "batched").glob("f_g-*"))) == 2
    configs = [make_config("ucf", "smoke", seed=s, **TINY, **{"self_train.ratio": r}) for r in values for s in (0, 1)]
    assert ex.make_missing(ex.load_data(bank, cache=tmp_path / "batched"), configs, batched=True) == 0
    _, _, kept = ex.run_seeds(data, [0], profile="smoke", keep=True, batched=True, **TINY)
    own = run(make_config("ucf", "smoke", seed=0, **TINY), data.train, data.test, progress=False, keep_arrays=True)
    assert torch.equal(kept[0].test_scores, own.test_scores) and len(kept[0].arrays) == len(own.arrays)


def test_runs_on_cuda_are_batched_by_default(bank, monkeypatch):
    calls = []
    monkeypatch.setattr(ex.runs, "prefetch", lambda *a, **k: calls.append("prefetch"))
    monkeypatch.setattr(ex.runs, "run_many", lambda configs, *a, **k: calls.append("batched") or [])
    data = ex.load_data(bank, cache=None)
    ex.make_missing(data, [make_config("ucf", "smoke", seed=0)])
    assert calls == ["prefetch"]
    calls.clear()
    ex.make_missing(data, [make_config("ucf", "smoke", seed=0, device="cuda")])
    assert calls == ["prefetch", "batched"]  # stage 1 side by side first, where workers are allowed


def test_prefetch_for_kept_runs_makes_only_the_stage1_models(bank, tmp_path):
    cache = tmp_path / "cache"
    data = ex.load_data(bank, cache=cache)
    configs = [make_config("ucf", "smoke", seed=s, **TINY) for s in (0, 1)]
    assert ex.prefetch(data, configs, keep=True, workers=2) == 2
    assert len(list(cache.glob("f_g-*"))) == 2 and not list(cache.glob("run-*"))
    _, _, results = ex.run_seeds(data, [0, 1], profile="smoke", keep=True, workers=2, **TINY)
    assert all(r.timings["stage1"] == 0.0 for r in results)  # both came from the other processes
    own = run(configs[1], data.train, data.test, progress=False)
    torch.testing.assert_close(results[1].test_scores, own.test_scores, atol=1e-6, rtol=0)
    data.pool[1].shutdown()


def test_prefetch_submits_the_longest_jobs_first(bank, tmp_path, monkeypatch):
    from concurrent.futures import Future

    submitted = []

    class Recorder:  # a pool that runs nothing and records the order of the jobs
        def submit(self, fn, group, keep):
            submitted.append([(c["generator"]["num_heads"], c["self_train"]["iterations"]) for c in group])
            future = Future()
            future.set_result(None)
            return future

    monkeypatch.setattr(workers_module, "_pool", lambda data, workers: Recorder())
    data = ex.load_data(bank, cache=tmp_path / "cache")
    heads = [make_config("ucf", "smoke", seed=0, **{**TINY, "generator.num_heads": k}) for k in (1, 3, 2)]
    assert ex.prefetch(data, heads, workers=2) == 3
    assert submitted == [[(3, 2)], [(2, 2)], [(1, 2)]]  # stage 1 costs K heads
    submitted.clear()
    data.generators.update({ex.stage1_key(c): None for c in heads})  # stage 1 made: stage 2 decides
    longer = [make_config("ucf", "smoke", seed=0, **{**TINY, "generator.num_heads": k,
                                                     "self_train.iterations": j}) for k, j in ((3, 1), (1, 4))]
    assert ex.prefetch(data, longer, workers=2) == 2
    assert submitted == [[(1, 4)], [(3, 1)]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_run_failing_in_a_worker_is_named(bank, tmp_path):
    data = ex.load_data(bank, cache=tmp_path / "cache")
    configs = [make_config("ucf", "smoke", seed=s, device="cuda", **TINY) for s in (0, 1)]
    with pytest.raises(RuntimeError, match=r"prefetch: the run with seed [01] and generator .* failed in a worker"):
        ex.prefetch(data, configs, workers=2)
    data.pool[1].shutdown()


def test_default_workers(bank, monkeypatch):
    monkeypatch.delenv("CUPL_WORKERS", raising=False)
    data = ex.load_data(bank, cache=None)
    assert ex.default_workers(data, "cuda") == 1
    assert ex.default_workers(data, "cpu") == min(os.cpu_count() or 1, 4)
    big = SimpleNamespace(features=torch.zeros(1).expand(2**26, 2))  # 512 MiB, never allocated
    assert ex.default_workers(SimpleNamespace(train=big, test=data.test), "cpu") == 1
    monkeypatch.setenv("CUPL_WORKERS", "3")
    assert ex.default_workers(data, "cuda") == 3
    for bad in ("two", "0"):
        monkeypatch.setenv("CUPL_WORKERS", bad)
        with pytest.raises(ValueError, match="CUPL_WORKERS"):
            ex.default_workers(data)
    assert ex.prefetch(data, [make_config("ucf", "smoke", **TINY)], workers=2) == 0  # no disk cache


# ---------------------------------------------------------------- summaries and verdicts


def seeds(values, **extra):
    return pd.DataFrame({"seed": range(len(values)), "auc": values, **extra})


def test_summarize_and_mean_pm_by_hand():
    frame = pd.concat([seeds([0.80, 0.82, 0.84], K=1), seeds([0.70, 0.70, 0.70], K=2)])
    s = ex.summarize(frame, "K")
    assert s.loc[1, ("auc", "mean")] == pytest.approx(82.0)
    assert s.loc[1, ("auc", "std")] == pytest.approx(2.0)
    assert s.loc[2, ("auc", "std")] == pytest.approx(0.0)
    assert list(ex.mean_pm(frame, "K")) == ["82.00 ± 2.00 (n=3)", "70.00 ± 0.00 (n=3)"]


def test_gain_by_hand():
    diff, spread = ex.gain(seeds([0.80, 0.82, 0.84]), seeds([0.78, 0.79, 0.80]))
    assert diff == pytest.approx(3.0)
    assert spread == pytest.approx(math.sqrt(2.0 ** 2 + 1.0 ** 2))
    diff, spread = ex.gain(seeds([0.9]), seeds([0.8, 0.7]))
    assert diff == pytest.approx(15.0) and math.isnan(spread)
    with pytest.raises(ValueError, match="'auc'"):
        ex.gain(seeds([]), seeds([0.8]))


def test_paper_verdict_cases():
    control = seeds([0.78, 0.79, 0.80])  # 79 ± 1
    assert str(ex.paper_verdict(seeds([0.80, 0.82, 0.84]), control, 2.03)) == (
        "reproduces in direction (+3.00 ± 2.24 points here, +2.03 in the paper)")
    assert str(ex.paper_verdict(seeds([0.79, 0.80, 0.81]), control, 2.03)) == (
        "does not reproduce here: no clear difference (+1.00 ± 1.41 points here, +2.03 in the paper)")
    assert str(ex.paper_verdict(seeds([0.74, 0.75, 0.76]), control, 1.83)).startswith(
        "does not reproduce here: the sign is reversed (-4.00 ± 1.41")
    assert str(ex.paper_verdict(seeds([0.9]), seeds([0.7]), 1.0)).startswith("does not reproduce here: no clear")


def test_best_setting_names_the_values_within_one_std():
    frame = pd.concat([seeds([0.80, 0.82, 0.84], K=1), seeds([0.83, 0.84, 0.85], K=2),
                       seeds([0.70, 0.70, 0.70], K=3)])
    # best K=2: 84 ± 1; K=1: 82 ± 2 is 2 below, spread sqrt(5) = 2.24; K=3 is 14 below
    assert ex.best_setting(frame, "K") == (
        "K = 2 gives the highest mean AUC, 84.00 ± 1.00; K = 1 within one standard deviation of it")
    clear = pd.concat([seeds([0.83, 0.84, 0.85], K=2), seeds([0.70, 0.70, 0.70], K=3)])
    assert ex.best_setting(clear, "K").endswith("every other value is lower by more than one standard deviation")


def test_paper_table_puts_ours_beside_the_papers_own_i3d_row():
    table = ex.paper_table("xd", "70.00 ± 1.00 (n=3)")
    assert list(table.columns) == ["AP (%), the paper's", "cupl, this bank"]
    assert len(table) == 11
    filled = table[table["cupl, this bank"] != ""]
    assert list(filled.index) == [("weak", "Zhang et al. 2023 (this method)", "I3D")]
    assert filled.iloc[0].tolist() == [78.74, "70.00 ± 1.00 (n=3)"]
    ucf = ex.paper_table("ucf")
    assert ucf.loc[("weak", "MSL [12]", "I3D"), "AUC (%), the paper's"] == 85.30
    assert ucf.loc[("weak", "Zhang et al. 2023 (this method)", "I3D"), "cupl, this bank"] == "not run"
    with pytest.raises(ValueError, match="'shanghai'"):
        ex.paper_table("shanghai")


# ---------------------------------------------------------------- example videos


def hand_split(masks: list[list[int]], labels: list[int]) -> Split:
    lengths = [math.ceil(len(m) / 16) for m in masks]
    return Split(features=torch.zeros(sum(lengths), 1, 2), offsets=torch.tensor(np.cumsum([0, *lengths])),
                 labels=torch.tensor(labels), names=[f"v{i}" for i in range(len(masks))],
                 categories=["A" if l else "Normal" for l in labels], num_frames=torch.tensor([len(m) for m in masks]),
                 frame_labels=[np.array(m, dtype=np.uint8) for m in masks])


def test_example_videos_by_hand():
    masks = [
        [0] * 10 + [1] * 30 + [0] * 10,             # abnormal, one interval of 30
        [1, 1, 0, 1, 0, 0, 1, 1, 1] + [0] * 20,     # abnormal, three intervals
        [0] * 40,                                   # normal, 40 frames
        [0] * 5 + [1] * 12 + [0] * 3 + [1] * 4,     # abnormal, two intervals, longest 12
        [0] * 70,                                   # normal, the longest
    ]
    picked = ex.example_videos(hand_split(masks, [1, 1, 0, 1, 0]))
    assert picked == {"multi-event": 1, "long event": 0, "normal": 4}


def test_example_videos_needs_frame_labels_and_both_kinds():
    split = hand_split([[0, 1, 1], [0, 0, 0]], [1, 0])
    with pytest.raises(ValueError, match="abnormal video and a normal video"):
        ex.example_videos(hand_split([[0, 1, 1]], [1]))
    assert ex.example_videos(split) == {"multi-event": 0, "long event": 0, "normal": 1}
    no_labels = Split(split.features, split.offsets, split.labels, split.names, split.categories, split.num_frames)
    with pytest.raises(ValueError, match="frame labels"):
        ex.example_videos(no_labels)


def test_iteration_j_of_a_run_is_the_final_model_of_a_run_with_j_iterations(bank):
    # chapter 9 reads the j axis from the history of one set of runs
    data = ex.load_data(bank, cache=None)
    _, longer = ex.run_seeds(data, [0], profile="smoke", **{**TINY, "self_train.iterations": 3})
    for j in (1, 2):
        runs, _ = ex.run_seeds(data, [0], profile="smoke", **{**TINY, "self_train.iterations": j})
        row = longer[longer["iteration"] == j].iloc[0]
        for metric in ("auc", "ap", "pr_auc", "label_auc"):
            assert runs[metric].iloc[0] == row[metric]


def test_fc_budget_table(bank, load_benchmark):
    module = load_benchmark("fc_budget")
    data = ex.load_data(bank, cache=None)
    table = module.measure(data, ["uncertainty"], [1, 2], [0, 1], "smoke")
    assert list(table["epochs"]) == [1, 1, 1, 2, 2, 2] and list(table["j"]) == [1, 2, 3] * 2
    _, history = ex.run_seeds(data, [0, 1], profile="smoke", variant="uncertainty", **{"clip.epochs": 2})
    last = history.loc[history["iteration"] == 3, "auc"] * 100
    assert table["AUC (%)"].iloc[-1] == f"{last.mean():.2f} ± {last.std():.2f}"
    assert "event clips among the selected (%)" in table  # the toy bank has an oracle
    assert module.markdown(table).count("\n") == len(table) + 1


def test_a_script_without_main_guard_runs_its_work_once(bank, tmp_path):
    # spawned workers would run such a script again, each starting the same sweep in turn
    import subprocess
    import sys

    script = tmp_path / "sweep.py"
    script.write_text(
        "import sys\n"
        "from cupl import experiments as ex\n"
        "from cupl.config import make_config\n"
        f"data = ex.load_data({str(bank)!r}, cache={str(tmp_path / 'cache')!r})\n"
        f"tiny = {TINY!r}\n"
        "configs = [make_config('ucf', 'smoke', seed=s, **tiny) for s in (0, 1)]\n"
        "print('made', ex.prefetch(data, configs, workers=2), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("made") == 1 and "made 2" in done.stderr
