"""The performance appendix's inputs: every committed benchmark result names its machine and
date, and hand-made results give the verdicts worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cupl.book.performance import (MET, NOT_MEASURED, NOT_MET, OLDER_FORMATS, benchmark_record, chain_runs,
                                   goal_rows, load_results, provenance, results_table)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_every_committed_result_names_its_machine_and_date():
    results = load_results(RESULTS)
    assert results, f"no results in {RESULTS}"
    for name, result in results.items():
        p = provenance(result)
        assert p["machine"], f"{name}.json names no machine"
        if name not in OLDER_FORMATS:
            assert p["date"], f"{name}.json has no date (and is not listed in OLDER_FORMATS)"


def test_older_formats_exist():
    """A name listed as an older format that no longer exists would excuse nothing."""
    for name in OLDER_FORMATS:
        assert (RESULTS / f"{name}.json").is_file(), name


def test_record_names_machine_torch_date_and_command():
    record = benchmark_record(["benchmarks/x.py", "--json", "out file.json"])
    assert set(record["machine"]) == {"cpu", "cores", "threads"}
    assert record["command"] == "python benchmarks/x.py --json 'out file.json'"
    assert record["date"].endswith("+00:00") and len(record["load_average"]) == 3


def test_a_bad_file_is_named(tmp_path):
    (tmp_path / "ok.json").write_text("{}")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        load_results(tmp_path)
    (tmp_path / "broken.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="broken.json: .*JSON object"):
        load_results(tmp_path)


def _verdicts(rows):
    return {(row["result"], row["goal"]): row["verdict"] for row in rows}


def hand_made():
    machine = {"cpu": "Test CPU", "cores": 2, "threads": 1}
    return {
        # speed-ups 100/8 = 12.5 and 30/5 = 6: the smaller one misses 10
        "mc_dropout": {"models": {"f_g": {"speedup": 12.5}, "f_c": {"speedup": 6.0}}, "machine": machine,
                       "date": "2026-01-01"},
        # warm 0.9/1.0 met; cold 0.7/1.0 = 0.7 > 0.6 not met; checksums 0.9/0.85 = 1.06 and 0.7/0.66 = 1.06 met
        "bank_io_full": {"npy_s": 1.0, "bank_s": 0.9, "cold_npy_s": 1.0, "cold_bank_s": 0.7,
                         "bank_unchecked_s": 0.85, "cold_bank_unchecked_s": 0.66, "machine": machine, "date": "d"},
        # ratio 4.2 but an AUC difference of 2e-4: not met
        "sweep": {"ratio": 4.2, "max_abs_auc_diff": 2e-4, "machine": machine, "date": "d"},
        # stages 3 + 1 = 4 s (load and the totals row left out) against floors 2 + 1 = 3 s: 1.33 <= 1.5, one thread
        "pipeline_quick": {"profile": "quick", "machine": {"cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 1},
                           "date": "d", "rows": [{"stage": "load", "seconds": 9.0, "floor_s": None},
                                                 {"stage": "stage1", "seconds": 3.0, "floor_s": 2.0},
                                                 {"stage": "iter1.mining", "seconds": 0.0, "floor_s": None},
                                                 {"stage": "iter1.train", "seconds": 1.0, "floor_s": 1.0},
                                                 {"stage": "total (without load)", "seconds": 4.0, "floor_s": 3.0}]},
        # the same at two threads is outside the goal's condition
        "pipeline_two": {"profile": "quick", "machine": {"cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 2},
                         "date": "d", "rows": [{"stage": "stage1", "seconds": 1.0, "floor_s": 1.0}]},
        # a GPU sweep of Table 4 at full: 130 s > 120 s, not met; the same grid at quick is outside the goal
        "sweep_gpu": {"ratio": 9.0, "max_abs_auc_diff": 0.0, "batched_s": 130.0, "device": "cuda", "grid": "table4",
                      "profile": "full", "machine": machine, "date": "d"},
        "sweep_gpu_quick": {"ratio": 9.0, "max_abs_auc_diff": 0.0, "batched_s": 10.0, "device": "cuda",
                            "grid": "table4", "profile": "quick", "machine": machine, "date": "d"},
        # install 50 s + book 290 s = 340 s <= 360 met; rerun 75 s > 60 not met
        "fresh_book": {"profiles": ["quick"], "install_s": 50.0, "book_s": 290.0, "fresh_s": 340.0, "complete": True,
                       "rerun_s": 75.0, "change": {"chapter": "04", "parameter": "check_clips", "value": "1000"},
                       "machine": machine, "date": "d"},
        # a fresh book at smoke is outside the first goal; one that stopped before its rerun has none
        "fresh_book_smoke": {"profiles": ["smoke"], "install_s": 50.0, "book_s": 10.0, "fresh_s": 60.0,
                             "complete": False, "machine": machine, "date": "d"},
        # compute 10 + 4 = 14 s met; wall 14 + 50 = 64 s not met
        "gpu_check_x": {"machine": {"cpu": "Host", "cpu_cores": 16, "gpu": "Test GPU"},
                        "steps": {"pipeline": {"status": "ok", "rows": [{"stage": "load", "seconds": 99.0},
                                                                        {"stage": "stage1", "seconds": 10.0},
                                                                        {"stage": "iter1.train", "seconds": 4.0},
                                                                        {"stage": "total (without load)", "seconds": 14.0}]},
                                  "bank_io": {"status": "ok", "full_cold_s": 50.0, "gib": 2.0}}},
    }


def test_goal_verdicts_of_hand_made_results():
    v = _verdicts(goal_rows(hand_made()))
    assert v[("mc_dropout", "MC-Dropout: exact-fast path over train-mode passes")] == NOT_MET
    assert v[("bank_io_full", "bank read, warm cache: bank against per-video .npy")] == MET
    assert v[("bank_io_full", "bank read, cold cache: bank against per-video .npy")] == NOT_MET
    assert v[("bank_io_full", "checksummed bank read against unchecked (slower of warm and cold)")] == MET
    assert v[("sweep", "sweep: runs one by one against batched")] == NOT_MET
    assert v[("pipeline_quick", "quick pipeline, one thread: stages against their floor")] == MET
    assert v[("pipeline_two", "quick pipeline, one thread: stages against their floor")] == NOT_MEASURED
    assert v[("gpu_check_x", "paper-scale run on one GPU: compute")] == MET
    assert v[("sweep_gpu", "sweep on one GPU: Table 4 x 3 seeds at paper scale, batched")] == NOT_MET
    assert not [k for k in v if k[0] == "sweep_gpu_quick"]
    assert v[("fresh_book", "fresh clone: make book, install included")] == MET
    assert v[("fresh_book", "book again after one chapter's parameter changes, the rest reused")] == NOT_MET
    assert not [k for k in v if k[0] == "fresh_book_smoke"]
    assert v[("gpu_check_x", "paper-scale run on one GPU: wall, with reading the training split")] == NOT_MET


def test_measured_values_are_worked_out_by_hand():
    rows = {(r["result"], r["goal"]): r for r in goal_rows(hand_made())}
    assert rows[("mc_dropout", "MC-Dropout: exact-fast path over train-mode passes")]["value"] == 6.0
    assert rows[("pipeline_quick", "quick pipeline, one thread: stages against their floor")]["value"] == \
        pytest.approx(4 / 3)
    assert rows[("gpu_check_x", "paper-scale run on one GPU: wall, with reading the training split")]["value"] == 64.0


def test_goals_without_results_are_not_measured():
    rows = goal_rows({}, runs=[])
    assert rows and all(r["verdict"] == NOT_MEASURED for r in rows)
    assert len(rows) == 1 + 3 + 2 + 1 + 2 + 2 + 1


def test_met_goals_flip_when_a_number_crosses_its_target():
    results = hand_made()
    results["mc_dropout"]["models"]["f_c"]["speedup"] = 10.0
    results["sweep"]["max_abs_auc_diff"] = 1e-4
    v = _verdicts(goal_rows(results))
    assert v[("mc_dropout", "MC-Dropout: exact-fast path over train-mode passes")] == MET
    assert v[("sweep", "sweep: runs one by one against batched")] == MET
    results["sweep_gpu"]["batched_s"] = 120.0
    results["fresh_book"]["rerun_s"] = 60.0
    v = _verdicts(goal_rows(results))
    assert v[("sweep_gpu", "sweep on one GPU: Table 4 x 3 seeds at paper scale, batched")] == MET
    assert v[("fresh_book", "book again after one chapter's parameter changes, the rest reused")] == MET


def test_provenance_of_each_format():
    assert provenance({"machine": {"cpu": "C", "cores": 2, "threads": 1}, "date": "d"})["machine"] == \
        "C, 2 cores, 1 torch thread"
    assert provenance({"machine": {"cpu": "C", "cpu_cores": 16, "torch_threads": 16, "gpu": "G", "torch": "2.11"}}) \
        == {"machine": "G; host C, 16 cores, 16 torch threads", "torch": "2.11", "date": None}
    assert provenance({"cpu": "C", "machine": "vm", "threads": 1, "date": "d"})["machine"] == "C (vm), 1 torch thread"
    assert provenance({"meta": {"machine": "C (vm)", "date": "d"}}) == {"machine": "C (vm)", "torch": None, "date": "d"}
    rows = results_table({"gpu_check_h200": {"machine": {"cpu": "C"}}, "x": {}})
    assert rows[0]["date"] == "not recorded (older format)" and rows[1]["machine"] == "not recorded"


def _book(tmp_path, records):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_executed" / "notebooks").mkdir(parents=True)
    names = ["01_a", "02_b", "90_performance"]
    for name in names:
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text("{}")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n" +
                                       "".join(f"  - file: _executed/notebooks/{n}\n" for n in names))
    for name, (profile, seconds) in records.items():
        (tmp_path / "_executed" / "notebooks" / f"{name}.run.json").write_text(
            json.dumps({"parameters": {"profile": profile}, "wall_s": seconds, "finished": "t"}))
    return chain_runs(tmp_path, skip=("90_performance",))


def test_run_records_and_the_book_goal(tmp_path):
    runs = _book(tmp_path, {"01_a": ("quick", 200.0), "02_b": ("quick", 350.0)})
    assert [r["notebook"] for r in runs] == ["01_a", "02_b"]
    book = goal_rows({}, runs)[-1]
    assert book["verdict"] == MET and book["value"] == 550.0


def test_the_book_goal_needs_every_chapter_at_quick(tmp_path):
    runs = _book(tmp_path, {"01_a": ("quick", 200.0)})
    assert runs[1] == {"notebook": "02_b", "profile": None, "seconds": None, "finished": None}
    assert goal_rows({}, runs)[-1]["verdict"] == NOT_MEASURED
    (tmp_path / "_executed" / "notebooks" / "02_b.run.json").write_text(
        json.dumps({"parameters": {"profile": "smoke"}, "wall_s": 1.0}))
    book = goal_rows({}, chain_runs(tmp_path, skip=("90_performance",)))[-1]
    assert book["verdict"] == NOT_MEASURED and book["value"] == 201.0 and "smoke" in book["measured"]
    (tmp_path / "_executed" / "notebooks" / "02_b.run.json").write_text(
        json.dumps({"parameters": {"profile": "quick"}, "wall_s": 401.0}))
    assert goal_rows({}, chain_runs(tmp_path, skip=("90_performance",)))[-1]["verdict"] == NOT_MET


def test_the_report_page_depends_on_the_runs_before_it(tmp_path):
    from cupl.book import runner

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "a.json").write_text("{}")
    before = runner._measurements(tmp_path, ["01_a"])
    record = tmp_path / "_executed" / "notebooks" / "01_a.run.json"
    record.parent.mkdir(parents=True)
    record.write_text('{"finished": "2026-01-01T00:00:00+00:00"}')
    after_run = runner._measurements(tmp_path, ["01_a"])
    assert after_run != before and after_run["runs"]["01_a"] == "2026-01-01T00:00:00+00:00"
    (tmp_path / "benchmarks" / "results" / "a.json").write_text('{"x": 1}')
    assert runner._measurements(tmp_path, ["01_a"])["results"] != after_run["results"]


def test_readings_decision_and_summary_from_a_result_file():
    from cupl.book.performance import readings_decision, readings_summary

    row = {"reading": "sig/paper", "alpha": 10.0, "batch_size": 16, "seeds": [0, 1, 2], "label_auc": 0.8,
           "label_mae": 0.2, "saturated_normal": 0.0, "healthy": True, "healthy_provisional": True}
    partial = {**row, "alpha": 100.0, "seeds": [0], "healthy": None, "healthy_provisional": False}
    result = {"summary": [row, partial], "runs": [{}] * 4, "missing": [{}] * 2,
              "decision": {"choice": "sig/paper @ batch 16", "qualifying": ["sig/paper @ batch 16", "x @ batch 16"],
                           "undecided (seeds missing)": []}}
    rows = readings_summary(result)
    assert [r["healthy"] for r in rows] == ["yes", "(no)"] and [r["seeds"] for r in rows] == [3, 1]
    assert rows[0]["label AUC"] == 0.8 and rows[1]["alpha"] == 100.0
    assert readings_decision(result) == ("4 of 6 planned runs made; the rule chooses sig/paper @ batch 16; "
                                         "1 more qualifies, further from the text.")
    result["decision"] = {"choice": None, "qualifying": [], "undecided (seeds missing)": ["a", "b"]}
    assert readings_decision(result).endswith("no reading is chosen: 2 readings still lack seeds at alpha = 10 or 100.")
    result["decision"]["undecided (seeds missing)"] = []
    assert readings_decision(result).endswith("no reading is healthy at alpha = 10 and unhealthy at alpha = 100.")
