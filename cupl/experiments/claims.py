"""When do the paper's claims hold? A pre-registered map over the benchmark's premises, and the
sensitivity of the claims to every open choice of `cupl.config`.

The claims are Table 4's gains over the baseline (completeness, uncertainty, both) and Fig. 3's
uncertainty-aware over standard self-training at j = 3. The map moves one premise of the
synthetic benchmark at a time around the default (`MAP_CELLS`, with the data layer's
`PREMISE_VARIANTS`); the sensitivity table flips one open choice at a time (`SENSITIVITY`).
Both grids were fixed before any of their runs and are not changed after seeing results.
Every cell is one `grid` over the five variants, so its runs are shared with the ablation
chapter and the disk cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from cupl.config import CHOICES, PROFILES, make_config, to_dict
from cupl.data.synth import PROFILES as SYNTH_PROFILES
from cupl.experiments.cache import default_cache, load_stage1, stage1_key, synthetic_bank
from cupl.experiments.health import failed_criteria, seeds_health
from cupl.experiments.loading import Data, load_data
from cupl.experiments.paper import TABLE4_GAINS
from cupl.experiments.runs import grid, run_seeds
from cupl.experiments.stats import Verdict, verdict
from cupl.experiments.train import prepare_split, pseudo_labels, stage1
from cupl.experiments.workers import end_workers

VARIANTS = ("baseline", "completeness", "uncertainty", "full", "standard")
# claim -> (treated variant, control variant, the paper's difference in AUC points; None: the
# paper gives only the direction, uncertainty-aware above standard self-training, Fig. 3)
CLAIMS: dict[str, tuple[str, str, float | None]] = {
    "completeness": ("completeness", "baseline", TABLE4_GAINS["completeness"]),
    "uncertainty": ("uncertainty", "baseline", TABLE4_GAINS["uncertainty"]),
    "full": ("full", "baseline", TABLE4_GAINS["full"]),
    "self_training": ("full", "standard", None),
}
CLAIM_WORDS = {
    "completeness": "the completeness gain (Table 4, + completeness over the baseline)",
    "uncertainty": "the uncertainty gain (Table 4, + uncertainty over the baseline)",
    "full": "the full method's gain (Table 4, both over the baseline)",
    "self_training": "uncertainty-aware over standard self-training at j = 3 (Fig. 3)",
}
# the mechanism figures of a cell: (column, variant whose run records it, history key) at
# iteration 1, where the first selection is mined from f_g's pseudo labels
MECHANISM = {
    "event_share": ("full", "event_share"),
    "event_share_selected": ("full", "event_share_selected"),
    "label_auc_selected": ("full", "label_auc_selected"),
}


@dataclass(frozen=True)
class Cell:
    """One cell of the map: the default benchmark with one premise moved.

    premise: what is moved; level: its value in words; premise_variant: the bank
    (`cupl.data.synth.PREMISE_VARIANTS`); steps_factor: stage-1 budget, times the profile's
    `generator.steps`.
    """

    name: str
    premise: str
    level: str
    premise_variant: str = "default"
    steps_factor: int = 1

    def overrides(self, profile: str) -> dict:
        """The config overrides of the cell at `profile` (every variant of the cell gets them)."""
        if self.steps_factor == 1:
            return {}
        return {"generator.steps": PROFILES[profile]["generator"]["steps"] * self.steps_factor}


MAP_CELLS: tuple[Cell, ...] = (
    Cell("default", "none", "the default benchmark"),
    Cell("one_event", "events per abnormal video", "1", "one_event"),
    Cell("three_spaced_events", "events per abnormal video", "3 with gaps >= the mean event", "three_spaced_events"),
    Cell("weak_events", "event strength", "median amplitude x0.5", "weak_events"),
    Cell("strong_events", "event strength", "median amplitude x2", "strong_events"),
    Cell("no_hard_normals", "hard-normal moments", "none", "no_hard_normals"),
    Cell("many_hard_normals", "hard-normal moments", "x4 the rate", "many_hard_normals"),
    Cell("long_stage1", "stage-1 budget", "generator.steps x4", steps_factor=4),
)


@dataclass(frozen=True)
class Choice:
    """An open choice of `cupl.config` flipped from its default; needs_crops: the flip only
    means something on a bank with several crops per clip."""

    name: str
    overrides: dict = field(default_factory=dict)
    needs_crops: bool = False


# Every open choice with two settings, flipped from its default one at a time: the readings of
# Eq. 1-7, the stage-2 lineage choices, normal-clip labels, f_c's re-initialisation and budget.
FLIPPED = ("generator.head_scores", "generator.norm_form", "generator.diversity_on_normal",
           "generator.mil_reduction", "generator.regularizer_reduction", "self_train.normal_labels",
           "clip.reinit", "clip.budget", "clip.batches", "clip.loss", "self_train.refine", "self_train.mc_masks")


def flip(key: str, preset: str = "ucf"):
    """The other setting of the two-valued open choice `key` (a bool, or a key of
    `cupl.config.CHOICES`), from the preset's default."""
    value = to_dict(make_config(preset))
    for part in key.split("."):
        value = value[part]
    if isinstance(value, bool):
        return not value
    others = [v for v in CHOICES[key] if v != value]
    if len(others) != 1:
        raise ValueError(f"flip: {key} has {len(others) + 1} settings, not two")
    return others[0]


