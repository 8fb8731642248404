"""The HDF5 feature bank: layout, round trip, the split fast path, atomic writes and named errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from cupl.data.bank import BANK_FORMAT, BANK_VERSION, BankError, FeatureBank, VideoData, write_bank
from cupl.data.split import Split

ATTRS = dict(source="hand-made test videos", feature_kind="random", frames_per_clip=16, crops=2,
             modalities=["rgb"])


def make_video(name, split="train", clips=5, *, crops=2, dim=8, label=1, seed=0, audio_clips=None,
               oracle=False):
    """A video of random non-negative features; test videos get a frame mask, training
    videos optionally an oracle."""
    rng = np.random.default_rng(seed)
    num_frames = clips * 16 - 3
    features = {"rgb": rng.gamma(1.0, 1.0, (clips, crops, dim)).astype(np.float32)}
    if audio_clips is not None:
        features["audio"] = rng.normal(size=(audio_clips, 1, 128)).astype(np.float32)
    frame_labels = None
    if split == "test":
        frame_labels = np.zeros(num_frames, np.uint8)
        frame_labels[10:30] = label
    return VideoData(name=name, split=split, label=label, category="Arson" if label else "Normal",
                     num_frames=num_frames, features=features, frame_labels=frame_labels,
                     oracle_clip_labels=rng.uniform(0, 1, clips).astype(np.float32) if oracle else None)


def videos_fixture():
    return [make_video("A1", clips=5, seed=1, oracle=True),
            make_video("N1", clips=70, label=0, seed=2, oracle=True),
            make_video("A2", "test", clips=3, seed=3),
            make_video("N2", "test", clips=4, label=0, seed=4)]


@pytest.fixture
def bank_path(tmp_path):
    return write_bank(tmp_path / "b.h5", videos_fixture(), attrs=dict(ATTRS, preset="toy", seed=3,
                      notes={"why": "test"}), progress=False)


def test_layout_and_attributes(bank_path):
    with h5py.File(bank_path, "r") as f:
        assert f.attrs["format"] == BANK_FORMAT and f.attrs["version"] == BANK_VERSION == 1
        assert f.attrs["source"] == "hand-made test videos" and f.attrs["frames_per_clip"] == 16
        assert f.attrs["crops"] == 2 and list(f.attrs["modalities"]) == ["rgb"]
        assert f.attrs["dim_rgb"] == 8 and f.attrs["dtype"] == "float16"
        assert json.loads(f.attrs["notes"]) == {"why": "test"}
        rgb = f["train/N1/rgb"]
        assert rgb.shape == (70, 2, 8) and rgb.dtype == np.float16
        assert rgb.fletcher32 and rgb.compression is None
        assert rgb.chunks == (70, 2, 8)   # 256 KiB chunks: a short video is one chunk
        assert all(f[k].fletcher32 for k in ("test/A2/frame_labels", "train/A1/oracle_clip_labels",
                                             "index/train/names", "index/train/clips_rgb"))
        assert dict(f["train/A1"].attrs) == {"label": 1, "category": "Arson", "num_frames": 77}
        assert f["test/A2/frame_labels"].dtype == np.uint8 and f["test/A2/frame_labels"].shape == (45,)
        assert f["train/A1/oracle_clip_labels"].dtype == np.float32
        assert "frame_labels" not in f["train/A1"] and "oracle_clip_labels" not in f["test/A2"]
        assert list(f["index/train/names"].asstr()[()]) == ["A1", "N1"]
        assert list(f["index/test/labels"][()]) == [1, 0]
        assert list(f["index/test/clips_rgb"][()]) == [3, 4]
    with FeatureBank.open(bank_path) as bank:
        assert bank.attrs["preset"] == "toy" and bank.attrs["seed"] == 3
        assert bank.attrs["modalities"] == ["rgb"]


def test_chunks_hold_about_chunk_bytes_of_whole_clips(tmp_path, monkeypatch):
    monkeypatch.setattr("cupl.data.bank.CHUNK_BYTES", 20 * 2 * 8 * 2)   # 20 clips of 2 x 8 float16
    path = write_bank(tmp_path / "b.h5", videos_fixture(), attrs=ATTRS, progress=False)
    with h5py.File(path, "r") as f:
        assert f["train/N1/rgb"].chunks == (20, 2, 8) and f["train/A1/rgb"].chunks == (5, 2, 8)


def test_compressed_and_unchecked_banks_read_the_same(bank_path, tmp_path):
    lzf = write_bank(tmp_path / "lzf.h5", videos_fixture(), attrs=ATTRS, compression="lzf", progress=False)
    plain = write_bank(tmp_path / "plain.h5", videos_fixture(), attrs=ATTRS, checksum=False, progress=False)
    with h5py.File(lzf, "r") as f:
        assert f["train/N1/rgb"].compression == "lzf" and f["train/N1/rgb"].fletcher32
    with h5py.File(plain, "r") as f:   # the layout of banks written before checksums
        assert f["train/N1/rgb"].chunks is None and not f["train/N1/rgb"].fletcher32
    with FeatureBank.open(bank_path) as checked:
        expected = checked.load_split("train").features
    for path in (lzf, plain):
        with FeatureBank.open(path) as bank:
            assert torch.equal(bank.load_split("train").features, expected)


def test_round_trip_per_video(bank_path):
    written = {v.name: v for v in videos_fixture()}
    with FeatureBank.open(bank_path) as bank:
        records = bank.videos("train") + bank.videos("test")
        assert [(r.name, r.label, r.category, r.num_frames, r.num_clips) for r in records] == [
            ("A1", 1, "Arson", 77, 5), ("N1", 0, "Normal", 1117, 70),
            ("A2", 1, "Arson", 45, 3), ("N2", 0, "Normal", 61, 4)]
        for name, v in written.items():
            got = bank.features(name)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, v.features["rgb"].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(bank.frame_labels("A2"), written["A2"].frame_labels)
        assert bank.frame_labels("A2").sum() == 20
        np.testing.assert_array_equal(bank.oracle_clip_labels("N1"), written["N1"].oracle_clip_labels)


def test_float32_storage_is_exact(tmp_path):
    videos = videos_fixture()
    path = write_bank(tmp_path / "b32.h5", videos, attrs=ATTRS, dtype="float32", progress=False)
    with FeatureBank.open(path) as bank:
        np.testing.assert_array_equal(bank.features("N1"), videos[1].features["rgb"])


# 1 byte: every run of the reader holds one clip, so videos are read in pieces across runs;
# 600 bytes: runs of 18 clips of 2 x 8 float16, holding several short videos or part of a long
# one; the default reads these splits in one run
@pytest.fixture(params=[1, 600, None], ids=["one clip a run", "18 clips a run", "one run"])
def read_chunk(request, monkeypatch):
    if request.param is not None:
        monkeypatch.setattr("cupl.data.bank.READ_CHUNK_BYTES", request.param)
    return request.param


def test_load_split_concatenates_in_list_order(bank_path, read_chunk):
    written = videos_fixture()
    with FeatureBank.open(bank_path) as bank:
        train = bank.load_split("train")
        test = bank.load_split("test", dtype=torch.float64)
        oracle = bank.oracle_split_labels("train")
    assert isinstance(train, Split)
    expected = np.concatenate([v.features["rgb"] for v in written[:2]]).astype(np.float16).astype(np.float32)
    assert train.features.dtype == torch.float32 and train.features.shape == (75, 2, 8)
    np.testing.assert_array_equal(train.features.numpy(), expected)
    assert train.offsets.tolist() == [0, 5, 75]
    assert train.labels.tolist() == [1, 0] and train.names == ["A1", "N1"]
    assert train.categories == ["Arson", "Normal"] and train.num_frames.tolist() == [77, 1117]
    assert train.frame_labels is None and train.frames_per_clip == 16
    assert test.features.dtype == torch.float64 and test.offsets.tolist() == [0, 3, 7]
    np.testing.assert_array_equal(test.frame_labels[1], written[3].frame_labels)
    np.testing.assert_array_equal(oracle.numpy(), np.concatenate([written[0].oracle_clip_labels,
                                                                 written[1].oracle_clip_labels]))


def test_audio_fusion_keeps_the_common_prefix(tmp_path, read_chunk):
    videos = [make_video("A1", clips=5, seed=1, audio_clips=5, oracle=True),
              make_video("N1", clips=6, label=0, seed=2, audio_clips=4, oracle=True),
              make_video("A2", "test", clips=3, seed=3, audio_clips=3)]
    attrs = dict(ATTRS, modalities=["rgb", "audio"])
    path = write_bank(tmp_path / "av.h5", videos, attrs=attrs, dtype="float32", progress=False)
    with FeatureBank.open(path) as bank:
        audio = bank.load_split("train", modality="audio")
        fused = bank.load_split("train", modality="rgb+audio")
        oracle = bank.oracle_split_labels("train", modality="rgb+audio")
        assert bank.features("N1", "audio").shape == (4, 1, 128)
    assert audio.features.shape == (9, 1, 128) and audio.offsets.tolist() == [0, 5, 9]
    assert fused.features.shape == (9, 2, 8 + 128) and fused.offsets.tolist() == [0, 5, 9]
    n1_rgb, n1_audio = videos[1].features["rgb"][:4], videos[1].features["audio"]
    for crop in range(2):   # audio repeated on every crop, after the crop's rgb
        np.testing.assert_array_equal(fused.features[5:9, crop, :8].numpy(), n1_rgb[:, crop])
        np.testing.assert_array_equal(fused.features[5:9, crop, 8:].numpy(), n1_audio[:, 0])
    np.testing.assert_array_equal(oracle[5:].numpy(), videos[1].oracle_clip_labels[:4])


def test_oracle_is_kept_apart_from_training_data(bank_path, tmp_path):
    assert not any("oracle" in f.name for f in dataclasses.fields(Split))
    with FeatureBank.open(bank_path) as bank:
        split = bank.load_split("train")
        assert not any("oracle" in key for key in vars(split))
        with pytest.raises(BankError, match="A2.*oracle"):
            bank.oracle_clip_labels("A2")
        with pytest.raises(BankError, match="oracle"):
            bank.oracle_split_labels("test")
        with pytest.raises(BankError, match="frame labels"):
            bank.frame_labels("A1")
    real = [make_video("A1"), make_video("A2", "test")]   # an imported bank: no oracle at all
    path = write_bank(tmp_path / "real.h5", real, attrs=ATTRS, progress=False)
    with FeatureBank.open(path) as bank:
        with pytest.raises(BankError, match="real.h5.*A1.*oracle"):
            bank.oracle_clip_labels("A1")
        with pytest.raises(BankError):
            bank.oracle_split_labels("train")


def test_unknown_names_splits_and_modalities_are_named(bank_path):
    with FeatureBank.open(bank_path) as bank:
        with pytest.raises(BankError, match="b.h5.*'nope'"):
            bank.features("nope")
        with pytest.raises(BankError, match="'val'"):
            bank.videos("val")
        with pytest.raises(BankError, match="audio"):
            bank.load_split("train", modality="audio")
        with pytest.raises(BankError, match="'flow'"):
            bank.load_split("train", modality="flow")


def test_interrupted_write_leaves_nothing(tmp_path):
    def interrupted():
        yield make_video("A1")
        yield make_video("A2")
        raise KeyboardInterrupt

    path = tmp_path / "bank.h5"
    with pytest.raises(KeyboardInterrupt):
        write_bank(path, interrupted(), attrs=ATTRS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_old_bank(bank_path):
    before = bank_path.read_bytes()

    def failing():
        yield make_video("X1")
        raise RuntimeError("extractor crashed")

    with pytest.raises(RuntimeError, match="extractor crashed"):
        write_bank(bank_path, failing(), attrs=ATTRS, progress=False, overwrite=True)
    assert bank_path.read_bytes() == before
    assert sorted(p.name for p in bank_path.parent.iterdir()) == ["b.h5"]


def _nan(v):
    v.features["rgb"][1, 0, 3] = np.nan


def _inf_as_float16(v):
    v.features["rgb"][0, 0, 0] = 1e6   # finite in float32, inf once stored as float16


def _two_dims(v):
    v.features["rgb"] = v.features["rgb"][:, 0]


def _empty(v):
    v.features["rgb"] = v.features["rgb"][:0]


def _short_mask(v):
    v.frame_labels = v.frame_labels[:-1]


def _no_mask(v):
    v.frame_labels = None


def _wrong_crops(v):
    v.features["rgb"] = np.concatenate([v.features["rgb"]] * 2, axis=1)


def _integer_features(v):
    v.features["rgb"] = v.features["rgb"].astype(np.int32)


def _oracle_on_test(v):
    v.oracle_clip_labels = np.zeros(3, np.float32)


@pytest.mark.parametrize("spoil, message", [
    (_nan, "NaN"), (_inf_as_float16, "NaN/inf values as float16"), (_two_dims, r"expected \[T, 2, D\]"),
    (_empty, "empty"), (_short_mask, r"expected shape \(45,\) = num_frames"), (_no_mask, "need frame_labels"),
    (_wrong_crops, "expected 2 crops"), (_integer_features, "float"), (_oracle_on_test, "training videos only"),
])
def test_bad_videos_are_named(tmp_path, spoil, message):
    bad = make_video("Bad7", "test", clips=3)
    spoil(bad)
    path = tmp_path / "b.h5"
    with pytest.raises(BankError, match=rf"b\.h5: video 'Bad7': .*{message}"):
        write_bank(path, [make_video("A1"), bad], attrs=ATTRS, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_duplicate_names_are_named_even_across_splits(tmp_path):
    with pytest.raises(BankError, match="video 'A1': duplicate"):
        write_bank(tmp_path / "b.h5", [make_video("A1"), make_video("A1", "test")], attrs=ATTRS,
                   progress=False)
    assert list(tmp_path.iterdir()) == []


def test_feature_dim_must_agree_between_videos(tmp_path):
    with pytest.raises(BankError, match=r"video 'A2': rgb features: expected D = 8"):
        write_bank(tmp_path / "b.h5", [make_video("A1"), make_video("A2", dim=9)], attrs=ATTRS,
                   progress=False)


def test_missing_bank_attributes_are_named(tmp_path):
    attrs = {k: v for k, v in ATTRS.items() if k != "feature_kind"}
    with pytest.raises(BankError, match="b.h5: bank attributes missing \\['feature_kind'\\]"):
        write_bank(tmp_path / "b.h5", [make_video("A1")], attrs=attrs, progress=False)


def test_missing_truncated_and_corrupted_files(bank_path, tmp_path):
    with pytest.raises(BankError, match="absent.h5: no such"):
        FeatureBank.open(tmp_path / "absent.h5")
    data = bank_path.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BankError, match="truncated.h5: not a readable HDF5 file"):
        FeatureBank.open(truncated)
    corrupted = tmp_path / "corrupted.h5"
    corrupted.write_bytes(b"\0" * 512 + data[512:])
    with pytest.raises(BankError, match="corrupted.h5: not a readable HDF5 file"):
        FeatureBank.open(corrupted)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("Abuse028_x264.mp4 Abuse 165 240 -1 -1 1412\n")
    with pytest.raises(BankError, match="notes.h5: not a readable HDF5 file"):
        FeatureBank.open(text)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["Abuse028_x264"] = np.zeros((3, 10, 2048), np.float32)
    with pytest.raises(BankError, match="plain.h5: not a cupl feature bank"):
        FeatureBank.open(plain)


def test_wrong_version_and_incomplete_banks(bank_path, tmp_path):
    newer = tmp_path / "newer.h5"
    shutil.copy(bank_path, newer)
    with h5py.File(newer, "r+") as f:
        f.attrs["version"] = 2
    with pytest.raises(BankError, match="newer.h5: feature bank version 2; this cupl reads version 1"):
        FeatureBank.open(newer)
    partial = tmp_path / "partial.h5"
    shutil.copy(bank_path, partial)
    with h5py.File(partial, "r+") as f:
        del f["index/test"]
    with pytest.raises(BankError, match="partial.h5: incomplete feature bank"):
        FeatureBank.open(partial)


def test_read_runs_are_planned_in_full_buffers():
    """Worked by hand: videos of 3, 0, 7 and 2 clips through a 4-row buffer."""
    from cupl.data.bank import _plan_runs

    assert _plan_runs(["a", "b", "c", "d"], np.array([3, 0, 7, 2]), 4) == [
        (0, 4, [("a", 0, 3, 0), ("c", 0, 1, 3)], 1),
        (4, 8, [("c", 1, 5, 0)], 0),
        (8, 12, [("c", 5, 7, 0), ("d", 0, 2, 2)], 2),
    ]
    assert _plan_runs(["a"], np.array([4]), 4) == [(0, 4, [("a", 0, 4, 0)], 1)]
    assert _plan_runs(["a"], np.array([0]), 4) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_split_tensor_is_a_plain_writable_tensor(dtype):
    from cupl.data.bank import split_tensor

    x = split_tensor((3, 2, 5), dtype, "cpu")
    assert x.shape == (3, 2, 5) and x.dtype == dtype and x.is_contiguous() and x.device.type == "cpu"
    x[:] = torch.arange(30, dtype=torch.float32).view(3, 2, 5).to(dtype)
    assert x[2, 1, 4].item() == 29 and x.double().sum().item() == 435
    assert split_tensor((0, 2, 5), dtype, "cpu").shape == (0, 2, 5)
