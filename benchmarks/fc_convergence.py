"""How many optimiser steps f_c needs to converge, counted in steps, not epochs.

With `clip.budget = "epochs"` the step count of an iteration grows with the selected set, so
a row that selects every clip trains f_c twice as long as a row with R = 0.5. With
`clip.budget = "steps"` every row gets `clip.steps`. This script picks that number on the
ablation baseline (Table 4's first row: one head, L_MIL, every pseudo label, one iteration),
never on an ablation outcome: for each candidate budget b it runs the baseline with b steps,
mean test AUC over seeds, and the chosen budget is the smallest b whose mean AUC is within
`--tolerance` AUC points of `--factor` times as many steps. Budgets run in increasing order
and the script stops once a budget qualifies. Each seed's f_g is trained once and shared by
every budget (a run with a given stage-1 model is identical to one that trains it). The
default epochs budget of the profile is run beside them for reference only.

    python benchmarks/fc_convergence.py                      # quick profile, 3 seeds, one thread
    python benchmarks/fc_convergence.py --profile smoke --budgets 25 50 100 200 400 800

Results go to `benchmarks/results/fc_convergence[_PROFILE].{json,md}` (quick: no suffix),
rewritten after every budget, with the machine, the torch build, the threads and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone

import torch

from cupl.book import cpu_name
from cupl.config import make_config
from cupl.experiments import load_data
from cupl.files import atomic_write
from cupl.train import run, stage1


def chosen_budget(means: dict[int, float], factor: int, tolerance: float) -> int | None:
    """The smallest budget b with |AUC(b) - AUC(factor b)| <= tolerance (AUC points), else None."""
    for b in sorted(means):
        if factor * b in means and abs(means[b] - means[factor * b]) <= tolerance:
            return b
    return None


def report(meta: dict, rows: list[dict], reference: list[dict], choice: int | None) -> str:
    budgets = sorted({r["steps"] for r in rows})
    lines = [f"# f_c convergence in optimiser steps ({meta['profile']} profile, baseline variant)", "",
             f"{meta['date']}, {meta['cpu']}, torch {meta['torch']}, {meta['threads']} thread(s), "
             f"load average at start {meta['load_at_start']}; bank {meta['bank']}; seeds {meta['seeds']}; "
             f"batch {meta['batch_size']} samples per step; {meta['samples']} (clip, crop) samples selected "
             f"(all clips).", "",
             f"Rule (fixed before the runs): the smallest budget b whose mean test AUC is within "
             f"{meta['tolerance']} AUC points of {meta['factor']} b steps.", "",
             "| f_c steps | AUC (%) mean ± std | per seed | vs. " + f"{meta['factor']}x steps (points) | f_c seconds per run |",
             "| ---: | ---: | --- | ---: | ---: |"]
    means = {}
    for b in budgets:
        auc = torch.tensor([r["auc"] for r in rows if r["steps"] == b], dtype=torch.float64) * 100
        means[b] = float(auc.mean())
    for b in budgets:
        auc = [100 * r["auc"] for r in rows if r["steps"] == b]
        secs = sum(r["train_s"] for r in rows if r["steps"] == b) / len(auc)
        std = float(torch.tensor(auc, dtype=torch.float64).std()) if len(auc) > 1 else 0.0
        diff = f"{means[b] - means[meta['factor'] * b]:+.2f}" if meta["factor"] * b in means else "—"
        lines.append(f"| {b} | {means[b]:.2f} ± {std:.2f} | {', '.join(f'{a:.2f}' for a in auc)} | {diff} | {secs:.1f} |")
    if reference:
        auc = [100 * r["auc"] for r in reference]
        lines += ["", f"Reference, not part of the rule: the profile's epochs budget ({reference[0]['epochs']} epochs, "
                      f"{reference[0]['steps']} steps on the baseline's selection): AUC "
                      f"{sum(auc) / len(auc):.2f} % (per seed {', '.join(f'{a:.2f}' for a in auc)})."]
    lines += ["", f"Chosen budget: {choice} steps." if choice else "Chosen budget: none of the budgets run qualifies."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--budgets", type=int, nargs="+", default=[125, 250, 500, 1000, 2000, 4000, 8000])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--factor", type=int, default=4)
    p.add_argument("--tolerance", type=float, default=0.5, help="AUC points")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="output stem; default benchmarks/results/fc_convergence[_PROFILE]")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    stem = args.out or "benchmarks/results/fc_convergence" + ("" if args.profile == "quick" else f"_{args.profile}")
    data = load_data("", args.profile, cache=None)
    base = make_config(data.preset, args.profile, "baseline")
    meta = {"profile": args.profile, "seeds": args.seeds, "factor": args.factor, "tolerance": args.tolerance,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu_name(),
            "machine": platform.node(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()), "bank": data.path.name,
            "batch_size": base.clip.batch_size, "samples": data.train.num_clips * data.train.features.shape[1]}
    generators = {}
    for seed in range(args.seeds):
        generators[seed] = stage1(make_config(data.preset, args.profile, "baseline", seed=seed), data.train)
    rows, reference, choice = [], [], None

    def one(seed, **overrides):
        config = make_config(data.preset, args.profile, "baseline", seed=seed, **overrides)
        result = run(config, data.train, data.test, progress=False, generator_model=generators[seed])
        return {"seed": seed, "auc": result.metrics["auc"], "ap": result.metrics["ap"],
                "train_s": result.timings["iter1.train"]}

    def write():
        text = report(meta, rows, reference, choice)
        payload = {**meta, "runs": rows, "reference_epochs": reference, "chosen_steps": choice}
        atomic_write(stem + ".json", lambda tmp: tmp.write_text(json.dumps(payload, indent=1)))
        atomic_write(stem + ".md", lambda tmp: tmp.write_text(text))
        print(text, flush=True)

    start = time.perf_counter()
    for seed in range(args.seeds):
        row = one(seed)
        batches = -(-meta["samples"] // base.clip.batch_size)
        reference.append({**row, "epochs": base.clip.epochs, "steps": base.clip.epochs * batches})
    for b in sorted(args.budgets):
        rows += [{**one(seed, **{"clip.budget": "steps", "clip.steps": b}), "steps": b} for seed in range(args.seeds)]
        means = {s: 100 * sum(r["auc"] for r in rows if r["steps"] == s) / args.seeds for s in {r["steps"] for r in rows}}
        choice = chosen_budget(means, args.factor, args.tolerance)
        meta["seconds"] = round(time.perf_counter() - start)
        write()
        if choice is not None:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
