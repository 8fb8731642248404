"""The benchmarks' own annotation files, read as they are distributed (Sec. 4.1).

Three formats carry the test videos' abnormal intervals, and one the lists of feature files:

- UCF-Crime temporal annotation (Sultani et al.): ``video.mp4 class s1 e1 s2 e2 [frames]``,
  whitespace separated; the original has 6 columns, the common variant adds the frame count
  as a 7th; ``-1`` marks a missing interval; normal videos have class ``Normal``.
- XD-Violence ``annotations.txt``: ``name s1 e1 [s2 e2 ...]``, abnormal test videos only;
  some names carry ``.mp4``.
- Label files in the UMIL layout (TAD, and UCF-Crime's training frame counts): test
  ``path num_frames class start end``, train ``path 0 num_frames class``; class 0 is normal.
- List files: one feature path per line.

The parsers read the files as they are. A real file's quirk is neither an error nor silently
mended: the parser returns it in the table's `notes`, one line per occurrence naming file,
line and video (XD names with ``.mp4``; TAD's dummy interval ``0 num_frames`` on normal test
videos, read as no interval; intervals ending past a stated frame count).

**The interval rule, stated once.** Frames are 0-based and an interval ``(start, end)``
marks frames ``start <= f < end`` abnormal: the end is exclusive. This is the rule of the
authors' released evaluation (``annotation[start:end] = 1``) and of XD-Violence's own
ground-truth script; RTFM's UCF script includes the end frame instead, which moves one
frame per interval. An interval reaching past the video is clipped to ``num_frames`` (UCF's
Arson011 ends at 1267 in a 1266-frame video; TAD's ends are often ``num_frames + 1``) and
the clip is reported, never silent: `clip_intervals` and `frame_mask` return a note for every
clipped interval. XD-Violence's frame-level ground truth covers ``16 * num_clips`` frames, so
there the video ends at its last full 16-frame clip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class AnnotationError(ValueError):
    """A malformed annotation or list file; the message names the file and line."""


@dataclass(frozen=True)
class VideoAnnotation:
    """One annotated test video.

    name:       video name without extension (``Arson011_x264``).
    category:   class name, ``"Normal"`` for normal videos.
    intervals:  abnormal ``(start, end)`` frame pairs, 0-based, end exclusive, as written.
    num_frames: frames of the video where the file states it, else None.
    """

    name: str
    category: str
    intervals: tuple[tuple[int, int], ...]
    num_frames: int | None = None

    @property
    def label(self) -> int:
        """The weak video-level label: 1 abnormal, 0 normal."""
        return int(self.category != "Normal")


class Annotations(dict):
    """{name: VideoAnnotation} in file order, with `notes` on the file's quirks (a list of str)."""

    def __init__(self):
        super().__init__()
        self.notes: list[str] = []


def clip_intervals(intervals, num_frames: int, name: str = "video") -> tuple[tuple[tuple[int, int], ...], list[str]]:
    """Intervals ``(s, e)`` clipped to ``[0, num_frames)``, and a note for every one changed.

    An end past ``num_frames`` becomes ``num_frames``; an interval starting at or beyond it
    is dropped.
    """
    if num_frames < 1:
        raise ValueError(f"{name}: num_frames must be >= 1, got {num_frames}")
    kept, notes = [], []
    for start, end in intervals:
        if start >= num_frames:
            notes.append(f"{name}: interval [{start}, {end}) starts beyond its {num_frames} frames; dropped")
            continue
        if end > num_frames:
            notes.append(
                f"{name}: interval [{start}, {end}) ends beyond its {num_frames} frames; "
                f"clipped to [{start}, {num_frames})"
            )
        kept.append((start, min(end, num_frames)))
    return tuple(kept), notes


def frame_mask(intervals, num_frames: int, name: str = "video") -> tuple[np.ndarray, list[str]]:
    """Abnormal frames of one video as a uint8 mask [num_frames], and notes on clipping.

    Interval ``(s, e)`` marks frames ``s <= f < e`` (0-based, end exclusive). Ends past
    ``num_frames`` are clipped to it and reported; an interval starting at or beyond the
    last frame is dropped and reported.
    """
    kept, notes = clip_intervals(intervals, num_frames, name)
    mask = np.zeros(num_frames, dtype=np.uint8)
    for start, end in kept:
        mask[start:end] = 1
    return mask, notes


def read_list(path) -> list[str]:
    """The non-blank lines of a list file, stripped, in file order."""
    path = Path(path)
    entries = [line.strip() for line in path.read_text().splitlines()]
    entries = [e for e in entries if e]
    if not entries:
        raise AnnotationError(f"{path}: list file is empty")
    return entries


def video_name(entry: str) -> str:
    """The video name of a list or annotation entry: file name without folders and extension."""
    name = entry.replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-4] if name.endswith((".mp4", ".avi", ".npy")) else name


def _ints(path: Path, lineno: int, fields: list[str]) -> list[int]:
    try:
        return [int(f) for f in fields]
    except ValueError:
        raise AnnotationError(f"{path}:{lineno}: expected integer frame numbers, got {fields}") from None


def _pairs(path: Path, lineno: int, values: list[int]) -> tuple[tuple[int, int], ...]:
    """Frame pairs ``s e`` from a flat list; ``-1`` pairs mean "no interval"."""
    if len(values) % 2:
        raise AnnotationError(f"{path}:{lineno}: frame numbers must come in start/end pairs, got {values}")
    pairs = []
    for start, end in zip(values[::2], values[1::2]):
        if start == -1 and end == -1:
            continue
        if not 0 <= start < end:
            raise AnnotationError(
                f"{path}:{lineno}: interval ({start}, {end}) must satisfy 0 <= start < end"
            )
        pairs.append((start, end))
    return tuple(pairs)


