"""Annotation parsers against hand-written files in each real format and the packaged real files.

Counts of the real files' quirks were made by hand on the files (awk), not by cupl.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from cupl.data.annotations import (
    AnnotationError,
    clip_intervals,
    frame_mask,
    parse_tad_labels,
    parse_ucf_annotations,
    parse_xd_annotations,
    read_list,
    video_name,
    xd_category,
)

RESOURCES = Path(__file__).resolve().parents[1] / "cupl" / "data" / "resources"
UCF, XD, TAD = (RESOURCES / d for d in ("ucf-crime", "xd-violence", "tad"))
# the reference folder the copies were taken from: `shared/data` beside a parent of the checkout
SHARED = next((p / "shared" / "data" for p in Path(__file__).resolve().parents[1:]
               if (p / "shared" / "data").is_dir()), Path("shared/data"))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_frame_mask_is_half_open_and_zero_based():
    mask, notes = frame_mask([(2, 5), (7, 8)], 10)
    np.testing.assert_array_equal(mask, [0, 0, 1, 1, 1, 0, 0, 1, 0, 0])
    assert mask.dtype == np.uint8
    assert notes == []


def test_frame_mask_clips_and_reports_ends_beyond_the_video():
    mask, notes = frame_mask([(680, 1267)], 1266, "Arson011_x264")
    assert mask.shape == (1266,)
    assert mask[679] == 0 and mask[680:].all()
    assert notes == ["Arson011_x264: interval [680, 1267) ends beyond its 1266 frames; clipped to [680, 1266)"]


def test_frame_mask_drops_interval_starting_past_the_end():
    mask, notes = frame_mask([(1, 2), (12, 20)], 10, "v")
    np.testing.assert_array_equal(np.flatnonzero(mask), [1])
    assert len(notes) == 1 and "dropped" in notes[0] and "[12, 20)" in notes[0]


def test_ucf_six_column_original(tmp_path):
    path = write(tmp_path, "ann.txt",
                 "Abuse028_x264.mp4  Abuse  165  240  -1  -1\n"
                 "Arson011_x264.mp4  Arson  150  420  680  1267\n"
                 "\n"
                 "Normal_Videos_003_x264.mp4  Normal  -1  -1  -1  -1\n")
    table = parse_ucf_annotations(path)
    assert list(table) == ["Abuse028_x264", "Arson011_x264", "Normal_Videos_003_x264"]
    assert table["Abuse028_x264"].intervals == ((165, 240),)
    assert table["Arson011_x264"].intervals == ((150, 420), (680, 1267))
    assert table["Normal_Videos_003_x264"].intervals == ()
    assert [a.label for a in table.values()] == [1, 1, 0]
    assert all(a.num_frames is None for a in table.values())


def test_ucf_seven_column_tab_variant(tmp_path):
    path = write(tmp_path, "ann.txt", "Arson011_x264.mp4\tArson\t150\t420\t680\t1267\t1266\n")
    ann = parse_ucf_annotations(path)["Arson011_x264"]
    assert (ann.category, ann.num_frames, ann.intervals) == ("Arson", 1266, ((150, 420), (680, 1267)))


@pytest.mark.parametrize("line, message", [
    ("A.mp4 Abuse 1 2 -1\n", "expected 6 columns"),
    ("A.mp4 Abuse x 2 -1 -1\n", "integer"),
    ("A.mp4 Abuse 5 2 -1 -1\n", "0 <= start < end"),
    ("A.mp4 Abuse 1 2 -1 -1 0\n", "frame count"),
])
def test_ucf_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path, "ann.txt", "B.mp4 Normal -1 -1 -1 -1\n" + line)
    with pytest.raises(AnnotationError, match=message) as err:
        parse_ucf_annotations(path)
    assert f"{path}:2" in str(err.value)


def test_ucf_duplicate_video_is_refused(tmp_path):
    path = write(tmp_path, "ann.txt", "A.mp4 Abuse 1 2 -1 -1\nA.mp4 Abuse 3 4 -1 -1\n")
    with pytest.raises(AnnotationError, match="annotated twice"):
        parse_ucf_annotations(path)


def test_real_ucf_annotation_file():
    table = parse_ucf_annotations(UCF / "Temporal_Anomaly_Annotation.txt")
    assert len(table) == 290
    assert sum(a.label for a in table.values()) == 140
    assert sum(len(a.intervals) == 2 for a in table.values()) == 16
    assert all(a.num_frames is not None for a in table.values())
    assert set(table) == set(read_list(UCF / "test_videos.txt"))
    clipped = sorted(
        name for name, a in table.items() if frame_mask(a.intervals, a.num_frames, name)[1]
    )
    assert clipped == ["Arson011_x264", "Arson016_x264", "Explosion033_x264",
                       "Fighting003_x264", "Shooting015_x264"]
    # the parser notes the same five, with file and line, and keeps the intervals as written
    assert [n.split(": ")[1] for n in table.notes] == clipped
    assert table.notes[0].startswith(f"{UCF / 'Temporal_Anomaly_Annotation.txt'}:11: Arson011_x264: ")
    assert table["Arson011_x264"].intervals == ((150, 420), (680, 1267))
    arson = table["Arson011_x264"]
    mask, _ = frame_mask(arson.intervals, arson.num_frames)
    assert int(mask.sum()) == (420 - 150) + (1266 - 680)


def test_xd_annotations_strip_mp4_and_read_all_pairs(tmp_path):
    path = write(tmp_path, "annotations.txt",
                 "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6 25 184 300 400\n"
                 "v=abc__#1_label_B1-0-0.mp4 0 32\n")
    table = parse_xd_annotations(path)
    assert list(table) == ["Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6", "v=abc__#1_label_B1-0-0"]
    assert table["Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6"].intervals == ((25, 184), (300, 400))
    assert [a.category for a in table.values()] == ["Explosion", "Fighting"]
    assert all(a.label == 1 for a in table.values())


def test_xd_odd_frame_numbers_are_refused(tmp_path):
    path = write(tmp_path, "annotations.txt", "x_label_B1-0-0 1 2 3\n")
    with pytest.raises(AnnotationError, match="pairs"):
        parse_xd_annotations(path)


def test_xd_category_codes():
    assert xd_category("m__#00-01_label_A") == "Normal"
    assert xd_category("m__#00-01_label_B4-0-0") == "Riot"
    with pytest.raises(AnnotationError, match="_label_"):
        xd_category("no_code_here")


def test_tad_test_and_train_label_files(tmp_path):
    test = write(tmp_path, "TAD_test.txt",
                 "frames/abnormal/01_Accident_020.mp4 342 1 47 343\n"
                 "frames/abnormal/02_IllegalTurn_004.mp4 278 2 140 202\n"
                 "frames/normal/Normal_008.mp4 77 0 0 77\n")
    table = parse_tad_labels(test, "test")
    assert list(table) == ["01_Accident_020", "02_IllegalTurn_004", "Normal_008"]
    acc = table["01_Accident_020"]
    assert (acc.num_frames, acc.category, acc.intervals, acc.label) == (342, "Accident", ((47, 343),), 1)
    normal = table["Normal_008"]
    assert (normal.category, normal.intervals, normal.label) == ("Normal", (), 0)
    assert table.notes == [
        f"{test}:1: 01_Accident_020: interval [47, 343) ends beyond its 342 frames; "
        "clipped to [47, 342) by the interval rule",
        f"{test}:3: Normal_008 is normal (class 0) but carries the interval(s) [(0, 77)]; read as no interval"]
    train = write(tmp_path, "TAD_train.txt",
                  "frames/abnormal/01_Accident_001.mp4 0 224 1\nframes/normal/Normal_001.mp4 0 141 0\n")
    table = parse_tad_labels(train, "train")
    assert [(a.name, a.num_frames, a.label, a.category) for a in table.values()] == [
        ("01_Accident_001", 224, 1, "Accident"), ("Normal_001", 141, 0, "Normal")]


def test_tad_train_line_in_test_layout_is_refused(tmp_path):
    path = write(tmp_path, "TAD_train.txt", "frames/normal/Normal_008.mp4 77 0 0 77\n")
    with pytest.raises(AnnotationError, match="path 0 num_frames class"):
        parse_tad_labels(path, "train")


def test_list_files_and_names(tmp_path):
    path = write(tmp_path, "test.list", "/a/b/Abuse028_x264_i3d.npy\n\n  rel/Normal_Videos_003_x264_i3d.npy \n")
    assert read_list(path) == ["/a/b/Abuse028_x264_i3d.npy", "rel/Normal_Videos_003_x264_i3d.npy"]
    assert video_name("frames/abnormal/01_Accident_006.mp4") == "01_Accident_006"
    with pytest.raises(AnnotationError, match="empty"):
        read_list(write(tmp_path, "empty.list", "\n\n"))


def test_clip_intervals_clips_drops_and_notes():
    kept, notes = clip_intervals([(0, 5), (8, 12), (12, 14)], 10, "v")
    assert kept == ((0, 5), (8, 10))
    assert notes == ["v: interval [8, 12) ends beyond its 10 frames; clipped to [8, 10)",
                     "v: interval [12, 14) starts beyond its 10 frames; dropped"]


# ---------------------------------------------------------------------------------------
# The packaged real files and their quirks (counted by hand with awk on the files)


def test_real_xd_annotations_note_the_14_mp4_names():
    table = parse_xd_annotations(XD / "annotations.txt")
    assert len(table) == 500 and all(a.label for a in table.values())
    assert len(table.notes) == 14 and all("carries '.mp4'" in n for n in table.notes)
    assert table.notes[0] == (f"{XD / 'annotations.txt'}:199: v=U6MC8JJJZSY__#1_label_G-0-0.mp4 carries '.mp4', "
                              "which the feature names lack; read as v=U6MC8JJJZSY__#1_label_G-0-0")
    assert table["v=U6MC8JJJZSY__#1_label_G-0-0"].intervals == ((150, 779),)
    assert table["v=FW_qbiPH7UA__#1_label_B1-0-0"].intervals == ((1654, 2080), (2367, 2745))
    assert not any(name.endswith(".mp4") for name in table)


def test_real_xd_intervals_past_the_last_full_clip_are_clipped_and_noted():
    from cupl.data.reference import load_reference

    clips = dict(line.split("\t") for line in (XD / "test_videos.txt").read_text().splitlines())
    ref = load_reference("xd")
    clip_notes = [n for n in ref.notes if "ends beyond" in n]
    assert len(ref.notes) == 14 + 71 and len(clip_notes) == 71
    assert clip_notes[0] == ("Black.Hawk.Down.2001__#02-00-12_02-01-29_label_B2-0-0: interval [10, 1848) "
                             "ends beyond its 1840 frames; clipped to [10, 1840)")
    assert int(clips["Black.Hawk.Down.2001__#02-00-12_02-01-29_label_B2-0-0"]) == 115  # 115 * 16 = 1840
    for video in ref.test:
        assert video.num_frames == 16 * int(clips[video.name])
        assert all(0 <= s < e <= video.num_frames for s, e in video.intervals)
    assert sum(bool(v.intervals) for v in ref.test) == 500 and len(ref.test) == 800


def test_real_tad_test_labels_note_40_dummy_normals_and_22_ends_past_the_video():
    table = parse_tad_labels(TAD / "TAD_test.txt", "test")
    assert len(table) == 100 and sum(a.label for a in table.values()) == 60
    dummies = [n for n in table.notes if "read as no interval" in n]
    ends = [n for n in table.notes if "ends beyond" in n]
    assert (len(dummies), len(ends), len(table.notes)) == (40, 22, 62)
    assert all(not a.intervals for a in table.values() if not a.label)
    assert all(len(a.intervals) == 1 for a in table.values() if a.label)
    # line 4: "frames/abnormal/01_Accident_014.mp4 243 1 86 244", the end at num_frames + 1
    assert ends[0] == (f"{TAD / 'TAD_test.txt'}:4: 01_Accident_014: interval [86, 244) ends beyond its 243 "
                       "frames; clipped to [86, 243) by the interval rule")
    assert dummies[-1] == (f"{TAD / 'TAD_test.txt'}:100: Normal_241 is normal (class 0) but carries the "
                           "interval(s) [(0, 300)]; read as no interval")
    assert all(a.intervals[0][1] <= a.num_frames + 1 for a in table.values() if a.label)
    train = parse_tad_labels(TAD / "TAD_train.txt", "train")
    assert len(train) == 400 and sum(a.label for a in train.values()) == 190 and train.notes == []


def test_packaged_resources_are_listed_with_their_checksums():
    provenance = (RESOURCES / "PROVENANCE.md").read_text()
    files = sorted(p for p in RESOURCES.glob("*/*.txt"))
    assert len(files) == 9
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{digest}  {path.parent.name}/{path.name}" in provenance


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the reference folder {SHARED} is not on this machine "
                    "(a bare clone has only the packaged copies)")
def test_packaged_copies_equal_the_reference_files_byte_for_byte():
    for path in RESOURCES.glob("*/*.txt"):
        assert path.read_bytes() == (SHARED / path.parent.name / path.name).read_bytes(), path
