"""Experiments the notebooks run: banks by name, multi-seed runs, ablation rows, sweeps.

Every training result is reported over several seeds as mean ± spread, from the final
model of each run (never the best iteration on the test set).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from cupl.config import RunConfig, make_config
from cupl.data.split import Split
from cupl.train import RunResult, run

METRICS = ("auc", "ap", "pr_auc", "auc_abnormal")


def default_cache() -> Path:
    """Where embedded banks are cached: $CUPL_CACHE, else `.cupl-cache/banks` of the checkout."""
    if os.environ.get("CUPL_CACHE"):
        return Path(os.environ["CUPL_CACHE"])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists() and (folder / "cupl").is_dir():
            return folder / ".cupl-cache" / "banks"
    return Path.home() / ".cache" / "cupl" / "banks"


def resolve_bank(bank: str | os.PathLike, profile: str = "quick") -> Path:
    """The bank a notebook should read: `bank` if given, else the embedded benchmark of `profile`."""
    if bank:
        path = Path(bank).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"bank {path} does not exist (give a .h5 from `cupl synth` or `cupl import`)")
        return path
    from cupl.book import synthetic_bank

    return synthetic_bank(profile, default_cache(), progress=False)


@dataclass
class Data:
    """A bank loaded for training: both splits and, for synthetic banks, the train oracle."""

    path: Path
    attrs: dict
    train: Split
    test: Split
    oracle: torch.Tensor | None
    generators: dict = field(default_factory=dict)  # stage-1 models shared by runs that differ only later

    @property
    def preset(self) -> str:
        """The paper preset matching the bank: ucf, xd or tad."""
        for key in ("preset", "dataset"):
            if str(self.attrs.get(key, "")) in ("ucf", "xd", "tad"):
                return str(self.attrs[key])
        return "ucf"


def load_data(bank: str | os.PathLike, profile: str = "quick", modality: str = "rgb") -> Data:
    from cupl.data.bank import BankError, FeatureBank

    path = resolve_bank(bank, profile)
    with FeatureBank.open(path) as fb:
        train = fb.load_split("train", modality=modality)
        test = fb.load_split("test", modality=modality)
        try:
            oracle = fb.oracle_split_labels("train", modality=modality)
        except BankError:
            oracle = None
        return Data(path, dict(fb.attrs), train, test, oracle)


def run_seeds(data: Data, seeds, *, preset: str | None = None, profile: str = "quick", variant: str = "full",
              progress: bool = False, keep: bool = False, **overrides):
    """Run one configuration once per seed.

    returns: (runs, history) DataFrames — one row per seed with the final metrics, and one row
    per (seed, iteration); with keep=True also the list of RunResults.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    preset = preset or data.preset
    rows, history, results = [], [], []
    for seed in _bar(seeds, progress, desc=f"{variant} seeds"):
        config = make_config(preset, profile, variant, seed=seed, **overrides)
        key = (repr(config.generator), config.seed, config.crops, config.modality, config.device)
        result = run(config, data.train, data.test, oracle=data.oracle, progress=False, keep_arrays=keep,
                     generator_model=data.generators.get(key))
        data.generators[key] = result.generator
        rows.append({"seed": seed, **result.metrics, "seconds": sum(result.timings.values())})
        history += [{"seed": seed, **h} for h in result.history]
        if keep:
            results.append(result)
    out = (pd.DataFrame(rows), pd.DataFrame(history))
    return (*out, results) if keep else out


def grid(data: Data, name: str, values, seeds, *, key: str | None = None, variant: str = "full",
         profile: str = "quick", preset: str | None = None, progress: bool = True, **overrides) -> pd.DataFrame:
    """One row per (value, seed): a hyperparameter sweep (K, alpha, R, j) or the variants of Table 4.

    name: the column name; key: the dotted config key set to each value (None when `values`
    are variant names, as for the ablation).
    """
    frames = []
    for value in _bar(list(values), progress, desc=name):
        extra = dict(overrides)
        if key is not None:
            extra[key] = value
        runs, _ = run_seeds(data, seeds, preset=preset, profile=profile,
                            variant=value if key is None else variant, **extra)
        runs.insert(0, name, value)
        frames.append(runs)
    return pd.concat(frames, ignore_index=True)


def summarize(frame: pd.DataFrame, by, metrics=("auc",), scale: float = 100.0) -> pd.DataFrame:
    """Mean, standard deviation and count per group, metrics scaled to percent."""
    by = [by] if isinstance(by, str) else list(by)
    out = frame.groupby(by, sort=False)[list(metrics)].agg(["mean", "std", "count"])
    for m in metrics:
        out[(m, "mean")] *= scale
        out[(m, "std")] *= scale
    return out


def mean_pm(frame: pd.DataFrame, by, metric: str = "auc", scale: float = 100.0, digits: int = 2) -> pd.Series:
    """'mean ± std (n)' strings per group, the form the book's tables use."""
    s = summarize(frame, by, (metric,), scale)[metric]
    return s.apply(lambda r: f"{r['mean']:.{digits}f} ± {r['std']:.{digits}f} (n={int(r['count'])})", axis=1)


def _bar(iterable, progress: bool, **kw):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)


__all__ = ["Data", "load_data", "resolve_bank", "run_seeds", "grid", "summarize", "mean_pm", "RunConfig", "RunResult"]
