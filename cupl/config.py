"""Configuration: plain dataclasses holding the paper's defaults, named presets and profiles.

Every choice the paper leaves open is made here once, with a comment, and listed in the
book's Reproduction notes. `make_config` builds a run configuration from a dataset preset,
a compute profile and overrides; unknown keys are rejected, and `to_dict` / `from_dict`
round-trip exactly, so a checkpoint or an executed notebook records the whole configuration.
"""

from __future__ import annotations

import dataclasses
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
    # hinge with averaged regularisers weighs them by alpha / batch_size.
    mil_reduction: str = "mean"
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


@dataclass
class SelfTrainConfig:
    """Iterative uncertainty-aware pseudo-label refinement (Sec. 3.3, Algorithm 1)."""

    iterations: int = 3  # j
    ratio: float = 0.5  # R: share of each video's clips kept as reliable
    window: int = 5  # w of the long-term feature memory (released code)
    selection: str = "uncertainty"  # "uncertainty" (ours), "random" (standard self-training), "all"
    normal_labels: str = "zero"  # open: clips of normal videos are normal by the weak label


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
        checks = [
            (self.generator.num_heads >= 1, "generator.num_heads must be >= 1"),
            (0 <= self.generator.dropout < 1, "generator.dropout must be in [0, 1)"),
            (0 <= self.clip.dropout < 1, "clip.dropout must be in [0, 1)"),
            (0 < self.self_train.ratio <= 1, "self_train.ratio (R) must be in (0, 1]"),
            (self.self_train.iterations >= 1, "self_train.iterations (j) must be >= 1"),
            (self.self_train.window >= 1, "self_train.window (w) must be >= 1"),
            (self.self_train.selection in ("uncertainty", "random", "all"),
             "self_train.selection must be 'uncertainty', 'random' or 'all'"),
            (self.self_train.normal_labels in ("zero", "pseudo"), "self_train.normal_labels must be 'zero' or 'pseudo'"),
            (self.crops in ("each", "mean"), "crops must be 'each' or 'mean'"),
            (self.generator.head_scores in ("sigmoid", "logits"), "generator.head_scores must be 'sigmoid' or 'logits'"),
            (self.generator.mil_reduction in ("mean", "sum") and self.generator.regularizer_reduction in ("mean", "sum"),
             "generator.mil_reduction and generator.regularizer_reduction must be 'mean' or 'sum'"),
            (self.generator.norm_form in ("paper", "cmcs"), "generator.norm_form must be 'paper' or 'cmcs'"),
            (self.generator.mc_passes >= 1 and self.clip.mc_passes >= 1, "mc_passes must be >= 1"),
            (self.generator.steps >= 1 and self.clip.epochs >= 1, "generator.steps and clip.epochs must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message} (config: {self.dataset})")
        return self


# Paper settings per dataset (Sec. 4.2, 4.5).
PRESETS: dict[str, dict] = {
    "ucf": {"dataset": "ucf", "generator": {"alpha": 10.0}, "self_train": {"iterations": 3, "ratio": 0.5}},
    "xd": {"dataset": "xd", "generator": {"alpha": 0.1}, "self_train": {"iterations": 3, "ratio": 0.7}},
    "tad": {"dataset": "tad", "generator": {"alpha": 0.1}, "self_train": {"iterations": 5, "ratio": 0.3}},
}

# Compute profiles: how long to train, not what to train. `full` is the paper scale.
PROFILES: dict[str, dict] = {
    "smoke": {"generator": {"steps": 60, "batch_size": 8}, "clip": {"epochs": 3, "batch_size": 128}},
    "quick": {"generator": {"steps": 300, "batch_size": 16}, "clip": {"epochs": 10, "batch_size": 128}},
    "full": {"generator": {"steps": 3000, "batch_size": 32}, "clip": {"epochs": 10, "batch_size": 65536}},
}

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
    """Rebuild a RunConfig; unknown keys raise KeyError naming them."""
    merged = _merge(to_dict(RunConfig()), data)
    sections = {
        "generator": GeneratorConfig, "clip": ClipConfig, "self_train": SelfTrainConfig,
    }
    kwargs = {}
    for key, value in merged.items():
        if key in sections:
            value = {k: tuple(v) if k == "hidden" else v for k, v in value.items()}
            kwargs[key] = sections[key](**value)
        else:
            kwargs[key] = value
    return RunConfig(**kwargs).validate()


def make_config(preset: str = "ucf", profile: str = "quick", variant: str = "full", **overrides) -> RunConfig:
    """A run configuration: paper preset, compute profile, ablation variant, then overrides.

    Overrides are keyword arguments with dotted or nested keys, e.g.
    ``make_config("ucf", "quick", **{"generator.alpha": 1.0, "seed": 3})``.
    """
    for name, table, what in ((preset, PRESETS, "preset"), (profile, PROFILES, "profile"), (variant, VARIANTS, "variant")):
        if name not in table:
            raise ValueError(f"unknown {what} {name!r}; choose from {sorted(table)}")
    data = to_dict(RunConfig())
    for layer in (PRESETS[preset], PROFILES[profile], VARIANTS[variant], _nest(overrides)):
        data = _merge(data, layer)
    return from_dict(data)
