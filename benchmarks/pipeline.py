"""One whole run of Algorithm 1 (stage 1 + j iterations), stage by stage, against its floor.

Reads a feature bank (by default the embedded synthetic benchmark of a profile), runs
`cupl.experiments.train.run` once and prints, per stage: seconds, matmul FLOP, achieved TFLOP/s, the
floor (FLOP / peak), the share of the peak reached and, on CUDA, the peak memory allocated;
then the same as a markdown table. Evaluation and mining are not matmul work and carry no
FLOP; their time is part of the total.

FLOP per stage (a multiply-add is 2 FLOP; only the matmuls of the three-layer heads count):

    N train clips, N' test clips, C crops (1 with crops='mean'), D feature dim, K heads,
    (h1, h2) hidden sizes of f_g and of f_c, M MC-Dropout passes, E f_c epochs,
    B pairs per stage-1 step, S segments, n_j clips selected in iteration j.
    f_g forward per vector:        F_g = 2 (D K h1 + K h1 h2 + K h2)
    f_c forward per vector:        F_c = 2 (2D h1 + h1 h2 + h2 o),  o = 2 with the two-way head
    training (forward + backward): the first layer adds its weight gradient (its input needs
                                   none), the tail adds weight and input gradients: 2 L1 + 3 L_tail
    stage 1      steps 2B S (2 L1_g + 3 L_tail_g),  L1_g = 2 D K h1
    MC-Dropout   N C (L1 + 2 K h1 M)         L1 = 2 D K h1 for f_g, 2 (2D) h1 for f_c
    train        E n_j C (2 L1_c + 3 L_tail_c); with clip.budget "steps": steps b (2 L1_c + 3 L_tail_c)
    score        N' C (L1_c + 2 h1)          (the tail collapses to one vector in eval mode)

The peak is, unless --peak-tflops names one: on CPU, the best float32 matmul rate measured in
this run (n x n, all threads); on CUDA, the card's dense spec for the compute dtype when the
card is known (H100 SXM / H200: 989 TFLOP/s bf16, 67 TFLOP/s fp32 without tensor cores),
otherwise the measured matmul rate. The table says which.

    python benchmarks/pipeline.py                              # quick profile, CPU
    python benchmarks/pipeline.py --profile smoke --json out.json
    python benchmarks/pipeline.py --bank my.h5 --profile full --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from cupl.book.performance import benchmark_record, load_note
from cupl.experiments.timing import cpu_name
from cupl.files import atomic_write

STAGES = ("mc_dropout", "mining", "train", "score", "evaluate")
# dense spec TFLOP/s by card and compute dtype (vendor data sheets, without sparsity)
SPEC_TFLOPS = {
    "H200": {"bf16": 989.4, "fp32": 66.9},
    "H100 PCIe": {"bf16": 756.0, "fp32": 51.2},
    "H100": {"bf16": 989.4, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}


# --------------------------------------------------------------------------- FLOP counts


def stage_flops(config: dict, train_clips: int, test_clips: int, crops: int, dim: int,
                selected: list[int]) -> dict[str, float]:
    """Matmul FLOP of every stage of a run, keyed like `RunResult.timings` (module docstring).

    config: `RunResult.config`; crops: C of the features as stored (1 is used with
    crops='mean'); selected: clips selected per iteration (`history[j]["selected"]`).
    """
    g, c = config["generator"], config["clip"]
    crops = 1 if config["crops"] == "mean" else crops
    k, (gh1, gh2), (ch1, ch2) = g["num_heads"], g["hidden"], c["hidden"]
    out_c = 2 if c["two_way"] else 1
    l1_g, tail_g = 2 * dim * k * gh1, 2 * (k * gh1 * gh2 + k * gh2)
    l1_c, tail_c = 2 * 2 * dim * ch1, 2 * (ch1 * ch2 + ch2 * out_c)
    bags = 2 * g["batch_size"] * g["num_segments"]
    flops = {"load": 0.0, "stage1": float(g["steps"] * bags * (2 * l1_g + 3 * tail_g))}
    for j, n_sel in enumerate(selected, start=1):
        if j == 1:
            mc = train_clips * crops * (l1_g + 2 * k * gh1 * g["mc_passes"])
        else:
            mc = train_clips * crops * (l1_c + 2 * ch1 * c["mc_passes"])
        flops[f"iter{j}.mc_dropout"] = float(mc)
        flops[f"iter{j}.mining"] = 0.0
        samples = c["steps"] * c["batch_size"] if c.get("budget") == "steps" else c["epochs"] * n_sel * crops
        flops[f"iter{j}.train"] = float(samples * (2 * l1_c + 3 * tail_c))
        flops[f"iter{j}.score"] = float(test_clips * crops * (l1_c + 2 * ch1))
        flops[f"iter{j}.evaluate"] = 0.0
    return flops


# --------------------------------------------------------------------------- peak and machine


def matmul_tflops(device, dtype=torch.float32, n: int = 2048, seconds: float = 1.0) -> float:
    """Best rate of an n x n matmul on `device` in `dtype`, TFLOP/s, over about `seconds`."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best, spent = float("inf"), 0.0
    for i in range(1000):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > seconds and i >= 2:
            break
    return 2 * n**3 / best / 1e12


