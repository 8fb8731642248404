"""Fault injection: what a bank writer and reader, runs, caches, the book and configuration
values meet in real use — a killed writer, damaged bytes, a full disk, a read-only folder, two
writers at once, an existing output, edited or truncated cache entries, a killed chain, bad values.

Each test asserts a named error, no partial output that looks complete, and, after recovery,
the same bank or result as a clean write or run. Processes that must die run as subprocesses.
"""

from __future__ import annotations

import argparse
import errno
import fractions
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from cupl import cli
from cupl import experiments as ex
from cupl.book import runner as book
from cupl.cli import book as book_cli
from cupl.cli import main as cli_main
from cupl.config import RANGES, ConfigError, check_value, field_types, from_dict, make_config, to_dict
from cupl.data.bank import BankError, FeatureBank, VideoData, write_bank
from cupl.experiments import cache as cache_module
from cupl.experiments.checkpoint import CheckpointError, evaluate_checkpoint, load_checkpoint, save_checkpoint
from cupl.experiments.train import run
from cupl.files import NoSpaceError, OutputExistsError, OutputNotWritableError, temporary_path
from cupl.method.models import ClipClassifier
from test_experiments import TINY, toy_bank
from toy import toy_split

REPO = Path(__file__).resolve().parents[1]
ATTRS = dict(source="fault tests", feature_kind="random", frames_per_clip=16, crops=4, modalities=["rgb"])
VIDEO_BYTES = 100 * 4 * 256 * 2   # float16 features of one video: 12 of them overfill 2 MiB


def videos(seed=0, count=12, clips=100):
    """Alternating training and test videos of random features; seed tells writers apart."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        split, label = ("train", "test")[i % 2], int(i % 4 < 2)
        frame_labels = (np.arange(clips * 16) < 100).astype(np.uint8) * label if split == "test" else None
        yield VideoData(f"V{i:02d}", split, label, "Arson" if label else "Normal", clips * 16,
                        {"rgb": rng.gamma(1.0, 1.0, (clips, 4, 256)).astype(np.float32)}, frame_labels)


class Watched:
    """videos(), remembering whether anyone asked for one: refusals come before any work."""

    def __init__(self, seed=0):
        self.started, self.seed = False, seed

    def __iter__(self):
        self.started = True
        yield from videos(self.seed)


def contents(path) -> dict:
    with FeatureBank.open(path) as bank:
        out = {"attrs": bank.attrs}
        for split in ("train", "test"):
            s = bank.load_split(split)
            out[split] = (s.features.numpy(), s.names, s.labels.tolist(), s.frame_labels)
    return out


def assert_same(a, b):
    assert a["attrs"] == b["attrs"]
    for split in ("train", "test"):
        np.testing.assert_array_equal(a[split][0], b[split][0])
        assert a[split][1:3] == b[split][1:3]
    for x, y in zip(a["test"][3], b["test"][3]):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def clean_banks(tmp_path_factory) -> dict:
    """The banks of writers 0, 1 and 2 written without faults."""
    folder = tmp_path_factory.mktemp("clean")
    return {seed: contents(write_bank(folder / f"{seed}.h5", videos(seed), attrs=ATTRS, progress=False))
            for seed in (0, 1, 2)}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- processes


def child_write(path, seed, overwrite="0", pause="0", ready="", go=""):
    """Run in a subprocess: write bank `seed` to `path`; with `ready`, touch it after three
    videos and hang (to be killed); with `go`, start only once that file exists."""
    while go and not Path(go).exists():
        time.sleep(0.01)

    def paced():
        for i, video in enumerate(videos(int(seed))):
            yield video
            if ready and i == 2:
                Path(ready).touch()
                time.sleep(120)
            time.sleep(float(pause))

    write_bank(path, paced(), attrs=ATTRS, progress=False, overwrite=overwrite == "1")


def child_fill_disk(path):
    """Run in a subprocess: write a bank that the disk cannot hold, blind to the free space so
    that HDF5 itself meets ENOSPC; prints what the command line would print."""
    import cupl.files

    cupl.files.free_bytes = lambda folder: 2**50
    try:
        write_bank(path, videos(), attrs=ATTRS, progress=False)
    except cupl.files.OutputError as err:
        print(err, file=sys.stderr)
        sys.exit(1)


def spawn(function: str, *args) -> subprocess.Popen:
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from test_faults import {function}; {function}(*sys.argv[1:])")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, child: subprocess.Popen, seconds=60):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# --------------------------------------------------------------------------- killed writer


def test_killed_writer_leaves_nothing_and_the_next_write_cleans_up(tmp_path, clean_banks):
    out, ready = tmp_path / "bank" / "b.h5", tmp_path / "ready"
    child = spawn("child_write", out, 0, "0", "0", ready)
    wait_for(ready, child)
    child.send_signal(signal.SIGKILL)
    child.wait()
    [stale] = leftovers(out.parent)
    assert stale.startswith(".b.h5.") and stale.endswith(".tmp") and not out.exists()
    assert f".{child.pid}-" in stale   # the writer's pid in the name tells it is gone

    live = subprocess.Popen(["sleep", "60"])   # a writer still running keeps its temporary
    try:
        kept = out.with_name(temporary_path(out).name.replace(f".{os.getpid()}-", f".{live.pid}-"))
        kept.write_bytes(b"being written")
        write_bank(out, videos(0), attrs=ATTRS, progress=False)
        assert leftovers(out.parent) == sorted(["b.h5", kept.name])
    finally:
        live.kill()
        live.wait()
    assert_same(contents(out), clean_banks[0])


# --------------------------------------------------------------------------- damaged bytes


def stored_span(path, dataset) -> tuple[int, int]:
    """File offset and size of a dataset's first stored chunk (its whole data if contiguous)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        if ds.chunks is None:
            return ds.id.get_offset(), ds.id.get_storage_size()
        info = ds.id.get_chunk_info(0)
        return info.byte_offset, info.size


