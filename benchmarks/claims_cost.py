"""Not a speed comparison: what one cell of chapter 10's claims map costs, to plan the chapter.

A cell is one `grid` over the five variants (Table 4's four rows and standard self-training)
on the profile's embedded benchmark. The script runs the default cell with `--seeds` seeds
in one process (one thread), in a fresh run cache so that nothing is read back, and reports
the seconds per variant and per stage, the machine, the torch build and the load average.
The chapter's total is estimated from it: seven cells cost one cell each, the cell with four
times the stage-1 budget costs four times the stage-1 seconds, and the sensitivity table one
cell per open choice (an upper bound: choices of stage 2 reuse the stage-1 models).

    python benchmarks/claims_cost.py                 # quick profile, one seed
    python benchmarks/claims_cost.py --profile smoke --seeds 2

Results go to `benchmarks/results/claims_cost[_PROFILE].{json,md}` (quick: no suffix).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from cupl.config import make_config, to_dict
from cupl.experiments import claims, load_data
from cupl.experiments.timing import cpu_name
from cupl.files import atomic_write


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as cache:
        data = load_data("", args.profile, cache=Path(cache))
        start = time.perf_counter()
        result = claims.claims_cell(data, claims.MAP_CELLS[0], args.seeds, args.profile, workers=1)
        cell = time.perf_counter() - start
        stages = {}
        for variant in claims.VARIANTS:
            for seed_timings in _timings(data, args.seeds, args.profile, variant):
                for stage, seconds in seed_timings.items():
                    key = (variant, "stage1" if stage == "stage1" else "stage2")
                    stages[key] = stages.get(key, 0.0) + seconds
    stage1 = sum(v for (_, s), v in stages.items() if s == "stage1")
    per_seed = cell / args.seeds
    choices = sum(not c.needs_crops or data.train.features.shape[1] > 1 for c in claims.SENSITIVITY) - 1
    estimate_3 = 3 * (7 * per_seed + (per_seed + 3 * stage1 / args.seeds) + choices * per_seed)
    meta = dict(date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), cpu=cpu_name(),
                machine=platform.machine(), torch=torch.__version__, threads=args.threads, load_at_start=load,
                profile=args.profile, seeds=args.seeds, bank=data.path.name, cell_seconds=cell,
                stage1_seconds=stage1, sensitivity_choices=choices, chapter_estimate_seconds_3_seeds=estimate_3,
                per_variant={f"{v}.{s}": round(t, 1) for (v, s), t in stages.items()},
                verdicts={k: str(v) for k, v in result["verdicts"].items()})
    suffix = "" if args.profile == "quick" else f"_{args.profile}"
    out = Path(__file__).parent / "results" / f"claims_cost{suffix}"
    text = report(meta)
    atomic_write(out.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)),
                 overwrite=True)
    atomic_write(out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(text), overwrite=True)
    print(text)


def _timings(data, seeds, profile, variant):
    """The recorded stage timings of the cell's runs of `variant` (in memory after the cell)."""
    configs = [make_config(data.preset, profile, variant, seed=seed) for seed in range(seeds)]
    return [data.runs[json.dumps(to_dict(c), sort_keys=True)].timings for c in configs]


def report(meta: dict) -> str:
    lines = [f"# The cost of one cell of the claims map ({meta['profile']} profile)", "",
             f"{meta['date']}, {meta['cpu']}, torch {meta['torch']}, {meta['threads']} thread(s), load average at "
             f"start {meta['load_at_start']}; bank {meta['bank']}; {meta['seeds']} seed(s), one process.", "",
             f"One cell (five variants): {meta['cell_seconds']:.0f} s, of which stage 1 {meta['stage1_seconds']:.0f} s.",
             "", "| variant.stage | seconds |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in meta["per_variant"].items()]
    lines += ["", f"Estimated chapter at 3 seeds: {meta['chapter_estimate_seconds_3_seeds'] / 3600:.1f} h in one "
              f"process (8 cells, {meta['sensitivity_choices']} open choices), before anything is read from the cache."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
