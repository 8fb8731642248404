"""A sweep run one by one against the same sweep as one batched model (`cupl.experiments.batched.run_many`).

    python benchmarks/sweep.py --threads 2 --max-models 5 --json sweep.json   # chapter 9: alpha x seeds, quick bank
    python benchmarks/sweep.py --alphas 1 10 --seeds 0             # a smaller grid
    python benchmarks/sweep.py --device cuda --profile full         # Table 4 (5 variants) x 3 seeds

On the CPU with the quick profile the grid is alpha in {0.1, 1, 10, 100, 1000} x seeds 0-2
(the variant `full`); with `--device cuda --profile full` it is the rows of Table 4
(`cupl.config.VARIANTS`) x seeds 0-2, unless `--grid` says otherwise. Both ways run in one
process, same threads, same bank (the profile's embedded benchmark): all of them as
`run_many`, then every run alone (`cupl.experiments.train.run`, one after the other). Printed: both
times, their ratio, the largest |AUC| difference between a run alone and its batched twin
(final AUC and over every iteration), and the seconds per stage both ways (batched, stage 1
runs per model and f_c is one stacked training per batch; a stage-1 f_g shared by runs is
trained once). Besides wall time
it reports the process's CPU time, which a machine shared with other work disturbs less. `--json PATH`
writes the numbers, the machine, the torch version and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cupl.experiments.batched import run_many  # noqa: E402
from cupl.experiments.timing import cpu_name, stage_totals  # noqa: E402
from cupl.config import VARIANTS, make_config  # noqa: E402
from cupl.experiments import load_data  # noqa: E402
from cupl.files import atomic_write  # noqa: E402
from cupl.experiments.train import run  # noqa: E402

STAGES = ("load", "stage1", "mc_dropout", "mining", "train", "score", "evaluate")


def sweep_configs(grid: str, preset: str, profile: str, device: str, alphas, seeds) -> list[tuple[dict, object]]:
    """[(what the point is, its RunConfig)] of the grid."""
    if grid == "alpha":
        return [({"alpha": a, "seed": s}, make_config(preset, profile, "full", seed=s, device=device,
                                                      **{"generator.alpha": a})) for a in alphas for s in seeds]
    return [({"variant": v, "seed": s}, make_config(preset, profile, v, seed=s, device=device))
            for v in VARIANTS for s in seeds]


def by_stage(results) -> dict[str, float]:
    """Seconds per stage summed over runs (iterations folded together), every stage named."""
    return dict.fromkeys(STAGES, 0.0) | stage_totals(r.timings for r in results)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--grid", choices=["alpha", "table4"], help="default: table4 with --device cuda --profile "
                   "full, else alpha")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 1.0, 10.0, 100.0, 1000.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads (both ways)")
    p.add_argument("--max-models", type=int, help="models per batch (`run_many`); default: all of a batch")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    grid = args.grid or ("table4" if torch.device(args.device).type == "cuda" and args.profile == "full" else "alpha")
    torch.set_num_threads(args.threads)
    data = load_data("", args.profile, cache=None)
    points = sweep_configs(grid, data.preset, args.profile, args.device, args.alphas, args.seeds)
    configs = [c for _, c in points]
    print(f"{len(configs)} runs ({grid} grid, profile {args.profile}, {args.device}, {args.threads} threads); "
          f"bank {data.path.name}: train {tuple(data.train.features.shape)}, test {tuple(data.test.features.shape)}",
          flush=True)
    # one-off costs (scikit-learn's import, first kernel calls) out of both clocks
    run(make_config(data.preset, "smoke", "full", device=args.device,
                    **{"generator.steps": 2, "clip.epochs": 1, "self_train.iterations": 1}),
        data.train, data.test, progress=False)

    # batched first: should the runs alone be cut short, their times so far are printed
    start, cpu = time.perf_counter(), time.process_time()
    batched = run_many(configs, data.train, data.test, oracle=data.oracle, max_models=args.max_models)
    batched_s, batched_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    print(f"  batched: {batched_s:.1f} s ({batched_cpu_s:.1f} s of CPU)", flush=True)
    start, cpu = time.perf_counter(), time.process_time()
    separate = []
    for i, config in enumerate(configs):
        separate.append(run(config, data.train, data.test, oracle=data.oracle, progress=False))
        print(f"  alone {i + 1}/{len(configs)}: {time.perf_counter() - start:.1f} s "
              f"({time.process_time() - cpu:.1f} s of CPU), AUC difference "
              f"{abs(separate[-1].metrics['auc'] - batched[i].metrics['auc']):.2e}", flush=True)
    separate_s, separate_cpu_s = time.perf_counter() - start, time.process_time() - cpu

    final = max(abs(a.metrics["auc"] - b.metrics["auc"]) for a, b in zip(separate, batched))
    every = max(abs(x["auc"] - y["auc"]) for a, b in zip(separate, batched) for x, y in zip(a.history, b.history))
    stages_alone, stages_batched = by_stage(separate), by_stage(batched)
    print(f"\none by one: {separate_s:.1f} s   batched: {batched_s:.1f} s   ratio {separate_s / batched_s:.2f}x")
    print(f"CPU time (all threads): one by one {separate_cpu_s:.1f} s, batched {batched_cpu_s:.1f} s, "
          f"ratio {separate_cpu_s / batched_cpu_s:.2f}x (the fairer number on a shared machine)")
    print(f"largest |AUC| difference: final {final:.2e}, any iteration {every:.2e}")
    print(f"\n{'stage':<12}{'alone s':>10}{'batched s':>11}{'ratio':>8}")
    for stage in STAGES:
        a, b = stages_alone[stage], stages_batched[stage]
        print(f"{stage:<12}{a:>10.1f}{b:>11.1f}{(a / b if b else float('nan')):>8.2f}")
    if args.json:
        out = {"runs": len(configs), "separate_s": separate_s, "batched_s": batched_s,
               "ratio": separate_s / batched_s,
               "separate_cpu_s": separate_cpu_s, "batched_cpu_s": batched_cpu_s, "max_abs_auc_diff": final, "max_abs_auc_diff_any_iteration": every,
               "stages_separate_s": stages_alone, "stages_batched_s": stages_batched,
               "grid": grid, "max_models": args.max_models, "profile": args.profile, "device": args.device,
               "points": [point for point, _ in points],
               "machine": {"cpu": cpu_name(), "threads": args.threads, "cores": os.cpu_count(),
                           "torch": torch.__version__, "python": platform.python_version(),
                           "cuda": torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else None,
                           "load_average": os.getloadavg()},
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(out, indent=1) + "\n"))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
