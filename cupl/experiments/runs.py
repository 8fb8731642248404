"""Multi-seed runs and grids: one configuration over seeds, a sweep over values or variants.

Every training result is reported over several seeds, from the final model of each run (never
the best iteration on the test set). A run repeated with the same configuration is made once:
in memory within a `Data`, and between notebooks through the disk cache (`cache`).
"""

from __future__ import annotations

import pandas as pd
import torch

from cupl.config import make_config
from cupl.experiments.batched import run_many
from cupl.experiments.cache import keep_run, load_stage1, made_run, run_key, run_once, stage1_key
from cupl.experiments.loading import Data
from cupl.experiments.workers import prefetch
from cupl.util import progress as progress_bar


def make_missing(data: Data, configs, *, keep: bool = False, workers: int | None = None,
                 batched: bool | None = None, progress: bool = False) -> int:
    """Make the runs of `configs` that memory and the disk cache lack, before they are read one by one.

    batched: as one batched sweep in this process (`run_many`: each run equal to its run alone),
    after their stage-1 models are made side by side in worker processes; else each whole run
    in a worker process (`prefetch`). None: batched when every run is on CUDA, where a run is
    thousands of small kernel launches and one stacked step serves every model; on the CPU
    the steps are bound by arithmetic and worker processes make better use of the cores.
    returns: the number of runs made batched (0 when the work went to `prefetch`).
    """
    configs = list(configs)
    if batched is None:
        batched = bool(configs) and all(torch.device(c.device).type == "cuda" for c in configs)
    if not batched:
        prefetch(data, configs, keep=keep, workers=workers, progress=progress)
        return 0
    missing = {}
    for config in configs:
        if made_run(data, config, keep) is None:
            missing.setdefault(run_key(config), config)
    missing = list(missing.values())
    if not missing:
        return 0
    prefetch(data, missing, keep=True, workers=workers, progress=progress)  # stage 1 only
    generators = {stage1_key(c): m for c in missing if (m := load_stage1(data, stage1_key(c), c)) is not None}
    results = run_many(missing, data.train, data.test, oracle=data.oracle, keep_arrays=keep, progress=progress,
                       generators=generators)
    for config, result in zip(missing, results):
        keep_run(data, config, result)
    return len(missing)


def run_seeds(data: Data, seeds, *, preset: str | None = None, profile: str = "quick", variant: str = "full",
              progress: bool = False, keep: bool = False, workers: int | None = None,
              batched: bool | None = None, **overrides):
    """Run one configuration once per seed.

    workers: processes that make the missing runs side by side (`prefetch`); None: `default_workers`.
    batched: make the missing runs as one batched sweep (`make_missing`; None: on CUDA).
    returns: (runs, history) DataFrames — one row per seed with the final metrics, and one row
    per (seed, iteration); with keep=True also the list of RunResults.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    preset = preset or data.preset
    configs = [make_config(preset, profile, variant, seed=seed, **overrides) for seed in seeds]
    make_missing(data, configs, keep=keep, workers=workers, batched=batched, progress=progress)
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
         batched: bool | None = None, **overrides) -> pd.DataFrame:
    """One row per (value, seed): a hyperparameter sweep (K, alpha, R, j) or the variants of Table 4.

    name: the column name; key: the dotted config key set to each value (None when `values`
    are variant names, as for the ablation). workers, batched: as in `run_seeds`, over the whole grid.
    """
    values = list(values)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    preset = preset or data.preset

    def settings(value):
        extra = dict(overrides)
        if key is not None:
            extra[key] = value
        return value if key is None else variant, extra

    make_missing(data, [make_config(preset, profile, v, seed=seed, **extra)
                        for v, extra in map(settings, values) for seed in seed_list],
                 workers=workers, batched=batched, progress=progress)
    frames = []
    for value in progress_bar(values, progress, desc=name):
        row_variant, extra = settings(value)
        runs, _ = run_seeds(data, seed_list, preset=preset, profile=profile, variant=row_variant, workers=1,
                            **extra)
        runs.insert(0, name, value)
        frames.append(runs)
    return pd.concat(frames, ignore_index=True)
