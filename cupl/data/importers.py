"""Real features into a FeatureBank: UCF-Crime, XD-Violence and TAD as the field distributes them.

- UCF-Crime, RTFM 10-crop I3D: list files of ``<video>_i3d.npy`` paths, each ``[T, 10, 2048]``
  with ``T = ceil(frames / 16)`` (the last clip loop-padded), and the temporal annotation.
- XD-Violence: per-crop ``<video>__0.npy .. __4.npy`` ``[T, D]`` (each video once per crop in
  the list), optional ``<video>__vggish.npy`` ``[T, 128]`` audio, and ``annotations.txt``.
  RGB becomes the crops of modality ``rgb``, audio the one-crop modality ``audio``, so
  ``load_split(modality="rgb+audio")`` gives Table 3's I3D+VGGish fusion.
- TAD: the UMIL label files, with features in the RTFM layout named by a pattern.

Everything is checked before anything is written, and every problem is listed at once in a
`FeatureImportError`: missing files, pickled or object arrays (never unpickled: loading
them runs arbitrary code), wrong dtype or shape, empty or non-finite features, lengths that
break ``T = ceil(frames / 16)``, and list/annotation disagreements. The bank is then written
atomically, so an interrupted import leaves no bank behind. Frame labels follow the interval
rule of `cupl.data.annotations`; clipped intervals are listed in the bank's ``clipped`` attribute
(JSON: video -> notes), the annotation files' quirks the parsers noted in ``annotation_notes`` (JSON: file -> notes),
videos whose RGB and audio differ by a clip in ``uneven_modalities``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cupl.data.annotations import (
    AnnotationError,
    frame_mask,
    parse_tad_labels,
    parse_ucf_annotations,
    parse_xd_annotations,
    read_list,
    video_name,
    xd_category,
)

FRAMES_PER_CLIP = 16
VGGISH_DIM = 128
# RGB and audio extractors round a video's end differently, so their clip counts may differ
# by one; the bank fuses their common prefix. A larger gap means mismatched files.
MAX_MODALITY_GAP = 1
_CHUNK_BYTES = 1 << 26  # finiteness is checked in chunks of ~64 MB, so huge videos stay cheap
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class FeatureImportError(ValueError):
    """Features or annotations that cannot be imported; `problems` lists every offence."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n  ".join(self.problems)
        super().__init__(f"{len(self.problems)} problem(s); nothing was written:\n  {lines}")


@dataclass(frozen=True)
class Layout:
    """How one modality is stored: each file ``[T, C, D]`` (ndim 3) or ``[T, D]`` per crop (ndim 2).

    dim: the required feature size, or None for "the same in every video".
    """

    ndim: int
    dim: int | None = None


RTFM = Layout(ndim=3)
PER_CROP = Layout(ndim=2)
VGGISH = Layout(ndim=2, dim=VGGISH_DIM)


@dataclass
class VideoSource:
    """One video to import: where its features are and what the lists and annotations say.

    files: modality -> its files, one ``[T, C, D]`` file or one ``[T, D]`` file per crop.
    num_frames: the frame count where an annotation states it, else None (then T * 16).
    """

    name: str
    split: str
    label: int
    category: str
    files: dict[str, list[Path]]
    num_frames: int | None = None
    intervals: tuple = ()
    lengths: dict[str, int] = field(default_factory=dict, init=False)
    clips: int = field(default=0, init=False)


# ---------------------------------------------------------------------------------------
# Checking one file and one video


def _pickle_refusal(path: Path, what: str) -> str:
    return (f"{path}: {what}; refused because unpickling runs arbitrary code and features must "
            f"be a plain float array (re-save with np.save(path, np.asarray(x, dtype=np.float32)))")


def open_features(path: Path) -> np.ndarray:
    """A feature file memory-mapped with ``allow_pickle=False``; raises FeatureImportError."""
    if not path.is_file():
        raise FeatureImportError([f"{path}: missing file"])
    with open(path, "rb") as fp:
        magic = fp.read(6)
    if magic[:1] == b"\x80":  # the pickle protocol opcode
        raise FeatureImportError([_pickle_refusal(path, "a pickled Python file, not a .npy array")])
    if magic != b"\x93NUMPY":
        raise FeatureImportError([f"{path}: not a .npy file"])
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "Python objects" in str(err):
            raise FeatureImportError([_pickle_refusal(path, "an object array (stored pickled)")]) from None
        raise FeatureImportError([f"{path}: unreadable .npy ({err})"]) from None


