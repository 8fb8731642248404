"""Paper scale on one GPU, checked in one short run: build, run, compare, load, report.

One command on a GPU machine (16 CPU cores, 128 GB RAM, one H100/H200) that finishes in
about 3 minutes and within `--budget-s` (default 290 s): a step still running when the
budget ends is interrupted and reported, the steps after it are skipped. Every line it
prints starts with the clock and the seconds since start, so a run cut short from outside
still shows where it was. Each step is guarded: a failing step is reported with its
traceback and the others still run. Results go to gpu_check.json and gpu_check.md in $OUT
(else ./gpu_check_out/), rewritten after every step.

Steps:

  plan       the structure of the embedded UCF-Crime benchmark at `full` scale
             (`cupl.data.synth.video_plan`): the 290 test and 1,610 training videos with
             their real lengths (about 792k training clips, 12.7M frames), the test videos'
             annotated intervals, training events drawn from the real distribution;
             `--scale` keeps that share of each split's videos, evenly spaced. With
             `--train-clips` every training video is stretched by one factor so that the
             whole training split has about that many clips (default 0: real lengths).
  generate   the features, made on the device (`cupl.data.synth_torch.build_split`): the
             embedded benchmark's premises in a simpler form (per-video latent scene, slow
             drift, clip noise, events along their class direction as boxes, crop noise,
             one fixed random softplus lift to D = 2048), 10 crops, bfloat16: 7.9M train
             vectors, 32 GB.
  warmup     a smoke-profile run on a few videos, untimed, so that library set-up and
             kernel selection are not charged to the pipeline.
  pipeline   `cupl.experiments.train.run` once with the `full` profile and bfloat16 autocast: the
             per-stage table of `benchmarks/pipeline.py` (FLOP, TFLOP/s, floor, peak
             memory per stage).
  bank_io    about `--io-gb` of training videos written with `cupl.data.bank.write_bank`,
             dropped from the page cache, then read to the GPU with `FeatureBank.load_split`;
             the time for the whole training split is extrapolated linearly from it.
  agreement  CUDA against the CPU on a subset (`--agree-videos` train and
             `--agree-test-videos` test videos, same seed, float32, fewer steps, no
             dropout in training, whose draws are each device's own, and random selection,
             as rounding noise must not rank clips): the pseudo labels,
             uncertainty and selection of every iteration and the final test scores, within
             TOLERANCE; also the same trained models applied on both devices (inference
             alone). A bfloat16 run is reported against the same CPU run.
  compile    torch.compile of f_c's training step against eager, on one epoch
             (only if at least 120 s of the budget are left).

    python benchmarks/gpu_check.py                               # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --scale 0.01 --dim 16 --crops 2 --profile smoke \\
        --io-gb 0.0005 --skip warmup compile \\
        --set generator.steps 5 --set clip.epochs 1                 # a tiny check on the CPU
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

import pipeline  # benchmarks/pipeline.py, beside this script: FLOP counts and tables
from cupl.data.synth import FRAMES_PER_CLIP
from cupl.data.synth_torch import build_split, evenly_spaced, stretch
from cupl.experiments.steps import sync
from cupl.experiments.timing import StageTimer
from cupl.files import atomic_write, drop_from_page_cache
from cupl.util import parse_literal

STEPS = ("plan", "generate", "warmup", "pipeline", "bank_io", "agreement", "compile")
# Agreement step. "inference": the same trained f_g and f_c applied on the CPU and on the
# device (MC-Dropout masks from the CPU generator on both): max |difference| within these.
# Whole runs cannot agree clip by clip: stage 1's MIL loss takes a max over segments, and a
# rounding difference that changes which segment is the max changes the gradient, so runs
# drift apart (the first H200 run: labels up to 0.93 apart, AUC 0.0035). A whole run on the
# device is therefore held against what rounding alone does on the CPU: the same CPU run on
# features each changed in its last bit (x (1 +- 2^-23), random signs, so that a matmul's
# outputs move by about as much as a different summation order moves them); the device may
# differ from the CPU by at most RUN_MARGIN times that, or by RUN_FLOOR.
TOLERANCE = {"inference": {"labels": 1e-4, "scores": 1e-4}}
RUN_MARGIN, RUN_FLOOR = 10.0, 1e-4
# Training-time dropout is drawn by each device's own generator, so it is off; without it
# MC-Dropout's passes are equal and the uncertainty is float noise, which must not rank
# clips: the selection is the standard self-training's (Fig. 3), random keys drawn on the CPU.
COMPARABLE = {"generator.dropout": 0.0, "clip.dropout": 0.0, "self_train.selection": "random"}


# --------------------------------------------------------------------------- agreement


def compare_runs(a, b) -> dict:
    """Largest differences between two `RunResult`s of the same data and seed (keep_arrays):
    over all iterations, and the pseudo labels' per iteration ("labels_per_iteration")."""
    per_iteration = [float((x["labels"] - y["labels"]).abs().max()) for x, y in zip(a.arrays, b.arrays)]
    return {
        "labels": max(per_iteration),
        "uncertainty": max(float((x["uncertainty"] - y["uncertainty"]).abs().max()) for x, y in zip(a.arrays, b.arrays)),
        "selected": min(float((x["selected"] == y["selected"]).float().mean()) for x, y in zip(a.arrays, b.arrays)),
        "scores": float((a.test_scores - b.test_scores).abs().max()),
        "auc": abs(a.metrics["auc"] - b.metrics["auc"]),
        "labels_per_iteration": per_iteration,
    }


