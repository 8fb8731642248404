"""What batching N runs could gain at most on this machine, stage by stage, and the sweep ratio it allows.

A batched form of N models (`cupl.experiments.batched`) does at least the matmul and
elementwise work of ONE model fed N times the rows per step: the same FLOP and the same
masks, with fewer and larger kernels and one optimiser step. So one step of one model on
N x the rows, divided by N, is an optimistic floor for a batched model-step: the least a
step costs once every per-step overhead is shared by N models. The headroom of a stage is

    h = (time of one step alone) / (time of one step on N x the rows / N)

measured side by side in this run for stage 1 (`train_generator`, batch_size x N) and for
f_c (`train_clip_classifier`, batch_size x N). One whole `run` in the same process gives the
stages' share of a run; the best ratio a sweep of such runs can reach, taking every other
stage as free (MC-Dropout, mining, scoring and evaluation cost nothing), is

    bound = run_s / (stage1_s / max(1, h_g) + train_s / max(1, h_c))

    python benchmarks/headroom.py --threads 2 --json benchmarks/results/headroom_quick_cpu.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cupl.book.performance import write_result  # noqa: E402
from cupl.config import make_config  # noqa: E402
from cupl.experiments import load_data  # noqa: E402
from cupl.experiments.timing import stage_totals  # noqa: E402
from cupl.experiments.train import run, train_clip_classifier, train_generator  # noqa: E402


def best_step_ms(fn, steps: int, repeats: int) -> float:
    """Milliseconds per step of fn() (which makes `steps` steps), best of `repeats`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) / steps * 1e3


def headroom(step_ms, models: int, steps: int, repeats: int) -> dict:
    """step_ms(scale, steps) at scale 1 and `models`; ms per model-step both ways and their ratio."""
    step_ms(1, 2)  # first call of each kernel
    alone = step_ms(1, steps, repeats)
    stacked = step_ms(models, steps, repeats) / models
    return {"alone_ms": alone, "stacked_ms": stacked, "headroom": alone / stacked}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--models", type=int, default=15, help="N, the runs of a sweep (chapter 9's grid: 15)")
    p.add_argument("--steps", type=int, default=20, help="steps per timing")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args(argv)
    if args.models < 2:
        p.error(f"--models must be >= 2, got {args.models}")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    data = load_data("", args.profile, cache=None)
    config = make_config(data.preset, args.profile, "full")
    train = data.train

    result = run(config, train, data.test, progress=False, keep_arrays=True)
    totals = stage_totals([result.timings])
    stages = {k: totals.get(k, 0.0) for k in ("stage1", "train")}
    run_s = sum(s for k, s in totals.items() if k != "load")
    print(f"one run ({args.profile}, {args.threads} threads): {run_s:.1f} s, stage 1 {stages['stage1']:.1f} s, "
          f"f_c training {stages['train']:.1f} s")

    g, c = config.generator, config.clip
    labels, selected = result.arrays[0]["labels"], result.arrays[0]["selected"]  # the first iteration's

    def stage1_ms(scale, steps, repeats=1):
        cfg = replace(g, steps=steps, batch_size=g.batch_size * scale)
        return best_step_ms(lambda: train_generator(train, cfg, rng=torch.Generator().manual_seed(0)), steps, repeats)

    def fc_ms(scale, steps, repeats=1):
        cfg = replace(c, budget="steps", steps=steps, batch_size=c.batch_size * scale)
        return best_step_ms(lambda: train_clip_classifier(train, labels, selected, cfg, config.self_train.window,
                                                          rng=torch.Generator().manual_seed(0)), steps, repeats)

    heads = {"stage1": headroom(stage1_ms, args.models, args.steps, args.repeats),
             "train": headroom(fc_ms, args.models, 5 * args.steps, args.repeats)}
    floor = sum(stages[k] / max(1.0, heads[k]["headroom"]) for k in stages)
    bound = run_s / floor
    print(f"{'stage':8s} {'alone ms':>9s} {'x' + str(args.models) + ' rows, ms/model':>20s} {'headroom':>9s}")
    for k, h in heads.items():
        print(f"{k:8s} {h['alone_ms']:9.2f} {h['stacked_ms']:20.2f} {h['headroom']:8.2f}x")
    print(f"the best sweep ratio these allow, every other stage free: {bound:.2f}x")
    if args.json:
        write_result(args.json, {"models": args.models, "profile": args.profile, "threads": args.threads,
                                 "steps": args.steps, "repeats": args.repeats, "run_s": run_s,
                                 "run_stages_s": stages, "headroom": heads, "bound": bound},
                     load_before=load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
