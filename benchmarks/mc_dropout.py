"""MC-Dropout (Eq. 8-10): M naive train-mode passes against the exact-fast path, side by side.

For f_g (2048-d I3D clips, K = 2 heads) and f_c (4096-d temporal clip features) on N clips
and M passes, each method runs once per repeat, interleaved, and the best time is kept:

  train   M passes of the model in train mode (torch's per-element dropout), the usual way;
  masks   the first layer once, then M passes through the tail with the fast path's masks,
          the exact reference the fast path must equal;
  fast    the exact-fast path (`cupl.uncertainty`): masks folded into one vector per pass.

Prints a plain table, max |fast - masks| over mean and variance, and the same numbers as a
markdown table. Exits with status 1 if the fast path and the same-mask passes disagree.

    python benchmarks/mc_dropout.py                       # N = 20 000, M = 50, 3 repeats, CPU
    python benchmarks/mc_dropout.py --device cuda --repeats 5
    python benchmarks/mc_dropout.py --json benchmarks/results/mc_dropout.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from cupl.book.performance import write_result
from cupl.experiments.timing import cpu_name
from cupl.models import ClipClassifier, MultiHeadClassifier
from cupl.uncertainty import mc_dropout

METHODS = ("train", "masks", "fast")
TOLERANCE = 1e-5


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, model, x: torch.Tensor, passes: int, repeats: int) -> dict:
    """Best-of-`repeats` seconds per method, and max |fast - masks| over mean and variance."""
    device = x.device
    best = {m: float("inf") for m in METHODS}
    outputs = {}
    for r in range(repeats):
        seconds = {}
        for method in METHODS:
            generator = torch.Generator().manual_seed(r)  # "masks" and "fast" draw the same masks
            _sync(device)
            start = time.perf_counter()
            outputs[method] = mc_dropout(model, x, passes, generator, method="naive" if method == "masks" else method)
            _sync(device)
            seconds[method] = time.perf_counter() - start
            best[method] = min(best[method], seconds[method])
        print(f"  {name} run {r + 1}/{repeats}: " + ", ".join(f"{m} {s:.3f} s" for m, s in seconds.items()), flush=True)
    error = max(float((a - b).abs().max()) for a, b in zip(outputs["fast"], outputs["masks"]))
    return {**best, "error": error}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=20000, help="N clips (default 20000)")
    parser.add_argument("--passes", type=int, default=50, help="M passes (default 50)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs (default 3)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results here, with the machine and date")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    load_before = os.getloadavg()
    torch.manual_seed(args.seed)
    cases = [
        ("f_g", "2048-d, K = 2, dropout 0.6", MultiHeadClassifier(2048, 2), 2048),
        ("f_c", "4096-d, dropout 0.8", ClipClassifier(4096), 4096),
    ]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"MC-Dropout, N = {args.clips} clips, M = {args.passes} passes, best of {args.repeats}")
    print(f"device {args.device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n", flush=True)

    rows = []
    for name, what, model, dim in cases:
        model = model.to(device).eval()
        # I3D features are non-negative (averaged after a ReLU)
        x = torch.rand(args.clips, dim, generator=torch.Generator().manual_seed(args.seed)).to(device)
        with torch.no_grad():
            result = bench(name, model, x, args.passes, args.repeats)
        rows.append((name, what, result))
        del x

    print()
    header = f"{'model':<5} {'train-mode (s)':>15} {'same masks (s)':>15} {'fast (s)':>10} {'train/fast':>11} {'max |fast-masks|':>17}"
    print(header)
    print("-" * len(header))
    for name, _, r in rows:
        print(f"{name:<5} {r['train']:>15.3f} {r['masks']:>15.3f} {r['fast']:>10.3f} "
              f"{r['train'] / r['fast']:>10.1f}x {r['error']:>17.2e}")

    print("\n| model | M train-mode passes (s) | M passes, same masks (s) | exact-fast (s) | speed-up | max abs. difference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, what, r in rows:
        print(f"| {name} ({what}) | {r['train']:.3f} | {r['masks']:.3f} | {r['fast']:.3f} | "
              f"{r['train'] / r['fast']:.1f}x | {r['error']:.1e} |")
    print(f"\nN = {args.clips}, M = {args.passes}, best of {args.repeats}, {args.device} ({where}), "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")

    if args.json:
        write_result(args.json, {
            "clips": args.clips, "passes": args.passes, "repeats": args.repeats, "device": args.device,
            "device_name": where,
            "models": {name: {"what": what, "train_s": r["train"], "masks_s": r["masks"], "fast_s": r["fast"],
                              "speedup": r["train"] / r["fast"], "max_abs_diff": r["error"]}
                       for name, what, r in rows}}, load_before=load_before)
    bad = [name for name, _, r in rows if not r["error"] <= TOLERANCE]
    if bad:
        print(f"\nfast path differs from the same-mask passes by more than {TOLERANCE} for: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
