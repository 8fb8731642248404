"""Seeds into statements: summaries, and one `Verdict` for every comparison of two sets of runs.

Every training result is a set of seeds. Two sets are compared by the difference of their
means against the spread s = sqrt(std_a^2 + std_b^2), the standard deviation of the difference
of two single runs; the chapters branch on the `Verdict` and glue its wording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# |difference| / spread from which an effect is "clear" and "far beyond its spread"
CLEAR, FAR = 1.0, 5.0


def pair_spread(std_a: float, std_b: float) -> float:
    """sqrt(std_a^2 + std_b^2): the standard deviation of the difference of two single runs."""
    return float(np.hypot(std_a, std_b))


@dataclass(frozen=True)
class Verdict:
    """ours - other in `unit`, judged against its spread.

    difference: mean(ours) - mean(other); spread: `pair_spread` of the two standard deviations
    (NaN with one seed on either side); seeds: (seeds of ours, seeds of other);
    means, stds: of each side; chance: the value at which a side is at chance level (50 for an
    AUC in points), None where that has no meaning; paper: the difference the paper reports,
    when the comparison is one of the paper's claims.
    """

    difference: float
    spread: float
    seeds: tuple[int, int]
    means: tuple[float, float]
    stds: tuple[float, float]
    unit: str = "points"
    digits: int = 1
    chance: float | None = None
    paper: float | None = None
    words: tuple[str, str] = ("higher", "lower")

    @property
    def sign(self) -> int:
        return int(np.sign(self.difference))

    @property
    def judged(self) -> bool:
        """Whether there is a spread to judge by (at least two seeds on each side)."""
        return min(self.seeds) >= 2 and math.isfinite(self.spread)

    @property
    def clear(self) -> bool:
        """The difference exceeds its spread (never with one seed)."""
        return self.judged and abs(self.difference) > CLEAR * self.spread

    @property
    def magnitude(self) -> float:
        """|difference| in units of its spread (inf when the spread is 0, NaN with one seed)."""
        if not self.judged:
            return float("nan")
        return abs(self.difference) / self.spread if self.spread > 0 else float("inf")

    def at_chance(self, side: int) -> bool:
        """Side 0 (ours) or 1 (other) lies within its own standard deviation of chance."""
        if self.chance is None or not self.judged:
            return False
        return abs(self.means[side] - self.chance) <= max(self.stds[side], 10.0 ** -self.digits)

    @property
    def reproduces(self) -> bool:
        """A claim of the paper reproduces in direction: a clear difference with the paper's sign."""
        if self.paper is None:
            raise ValueError("Verdict.reproduces: this comparison carries no paper value")
        return self.clear and self.sign == int(np.sign(self.paper))

    def text(self) -> str:
        """The comparison in words, scaled to the size of the effect."""
        d, s, n = abs(self.difference), self.spread, self.digits
        unit = f" {self.unit}" if self.unit else ""
        word = self.words[0] if self.difference > 0 else self.words[1]
        if not self.judged:
            core = ("no difference" if self.difference == 0 else f"{word} by {d:.{n}f}{unit}") + \
                   " (one seed: no spread to judge)"
        elif not self.clear:
            core = f"no clear difference ({self.difference:+.{n}f} ± {s:.{n}f}{unit}, within one standard deviation)"
        elif self.magnitude >= FAR:
            core = f"{word} by {d:.{n}f}{unit}, far beyond its spread of ± {s:.{n}f}"
        else:
            core = f"{word} by {d:.{n}f} ± {s:.{n}f}{unit}"
        both = self.at_chance(0) and self.at_chance(1)
        if both:
            core = f"both at chance level ({self.chance:g}{unit}): {core}"
        elif self.at_chance(0) or self.at_chance(1):
            core += f"; {'the first' if self.at_chance(0) else 'the second'} is at chance level ({self.chance:g}{unit})"
        if self.paper is None:
            return core
        paper = f"{self.paper:+.{n}f} in the paper"
        if self.reproduces:
            return f"reproduces in direction ({self.difference:+.{n}f} ± {s:.{n}f}{unit} here, {paper})"
        reason = "the sign is reversed" if self.clear else "no clear difference"
        spread = f" ± {s:.{n}f}" if self.judged else ""
        return f"does not reproduce here: {reason} ({self.difference:+.{n}f}{spread}{unit} here, {paper})"

    def __str__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer, cycle):  # what a notebook shows and glues
        printer.text(self.text())


def verdict(ours, other, *, scale: float = 100.0, unit: str = "points", digits: int = 1,
            higher: str = "higher", lower: str = "lower", chance: float | None = None,
            paper: float | None = None) -> Verdict:
    """Two sets of per-seed values (e.g. each seed's final AUC) as a `Verdict`, values times `scale`."""
    a, b = np.asarray(ours, dtype=np.float64) * scale, np.asarray(other, dtype=np.float64) * scale
    if a.size == 0 or b.size == 0:
        raise ValueError(f"verdict: needs at least one value on each side, got {a.size} and {b.size}")
    std_a = float(a.std(ddof=1)) if a.size > 1 else float("nan")
    std_b = float(b.std(ddof=1)) if b.size > 1 else float("nan")
    return Verdict(float(a.mean() - b.mean()), pair_spread(std_a, std_b), (int(a.size), int(b.size)),
                   (float(a.mean()), float(b.mean())), (std_a, std_b), unit, digits, chance, paper, (higher, lower))


def gain(treated: pd.DataFrame, control: pd.DataFrame, metric: str = "auc", scale: float = 100.0):
    """treated - control in points: (difference of the seed means, its spread; NaN with one seed).

    treated, control: one row per seed (`run_seeds`, or a slice of `grid`).
    """
    if len(treated) == 0 or len(control) == 0:
        raise ValueError(f"gain: needs seeds on both sides, got {len(treated)} and {len(control)} rows of {metric!r}")
    v = verdict(treated[metric], control[metric], scale=scale)
    return v.difference, v.spread


def paper_verdict(treated: pd.DataFrame, control: pd.DataFrame, paper_gain: float, metric: str = "auc",
                  scale: float = 100.0, digits: int = 2) -> Verdict:
    """Does a gain the paper reports (points, on real features) reproduce on this bank?

    Judged by direction only: sizes measured on another bank are not comparable.
    `Verdict.reproduces` when our difference exceeds its spread with the paper's sign.
    """
    return verdict(treated[metric], control[metric], scale=scale, digits=digits, paper=paper_gain)


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


def best_setting(frame: pd.DataFrame, by: str, metric: str = "auc", scale: float = 100.0, digits: int = 2) -> str:
    """The value of `by` with the highest mean `metric`, and which others are not clearly worse
    (their difference to the best is at most its `pair_spread`)."""
    s = summarize(frame, by, (metric,), scale)[metric]
    best = s["mean"].idxmax()
    spread = np.hypot(s["std"].fillna(np.inf), s.loc[best, "std"])
    close = [v for v in s.index if v != best and s.loc[best, "mean"] - s.loc[v, "mean"] <= spread[v]]
    head = (f"{by} = {best} gives the highest mean {metric.upper()}, "
            f"{s.loc[best, 'mean']:.{digits}f} ± {s.loc[best, 'std']:.{digits}f}")
    if not close:
        return f"{head}; every other value is lower by more than one standard deviation"
    return f"{head}; {', '.join(f'{by} = {v}' for v in close)} within one standard deviation of it"
