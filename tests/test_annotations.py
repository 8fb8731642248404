"""Annotation parsers against hand-written files in each real format and the real UCF file."""

from pathlib import Path

import numpy as np
import pytest

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

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucf-crime"


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


@pytest.mark.skipif(not (SHARED / "Temporal_Anomaly_Annotation.txt").exists(),
                    reason="real UCF-Crime annotation not found in ../shared/data/ucf-crime")
def test_real_ucf_annotation_file():
    table = parse_ucf_annotations(SHARED / "Temporal_Anomaly_Annotation.txt")
    assert len(table) == 290
    assert sum(a.label for a in table.values()) == 140
    assert sum(len(a.intervals) == 2 for a in table.values()) == 16
    assert all(a.num_frames is not None for a in table.values())
    assert set(table) == set(read_list(SHARED / "test_videos.txt"))
    clipped = sorted(
        name for name, a in table.items() if frame_mask(a.intervals, a.num_frames, name)[1]
    )
    assert clipped == ["Arson011_x264", "Arson016_x264", "Explosion033_x264",
                       "Fighting003_x264", "Shooting015_x264"]
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