def damage(path, dataset, how):
    offset, size = stored_span(path, dataset)
    with open(path, "r+b") as f:
        f.seek(offset + size // 2)
        old = f.read(64)
        f.seek(offset + size // 2)
        f.write(bytes(64) if how == "zeroed" else bytes([old[0] ^ 0x10]) + old[1:])


@pytest.mark.parametrize("how", ["zeroed", "one bit flipped"])
def test_damaged_features_are_named(tmp_path, clean_banks, how):
    path = write_bank(tmp_path / "b.h5", videos(0), attrs=ATTRS, progress=False)
    damage(path, "train/V04/rgb", how)
    with FeatureBank.open(path) as bank:
        with pytest.raises(BankError, match=r"b\.h5: video 'V04': dataset 'rgb' is damaged"):
            bank.load_split("train")
        with pytest.raises(BankError, match=r"b\.h5: video 'V04': dataset 'rgb' is damaged"):
            bank.features("V04")
        np.testing.assert_array_equal(bank.load_split("test").features.numpy(), clean_banks[0]["test"][0])
    write_bank(path, videos(0), attrs=ATTRS, progress=False, overwrite=True)
    assert_same(contents(path), clean_banks[0])


def test_damaged_labels_and_index_are_named(tmp_path):
    path = write_bank(tmp_path / "b.h5", videos(0), attrs=ATTRS, progress=False)
    damage(path, "test/V01/frame_labels", "one bit flipped")
    with FeatureBank.open(path) as bank:
        with pytest.raises(BankError, match=r"b\.h5: video 'V01': dataset 'frame_labels' is damaged"):
            bank.load_split("test")
    path = write_bank(tmp_path / "c.h5", videos(0), attrs=ATTRS, progress=False)
    damage(path, "index/train/clips_rgb", "zeroed")
    with pytest.raises(BankError, match=r"c\.h5: damaged index of split 'train'"):
        FeatureBank.open(path)


def test_banks_without_checksums_still_read(tmp_path, clean_banks):
    """Banks written before checksums (contiguous, unfiltered) read as before, and so their
    damage goes unseen: what the checksums are for."""
    path = write_bank(tmp_path / "old.h5", videos(0), attrs=ATTRS, progress=False, checksum=False)
    assert_same(contents(path), clean_banks[0])
    damage(path, "train/V04/rgb", "zeroed")
    assert not np.array_equal(contents(path)["train"][0], clean_banks[0]["train"][0])


# --------------------------------------------------------------------------- full disk


def mount_tmpfs(folder: Path, options: str):
    if os.geteuid() != 0:
        pytest.skip("a small file system is simulated by mounting a tmpfs, which needs root")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "size=2m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_known_size_beyond_the_free_space_is_refused_before_work(small_disk):
    source, out = Watched(), small_disk / "b.h5"
    with pytest.raises(NoSpaceError) as err:
        write_bank(out, source, attrs=ATTRS, progress=False, nbytes=12 * VIDEO_BYTES)
    message = str(err.value)
    assert message.startswith(f"{out}: not enough free space") and "2,457,600 bytes" in message
    assert "\n" not in message and not source.started and leftovers(small_disk) == []


def test_full_disk_is_one_named_line_and_leaves_nothing(small_disk, clean_banks):
    out = small_disk / "b.h5"
    with pytest.raises(NoSpaceError, match=rf"{out}: not enough free space .*needs [\d,]+ bytes .* for video 'V\d+' "
                                           r"\(about [\d,]+ bytes for the whole bank\)") as err:
        write_bank(out, videos(0), attrs=ATTRS, progress=False, total=12)
    assert "\n" not in str(err.value) and leftovers(small_disk) == []
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    write_bank(out, videos(0), attrs=ATTRS, progress=False)
    assert_same(contents(out), clean_banks[0])
    assert leftovers(small_disk) == ["b.h5"]


def test_disk_filling_during_the_write_is_no_crash(small_disk):
    """HDF5 itself meets ENOSPC (the free-space checks blinded): one line, no core dump, no
    HDF5 messages, nothing left."""
    out = small_disk / "b.h5"
    child = spawn("child_fill_disk", out)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 1, stderr
    assert stderr.splitlines() == [stderr.strip()], stderr
    assert stderr.startswith(f"{out}: not enough free space") and "needs" in stderr and "bytes" in stderr
    assert leftovers(small_disk) == []


# --------------------------------------------------------------------------- folders and outputs


def test_read_only_folder_is_named_before_work(tmp_path):
    folder = tmp_path / "ro"
    if os.geteuid() == 0:   # root writes through permissions; a read-only mount stops it
        mount_tmpfs(folder, "ro,size=1m")
    else:
        folder.mkdir()
        folder.chmod(0o555)
    source, out = Watched(), folder / "b.h5"
    try:
        with pytest.raises(OutputNotWritableError, match=rf"{out}: cannot write to the folder {folder}"):
            write_bank(out, source, attrs=ATTRS, progress=False)
        assert not source.started and leftovers(folder) == []
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)
        else:
            folder.chmod(0o755)


def test_existing_banks_are_replaced_only_when_asked(tmp_path, clean_banks, capsys):
    out = write_bank(tmp_path / "b.h5", videos(0), attrs=ATTRS, progress=False)
    before = out.read_bytes()
    source = Watched(1)
    with pytest.raises(OutputExistsError, match=rf"{out} exists; pass overwrite"):
        write_bank(out, source, attrs=ATTRS, progress=False)
    assert not source.started and out.read_bytes() == before

    # the command line: one line naming the file, before generating anything
    assert cli.main(["synth", "--out", str(out), "--profile", "quick", "--no-progress"]) == 1
    assert capsys.readouterr().err == f"cupl synth: {out} exists; pass overwrite (--overwrite) to replace it\n"
    assert out.read_bytes() == before

    out.chmod(0o444)
    with pytest.raises(OutputNotWritableError, match=rf"{out} is write-protected"):
        write_bank(out, source, attrs=ATTRS, progress=False, overwrite=True)
    assert not source.started and out.read_bytes() == before
    out.chmod(0o644)

    write_bank(out, source, attrs=ATTRS, progress=False, overwrite=True)
    assert_same(contents(out), clean_banks[1])
    assert leftovers(tmp_path) == ["b.h5"]


def test_two_writers_at_once_give_one_whole_bank(tmp_path, clean_banks):
    """Writers 1 and 2 start together on one path, without and with overwrite (four
    processes at once): either both finish or one is refused, and the bank is one writer's
    whole bank, never a mix."""
    go = tmp_path / "go"
    outs = {overwrite: tmp_path / str(overwrite) / "b.h5" for overwrite in (False, True)}
    children = {overwrite: [spawn("child_write", out, seed, int(overwrite), "0.01", "", go) for seed in (1, 2)]
                for overwrite, out in outs.items()}
    go.touch()
    for overwrite, out in outs.items():
        results = [(c.wait(timeout=120), c.communicate()[1]) for c in children[overwrite]]
        codes = [code for code, _ in results]
        if overwrite:
            assert codes == [0, 0], results
        else:   # the second to finish is refused, up front or when it would replace the first
            assert sorted(codes) == [0, 1], results
            assert f"OutputExistsError: {out}" in next(err for code, err in results if code)
        got = contents(out)
        [seed] = [seed for seed in (1, 2) if np.array_equal(got["train"][0], clean_banks[seed]["train"][0])]
        if not overwrite:
            assert codes[seed - 1] == 0   # the bank is the one of the writer that succeeded
        assert_same(got, clean_banks[seed])
        assert leftovers(out.parent) == ["b.h5"]


def test_a_file_can_be_dropped_from_the_page_cache(tmp_path):
    from cupl.files import drop_from_page_cache

    path = tmp_path / "x.bin"
    path.write_bytes(b"\0" * 4096)
    assert drop_from_page_cache(path) is hasattr(os, "posix_fadvise")
    assert path.read_bytes() == b"\0" * 4096  # the file itself is untouched


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    return toy_bank(tmp_path_factory.mktemp("bank") / "toy.h5")


@pytest.fixture(scope="module")
def clean(bank, tmp_path_factory):
    """A cache filled by one clean run of seed 0, and that run's results (keep=True)."""
    cache = tmp_path_factory.mktemp("clean") / "cache"
    runs, history, _ = ex.run_seeds(ex.load_data(bank, cache=cache), [0], profile="smoke", keep=True,
                                    workers=1, **TINY)
    return cache, runs.drop(columns="seconds"), history


def copy_cache(clean_cache: Path, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache)
    return cache


def entry(cache: Path, kind: str) -> Path:
    (path,) = cache.glob(f"{kind}-*")
    return path


def edit_auc(path: Path) -> None:
    """A hand edit of the stored AUC: the JSON stays valid, the header is kept."""
    header, _, payload = path.read_bytes().partition(b"\n")
    saved = json.loads(payload)
    saved["metrics"]["auc"] = 0.999
    path.write_bytes(header + b"\n" + json.dumps(saved).encode())


def zero_bytes(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(blob))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble(path: Path) -> None:
    path.write_bytes(b"\x80\x04not json, not a model" * 3)


# ---------------------------------------------------------------- 1. damaged cache entries


@pytest.mark.parametrize("damage", [edit_auc, truncate, garble], ids=lambda f: f.__name__)
def test_damaged_run_record_is_named_removed_and_made_again(clean, bank, tmp_path, damage):
    clean_cache, clean_runs, clean_history = clean
    cache = copy_cache(clean_cache, tmp_path)
    record = entry(cache, "run")
    damage(record)
    with pytest.warns(cache_module.CacheWarning, match=record.name):
        runs, history = ex.run_seeds(ex.load_data(bank, cache=cache), [0], profile="smoke", workers=1, **TINY)
    pd.testing.assert_frame_equal(runs.drop(columns="seconds"), clean_runs)
    pd.testing.assert_frame_equal(history, clean_history)
    # the record was written again, whole: a fresh read takes it without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache_module.CacheWarning)
        again, _ = ex.run_seeds(ex.load_data(bank, cache=cache), [0], profile="smoke", workers=1, **TINY)
    assert again["auc"].tolist() == clean_runs["auc"].tolist()


@pytest.mark.parametrize("damage", [zero_bytes, truncate, garble], ids=lambda f: f.__name__)
def test_damaged_stage1_model_is_named_removed_and_trained_again(clean, bank, tmp_path, damage):
    clean_cache, clean_runs, clean_history = clean
    cache = copy_cache(clean_cache, tmp_path)
    model = entry(cache, "f_g")
    damage(model)
    with pytest.warns(cache_module.CacheWarning, match=model.name):
        # keep=True reads the stage-1 model from the cache (not the run record)
        runs, history, results = ex.run_seeds(ex.load_data(bank, cache=cache), [0], profile="smoke", keep=True,
                                              workers=1, **TINY)
    assert results[0].timings["stage1"] > 0, "stage 1 was trained again"
    pd.testing.assert_frame_equal(runs.drop(columns="seconds"), clean_runs)
    pd.testing.assert_frame_equal(history, clean_history)
    assert cache_module.read_entry(entry(cache, "f_g")) is not None, "a whole model is stored again"


def test_entry_without_a_matching_digest_is_refused_even_when_its_content_parses(tmp_path):
    path = tmp_path / "run-x"
    cache_module.write_entry(path, b'{"a": 1}')
    assert cache_module.read_entry(path) == b'{"a": 1}'
    header, _, _ = path.read_bytes().partition(b"\n")
    path.write_bytes(header + b'\n{"a": 2}')
    with pytest.warns(cache_module.CacheWarning, match="run-x"):
        assert cache_module.read_entry(path) is None
    assert not path.exists()


@pytest.fixture
def fake_synth(monkeypatch, bank):
    """write_synthetic replaced by a copy of the toy bank; returns the list of paths written."""
    import cupl.data.synth as synth

    written = []

    def write(path, **kwargs):
        written.append(Path(path))
        shutil.copyfile(bank, path)
        return Path(path)

    monkeypatch.setattr(synth, "write_synthetic", write)
    return written


@pytest.mark.parametrize("damage", ["truncated", "no digest (writer killed)"])
def test_truncated_cached_bank_is_detected_and_written_again(fake_synth, bank, tmp_path, damage):
    path = cache_module.synthetic_bank("smoke", tmp_path, progress=False)
    assert fake_synth == [path]
    if damage == "truncated":
        truncate(path)
    else:
        path.with_name(path.name + ".sha256").unlink()
    with pytest.warns(cache_module.CacheWarning, match=path.name):
        again = cache_module.synthetic_bank("smoke", tmp_path, progress=False)
    assert again == path and fake_synth == [path, path]
    assert path.read_bytes() == bank.read_bytes()
    with FeatureBank.open(path) as fb:
        assert fb.load_split("test").num_videos == 8
    with warnings.catch_warnings():  # now whole: reused as it is
        warnings.simplefilter("error", cache_module.CacheWarning)
        assert cache_module.synthetic_bank("smoke", tmp_path, progress=False) == path
    assert len(fake_synth) == 2


# ---------------------------------------------------------------- 2. read-only cache folder


def read_only(monkeypatch):
    def refuse(path, write, **kw):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(cache_module, "atomic_write", refuse)
    monkeypatch.setattr(cache_module, "_UNWRITABLE", set())


def test_read_only_cache_computes_warns_once_naming_the_folder_and_returns(clean, bank, tmp_path, monkeypatch):
    _, clean_runs, clean_history = clean
    read_only(monkeypatch)
    cache = tmp_path / "readonly"
    with pytest.warns(cache_module.CacheWarning) as record:
        runs, history = ex.run_seeds(ex.load_data(bank, cache=cache), [0], profile="smoke", workers=1, **TINY)
    messages = [str(w.message) for w in record if issubclass(w.category, cache_module.CacheWarning)]
    assert len(messages) == 1 and str(cache) in messages[0] and "cannot be written" in messages[0]
    pd.testing.assert_frame_equal(runs.drop(columns="seconds"), clean_runs)
    pd.testing.assert_frame_equal(history, clean_history)


def test_read_only_cache_starts_no_worker_whose_results_would_be_lost(bank, tmp_path, monkeypatch):
    read_only(monkeypatch)
    cache = tmp_path / "readonly"
    configs = [make_config("ucf", "smoke", seed=seed, **TINY) for seed in (0, 1)]
    data = ex.load_data(bank, cache=cache)
    with pytest.warns(cache_module.CacheWarning, match=str(cache)):
        assert ex.prefetch(data, configs, workers=2) == 0
    assert data.pool is None


def test_read_only_cache_puts_the_bank_in_the_temporary_folder(fake_synth, tmp_path, monkeypatch):
    import cupl.data.synth as synth

    readonly = tmp_path / "readonly"
    copy = synth.write_synthetic

    def write(path, **kwargs):
        if Path(path).parent == readonly:
            raise OSError(errno.EROFS, "Read-only file system")
        return copy(path, **kwargs)

    monkeypatch.setattr(synth, "write_synthetic", write)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.warns(cache_module.CacheWarning, match=str(readonly)):
        path = cache_module.synthetic_bank("smoke", readonly, progress=False)
    assert path.parent == tmp_path / "tmp" / "cupl-cache" / "banks" and path.is_file()


# ---------------------------------------------------------------- 3. full disk on save


def full_disk(monkeypatch, module, folder: Path):
    """atomic_write of `module` fails with ENOSPC for files in `folder`, after writing part."""
    real = module.atomic_write

    def write(path, writer, **kw):
        if Path(path).parent == folder:
            def partial(tmp):
                Path(tmp).write_bytes(b"\0" * 10)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, partial, **kw)
        return real(path, writer, **kw)

    monkeypatch.setattr(module, "atomic_write", write)


