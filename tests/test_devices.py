"""The device path of the pipeline, checked on the CPU: the split first layer of f_c, chunked
MC-Dropout and scoring, the GPU code path against the CPU path, out-of-memory advice, the
benchmark's FLOP counts and the GPU check script at a tiny scale."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cupl.config import make_config
from cupl.models import ClipClassifier, MultiHeadClassifier
from cupl.experiments.steps import feature_dtype
from cupl.experiments.train import prepare_split, pseudo_labels, run, score_clips
from cupl.uncertainty import mc_dropout
from toy import toy_split


@pytest.fixture(scope="module")
def gpu_check(load_benchmark):
    return load_benchmark("gpu_check")


@pytest.fixture(scope="module")
def bench_pipeline(load_benchmark):
    return load_benchmark("pipeline")


@pytest.fixture(scope="module")
def data():
    train, oracle = toy_split(6, 6, dim=8, crops=3, seed=3, min_len=1, max_len=30)
    test, _ = toy_split(4, 4, dim=8, crops=3, seed=4, test=True, min_len=1, max_len=30)
    return train, test


def plain_temporal(split, window: int) -> np.ndarray:
    """[N, C, 2D] temporal features video by video, with the released code's edge rule."""
    feats, off = split.features.numpy(), split.offsets.tolist()
    out = []
    for a, b in zip(off[:-1], off[1:]):
        clips = feats[a:b]
        for t in range(len(clips)):
            memory = clips[0] if t == 0 else clips[max(0, t - window):t].mean(axis=0)
            out.append(np.concatenate([clips[t], memory], axis=-1))
    return np.stack(out)


# ---- f_c's split first layer, in chunks -------------------------------------------------


