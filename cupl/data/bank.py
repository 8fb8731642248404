"""The feature bank: one HDF5 file holding the clip features of a benchmark's two splits.

Real I3D / VGGish features are imported into it and the embedded synthetic benchmark is
written into it, so every notebook reads one format. Layout::

    /                       attrs: format, version, source, feature_kind, frames_per_clip,
                                   crops, modalities, dim_<modality>, dtype, ... free keys
    /{split}/{name}/rgb     [T, crops, D]   float16 | float32, in chunks of whole clips
    /{split}/{name}/audio   [T, 1, 128]     optional
    /{split}/{name}/frame_labels        uint8 [num_frames]   test videos
    /{split}/{name}/oracle_clip_labels  float32 [T]          synthetic training videos
    /{split}/{name}         attrs: label, category, num_frames
    /index/{split}/         names, labels, categories, num_frames, clips_<modality>:
                            the split's table in list order, read once at open

Frames map to clips of 16 frames as the RTFM I3D features do: T = ceil(num_frames / 16).

Every dataset carries HDF5 Fletcher-32 checksums (and the file's metadata its own), so
damaged bytes are a `BankError` naming the file and the video, never different numbers;
banks written before checksums (contiguous datasets) read as they always did.

Writes are atomic (`cupl.files`): the bank is built in a temporary file beside the target
and moved into place only once every video has been validated and written, so an
interrupted write leaves nothing that opens as a bank; an existing bank is replaced only
when asked, and a full disk is one named error before the video that would not fit.
"""

from __future__ import annotations

import errno
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from cupl import files

BANK_FORMAT = "cupl-feature-bank"
BANK_VERSION = 1
SPLITS = ("train", "test")
REQUIRED_ATTRS = ("source", "feature_kind", "frames_per_clip", "crops", "modalities")
# Chunks of about 256 KiB of whole clips: one Fletcher-32 checksum each, small enough that a
# chunk is checked while still in the CPU cache (`benchmarks/bank_io.py`).
CHUNK_BYTES = 2**18
CHECKSUM = True
# HDF5 1.10 file structures: its metadata (object headers, chunk indexes) carries checksums too.
LIBVER = ("v110", "v114")
# Room kept for a video's group, attributes and chunk index when checking the free space.
VIDEO_OVERHEAD_BYTES = 64 * 2**10
# None: float16 I3D-like features barely compress, and every compression filter makes a split
# slower to read (`write_bank(..., compression=...)` still writes them; book/data.md).
COMPRESSION = None
# Host memory a split is read through: on the CPU one buffer that stays in the CPU cache
# between reading and converting; on CUDA two pinned buffers, large for fast copies.
READ_CHUNK_BYTES = 4 * 2**20
PINNED_READ_BYTES = 256 * 2**20


class BankError(ValueError):
    """A feature bank or a video written to it is not what it should be; the message names
    the file or the video and what is wrong."""


@dataclass(frozen=True)
class VideoRecord:
    """One video of a split as listed by `FeatureBank.videos`."""

    name: str
    label: int
    category: str
    num_frames: int
    num_clips: int


@dataclass
class VideoData:
    """One video on its way into a bank (what importers and the generator produce).

    features:           modality -> [T, crops, D]; "rgb" required, "audio" [T, 1, 128] optional.
    frame_labels:       test videos: uint8 [num_frames], 1 = abnormal frame.
    oracle_clip_labels: synthetic training videos only: float32 [T] in [0, 1], the clip-level
                        ground truth that real weak supervision never has.
    """

    name: str
    split: str
    label: int
    category: str
    num_frames: int
    features: dict[str, np.ndarray]
    frame_labels: np.ndarray | None = None
    oracle_clip_labels: np.ndarray | None = None


# --------------------------------------------------------------------------- writing