def within(diffs: dict, tolerance: dict) -> bool:
    return all(diffs[k] >= v if k == "selected" else diffs[k] <= v for k, v in tolerance.items())


def run_tolerance(reference: dict) -> dict:
    """What a device run may differ from the CPU run by, given the CPU run against itself on
    last-bit-perturbed features (`reference`, from `compare_runs`)."""
    out = {k: max(RUN_MARGIN * reference[k], RUN_FLOOR) for k in ("labels", "scores", "auc")}
    out["selected"] = reference["selected"]
    return out


def last_bit(split, seed: int = 0):
    """The split with every float32 feature changed in its last bit, up or down at random."""
    from dataclasses import replace

    signs = torch.randint(0, 2, split.features.shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return replace(split, features=split.features * (1.0 + 2.0**-23 * signs))


def inference_agreement(f_g, f_c, train, test, config, settings) -> dict:
    """The same f_g and f_c applied under two (device, eval_batch_size) settings: max
    |difference| of MC-Dropout pseudo labels (of f_g and of f_c, M passes at the models'
    dropout rates) and of test scores, float32."""
    import copy

    from cupl.experiments.train import prepare_split, pseudo_labels, score_clips

    outs = []
    w = config.self_train.window
    for device, batch in settings:
        tr = prepare_split(train, config.crops, device)
        te = prepare_split(test, config.crops, device)
        g, c = copy.deepcopy(f_g).to(device), copy.deepcopy(f_c).to(device)
        labels_g = pseudo_labels(g, tr, config.generator.mc_passes, rng=torch.Generator().manual_seed(1),
                                 batch_size=batch)[0]
        labels_c = pseudo_labels(c, tr, config.clip.mc_passes, window=w,
                                 rng=torch.Generator().manual_seed(2), batch_size=batch)[0]
        outs.append((labels_g.cpu(), labels_c.cpu(), score_clips(c, te, w, batch_size=batch).cpu()))
    (ga, ca, sa), (gb, cb, sb) = outs
    return {"labels": max(float((ga - gb).abs().max()), float((ca - cb).abs().max())),
            "scores": float((sa - sb).abs().max())}


def run_once(train, test, *, profile: str, **settings):
    """(RunResult with arrays, seconds) of one run of Algorithm 1 with the given config settings."""
    from cupl.config import make_config
    from cupl.experiments.train import run

    start = time.perf_counter()
    result = run(make_config("ucf", profile, **settings), train, test, progress=False, keep_arrays=True)
    return result, time.perf_counter() - start


# --------------------------------------------------------------------------- bank I/O


# --------------------------------------------------------------------------- the run


class BudgetExceeded(Exception):
    """A step ran past the end of the time budget."""


@contextlib.contextmanager
def _deadline(seconds: float):
    """Interrupt the enclosed code with BudgetExceeded after `seconds` (where SIGALRM exists)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def expire(signum, frame):
        raise BudgetExceeded(f"the time budget ran out after {seconds:.0f} s of this step")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """Runs the steps in order under a time budget and keeps the report up to date on disk."""

    def __init__(self, out: Path, budget_s: float, skip: set[str]):
        self.out, self.budget_s, self.skip = out, budget_s, skip
        self.start = time.perf_counter()
        # when and how it was run, as every benchmark result records it (cupl.book.performance)
        self.report: dict = {"steps": {}, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"), "command": " ".join(["python", *sys.argv])}
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def log(self, message: str):
        print(f"[{datetime.datetime.now():%H:%M:%S} +{self.elapsed():6.1f}s] {message}", flush=True)

    def step(self, name: str, fn, *, needs: tuple[str, ...] = (), min_left_s: float = 0.0):
        record = self.report["steps"].setdefault(name, {})
        missing = [n for n in needs if self.report["steps"].get(n, {}).get("status") != "ok"]
        left = self.budget_s - self.elapsed()
        reason = ("--skip" if name in self.skip else f"needs {', '.join(missing)}" if missing
                  else f"{left:.0f} s of the budget left, needs {min_left_s:.0f} s"
                  if left < max(min_left_s, 1.0) else None)
        if reason:
            record.update(status="skipped", reason=reason)
            self.log(f"{name}: skipped ({reason})")
            self.save()
            return None
        self.log(f"{name}: start")
        t0 = time.perf_counter()
        try:
            with _deadline(left):
                value = fn(record)
            record.update(status="ok", seconds=time.perf_counter() - t0)
            self.log(f"{name}: ok in {record['seconds']:.1f} s")
        except KeyboardInterrupt:  # stopped from outside (gpu_check.sh's time limit): say where
            record.update(status="interrupted", seconds=time.perf_counter() - t0)
            self.log(f"{name}: interrupted")
            self.save()
            raise
        except Exception as err:  # every step is guarded; the report names what failed
            value = None
            record.update(status="failed", seconds=time.perf_counter() - t0, error=f"{type(err).__name__}: {err}",
                          traceback=traceback.format_exc())
            self.log(f"{name}: FAILED: {type(err).__name__}: {err}")
            print(record["traceback"], flush=True)
        self.save()
        return value

    def save(self):
        self.report["elapsed_s"] = self.elapsed()
        for name, text in (("gpu_check.json", json.dumps(self.report, indent=2, default=str)),
                           ("gpu_check.md", markdown_report(self.report))):
            atomic_write(self.out / name, lambda tmp: tmp.write_text(text))


def markdown_report(report: dict) -> str:
    lines = ["# GPU check", ""]
    machine = report.get("machine", {})
    if machine:
        lines += [f"Machine: {machine.get('gpu', 'no GPU')} ({machine.get('gpu_memory_gib', '-')} GiB), "
                  f"{machine['cpu']} ({machine['cpu_cores']} cores), torch {machine['torch']}, "
                  f"CUDA {machine.get('cuda', '-')}; load average {machine['load_average']}.", ""]
    lines += ["| step | status | seconds | note |", "| --- | --- | ---: | --- |"]
    for name, r in report["steps"].items():
        note = r.get("reason") or r.get("error") or r.get("note", "")
        lines.append(f"| {name} | {r.get('status', '?')} | {r.get('seconds', 0):.1f} | {note} |")
    s = report["steps"]
    if s.get("plan", {}).get("status") == "ok":
        p = s["plan"]
        lines += ["", f"Data: {p['train_videos']} train videos, {p['train_clips']:,} clips "
                      f"(stretch x{p['stretch']:.3f}), {p['test_videos']} test videos, {p['test_clips']:,} clips; "
                      f"{p['crops']} crops x {p['dim']}-d."]
    if s.get("pipeline", {}).get("status") == "ok":
        p = s["pipeline"]
        lines += ["", f"## Pipeline ({p['profile']} profile, amp {p['amp']})", "",
                  f"Peak: {p['peak']}" + (f"; measured matmul {p['measured_matmul_tflops']:.3g} TFLOP/s"
                                          if p["measured_matmul_tflops"] else "") + ". "
                  f"Whole run {p['wall_s']:.2f} s, final AUC {p['metrics']['auc']:.4f}; peak memory allocated "
                  f"{p['peak_gib']:.2f} GiB.", "", pipeline.markdown_table(p["rows"])]
        probe = p.get("stage1_graph") or {}
        if "graph" in probe:
            lines += ["", f"Stage 1 for {probe['steps']} steps (segment pooling included): eager {probe['eager']:.2f} s, "
                          f"replayed as a CUDA graph {probe['graph']:.2f} s."]
        if p.get("warnings"):
            lines += ["", "Warnings: " + "; ".join(p["warnings"])]
        gather = p.get("context_gather") or {}
        if "embedding_bag_ms" in gather:
            lines += ["", f"One f_c batch of {gather['batch']} temporal features: one embedding_bag for the memory "
                          f"{gather['embedding_bag_ms']:.2f} ms, gather of the w rows and a masked sum "
                          f"{gather['index_select_ms']:.2f} ms (max |difference| {gather['max_abs_diff']:.1e})."]
        inputs = p.get("fc_inputs") or {}
        if "table_s" in inputs:
            lines += ["", f"Inputs of one iteration's f_c training ({inputs['epochs']} epochs of {inputs['samples']:,} "
                          f"samples): built per batch {inputs['per_batch_s']:.2f} s, from a memory table of the "
                          f"selected clips {inputs['table_s']:.2f} s (building it {inputs['table_build_s']:.2f} s), "
                          f"max |difference| {inputs['max_abs_diff']:.1e}."]
        paths = p.get("fc_first_layer") or {}
        if "built_s" in paths:
            lines += ["", f"f_c's first layer over the training split (the MC-Dropout pass): temporal inputs built "
                          f"{paths['built_s']:.3f} s, clips projected once {paths['projected_s']:.3f} s, max "
                          f"|difference| {paths['max_abs_diff']:.1e}."]
    if s.get("agreement", {}).get("comparisons"):  # shown when outside tolerance too
        a = s["agreement"]
        lines += ["", "## CUDA against CPU", "", a["note"], "",
                  "| comparison | labels | uncertainty | selected equal | scores | AUC | within tolerance |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for name, c in a["comparisons"].items():
            d = c["diffs"]
            limits = ", ".join(f"{k} {v:.2g}" for k, v in (c["tolerance"] or {}).items())
            verdict = "reported only" if c["ok"] is None else f"{'yes' if c['ok'] else 'NO'} ({limits})"
            lines.append(f"| {name} | {d['labels']:.2e} | {d.get('uncertainty', float('nan')):.2e} | "
                         f"{d.get('selected', float('nan')):.4f} | {d['scores']:.2e} | {d.get('auc', float('nan')):.2e} | "
                         f"{verdict} |")
    if s.get("bank_io", {}).get("status") == "ok":
        b = s["bank_io"]
        lines += ["", "## Bank to GPU", "",
                  f"{b['videos']} videos, {b['gib']:.2f} GiB float16 ({b['file_gib']:.2f} GiB on disk): written in "
                  f"{b['write_s']:.1f} s; read to {b['device']} after dropping the page cache "
                  f"({b['dropped']}) in {b['cold_s']:.2f} s ({b['cold_gib_s']:.2f} GiB/s), warm {b['warm_s']:.2f} s. "
                  f"Extrapolated linearly (not measured) to the whole training split of {b['full_gib']:.1f} GiB: "
                  f"{b['full_cold_s']:.0f} s cold, {b['full_warm_s']:.0f} s warm."]
    if s.get("compile", {}).get("status") == "ok":
        c = s["compile"]
        lines += ["", "## torch.compile", "", c["note"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu, the latter with a small --scale")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the videos of each split (evenly spaced)")
    p.add_argument("--train-clips", type=int, default=0,
                   help="stretch training videos so that the whole training split has about this many "
                        "clips (0 keeps the plan's lengths)")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--crops", type=int, default=10)
    p.add_argument("--profile", default="full", choices=["smoke", "quick", "full"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch-size", type=int, default=2**18)
    p.add_argument("--agree-videos", type=int, default=40)
    p.add_argument("--agree-test-videos", type=int, default=20)
    p.add_argument("--agree-steps", type=int, default=300, help="stage-1 steps of the agreement runs")
    p.add_argument("--agree-epochs", type=int, default=2, help="f_c epochs of the agreement runs")
    p.add_argument("--io-gb", type=float, default=2.0, help="GB of features to write and read back")
    p.add_argument("--budget-s", type=float, default=290.0)
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="override a config key of every run, e.g. --set generator.steps 100")
    p.add_argument("--skip", nargs="*", default=[], choices=STEPS)
    p.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    args = p.parse_args(argv)
    args.overrides = {key: parse_literal(value) for key, value in args.set}
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: CUDA is not available to torch {torch.__version__}; install a CUDA build, "
              f"or check on the CPU at a small size (--device cpu --scale 0.01 ...)", file=sys.stderr)
        return 2

    check = Check(Path(args.out), args.budget_s, set(args.skip))
    device = torch.device(args.device)
    check.log(f"gpu_check: device {device}, scale {args.scale}, profile {args.profile}, out {args.out}")
    state: dict = {}
    check.step("plan", lambda r: _plan(args, state, r))
    check.step("generate", lambda r: _generate(args, state, r, check), needs=("plan",))
    check.step("warmup", lambda r: _warmup(args, state, r), needs=("generate",))
    check.step("pipeline", lambda r: _pipeline(args, state, r, check), needs=("generate",))
    check.step("bank_io", lambda r: _bank_io(args, state, r, check), needs=("generate",), min_left_s=40)
    check.step("agreement", lambda r: _agreement(args, state, r, check), needs=("generate",), min_left_s=60)
    check.step("compile", lambda r: _compile(args, state, r), needs=("generate",), min_left_s=120)
    failed = [n for n, r in check.report["steps"].items() if r["status"] == "failed"]
    check.log(f"done in {check.elapsed():.1f} s; report in {args.out}/gpu_check.md"
              + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _plan(args, state, record):
    from cupl.data import synth

    plans = list(synth.video_plan("ucf", "full", args.seed))
    train = [q for q in plans if q.split == "train"]
    test = [q for q in plans if q.split == "test"]
    plan_clips = sum(q.num_clips for q in train)
    factor = args.train_clips / plan_clips if args.train_clips else 1.0
    train = [train[i] for i in evenly_spaced(round(args.scale * len(train)), len(train))]
    test = [test[i] for i in evenly_spaced(round(args.scale * len(test)), len(test))]
    state["train_videos"], state["test_videos"] = stretch(train, factor), test
    record.update(train_videos=len(train), test_videos=len(test), plan_train_clips=plan_clips, stretch=factor,
                  train_clips=sum(q.num_clips for q in state["train_videos"]),
                  test_clips=sum(q.num_clips for q in test), crops=args.crops, dim=args.dim)


def _generate(args, state, record, check):
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    for split, seed in (("train", args.seed), ("test", args.seed + 1)):
        t0 = time.perf_counter()
        state[split] = build_split(state[f"{split}_videos"], dim=args.dim, crops=args.crops, seed=seed,
                                   device=device, dtype=dtype)
        sync(device)
        f = state[split].features
        check.log(f"  {split}: {tuple(f.shape)} {f.dtype} ({f.numel() * f.element_size() / 2**30:.2f} GiB) "
                  f"in {time.perf_counter() - t0:.1f} s")
        record[f"{split}_shape"] = list(f.shape)
        record[f"{split}_gib"] = f.numel() * f.element_size() / 2**30
    record["dtype"] = str(dtype)
    if device.type == "cuda":
        record["cuda_allocated_gib"] = torch.cuda.memory_allocated(device) / 2**30
    check.report["machine"] = pipeline.machine(device)


def _warmup(args, state, record):
    """The pipeline's settings on a few videos for a few steps: library set-up, kernel
    selection and the first CUDA graph capture happen here, not in the timed run."""
    from cupl.config import make_config
    from cupl.experiments.train import run

    train, test = state["train"], state["test"]
    tr = train.subset(evenly_spaced(min(8, train.num_videos), train.num_videos))
    te = test.subset(evenly_spaced(min(6, test.num_videos), test.num_videos))
    device = torch.device(args.device)
    config = make_config("ucf", args.profile, **{
        "device": str(device), "amp": device.type == "cuda", "seed": args.seed, "eval_batch_size": args.eval_batch_size,
        **args.overrides, "generator.steps": 10, "clip.epochs": 1})
    result = run(config, tr, te, progress=False)
    record["note"] = (f"{args.profile} settings, 10 stage-1 steps and 1 f_c epoch, on {tr.num_videos} + "
                      f"{te.num_videos} videos (AUC {result.metrics['auc']:.3f})")


def _pipeline(args, state, record, check):
    from cupl.config import make_config

    device = torch.device(args.device)
    amp = device.type == "cuda"
    config = make_config("ucf", args.profile, **{"device": str(device), "amp": amp, "seed": args.seed,
                                                 "eval_batch_size": args.eval_batch_size, **args.overrides})
    peak, what, measured = pipeline.reference_peak(device, amp, args.peak_tflops)
    check.log(f"  peak {what}" + (f"; measured matmul {measured:.3g} TFLOP/s" if measured else ""))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = pipeline.run_pipeline(config, state["train"], state["test"], peak_tflops=peak)
    for w in caught:
        check.log(f"  warning: {w.message}")
    state["config"] = config
    print(pipeline.plain_table(out["rows"]), flush=True)
    peak_gib = max(out["peak_memory_bytes"].values()) / 2**30 if out["peak_memory_bytes"] else \
        pipeline.peak_rss_bytes() / 2**30
    check.log(f"  whole run {out['wall_s']:.2f} s, AUC {out['metrics']['auc']:.4f}, peak memory {peak_gib:.2f} GiB")
    record.update(profile=args.profile, amp=amp, peak=what, peak_tflops=peak, measured_matmul_tflops=measured,
                  rows=out["rows"], wall_s=out["wall_s"], metrics=out["metrics"], history=out["history"],
                  config=out["config"], peak_memory_bytes=out["peak_memory_bytes"], peak_gib=peak_gib,
                  warnings=[str(w.message) for w in caught],
                  fc_first_layer=_first_layer_paths(out["result"], state["train"], config, check),
                  stage1_graph=_stage1_graph(state["train"], config, check),
                  context_gather=_context_gather(state["train"], config, check),
                  fc_inputs=_fc_inputs(state["train"], config, check),
                  steps={"stage1": config.generator.steps,
                         "f_c per iteration": [config.clip.epochs * math.ceil(h["selected"] * args.crops
                                                                              / config.clip.batch_size)
                                               for h in out["history"]]})


def _stage1_graph(train, config, check, steps: int = 200) -> dict:
    """Stage 1 for `steps` steps, eager against replayed as a CUDA graph (both pool the
    segments first); CUDA only."""
    from dataclasses import replace

    from cupl.experiments.train import train_generator

    if train.features.device.type != "cuda":
        return {"note": "CUDA only"}
    try:
        cfg, timer = replace(config.generator, steps=steps), StageTimer(config, train.features.device)
        for name in ("eager", "graph"):
            timer(f"{name}.stage1", train_generator, train, cfg, rng=torch.Generator().manual_seed(0),
                  amp=config.amp, graph=name == "graph")
        seconds = {name: timer.timings[f"{name}.stage1"] for name in ("eager", "graph")}
    except Exception as err:  # a side measurement: its failure must not fail the pipeline step
        check.log(f"  stage 1 eager against graph: FAILED: {type(err).__name__}: {err}")
        return {"error": f"{type(err).__name__}: {err}"}
    per_step = (seconds["eager"] - seconds["graph"]) / steps * 1e3
    check.log(f"  stage 1, {steps} steps: eager {seconds['eager']:.2f} s, graph {seconds['graph']:.2f} s "
              f"({per_step:.2f} ms saved per step)")
    return {"steps": steps, **seconds}


def _context_gather(train, config, check, repeats: int = 20) -> dict:
    """One f_c training batch of temporal features ([B, 2D], one crop per row): as `cupl.mining`
    builds it (one embedding_bag for the memory), against an index_select of the w previous
    rows and a masked float32 sum. Milliseconds per batch, best of `repeats`, and the largest
    difference of the two."""
    from cupl.mining import context_features

    features, device = train.features, train.features.device
    b, window = min(config.clip.batch_size, train.num_clips), config.self_train.window
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(train.num_clips, (b,), generator=g).to(device)
    crop = torch.randint(features.shape[1], (b,), generator=g).to(device)
    starts = train.starts

    def gathered():
        prev = rows[:, None] - torch.arange(1, window + 1, device=device)
        ok = prev >= starts[rows][:, None]
        first = ~ok[:, 0]
        prev = torch.where(ok, prev, rows[:, None])
        x = features[prev, crop[:, None]]  # [B, w, D]
        total = torch.sum(x * ok[..., None].to(x.dtype), dim=1, dtype=torch.float32)
        memory = total / ok.sum(dim=1, keepdim=True).clamp(min=1)
        current = features[rows, crop]
        memory = torch.where(first[:, None], current.float(), memory).to(features.dtype)
        return torch.cat([current, memory], dim=-1)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
        return min(times) * 1e3

    try:
        with torch.no_grad():
            diff = float((context_features(features, starts, rows, window, crop=crop).float()
                          - gathered().float()).abs().max())
            out = {"batch": b, "embedding_bag_ms": best(lambda: context_features(features, starts, rows, window,
                                                                              crop=crop)),
                   "index_select_ms": best(gathered), "max_abs_diff": diff}
    except Exception as err:  # a side measurement: its failure must not fail the pipeline step
        check.log(f"  context gather: FAILED: {type(err).__name__}: {err}")
        return {"error": f"{type(err).__name__}: {err}"}
    check.log(f"  one f_c batch of {b} temporal features: embedding_bag {out['embedding_bag_ms']:.2f} ms, "
              f"gather and masked sum {out['index_select_ms']:.2f} ms, max |difference| {diff:.1e}")
    return out


def _fc_inputs(train, config, check) -> dict:
    """The inputs of one iteration's f_c training, built per batch against from a memory table
    of the selected clips (`pipeline.fc_input_paths`)."""
    try:
        out = pipeline.fc_input_paths(train, config.self_train.window, config.clip.batch_size,
                                      config.self_train.ratio, config.clip.epochs)
    except Exception as err:  # a side measurement: its failure must not fail the pipeline step
        check.log(f"  f_c inputs: FAILED: {type(err).__name__}: {err}")
        return {"error": f"{type(err).__name__}: {err}"}
    check.log(f"  f_c inputs per iteration: built per batch {out['per_batch_s']:.2f} s, from a memory table "
              f"{out['table_s']:.2f} s (building it {out['table_build_s']:.2f} s), "
              f"max |difference| {out['max_abs_diff']:.1e}")
    return out


def _first_layer_paths(result, train, config, check) -> dict | None:
    """f_c's first layer over the training split, temporal inputs built against clips projected once."""
    try:
        f_c = result.f_c.to(train.features.device)
        paths = pipeline.first_layer_paths(f_c, train, config.self_train.window, config.eval_batch_size,
                                           config.amp, repeats=2)
    except Exception as err:  # a side measurement: its failure must not fail the pipeline step
        check.log(f"  f_c first layer paths: FAILED: {type(err).__name__}: {err}")
        return {"error": f"{type(err).__name__}: {err}"}
    finally:
        result.f_c.cpu()
    check.log(f"  f_c first layer over the split: built {paths['built_s']:.3f} s, projected {paths['projected_s']:.3f} s, "
              f"max |difference| {paths['max_abs_diff']:.1e}")
    return paths


def _agreement(args, state, record, check):
    """The device against the CPU on a float32 subset (on a CPU-only machine: the CPU path,
    evaluation in small chunks, against the GPU path, one large chunk)."""
    import copy
    from dataclasses import replace

    from cupl.config import make_config

    torch.set_float32_matmul_precision("highest")  # float32 means float32 on CUDA too (no TF32)
    train, test = state["train"], state["test"]
    tr = train.subset(evenly_spaced(min(args.agree_videos, train.num_videos), train.num_videos))
    te = test.subset(evenly_spaced(min(args.agree_test_videos, test.num_videos), test.num_videos))
    tr = replace(tr, features=tr.features.float().cpu()).to("cpu")
    te = replace(te, features=te.features.float().cpu()).to("cpu")
    common = {**args.overrides, "seed": args.seed, "generator.steps": args.agree_steps,
              "clip.epochs": args.agree_epochs, "clip.batch_size": 4096, **COMPARABLE}
    cuda = torch.device(args.device).type == "cuda"
    base = dict(common, device="cpu", eval_batch_size=65536 if cuda else 64)
    other = dict(common, device=args.device, eval_batch_size=65536 if cuda else 2**20)
    record["note"] = (f"{tr.num_videos} train videos ({tr.num_clips:,} clips), {te.num_videos} test videos "
                      f"({te.num_clips:,} clips), {args.crops} crops x {args.dim}-d; profile {args.profile} with "
                      f"{args.agree_steps} stage-1 steps, {args.agree_epochs} f_c epochs, f_c batch 4096, no "
                      f"dropout in training, random selection; CPU float32 against "
                      f"{'CUDA' if cuda else 'the CPU with one evaluation chunk'}, same seed. Max |difference| over "
                      f"all iterations; selected: share of clips selected alike. Whole runs within {RUN_MARGIN:g} "
                      f"times the CPU run against itself on features changed in their last bit (or {RUN_FLOOR:g}); "
                      f"inference: the CPU run's trained models with the paper's dropout rates for MC-Dropout, "
                      f"applied on both.")
    cpu, cpu_s = run_once(tr, te, profile=args.profile, **base)
    check.log(f"  CPU run {cpu_s:.1f} s, AUC {cpu.metrics['auc']:.4f}")
    nudged, _ = run_once(last_bit(tr), last_bit(te), profile=args.profile, **base)
    reference = compare_runs(cpu, nudged)
    comparisons = {"CPU, last bit changed": {"diffs": reference, "tolerance": None, "ok": None}}
    check.log(f"  CPU against itself, last bit changed: {reference}")
    runs = [("float32 run", dict(other, amp=False))] + ([("bfloat16 run", dict(other, amp=True))] if cuda else [])
    for name, settings in runs:
        result, seconds = run_once(tr, te, profile=args.profile, **settings)
        diffs = compare_runs(cpu, result)
        tolerance = None if settings["amp"] else run_tolerance(reference)
        comparisons[name] = {"diffs": diffs, "seconds": [cpu_s, seconds],
                             "auc": [cpu.metrics["auc"], result.metrics["auc"]], "tolerance": tolerance,
                             "ok": None if tolerance is None else within(diffs, tolerance)}
        check.log(f"  {name}: {seconds:.1f} s, {diffs}")
    paper = make_config("ucf", args.profile)
    f_g, f_c = copy.deepcopy(cpu.f_g), copy.deepcopy(cpu.f_c)
    f_g.dropout, f_c.dropout = paper.generator.dropout, paper.clip.dropout
    settings = [("cpu", base["eval_batch_size"]), (args.device, other["eval_batch_size"])]
    diffs = inference_agreement(f_g, f_c, tr, te, make_config("ucf", args.profile, **base), settings)
    comparisons["inference, same models"] = {"diffs": diffs, "tolerance": TOLERANCE["inference"],
                                             "ok": within(diffs, TOLERANCE["inference"])}
    check.log(f"  inference on the same models: {diffs}")
    record["comparisons"] = comparisons
    bad = [name for name, c in comparisons.items() if c["ok"] is False]
    if bad:
        raise AssertionError(f"outside tolerance: {', '.join(bad)} (see the report)")


def _bank_io(args, state, record, check):
    from cupl.data.bank import FeatureBank, VideoData, write_bank

    device = torch.device(args.device)
    train = state["train"]
    per_clip = args.crops * args.dim * 2  # float16 bytes
    offsets = train.offsets.cpu().tolist()
    count, total = 0, 0
    while count < train.num_videos and (total < args.io_gb * 1e9 or count < 2):
        total += (offsets[count + 1] - offsets[count]) * per_clip
        count += 1
    videos = [VideoData(name=train.names[i], split="train", label=int(train.labels[i]), category=train.categories[i],
                        num_frames=int(train.num_frames[i]),
                        features={"rgb": train.features[offsets[i]:offsets[i + 1]].to(torch.float16).cpu().numpy()})
              for i in range(count)]
    attrs = dict(source="gpu_check", feature_kind="synthetic", frames_per_clip=FRAMES_PER_CLIP,
                 crops=args.crops, modalities=["rgb"])
    folder = Path(tempfile.mkdtemp(prefix="gpu_check_bank_", dir=os.environ.get("TMPDIR")))
    path = folder / "bank.h5"
    try:
        t0 = time.perf_counter()
        write_bank(path, videos, attrs=attrs, progress=False)
        write_s = time.perf_counter() - t0
        del videos
        dropped = drop_from_page_cache(path)
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

        def read():
            t = time.perf_counter()
            with FeatureBank.open(path) as bank:
                split = bank.load_split("train", dtype=dtype, device=device)
            sync(device)
            return time.perf_counter() - t, split

        cold_s, split = read()
        del split
        warm_s, split = read()
        gib = total / 2**30
        full_gib = state["train"].num_clips * per_clip / 2**30
        record.update(videos=count, gib=gib, file_gib=path.stat().st_size / 2**30, write_s=write_s,
                      dropped="page cache dropped" if dropped else "page cache NOT dropped",
                      device=str(device), cold_s=cold_s, warm_s=warm_s, cold_gib_s=gib / cold_s,
                      warm_gib_s=gib / warm_s, full_gib=full_gib, full_cold_s=cold_s * full_gib / gib,
                      full_warm_s=warm_s * full_gib / gib,
                      note="the whole-split times are a linear extrapolation, not a measurement")
        check.log(f"  {gib:.2f} GiB: write {write_s:.1f} s, cold read {cold_s:.2f} s, warm {warm_s:.2f} s; "
                  f"whole split {full_gib:.1f} GiB extrapolated: {record['full_cold_s']:.0f} s cold")
    finally:
        path.unlink(missing_ok=True)
        folder.rmdir()


def _compile(args, state, record):
    """f_c epochs on the training split with random labels and a half selected: eager against
    a torch.compile'd f_c (its first epoch includes the compilation)."""
    from cupl.config import make_config
    from cupl.models import ClipClassifier
    from cupl.experiments.train import train_clip_classifier

    device = torch.device(args.device)
    train = state["train"]
    config = state.get("config") or make_config("ucf", args.profile, device=str(device))
    g = torch.Generator().manual_seed(args.seed)
    labels = torch.rand(train.num_clips, generator=g).to(device)
    selected = (torch.rand(train.num_clips, generator=g) < config.self_train.ratio).to(device)
    cfg = type(config.clip)(**{**config.clip.__dict__, "epochs": 1})
    compiled = ClipClassifier(2 * args.dim, cfg.hidden, cfg.dropout, cfg.two_way).to(device)
    compiled.regressor = torch.compile(compiled.regressor)
    timer = StageTimer(config, device)
    runs = (("eager", None), ("compiled, first epoch", compiled), ("compiled", compiled))
    for name, model in runs:
        timer(f"{name}.train", train_clip_classifier, train, labels, selected, cfg, config.self_train.window,
              rng=torch.Generator().manual_seed(0), model=model, amp=device.type == "cuda")
    times = {name: timer.timings[f"{name}.train"] for name, _ in runs}
    record.update(seconds_per_epoch=times,
                  note=(f"one f_c epoch (batch {cfg.batch_size}): eager {times['eager']:.3f} s, compiled "
                        f"{times['compiled']:.3f} s (first compiled epoch, with compilation: "
                        f"{times['compiled, first epoch']:.1f} s)"))


if __name__ == "__main__":
    sys.exit(main())
