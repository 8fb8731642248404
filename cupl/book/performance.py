"""The performance appendix: the record every benchmark result carries, the results read back,
and the goals judged from them.

A benchmark script writes its numbers with `benchmark_record()` (machine, torch, date, command
line, load average); the appendix reads every result with `load_results` and turns them into
verdicts with `goal_rows`, so no timing is typed into the book.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


def benchmark_record(argv: list[str] | None = None) -> dict:
    """Who measured: the processor, its cores, torch's threads, the torch version, the UTC date,
    the command line (`argv`, default `sys.argv`) and the load average (1, 5, 15 minutes)."""
    import torch

    from cupl.experiments.timing import cpu_name

    argv = sys.argv if argv is None else argv
    return {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads()},
            "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": shlex.join(["python", *argv]),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def load_note(before: tuple[float, ...], after: list[float], cores: int) -> str:
    """What the load average says about the absolute times of a run (1-minute averages)."""
    text = f"load average {before[0]:.2f} before and {after[0]:.2f} after, on {cores} cores"
    if max(before[0], after[0]) > 0.5 * cores:
        text += ("; the machine was shared with other work, which inflates the absolute times; "
                 "the ratios compare methods measured side by side in the same run")
    return text


def write_result(path: str | Path, numbers: dict, load_before: tuple[float, ...] | None = None,
                 argv: list[str] | None = None) -> dict:
    """`numbers` with `benchmark_record()` as JSON at `path`, written atomically; given the load
    average at the start (`os.getloadavg()`), a `note` says how busy the machine was."""
    from cupl.files import atomic_write

    result = {**numbers, **benchmark_record(argv)}
    if load_before is not None:
        result["note"] = load_note(load_before, result["load_average"], result["machine"]["cores"])
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1, default=str) + "\n"))
    return result


# Results written before every script recorded its date: what they name instead.
OLDER_FORMATS = {
    "gpu_check_h200": "names its machine; no date (the report of the first H200 run)",
    "gpu_check_h200_graph": "names its machine; no date (the report of the second H200 run)",
}

# The benchmark a result file belongs to, by the start of its name.
KINDS = ("mc_dropout", "evaluation", "pipeline", "bank_io", "sweep", "headroom", "gpu_check", "fc_convergence",
         "generator_readings", "fresh_book")


def kind(name: str) -> str | None:
    return next((k for k in KINDS if name.startswith(k)), None)


def load_results(folder: str | Path) -> dict[str, dict]:
    """Every `*.json` in `folder`, by file name without `.json`, in name order.
    Raises ValueError naming the file when one is not a JSON object."""
    results = {}
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path.name}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path.name}: a benchmark result must be a JSON object, got {type(data).__name__}")
        results[path.stem] = data
    return results


def provenance(result: dict) -> dict:
    """Machine (in words), torch version and date of a result, from the formats the scripts have
    written; None for what a result does not say."""
    meta = result.get("meta", result)
    machine = meta.get("machine")
    torch_version = meta.get("torch")
    if isinstance(machine, dict):
        cores = machine.get("cores", machine.get("cpu_cores"))
        threads = machine.get("threads", machine.get("torch_threads"))
        words = machine.get("cpu") or ""
        if cores:
            words += f", {cores} cores"
        if threads:
            words += f", {threads} torch thread{'s' if threads != 1 else ''}"
        if machine.get("gpu"):
            words = f"{machine['gpu']}; host {words}"
        torch_version = torch_version or machine.get("torch")
    elif isinstance(machine, str):
        words = f"{meta['cpu']} ({machine})" if meta.get("cpu") else machine
        if meta.get("threads"):
            words += f", {meta['threads']} torch thread{'s' if meta['threads'] != 1 else ''}"
    else:
        words = None
    return {"machine": words or None, "torch": torch_version, "date": meta.get("date")}


def results_table(results: dict[str, dict]) -> list[dict]:
    """One row per result file: its benchmark, machine, torch, date and its note (the load it ran under)."""
    rows = []
    for name, result in results.items():
        p = provenance(result)
        rows.append({"result": name, "benchmark": kind(name) or "other", "machine": p["machine"] or "not recorded",
                     "torch": p["torch"] or "not recorded",
                     "date": p["date"] or ("not recorded (older format)" if name in OLDER_FORMATS else "not recorded"),
                     "note": result.get("note", "")})
    return rows


# ---- goals ---------------------------------------------------------------------------------

def _verdict(ok: bool) -> str:
    return MET if ok else NOT_MET


def _of_kind(results: dict, k: str) -> dict[str, dict]:
    return {name: r for name, r in results.items() if kind(name) == k}


def _stage_sums(rows: list[dict]) -> tuple[float, float]:
    """Seconds and floor seconds of a run's stages, without loading the features (and without the
    totals row that the scripts append)."""
    rows = [r for r in rows if r["stage"] != "load" and not r["stage"].startswith("total")]
    return sum(r["seconds"] for r in rows), sum(r["floor_s"] for r in rows if r.get("floor_s") is not None)


def _threads(result: dict) -> int | None:
    machine = result.get("machine")
    if isinstance(machine, dict):
        return machine.get("threads", machine.get("torch_threads"))
    return None


def mc_dropout_goals(name: str, r: dict) -> list[dict]:
    speedup = min(m["speedup"] for m in r["models"].values())
    worst = min(r["models"], key=lambda m: r["models"][m]["speedup"])
    return [{"goal": "MC-Dropout: exact-fast path over train-mode passes", "target": ">= 10x",
             "measured": f"{speedup:.1f}x (smallest, {worst})", "value": speedup, "verdict": _verdict(speedup >= 10),
             "result": name}]


def bank_io_goals(name: str, r: dict) -> list[dict]:
    warm, cold = r["bank_s"] / r["npy_s"], r["cold_bank_s"] / r["cold_npy_s"]
    checks = max(r["bank_s"] / r["bank_unchecked_s"], r["cold_bank_s"] / r["cold_bank_unchecked_s"])
    return [
        {"goal": "bank read, warm cache: bank against per-video .npy", "target": "<= 1x",
         "measured": f"{warm:.2f}x", "value": warm, "verdict": _verdict(warm <= 1), "result": name},
        {"goal": "bank read, cold cache: bank against per-video .npy", "target": "<= 0.6x",
         "measured": f"{cold:.2f}x", "value": cold, "verdict": _verdict(cold <= 0.6), "result": name},
        {"goal": "checksummed bank read against unchecked (slower of warm and cold)", "target": "<= 1.1x",
         "measured": f"{checks:.2f}x", "value": checks, "verdict": _verdict(checks <= 1.1), "result": name},
    ]


def sweep_goals(name: str, r: dict) -> list[dict]:
    """The CPU goal for a quick sweep; the GPU goal for Table 4 x seeds at the full profile on CUDA."""
    ratio, diff = r["ratio"], r["max_abs_auc_diff"]
    if str(r.get("device", "cpu")).startswith("cuda"):
        if r.get("grid") != "table4" or r.get("profile") != "full":
            return []
        goal, target = UNMEASURED["sweep"][1]
        return [{"goal": goal, "target": target, "value": r["batched_s"], "result": name,
                 "measured": f"{r['batched_s']:.0f} s, max |AUC diff| {diff:.1e}",
                 "verdict": _verdict(r["batched_s"] <= 120)}]
    goal, target = UNMEASURED["sweep"][0]
    return [{"goal": goal, "target": target, "measured": f"{ratio:.2f}x, max |AUC diff| {diff:.1e}", "value": ratio,
             "verdict": _verdict(ratio >= 4 and diff <= 1e-4), "result": name}]


def pipeline_goals(name: str, r: dict) -> list[dict]:
    if r.get("profile") != "quick":
        return []
    seconds, floor = _stage_sums(r["rows"])
    row = {"goal": "quick pipeline, one thread: stages against their floor", "target": "<= 1.5x",
           "measured": f"{seconds / floor:.2f}x ({seconds:.1f} s against {floor:.1f} s)", "value": seconds / floor,
           "result": name}
    threads = _threads(r)
    if threads != 1:
        row.update(measured=f"ran with {threads} threads", value=None, verdict=NOT_MEASURED)
    else:
        row["verdict"] = _verdict(seconds / floor <= 1.5)
    return [row]


def gpu_goals(name: str, r: dict) -> list[dict]:
    steps = r["steps"]
    out = []
    pipeline = steps.get("pipeline", {})
    if pipeline.get("status") == "ok":
        compute, _ = _stage_sums(pipeline["rows"])
        out.append({"goal": "paper-scale run on one GPU: compute", "target": "<= 15 s", "measured": f"{compute:.1f} s",
                    "value": compute, "verdict": _verdict(compute <= 15), "result": name})
        io = steps.get("bank_io", {})
        if io.get("status") == "ok" and "full_cold_s" in io:
            wall = compute + io["full_cold_s"]
            out.append({"goal": "paper-scale run on one GPU: wall, with reading the training split",
                        "target": "<= 60 s", "value": wall, "verdict": _verdict(wall <= 60), "result": name,
                        "measured": f"{wall:.0f} s ({io['full_cold_s']:.0f} s of it reading, extrapolated from "
                                    f"{io['gib']:.1f} GiB)"})
    return out


FRESH_GOALS = (("fresh clone: make book, install included", "<= 6 min"),
               ("book again after one chapter's parameter changes, the rest reused", "<= 60 s"))


def fresh_book_goals(name: str, r: dict) -> list[dict]:
    """`benchmarks/fresh_book.py`: judged only for the quick profile (the default book)."""
    out = []
    if r.get("profiles") == ["quick"] and "fresh_s" in r:
        fresh = r["fresh_s"]
        out.append({"goal": FRESH_GOALS[0][0], "target": FRESH_GOALS[0][1], "value": fresh, "result": name,
                    "measured": f"{fresh / 60:.1f} min (install {r['install_s']:.0f} s, book {r['book_s']:.0f} s)",
                    "verdict": _verdict(fresh <= 360)})
    if r.get("complete"):
        change = r["change"]
        out.append({"goal": FRESH_GOALS[1][0], "target": FRESH_GOALS[1][1], "value": r["rerun_s"], "result": name,
                    "measured": f"{r['rerun_s']:.0f} s (notebook {change['chapter']}, {change['parameter']} = "
                                f"{change['value']})", "verdict": _verdict(r["rerun_s"] <= 60)})
    return out


GOALS = {"mc_dropout": mc_dropout_goals, "bank_io": bank_io_goals, "sweep": sweep_goals,
         "pipeline": pipeline_goals, "gpu_check": gpu_goals, "fresh_book": fresh_book_goals}

# What each goal needs, named when no result measures it.
UNMEASURED = {
    "mc_dropout": [("MC-Dropout: exact-fast path over train-mode passes", ">= 10x")],
    "bank_io": [("bank read, warm cache: bank against per-video .npy", "<= 1x"),
                ("bank read, cold cache: bank against per-video .npy", "<= 0.6x"),
                ("checksummed bank read against unchecked (slower of warm and cold)", "<= 1.1x")],
    "sweep": [("sweep: runs one by one against batched", ">= 4x, max |AUC diff| <= 1e-4"),
              ("sweep on one GPU: Table 4 x 3 seeds at paper scale, batched", "<= 2 min")],
    "pipeline": [("quick pipeline, one thread: stages against their floor", "<= 1.5x")],
    "gpu_check": [("paper-scale run on one GPU: compute", "<= 15 s"),
                  ("paper-scale run on one GPU: wall, with reading the training split", "<= 60 s")],
    "fresh_book": list(FRESH_GOALS),
}


def _not_measured(goal: str, target: str) -> dict:
    return {"goal": goal, "target": target, "measured": "-", "value": None, "verdict": NOT_MEASURED, "result": "-"}


def book_goal(runs: list[dict], limit_s: float = 600.0) -> dict:
    """The quick book within `limit_s`: the sum of the chapters' recorded run times, given when
    every chapter has a record, judged only when all were made at the quick profile."""
    row = _not_measured("the quick book: notebooks' run times", f"<= {limit_s / 60:.0f} min")
    if runs and all(r["profile"] for r in runs):
        total = sum(r["seconds"] for r in runs)
        profiles = sorted({r["profile"] for r in runs})
        row.update(measured=f"{total / 60:.1f} min ({total:.0f} s)", value=total, result="run records")
        if profiles == ["quick"]:
            row["verdict"] = _verdict(total <= limit_s)
        else:
            row["measured"] += f" at the {', '.join(profiles)} profile"
    return row


def goal_rows(results: dict[str, dict], runs: list[dict] | None = None) -> list[dict]:
    """Every goal with its target, what was measured, and a verdict: `MET`, `NOT_MET` or
    `NOT_MEASURED` (no result, or not under the goal's conditions). `runs`: `chain_runs` rows."""
    rows = []
    for k, judge in GOALS.items():
        found = [row for name, r in _of_kind(results, k).items() for row in judge(name, r)]
        measured_goals = {row["goal"] for row in found}
        rows += found
        rows += [_not_measured(g, t) for g, t in UNMEASURED[k] if g not in measured_goals]
    if runs is not None:
        rows.append(book_goal(runs))
    return rows


# ---- this build's run times ------------------------------------------------------------------

def chain_runs(root: str | Path, skip: tuple[str, ...] = ()) -> list[dict]:
    """The notebooks of the chain (`_toc.yml` under `root`) with the profile and seconds of their
    last run, from the records beside the executed copies; `profile` None where none was run.
    `skip`: notebooks left out (the one reading the records, whose own record comes after it)."""
    from cupl.book.chain import EXECUTED, chain_notebooks, read_record

    root = Path(root)
    rows = []
    for name in chain_notebooks(root):
        if name in skip:
            continue
        record = read_record(root / EXECUTED / "notebooks" / f"{name}.run.json")
        if record is None:
            rows.append({"notebook": name, "profile": None, "seconds": None, "finished": None})
        else:
            rows.append({"notebook": name, "profile": record.get("parameters", {}).get("profile"),
                         "seconds": record["wall_s"], "finished": record.get("finished")})
    return rows


READINGS_COLUMNS = {"reading": "reading", "alpha": "alpha", "batch_size": "batch", "seeds": "seeds",
                    "label_auc": "label AUC", "label_mae": "mean |label - oracle|",
                    "saturated_normal": "normal clips > 0.99", "healthy": "healthy"}


def readings_summary(result: dict) -> list[dict]:
    """The rows of a `benchmarks/generator_readings.py` result, one per (reading, alpha, batch):
    the mean health over its seeds and the verdict ("yes", "no", or "(yes)" / "(no)" while
    seeds are missing), with the columns of READINGS_COLUMNS."""
    rows = []
    for r in result.get("summary", []):
        healthy = r["healthy"]
        verdict = {True: "yes", False: "no"}[healthy] if healthy is not None else \
            f"({'yes' if r['healthy_provisional'] else 'no'})"
        row = {label: r[key] for key, label in READINGS_COLUMNS.items() if key != "healthy"}
        row["seeds"] = len(r["seeds"])
        rows.append({**row, "healthy": verdict})
    return rows


def readings_decision(result: dict) -> str:
    """The decision rule's outcome in one sentence, from the result's own fields."""
    decision = result.get("decision", {})
    missing = len(result.get("missing", []))
    runs = len(result.get("runs", []))
    done = f"{runs} of {runs + missing} planned runs made"
    choice = decision.get("choice")
    undecided = decision.get("undecided (seeds missing)", [])
    if choice is None:
        why = (f"{len(undecided)} readings still lack seeds at alpha = 10 or 100" if undecided
               else "no reading is healthy at alpha = 10 and unhealthy at alpha = 100")
        return f"{done}; no reading is chosen: {why}."
    others = [q for q in decision.get("qualifying", []) if q != choice]
    verb = "qualifies" if len(others) == 1 else "qualify"
    also = f"; {len(others)} more {verb}, further from the text" if others else ""
    open_ = f"; {len(undecided)} readings are still undecided" if undecided else ""
    return f"{done}; the rule chooses {choice}{also}{open_}."
