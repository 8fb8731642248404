"""The paper's numbers in `cupl.experiments.paper` against the paper's text, read independently here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cupl.experiments import paper

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "cu-pseudo-labels-cvpr2023.md"


@pytest.fixture(scope="module")
def text() -> str:
    if not PAPER.is_file():
        pytest.skip(f"the paper's text is not at {PAPER}")
    return re.sub(r"</?b>", "", PAPER.read_text())


def table_rows(text: str, caption: str) -> list[list[str]]:
    """The tab-separated rows printed just before the line starting with `caption`, up to the
    previous blank line."""
    block = text[: text.index("\n" + caption)].rstrip().rsplit("\n\n", 1)[-1]
    return [line.split("\t") for line in block.splitlines()]


def numbers(row: list[str]) -> list[float]:
    return [float(cell) for cell in row if re.fullmatch(r"\d+(\.\d+)?", cell.strip())]


def test_table5_heads(text):
    header, values = table_rows(text, "Table 5.")
    assert numbers(header) == list(paper.TABLE5_HEADS)
    assert numbers(values) == list(paper.TABLE5_HEADS.values())


def test_table6_alpha(text):
    header, values = table_rows(text, "Table 6.")
    assert numbers(header) == list(paper.TABLE6_ALPHA)
    assert numbers(values) == list(paper.TABLE6_ALPHA.values())


def test_table4_rows_in_order_and_gains_as_the_text_says(text):
    rows = table_rows(text, "Table 4.")[1:]
    assert [numbers(r)[-1] for r in rows] == [82.86, 84.89, 84.69, 86.22]
    assert list(paper.TABLE4_ABLATION.values()) == [82.86, 84.89, 84.69, 86.22]
    assert list(paper.TABLE4_ABLATION) == ["baseline", "completeness", "uncertainty", "full"]
    assert "achieve 2.03% improvement" in text and "bring a 1.83% performance gain" in text
    for variant, gain in paper.TABLE4_GAINS.items():
        assert gain == pytest.approx(paper.TABLE4_ABLATION[variant] - paper.TABLE4_ABLATION["baseline"], abs=1e-9)


@pytest.mark.parametrize("caption, table, metric", [
    ("Table 1.", paper.TABLE1_UCF, "auc"),
    ("Table 2.", paper.TABLE2_TAD, "auc"),
    ("Table 3.", paper.TABLE3_XD, "ap"),
])
def test_comparison_tables_match_row_by_row(text, caption, table, metric):
    rows = table_rows(text, caption)[1:]  # without the header
    assert len(rows) == len(table)
    for printed, ours in zip(rows, table):
        assert float(printed[-1]) == ours[metric], printed
        assert printed[-2].strip() == ours["feature"], printed


def test_headline_is_the_last_row_of_each_table():
    assert paper.HEADLINE["ucf"] == ("auc", 86.22)
    assert paper.HEADLINE["tad"] == ("auc", 91.66)
    assert paper.HEADLINE["xd"] == ("pr_auc", 78.74)
    i3d_xd = [r for r in paper.TABLE3_XD if "this method" in r["method"] and r["feature"] == "I3D"]
    assert [r["ap"] for r in i3d_xd] == [78.74]


def test_figure_points_are_the_final_model(text):
    # the text names j = 3 and R = 0.5 as the chosen settings, whose run is Table 1's 86.22
    assert "we set  $j = 3$  for UCF-Crime" in text
    assert "setting  $R$  to 0.5 is" in text
    assert paper.FIG3_ITERATIONS == {3: 86.22} and paper.FIG4_RATIO == {0.5: 86.22}