def test_train_save_on_a_full_disk_keeps_the_model_elsewhere(bank, tmp_path, monkeypatch, capsys):
    import cupl.cli.train as train_cli
    import cupl.experiments.checkpoint as checkpoint

    model = ClipClassifier(32, (8, 4), 0.5)
    monkeypatch.setattr(train_cli, "run", lambda *a, **k: SimpleNamespace(
        history=[], f_c=model, config=to_dict(make_config("ucf", "smoke"))))
    full = tmp_path / "full"
    full.mkdir()
    full_disk(monkeypatch, checkpoint, full)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = cli_main(["train", "--bank", str(bank), "--profile", "smoke", "--save", str(full / "f_c.pt")])
    assert code == 1
    err = capsys.readouterr().err
    assert str(full / "f_c.pt") in err and ("No space left" in err or "not enough free space" in err)
    (kept,) = tmp_path.glob("cupl-f_c-*.pt")
    assert str(kept) in err
    assert not (full / "f_c.pt").exists() and not list(full.iterdir()), "no partial file is left"
    restored = load_checkpoint(kept)
    for name, value in model.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value)


@pytest.fixture
def checkpoint_file(bank, tmp_path):
    with FeatureBank.open(bank) as fb:
        dim = fb.load_split("test").features.shape[-1]
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "f_c.pt", ClipClassifier(2 * dim, (8, 4), 0.5),
                           make_config("ucf", "smoke"))


