"""Configuration: plain dataclasses holding the paper's defaults, named presets and profiles.

Every choice the paper leaves open is made here once, with a comment, and listed in the
book's Reproduction notes. `make_config` builds a run configuration from a dataset preset,
a compute profile and overrides; unknown keys are rejected, and `to_dict` / `from_dict`
round-trip exactly, so a checkpoint or an executed notebook records the whole configuration.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass, field


@dataclass
class GeneratorConfig:
    """Stage 1, the completeness-enhanced pseudo-label generator f_g (Sec. 3.2, 4.2)."""

    num_heads: int = 2  # K (Table 5)
    hidden: tuple[int, int] = (512, 128)
    dropout: float = 0.6
    alpha: float = 10.0  # weight of L_diver and L_norm (Eq. 7, Table 6)
    diversity: bool = True  # False trains with L_MIL alone (the baseline generator)
    diversity_on_normal: bool = False  # open: Eq. 2 on abnormal bags only (nothing to cover in normal ones)
    head_scores: str = "sigmoid"  # open: A^k in Eq. 1-3 is each head's sigmoid score (Sec. 4.2), or "logits"
    # open: Eq. 6 and Eq. 2-3 are written per video; "mean" or "sum" over the batch. A summed
    # hinge with averaged regularisers weighs them by alpha / batch_size. These four readings of
    # Eq. 1-7 are the ones the rule of benchmarks/generator_readings.py chose (book/notes.md).
    mil_reduction: str = "sum"
    regularizer_reduction: str = "mean"
    norm_form: str = "paper"  # open: Eq. 3 as printed ("paper") or the balance term of [13] ("cmcs")
    num_segments: int = 32  # S
    lr: float = 0.1  # Adadelta (Sec. 4.2)
    steps: int = 3000  # open: the paper gives no count; one step = one batch of pairs
    batch_size: int = 32  # open: abnormal and normal videos per step (each), as Sultani / RTFM
    mc_passes: int = 50  # M for the initial pseudo labels (Sec. 4.2)


@dataclass
class ClipConfig:
    """Stage 2, the clip classifier f_c (Sec. 3.3, Eq. 11, Sec. 4.2)."""

    hidden: tuple[int, int] = (512, 32)  # the released checkpoint: 4096 -> 512 -> 32 -> 2
    dropout: float = 0.8
    lr: float = 1e-4  # Adam
    weight_decay: float = 5e-4
    epochs: int = 10  # open: passes over the reliable set per iteration
    batch_size: int = 4096  # open: reliable (clip, crop) samples per step
    two_way: bool = False  # True: 2-way softmax head like the released checkpoint (same loss)
    reinit: bool = True  # open: a new f_c per iteration ("train a new clip classifier", Fig. 2)
    mc_passes: int = 5  # M at the end of each iteration (Sec. 4.2)
    loss: str = "bce"  # open: Eq. 11 as plain BCE, or "weighted": class-weighted BCE (MIST's stage 2)
    class_weights: tuple[float, float] = (1.2, 0.8)  # "weighted": (abnormal, normal) term weights, MIST UCF-I3D
    label_smoothing: float = 0.0  # open: targets clamped to [e, 1 - e] before the loss (MIST's form)
    batches: str = "balanced"  # open: half of each batch from normal, half from abnormal videos (MIST), or "shuffled"
    budget: str = "steps"  # open: f_c length in optimiser steps, equal for every selection, or "epochs"
    steps: int = 1000  # per iteration with budget "steps": `quick`'s measured count (benchmarks/fc_convergence.py)


@dataclass
class SelfTrainConfig:
    """Iterative uncertainty-aware pseudo-label refinement (Sec. 3.3, Algorithm 1)."""

    iterations: int = 3  # j
    ratio: float = 0.5  # R: share of each video's clips kept as reliable
    window: int = 5  # w of the long-term feature memory (released code)
    selection: str = "uncertainty"  # "uncertainty" (ours), "random" (standard self-training), "all"
    normal_labels: str = "zero"  # open: clips of normal videos are normal by the weak label
    refine: str = "none"  # open: f_g's labels as they are, or "smooth_minmax" on abnormal videos (MIST, `cupl.method.refine`)
    mc_masks: str = "shared"  # open: one MC-Dropout mask per pass for all clips (Eq. 8), or "per_clip"


@dataclass
class RunConfig:
    """One two-stage run: stage 1 then `self_train.iterations` refinement iterations."""

    dataset: str = "ucf"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    self_train: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    crops: str = "each"  # open: "each" crop is a sample, scores averaged at test; "mean": crops averaged first
    modality: str = "rgb"  # "rgb", "audio" or "rgb+audio" (XD-Violence I3D+VGGish, Table 3)
    device: str = "cpu"
    amp: bool = False  # bf16 autocast on CUDA
    eval_batch_size: int = 65536
    seed: int = 0

    def validate(self) -> "RunConfig":
        """Check every value against its field's type and range (`check_value`); raises
        ConfigError naming the first wrong key."""
        for key, value in _flatten(to_dict(self)).items():
            check_value(key, value)
        return self


# Paper settings per dataset (Sec. 4.2, 4.5).
PRESETS: dict[str, dict] = {
    "ucf": {"dataset": "ucf", "generator": {"alpha": 10.0}, "self_train": {"iterations": 3, "ratio": 0.5}},
    "xd": {"dataset": "xd", "generator": {"alpha": 0.1}, "self_train": {"iterations": 3, "ratio": 0.7}},
    "tad": {"dataset": "tad", "generator": {"alpha": 0.1}, "self_train": {"iterations": 5, "ratio": 0.3}},
}

# Compute profiles: how long to train, not what to train. `full` is the paper scale.
PROFILES: dict[str, dict] = {
    "smoke": {"generator": {"steps": 60, "batch_size": 8}, "clip": {"epochs": 3, "steps": 20, "batch_size": 128}},
    "quick": {"generator": {"steps": 300, "batch_size": 16}, "clip": {"epochs": 10, "steps": 1000, "batch_size": 128}},
    "full": {"generator": {"steps": 3000, "batch_size": 32}, "clip": {"epochs": 10, "batch_size": 65536}},
}

# What a profile allows the book's chapters beyond the training budget: `smoke` checks that the
# chain runs (CI), and no sentence of the book rests on it, so it keeps at most two seeds, and
# the claims chapter's pre-registered grids shrink to their first rows (every other profile
# runs them whole).
BOOK_LIMITS: dict[str, dict] = {"smoke": {"seeds": 2, "iterations": 3, "map_cells": 2, "sensitivity": 3}}


def book_seeds(profile: str, seeds: int) -> int:
    """The seeds a chapter runs at `profile`: `seeds`, capped by the profile's `BOOK_LIMITS`."""
    return min(seeds, BOOK_LIMITS.get(profile, {}).get("seeds", seeds))