def _finite_problems(path: Path, arr: np.ndarray, out_dtype: str) -> list[str]:
    rows = max(1, _CHUNK_BYTES // max(1, arr[:1].nbytes))
    bad = big = 0
    for i in range(0, arr.shape[0], rows):
        chunk = np.asarray(arr[i:i + rows])
        finite = np.isfinite(chunk)
        bad += int((~finite).sum())
        if out_dtype == "float16":
            big += int((np.abs(np.where(finite, chunk, 0)) > _FLOAT16_MAX).sum())
    problems = []
    if bad:
        problems.append(f"{path}: {bad} non-finite values (NaN or inf)")
    if big:
        problems.append(f"{path}: {big} values beyond float16's range {_FLOAT16_MAX:g}; import with dtype float32")
    return problems


def check_file(path: Path, layout: Layout, out_dtype: str) -> tuple[tuple | None, list[str]]:
    """(shape, problems) of one feature file; shape is None when the file is unusable."""
    try:
        arr = open_features(path)
    except FeatureImportError as err:
        return None, err.problems
    expected = "[T, crops, D]" if layout.ndim == 3 else f"[T, {layout.dim or 'D'}]"
    if not np.issubdtype(arr.dtype, np.floating):
        return None, [f"{path}: dtype {arr.dtype}, expected a float array (float16/32/64)"]
    if arr.ndim != layout.ndim:
        return None, [f"{path}: shape {arr.shape}, expected {expected}"]
    if layout.dim is not None and arr.shape[-1] != layout.dim:
        return None, [f"{path}: shape {arr.shape}, expected {expected}"]
    if 0 in arr.shape:
        return None, [f"{path}: empty array of shape {arr.shape}"]
    problems = _finite_problems(path, arr, out_dtype)
    return (None if problems else arr.shape), problems


def _check_video(src: VideoSource, layouts: dict[str, Layout], out_dtype: str) -> tuple[dict, list[str]]:
    """Per-modality clip shape (C, D) of one video and its problems; sets `src.clips`."""
    problems, clip_shapes, lengths = [], {}, {}
    for modality, paths in src.files.items():
        shapes = []
        for path in paths:
            shape, bad = check_file(path, layouts[modality], out_dtype)
            problems += bad
            shapes.append(shape)
        if problems or not shapes:
            continue
        if len({s[0] for s in shapes}) > 1:
            problems.append(f"{src.name}: its {modality} crops differ in length {[s[0] for s in shapes]}")
            continue
        if len({s[1:] for s in shapes}) > 1:
            problems.append(f"{src.name}: its {modality} crops differ in shape {[s for s in shapes]}")
            continue
        lengths[modality] = shapes[0][0]
        crops = shapes[0][1] if layouts[modality].ndim == 3 else len(shapes)
        clip_shapes[modality] = (crops, shapes[0][-1])
    if problems:
        return {}, problems
    if max(lengths.values()) - min(lengths.values()) > MAX_MODALITY_GAP:
        return {}, [f"{src.name}: modalities differ by more than {MAX_MODALITY_GAP} clip in length {lengths}"]
    src.lengths, src.clips = lengths, min(lengths.values())
    if src.num_frames is not None:
        problems += _length_problems(src)
    return clip_shapes, problems


def _length_problems(src: VideoSource) -> list[str]:
    """The RTFM clip rule: ``T = ceil(frames / 16)``, i.e. ``16 T >= frames > 16 (T - 1)``."""
    t, frames = src.clips, src.num_frames
    if t * FRAMES_PER_CLIP >= frames > (t - 1) * FRAMES_PER_CLIP:
        return []
    return [f"{src.name}: {t} clips but {frames} frames need ceil({frames}/{FRAMES_PER_CLIP}) = "
            f"{math.ceil(frames / FRAMES_PER_CLIP)} clips ({FRAMES_PER_CLIP}-frame clips, last one padded)"]


def check_sources(sources: list[VideoSource], layouts: dict[str, Layout], out_dtype: str = "float16",
                  progress: bool = True) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """Check every video; returns the common clip shape (C, D) per modality and all problems.

    The common shape is the one most videos have, so one odd file is named, not the rest.
    """
    from tqdm import tqdm

    problems, shapes = [], []
    for src in tqdm(sources, desc="checking features", unit="video", disable=not progress):
        clip_shapes, bad = _check_video(src, layouts, out_dtype)
        problems += bad
        shapes.append(clip_shapes)
    common = {}
    for modality in layouts:
        counts = Counter(s[modality] for s in shapes if modality in s)
        if not counts:
            continue
        common[modality] = counts.most_common(1)[0][0]
        for src, s in zip(sources, shapes):
            if modality in s and s[modality] != common[modality]:
                problems.append(
                    f"{src.name}: {modality} clips of shape (crops, D) = {s[modality]}, "
                    f"but the other videos have {common[modality]}")
    return common, problems


# ---------------------------------------------------------------------------------------
# Lists, names and annotations


def resolve(entry: str, list_path: Path, feature_root=None) -> Path:
    """A list entry as a path: under `feature_root` by file name if given, else as written
    (relative entries relative to the list file)."""
    if feature_root is not None:
        return Path(feature_root) / entry.replace("\\", "/").rsplit("/", 1)[-1]
    path = Path(entry)
    return path if path.is_absolute() else list_path.parent / path


def _duplicates(names) -> list[str]:
    return [n for n, c in Counter(names).items() if c > 1]


def _cross_check(listed, other, list_path, other_path) -> list[str]:
    """Videos of a list missing from another file (annotations, audio list), and the reverse."""
    listed_set, other_set = set(listed), set(other)
    problems = [f"{name}: in {list_path} but not in {other_path}" for name in listed if name not in other_set]
    problems += [f"{name}: in {other_path} but not in {list_path}" for name in other if name not in listed_set]
    return problems


def _split_problems(sources: list[VideoSource]) -> list[str]:
    problems = []
    for split in ("train", "test"):
        names = [s.name for s in sources if s.split == split]
        problems += [f"{n}: listed more than once in the {split} list" for n in _duplicates(names)]
    train = {s.name for s in sources if s.split == "train"}
    problems += [f"{s.name}: listed in both the train and the test list"
                 for s in sources if s.split == "test" and s.name in train]
    return problems


def _ucf_name(entry: str) -> str:
    name = video_name(entry)
    return name[:-4] if name.endswith("_i3d") else name


def _ucf_category(name: str) -> str:
    """UCF-Crime's class is the name's letter prefix (``RoadAccidents001_x264``)."""
    return "Normal" if name.startswith("Normal") else re.match(r"[A-Za-z]*", name).group(0)


# ---------------------------------------------------------------------------------------
# Writing


def _num_frames(src: VideoSource) -> int:
    """The stated frame count, else the frames the (shortest modality's) clips cover."""
    return src.num_frames if src.num_frames is not None else src.clips * FRAMES_PER_CLIP


def _mask(src: VideoSource) -> tuple[np.ndarray, list[str]]:
    return frame_mask(src.intervals, _num_frames(src), src.name)


def _load(paths: list[Path], layout: Layout) -> np.ndarray:
    """[T, C, D] features of one modality of one video (per-crop files stacked as crops)."""
    arrays = [np.load(p, allow_pickle=False) for p in paths]
    return arrays[0] if layout.ndim == 3 else np.stack(arrays, axis=1)


def _videos(sources: list[VideoSource], layouts: dict[str, Layout]):
    from cupl.data.bank import VideoData

    for src in sources:
        yield VideoData(
            name=src.name, split=src.split, label=src.label, category=src.category,
            num_frames=_num_frames(src),
            features={m: _load(paths, layouts[m]) for m, paths in src.files.items()},
            frame_labels=_mask(src)[0] if src.split == "test" else None,
        )


def import_sources(sources: list[VideoSource], layouts: dict[str, Layout], out, *, attrs: dict,
                   problems: list[str] = (), dtype: str = "float16", progress: bool = True,
                   overwrite: bool = False) -> Path:
    """Check all `sources`, then write the bank; raises FeatureImportError listing every problem.

    `problems` are those already found in the lists and annotations; they are reported
    together with the file checks so that one run names everything to fix.
    """
    from cupl.data.bank import write_bank

    problems = list(problems) + _split_problems(sources)
    if not sources:
        problems.append("no videos to import")
    common, file_problems = check_sources(sources, layouts, dtype, progress)
    problems += file_problems
    if problems:
        raise FeatureImportError(problems)
    clipped = {src.name: notes for src in sources if src.split == "test" and (notes := _mask(src)[1])}
    uneven = {src.name: src.lengths for src in sources if len(set(src.lengths.values())) > 1}
    attrs = {
        **attrs,
        "frames_per_clip": FRAMES_PER_CLIP,
        "crops": common["rgb"][0],
        "modalities": list(layouts),
        "clipped": clipped,
        "uneven_modalities": uneven,
    }
    return write_bank(out, _videos(sources, layouts), attrs=attrs, dtype=dtype, progress=progress,
                      total=len(sources), overwrite=overwrite)


# ---------------------------------------------------------------------------------------
# The three benchmarks


def import_ucf(train_list, test_list, annotations, out, *, feature_root=None, dtype: str = "float16",
               progress: bool = True, overwrite: bool = False) -> Path:
    """UCF-Crime, RTFM 10-crop I3D features, into the bank `out`.

    train_list, test_list: list files of ``<video>_i3d.npy`` paths ``[T, crops, D]``.
    annotations: the temporal annotation, 6 or 7 columns (`parse_ucf_annotations`); with 7,
        every test video's clip count is checked against ``ceil(frames / 16)``.
    feature_root: folder holding the ``.npy`` files, when the lists name other machines' paths.
    Training videos' frame counts are unknown and stored as ``T * 16``.
    """
    train_list, test_list, annotations = Path(train_list), Path(test_list), Path(annotations)
    table = parse_ucf_annotations(annotations)
    sources, problems = [], []
    for split, list_path in (("train", train_list), ("test", test_list)):
        for entry in read_list(list_path):
            name = _ucf_name(entry)
            label = int(not name.startswith("Normal"))
            src = VideoSource(name, split, label, _ucf_category(name),
                              {"rgb": [resolve(entry, list_path, feature_root)]})
            if split == "test" and name in table:
                ann = table[name]
                if ann.label != label:
                    problems.append(f"{name}: annotated as {ann.category} in {annotations}, "
                                    f"but its name says {'abnormal' if label else 'normal'}")
                src.category, src.intervals, src.num_frames = ann.category, ann.intervals, ann.num_frames
            sources.append(src)
    problems += _cross_check([s.name for s in sources if s.split == "test"], table, test_list, annotations)
    attrs = {"source": "ucf-crime", "feature_kind": "i3d-rtfm",
             "imported_from": [str(train_list), str(test_list), str(annotations)],
             "num_frames_from": "test: annotation" if _has_counts(table) else "feature length (T*16)",
             "annotation_notes": {str(annotations): table.notes}}
    return import_sources(sources, {"rgb": RTFM}, out, attrs=attrs, problems=problems, dtype=dtype,
                          progress=progress, overwrite=overwrite)


def _has_counts(table) -> bool:
    return all(a.num_frames is not None for a in table.values())


_XD_CROP = re.compile(r"(.+)__(\d+)\.npy")
_XD_AUDIO = re.compile(r"(.+)__vggish\.npy")


def _xd_group(list_path: Path, pattern: re.Pattern, feature_root) -> tuple[dict, list[str]]:
    """{video: {key: path}} from an XD list, in first-appearance order, and malformed entries."""
    groups: dict[str, dict[str, Path]] = {}
    problems = []
    for entry in read_list(list_path):
        match = pattern.fullmatch(entry.replace("\\", "/").rsplit("/", 1)[-1])
        if match is None:
            problems.append(f"{list_path}: entry {entry} does not match '{pattern.pattern}'")
            continue
        name, key = match.group(1), match.group(2) if pattern.groups > 1 else "audio"
        if key in groups.setdefault(name, {}):
            problems.append(f"{name}: listed twice in {list_path}")
        groups[name][key] = resolve(entry, list_path, feature_root)
    return groups, problems


def _xd_sources(split: str, list_path: Path, audio_list, feature_root) -> tuple[list[VideoSource], list[str]]:
    groups, problems = _xd_group(list_path, _XD_CROP, feature_root)
    crop_sets = Counter(tuple(sorted(g, key=int)) for g in groups.values())
    crops = crop_sets.most_common(1)[0][0] if crop_sets else ()
    audio = {}
    if audio_list is not None:
        audio, bad = _xd_group(Path(audio_list), _XD_AUDIO, feature_root)
        problems += bad
        problems += _cross_check(list(groups), audio, list_path, audio_list)
    sources = []
    for name, files in groups.items():
        if tuple(sorted(files, key=int)) != crops:
            problems.append(f"{name}: crops {sorted(files, key=int)} in {list_path}, the others have {list(crops)}")
        try:
            category = xd_category(name)
        except AnnotationError as err:
            problems.append(str(err))
            category = "unknown"
        src = VideoSource(name, split, int(category != "Normal"), category,
                          {"rgb": [files[k] for k in sorted(files, key=int)]})
        if name in audio:
            src.files["audio"] = [audio[name]["audio"]]
        sources.append(src)
    return sources, problems


def import_xd(train_list, test_list, annotations, out, *, audio_train_list=None, audio_test_list=None,
              feature_root=None, dtype: str = "float16", progress: bool = True,
              overwrite: bool = False) -> Path:
    """XD-Violence, 5-crop I3D (+ VGGish audio), into the bank `out`.

    train_list, test_list: list files naming ``<video>__<crop>.npy`` ``[T, D]``, one line per crop.
    audio_*_list: list files of ``<video>__vggish.npy`` ``[T, 128]``; give both or neither.
    annotations: ``annotations.txt``, abnormal test videos only (`parse_xd_annotations`).
    XD's frame counts are not distributed with the features: ``num_frames = T * 16``.
    """
    if (audio_train_list is None) != (audio_test_list is None):
        raise ValueError("give both audio_train_list and audio_test_list, or neither")
    annotations = Path(annotations)
    table = parse_xd_annotations(annotations)
    sources, problems = [], []
    for split, list_path, audio_list in (("train", Path(train_list), audio_train_list),
                                         ("test", Path(test_list), audio_test_list)):
        split_sources, bad = _xd_sources(split, list_path, audio_list, feature_root)
        sources += split_sources
        problems += bad
    test = [s for s in sources if s.split == "test"]
    problems += _cross_check([s.name for s in test if s.label == 1], table, test_list, annotations)
    for src in test:
        if src.name in table:
            src.intervals = table[src.name].intervals
    layouts = {"rgb": PER_CROP, "audio": VGGISH} if audio_train_list is not None else {"rgb": PER_CROP}
    attrs = {"source": "xd-violence", "feature_kind": "i3d+vggish" if "audio" in layouts else "i3d",
             "imported_from": [str(p) for p in (train_list, test_list, annotations, audio_train_list,
                                                 audio_test_list) if p is not None],
             "num_frames_from": "feature length (T*16)",
             "annotation_notes": {str(annotations): table.notes}}
    return import_sources(sources, layouts, out, attrs=attrs, problems=problems, dtype=dtype,
                          progress=progress, overwrite=overwrite)


def import_tad(train_labels, test_labels, feature_root, out, *, pattern: str = "{name}_i3d.npy",
               dtype: str = "float16", progress: bool = True, overwrite: bool = False) -> Path:
    """TAD, UMIL label files with RTFM-layout features ``[T, crops, D]``, into the bank `out`.

    feature_root: folder of the feature files, named ``pattern.format(name=video)``.
    Frame counts come from the label files, so every clip count is checked.
    """
    sources, notes = [], {}
    for split, path in (("train", train_labels), ("test", test_labels)):
        table = parse_tad_labels(path, split)
        notes[str(path)] = table.notes
        for ann in table.values():
            sources.append(VideoSource(
                ann.name, split, ann.label, ann.category,
                {"rgb": [Path(feature_root) / pattern.format(name=ann.name)]},
                num_frames=ann.num_frames, intervals=ann.intervals))
    attrs = {"source": "tad", "feature_kind": "i3d-rtfm",
             "imported_from": [str(train_labels), str(test_labels), str(feature_root)],
             "num_frames_from": "label files", "annotation_notes": notes}
    return import_sources(sources, {"rgb": RTFM}, out, attrs=attrs, dtype=dtype, progress=progress,
                          overwrite=overwrite)