def _flipped(key: str) -> "Choice":
    value = flip(key)
    return Choice(f"{key} = {value}", {key: value})


SENSITIVITY: tuple[Choice, ...] = (
    Choice("default"),
    *(_flipped(key) for key in FLIPPED),
    Choice("clip.mc_passes = 50", {"clip.mc_passes": 50}),
    Choice("crops = mean", {"crops": "mean"}, needs_crops=True),
)


def status(v: Verdict, expected: int = 1) -> str:
    """"holds" (a clear difference in the paper's direction `expected`), "fails" (clear, the
    other way) or "neither" (no clear difference, or one seed)."""
    if not v.clear:
        return "neither"
    return "holds" if v.sign == expected else "fails"


def claim_verdicts(frame: pd.DataFrame, metric: str = "auc") -> dict[str, Verdict]:
    """The `Verdict` of every claim from a `grid` over `VARIANTS` (one row per variant and seed)."""
    out = {}
    for claim, (treated, control, paper) in CLAIMS.items():
        a, b = frame.loc[frame["variant"] == treated, metric], frame.loc[frame["variant"] == control, metric]
        out[claim] = verdict(a, b, digits=2, paper=paper)
    return out


def generator_event_label(data: Data, config) -> tuple[float, float]:
    """f_g's mean first pseudo label (Eq. 8, `generator.mc_passes` passes, the masks of a run's
    iteration 1) on the event clips (oracle > 0.5) and on the other clips of abnormal videos.
    NaN without an oracle."""
    if data.oracle is None:
        return math.nan, math.nan
    model = load_stage1(data, stage1_key(config), config)
    if model is None:
        model = stage1(config, data.train)
    split = prepare_split(data.train, config.crops, "cpu")
    rng = torch.Generator().manual_seed(config.seed + 7919)  # a run's stage-2 stream: iteration 1 draws first
    labels, _ = pseudo_labels(model.cpu(), split, config.generator.mc_passes, rng=rng,
                              batch_size=config.eval_batch_size)
    abnormal = data.train.labels.repeat_interleave(data.train.lengths).bool()
    event = data.oracle > 0.5
    return float(labels[event & abnormal].mean()), float(labels[~event & abnormal].mean())


