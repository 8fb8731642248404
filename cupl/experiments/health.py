"""Generator health: is a trained f_g (Sec. 3.2) a usable source of first pseudo labels?

A generator can rank the clips of an abnormal video well and still be useless to Sec. 3.3:
when every head scores every segment near 1, the labels are wrong in level, MC-Dropout calls
them certain, and reliable-clip mining keeps them. `generator_health` measures this on the
deterministic f_g (dropout off) over the clips of the abnormal training videos, where the
synthetic benchmark knows the truth; `is_healthy` applies thresholds fixed here, before any
sweep over the readings of Eq. 1-7 was run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from cupl.method.pooling import segment_split

if TYPE_CHECKING:
    from cupl.experiments.loading import Data

# A score beyond these is "saturated": sigmoid'(z) < 0.0099 there, so it barely moves under
# training and MC-Dropout sees almost no spread in it.
SATURATION = (0.01, 0.99)

# Health thresholds, fixed before the sweep of `benchmarks/generator_readings.py` was run.
# AUC >= 0.75: the first pseudo labels must order anomalous above normal clips clearly better
# than chance (0.5) for self-training to have a signal to refine; 0.75 is half-way to perfect.
MIN_AUC = 0.75
# mean |label - oracle| <= 0.3: the oracle is near 0 or 1 on most clips, so labels must sit
# near their targets, not only rank right. All-ones labels on abnormal videos score
# 1 - (event share), about 0.8 here; a constant 0.5 scores 0.5; 0.3 leaves room for soft labels.
MAX_LABEL_MAE = 0.3
# share of truly normal clips (oracle 0) of abnormal videos with a score > 0.99 <= 0.25: such a
# label is wrong and certain at once (MC-Dropout variance ~ 0 at saturation), the one error
# uncertainty-based mining (Eq. 10) cannot remove; a quarter of them already swamps the
# events in the R = 50% reliable set. The MAE bound alone would let this through when the
# rest of the labels are exact.
MAX_SATURATED_NORMAL = 0.25


def _auc(scores: np.ndarray, truth: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(truth)) < 2:
        return float("nan")
    return float(roc_auc_score(truth, scores))


def _head_logits(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[R, C, D] -> [R, C, K] deterministic per-head logits A^k, in row chunks."""
    rows = max(1, batch_size // max(1, x.shape[1]))
    with torch.no_grad():
        return torch.cat([model(x[lo:lo + rows].float()) for lo in range(0, len(x), rows)])


def generator_health(model, train_split, oracle: torch.Tensor, *, num_segments: int = 32,
                     batch_size: int = 65536) -> dict[str, float]:
    """Health of f_g on the clips of the abnormal training videos (dropout off).

    model: `MultiHeadClassifier` (K >= 1 heads); train_split: its training `Split`;
    oracle: [N] clip truth in [0, 1] over the split (> 0.5 = anomalous).
    Clip label = sigmoid(A^avg) (Eq. 4) averaged over crops, the deterministic counterpart
    of `pseudo_labels`. returns:
      label_auc, label_mae: ROC-AUC and mean |label - oracle| of the clip labels;
      saturated: share of clip labels outside SATURATION; saturated_high: share > 0.99;
      saturated_normal: share > 0.99 among clips with oracle 0;
      head_saturated: share of per-head, per-crop clip scores sigmoid(A^k) outside SATURATION;
      head_gap: mean |sigmoid(A^k) - sigmoid(A^q)| over head pairs and clips (0 for K = 1);
      head_cosine: Eq. 1-2 on the logits of the 32-segment bags of abnormal videos, crops
      averaged: 1 = identical score distributions (NaN for K = 1);
      hinge_active: share of (abnormal bag, normal bag) pairs, one bag per video and crop as in
      training, with 1 - max a + max n > 0 (Eq. 6); hinge_grad: mean over all pairs of
      sigmoid'(max logit a) + sigmoid'(max logit n) where active, the gradient that reaches
      the two top logits (~0 when the bags are saturated even if the hinge is active).
    """
    if oracle.shape != (train_split.num_clips,):
        raise ValueError(f"generator_health: oracle must be [{train_split.num_clips}] (one value per clip of the "
                         f"split), got {tuple(oracle.shape)}")
    was_training = model.training
    model.eval()
    try:
        logits = _head_logits(model, train_split.features, batch_size)  # [N, C, K]
        segments = segment_split(train_split.features, train_split.offsets, num_segments)  # [V, S, C, D]
        v, s, c = segments.shape[:3]
        seg_logits = _head_logits(model, segments.flatten(0, 1), batch_size).view(v, s, c, -1)  # [V, S, C, K]
    finally:
        model.train(was_training)
    abnormal_clip = train_split.labels.repeat_interleave(train_split.lengths).bool()
    abnormal_video = train_split.labels.bool()
    heads = torch.sigmoid(logits[abnormal_clip].double())  # [Na, C, K]
    labels = torch.sigmoid(logits[abnormal_clip].double().mean(dim=2)).mean(dim=1).numpy()
    truth = oracle[abnormal_clip].double().numpy()
    lo, hi = SATURATION
    k = heads.shape[2]
    pairs = [(i, j) for i in range(k - 1) for j in range(i + 1, k)]
    head_gap = (float(np.mean([(heads[..., i] - heads[..., j]).abs().mean().item() for i, j in pairs]))
                if pairs else 0.0)
    return {
        "label_auc": _auc(labels, (truth > 0.5).astype(np.uint8)),
        "label_mae": float(np.abs(labels - truth).mean()),
        "saturated": float(((labels < lo) | (labels > hi)).mean()),
        "saturated_high": float((labels > hi).mean()),
        "saturated_normal": float((labels[truth == 0] > hi).mean()) if (truth == 0).any() else float("nan"),
        "head_saturated": float(((heads < lo) | (heads > hi)).double().mean().item()),
        "head_gap": head_gap,
        "head_cosine": _head_cosine(seg_logits[abnormal_video].mean(dim=2)),
        **_hinge(seg_logits, abnormal_video),
    }


def _head_cosine(bag_logits: torch.Tensor) -> float:
    """Eq. 1-2 averaged over bags. bag_logits: [B, S, K]."""
    k = bag_logits.shape[2]
    if k < 2:
        return float("nan")
    p = torch.nn.functional.normalize(torch.softmax(bag_logits.double().transpose(1, 2), dim=2), dim=2)
    cos = p @ p.transpose(1, 2)  # [B, K, K]
    i, j = torch.triu_indices(k, k, offset=1)
    return float(cos[:, i, j].mean().item())


def _hinge(seg_logits: torch.Tensor, abnormal_video: torch.Tensor) -> dict[str, float]:
    """Eq. 6 over every (abnormal bag, normal bag) pair. seg_logits: [V, S, C, K]."""
    top = seg_logits.double().mean(dim=3).max(dim=1).values  # [V, C]: top A^avg of each bag
    top_a, top_n = top[abnormal_video].flatten(), top[~abnormal_video].flatten()
    if len(top_a) == 0 or len(top_n) == 0:
        return {"hinge_active": float("nan"), "hinge_grad": float("nan")}
    ya, yn = torch.sigmoid(top_a), torch.sigmoid(top_n)
    active = (1.0 - ya[:, None] + yn[None, :]) > 0  # [Ba, Bn]
    slope = (ya * (1 - ya))[:, None] + (yn * (1 - yn))[None, :]
    return {"hinge_active": float(active.double().mean().item()),
            "hinge_grad": float((slope * active).mean().item())}


CRITERIA = {"label_auc": f"pseudo-label AUC ≥ {MIN_AUC}", "label_mae": f"mean |label − oracle| ≤ {MAX_LABEL_MAE}",
            "saturated_normal": f"at most {100 * MAX_SATURATED_NORMAL:.0f} % of normal clips scored above 0.99"}


def failed_criteria(health: dict[str, float]) -> list[str]:
    """The health thresholds above that `health` misses (a NaN misses), in CRITERIA's words."""
    passed = {"label_auc": health["label_auc"] >= MIN_AUC, "label_mae": health["label_mae"] <= MAX_LABEL_MAE,
              "saturated_normal": health["saturated_normal"] <= MAX_SATURATED_NORMAL}
    return [CRITERIA[k] for k, ok in passed.items() if not ok]


def is_healthy(health: dict[str, float]) -> bool:
    """The thresholds above: label_auc >= MIN_AUC, label_mae <= MAX_LABEL_MAE and
    saturated_normal <= MAX_SATURATED_NORMAL (a NaN fails)."""
    return not failed_criteria(health)


def seeds_health(data: "Data", seeds, *, profile: str, variant: str = "full", **overrides) -> dict[str, float] | None:
    """Mean `generator_health` over the stage-1 models of `seeds` (from the run cache, or
    trained) under the configuration the chapters run; None on a bank without clip truth."""
    from cupl.config import make_config
    from cupl.experiments.cache import stage1_model

    if data.oracle is None:
        return None
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    rows = []
    for seed in seeds:
        config = make_config(data.preset, profile, variant, seed=seed, **overrides)
        model = stage1_model(data, config)
        rows.append(generator_health(model, data.train, data.oracle, num_segments=config.generator.num_segments))
    return {**{k: float(np.mean([r[k] for r in rows])) for k in rows[0]}, "seeds": len(rows)}


def health_note(health: dict[str, float] | None) -> str:
    """One paragraph for the top of a chapter: is the f_g it illustrates healthy (thresholds
    above, on the mean over seeds), and by how much."""
    if health is None:
        return ("This bank has no clip-level truth, so the health of the stage-1 generator this chapter rests on "
                "cannot be measured here.")
    measured = (f"over {health['seeds']} seeds, its deterministic pseudo labels on the clips of abnormal training "
                f"videos rank the true event clips with AUC {health['label_auc']:.2f}, lie "
                f"{health['label_mae']:.2f} from the truth on average, and score "
                f"{100 * health['saturated_normal']:.0f} % of the normal clips of abnormal videos above 0.99")
    failed = failed_criteria(health)
    if not failed:
        return f"The stage-1 generator this chapter rests on is healthy: {measured}."
    return (f"The stage-1 generator this chapter rests on is unhealthy: {measured}. It fails "
            f"{' and '.join(failed)}, so what follows shows the method outside its working regime.")
