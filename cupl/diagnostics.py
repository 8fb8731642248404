"""Diagnostics that need clip-level truth, which only the synthetic benchmark has.

Training never calls these; they measure what the method claims to improve: the quality of
pseudo labels (Sec. 3.3) and how completely they cover the anomalous events (Sec. 3.2).
"""

from __future__ import annotations

import numpy as np
import torch


def _auc(scores: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(truth)) < 2:
        return float("nan")
    return float(roc_auc_score(truth, scores))


def pseudo_label_quality(labels: torch.Tensor, uncertainty: torch.Tensor, selected: torch.Tensor,
                         oracle: torch.Tensor, split) -> dict[str, float]:
    """How good are the pseudo labels of the abnormal training videos, all and selected?

    labels, uncertainty, oracle: [N] over the split's clips (oracle in [0, 1], > 0.5 = anomalous);
    selected: [N] bool. Normal videos are left out: their clips are normal by the weak label.
    returns: label_auc / label_auc_selected (ROC-AUC of pseudo labels against the truth),
    label_mae / label_mae_selected, and unc_error_corr (Spearman correlation of uncertainty
    with the absolute pseudo-label error).
    """
    from scipy.stats import spearmanr

    abnormal = split.labels.repeat_interleave(split.lengths).bool().cpu().numpy()
    y, u, s = labels.cpu().numpy(), uncertainty.cpu().numpy(), selected.cpu().numpy()
    truth = oracle.cpu().numpy()
    y, u, s, truth = y[abnormal], u[abnormal], s[abnormal], truth[abnormal]
    hard = (truth > 0.5).astype(np.uint8)
    err = np.abs(y - truth)
    return {
        "label_auc": _auc(y, hard),
        "label_auc_selected": _auc(y[s], hard[s]),
        "label_mae": float(err.mean()),
        "label_mae_selected": float(err[s].mean()) if s.any() else float("nan"),
        "unc_error_corr": float(spearmanr(u, err).statistic) if len(u) > 2 else float("nan"),
    }
