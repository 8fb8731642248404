"""Importers: small files in each real format, written here, imported, and read back from the bank."""

import argparse
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cupl.cli import importer as importer_cli
from cupl.data import importers
from cupl.data.bank import FeatureBank
from cupl.data.importers import FeatureImportError, import_tad, import_ucf, import_xd

D = 8  # small feature size; the formats fix only the layout


def feats(rng, t, crops=10, d=D):
    return rng.normal(size=(t, crops, d)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# UCF-Crime


UCF_FRAMES = {"Arson011_x264": 100, "Burglary002_x264": 33, "Normal_Videos_003_x264": 40}
UCF_TRAIN = {"Abuse001_x264": 3, "Normal_Videos001_x264": 2}  # clips


def ucf_files(tmp_path, seven_columns=True, rng=None):
    """RTFM layout: <video>_i3d.npy [T, 10, D], lists with foreign paths, temporal annotation."""
    rng = rng or np.random.default_rng(0)
    root = tmp_path / "i3d"
    root.mkdir()
    arrays = {n: feats(rng, t) for n, t in UCF_TRAIN.items()}
    arrays |= {n: feats(rng, math.ceil(f / 16)) for n, f in UCF_FRAMES.items()}
    for name, a in arrays.items():
        np.save(root / f"{name}_i3d.npy", a)
    (tmp_path / "train.list").write_text("".join(f"/home/x/train/{n}_i3d.npy\n" for n in UCF_TRAIN))
    (tmp_path / "test.list").write_text("".join(f"/home/x/test/{n}_i3d.npy\n" for n in UCF_FRAMES))
    rows = [("Arson011_x264", "Arson", "10 30 60 101"),
            ("Burglary002_x264", "Burglary", "16 32 -1 -1"),
            ("Normal_Videos_003_x264", "Normal", "-1 -1 -1 -1")]
    text = "".join(f"{n}.mp4  {c}  {iv}" + (f"  {UCF_FRAMES[n]}" if seven_columns else "") + "\n"
                   for n, c, iv in rows)
    (tmp_path / "ann.txt").write_text(text)
    return root, arrays


def run_ucf(tmp_path, root, **kw):
    return import_ucf(tmp_path / "train.list", tmp_path / "test.list", tmp_path / "ann.txt",
                      tmp_path / "ucf.h5", feature_root=root, progress=False, **kw)


def test_ucf_import_reads_back_in_list_order(tmp_path):
    root, arrays = ucf_files(tmp_path)
    out = run_ucf(tmp_path, root, dtype="float32")
    with FeatureBank.open(out) as bank:
        train, test = bank.videos("train"), bank.videos("test")
        assert [(v.name, v.label, v.category, v.num_frames, v.num_clips) for v in train] == [
            ("Abuse001_x264", 1, "Abuse", 48, 3), ("Normal_Videos001_x264", 0, "Normal", 32, 2)]
        assert [(v.name, v.label, v.category, v.num_frames, v.num_clips) for v in test] == [
            ("Arson011_x264", 1, "Arson", 100, 7), ("Burglary002_x264", 1, "Burglary", 33, 3),
            ("Normal_Videos_003_x264", 0, "Normal", 40, 3)]
        for name, a in arrays.items():
            np.testing.assert_array_equal(bank.features(name), a)
        arson = np.zeros(100, np.uint8)
        arson[10:30] = 1
        arson[60:100] = 1  # [60, 101) clipped to the 100 frames
        np.testing.assert_array_equal(bank.frame_labels("Arson011_x264"), arson)
        np.testing.assert_array_equal(np.flatnonzero(bank.frame_labels("Burglary002_x264")), np.arange(16, 32))
        assert not bank.frame_labels("Normal_Videos_003_x264").any()
        attrs = bank.attrs
        assert (attrs["source"], attrs["crops"], attrs["modalities"], attrs["frames_per_clip"]) == (
            "ucf-crime", 10, ["rgb"], 16)
        assert json.loads(attrs["clipped"]) == {"Arson011_x264": [
            "Arson011_x264: interval [60, 101) ends beyond its 100 frames; clipped to [60, 100)"]}
        split = bank.load_split("test")
        assert split.features.shape == (13, 10, D)


def test_ucf_six_column_annotation_uses_feature_length(tmp_path):
    root, _ = ucf_files(tmp_path, seven_columns=False)
    with FeatureBank.open(run_ucf(tmp_path, root)) as bank:
        assert [v.num_frames for v in bank.videos("test")] == [7 * 16, 3 * 16, 3 * 16]
        assert bank.frame_labels("Arson011_x264")[60:101].all()
        assert json.loads(bank.attrs["clipped"]) == {}


def test_ucf_every_problem_is_listed_and_nothing_is_written(tmp_path):
    root, arrays = ucf_files(tmp_path)
    rng = np.random.default_rng(1)
    np.save(root / "Abuse001_x264_i3d.npy", np.array([np.zeros(3), np.zeros(2)], dtype=object),
            allow_pickle=True)                                              # pickled object array
    np.save(root / "Normal_Videos001_x264_i3d.npy", np.zeros((2, 10, D), np.int64))   # integer dtype
    nan = feats(rng, 7)
    nan[3, 2, 1] = np.nan
    np.save(root / "Arson011_x264_i3d.npy", nan)                            # NaN
    np.save(root / "Burglary002_x264_i3d.npy", feats(rng, 5))               # 5 clips for 33 frames
    (root / "Normal_Videos_003_x264_i3d.npy").unlink()                      # missing file
    with open(tmp_path / "test.list", "a") as fp:
        fp.write("/home/x/test/Shooting001_x264_i3d.npy\n")                 # listed, not annotated
    np.save(root / "Shooting001_x264_i3d.npy", np.zeros((0, 10, D), np.float32))       # empty
    with open(tmp_path / "ann.txt", "a") as fp:
        fp.write("Robbery050_x264.mp4  Robbery  1 2 -1 -1  20\n")           # annotated, not listed
    with pytest.raises(FeatureImportError) as err:
        run_ucf(tmp_path, root)
    text = str(err.value)
    assert "nothing was written" in text
    expected = [
        ("Abuse001_x264_i3d.npy", "object array"),
        ("Normal_Videos001_x264_i3d.npy", "dtype int64"),
        ("Arson011_x264_i3d.npy", "1 non-finite"),
        ("Burglary002_x264", "5 clips but 33 frames need ceil(33/16) = 3 clips"),
        ("Normal_Videos_003_x264_i3d.npy", "missing file"),
        ("Shooting001_x264", "test.list but not in"),
        ("Shooting001_x264_i3d.npy", "empty"),
        ("Robbery050_x264", "ann.txt but not in"),
    ]
    for name, what in expected:
        assert any(name in p and what in p for p in err.value.problems), (name, what, text)
    assert len(err.value.problems) == len(expected)
    assert "unpickling runs arbitrary code" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ann.txt", "i3d", "test.list", "train.list"]


def test_pickled_file_is_refused_and_says_why(tmp_path):
    path = tmp_path / "v_i3d.npy"
    with open(path, "wb") as fp:
        pickle.dump([np.zeros((2, 10, D))], fp)
    shape, problems = importers.check_file(path, importers.RTFM, "float16")
    assert shape is None
    assert len(problems) == 1 and "pickled" in problems[0] and "arbitrary code" in problems[0]
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    assert importers.check_file(tmp_path / "junk.npy", importers.RTFM, "float16")[1] == [
        f"{tmp_path / 'junk.npy'}: not a .npy file"]


def test_wrong_layout_and_odd_shapes_are_named(tmp_path):
    root, _ = ucf_files(tmp_path)
    rng = np.random.default_rng(2)
    np.save(root / "Abuse001_x264_i3d.npy", rng.normal(size=(3, D)).astype(np.float32))   # [T, D]
    np.save(root / "Arson011_x264_i3d.npy", feats(rng, 7, crops=5))                       # 5 crops
    with pytest.raises(FeatureImportError) as err:
        run_ucf(tmp_path, root)
    assert err.value.problems == [
        f"{root / 'Abuse001_x264_i3d.npy'}: shape (3, {D}), expected [T, crops, D]",
        f"Arson011_x264: rgb clips of shape (crops, D) = (5, {D}), but the other videos have (10, {D})",
    ]


def test_float16_overflow_is_caught_before_writing(tmp_path):
    root, arrays = ucf_files(tmp_path)
    big = arrays["Abuse001_x264"].copy()
    big[0, 0, 0] = 1e5
    np.save(root / "Abuse001_x264_i3d.npy", big)
    with pytest.raises(FeatureImportError, match="beyond float16's range"):
        run_ucf(tmp_path, root)
    with FeatureBank.open(run_ucf(tmp_path, root, dtype="float32")) as bank:
        assert bank.features("Abuse001_x264")[0, 0, 0] == 1e5


def test_label_disagreement_and_train_test_overlap(tmp_path):
    root, _ = ucf_files(tmp_path)
    (tmp_path / "train.list").write_text("/x/Abuse001_x264_i3d.npy\n/x/Burglary002_x264_i3d.npy\n")
    text = (tmp_path / "ann.txt").read_text().replace("Normal_Videos_003_x264.mp4  Normal",
                                                      "Normal_Videos_003_x264.mp4  Abuse")
    (tmp_path / "ann.txt").write_text(text)
    with pytest.raises(FeatureImportError) as err:
        run_ucf(tmp_path, root)
    problems = err.value.problems
    assert any("Normal_Videos_003_x264: annotated as Abuse" in p for p in problems)
    assert "Burglary002_x264: listed in both the train and the test list" in problems


def test_cli_import_ucf(tmp_path, capsys):
    root, _ = ucf_files(tmp_path)
    parser = argparse.ArgumentParser()
    importer_cli.configure_parser(parser)
    argv = ["ucf", "--train-list", str(tmp_path / "train.list"), "--test-list", str(tmp_path / "test.list"),
            "--annotations", str(tmp_path / "ann.txt"), "--feature-root", str(root),
            "--out", str(tmp_path / "b.h5"), "--no-progress"]
    assert importer_cli.main(parser.parse_args(argv)) == 0
    with FeatureBank.open(tmp_path / "b.h5") as bank:
        assert len(bank.videos("test")) == 3 and bank.attrs["dtype"] == "float16"
    (root / "Abuse001_x264_i3d.npy").unlink()
    assert importer_cli.main(parser.parse_args(argv[:-3] + ["--out", str(tmp_path / "c.h5")])) == 1
    assert "Abuse001_x264_i3d.npy: missing file" in capsys.readouterr().out
    assert not (tmp_path / "c.h5").exists()


# ---------------------------------------------------------------------------------------
# XD-Violence


XD_TRAIN = {"Movie.A__#00-01_label_A": 4, "Movie.B__#00-02_label_B1-0-0": 3}
XD_TEST = {"v=abc__#1_label_G-B2-0": 5, "News__#2_label_A": 2}


def xd_files(tmp_path, rng=None, audio_gap=0):
    """Per-crop <video>__<k>.npy [T, D], <video>__vggish.npy [T, 128], lists, annotations.txt."""
    rng = rng or np.random.default_rng(3)
    root = tmp_path / "xd"
    root.mkdir()
    arrays = {}
    for split, videos in (("train", XD_TRAIN), ("test", XD_TEST)):
        rgb_lines, audio_lines = [], []
        for name, t in videos.items():
            crops = [rng.normal(size=(t, 6)).astype(np.float32) for _ in range(5)]
            audio = rng.normal(size=(t - audio_gap if "G-B2" in name else t, 128)).astype(np.float32)
            for k, c in enumerate(crops):
                np.save(root / f"{name}__{k}.npy", c)
                rgb_lines.append(f"/data/xd/{name}__{k}.npy\n")
            np.save(root / f"{name}__vggish.npy", audio)
            audio_lines.append(f"/data/xd/{name}__vggish.npy\n")
            arrays[name] = (np.stack(crops, axis=1), audio)
        (tmp_path / f"rgb_{split}.list").write_text("".join(rgb_lines))
        (tmp_path / f"audio_{split}.list").write_text("".join(audio_lines))
    (tmp_path / "annotations.txt").write_text("v=abc__#1_label_G-B2-0.mp4 3 20 40 90\n")
    return root, arrays


def run_xd(tmp_path, root, audio=True, **kw):
    extra = dict(audio_train_list=tmp_path / "audio_train.list",
                 audio_test_list=tmp_path / "audio_test.list") if audio else {}
    return import_xd(tmp_path / "rgb_train.list", tmp_path / "rgb_test.list", tmp_path / "annotations.txt",
                     tmp_path / "xd.h5", feature_root=root, progress=False, dtype="float32", **extra, **kw)


def test_xd_import_gives_crops_audio_and_fusion(tmp_path):
    root, arrays = xd_files(tmp_path)
    with FeatureBank.open(run_xd(tmp_path, root)) as bank:
        assert [(v.name, v.label, v.category, v.num_frames) for v in bank.videos("test")] == [
            ("v=abc__#1_label_G-B2-0", 1, "Explosion", 80), ("News__#2_label_A", 0, "Normal", 32)]
        assert [v.label for v in bank.videos("train")] == [0, 1]
        labels = bank.frame_labels("v=abc__#1_label_G-B2-0")
        want = np.zeros(80, np.uint8)
        want[3:20] = 1
        want[40:80] = 1  # [40, 90) clipped to the 5 clips' 80 frames
        np.testing.assert_array_equal(labels, want)
        assert bank.attrs["crops"] == 5 and bank.attrs["modalities"] == ["rgb", "audio"]
        fused = bank.load_split("test", modality="rgb+audio")
        rgb, audio = arrays["v=abc__#1_label_G-B2-0"]
        assert fused.features.shape == (7, 5, 6 + 128)
        np.testing.assert_array_equal(fused.features[:5, :, :6].numpy(), rgb)
        np.testing.assert_array_equal(fused.features[:5, 3, 6:].numpy(), audio)
        assert bank.load_split("train", modality="rgb").features.shape == (7, 5, 6)


def test_xd_without_audio(tmp_path):
    root, _ = xd_files(tmp_path)
    with FeatureBank.open(run_xd(tmp_path, root, audio=False)) as bank:
        assert bank.attrs["modalities"] == ["rgb"] and bank.attrs["feature_kind"] == "i3d"


def test_xd_audio_one_clip_short_is_recorded_two_is_refused(tmp_path):
    root, _ = xd_files(tmp_path, audio_gap=1)
    with FeatureBank.open(run_xd(tmp_path, root)) as bank:
        assert json.loads(bank.attrs["uneven_modalities"]) == {"v=abc__#1_label_G-B2-0": {"rgb": 5, "audio": 4}}
        assert bank.videos("test")[0].num_frames == 64
        assert bank.load_split("test", modality="rgb+audio").lengths.tolist() == [4, 2]
    (tmp_path / "xd.h5").unlink()
    (tmp_path / "gap2").mkdir()
    root2, _ = xd_files(tmp_path / "gap2", audio_gap=2)
    with pytest.raises(FeatureImportError, match=r"differ by more than 1 clip in length \{'rgb': 5, 'audio': 3\}"):
        run_xd(tmp_path / "gap2", root2)


def test_xd_list_and_annotation_mismatches(tmp_path):
    root, _ = xd_files(tmp_path)
    lines = (tmp_path / "rgb_test.list").read_text().splitlines(keepends=True)
    (tmp_path / "rgb_test.list").write_text("".join(l for l in lines if not l.endswith("News__#2_label_A__4.npy\n")))
    with open(tmp_path / "annotations.txt", "a") as fp:
        fp.write("Other__#9_label_B4-0-0 1 5\n")
    with open(tmp_path / "audio_train.list", "a") as fp:
        fp.write("/data/xd/Stray__#0_label_A__vggish.npy\n")
    with pytest.raises(FeatureImportError) as err:
        run_xd(tmp_path, root)
    problems = err.value.problems
    assert any(p.startswith("News__#2_label_A: crops ['0', '1', '2', '3']") for p in problems)
    assert any(p.startswith("Other__#9_label_B4-0-0: in") and "annotations.txt but" in p for p in problems)
    assert any(p.startswith("Stray__#0_label_A: in") and "audio_train.list but" in p for p in problems)
    assert any(p.startswith("News__#2_label_A: rgb clips of shape (crops, D) = (4, 6)") for p in problems)
    assert len(problems) == 4


# ---------------------------------------------------------------------------------------
# TAD


def test_tad_import_checks_clip_counts_and_clips_intervals(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "tad"
    root.mkdir()
    videos = {"01_Accident_001": 40, "Normal_001": 20, "01_Accident_020": 342, "Normal_008": 77}
    for name, frames in videos.items():
        np.save(root / f"{name}_i3d.npy", feats(rng, math.ceil(frames / 16)))
    (tmp_path / "train.txt").write_text("frames/abnormal/01_Accident_001.mp4 0 40 1\n"
                                        "frames/normal/Normal_001.mp4 0 20 0\n")
    (tmp_path / "test.txt").write_text("frames/abnormal/01_Accident_020.mp4 342 1 47 343\n"
                                       "frames/normal/Normal_008.mp4 77 0 0 77\n")
    out = import_tad(tmp_path / "train.txt", tmp_path / "test.txt", root, tmp_path / "tad.h5", progress=False)
    with FeatureBank.open(out) as bank:
        assert [(v.name, v.label, v.category, v.num_frames, v.num_clips) for v in bank.videos("test")] == [
            ("01_Accident_020", 1, "Accident", 342, 22), ("Normal_008", 0, "Normal", 77, 5)]
        assert [(v.label, v.num_frames) for v in bank.videos("train")] == [(1, 40), (0, 20)]
        np.testing.assert_array_equal(np.flatnonzero(bank.frame_labels("01_Accident_020")), np.arange(47, 342))
        assert not bank.frame_labels("Normal_008").any()
        assert list(json.loads(bank.attrs["clipped"])) == ["01_Accident_020"]
        assert bank.load_split("test").features.dtype == torch.float32
    np.save(root / "Normal_001_i3d.npy", feats(rng, 3))
    with pytest.raises(FeatureImportError) as err:
        import_tad(tmp_path / "train.txt", tmp_path / "test.txt", root, tmp_path / "tad2.h5", progress=False)
    assert err.value.problems == [
        "Normal_001: 3 clips but 20 frames need ceil(20/16) = 2 clips (16-frame clips, last one padded)"]
    assert not (tmp_path / "tad2.h5").exists()


# ---------------------------------------------------------------------------------------
# The real annotation files, as distributed, with small feature files written here

RESOURCES = Path(__file__).resolve().parents[1] / "cupl" / "data" / "resources"


def test_xd_import_accepts_the_real_annotation_file(tmp_path):
    """annotations.txt as distributed: 14 names with '.mp4' and 71 intervals past the last
    full clip (counted with awk on the file) are imported and noted, not refused."""
    real = RESOURCES / "xd-violence"
    root = tmp_path / "xd"
    root.mkdir()
    test = [line.split("\t") for line in (real / "test_videos.txt").read_text().splitlines()]
    train = (real / "train_videos.txt").read_text().split()[:4]
    for name, clips in test + [(n, 3) for n in train]:
        np.save(root / f"{name}__0.npy", np.ones((int(clips), 2), np.float32))
    (tmp_path / "train.list").write_text("".join(f"{n}__0.npy\n" for n in train))
    (tmp_path / "test.list").write_text("".join(f"{n}__0.npy\n" for n, _ in test))
    out = import_xd(tmp_path / "train.list", tmp_path / "test.list", real / "annotations.txt",
                    tmp_path / "xd.h5", feature_root=root, progress=False)
    with FeatureBank.open(out) as bank:
        videos = bank.videos("test")
        assert len(videos) == 800 and sum(v.label for v in videos) == 500
        assert [v.num_frames for v in videos] == [16 * int(c) for _, c in test]
        clipped = json.loads(bank.attrs["clipped"])
        assert len(clipped) == 71 and all(len(notes) == 1 for notes in clipped.values())
        notes = json.loads(bank.attrs["annotation_notes"])[str(real / "annotations.txt")]
        assert len(notes) == 14 and all("carries '.mp4'" in n for n in notes)
        # annotated [10, 1848) in a video of 115 clips = 1840 frames
        black_hawk = "Black.Hawk.Down.2001__#02-00-12_02-01-29_label_B2-0-0"
        np.testing.assert_array_equal(np.flatnonzero(bank.frame_labels(black_hawk)), np.arange(10, 1840))
        assert clipped[black_hawk] == [f"{black_hawk}: interval [10, 1848) ends beyond its 1840 frames; "
                                       "clipped to [10, 1840)"]
        # written 'v=U6MC8JJJZSY__#1_label_G-0-0.mp4 150 779'
        np.testing.assert_array_equal(np.flatnonzero(bank.frame_labels("v=U6MC8JJJZSY__#1_label_G-0-0")),
                                      np.arange(150, 779))


def test_tad_import_accepts_the_real_label_files(tmp_path):
    """TAD_test.txt as distributed: 40 normal videos with a dummy '0 num_frames' interval and
    22 intervals ending at num_frames + 1 (counted with awk) are imported and noted."""
    real = RESOURCES / "tad"
    root = tmp_path / "tad"
    root.mkdir()
    rows = [line.split() for name in ("TAD_train.txt", "TAD_test.txt")
            for line in (real / name).read_text().splitlines()]
    for row in rows:
        frames = int(row[2] if row[1] == "0" and len(row) == 4 else row[1])
        name = row[0].rsplit("/", 1)[1][:-4]
        np.save(root / f"{name}_i3d.npy", np.ones((math.ceil(frames / 16), 1, 2), np.float32))
    out = import_tad(real / "TAD_train.txt", real / "TAD_test.txt", root, tmp_path / "tad.h5", progress=False)
    with FeatureBank.open(out) as bank:
        test = bank.videos("test")
        assert (len(bank.videos("train")), len(test), sum(v.label for v in test)) == (400, 100, 60)
        assert all(not bank.frame_labels(v.name).any() for v in test if not v.label)
        assert len(json.loads(bank.attrs["clipped"])) == 22
        notes = json.loads(bank.attrs["annotation_notes"])
        assert notes[str(real / "TAD_train.txt")] == []
        assert sum("read as no interval" in n for n in notes[str(real / "TAD_test.txt")]) == 40
        assert sum("ends beyond" in n for n in notes[str(real / "TAD_test.txt")]) == 22
        # 'frames/abnormal/01_Accident_014.mp4 243 1 86 244'
        np.testing.assert_array_equal(np.flatnonzero(bank.frame_labels("01_Accident_014")), np.arange(86, 243))
        # 'frames/normal/Normal_241.mp4 300 0 0 300'
        assert bank.frame_labels("Normal_241").shape == (300,) and not bank.frame_labels("Normal_241").any()