@pytest.mark.parametrize("option,name", [("--json", "metrics.json"), ("--frame-scores", "frames.npy")])
def test_evaluate_outputs_on_a_full_disk_are_named(bank, checkpoint_file, tmp_path, monkeypatch, capsys,
                                                   option, name):
    import cupl.cli.evaluate as evaluate_cli

    full = tmp_path / "full"
    full.mkdir()
    full_disk(monkeypatch, evaluate_cli, full)
    code = cli_main(["evaluate", "--checkpoint", str(checkpoint_file), "--bank", str(bank), "--no-progress",
                     option, str(full / name)])
    assert code == 1
    err = capsys.readouterr().err
    assert f"could not write {full / name}" in err and ("No space left" in err or "not enough free space" in err)
    assert not list(full.iterdir()), "no partial file is left"
    code = cli_main(["evaluate", "--checkpoint", str(checkpoint_file), "--bank", str(bank), "--no-progress",
                     option, str(tmp_path / name)])
    assert code == 0 and (tmp_path / name).is_file()


# ---------------------------------------------------------------- 4. the book


def executed_copies(root: Path, names) -> None:
    for n in names:
        path = root / "_executed" / "notebooks" / f"{n}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def fake_builder(monkeypatch, outcome: str):
    """jupyter-book replaced: writes pages into --path-output, then finishes (`ok`), fails
    (`fail`) or is interrupted (`interrupt`) before writing index.html."""
    def build(command, root):
        out = Path(command[command.index("--path-output") + 1]) / "_build" / "html"
        out.mkdir(parents=True, exist_ok=True)
        (out / "chapter.html").write_text("new")
        if outcome == "interrupt":
            raise KeyboardInterrupt
        if outcome == "ok":
            (out / "index.html").write_text("new")
        return subprocess.CompletedProcess(command, 0 if outcome == "ok" else 1, "", "boom")

    monkeypatch.setattr(book, "_run_builder", build)
    monkeypatch.setattr(book, "_jupyter_book", lambda: "jupyter-book")