# D = 8: f_c with h1 = 12 reads built temporal features, with h1 = 4 < D it projects clips first
@pytest.mark.parametrize("hidden", [(12, 5), (4, 3)])
@pytest.mark.parametrize("batch_size", [3, 7, 100, 10**6])  # 1, 2, 33 and all clips per chunk
def test_fc_pseudo_labels_equal_passes_on_built_temporal_features(data, batch_size, hidden):
    train, _ = data
    torch.manual_seed(0)
    model = ClipClassifier(16, hidden=hidden, dropout=0.5)
    labels, unc = pseudo_labels(model, train, 6, window=3, rng=torch.Generator().manual_seed(9),
                                batch_size=batch_size)
    x = torch.from_numpy(plain_temporal(train, 3))  # [N, C, 2D]
    mean, var = mc_dropout(model, x.flatten(0, 1), 6, torch.Generator().manual_seed(9), method="naive")
    torch.testing.assert_close(labels, mean.view(train.num_clips, -1).mean(dim=1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(unc, var.view(train.num_clips, -1).mean(dim=1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("hidden", [(12, 5), (4, 3)])
@pytest.mark.parametrize("two_way", [False, True])
def test_scores_equal_the_eval_forward_on_built_temporal_features(data, two_way, hidden):
    _, test = data
    torch.manual_seed(1)
    model = ClipClassifier(16, hidden=hidden, dropout=0.5, two_way=two_way)
    scores = score_clips(model, test, 4, batch_size=5)
    x = torch.from_numpy(plain_temporal(test, 4))
    with torch.no_grad():
        expected = torch.sigmoid(model.eval()(x)).mean(dim=1)
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-5)


def test_fg_pseudo_labels_in_chunks(data):
    train, _ = data
    torch.manual_seed(2)
    model = MultiHeadClassifier(8, num_heads=3, hidden=(6, 4), dropout=0.4)
    labels, unc = pseudo_labels(model, train, 9, rng=torch.Generator().manual_seed(5), batch_size=30)
    mean, var = mc_dropout(model, train.features.flatten(0, 1), 9, torch.Generator().manual_seed(5), method="naive")
    torch.testing.assert_close(labels, mean.view(train.num_clips, -1).mean(dim=1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(unc, var.view(train.num_clips, -1).mean(dim=1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("two_way", [False, True])
def test_logit_from_hidden_is_the_rest_of_forward(two_way):
    torch.manual_seed(4)
    model = ClipClassifier(10, hidden=(6, 3), two_way=two_way).eval()
    x = torch.randn(5, 2, 10)
    assert torch.equal(model.logit_from_hidden(model.hidden1(x)[..., 0, :]), model(x))


def test_context_weights_split_the_first_layer():
    torch.manual_seed(3)
    model = ClipClassifier(10, hidden=(4, 2))
    w_a, w_b, b1 = model.context_weights()
    c, m = torch.randn(7, 5), torch.randn(7, 5)
    expected = model.regressor[0](torch.cat([c, m], dim=1))
    torch.testing.assert_close(c @ w_a.T + m @ w_b.T + b1, expected)


# ---- CPU path against the GPU code path --------------------------------------------------

SMALL = {"generator.steps": 25, "generator.batch_size": 4, "generator.hidden": (32, 16), "clip.hidden": (32, 8),
         "clip.epochs": 2, "clip.batch_size": 64, "self_train.iterations": 3, "self_train.window": 3}
# Tolerance between the CPU path (evaluation in chunks of 16 vectors) and the GPU code path
# (amp off, one chunk of 2^20): the same data, seed and draws, so only the blocking of the
# first-layer matmuls can differ; pseudo labels and scores agree to float32 rounding, and
# the selection, a ranking of the uncertainty, is identical.
CODE_PATH_TOLERANCE = 1e-5


@pytest.mark.parametrize("clip_hidden", [(32, 8), (4, 2)])  # f_c on built inputs; projecting clips (D = 8 > 4)
def test_gpu_code_path_gives_the_cpu_results(data, clip_hidden):
    train, test = data
    settings = {**SMALL, "clip.hidden": clip_hidden}
    small = run(make_config("ucf", "smoke", eval_batch_size=16, **settings), train, test, progress=False,
                keep_arrays=True)
    large = run(make_config("ucf", "smoke", eval_batch_size=2**20, **settings), train, test, progress=False,
                keep_arrays=True)
    assert len(small.arrays) == len(large.arrays) == 3
    for a, b in zip(small.arrays, large.arrays):
        assert float((a["labels"] - b["labels"]).abs().max()) <= CODE_PATH_TOLERANCE
        assert float((a["uncertainty"] - b["uncertainty"]).abs().max()) <= CODE_PATH_TOLERANCE
        assert torch.equal(a["selected"], b["selected"])
    assert float((small.test_scores - large.test_scores).abs().max()) <= CODE_PATH_TOLERANCE
    assert small.metrics["auc"] == pytest.approx(large.metrics["auc"], abs=1e-6)


def test_graph_steps_need_cuda(data):
    from cupl.experiments.train import train_generator

    train, _ = data
    config = make_config("ucf", "smoke", **SMALL)
    with pytest.raises(ValueError, match="graph=True needs a CUDA device.*cpu"):
        train_generator(train, config.generator, rng=torch.Generator().manual_seed(0), graph=True)


def test_feature_dtype():
    assert feature_dtype("cuda", True) == torch.bfloat16
    assert feature_dtype(torch.device("cuda", 0), True) == torch.bfloat16
    assert feature_dtype("cuda", False) == torch.float32
    assert feature_dtype("cpu", True) == torch.float32


def test_crop_mean_in_half_precision(data):
    train, _ = data
    # crops 0, 1, 2 hold 1, 2 and 4.5 (exact in bfloat16): their mean is 2.5
    feats = torch.tensor([1.0, 2.0, 4.5]).view(1, 3, 1).expand(train.num_clips, 3, 8).to(torch.bfloat16)
    split = dataclasses.replace(train, features=feats.contiguous())
    out = prepare_split(split, "mean", "cpu", torch.float32)
    assert out.features.shape == (train.num_clips, 1, 8) and out.features.dtype == torch.float32
    assert bool((out.features == 2.5).all())


# ---- out of memory ----------------------------------------------------------------------

@pytest.mark.parametrize("stage,error,knob", [
    ("pseudo_labels", torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB"),
     r"iter1\.mc_dropout: out of memory on cpu; lower eval_batch_size \(now 16\)"),
    ("train_clip_classifier", torch.cuda.OutOfMemoryError("CUDA out of memory."),
     r"iter1\.train: .*lower clip\.batch_size \(now 64\).*memory table.*self_train\.ratio \(now 0\.5\)"),
    ("train_generator", RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory"),
     r"stage1: .*lower generator\.batch_size \(now 4\)"),
    ("prepare_split", torch.cuda.OutOfMemoryError("CUDA out of memory."), r"load: .*amp=True.*crops='mean'"),
])
def test_out_of_memory_names_the_setting(data, monkeypatch, stage, error, knob):
    import cupl.experiments.train

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(cupl.experiments.train, stage, fail)
    train, test = data
    with pytest.raises(type(error), match=knob) as caught:
        run(make_config("ucf", "smoke", eval_batch_size=16, **SMALL), train, test, progress=False)
    assert caught.value.__cause__ is error


def test_other_errors_pass_unchanged(data, monkeypatch):
    import cupl.experiments.train

    def fail(*args, **kwargs):
        raise RuntimeError("shapes cannot be multiplied")

    monkeypatch.setattr(cupl.experiments.train, "score_clips", fail)
    train, test = data
    with pytest.raises(RuntimeError, match="^shapes cannot be multiplied$"):
        run(make_config("ucf", "smoke", **SMALL), train, test, progress=False)


# ---- the benchmark's FLOP counts --------------------------------------------------------

def _config(crops="each"):
    return {"crops": crops,
            "generator": {"num_heads": 2, "hidden": (4, 3), "steps": 10, "batch_size": 2, "num_segments": 5,
                          "mc_passes": 7},
            "clip": {"hidden": (6, 2), "epochs": 3, "mc_passes": 5, "two_way": False},
            "self_train": {"iterations": 2}}


def test_stage_flops_by_hand(bench_pipeline):
    # D = 8, K = 2, f_g (4, 3), f_c (6, 2); N = 100 clips, N' = 50, C = 2, selected 40 then 30.
    # f_g: first layer 2*8*2*4 = 128, tail 2*(2*4*3 + 2*3) = 60; 2B S = 20 bags per step.
    # f_c: first layer 2*16*6 = 192, tail 2*(6*2 + 2*1) = 28.
    flops = bench_pipeline.stage_flops(_config(), 100, 50, 2, 8, [40, 30])
    assert flops["stage1"] == 10 * 20 * (2 * 128 + 3 * 60)                  # 87 200
    assert flops["iter1.mc_dropout"] == 100 * 2 * (128 + 2 * 2 * 4 * 7)    # 48 000
    assert flops["iter2.mc_dropout"] == 100 * 2 * (192 + 2 * 6 * 5)        # 50 400
    assert flops["iter1.train"] == 3 * 40 * 2 * (2 * 192 + 3 * 28)         # 112 320
    assert flops["iter2.train"] == 3 * 30 * 2 * (2 * 192 + 3 * 28)
    assert flops["iter1.score"] == flops["iter2.score"] == 50 * 2 * (192 + 2 * 6)
    assert flops["iter1.mining"] == flops["iter2.evaluate"] == flops["load"] == 0
    mean = bench_pipeline.stage_flops(_config("mean"), 100, 50, 2, 8, [40, 30])
    assert mean["iter1.train"] == flops["iter1.train"] / 2


def test_stage_rows_total(bench_pipeline):
    timings = {"load": 1.0, "stage1": 2.0, "iter1.train": 0.5, "iter1.evaluate": 0.5}
    flops = {"load": 0.0, "stage1": 4e12, "iter1.train": 1e12, "iter1.evaluate": 0.0}
    rows = bench_pipeline.stage_rows(timings, flops, peak_tflops=10.0)
    total = rows[-1]
    assert [r["stage"] for r in rows] == [*timings, "total (without load)"]
    assert total["seconds"] == 3.0 and total["gflop"] == 5000.0
    assert total["floor_s"] == pytest.approx(0.5) and total["of_peak"] == pytest.approx(5 / 3 / 10)
    assert rows[1]["tflops"] == pytest.approx(2.0) and rows[0]["tflops"] is None
    assert "| **total (without load)** | **3.000** |" in bench_pipeline.markdown_table(rows)


# ---- the GPU check, on the CPU at a tiny scale ---------------------------------------------

def test_gpu_check_runs_on_cpu_at_tiny_scale(gpu_check, tmp_path, capsys):
    code = gpu_check.main([
        "--device", "cpu", "--scale", "0.01", "--dim", "16", "--crops", "2", "--profile", "smoke",
        "--train-clips", "0", "--io-gb", "0.0002", "--skip", "compile",
        "--set", "generator.steps", "5", "--set", "clip.epochs", "1", "--set", "generator.hidden", "(32, 16)",
        "--set", "clip.hidden", "(32, 8)", "--peak-tflops", "1", "--agree-videos", "6",
        "--agree-test-videos", "3", "--agree-steps", "5", "--agree-epochs", "1", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    steps = report["steps"]
    assert code == 0, printed
    assert {n: s["status"] for n, s in steps.items()} == {
        "plan": "ok", "generate": "ok", "warmup": "ok", "pipeline": "ok", "agreement": "ok",
        "bank_io": "ok", "compile": "skipped"}
    assert steps["plan"]["train_videos"] == 16 and steps["plan"]["test_videos"] == 3
    assert steps["generate"]["train_shape"][1:] == [2, 16]
    stages = [r["stage"] for r in steps["pipeline"]["rows"]]
    assert stages[:2] == ["load", "stage1"] and stages[-1] == "total (without load)"
    comparisons = steps["agreement"]["comparisons"]
    assert comparisons["float32 run"]["ok"] is True and comparisons["inference, same models"]["ok"] is True
    assert comparisons["CPU, last bit changed"]["ok"] is None  # the reference, no verdict
    assert steps["bank_io"]["full_gib"] > steps["bank_io"]["gib"] > 0
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "| pipeline | ok |" in markdown and "extrapolated linearly" in markdown.lower()
    assert steps["pipeline"]["fc_inputs"]["max_abs_diff"] <= 1e-6
    assert "from a memory table of the selected clips" in markdown
    # every progress line carries the clock and the seconds since start
    assert all(line.startswith("[") for line in printed.splitlines() if "gpu_check" in line or ": start" in line)


def test_gpu_check_reports_a_failing_step_and_goes_on(gpu_check, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(gpu_check, "_bank_io", broken)
    code = gpu_check.main([
        "--device", "cpu", "--scale", "0.01", "--dim", "8", "--crops", "1", "--profile", "smoke",
        "--train-clips", "0", "--skip", "warmup", "pipeline", "agreement", "compile", "--out", str(tmp_path)])
    steps = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert code == 1
    assert steps["bank_io"]["status"] == "failed" and "planted failure" in steps["bank_io"]["error"]
    assert steps["compile"]["status"] == "skipped" and steps["generate"]["status"] == "ok"
    assert "bank_io: FAILED: RuntimeError: planted failure" in capsys.readouterr().out


def test_gpu_check_stops_at_the_end_of_its_budget(gpu_check, tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(gpu_check, "_generate", lambda *args: time.sleep(60))
    start = time.perf_counter()
    code = gpu_check.main(["--device", "cpu", "--scale", "0.01", "--budget-s", "6", "--out", str(tmp_path)])
    steps = json.loads((tmp_path / "gpu_check.json").read_text())["steps"]
    assert code == 1 and time.perf_counter() - start < 30
    assert steps["plan"]["status"] == "ok"
    assert steps["generate"]["status"] == "failed" and "budget" in steps["generate"]["error"]
    assert all(steps[name]["status"] == "skipped" for name in gpu_check.STEPS[2:])


def test_fc_input_paths_build_the_same_inputs(bench_pipeline, data):
    train, _ = data
    out = bench_pipeline.fc_input_paths(train, window=3, batch_size=7, ratio=0.5, epochs=4, repeats=1)
    assert out["max_abs_diff"] <= 1e-6
    assert out["samples"] % train.features.shape[1] == 0 and out["samples"] > 0
    assert out["per_batch_s"] == pytest.approx(4 * out["per_batch_epoch_s"])
    assert out["table_s"] == pytest.approx(out["table_build_s"] + 4 * out["table_epoch_s"])
