"""`cupl synth`: write an embedded synthetic benchmark bank (.h5)."""

from __future__ import annotations

import sys
import time

from cupl.config import check_value
from cupl.data.bank import FeatureBank
from cupl.data.synth import PRESETS, PROFILES, SPLITS, write_synthetic


def configure_parser(p):
    p.add_argument("--preset", choices=sorted(PRESETS), default="ucf")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="path of the .h5 bank to write")
    p.add_argument("--max-videos", type=int, default=None,
                   help="keep only the first N videos of each split (a small check of 'full')")
    p.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bank at --out")


def main(args) -> int:
    try:  # the rule of a run's seed, before any work
        check_value("seed", args.seed, name="--seed")
    except ValueError as err:
        print(f"cupl synth: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    path = write_synthetic(args.out, args.preset, args.profile, args.seed,
                           progress=not args.no_progress, max_videos=args.max_videos, dtype=args.dtype,
                           overwrite=args.overwrite)
    seconds = time.perf_counter() - start
    with FeatureBank.open(path) as bank:
        counts = {s: bank.videos(s) for s in SPLITS}
        a = bank.attrs
        dims = " + ".join(f"{m} {a[f'dim_{m}']}-d" for m in a["modalities"])
    summary = ", ".join(f"{len(v)} {s} videos ({sum(r.num_clips for r in v)} clips)" for s, v in counts.items())
    size = path.stat().st_size / 2**20
    print(f"{path}: {args.preset}/{args.profile} seed {args.seed}: {summary}; "
          f"{a['crops']} crops, {dims}, {a['dtype']}; {size:.1f} MiB in {seconds:.1f} s")
    return 0