def _mechanism(data: Data, seeds: list[int], profile: str, device: str, overrides: dict) -> dict:
    if data.oracle is None:
        return {**{k: math.nan for k in MECHANISM}, "fg_event_label": math.nan, "fg_background_label": math.nan,
                "fg_event_label_one_head": math.nan}
    out = {}
    histories = {}
    for column, (variant, key) in MECHANISM.items():
        if variant not in histories:
            _, history = run_seeds(data, seeds, profile=profile, variant=variant, device=device, workers=1,
                                   **overrides)
            histories[variant] = history[history["iteration"] == 1]
        out[column] = float(histories[variant][key].mean())
    for variant, suffix in (("full", ""), ("baseline", "_one_head")):
        labels = [generator_event_label(data, make_config(data.preset, profile, variant, seed=s, device=device,
                                                          **overrides)) for s in seeds]
        out[f"fg_event_label{suffix}"] = float(np.mean([e for e, _ in labels]))
        if not suffix:
            out["fg_background_label"] = float(np.mean([b for _, b in labels]))
    return out


def claims_cell(data: Data, cell: Cell, seeds, profile: str = "quick", *, device: str = "cpu",
                progress: bool = False, workers: int | None = None, overrides: dict | None = None) -> dict:
    """The claims and their mechanism on one cell: `data` is the cell's bank.

    One `grid` over `VARIANTS` with the cell's (and `overrides`') settings; then the verdict of
    each claim (`CLAIMS`) and, where the bank has an oracle, the mechanism figures at
    iteration 1: event share of all clips of abnormal training videos and of the selected
    ones, pseudo-label AUC of the selected set (full variant), f_g's mean pseudo label on
    event clips (two heads; and one head, the baseline's f_g).
    returns: {"cell", "premise", "level", "frame" (the grid), "verdicts" {claim: Verdict},
    "mechanism" {figure: mean over seeds}, "health" (`seeds_health` of the full variant's f_g,
    None without clip truth)}.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    extra = {**cell.overrides(profile), **(overrides or {})}
    frame = grid(data, "variant", VARIANTS, seeds, profile=profile, device=device, progress=progress,
                 workers=workers, **extra)
    return {"cell": cell.name, "premise": cell.premise, "level": cell.level, "frame": frame,
            "verdicts": claim_verdicts(frame), "mechanism": _mechanism(data, seeds, profile, device, extra),
            "health": seeds_health(data, seeds, profile=profile, device=device, **extra)}


def cell_data(cell: Cell, profile: str, bank: str = "", *, cache="default") -> Data | None:
    """The bank of a cell: the embedded benchmark of its premise variant; on a given `bank`
    only the cells on the default premises (None for the others: a given bank cannot be
    regenerated with a premise moved)."""
    if bank:
        return load_data(bank, profile, cache=cache) if cell.premise_variant == "default" else None
    path = synthetic_bank(profile, default_cache(), progress=False, premise_variant=cell.premise_variant)
    return load_data(path, profile, cache=cache)


def _row(result: dict) -> dict:
    row = {"cell": result["cell"], "premise": result["premise"], "level": result["level"]}
    row.update(result["verdicts"])
    row.update(result["mechanism"])
    health = result["health"]
    row["health"] = health
    row.update({f"fg_{k}": health[k] if health else float("nan") for k in ("label_auc", "label_mae")})
    row["fg_healthy"] = None if health is None else not failed_criteria(health)
    return row


def claims_map(seeds, profile: str = "quick", *, bank: str = "", cells=MAP_CELLS, device: str = "cpu",
               progress: bool = False, workers: int | None = None, cache="default") -> pd.DataFrame:
    """The map: one row per cell of `cells` that the bank allows (`cell_data`), with a
    `Verdict` column per claim and the mechanism figures. Cells skipped on a given bank are
    listed in `frame.attrs["skipped"]`."""
    rows, skipped = [], []
    for cell in cells:
        data = cell_data(cell, profile, bank, cache=cache)
        if data is None:
            skipped.append(cell.name)
            continue
        rows.append(_row(claims_cell(data, cell, seeds, profile, device=device, progress=progress,
                                     workers=workers)))
        end_workers(data)  # each cell's bank has its own worker processes: they end with it
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=["cell", "premise", "level", *CLAIMS])
    frame = frame.set_index("cell")
    frame.attrs["skipped"] = skipped
    return frame


# A crop choice means something only with several crops per clip. On a one-crop embedded
# benchmark it runs on the same benchmark with as many crops as the real UCF-Crime I3D features
# (the `full` profile's), fixed before any run, against the default choices on that bank.
SEVERAL_CROPS = SYNTH_PROFILES["full"].crops


def several_crops_data(data: Data, profile: str) -> Data | None:
    """The bank for a crop choice: None when `data` has one crop per clip and is not the
    embedded benchmark (a given bank cannot be regenerated with more crops); else the
    embedded benchmark of `profile` with `SEVERAL_CROPS` crops per clip."""
    if not str(data.attrs.get("source", "")).startswith("synthetic") or data.attrs.get("premise_variant"):
        return None
    path = synthetic_bank(profile, default_cache(), progress=False, crops=SEVERAL_CROPS)
    return load_data(path, profile, cache=data.cache)


def sensitivity(data: Data, seeds, profile: str = "quick", *, choices=SENSITIVITY, device: str = "cpu",
                progress: bool = False, workers: int | None = None) -> pd.DataFrame:
    """Each open choice flipped alone from the default: one row per choice with the `Verdict`
    of every claim. A crop choice on a one-crop bank runs, with the default choices beside it,
    on the embedded benchmark with several crops (`several_crops_data`; rows named with the
    bank), or is skipped with the reason when there is no such bank."""
    crops = int(data.train.features.shape[1])
    rows = []

    def judge(bank: Data, name: str, overrides: dict):
        frame = grid(bank, "variant", VARIANTS, seeds, profile=profile, device=device, progress=progress,
                     workers=workers, **overrides)
        rows.append({"choice": name, **claim_verdicts(frame), "skipped": ""})

    for choice in choices:
        if not (choice.needs_crops and crops == 1):
            judge(data, choice.name, choice.overrides)
            continue
        several = several_crops_data(data, profile)
        if several is None:
            rows.append({"choice": choice.name,
                         "skipped": "the bank has one crop per clip: the crop mean is the crop itself"})
            continue
        n = int(several.train.features.shape[1])
        for name, overrides in (("default", {}), (choice.name, choice.overrides)):
            judge(several, f"{name} ({n}-crop bank)", overrides)
        end_workers(several)  # the bank's worker processes end with it
    return pd.DataFrame(rows).set_index("choice")


def status_table(frame: pd.DataFrame) -> pd.DataFrame:
    """"holds" / "fails" / "neither" (`status`) for every Verdict of a map or sensitivity table."""
    claims = [c for c in CLAIMS if c in frame.columns]
    return frame[claims].apply(lambda col: col.map(lambda v: status(v) if isinstance(v, Verdict) else ""))


def verdict_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every Verdict of a map or sensitivity table as "difference ± spread (status)", in points."""
    def short(v):
        return f"{v.difference:+.2f} ± {v.spread:.2f} ({status(v)})" if isinstance(v, Verdict) else ""

    claims = [c for c in CLAIMS if c in frame.columns]
    return frame[claims].apply(lambda col: col.map(short))


def claim_sentence(frame: pd.DataFrame, claim: str, default: str = "the default benchmark") -> str:
    """One plain sentence: where `claim` holds, where it fails and where neither, over the rows
    (named by premise and level on a map, by the row name otherwise; the "default" row by `default`)."""
    groups = {"holds": [], "fails": [], "neither": []}
    for name, row in frame.iterrows():
        v = row[claim]
        if isinstance(v, Verdict):
            where = f"{row['premise']} = {row['level']}" if "level" in frame.columns else str(name)
            groups[status(v)].append(default if name == "default" else where)
    parts = [f"{word} on {', '.join(places)}" for word, places in
             (("holds", groups["holds"]), ("fails (clear, the other way)", groups["fails"]),
              ("is not clear either way", groups["neither"])) if places]
    return f"{CLAIM_WORDS[claim][0].upper()}{CLAIM_WORDS[claim][1:]} " + ("; ".join(parts) or "was not measured") + "."
