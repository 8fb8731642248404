"""Multi-seed runs and grids: one configuration over seeds, a sweep over values or variants.

Every training result is reported over several seeds, from the final model of each run (never
the best iteration on the test set). A run repeated with the same configuration is made once:
in memory within a `Data`, and between notebooks through the disk cache (`cache`).
"""

from __future__ import annotations

import pandas as pd

from cupl.config import make_config
from cupl.experiments.cache import run_once
from cupl.experiments.loading import Data
from cupl.experiments.workers import prefetch
from cupl.util import progress as progress_bar


def run_seeds(data: Data, seeds, *, preset: str | None = None, profile: str = "quick", variant: str = "full",
              progress: bool = False, keep: bool = False, workers: int | None = None, **overrides):
    """Run one configuration once per seed.

    workers: processes that make the missing runs side by side (`prefetch`); None: `default_workers`.
    returns: (runs, history) DataFrames — one row per seed with the final metrics, and one row
    per (seed, iteration); with keep=True also the list of RunResults.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    preset = preset or data.preset
    configs = [make_config(preset, profile, variant, seed=seed, **overrides) for seed in seeds]
    prefetch(data, configs, keep=keep, workers=workers, progress=progress)
    rows, history, results = [], [], []
    for seed, config in zip(progress_bar(seeds, progress, desc=f"{variant} seeds"), configs):
        result = run_once(data, config, keep)
        rows.append({"seed": seed, **result.metrics, "seconds": sum(result.timings.values())})
        history += [{"seed": seed, **h} for h in result.history]
        if keep:
            results.append(result)
    out = (pd.DataFrame(rows), pd.DataFrame(history))
    return (*out, results) if keep else out

def grid(data: Data, name: str, values, seeds, *, key: str | None = None, variant: str = "full",
         profile: str = "quick", preset: str | None = None, progress: bool = True, workers: int | None = None,
         **overrides) -> pd.DataFrame:
    """One row per (value, seed): a hyperparameter sweep (K, alpha, R, j) or the variants of Table 4.

    name: the column name; key: the dotted config key set to each value (None when `values`
    are variant names, as for the ablation). workers: as in `run_seeds`, over the whole grid.
    """
    values = list(values)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    preset = preset or data.preset

    def settings(value):
        extra = dict(overrides)
        if key is not None:
            extra[key] = value
        return value if key is None else variant, extra

    prefetch(data, [make_config(preset, profile, v, seed=seed, **extra)
                    for v, extra in map(settings, values) for seed in seed_list],
             workers=workers, progress=progress)
    frames = []
    for value in progress_bar(values, progress, desc=name):
        row_variant, extra = settings(value)
        runs, _ = run_seeds(data, seed_list, preset=preset, profile=profile, variant=row_variant, workers=1,
                            **extra)
        runs.insert(0, name, value)
        frames.append(runs)
    return pd.concat(frames, ignore_index=True)
