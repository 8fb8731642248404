"""The real UCF-Crime structure the embedded benchmark is built on (Sec. 4.1, Sultani et al.).

Reads the packaged reference files (`resources/ucf-crime/`, see `resources/PROVENANCE.md`): the 290 test
videos with their classes, frame counts and annotated intervals, and the 1,610 training
video names. Intervals follow the rule of `cupl.data.annotations`: 0-based frames, end
exclusive, as written in the file (clipping to the video happens in `frame_mask`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from cupl.data.annotations import parse_ucf_annotations, read_list

RESOURCES = Path(__file__).with_name("resources") / "ucf-crime"

# The 13 anomaly classes of UCF-Crime, in the order of the feature lists.
UCF_CLASSES = (
    "Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting",
    "RoadAccidents", "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism",
)


def category_of(name: str) -> str:
    """Class of a UCF-Crime video from its name: ``Arson011_x264`` -> ``Arson``,
    ``Normal_Videos003_x264`` -> ``Normal``."""
    match = re.fullmatch(r"([A-Za-z]+?)(_Videos)?_?\d+_x264", name)
    if match is None:
        raise ValueError(f"not a UCF-Crime video name: {name!r} (expected e.g. 'Arson011_x264')")
    return match.group(1)


@lru_cache(maxsize=1)
def _test_table() -> tuple[dict, ...]:
    annotations = parse_ucf_annotations(RESOURCES / "Temporal_Anomaly_Annotation.txt")
    rows = []
    for name in read_list(RESOURCES / "test_videos.txt"):
        ann = annotations[name]
        rows.append(dict(name=name, category=ann.category, intervals=list(ann.intervals),
                         num_frames=ann.num_frames))
    return tuple(rows)


def load_ucf_test_annotations() -> list[dict]:
    """The 290 UCF-Crime test videos in the order of the standard test feature list.

    Each entry: ``name`` (no extension), ``category`` (``"Normal"`` for normal videos),
    ``intervals`` (list of ``(start, end)`` frame pairs, 0-based, end exclusive, as
    annotated) and ``num_frames``.
    """
    return [dict(row, intervals=list(row["intervals"])) for row in _test_table()]


def load_ucf_train_names() -> list[str]:
    """The 1,610 UCF-Crime training video names in the order of the standard feature list
    (810 abnormal, then 800 normal)."""
    return read_list(RESOURCES / "train_videos.txt")