def write_bank(path, videos: Iterable[VideoData], *, attrs: dict, dtype="float16",
               progress=True, total=None, compression=COMPRESSION, checksum=CHECKSUM,
               overwrite=False, nbytes=None) -> Path:
    """Stream `videos` into a new bank at `path`, moved into place atomically when complete.

    attrs:     dataset-level attributes; `source`, `feature_kind`, `frames_per_clip`, `crops`
               and `modalities` are required, any other str / number / bool / list key is kept.
    dtype:     storage dtype of the features, "float16" or "float32".
    checksum:  HDF5 Fletcher-32 checksums on every dataset, so that damaged bytes fail to read.
    overwrite: False refuses an existing `path` (`cupl.files.OutputExistsError`) before any
               work; True replaces it, atomically.
    nbytes:    the bank's size when the caller knows it: checked against the free space before
               any work. Whether or not it is given, every video is checked against the free
               space before it is written; a full disk is a `cupl.files.NoSpaceError` naming
               `path` and the bytes needed.
    Each video is validated before it is written (see `_check_video`); any error, or any
    exception raised by `videos` itself, removes the temporary file and leaves `path` as
    it was.
    """
    path = Path(path)
    _check_bank_attrs(path, attrs)
    if np.dtype(dtype) not in (np.float16, np.float32):
        raise BankError(f"{path}: dtype must be float16 or float32, got {dtype!r}")
    with files.temporary_beside(path, overwrite=overwrite, nbytes=nbytes) as tmp:
        _write(tmp, path, videos, attrs, np.dtype(dtype), compression, checksum, progress, total)
    return path


def _write(tmp: Path, path: Path, videos, attrs, dtype, compression, checksum, progress, total):
    """Write the bank into `tmp`. Without a chunk cache every write reaches the file at once,
    so a full disk raises where it happens, not later in a destructor."""
    import h5py
    from tqdm import tqdm

    f = h5py.File(tmp, "x", libver=LIBVER, rdcc_nbytes=0)
    writer = _Writer(f, path, attrs, dtype, compression, checksum, total)
    try:
        for video in tqdm(videos, total=total, disable=not progress, unit="video",
                          desc=f"writing {path.name}"):
            writer.add(video)
        writer.finish()
        f.flush()
    except OSError as err:
        _discard(f, tmp)
        if err.errno != errno.ENOSPC or isinstance(err, files.NoSpaceError):
            raise
        raise files.no_space(path, writer.estimate(), files.free_bytes(path.parent),
                             " (the disk filled while writing)") from None
    except BaseException:
        _discard(f, tmp)
        raise
    f.close()


def _discard(f, tmp: Path):
    """Close a failed bank without a crash: emptying the file first gives back its space, so
    that closing, which writes HDF5's cached metadata, cannot run out of it."""
    try:
        os.truncate(tmp, 0)
    except OSError:
        pass
    try:
        f.close()
    except Exception:   # the file is thrown away; the first error is the one to report
        pass


def _check_bank_attrs(path: Path, attrs: dict):
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise BankError(f"{path}: bank attributes missing {missing}; required: {list(REQUIRED_ATTRS)}")
    reserved = {"format", "version", "dtype"} & set(attrs)
    if reserved:
        raise BankError(f"{path}: attributes {sorted(reserved)} are set by write_bank itself")
    if "rgb" not in attrs["modalities"]:
        raise BankError(f"{path}: modalities must include 'rgb', got {attrs['modalities']!r}")


