"""Stage-2 checkpoints: the released layout, cupl's own, and `cupl evaluate` against a plain-torch reference."""

import argparse
import json
import math

import numpy as np
import pytest
from pathlib import Path

import torch

from cupl.cli import evaluate as evaluate_cli
from cupl.experiments import checkpoint
from cupl.experiments.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, score_split
from cupl.data.importers import import_ucf
from cupl.data.split import Split
from cupl.models import ClipClassifier


def official_state_dict(in_dim=4096, seed=0):
    """A random stage-2 classifier in the released key layout (Regressor.0/3/5)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {0: (512, in_dim), 3: (32, 512), 5: (2, 32)}
    sd = {}
    for i, (out, inp) in shapes.items():
        sd[f"Regressor.{i}.weight"] = torch.randn(out, inp, generator=g) / math.sqrt(inp) * 2
        sd[f"Regressor.{i}.bias"] = torch.randn(out, generator=g) * 0.1
    return sd


def reference_clip_scores(sd, clips, window=5):
    """The released evaluation, written out: clips [T, C, D] -> [T] crop-mean softmax class 1.

    Row t is concat(c_t, mean(c_{t-w} .. c_{t-1})), the previous t clips when t < w, c_0 at t = 0.
    """
    w0, b0 = sd["Regressor.0.weight"].double(), sd["Regressor.0.bias"].double()
    w3, b3 = sd["Regressor.3.weight"].double(), sd["Regressor.3.bias"].double()
    w5, b5 = sd["Regressor.5.weight"].double(), sd["Regressor.5.bias"].double()
    clips = torch.as_tensor(clips, dtype=torch.float64)
    scores = []
    for t in range(clips.shape[0]):
        context = clips[0] if t == 0 else clips[max(0, t - window):t].mean(0)
        x = torch.cat([clips[t], context], dim=-1)
        h = torch.clamp(x @ w0.T + b0, min=0) @ w3.T + b3
        z = h @ w5.T + b5
        prob = torch.exp(z[:, 1]) / (torch.exp(z[:, 0]) + torch.exp(z[:, 1]))
        scores.append(float(prob.mean()))
    return np.array(scores)


def make_split(videos):
    """A Split from a list of [T, C, D] arrays, built by hand."""
    lengths = [v.shape[0] for v in videos]
    offsets = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.long)
    return Split(
        features=torch.as_tensor(np.concatenate(videos), dtype=torch.float32), offsets=offsets,
        labels=torch.zeros(len(videos), dtype=torch.long), names=[f"v{i}" for i in range(len(videos))],
        categories=["Normal"] * len(videos), num_frames=torch.tensor(lengths) * 16)


def test_official_layout_loads_and_scores_like_the_reference(tmp_path):
    sd = official_state_dict(in_dim=2 * 24)
    path = tmp_path / "official.pth"
    torch.save({"model": sd}, path)
    model = load_checkpoint(path)
    assert isinstance(model, ClipClassifier) and model.two_way and not model.training
    assert (model.in_dim, model.hidden) == (48, (512, 32))
    rng = np.random.default_rng(0)
    videos = [rng.normal(size=(t, 3, 24)).astype(np.float32) for t in (1, 4, 9)]
    got = score_split(model, make_split(videos), window=5, batch_size=5)
    want = np.concatenate([reference_clip_scores(sd, v) for v in videos])
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6, rtol=0)


def test_cupl_checkpoint_round_trip_keeps_weights_and_config(tmp_path):
    torch.manual_seed(0)
    model = ClipClassifier(in_dim=16, hidden=(8, 4), dropout=0.5, two_way=False)
    config = {"lr": 1e-4, "window": 5, "hidden": (8, 4), "note": None, "nested": {"seed": [1, 2]}}
    path = save_checkpoint(tmp_path / "f_c.pth", model, config)
    loaded = load_checkpoint(path)
    assert (loaded.in_dim, loaded.hidden, loaded.dropout, loaded.two_way) == (16, (8, 4), 0.5, False)
    x = torch.randn(7, 16)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert checkpoint.load_config(path) == config
    assert [p.name for p in tmp_path.iterdir()] == ["f_c.pth"]


def test_two_way_cupl_model_matches_the_released_softmax(tmp_path):
    sd = official_state_dict(in_dim=12, seed=3)
    torch.save({"model": sd}, tmp_path / "official.pth")
    official = load_checkpoint(tmp_path / "official.pth")
    save_checkpoint(tmp_path / "cupl.pth", official, {})
    again = load_checkpoint(tmp_path / "cupl.pth")
    x = torch.randn(5, 12)
    h = torch.clamp(x @ sd["Regressor.0.weight"].T + sd["Regressor.0.bias"], min=0)
    z = (h @ sd["Regressor.3.weight"].T + sd["Regressor.3.bias"]) @ sd["Regressor.5.weight"].T + sd["Regressor.5.bias"]
    torch.testing.assert_close(torch.sigmoid(again(x)), torch.softmax(z, -1)[:, 1], rtol=0, atol=1e-6)


def test_config_that_weights_only_loading_cannot_read_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"config\.path has type PosixPath"):
        save_checkpoint(tmp_path / "x.pth", ClipClassifier(in_dim=4, hidden=(2, 2)), {"path": tmp_path})
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    def broken_save(obj, path):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "x.pth", ClipClassifier(in_dim=4, hidden=(2, 2)), {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.update({"Regressor.7.weight": torch.zeros(1)}), r"unknown keys \['Regressor.7.weight'\]"),
    (lambda sd: sd.pop("Regressor.3.bias"), r"missing keys \['Regressor.3.bias'\]"),
    (lambda sd: sd.update({"Regressor.5.weight": torch.zeros(3, 32), "Regressor.5.bias": torch.zeros(3)}),
     "do not chain"),
])
def test_foreign_layouts_are_named_errors(tmp_path, edit, message):
    sd = official_state_dict(in_dim=8)
    edit(sd)
    torch.save({"model": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "bad.pth")


def test_checkpoint_needing_code_to_unpickle_is_refused(tmp_path):
    torch.save({"model": official_state_dict(in_dim=8), "opt": argparse.Namespace(lr=1)}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(tmp_path / "x.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="'model' state dict"):
        load_checkpoint(tmp_path / "list.pth")


def test_input_size_mismatch_names_both_sizes(tmp_path):
    model = ClipClassifier(in_dim=4096)
    split = make_split([np.zeros((2, 1, 1024), np.float32)])
    with pytest.raises(ValueError, match=r"4096-d inputs .* 2048-d clips, but the split has 1024-d"):
        score_split(model, split)


# ---------------------------------------------------------------------------------------
# `cupl evaluate` on an imported UCF-format bank, against the reference


def write_ucf(tmp_path, videos, frames, categories, intervals):
    """Feature files, lists and a 7-column annotation in the real UCF-Crime formats."""
    root = tmp_path / "features"
    root.mkdir()
    for name, feats in videos.items():
        np.save(root / f"{name}_i3d.npy", feats)
    names = list(videos)
    (tmp_path / "train.list").write_text("".join(f"/elsewhere/{n}_i3d.npy\n" for n in names[:2]))
    (tmp_path / "test.list").write_text("".join(f"/elsewhere/{n}_i3d.npy\n" for n in names[2:]))
    lines = []
    for n in names[2:]:
        pairs = list(intervals.get(n, ())) + [(-1, -1)] * (2 - len(intervals.get(n, ())))
        lines.append(f"{n}.mp4\t{categories[n]}\t" + "\t".join(f"{s}\t{e}" for s, e in pairs) + f"\t{frames[n]}\n")
    (tmp_path / "ann.txt").write_text("".join(lines))
    return root


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cupl_evaluate_cli_matches_plain_torch_reference(tmp_path, dtype):
    rng = np.random.default_rng(1)
    frames = {"Abuse001_x264": 50, "Normal_Videos001_x264": 40, "Arson011_x264": 100,
              "Burglary002_x264": 33, "Normal_Videos_003_x264": 70, "Normal_Videos_006_x264": 16}
    categories = {"Arson011_x264": "Arson", "Burglary002_x264": "Burglary",
                  "Normal_Videos_003_x264": "Normal", "Normal_Videos_006_x264": "Normal"}
    intervals = {"Arson011_x264": [(10, 30), (60, 101)], "Burglary002_x264": [(16, 32)]}
    videos = {n: (rng.normal(size=(math.ceil(f / 16), 2, 2048)) * 0.5).astype(np.float32)
              for n, f in frames.items()}
    root = write_ucf(tmp_path, videos, frames, categories, intervals)
    bank = import_ucf(tmp_path / "train.list", tmp_path / "test.list", tmp_path / "ann.txt",
                      tmp_path / "ucf.h5", feature_root=root, dtype=dtype, progress=False)
    sd = official_state_dict()
    torch.save({"model": sd}, tmp_path / "UCF_0.8622.pth")

    parser = argparse.ArgumentParser()
    evaluate_cli.configure_parser(parser)
    args = parser.parse_args(["--checkpoint", str(tmp_path / "UCF_0.8622.pth"), "--bank", str(bank),
                              "--json", str(tmp_path / "m.json"), "--frame-scores", str(tmp_path / "f.npy"),
                              "--batch-size", "3", "--no-progress"])
    assert evaluate_cli.main(args) == 0

    test_names = list(frames)[2:]
    ref_scores, ref_labels = [], []
    for n in test_names:
        stored = videos[n].astype(np.float16).astype(np.float32) if dtype == "float16" else videos[n]
        ref_scores.append(np.repeat(reference_clip_scores(sd, stored), 16))
        labels = np.zeros(len(stored) * 16)
        for s, e in intervals.get(n, ()):
            labels[s:min(e, frames[n])] = 1  # 0-based, end exclusive, clipped to the video
        ref_labels.append(labels)
    ref_scores, ref_labels = np.concatenate(ref_scores), np.concatenate(ref_labels)
    got = np.load(tmp_path / "f.npy", allow_pickle=False)
    assert got.shape == ref_scores.shape == (16 * (7 + 3 + 5 + 1),)
    np.testing.assert_allclose(got, ref_scores, atol=1e-6, rtol=0)

    from sklearn.metrics import roc_auc_score

    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["auc"] == pytest.approx(roc_auc_score(ref_labels, ref_scores), abs=1e-6)
    abnormal = np.repeat([1, 1, 0, 0], [7 * 16, 3 * 16, 5 * 16, 16]).astype(bool)
    assert metrics["auc_abnormal"] == pytest.approx(
        roc_auc_score(ref_labels[abnormal], ref_scores[abnormal]), abs=1e-6)
    assert metrics["num_videos"] == 4


def test_cupl_evaluate_reports_a_bad_checkpoint(tmp_path, capsys):
    torch.save({"model": {"fc.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    parser = argparse.ArgumentParser()
    evaluate_cli.configure_parser(parser)
    args = parser.parse_args(["--checkpoint", str(tmp_path / "bad.pth"), "--bank", str(tmp_path / "none.h5")])
    assert evaluate_cli.main(args) == 1
    out, err = capsys.readouterr()
    assert "unknown keys ['fc.weight']" in err and out == ""  # errors on stderr, as every subcommand


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_scores_on_cuda_match_cpu(tmp_path):
    sd = official_state_dict(in_dim=64)
    torch.save({"model": sd}, tmp_path / "o.pth")
    rng = np.random.default_rng(2)
    split = make_split([rng.normal(size=(t, 10, 32)).astype(np.float32) for t in (3, 11)])
    cpu = score_split(load_checkpoint(tmp_path / "o.pth"), split)
    gpu = score_split(load_checkpoint(tmp_path / "o.pth"), split, device="cuda")
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-5)


def test_cupl_checkpoint_config_sets_window_crops_and_fusion(tmp_path):
    """An XD-style bank (5 crops + VGGish), a cupl model trained on rgb+audio with crops averaged
    and w = 2: evaluate_checkpoint takes all three from the stored config and reports pr_auc."""
    from sklearn.metrics import auc, precision_recall_curve

    rng = np.random.default_rng(5)
    root = tmp_path / "xd"
    root.mkdir()
    videos = {"Train.A__#0_label_A": 3, "Train.B__#0_label_B1-0-0": 2,
              "Test.A__#1_label_B2-0-0": 6, "Test.B__#1_label_A": 4}
    data = {}
    for name, t in videos.items():
        rgb = rng.normal(size=(t, 5, 6)).astype(np.float32)
        audio = rng.normal(size=(t, 128)).astype(np.float32)
        for k in range(5):
            np.save(root / f"{name}__{k}.npy", rgb[:, k])
        np.save(root / f"{name}__vggish.npy", audio)
        data[name] = np.concatenate([rgb, np.repeat(audio[:, None], 5, axis=1)], axis=-1)
    for split, names in (("train", list(videos)[:2]), ("test", list(videos)[2:])):
        (tmp_path / f"{split}.list").write_text("".join(f"{n}__{k}.npy\n" for n in names for k in range(5)))
        (tmp_path / f"{split}_audio.list").write_text("".join(f"{n}__vggish.npy\n" for n in names))
    (tmp_path / "annotations.txt").write_text("Test.A__#1_label_B2-0-0.mp4 20 50\n")
    from cupl.data.importers import import_xd

    bank = import_xd(tmp_path / "train.list", tmp_path / "test.list", tmp_path / "annotations.txt",
                     tmp_path / "xd.h5", audio_train_list=tmp_path / "train_audio.list",
                     audio_test_list=tmp_path / "test_audio.list", feature_root=root, dtype="float32",
                     progress=False)
    torch.manual_seed(0)
    model = ClipClassifier(in_dim=2 * 134, two_way=True)
    config = {"modality": "rgb+audio", "crops": "mean", "self_train": {"window": 2}}
    save_checkpoint(tmp_path / "f_c.pth", model, config)
    result = checkpoint.evaluate_checkpoint(tmp_path / "f_c.pth", bank, progress=False)
    assert (result["modality"], result["window"], result["crops"], result["metric"]) == ("rgb+audio", 2, "mean", "pr_auc")

    sd = {k.replace("regressor.", "Regressor."): v for k, v in model.state_dict().items()}
    want = np.concatenate([reference_clip_scores(sd, data[n].mean(1, keepdims=True), window=2)
                           for n in list(videos)[2:]])
    np.testing.assert_allclose(result["clip_scores"].numpy(), want, atol=1e-6, rtol=0)
    labels = np.zeros(16 * 10)
    labels[20:50] = 1
    precision, recall, _ = precision_recall_curve(labels, np.repeat(want, 16))
    assert result["pr_auc"] == pytest.approx(auc(recall, precision), abs=1e-6)
