"""Sensitivity check: how many f_c epochs per iteration, against what self-training does.

The paper gives no training length for f_c (Sec. 4.2); `clip.epochs` fixes one per profile.
This script reruns the uncertainty-aware (Table 4, "+uncertainty") and the standard (Fig. 3)
self-training with each epoch count and prints the AUC after every iteration, mean ± std over
seeds, with the share of event clips among the selected ones (oracle diagnostics, synthetic
banks only). It reads the profile's embedded benchmark unless `--bank` names another.

    python benchmarks/fc_budget.py                               # quick, epochs 10 and 40, 3 seeds
    python benchmarks/fc_budget.py --epochs 10 20 40 --seeds 5

Runs go through `cupl.experiments` (disk cache under `.cupl-cache`, one process per core).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from cupl.experiments.timing import cpu_name
from cupl.experiments import load_data, run_seeds


def measure(data, variants, epochs, seeds, profile: str) -> pd.DataFrame:
    """One row per (variant, epochs, iteration): AUC (%) and event share of the selection (%)."""
    rows = []
    for variant in variants:
        for count in epochs:
            _, history = run_seeds(data, seeds, profile=profile, variant=variant, **{"clip.epochs": count})
            for j, group in history.groupby("iteration"):
                auc = group["auc"] * 100
                row = {"variant": variant, "epochs": count, "j": j,
                       "AUC (%)": f"{auc.mean():.2f} ± {auc.std():.2f}"}
                if "event_share_selected" in group:
                    row["event clips among the selected (%)"] = f"{100 * group['event_share_selected'].mean():.1f}"
                rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bank", default="", help="feature bank (.h5); default: the profile's embedded benchmark")
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--epochs", type=int, nargs="+", default=[10, 40])
    p.add_argument("--variants", nargs="+", default=["uncertainty", "standard"])
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    data = load_data(args.bank, args.profile)
    start = time.perf_counter()
    table = measure(data, args.variants, args.epochs, args.seeds, args.profile)
    print(f"{data.path.name}, profile {args.profile}, {args.seeds} seeds, {cpu_name()}, "
          f"{time.perf_counter() - start:.0f} s\n")
    print(table.to_string(index=False))
    print()
    print(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