@pytest.fixture
def built_book(tiny_book):
    root = tiny_book({"01_a": ("x = 1", "y = x")})
    executed_copies(root, ["01_a"])
    html = root / "_build" / "html"
    html.mkdir(parents=True)
    (html / "index.html").write_text("old")
    (html / "chapter.html").write_text("old")
    (root / "_build" / f"{book.STAGING_PREFIX}99999").mkdir()  # left by a killed build
    return root


def test_interrupted_build_leaves_the_previous_complete_book(built_book, monkeypatch):
    fake_builder(monkeypatch, "interrupt")
    with pytest.raises(KeyboardInterrupt):
        book.build_book(built_book, progress=False)
    html = built_book / "_build" / "html"
    assert (html / "index.html").read_text() == "old" and (html / "chapter.html").read_text() == "old"
    assert sorted(p.name for p in (built_book / "_build").iterdir()) == ["html"], "no staging folder is left"


def test_finished_build_is_swapped_in_whole(built_book, monkeypatch):
    fake_builder(monkeypatch, "ok")
    book.build_book(built_book, progress=False)
    html = built_book / "_build" / "html"
    assert (html / "index.html").read_text() == "new" and (html / "chapter.html").read_text() == "new"
    assert sorted(p.name for p in (built_book / "_build").iterdir()) == ["html"]