class _Writer:
    """Validates and writes videos one by one, keeping only the split tables in memory."""

    def __init__(self, f, path: Path, attrs: dict, dtype: np.dtype, compression, checksum: bool,
                 total: int | None):
        self.f, self.path, self.dtype, self.compression = f, path, dtype, compression
        self.checksum, self.total, self.written = checksum, total, 0
        self.attrs = dict(attrs)
        self.modalities = tuple(attrs["modalities"])
        self.crops = int(attrs["crops"])
        self.dims: dict[str, int] = {}
        self.seen: set[str] = set()
        self.tables = {s: dict(names=[], labels=[], categories=[], num_frames=[],
                               **{f"clips_{m}": [] for m in self.modalities}) for s in SPLITS}

    def add(self, video: VideoData):
        features = self._check_video(video)
        arrays = dict(features)
        if video.frame_labels is not None:
            arrays["frame_labels"] = np.asarray(video.frame_labels, np.uint8)
        if video.oracle_clip_labels is not None:
            arrays["oracle_clip_labels"] = np.asarray(video.oracle_clip_labels, np.float32)
        self._check_space(video.name, sum(a.nbytes for a in arrays.values()))
        group = self.f.create_group(f"{video.split}/{video.name}")
        group.attrs.update(label=int(video.label), category=video.category,
                           num_frames=int(video.num_frames))
        for key, array in arrays.items():
            self._create(group, key, array)
        table = self.tables[video.split]
        table["names"].append(video.name)
        table["labels"].append(int(video.label))
        table["categories"].append(video.category)
        table["num_frames"].append(int(video.num_frames))
        for modality, array in features.items():
            table[f"clips_{modality}"].append(array.shape[0])

    def _check_space(self, name: str, nbytes: int):
        """NoSpaceError before a video that would not fit, with the room the whole bank needs
        at this rate when the number of videos is known."""
        need = nbytes + VIDEO_OVERHEAD_BYTES
        self.written += need
        whole = f" (about {self.estimate():,} bytes for the whole bank)" if self.total else ""
        files.check_free_space(self.path, need, what=f" for video {name!r}{whole}")

    def estimate(self) -> int:
        """Bytes of the whole bank at the rate of the videos so far (those so far without `total`)."""
        count = max(len(self.seen), 1)
        return self.written * max(self.total or 0, count) // count

    def _create(self, group, key: str, data: np.ndarray):
        """A dataset chunked by about CHUNK_BYTES of whole rows (the clips of features), with
        checksums and compression as asked; contiguous (one read, no chunk index) without
        either, and always when empty."""
        filtered = (self.checksum or self.compression) and data.size
        chunks = None
        if filtered:
            row_bytes = data.itemsize * int(np.prod(data.shape[1:]))
            rows = min(data.shape[0], max(1, CHUNK_BYTES // row_bytes))
            chunks = (rows, *data.shape[1:])
        group.create_dataset(key, data=data, chunks=chunks, compression=self.compression if filtered else None,
                             fletcher32=bool(filtered and self.checksum))

    def _check_video(self, v: VideoData) -> dict[str, np.ndarray]:
        """The video's features cast to the storage dtype; BankError naming it if anything is off."""
        def fail(msg):
            raise BankError(f"{self.path}: video {v.name!r}: {msg}")

        if not isinstance(v.name, str) or not v.name or "/" in v.name or v.name in (".", ".."):
            fail("name must be a non-empty string without '/'")
        if v.name in self.seen:
            fail("duplicate video name (names must be unique across the bank)")
        if v.split not in SPLITS:
            fail(f"split must be one of {SPLITS}, got {v.split!r}")
        if v.label not in (0, 1):
            fail(f"label must be 0 (normal) or 1 (abnormal), got {v.label!r}")
        if not isinstance(v.category, str) or not v.category:
            fail(f"category must be a non-empty string, got {v.category!r}")
        if int(v.num_frames) < 1:
            fail(f"num_frames must be >= 1, got {v.num_frames}")
        if set(v.features) != set(self.modalities):
            fail(f"modalities {sorted(v.features)} differ from the bank's {sorted(self.modalities)}")
        features = {m: self._check_features(v, m, fail) for m in self.modalities}
        num_clips = features["rgb"].shape[0]
        self._check_frame_labels(v, fail)
        self._check_oracle(v, num_clips, fail)
        self.seen.add(v.name)
        return features

    def _check_features(self, v: VideoData, modality: str, fail) -> np.ndarray:
        array = np.asarray(v.features[modality])
        crops = 1 if modality == "audio" else self.crops
        if array.ndim != 3:
            fail(f"{modality} features: expected [T, {crops}, D], got shape {array.shape}")
        if 0 in array.shape:
            fail(f"{modality} features are empty: shape {array.shape}")
        if not np.issubdtype(array.dtype, np.floating):
            fail(f"{modality} features: expected a float array, got dtype {array.dtype}")
        if array.shape[1] != crops:
            fail(f"{modality} features: expected {crops} crops, got shape {array.shape}")
        dim = self.dims.setdefault(modality, array.shape[2])
        if array.shape[2] != dim:
            fail(f"{modality} features: expected D = {dim} like the videos before, got shape {array.shape}")
        with np.errstate(over="ignore"):   # overflow becomes inf, reported just below
            stored = array.astype(self.dtype, copy=False)
        if not np.isfinite(stored).all():
            bad = int((~np.isfinite(stored)).sum())
            fail(f"{modality} features: {bad} NaN/inf values as {self.dtype} (shape {array.shape})")
        return stored

    @staticmethod
    def _check_frame_labels(v: VideoData, fail):
        if v.split == "train":
            if v.frame_labels is not None:
                fail("frame_labels belong to test videos; clip-level ground truth of synthetic "
                     "training videos goes to oracle_clip_labels")
            return
        if v.frame_labels is None:
            fail("test videos need frame_labels [num_frames]")
        labels = np.asarray(v.frame_labels)
        if labels.shape != (int(v.num_frames),):
            fail(f"frame_labels: expected shape ({int(v.num_frames)},) = num_frames, got {labels.shape}")
        if not np.isin(labels, (0, 1)).all():
            fail("frame_labels must hold only 0 and 1")

    @staticmethod
    def _check_oracle(v: VideoData, num_clips: int, fail):
        if v.oracle_clip_labels is None:
            return
        if v.split != "train":
            fail("oracle_clip_labels are for training videos only")
        oracle = np.asarray(v.oracle_clip_labels, dtype=np.float64)
        if oracle.shape != (num_clips,):
            fail(f"oracle_clip_labels: expected shape ({num_clips},) = clips, got {oracle.shape}")
        if not (np.isfinite(oracle).all() and (oracle >= 0).all() and (oracle <= 1).all()):
            fail("oracle_clip_labels must lie in [0, 1]")

    def finish(self):
        import h5py

        f = self.f
        f.attrs["format"] = BANK_FORMAT
        f.attrs["version"] = BANK_VERSION
        f.attrs["dtype"] = self.dtype.name
        for key, value in self.attrs.items():
            f.attrs[key] = _to_attr(self.path, key, value)
        for modality, dim in self.dims.items():
            f.attrs[f"dim_{modality}"] = dim
        for split, table in self.tables.items():
            g = f.require_group(f"index/{split}")
            for key in ("names", "categories"):   # fixed-length UTF-8: HDF5 filters (checksums) need it
                encoded = [s.encode() for s in table[key]]
                text = h5py.string_dtype("utf-8", max(map(len, encoded), default=1))
                self._create(g, key, np.array(encoded, dtype=text))
            self._create(g, "labels", np.array(table["labels"], dtype=np.int8))
            for key in ["num_frames"] + [f"clips_{m}" for m in self.modalities]:
                self._create(g, key, np.array(table[key], dtype=np.int64))


def _to_attr(path: Path, key: str, value):
    """Bank attributes are plain values; dicts are kept as JSON text."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, (str, bool, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
        return np.array(value, dtype=object)
    if isinstance(value, (list, tuple)) and all(isinstance(x, (int, float)) for x in value):
        return np.array(value)
    raise BankError(f"{path}: attribute {key!r} must be str, number, bool, dict or a list of them, "
                    f"got {type(value).__name__}")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _from_attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_from_attr(x) for x in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------- reading


def split_tensor(shape: tuple, dtype, device) -> "torch.Tensor":
    """An empty tensor for a whole split. On the CPU its memory comes from numpy, which asks
    the kernel for transparent huge pages on large arrays: a first touch of a 2 MiB page
    instead of 512 of 4 KiB, which is most of the time of filling a fresh split
    (`benchmarks/bank_io.py`). Elsewhere `torch.empty`."""
    import torch

    device = torch.device(device)
    count = int(np.prod(shape))
    if device.type != "cpu" or count == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    raw = np.empty(count * dtype.itemsize, dtype=np.uint8)
    return torch.from_numpy(raw).view(dtype).view(shape)


def _plan_runs(names, lengths: np.ndarray, rows: int) -> list[tuple]:
    """The runs `_read_chunks` reads: (lo, hi, pieces, videos finished) with pieces
    [(name, start, stop, at)], the clips start..stop of a video going to row `at` of a run
    buffer of `rows` rows; every run but the last is full."""
    runs, pieces, lo, filled, finished = [], [], 0, 0, 0
    for name, n in zip(names, lengths.tolist()):
        start = 0
        while start < n:
            take = min(n - start, rows - filled)
            pieces.append((name, start, start + take, filled))
            start, filled = start + take, filled + take
            finished += start == n
            if filled == rows:
                runs.append((lo, lo + filled, pieces, finished))
                pieces, lo, filled, finished = [], lo + filled, 0, 0
    if pieces:
        runs.append((lo, lo + filled, pieces, finished))
    return runs


class FeatureBank:
    """A feature bank opened read-only. Use `FeatureBank.open(path)`, ideally in a `with`."""

    def __init__(self, file, path: Path):
        self._file = file
        self.path = path
        self.attrs = {k: _from_attr(v) for k, v in file.attrs.items()}
        self._tables = {s: self._read_table(s) for s in SPLITS}
        self._split_of = {n: s for s, t in self._tables.items() for n in t["names"]}

    @classmethod
    def open(cls, path) -> "FeatureBank":
        """Open a bank; BankError for a missing, truncated, foreign or wrong-version file."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise BankError(f"{path}: no such feature bank file")
        try:
            file = h5py.File(path, "r")
        except OSError as err:
            raise BankError(f"{path}: not a readable HDF5 file (truncated or not a feature bank): {err}") from None
        try:
            cls._check_header(file, path)
            return cls(file, path)
        except OSError as err:   # HDF5 metadata whose checksum fails
            file.close()
            raise BankError(f"{path}: damaged feature bank: {_first_line(err)}") from None
        except BaseException:
            file.close()
            raise

    @staticmethod
    def _check_header(file, path: Path):
        fmt = _from_attr(file.attrs.get("format"))
        if fmt != BANK_FORMAT:
            raise BankError(f"{path}: not a cupl feature bank (attribute 'format' is {fmt!r}, "
                            f"expected {BANK_FORMAT!r})")
        version = _from_attr(file.attrs.get("version"))
        if version != BANK_VERSION:
            raise BankError(f"{path}: feature bank version {version!r}; this cupl reads version {BANK_VERSION}")
        if any(f"index/{s}" not in file for s in SPLITS):
            raise BankError(f"{path}: incomplete feature bank (no split index)")

    def _read_table(self, split: str) -> dict:
        try:
            g = self._file[f"index/{split}"]
            table = {k: g[k][()] for k in g if k not in ("names", "categories")}
            table["names"] = list(g["names"].asstr()[()])
            table["categories"] = list(g["categories"].asstr()[()])
        except (KeyError, OSError) as err:
            raise BankError(f"{self.path}: damaged index of split {split!r}: {err}") from None
        return table

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        counts = ", ".join(f"{s}: {len(t['names'])}" for s, t in self._tables.items())
        return f"FeatureBank({str(self.path)!r}, {counts})"

    # ----------------------------------------------------------------- per video

    def _table(self, split: str) -> dict:
        if split not in SPLITS:
            raise BankError(f"{self.path}: split must be one of {SPLITS}, got {split!r}")
        return self._tables[split]

    def _group(self, name: str):
        split = self._split_of.get(name)
        if split is None:
            raise BankError(f"{self.path}: no video named {name!r}")
        return self._file[f"{split}/{name}"]

    def _dataset(self, name: str, key: str, what: str):
        with self._reading(name, key):
            group = self._group(name)
            if key not in group:
                raise BankError(f"{self.path}: video {name!r} has no {what}")
            return group[key]

    def _read(self, name: str, key: str, what: str) -> np.ndarray:
        ds = self._dataset(name, key, what)
        with self._reading(name, key):
            return ds[()]

    @contextmanager
    def _reading(self, name: str, key: str):
        """h5py's errors while reading become a BankError naming the file, video and dataset:
        a checksum that fails, a chunk that cannot be read."""
        try:
            yield
        except OSError as err:
            raise BankError(f"{self.path}: video {name!r}: dataset {key!r} is damaged "
                            f"(checksum mismatch or unreadable bytes): {_first_line(err)}") from None

    def videos(self, split) -> list[VideoRecord]:
        """The split's videos in list order."""
        t = self._table(split)
        return [VideoRecord(n, int(lab), c, int(nf), int(nc)) for n, lab, c, nf, nc in
                zip(t["names"], t["labels"], t["categories"], t["num_frames"], t["clips_rgb"])]

    def features(self, name, modality="rgb") -> np.ndarray:
        """[T, crops, D] float32 features of one video ([T, 1, 128] for audio)."""
        return self._read(name, modality, f"{modality!r} features").astype(np.float32)

    def frame_labels(self, name) -> np.ndarray:
        """uint8 [num_frames] abnormal-frame mask of a test video."""
        return self._read(name, "frame_labels", "frame labels (only test videos do)")

    def oracle_clip_labels(self, name) -> np.ndarray:
        """float32 [T]: the fraction of each clip inside an anomalous event, known only for the
        training videos of synthetic banks. For diagnostics of pseudo labels; training code
        never reads it."""
        return self._read(name, "oracle_clip_labels", "oracle clip labels (only training "
                          "videos of synthetic banks do)")

    # ----------------------------------------------------------------- whole splits

    def load_split(self, split, *, modality="rgb", dtype=None, device="cpu",
                   progress=False) -> Split:
        """The whole split as one `Split`: features [N, C, D] concatenated in list order.

        modality: "rgb", "audio" or "rgb+audio". Fusion broadcasts audio [T, 1, Da] over the
        C crops and concatenates it on D: [N, C, D + Da]. Where a video's rgb and audio
        streams differ in length, only their common prefix of min(T_rgb, T_audio) clips is
        kept (real audio and visual features are extracted at different rates).
        Test splits carry `frame_labels`. dtype: a torch dtype, float32 when None.
        Videos are read in runs (`_read_chunks`) and converted to `dtype` on `device`, into
        one tensor allocated there: on CUDA from pinned memory, the next run read while the
        last one is copied, and no float32 or whole-split copy on the host; on the CPU through
        a buffer of `READ_CHUNK_BYTES` that stays in the CPU cache from read to conversion.
        A checksum that fails is a BankError naming the video.
        """
        import torch

        from cupl.data.split import Split

        dtype = torch.float32 if dtype is None else dtype
        files.read_ahead(self.path)
        table = self._table(split)
        names = table["names"]
        if not names:
            raise BankError(f"{self.path}: split {split!r} has no videos")
        parts = self._parts(modality)
        lengths = np.minimum.reduce([table[f"clips_{m}"] for m in parts])
        device = torch.device(device)
        shapes = [self._file[f"{split}/{names[0]}/{m}"].shape[1:] for m in parts]
        crops, dims = shapes[0][0], [shape[1] for shape in shapes]
        feats = split_tensor((int(lengths.sum()), crops, sum(dims)), dtype, device)
        # audio [T, 1, Da] is broadcast over the crops by the assignment
        for m, lo_dim, dim in zip(parts, np.cumsum([0, *dims[:-1]]), dims):
            for lo, hi, x in self._read_chunks(split, m, lengths, device, progress):
                feats[lo:hi, :, lo_dim:lo_dim + dim] = x
        offsets = torch.zeros(len(names) + 1, dtype=torch.long)
        offsets[1:] = torch.from_numpy(np.cumsum(lengths))
        frame_labels = [self.frame_labels(n) for n in names] if split == "test" else None
        return Split(
            features=feats,
            offsets=offsets.to(device),
            labels=torch.as_tensor(table["labels"], dtype=torch.long, device=device),
            names=list(names),
            categories=list(table["categories"]),
            num_frames=torch.as_tensor(table["num_frames"], dtype=torch.long, device=device),
            frame_labels=frame_labels,
            frames_per_clip=int(self.attrs["frames_per_clip"]),
            attrs=dict(self.attrs, bank=str(self.path), split=split, modality=modality),
        )

    def oracle_split_labels(self, split, *, modality="rgb") -> torch.Tensor:
        """[N] float32 oracle clip labels of the whole split, aligned row by row with
        `load_split(split, modality=modality)`. Diagnostics only."""
        import torch

        table = self._table(split)
        lengths = np.minimum.reduce([table[f"clips_{m}"] for m in self._parts(modality)])
        out = np.empty(int(lengths.sum()), dtype=np.float32)
        start = 0
        for name, n in zip(table["names"], lengths):
            out[start:start + n] = self.oracle_clip_labels(name)[:n]
            start += n
        return torch.from_numpy(out)

    def _parts(self, modality: str) -> list[str]:
        parts = modality.split("+")
        allowed = ("rgb", "audio", "rgb+audio")
        if modality not in allowed:
            raise BankError(f"{self.path}: modality must be one of {allowed}, got {modality!r}")
        missing = [m for m in parts if m not in self.attrs["modalities"]]
        if missing:
            raise BankError(f"{self.path}: bank has modalities {self.attrs['modalities']}, not {missing}")
        return parts

    def _read_chunks(self, split: str, modality: str, lengths: np.ndarray, device: torch.device, progress):
        """Yield (lo, hi, x) over runs of rows: x [hi - lo, C, D] are rows lo..hi of the split
        (video v's first lengths[v] clips, in list order) on `device`, in the stored dtype.

        A run fills `READ_CHUNK_BYTES` on the CPU, small enough to stay in the CPU cache until it
        is converted, and `PINNED_READ_BYTES` of pinned memory on CUDA; long videos are read in
        pieces. Two buffers alternate: a reader thread fills the next run (HDF5 read and
        checksums) while the caller converts the last one (or, on CUDA, while it is copied), and
        a buffer is refilled only once its run has been used. x is only valid until the next
        run is yielded.
        """
        import torch
        from tqdm import tqdm

        names = self._tables[split]["names"]
        first = self._file[f"{split}/{names[0]}/{modality}"]
        row_bytes = first.dtype.itemsize * int(np.prod(first.shape[1:]))
        pinned = device.type == "cuda"
        rows = max(1, (PINNED_READ_BYTES if pinned else READ_CHUNK_BYTES) // row_bytes)
        stored = torch.from_numpy(np.empty(0, dtype=first.dtype)).dtype
        buffers = [torch.empty((rows, *first.shape[1:]), dtype=stored, pin_memory=pinned) for _ in range(2)]
        copied = [None] * len(buffers)
        runs = _plan_runs(names, lengths, rows)
        bar = tqdm(total=len(names), disable=not progress, unit="video", desc=f"{split} {modality}")

        def fill(slot: int, pieces) -> None:
            host = self._claim(buffers, copied, slot)
            for name, start, stop, at in pieces:
                self._read_rows(split, name, modality, start, stop, host[at:at + stop - start])

        with ThreadPoolExecutor(1, thread_name_prefix="bank-read") as reader:
            pending = reader.submit(fill, 0, runs[0][2]) if runs else None
            for i, (lo, hi, _, done) in enumerate(runs):
                pending.result()
                if i + 1 < len(runs):
                    pending = reader.submit(fill, (i + 1) % 2, runs[i + 1][2])
                try:
                    yield lo, hi, self._send(buffers, copied, i % 2, hi - lo, device)
                except GeneratorExit:
                    pending.cancel()
                    raise
                bar.update(done)
        bar.update(bar.total - bar.n)  # videos without clips
        bar.close()

    def _read_rows(self, split: str, name: str, modality: str, start: int, stop: int, out: np.ndarray):
        """Rows start..stop of a video's features into `out`, checksums verified."""
        import h5py

        with self._reading(name, modality):
            ds = self._file[f"{split}/{name}/{modality}"]
            if start == 0 and stop == ds.shape[0]:   # the low-level read skips building selections
                ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
            else:
                ds.read_direct(out, source_sel=np.s_[start:stop])

    @staticmethod
    def _send(buffers, copied, slot: int, filled: int, device: torch.device) -> torch.Tensor:
        import torch

        x = buffers[slot][:filled].to(device, non_blocking=True)
        if device.type == "cuda":
            copied[slot] = torch.cuda.Event()
            copied[slot].record()
        return x

    @staticmethod
    def _claim(buffers, copied, slot: int) -> np.ndarray:
        """The host buffer of `slot`, once its last copy to the device has ended."""
        if copied[slot] is not None:
            copied[slot].synchronize()
        return buffers[slot].numpy()