def book_iterations(profile: str, iterations: int) -> int:
    """The self-training iterations a chapter shows at `profile`, capped by `BOOK_LIMITS`."""
    return min(iterations, BOOK_LIMITS.get(profile, {}).get("iterations", iterations))


def book_rows(profile: str, grid: str, rows: tuple) -> tuple:
    """The rows of the claims chapter's `grid` ("map_cells", "sensitivity") run at `profile`:
    all of them, or the first ones where `BOOK_LIMITS` caps the grid."""
    return rows[:BOOK_LIMITS.get(profile, {}).get(grid, len(rows))]


# The rows of Table 4 and the standard self-training of Fig. 3, as overrides.
VARIANTS: dict[str, dict] = {
    "baseline": {"generator": {"num_heads": 1, "diversity": False},
                 "self_train": {"selection": "all", "iterations": 1}},
    "completeness": {"self_train": {"selection": "all", "iterations": 1}},
    "uncertainty": {"generator": {"num_heads": 1, "diversity": False}},
    "full": {},
    "standard": {"self_train": {"selection": "random"}},
}


def _merge(base: dict, update: dict, path: str = "") -> dict:
    out = dict(base)
    for key, value in update.items():
        where = f"{path}{key}"
        if key not in base:
            raise KeyError(f"unknown config key {where!r}; known: {sorted(base)}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise TypeError(f"config key {where!r} is a section; give a dict, got {value!r}")
            out[key] = _merge(base[key], value, where + ".")
        else:
            out[key] = value
    return out


def _nest(flat: dict) -> dict:
    """{"generator.alpha": 1} -> {"generator": {"alpha": 1}}; nested dicts pass through."""
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return nested


def to_dict(config: RunConfig) -> dict:
    return dataclasses.asdict(config)


def from_dict(data: dict) -> RunConfig:
    """Rebuild a RunConfig; unknown keys raise KeyError naming them, values of the wrong type
    or out of range ConfigError naming them (`check_value`)."""
    merged = _merge(to_dict(RunConfig()), data)
    checked = _nest({key: check_value(key, value) for key, value in _flatten(merged).items()})
    return _build(RunConfig, checked)


def _build(cls, values: dict):
    hints = typing.get_type_hints(cls)
    return cls(**{k: _build(hints[k], v) if dataclasses.is_dataclass(hints[k]) else v for k, v in values.items()})


def _flatten(nested: dict, prefix: str = "") -> dict:
    """{"generator": {"alpha": 1}} -> {"generator.alpha": 1}."""
    flat = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# ---------------------------------------------------------------------------------------
# Types and ranges: one table of rules for every way a value comes in (make_config,
# from_dict, `cupl train --set`, `cupl book -p`, `cupl evaluate --window`).


class ConfigError(ValueError):
    """A configuration value of the wrong type or out of range; the message names the key."""


# Closed "[" or open "(" bounds of the numeric fields (every element, for tuples); a field
# not listed takes any value of its type.
RANGES: dict[str, str] = {
    "generator.num_heads": "[1, inf)",
    "generator.hidden": "[1, inf)",
    "generator.dropout": "[0, 1)",
    "generator.alpha": "[0, inf)",
    "generator.num_segments": "[1, inf)",
    "generator.lr": "(0, inf)",
    "generator.steps": "[1, inf)",
    "generator.batch_size": "[1, inf)",
    "generator.mc_passes": "[1, inf)",
    "clip.hidden": "[1, inf)",
    "clip.dropout": "[0, 1)",
    "clip.lr": "(0, inf)",
    "clip.weight_decay": "[0, inf)",
    "clip.epochs": "[1, inf)",
    "clip.batch_size": "[1, inf)",
    "clip.mc_passes": "[1, inf)",
    "clip.class_weights": "(0, inf)",
    "clip.label_smoothing": "[0, 0.5)",
    "clip.steps": "[1, inf)",
    "self_train.iterations": "[1, inf)",
    "self_train.ratio": "(0, 1]",
    "self_train.window": "[1, inf)",
    "eval_batch_size": "[1, inf)",
    "seed": "[0, inf)",
}

CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": tuple(PRESETS),
    "generator.head_scores": ("sigmoid", "logits"),
    "generator.mil_reduction": ("mean", "sum"),
    "generator.regularizer_reduction": ("mean", "sum"),
    "generator.norm_form": ("paper", "cmcs"),
    "self_train.selection": ("uncertainty", "random", "all"),
    "self_train.normal_labels": ("zero", "pseudo"),
    "crops": ("each", "mean"),
    "modality": ("rgb", "audio", "rgb+audio"),
    "clip.loss": ("bce", "weighted"),
    "clip.batches": ("shuffled", "balanced"),
    "clip.budget": ("epochs", "steps"),
    "self_train.refine": ("none", "smooth_minmax"),
    "self_train.mc_masks": ("shared", "per_clip"),
}


