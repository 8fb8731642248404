"""A bank loaded for training: both splits, the train oracle of synthetic banks, and the runs
made on it (`Data`), by path or as the embedded benchmark of a profile."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from cupl.data.split import Split
from cupl.experiments.cache import bank_digest, default_cache, package_digest, synthetic_bank


def resolve_bank(bank: str | os.PathLike, profile: str = "quick") -> Path:
    """The bank a notebook should read: `bank` if given, else the embedded benchmark of `profile`."""
    if bank:
        path = Path(bank).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"bank {path} does not exist (give a .h5 from `cupl synth` or `cupl import`)")
        return path
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
    cache: Path | None = None  # stage-1 models and run results shared between processes; None: memory only
    runs: dict = field(default_factory=dict)  # whole runs by configuration: a sweep's default point is another's
    modality: str = "rgb"  # the features `train` and `test` hold
    pool: tuple | None = field(default=None, repr=False, compare=False)  # (workers, executor) of `prefetch`

    @cached_property
    def digest(self) -> str:
        """What a model or a result of this bank depends on besides its settings: the
        bank's content, the `cupl` sources and the torch version."""
        return hashlib.sha256(f"{bank_digest(self.path)} {package_digest()} {torch.__version__}".encode()).hexdigest()

    @property
    def preset(self) -> str:
        """The paper preset matching the bank: ucf, xd or tad."""
        for key in ("preset", "dataset"):
            if str(self.attrs.get(key, "")) in ("ucf", "xd", "tad"):
                return str(self.attrs[key])
        return "ucf"

def load_data(bank: str | os.PathLike, profile: str = "quick", modality: str = "rgb", *,
              cache: str | os.PathLike | None = "default") -> Data:
    """Both splits of `bank` (the embedded benchmark of `profile` when empty) and its train oracle.

    cache: where stage-1 models and run results are shared between notebooks; "default" is
    `default_cache() / "experiments"`, None keeps them in memory only.
    """
    from cupl.data.bank import BankError, FeatureBank

    if cache == "default":
        cache = default_cache() / "experiments"

    path = resolve_bank(bank, profile)
    with FeatureBank.open(path) as fb:
        train = fb.load_split("train", modality=modality)
        test = fb.load_split("test", modality=modality)
        try:
            oracle = fb.oracle_split_labels("train", modality=modality)
        except BankError:
            oracle = None
        return Data(path, dict(fb.attrs), train, test, oracle, cache=Path(cache) if cache is not None else None,
                    modality=modality)
