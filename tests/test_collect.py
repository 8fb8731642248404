"""`cupl collect`: parameters and glued scalars of papermill outputs, one row each."""

from __future__ import annotations

import csv
import json

import papermill
import pytest

from cupl.book import collect
from cupl.cli import collect as collect_cli

GLUE_CELL = """\
import numpy as np
from myst_nb import glue
glue("auc", np.float64(alpha * 2))
glue("label", f"run-{alpha}", display=False)
glue("count", 7, display=False)
glue("table", {"not": "a scalar"})"""


@pytest.fixture
def runs(tmp_path, make_notebook):
    source = make_notebook(tmp_path / "src" / "01_sweep.ipynb", "alpha = 0.1\nname = 'x'", GLUE_CELL)
    out = tmp_path / "runs"
    out.mkdir()
    for alpha in (0.25, 0.5):
        papermill.execute_notebook(str(source), str(out / f"alpha-{alpha}.ipynb"),
                                   parameters={"alpha": alpha}, kernel_name="python3",
                                   progress_bar=False)
    return out


def test_rows_hold_parameters_and_glued_scalars(runs):
    rows = collect.collect(runs)
    assert [r["notebook"] for r in rows] == ["alpha-0.25.ipynb", "alpha-0.5.ipynb"]
    for row, alpha in zip(rows, (0.25, 0.5)):
        assert row["alpha"] == alpha
        assert row["auc"] == alpha * 2
        assert row["label"] == f"run-{alpha}"
        assert row["count"] == 7
        assert "table" not in row and "name" not in row  # non-scalar glue, default parameter
        assert row["run_time_s"] > 0


def test_csv_is_written_and_table_printed(runs, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    collect_cli.configure_parser(parser)
    target = tmp_path / "out" / "sweep.csv"
    assert collect_cli.main(parser.parse_args([str(runs), "--csv", str(target)])) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["notebook", "run_time_s", "alpha", "auc", "label", "count"]
    assert printed[2].split()[:1] == ["alpha-0.5.ipynb"]
    with open(target, newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["notebook"], float(r["alpha"]), float(r["auc"]), r["label"]) for r in table] == [
        ("alpha-0.25.ipynb", 0.25, 0.5, "run-0.25"),
        ("alpha-0.5.ipynb", 0.5, 1.0, "run-0.5"),
    ]
    assert sorted(p.name for p in target.parent.iterdir()) == ["sweep.csv"], "no temporary left"


def test_parse_repr():
    assert collect.parse_repr("0.25") == 0.25
    assert collect.parse_repr("np.float64(0.25)") == 0.25
    assert collect.parse_repr("np.int64(3)") == 3
    assert collect.parse_repr("'x'") == "x"
    assert collect.parse_repr("<Figure size 640x480 with 1 Axes>") is None
    assert collect.parse_repr("[1, 2]") is None


def test_other_glue_formats(tmp_path):
    nb = {"metadata": {"papermill": {"parameters": {"k": 2}, "duration": 1.5}}, "cells": [
        {"cell_type": "code", "outputs": [
            {"output_type": "display_data", "metadata": {},
             "data": {"application/papermill.record+json": {"ap": 0.75, "curve": [1, 2]}}},
            {"output_type": "display_data", "metadata": {},
             "data": {"application/scrapbook.scrap.json+json":
                      {"name": "auc", "data": 0.5, "encoder": "json", "version": 1}}},
        ]}]}
    (tmp_path / "old.ipynb").write_text(json.dumps(nb))
    assert collect.collect(tmp_path) == [
        {"notebook": "old.ipynb", "run_time_s": 1.5, "k": 2, "ap": 0.75, "auc": 0.5}
    ]


def test_name_clash_and_empty_folder_are_refused(tmp_path):
    nb = {"metadata": {"papermill": {"parameters": {"auc": 1}}}, "cells": [
        {"cell_type": "code", "outputs": [
            {"output_type": "display_data",
             "metadata": {"scrapbook": {"name": "auc", "mime_prefix": ""}},
             "data": {"text/plain": "0.5"}}]}]}
    with pytest.raises(FileNotFoundError, match="no executed notebooks"):
        collect.collect(tmp_path)
    (tmp_path / "clash.ipynb").write_text(json.dumps(nb))
    with pytest.raises(ValueError, match=r"clash\.ipynb.*'auc'"):
        collect.collect(tmp_path)