def _add(table: Annotations, path: Path, lineno: int, ann: VideoAnnotation):
    if ann.name in table:
        raise AnnotationError(f"{path}:{lineno}: video {ann.name} is annotated twice")
    table[ann.name] = ann
    if ann.num_frames is not None:
        # kept as written: the interval rule clips it wherever a mask or plan is built
        table.notes += [f"{path}:{lineno}: {note} by the interval rule"
                        for note in clip_intervals(ann.intervals, ann.num_frames, ann.name)[1]]

def _rows(path: Path):
    """(line number, whitespace-separated fields) of every non-blank line of a text file."""
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if fields:
            yield lineno, fields


def parse_ucf_annotations(path) -> Annotations:
    """UCF-Crime temporal annotation, 6-column original or 7-column with frame counts.

    Returns `Annotations` {name: VideoAnnotation} in file order; ``num_frames`` is None for 6
    columns; `notes` names the intervals that end past the stated frame count.
    """
    path = Path(path)
    table = Annotations()
    for lineno, fields in _rows(path):
        if len(fields) not in (6, 7):
            raise AnnotationError(
                f"{path}:{lineno}: expected 6 columns (video class s1 e1 s2 e2) or 7 "
                f"(... num_frames), got {len(fields)}"
            )
        values = _ints(path, lineno, fields[2:])
        num_frames = values[4] if len(values) == 5 else None
        if num_frames is not None and num_frames < 1:
            raise AnnotationError(f"{path}:{lineno}: frame count must be >= 1, got {num_frames}")
        _add(table, path, lineno, VideoAnnotation(
            video_name(fields[0]), fields[1], _pairs(path, lineno, values[:4]), num_frames))
    if not table:
        raise AnnotationError(f"{path}: no annotations")
    return table


def parse_xd_annotations(path) -> Annotations:
    """XD-Violence ``annotations.txt``: abnormal test videos and their frame pairs.

    The category is the video's first XD label code (see `xd_category`). A name written
    with ``.mp4`` (the feature names have none) is read without it and noted. The file
    states no frame counts: intervals past the video are clipped where the clip count is
    known (`cupl.data.reference`, the importer's frame masks).
    """
    path = Path(path)
    table = Annotations()
    for lineno, fields in _rows(path):
        name = video_name(fields[0])
        if fields[0].endswith(".mp4"):
            table.notes.append(f"{path}:{lineno}: {fields[0]} carries '.mp4', which the feature names lack; "
                               f"read as {name}")
        intervals = _pairs(path, lineno, _ints(path, lineno, fields[1:]))
        if not intervals:
            raise AnnotationError(f"{path}:{lineno}: {name} has no abnormal interval")
        _add(table, path, lineno, VideoAnnotation(name, xd_category(name), intervals))
    if not table:
        raise AnnotationError(f"{path}: no annotations")
    return table


# XD-Violence encodes classes in the name: "..._label_B2-G-0"; A is normal.
XD_CLASSES = {"A": "Normal", "B1": "Fighting", "B2": "Shooting", "B4": "Riot", "B5": "Abuse",
              "B6": "CarAccident", "G": "Explosion"}


def xd_category(name: str) -> str:
    """The first class of an XD-Violence video name (``..._label_B1-0-0`` -> ``Fighting``)."""
    match = re.search(r"_label_([A-Z][0-9]?)", name)
    if match is None:
        raise AnnotationError(f"XD-Violence video {name}: no '_label_<code>' in the name")
    return XD_CLASSES.get(match.group(1), match.group(1))


def tad_category(name: str, cls: int) -> str:
    """TAD class name from ``NN_Class_NNN`` names; ``Normal`` for class 0."""
    if cls == 0:
        return "Normal"
    match = re.fullmatch(r"\d+_(.+)_\d+", name)
    return match.group(1) if match else f"class{cls}"


def parse_tad_labels(path, split: str) -> Annotations:
    """A TAD label file in the UMIL layout (`parse_umil_labels` with TAD's class names)."""
    return parse_umil_labels(path, split, tad_category)


def parse_umil_labels(path, split: str, category=tad_category) -> Annotations:
    """A label file in the UMIL layout; `category(name, class_code)` names the class.

    test:  ``path num_frames class start end [start end ...]``; normal videos (class 0)
           carry a dummy interval (TAD: ``0 num_frames``), read as no interval and noted.
           Intervals ending past ``num_frames`` (TAD: at ``num_frames + 1``) are kept as
           written and noted; the interval rule clips them (`clip_intervals`).
    train: ``path 0 num_frames class``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    path = Path(path)
    table = Annotations()
    for lineno, fields in _rows(path):
        name = video_name(fields[0])
        values = _ints(path, lineno, fields[1:])
        if split == "train":
            if len(values) != 3 or values[0] != 0:
                raise AnnotationError(f"{path}:{lineno}: expected 'path 0 num_frames class', got {fields}")
            _, num_frames, cls = values
            intervals = ()
        else:
            if len(values) < 4 or len(values) % 2:
                raise AnnotationError(
                    f"{path}:{lineno}: expected 'path num_frames class start end', got {fields}")
            num_frames, cls = values[:2]
            intervals = _pairs(path, lineno, values[2:])
            if cls == 0 and intervals:
                table.notes.append(f"{path}:{lineno}: {name} is normal (class 0) but carries the interval(s) "
                                   f"{list(intervals)}; read as no interval")
                intervals = ()
        if num_frames < 1 or cls < 0:
            raise AnnotationError(f"{path}:{lineno}: num_frames must be >= 1 and class >= 0, got {fields}")
        _add(table, path, lineno, VideoAnnotation(name, category(name, cls), intervals, num_frames))
    if not table:
        raise AnnotationError(f"{path}: no labels")
    return table
