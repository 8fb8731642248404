"""Losses of the completeness-enhanced pseudo-label generator (Sec. 3.2) and of f_c (Eq. 11).

Shapes: B videos (pairs), K heads, S segments.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cupl._checks import check_ndim


REDUCTIONS = ("mean", "sum")
NORM_FORMS = ("paper", "cmcs")


def _reduce(per_bag: torch.Tensor, reduction: str, what: str) -> torch.Tensor:
    """Eq. 2, 3 and 6 are written for one video; the paper does not say how a batch combines
    them. "mean" divides by the batch size, "sum" does not (it scales the term with B)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{what}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return per_bag.mean() if reduction == "mean" else per_bag.sum()


def mil_ranking_loss(abnormal: torch.Tensor, normal: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Hinge MIL ranking loss (Eq. 5-6) over the B (abnormal, normal) pairs.

    abnormal, normal: [B, S] segment scores in [0, 1] (sigmoid of A^avg, Eq. 4).
    returns: scalar ``max(0, 1 - max_s abnormal[b] + max_s normal[b])`` averaged over b
    (reduction "mean") or summed ("sum").
    """
    check_ndim("abnormal", abnormal, "[B, S]", ndim=2)
    check_ndim("normal", normal, "[B, S]", ndim=2)
    if abnormal.shape[0] != normal.shape[0]:
        raise ValueError(
            f"mil_ranking_loss: abnormal and normal must pair up, got {tuple(abnormal.shape)} "
            f"and {tuple(normal.shape)}"
        )
    hinge = F.relu(1.0 - abnormal.max(dim=1).values + normal.max(dim=1).values)
    return _reduce(hinge, reduction, "mil_ranking_loss")


def _check_heads(name: str, head_logits: torch.Tensor):
    check_ndim(name, head_logits, "[B, K, S]", ndim=3)


def diversity_loss(head_logits: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Diversity between heads (Eq. 1-2), averaged ("mean") or summed ("sum") over B.

    head_logits: [B, K, S] per-head segment values A^k, K >= 2.
    Each head's values go through a softmax over S (Eq. 1); the loss of a bag is the mean
    cosine similarity over the Z = K(K-1)/2 pairs of heads: 1 for identical heads, 0 for heads
    whose distributions do not overlap.
    """
    _check_heads("diversity_loss head_logits", head_logits)
    k = head_logits.shape[1]
    if k < 2:
        raise ValueError(f"diversity_loss needs K >= 2 heads, got head_logits of shape {tuple(head_logits.shape)}")
    p = F.normalize(torch.softmax(head_logits, dim=2), dim=2)  # unit-norm score distributions
    cos = p @ p.transpose(1, 2)  # [B, K, K]
    pairs = torch.triu_indices(k, k, offset=1, device=head_logits.device)
    return _reduce(cos[:, pairs[0], pairs[1]].mean(dim=1), reduction, "diversity_loss")


def norm_loss(head_logits: torch.Tensor, reduction: str = "mean", form: str = "paper") -> torch.Tensor:
    """Norm regularisation (Eq. 3), averaged ("mean") or summed ("sum") over B.

    head_logits: [B, K, S].
    form "paper", Eq. 3 as printed: ``(1/K) sum_k ||A^k|| - ||A^avg||`` with L2 norms over S;
    >= 0 by the triangle inequality and 0 only when all heads are parallel, so it also pulls
    the heads towards each other, against Eq. 2.
    form "cmcs", the term of the cited completeness work [13] (Liu et al., CVPR 2019, and
    its released training code): each head's mean absolute value over S, n_k = ||A^k||_1 / S,
    and ``(1/K) sum_k |n_k - (1/K) sum_j n_j|``, the heads' mean deviation from their average
    scale. It is 0 whenever the heads have equal scale, whatever their shape: it balances
    the heads ("no single head dominates") without opposing their diversity.
    """
    _check_heads("norm_loss head_logits", head_logits)
    if form not in NORM_FORMS:
        raise ValueError(f"norm_loss: form must be one of {NORM_FORMS}, got {form!r}")
    if form == "paper":
        per_bag = head_logits.norm(dim=2).mean(dim=1) - head_logits.mean(dim=1).norm(dim=1)
    else:
        scale = head_logits.abs().mean(dim=2)  # [B, K]
        per_bag = (scale - scale.mean(dim=1, keepdim=True)).abs().mean(dim=1)
    return _reduce(per_bag, reduction, "norm_loss")


def completeness_terms(num_heads: int, diversity: bool) -> bool:
    """Whether Eq. 7 has its completeness terms: with K = 1 or without L_diver it is L_MIL alone,
    and alpha changes nothing."""
    return diversity and num_heads >= 2


def generator_loss(abnormal_heads: torch.Tensor, normal_heads: torch.Tensor, alpha: float = 10.0,
                   diversity: bool = True, on_normal: bool = False,
                   head_scores: str = "sigmoid", mil_reduction: str = "mean",
                   regularizer_reduction: str = "mean", norm_form: str = "paper") -> dict[str, torch.Tensor]:
    """Stage-1 objective (Eq. 7): L_MIL + alpha L_diver + alpha L_norm.

    abnormal_heads, normal_heads: [B, K, S] per-head logits of B abnormal and B normal videos.
    Diversity and norm terms act on abnormal bags only (Fig. 1's premise is several events in
    one abnormal video; on normal bags there is nothing to cover), or on both with
    ``on_normal=True``. `head_scores` says what A^k of Eq. 1-3 is: "sigmoid", each head's
    sigmoid score (Sec. 4.2: every head ends in a sigmoid), or "logits", the raw head output.
    `mil_reduction` combines Eq. 6 over the B pairs and `regularizer_reduction` Eq. 2-3 over
    the bags ("mean" or "sum"): a summed hinge with averaged regularisers weighs them by
    alpha / B. `norm_form` is Eq. 3 as printed ("paper") or as in [13] ("cmcs", `norm_loss`).
    With K = 1 or ``diversity=False`` the objective is the plain MIL loss (the baseline).
    Returns a dict with "loss" and its parts, for logging.
    """
    _check_heads("abnormal_heads", abnormal_heads)
    _check_heads("normal_heads", normal_heads)
    scores_a = torch.sigmoid(abnormal_heads.mean(dim=1))
    scores_n = torch.sigmoid(normal_heads.mean(dim=1))
    parts = {"mil": mil_ranking_loss(scores_a, scores_n, mil_reduction)}
    loss = parts["mil"]
    if completeness_terms(abnormal_heads.shape[1], diversity):
        if head_scores not in ("sigmoid", "logits"):
            raise ValueError(f"head_scores must be 'sigmoid' or 'logits', got {head_scores!r}")
        bags = torch.cat([abnormal_heads, normal_heads]) if on_normal else abnormal_heads
        if head_scores == "sigmoid":
            bags = torch.sigmoid(bags)
        parts["diversity"] = diversity_loss(bags, regularizer_reduction)
        parts["norm"] = norm_loss(bags, regularizer_reduction, norm_form)
        loss = loss + alpha * parts["diversity"] + alpha * parts["norm"]
    parts["loss"] = loss
    return parts


def clip_loss(logits: torch.Tensor, pseudo_labels: torch.Tensor, *,
              class_weights: tuple[float, float] | None = None, label_smoothing: float = 0.0) -> torch.Tensor:
    """Eq. 11: binary cross entropy of f_c against soft pseudo labels, on logits.

    logits, pseudo_labels: [N]. Averaged (not summed) over N, so the learning rate does not
    depend on how many reliable clips were mined.
    label_smoothing e: targets clamped to [e, 1 - e] first, y' = min(max(y, e), 1 - e), the
    form of MIST's stage-2 loss (a clamp, not the mix y (1 - e) + e / 2: soft labels inside
    the band are left as they are). class_weights (w_a, w_n): the class-weighted BCE of MIST,
    ``mean(-w_a y' log sigmoid(z) - w_n (1 - y') log(1 - sigmoid(z)))``; None is w_a = w_n = 1.
    The logarithms are taken of the logits (log-sigmoid), where MIST adds 1e-8 to probabilities.
    """
    if logits.shape != pseudo_labels.shape:
        raise ValueError(
            f"clip_loss: logits {tuple(logits.shape)} and pseudo_labels {tuple(pseudo_labels.shape)} differ"
        )
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"clip_loss: label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    targets = pseudo_labels.clamp(label_smoothing, 1.0 - label_smoothing) if label_smoothing else pseudo_labels
    if class_weights is None:
        return F.binary_cross_entropy_with_logits(logits, targets)
    w_abnormal, w_normal = class_weights
    if not (w_abnormal > 0 and w_normal > 0):
        raise ValueError(f"clip_loss: class_weights must be two positive numbers, got {class_weights!r}")
    return -(w_abnormal * targets * F.logsigmoid(logits) + w_normal * (1 - targets) * F.logsigmoid(-logits)).mean()