@functools.cache
def field_types(cls=RunConfig, prefix: str = "") -> dict[str, object]:
    """Every leaf key of the configuration ('generator.alpha') and its annotated type."""
    hints = typing.get_type_hints(cls)
    out: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.update(field_types(kind, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = kind
    return out


def check_value(key: str, value, name: str | None = None):
    """`value` as the type of config key `key` (from the dataclass annotation: bool, int, float,
    str, tuple), checked against RANGES and CHOICES.

    name: what the message calls the value (default: the key), e.g. "--window".
    Raises KeyError for an unknown key, ConfigError naming `name` for a wrong value.
    """
    types_ = field_types()
    if key not in types_:
        raise KeyError(f"unknown config key {key!r}; known: {sorted(types_)}")
    name = name or key
    value = typed(name, types_[key], value)
    if key in RANGES:
        for item in value if isinstance(value, tuple) else (value,):
            in_range(name, item, RANGES[key])
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, CHOICES[key]))}, got {value!r}")
    if key == "device":
        _check_device(name, value)
    return value


def typed(name: str, kind, value):
    """`value` as `kind` (bool, int, float, str, tuple[...], or a union with None); a whole
    float is taken as an int, an int as a float; bools are never numbers. ConfigError naming
    `name` otherwise."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return typed(name, option, value)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        parts = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a tuple of {len(parts)} values, got {value!r}")
        if parts and parts[-1] is not Ellipsis and len(value) != len(parts):
            raise ConfigError(f"{name} must hold {len(parts)} values, got {len(value)}: {value!r}")
        item_kinds = [parts[0]] * len(value) if parts and parts[-1] is Ellipsis else parts or [object] * len(value)
        return tuple(typed(f"{name}[{i}]", k, v) for i, (k, v) in enumerate(zip(item_kinds, value)))
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is bool:
        if type(value).__name__ in ("bool", "bool_"):
            return bool(value)
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    if kind is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if is_number and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if kind is float:
        if is_number and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if kind is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name} must be a string, got {value!r}")
    return value


def in_range(name: str, value, interval: str):
    """Raise ConfigError naming `name` unless `value` lies in `interval`, e.g. "(0, 1]"."""
    lo_text, hi_text = interval[1:-1].split(",")
    lo, hi = float(lo_text), float(hi_text)
    above = value >= lo if interval[0] == "[" else value > lo
    below = value <= hi if interval[-1] == "]" else value < hi
    if not (above and below):
        raise ConfigError(f"{name} must be in {interval}, got {value!r}")
    return value


def _check_device(name: str, value: str):
    import torch

    try:
        torch.device(value)
    except RuntimeError:
        raise ConfigError(f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:1', got {value!r}") from None


def make_config(preset: str = "ucf", profile: str = "quick", variant: str = "full", **overrides) -> RunConfig:
    """A run configuration: paper preset, compute profile, ablation variant, then overrides.

    Overrides are keyword arguments with dotted or nested keys, e.g.
    ``make_config("ucf", "quick", **{"generator.alpha": 1.0, "seed": 3})``. An override of
    `clip.epochs` without `clip.budget` asks for the epochs budget, the only one that reads it.
    """
    for name, table, what in ((preset, PRESETS, "preset"), (profile, PROFILES, "profile"), (variant, VARIANTS, "variant")):
        if name not in table:
            raise ValueError(f"unknown {what} {name!r}; choose from {sorted(table)}")
    data = to_dict(RunConfig())
    overrides = _nest(overrides)
    clip = overrides.get("clip")
    if isinstance(clip, dict) and "epochs" in clip and "budget" not in clip:
        overrides["clip"] = {**clip, "budget": "epochs"}
    for layer in (PRESETS[preset], PROFILES[profile], VARIANTS[variant], overrides):
        data = _merge(data, layer)
    return from_dict(data)
