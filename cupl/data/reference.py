"""The real structure of the paper's three benchmarks (Sec. 4.1), from the packaged reference files.

`load_reference(dataset)` gives, for ``ucf`` (UCF-Crime), ``xd`` (XD-Violence) and ``tad``
(TAD), every training and test video in the order of the standard feature lists, with its
name, weak label, class, frame count and (test videos) annotated intervals. The files are
in `resources/` (see its PROVENANCE.md); tests read those packaged copies.

What each dataset publishes:

- ``ucf``: 1,610 training videos with real frame counts (``train_frames.txt``, in the order
  of ``train_videos.txt``); 290 test videos with frame counts and intervals.
- ``xd``: 3,954 training names (class in the name), **no training lengths** (``num_frames``
  is None); 800 test videos with their clip counts, whose frame-level ground truth covers
  ``16 * num_clips`` frames, and the 500 abnormal ones' intervals.
- ``tad``: 400 training and 100 test videos with frame counts; one interval per abnormal
  test video.

Intervals are clipped to the video by the rule of `cupl.data.annotations` (XD: to the last
full clip); every clip, and every quirk the parsers met, is in `Reference.notes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cupl.data.annotations import (
    XD_CLASSES,
    AnnotationError,
    VideoAnnotation,
    clip_intervals,
    parse_tad_labels,
    parse_ucf_annotations,
    parse_umil_labels,
    parse_xd_annotations,
    read_list,
    xd_category,
)

FRAMES_PER_CLIP = 16
RESOURCES = Path(__file__).with_name("resources")
FOLDERS = {"ucf": "ucf-crime", "xd": "xd-violence", "tad": "tad"}
# frames per second of the videos: UCF-Crime 30 and XD-Violence 24 (their reference files);
# TAD's files state no rate, and its surveillance sources are taken as 30 like UCF-Crime's
FPS = {"ucf": 30.0, "xd": 24.0, "tad": 30.0}


@dataclass(frozen=True)
class RealVideo:
    """One real video as its dataset's files describe it.

    num_frames: frames of the video, None where unpublished (XD-Violence training videos).
    intervals:  abnormal ``(start, end)`` frames, 0-based, end exclusive, clipped to the video.
    """

    name: str
    label: int
    category: str
    num_frames: int | None
    intervals: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Reference:
    """A benchmark's real structure: both splits in feature-list order, and notes on its files."""

    dataset: str
    fps: float
    categories: tuple[str, ...]   # the anomaly classes, in a fixed order
    train: tuple[RealVideo, ...]
    test: tuple[RealVideo, ...]
    notes: tuple[str, ...]


def resource(dataset: str, filename: str) -> Path:
    """The packaged copy of one reference file (``resource("xd", "annotations.txt")``)."""
    if dataset not in FOLDERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(FOLDERS)}")
    return RESOURCES / FOLDERS[dataset] / filename


def load_reference(dataset: str) -> Reference:
    """The real structure of ``ucf``, ``xd`` or ``tad`` (module docstring)."""
    if dataset not in FOLDERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(FOLDERS)}")
    return _LOADERS[dataset]()


def _clipped(ann: VideoAnnotation, num_frames: int) -> tuple[RealVideo, list[str]]:
    """The annotated video with its intervals clipped to `num_frames`, and the clips' notes."""
    intervals, notes = clip_intervals(ann.intervals, num_frames, ann.name)
    return RealVideo(ann.name, ann.label, ann.category, num_frames, intervals), notes


@lru_cache(maxsize=1)
def _ucf() -> Reference:
    from cupl.data.ucf import UCF_CLASSES, category_of

    lengths = parse_umil_labels(resource("ucf", "train_frames.txt"), "train",
                                lambda name, cls: category_of(name))
    annotations = parse_ucf_annotations(resource("ucf", "Temporal_Anomaly_Annotation.txt"))
    train = tuple(RealVideo(n, lengths[n].label, lengths[n].category, lengths[n].num_frames)
                  for n in read_list(resource("ucf", "train_videos.txt")))
    # the parser has noted every interval past its stated frame count
    test = tuple(_clipped(annotations[n], annotations[n].num_frames)[0]
                 for n in read_list(resource("ucf", "test_videos.txt")))
    return Reference("ucf", FPS["ucf"], UCF_CLASSES, train, test, (*lengths.notes, *annotations.notes))


@lru_cache(maxsize=1)
def _xd() -> Reference:
    annotations = parse_xd_annotations(resource("xd", "annotations.txt"))
    notes = list(annotations.notes)
    train = []
    for name in read_list(resource("xd", "train_videos.txt")):
        category = xd_category(name)
        train.append(RealVideo(name, int(category != "Normal"), category, None))
    test = []
    for row in read_list(resource("xd", "test_videos.txt")):
        name, clips = row.split("\t")
        ann = annotations.get(name) or VideoAnnotation(name, xd_category(name), ())
        video, clipped = _clipped(ann, FRAMES_PER_CLIP * int(clips))
        test.append(video)
        notes += clipped
    unlisted = sorted(set(annotations) - {v.name for v in test})
    if unlisted:
        raise AnnotationError(f"{resource('xd', 'annotations.txt')}: {len(unlisted)} annotated videos are not "
                              f"in {resource('xd', 'test_videos.txt')}, e.g. {unlisted[0]}")
    categories = tuple(c for c in XD_CLASSES.values() if c != "Normal")
    return Reference("xd", FPS["xd"], categories, tuple(train), tuple(test), tuple(notes))


@lru_cache(maxsize=1)
def _tad() -> Reference:
    train = parse_tad_labels(resource("tad", "TAD_train.txt"), "train")
    test = parse_tad_labels(resource("tad", "TAD_test.txt"), "test")
    train_videos = tuple(RealVideo(a.name, a.label, a.category, a.num_frames) for a in train.values())
    test_videos = tuple(_clipped(a, a.num_frames)[0] for a in test.values())  # noted by the parser
    categories = tuple(dict.fromkeys(a.category for a in (*train.values(), *test.values()) if a.label))
    return Reference("tad", FPS["tad"], categories, train_videos, test_videos, (*train.notes, *test.notes))


_LOADERS = {"ucf": _ucf, "xd": _xd, "tad": _tad}
