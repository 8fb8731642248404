"""`cupl train`: run the two-stage method on a bank and report each iteration."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from cupl.config import make_config
from cupl.data.bank import FeatureBank
from cupl.experiments.checkpoint import save_checkpoint
from cupl.experiments.train import run
from cupl.util import parse_literal


def configure_parser(p):
    p.add_argument("--bank", required=True, help="feature bank (.h5)")
    p.add_argument("--preset", default="ucf", choices=["ucf", "xd", "tad"])
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--variant", default="full", help="full, baseline, completeness, uncertainty, standard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="override a config key, e.g. --set generator.alpha 1.0")
    p.add_argument("--save", help="write the trained f_c checkpoint here")


def main(args) -> int:
    overrides = {key: parse_literal(value) for key, value in args.set}
    try:  # every value is checked before the bank is read
        config = make_config(args.preset, args.profile, args.variant, seed=args.seed, device=args.device,
                             **overrides)
    except (KeyError, ValueError) as err:
        print(f"cupl train: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2
    with FeatureBank.open(args.bank) as bank:
        train = bank.load_split("train", modality=config.modality)
        test = bank.load_split("test", modality=config.modality)
    result = run(config, train, test)
    for record in result.history:
        print(f"iteration {record['iteration']}: AUC {record['auc']:.4f}  AP {record['ap']:.4f}  "
              f"selected {record['selected']}")
    return save_or_keep(args.save, result) if args.save else 0


def save_or_keep(path, result) -> int:
    """Save the trained f_c at `path`; when that fails (a full disk, a read-only folder) save it
    in the temporary folder instead and say where, so that a finished training is never lost.
    returns: the exit status, 0 only when `path` was written."""
    try:
        save_checkpoint(path, result.f_c, result.config)
    except OSError as err:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        fallback = Path(tempfile.gettempdir()) / f"cupl-f_c-{stamp}-{os.getpid()}.pt"
        try:
            save_checkpoint(fallback, result.f_c, result.config)
        except OSError as again:
            print(f"cupl train: could not write {path} ({err.strerror or err}) nor {fallback} "
                  f"({again.strerror or again}); the trained model is lost", file=sys.stderr)
            return 1
        print(f"cupl train: could not write {path} ({err.strerror or err}); the trained model is "
              f"saved at {fallback} instead", file=sys.stderr)
        return 1
    print(f"saved {path}")
    return 0
