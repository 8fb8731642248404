"""Figure helpers for the book: each draws on a given matplotlib Axes and returns it."""

from __future__ import annotations

import numpy as np

from cupl.util import to_numpy

PAPER_STYLE = {"color": "0.35", "linestyle": "--", "marker": "s", "markersize": 4}


def shade_intervals(ax, mask, x=None, color="tab:red", alpha=0.15, label="annotated anomaly"):
    """Shade the runs of ones in a 0/1 mask (frames or clips) along x."""
    mask = to_numpy(mask).astype(bool)
    x = np.arange(len(mask), dtype=float) if x is None else to_numpy(x).astype(float)
    step = x[1] - x[0] if len(x) > 1 else 1.0
    right = np.append(x[1:], x[-1] + step)  # a run covers its last step too: one-clip events show
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    for i, (start, end) in enumerate(zip(edges[::2], edges[1::2])):
        ax.axvspan(x[start], right[end - 1], color=color, alpha=alpha, lw=0,
                   label=label if i == 0 else None)
    return ax


def score_curve(ax, frame_scores, frame_labels=None, title=None, color="tab:blue", label="anomaly score"):
    """A test video's frame scores with its annotated intervals shaded (the paper's Fig. 5)."""
    s = to_numpy(frame_scores)
    if frame_labels is not None:
        shade_intervals(ax, to_numpy(frame_labels)[: len(s)])
    ax.plot(np.arange(len(s)), s, color=color, lw=1.2, label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("frame")
    ax.set_ylabel("score")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def head_curves(ax, head_scores, truth=None, title=None):
    """Per-head segment scores of one video [S, K], with the true anomalous share shaded (Fig. 1)."""
    h = to_numpy(head_scores)
    if truth is not None:
        shade_intervals(ax, to_numpy(truth) > 0.5, label="anomalous segment (oracle)")
    for k in range(h.shape[1]):
        ax.plot(np.arange(h.shape[0]), h[:, k], marker=".", lw=1, label=f"head {k + 1}")
    ax.set_xlabel("segment")
    ax.set_ylabel("softmax score")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def roc(ax, fpr, tpr, label):
    ax.plot(to_numpy(fpr), to_numpy(tpr), label=label)
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    return ax


def pr(ax, recall, precision, label):
    ax.plot(to_numpy(recall), to_numpy(precision), label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    return ax


def sweep(ax, summary, metric="auc", paper=None, label="cupl (mean ± std)", xlabel=None, logx=False):
    """Mean ± std per value from `experiments.summarize`, with the paper's numbers if given.

    summary: DataFrame indexed by the swept value with columns (metric, mean|std).
    paper: {value: number in percent} — drawn dashed and labelled as the paper's.
    """
    x = np.asarray(summary.index, dtype=float)
    m, s = summary[(metric, "mean")].to_numpy(), summary[(metric, "std")].fillna(0).to_numpy()
    ax.errorbar(x, m, yerr=s, marker="o", capsize=3, label=label)
    if paper:
        px = np.asarray(list(paper), dtype=float)
        ax.plot(px, list(paper.values()), label="paper (UCF-Crime, I3D)", **PAPER_STYLE)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or summary.index.name)
    ax.set_ylabel(f"{metric.upper()} (%)")
    ax.legend(fontsize=8)
    return ax


def iterations(ax, history, metric="auc", by="selection", label_map=None):
    """Metric per self-training iteration, mean ± std over seeds, one line per group (Fig. 3)."""
    for key, frame in history.groupby(by, sort=False):
        g = frame.groupby("iteration")[metric].agg(["mean", "std"])
        ax.errorbar(g.index, 100 * g["mean"], yerr=100 * g["std"].fillna(0), marker="o", capsize=3,
                    label=(label_map or {}).get(key, key))
    ax.set_xlabel("iteration j")
    ax.set_ylabel(f"{metric.upper()} (%)")
    ax.legend(fontsize=8)
    return ax


def claims_heatmap(ax, verdicts, rows, columns, limit=3.0):
    """One `Verdict` per (row, claim) as a grid: colour = difference / spread, clipped to
    ±limit (blue: the paper's direction, higher for the method; red: the other way); text =
    difference ± spread in points, with "holds" (clear, paper's direction), "fails" (clear,
    the other way) or "n.c." (not clear).

    verdicts: {(row, column): Verdict}; rows, columns: labels in drawing order.
    """
    z = np.full((len(rows), len(columns)), np.nan)
    for i, r in enumerate(rows):
        for j, c in enumerate(columns):
            v = verdicts.get((r, c))
            if v is None:
                continue
            if v.judged:  # one seed: no spread, left blank
                z[i, j] = np.clip(v.difference / v.spread, -limit, limit) if v.spread > 0 else v.sign * limit
            mark = ("holds" if v.sign > 0 else "fails") if v.clear else "n.c."
            ink = "white" if abs(np.nan_to_num(z[i, j])) > 0.6 * limit else "black"
            ax.text(j, i, f"{v.difference:+.1f} ± {v.spread:.1f}\n{mark}", ha="center", va="center", fontsize=7,
                    color=ink)
    image = ax.imshow(np.nan_to_num(z), cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    return image