def test_failed_build_leaves_no_book(built_book, monkeypatch):
    fake_builder(monkeypatch, "fail")
    with pytest.raises(book.BuildFailed, match="boom"):
        book.build_book(built_book, progress=False)
    assert not (built_book / "_build" / "html").exists()
    assert not list((built_book / "_build").glob(f"{book.STAGING_PREFIX}*"))


def test_changed_inputs_remove_the_book_before_any_notebook_runs(tiny_book, monkeypatch):
    root = tiny_book({"01_a": ("x = 1", "y = x"), "02_b": ("x = 1", "z = x")})
    html = root / "_build" / "html"
    seen = []

    def execute(root_, name, params, progress):
        seen.append((name, html.exists()))
        if name == "02_b" and params["x"] == 2:
            raise KeyboardInterrupt  # stands for any stop, SIGKILL included: nothing after it runs
        executed_copies(root_, [name])
        return 0.0

    monkeypatch.setattr(book, "execute_notebook", execute)
    book.run_chain(root, extra={"x": 1}, build=False, progress=False)
    html.mkdir(parents=True)
    (html / "index.html").write_text("book of x = 1")
    book.run_chain(root, extra={"x": 1}, build=False, progress=False)  # unchanged: the book stays
    assert (html / "index.html").is_file() and len(seen) == 2
    with pytest.raises(KeyboardInterrupt):
        book.run_chain(root, extra={"x": 2}, build=False, progress=False)
    assert seen[2:] == [("01_a", False), ("02_b", False)]
    assert not html.exists(), "no book of x = 1 beside copies of x = 2"


# ---------------------------------------------------------------- 5. quiet runs


