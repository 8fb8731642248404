"""`cupl train`: run the two-stage method on a bank and report each iteration."""

from __future__ import annotations

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
    config = make_config(args.preset, args.profile, args.variant, seed=args.seed, device=args.device, **overrides)
    with FeatureBank.open(args.bank) as bank:
        train = bank.load_split("train", modality=config.modality)
        test = bank.load_split("test", modality=config.modality)
    result = run(config, train, test)
    for record in result.history:
        print(f"iteration {record['iteration']}: AUC {record['auc']:.4f}  AP {record['ap']:.4f}  "
              f"selected {record['selected']}")
    if args.save:
        save_checkpoint(args.save, result.f_c, result.config)
        print(f"saved {args.save}")
    return 0
