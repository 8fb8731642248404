"""Faults a bank writer and reader meet in real use: a killed writer, damaged bytes, a full
disk, a read-only folder, two writers at once, an existing output.

Each test asserts a named error, no partial output that looks complete, and, after recovery,
the same bank as a clean write. Processes that must die run as subprocesses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cupl import cli
from cupl.data.bank import BankError, FeatureBank, VideoData, write_bank
from cupl.files import NoSpaceError, OutputExistsError, OutputNotWritableError, temporary_path

ROOT = Path(__file__).resolve().parents[1]
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
def clean(tmp_path_factory) -> dict:
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
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, child: subprocess.Popen, seconds=60):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert child.poll() is None, child.communicate()[1]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# --------------------------------------------------------------------------- killed writer


def test_killed_writer_leaves_nothing_and_the_next_write_cleans_up(tmp_path, clean):
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
    assert_same(contents(out), clean[0])


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
def test_damaged_features_are_named(tmp_path, clean, how):
    path = write_bank(tmp_path / "b.h5", videos(0), attrs=ATTRS, progress=False)
    damage(path, "train/V04/rgb", how)
    with FeatureBank.open(path) as bank:
        with pytest.raises(BankError, match=r"b\.h5: video 'V04': dataset 'rgb' is damaged"):
            bank.load_split("train")
        with pytest.raises(BankError, match=r"b\.h5: video 'V04': dataset 'rgb' is damaged"):
            bank.features("V04")
        np.testing.assert_array_equal(bank.load_split("test").features.numpy(), clean[0]["test"][0])
    write_bank(path, videos(0), attrs=ATTRS, progress=False, overwrite=True)
    assert_same(contents(path), clean[0])


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


def test_banks_without_checksums_still_read(tmp_path, clean):
    """Banks written before checksums (contiguous, unfiltered) read as before, and so their
    damage goes unseen: what the checksums are for."""
    path = write_bank(tmp_path / "old.h5", videos(0), attrs=ATTRS, progress=False, checksum=False)
    assert_same(contents(path), clean[0])
    damage(path, "train/V04/rgb", "zeroed")
    assert not np.array_equal(contents(path)["train"][0], clean[0]["train"][0])


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


def test_full_disk_is_one_named_line_and_leaves_nothing(small_disk, clean):
    out = small_disk / "b.h5"
    with pytest.raises(NoSpaceError, match=rf"{out}: not enough free space .*needs [\d,]+ bytes .* for video 'V\d+' "
                                           r"\(about [\d,]+ bytes for the whole bank\)") as err:
        write_bank(out, videos(0), attrs=ATTRS, progress=False, total=12)
    assert "\n" not in str(err.value) and leftovers(small_disk) == []
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    write_bank(out, videos(0), attrs=ATTRS, progress=False)
    assert_same(contents(out), clean[0])
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


def test_existing_banks_are_replaced_only_when_asked(tmp_path, clean, capsys):
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
    assert_same(contents(out), clean[1])
    assert leftovers(tmp_path) == ["b.h5"]


def test_two_writers_at_once_give_one_whole_bank(tmp_path, clean):
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
        [seed] = [seed for seed in (1, 2) if np.array_equal(got["train"][0], clean[seed]["train"][0])]
        if not overwrite:
            assert codes[seed - 1] == 0   # the bank is the one of the writer that succeeded
        assert_same(got, clean[seed])
        assert leftovers(out.parent) == ["b.h5"]


def test_a_file_can_be_dropped_from_the_page_cache(tmp_path):
    from cupl.files import drop_from_page_cache

    path = tmp_path / "x.bin"
    path.write_bytes(b"\0" * 4096)
    assert drop_from_page_cache(path) is hasattr(os, "posix_fadvise")
    assert path.read_bytes() == b"\0" * 4096  # the file itself is untouched