WORKER = """
import signal, sys, time
{setup}
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("setup,noisy", [
    ("signal.signal(signal.SIGINT, signal.default_int_handler)", True),  # Python's own handler
    ("from cupl.experiments.workers import quiet_interrupt; quiet_interrupt()", False),  # a pool worker's
])
def test_pool_workers_end_quietly_on_interrupt(setup, noisy):
    """A kernel interrupts its whole process group when it shuts down: a process with Python's
    own handler prints a KeyboardInterrupt traceback, a worker of `prefetch` ends silently."""
    child = subprocess.Popen([sys.executable, "-c", WORKER.format(setup=setup)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode != 0, "the interrupt ends the process"
    assert ("KeyboardInterrupt" in err) is noisy, err
    if not noisy:
        assert err == ""


def test_a_chain_prints_nothing_that_looks_like_an_error(tiny_book, capfd):
    root = tiny_book({"01_a": ("x = 1", "print('result', x + 1)")})
    book.run_chain(root, build=False, progress=True)
    out, err = capfd.readouterr()
    assert "01_a: done" in out
    for text in ("without encryption", "Traceback", "Error", "WARNING"):
        assert text not in err and text not in out, (text, err)
    executed = json.loads((root / "_executed" / "notebooks" / "01_a.ipynb").read_text())
    assert "result 2" in json.dumps(executed)


# ---------------------------------------------------------------- 6. values named where they enter


@pytest.mark.parametrize("argv,named", [
    (["--set", "generator.alpha", "abc"], "generator.alpha must be a finite number, got 'abc'"),
    (["--set", "generator.num_segments", "0"], "generator.num_segments must be in [1, inf), got 0"),
    (["--set", "self_train.ratio", "0.5x"], "self_train.ratio must be a finite number, got '0.5x'"),
    (["--set", "clip.lr", "-1"], "clip.lr must be in (0, inf), got -1.0"),
    (["--seed", "-1"], "seed must be in [0, inf), got -1"),
    (["--set", "generator.diversity", "1"], "generator.diversity must be True or False, got 1"),
    (["--set", "generator.hidden", "(8,)"], "generator.hidden must hold 2 values"),
])
def test_train_refuses_a_bad_value_naming_it_before_any_work(monkeypatch, capsys, tmp_path, argv, named):
    import cupl.cli.train as train_cli

    monkeypatch.setattr(train_cli, "run", lambda *a, **k: pytest.fail("training started"))
    code = cli_main(["train", "--bank", str(tmp_path / "no-such-bank.h5"), *argv])  # never opened
    assert code == 2
    assert named in capsys.readouterr().err


def test_the_same_rule_for_the_same_value_everywhere(tmp_path, capsys):
    assert cli_main(["synth", "--seed", "-1", "--out", str(tmp_path / "b.h5")]) == 2
    assert "--seed must be in [0, inf), got -1" in capsys.readouterr().err
    assert not (tmp_path / "b.h5").exists()
    with pytest.raises(ConfigError, match=r"^seed must be in \[0, inf\), got -1$"):
        make_config(seed=-1)
    data = to_dict(make_config())
    data["clip"]["lr"] = -1
    with pytest.raises(ConfigError, match=r"clip.lr must be in \(0, inf\)"):
        from_dict(data)
    config = make_config()
    config.generator.num_segments = 0  # set directly on the dataclass: caught before training
    with pytest.raises(ConfigError, match="generator.num_segments"):
        config.validate()


def test_every_field_takes_the_type_of_its_default():
    for key, kind in field_types().items():
        section, _, leaf = key.rpartition(".")
        default = to_dict(make_config())
        for part in filter(None, section.split(".")):
            default = default[part]
        default = default[leaf]
        assert check_value(key, default) == default
        if isinstance(default, bool):
            with pytest.raises(ConfigError, match=key):
                check_value(key, 1)
        elif isinstance(default, (int, float, tuple)):
            with pytest.raises(ConfigError, match=key):
                check_value(key, "abc")
        elif isinstance(default, str):
            with pytest.raises(ConfigError, match=key):
                check_value(key, 3)
    assert check_value("generator.alpha", 1) == 1.0 and isinstance(check_value("generator.alpha", 1), float)
    assert check_value("generator.steps", 1e3) == 1000 and isinstance(check_value("generator.steps", 1e3), int)
    with pytest.raises(ConfigError, match="generator.steps must be a whole number"):
        check_value("generator.steps", 2.5)
    with pytest.raises(ConfigError, match="generator.alpha must be a finite number"):
        check_value("generator.alpha", math.inf)


@pytest.mark.parametrize("key,inside,outside", [
    ("self_train.ratio", [1.0, 1e-9], [0.0, 1.5]),
    ("generator.dropout", [0.0, 0.99], [1.0, -0.1]),
    ("clip.lr", [1e-9], [0.0, -1.0]),
    ("clip.weight_decay", [0.0], [-1e-9]),
    ("generator.num_segments", [1], [0, -3]),
    ("generator.hidden", [(1, 1)], [(0, 4), (4, -1)]),
])
def test_ranges_at_their_bounds(key, inside, outside):
    assert key in RANGES
    for value in inside:
        check_value(key, value)
    for value in outside:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check_value(key, value)


def test_book_parameters_are_checked_before_anything_runs(tiny_book):
    root = tiny_book({"01_a": ("profile = 'quick'\nseeds = 3\nalpha = None", "x = 1"),
                      "02_b": ("profile = 'quick'", "y = 1")})
    for extra, named in (({"seeds": 0}, "parameter 'seeds' must be in [1, inf), got 0"),
                         ({"profile": "nonsense"}, "parameter 'profile' must be one of"),
                         ({"alpha": "abc"}, "parameter 'alpha' must be a finite number"),
                         ({"alpha": -1}, "parameter 'alpha' must be in [0, inf)")):
        with pytest.raises(ConfigError) as err:
            book.run_chain(root, only=["01"], extra=extra, build=False, progress=False)
        assert named in str(err.value)
    with pytest.raises(ConfigError, match="parameter 'seeds'"):
        book.run_chain(root, seeds=0, build=False, progress=False)
    assert not (root / "_executed").exists(), "nothing may run before the check"


def test_book_command_names_the_parameter(tiny_book, monkeypatch, capsys):
    root = tiny_book({"01_a": ("profile = 'quick'\nseeds = 3", "x = 1")})
    parser = argparse.ArgumentParser()
    book_cli.configure_parser(parser)
    monkeypatch.chdir(root)
    code = book_cli.main(parser.parse_args(["--no-build", "--quiet", "--only", "01", "-p", "profile", "nonsense"]))
    assert code == 1 and "parameter 'profile'" in capsys.readouterr().err


def test_evaluate_window_is_checked_and_a_different_one_warned(bank, checkpoint_file, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"window must be in \[1, inf\), got 0"):
        evaluate_checkpoint(checkpoint_file, bank, window=0, progress=False)
    assert cli_main(["evaluate", "--checkpoint", str(checkpoint_file), "--bank", str(bank), "--no-progress",
                     "--window", "0"]) == 1
    assert "window must be in [1, inf), got 0" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = evaluate_checkpoint(checkpoint_file, bank, progress=False)
        assert evaluate_checkpoint(checkpoint_file, bank, window=5, progress=False)["auc"] == same["auc"]
    with pytest.warns(UserWarning, match=r"trained with the temporal context window w = 5; scoring with w = 2"):
        other = evaluate_checkpoint(checkpoint_file, bank, window=2, progress=False)
    assert other["window"] == 2 and same["window"] == 5


def test_non_finite_features_name_the_video():
    train, _ = toy_split(3, 3, seed=1)
    test, _ = toy_split(2, 2, seed=2, test=True)
    video = 4
    train.features[int(train.offsets[video]) + 2, 1, 0] = math.inf
    config = make_config("ucf", "smoke", **TINY)
    with pytest.raises(ValueError, match=rf"train features: 1 non-finite .* in 1 video\(s\): {train.names[video]}$"):
        run(config, train, test, progress=False)


# ---------------------------------------------------------------- 7. pickled checkpoints


def test_pickled_checkpoint_is_refused_without_the_unsafe_advice(tmp_path):
    path = tmp_path / "from-the-internet.pth"
    torch.save({"model": {}, "extra": fractions.Fraction(1, 2)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "pickled Python objects" in message and "not loaded, for safety" in message
    assert "fractions.Fraction" in message
    assert "weights_only=False" not in message and "likely succeed" not in message
    assert "`weights_only` set to `False`" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_student_edition_hides_solutions_and_leaves_the_book(built_book, monkeypatch):
    import yaml

    seen = []

    def build(command, root):
        seen.append(command)
        out = Path(command[command.index("--path-output") + 1]) / "_build" / "html"
        out.mkdir(parents=True, exist_ok=True)
        (out / "index.html").write_text("student")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(book, "_run_builder", build)
    monkeypatch.setattr(book, "_jupyter_book", lambda: "jupyter-book")
    (built_book / "_config.yml").write_text("title: tiny\nexecute:\n  execute_notebooks: 'off'\n")
    book.build_book(built_book, progress=False, student=True)
    (command,) = seen
    assert "--config" in command
    assert (built_book / "_build" / "student" / "index.html").read_text() == "student"
    assert (built_book / "_build" / "html" / "index.html").read_text() == "old", "the full book stays"
    written = book.student_config(built_book, built_book / "cfg")
    config = yaml.safe_load(written.read_text())
    assert config["sphinx"]["config"]["hide_solutions"] is True
    assert config["execute"] == {"execute_notebooks": "off"} and "course edition" in config["title"]