def spec_tflops(device, amp: bool) -> float | None:
    """The card's dense spec for the run's compute dtype, or None for an unknown device."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for card, rates in SPEC_TFLOPS.items():
        if card in name:
            return rates["bf16" if amp else "fp32"]
    return None


def reference_peak(device, amp: bool, given: float | None) -> tuple[float, str, float | None]:
    """(peak TFLOP/s used for the fractions, what it is, measured matmul TFLOP/s or None when
    a peak is given)."""
    device = torch.device(device)
    if given:
        return given, f"{given:g} TFLOP/s as given (--peak-tflops)", None
    dtype = torch.bfloat16 if (amp and device.type == "cuda") else torch.float32
    measured = matmul_tflops(device, dtype, n=8192 if device.type == "cuda" else 2048)
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    spec = spec_tflops(device, amp)
    if spec:
        return spec, f"{spec:g} TFLOP/s, the card's dense {name} spec", measured
    return measured, f"{measured:.3g} TFLOP/s, best {name} matmul measured in this run", measured


def machine(device) -> dict:
    """What the numbers were measured on."""
    device = torch.device(device)
    info = {
        "cpu": cpu_name(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --------------------------------------------------------------------------- tables


def stage_rows(timings: dict[str, float], flops: dict[str, float], peak_tflops: float,
               peak_memory: dict[str, int] | None = None) -> list[dict]:
    """One row per stage of the run, in run order, then the totals."""
    rows = []
    for key, seconds in timings.items():
        f = flops.get(key, 0.0)
        rows.append({
            "stage": key, "seconds": seconds, "gflop": f / 1e9,
            "tflops": f / seconds / 1e12 if f and seconds > 0 else None,
            "floor_s": f / (peak_tflops * 1e12) if f else None,
            "of_peak": f / seconds / (peak_tflops * 1e12) if f and seconds > 0 else None,
            "peak_gib": (peak_memory or {}).get(key, 0) / 2**30 if peak_memory else None,
        })
    compute = [r for r in rows if r["stage"] != "load"]
    total_f = sum(flops.get(r["stage"], 0.0) for r in compute)
    total_s = sum(r["seconds"] for r in compute)
    rows.append({
        "stage": "total (without load)", "seconds": total_s, "gflop": total_f / 1e9,
        "tflops": total_f / total_s / 1e12 if total_s > 0 else None,
        "floor_s": total_f / (peak_tflops * 1e12),
        "of_peak": total_f / total_s / (peak_tflops * 1e12) if total_s > 0 else None,
        "peak_gib": max(peak_memory.values()) / 2**30 if peak_memory else None,
    })
    return rows


def _fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def _cells(r: dict) -> list[str]:
    return [r["stage"], f"{r['seconds']:.3f}", _fmt(r["gflop"] or None, ",.1f"), _fmt(r["tflops"], ".3g"),
            _fmt(r["floor_s"], ".3g"), _fmt(r["of_peak"] and 100 * r["of_peak"], ".1f"),
            _fmt(r["peak_gib"], ".2f")]


HEADER = ["stage", "seconds", "GFLOP", "TFLOP/s", "floor (s)", "% of peak", "peak GiB"]


def plain_table(rows: list[dict]) -> str:
    widths = [24, 9, 12, 9, 10, 10, 9]
    line = lambda cells: " ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(HEADER), "-" * (sum(widths) + len(widths) - 1)]
    out += [line(_cells(r)) for r in rows]
    return "\n".join(out)


def markdown_table(rows: list[dict]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "| --- |" + " ---: |" * (len(HEADER) - 1)]
    for r in rows:
        cells = _cells(r)
        if r["stage"].startswith("total"):
            cells = [f"**{c}**" if c != "-" else c for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


# --------------------------------------------------------------------------- f_c's first layer


def first_layer_paths(model, split, window: int, batch_size: int, amp: bool, repeats: int = 3) -> dict:
    """f_c's first layer over a whole split, the two ways, best of `repeats` each.

    built:     temporal inputs [b, C, 2D] built per chunk (`context_features`), then W1;
    projected: W_a c_t + window mean of W_b c, clips projected once.
    (`cupl.experiments.train` takes the second where D > h1; both are `cupl.experiments.steps.first_layer`.)
    returns seconds of each and max |difference| of the ReLU outputs.
    """
    from cupl.experiments.steps import first_layer

    device = split.features.device

    def chunks(project: bool):
        return (h for _, _, h in first_layer(model, split, window, batch_size, amp, project=project))

    def timed(project: bool) -> float:
        _sync(device)
        start = time.perf_counter()
        for h in chunks(project):
            del h
        _sync(device)
        return time.perf_counter() - start

    with torch.no_grad():
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(chunks(False), chunks(True)))
        runs = [(timed(False), timed(True)) for _ in range(repeats)]  # interleaved, against drifting load
    return {"built_s": min(b for b, _ in runs), "projected_s": min(p for _, p in runs), "max_abs_diff": diff}


def fc_input_paths(split, window: int, batch_size: int, ratio: float = 0.5, epochs: int = 10, seed: int = 0,
                   repeats: int = 2) -> dict:
    """The inputs of f_c's training in one iteration ([b, 2D] temporal features of shuffled
    (clip, crop) samples of a random `ratio` of the clips, `epochs` times), the two ways.

    per batch: `context_features` of each batch, w + 1 gathered rows per sample (before);
    table:     `memory_table` of the selected clips once per iteration, then two gathered rows
               per sample (`cupl.experiments.train.train_clip_classifier`).
    One epoch of each is timed (best of `repeats`, interleaved) and scaled by `epochs`.
    returns seconds per epoch, of building the table, per iteration each way, and max
    |difference| of the inputs.
    """
    from cupl.mining import context_features
    from cupl.experiments.steps import memory_table

    features, device = split.features, split.features.device
    crops = features.shape[1]
    g = torch.Generator().manual_seed(seed)
    rows = torch.nonzero(torch.rand(split.num_clips, generator=g) < ratio).flatten().to(device)
    order = torch.randperm(len(rows) * crops, generator=g).to(device)
    batches = order.split(batch_size)

    def per_batch():
        for batch in batches:
            yield context_features(features, split.starts, rows[batch // crops], window, crop=batch % crops)

    def from_table(table):
        for batch in batches:
            s, c = batch // crops, batch % crops
            yield torch.cat([features[rows[s], c], table[s, c]], dim=-1)

    def timed(make):
        _sync(device)
        start = time.perf_counter()
        made = make()
        _sync(device)
        return time.perf_counter() - start, made

    with torch.no_grad():
        table = memory_table(split, rows, window)
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in zip(per_batch(), from_table(table)))
        del table
        runs = []
        for _ in range(repeats):  # interleaved, against drifting load
            before, _ = timed(lambda: [x.sum() for x in per_batch()])
            build, table = timed(lambda: memory_table(split, rows, window))
            after, _ = timed(lambda: [x.sum() for x in from_table(table)])
            del table
            runs.append((before, build, after))
    before, build, after = (min(r[i] for r in runs) for i in range(3))
    return {"samples": len(order), "batch_size": batch_size, "epochs": epochs, "per_batch_epoch_s": before,
            "table_build_s": build, "table_epoch_s": after, "per_batch_s": epochs * before,
            "table_s": build + epochs * after, "max_abs_diff": diff}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- one run


def run_pipeline(config, train, test, *, peak_tflops: float, progress: bool = False) -> dict:
    """`cupl.experiments.train.run` once, with its per-stage rows (see `stage_rows`) and results."""
    import sklearn.metrics  # noqa: F401  (imported before the clock starts, not in iteration 1's evaluation)

    from cupl.experiments.train import run

    device = torch.device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = run(config, train, test, progress=progress)
    wall = time.perf_counter() - start
    flops = stage_flops(result.config, train.num_clips, test.num_clips, train.features.shape[1],
                        train.features.shape[2], [h["selected"] for h in result.history])
    rows = stage_rows(result.timings, flops, peak_tflops, result.peak_memory or None)
    return {
        "rows": rows, "wall_s": wall, "metrics": result.metrics, "history": result.history,
        "config": result.config, "peak_memory_bytes": result.peak_memory,
        "result": result,
    }


def sizes(train, test) -> dict:
    n, c, d = train.features.shape
    return {"train_videos": train.num_videos, "train_clips": n, "test_videos": test.num_videos,
            "test_clips": test.num_clips, "crops": c, "dim": d,
            "train_vectors": n * c, "feature_dtype": str(train.features.dtype).replace("torch.", "")}


def main(argv=None) -> int:
    from cupl.config import make_config
    from cupl.data.bank import FeatureBank
    from cupl.experiments import resolve_bank
    from cupl.experiments.steps import feature_dtype

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"],
                   help="compute profile, and the synthetic bank read when --bank is not given")
    p.add_argument("--bank", default=None, help="feature bank (.h5); default: the profile's synthetic bank")
    p.add_argument("--preset", default="ucf", choices=["ucf", "xd", "tad"])
    p.add_argument("--variant", default="full")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-amp", action="store_true", help="on CUDA, run in float32 (default: bf16 autocast)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch-size", type=int, default=None)
    p.add_argument("--peak-tflops", type=float, default=None, help="peak to measure against (default: see above)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = device.type == "cuda" and not args.no_amp
    overrides = {"device": args.device, "amp": amp, "seed": args.seed}
    if args.eval_batch_size:
        overrides["eval_batch_size"] = args.eval_batch_size
    config = make_config(args.preset, args.profile, args.variant, **overrides)

    load_before = os.getloadavg()
    bank = resolve_bank(args.bank, args.profile)
    start = time.perf_counter()
    with FeatureBank.open(bank) as b:
        dtype = feature_dtype(device, amp)
        train = b.load_split("train", modality=config.modality, dtype=dtype, device=device)
        test = b.load_split("test", modality=config.modality, dtype=dtype, device=device)
    read_s = time.perf_counter() - start
    peak, peak_what, measured = reference_peak(device, amp, args.peak_tflops)
    out = run_pipeline(config, train, test, peak_tflops=peak, progress=args.progress)
    f_c = out["result"].f_c.to(device)
    paths = first_layer_paths(f_c, train, config.self_train.window, config.eval_batch_size, amp)
    inputs = fc_input_paths(train, config.self_train.window, config.clip.batch_size, config.self_train.ratio,
                            config.clip.epochs)
    info = machine(device)
    info["load_average_before"] = [round(x, 2) for x in load_before]
    report = {
        "machine": info, "bank": str(bank), "profile": args.profile, "preset": args.preset, "amp": amp,
        "sizes": sizes(train, test), "read_bank_s": read_s, "peak_tflops": peak, "peak": peak_what,
        "measured_matmul_tflops": measured, "peak_rss_bytes": peak_rss_bytes(), "fc_first_layer": paths,
        "fc_inputs": inputs,
        **{k: v for k, v in out.items() if k != "result"},
    }
    print(describe(report))
    print()
    print(plain_table(out["rows"]))
    print()
    print(markdown_table(out["rows"]))
    print()
    print(footer(report))
    if args.json:
        # the report's own machine description (with the GPU, if any) stays; date and command line are added
        record = benchmark_record()
        report.update(date=record["date"], command=record["command"],
                      note=load_note(load_before, record["load_average"], record["machine"]["cores"]))
        atomic_write(args.json, lambda tmp: tmp.write_text(json.dumps(report, indent=2, default=str)))
    return 0


def describe(report: dict) -> str:
    s, m = report["sizes"], report["machine"]
    where = m.get("gpu") or m["cpu"]
    return (f"Algorithm 1 on {report.get('profile', '?')} ({report['bank']}): {s['train_videos']} train videos, "
            f"{s['train_clips']:,} clips x {s['crops']} crops x {s['dim']}-d ({s['feature_dtype']}); "
            f"{s['test_videos']} test videos, {s['test_clips']:,} clips\n"
            f"device {m['device']} ({where}), torch {m['torch']}, {m['torch_threads']} threads of "
            f"{m['cpu_cores']} cores, load average {m['load_average_before']} before, {m['load_average']} after\n"
            f"peak: {report['peak']}")


def footer(report: dict) -> str:
    metrics = report["metrics"]
    lines = [f"bank read (load_split): {report['read_bank_s']:.2f} s; whole run() {report['wall_s']:.2f} s; "
             f"final AUC {metrics['auc']:.4f}, AP {metrics['ap']:.4f}",
             f"peak resident memory of the process: {report['peak_rss_bytes'] / 2**30:.2f} GiB"]
    paths = report.get("fc_first_layer")
    if paths:
        lines.append(f"f_c's first layer over the train split (as in MC-Dropout): temporal inputs built "
                     f"{paths['built_s']:.3f} s, clips projected once {paths['projected_s']:.3f} s "
                     f"({paths['built_s'] / paths['projected_s']:.2f}x), max |difference| {paths['max_abs_diff']:.1e}")
    inputs = report.get("fc_inputs")
    if inputs and "per_batch_s" in inputs:
        lines.append(f"inputs of f_c's training per iteration ({inputs['epochs']} epochs of {inputs['samples']:,} "
                     f"samples, batch {inputs['batch_size']}): built per batch {inputs['per_batch_s']:.3f} s, from a "
                     f"memory table {inputs['table_s']:.3f} s (building it {inputs['table_build_s']:.3f} s; "
                     f"{inputs['per_batch_s'] / inputs['table_s']:.2f}x), max |difference| {inputs['max_abs_diff']:.1e}")
    if report["peak_memory_bytes"]:
        lines.append(f"peak CUDA memory allocated: {max(report['peak_memory_bytes'].values()) / 2**30:.2f} GiB")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
