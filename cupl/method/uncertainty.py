"""Uncertainty of pseudo labels by MC-Dropout (Sec. 3.3, Eq. 8-10).

M stochastic passes through a model trained with dropout give M pseudo labels per clip;
their mean is the pseudo label (Eq. 9) and their variance, with 1/M, the uncertainty
(Eq. 10). Gal & Ghahramani's estimator samples *masked parameters* W~^m per pass (Eq. 8):
dropping unit j of a layer's input is zeroing column j of its weight.

Exact-fast path. Both f_g and f_c are ``Linear -> ReLU -> dropout -> Linear -> dropout ->
Linear``: the first layer is deterministic, and after the ReLU everything is linear. So with
one mask per pass (m1 on the first hidden layer, m2 on the second), pass m of head k is

    A^{k,m}(x) = h_k(x) . v_{m,k} + c_{m,k},
    v_{m,k} = m1_{m,k} * (W2_k^T (m2_{m,k} * w3_k)),   c_{m,k} = w3_k . (m2_{m,k} * b2_k) + b3_k,

where h_k(x) = ReLU(W1_k x + b1_k) is computed once for all passes. All M passes of all
clips are then one matmul [N, K h1] x [K h1, M]. One mask per pass, shared by all clips, is
exactly Eq. 8 (a sampled parameter set W~^m per pass); for every single clip, the M samples
have the same distribution as with independent per-element dropout, so mean and variance
are the same estimators. The fast path and M naive full passes with the same masks give the
same numbers (tested); `benchmarks/mc_dropout.py` measures the speed-up against naive
train-mode passes.
"""

from __future__ import annotations

import torch

from cupl._checks import check_finite, check_ndim


def dropout_masks(passes: int, num_heads: int, hidden: tuple[int, int], p: float,
                  generator: torch.Generator | None = None):
    """Inverted-dropout masks per pass: (m1 [M, K, h1], m2 [M, K, h2]) in {0, 1/(1-p)}.

    Drawn on the CPU from `generator` so that CPU and CUDA runs see the same masks.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    keep = 1.0 - p
    shape1, shape2 = (passes, num_heads, hidden[0]), (passes, num_heads, hidden[1])
    m1 = (torch.rand(shape1, generator=generator) < keep).float() / keep
    m2 = (torch.rand(shape2, generator=generator) < keep).float() / keep
    return m1, m2


def collapse_tail(tail, m1: torch.Tensor, m2: torch.Tensor):
    """Fold the masked linear tail of every pass into one vector and bias per head and pass.

    tail: (w2 [K, h2, h1], b2 [K, h2], w3 [K, h2], b3 [K]); m1 [M, K, h1]; m2 [M, K, h2].
    returns: v [M, K, h1], c [M, K] with pass-m logit of head k = h_k . v[m, k] + c[m, k].
    """
    w2, b2, w3, b3 = tail
    u = m2 * w3  # [M, K, h2]
    v = torch.einsum("mkg,kgh->mkh", u, w2) * m1
    c = torch.einsum("mkg,kg->mk", u, b2) + b3
    return v, c


def mc_from_hidden(hidden: torch.Tensor, v: torch.Tensor, c: torch.Tensor):
    """MC-Dropout statistics from first-layer activations (Eq. 9-10).

    hidden: [N, K, h1] ReLU outputs; v [M, K, h1], c [M, K] from `collapse_tail`.
    returns: (mean [N], var [N]) of sigmoid(A^avg) over the M passes, var with 1/M.
    """
    k = hidden.shape[1]
    logits = hidden.flatten(1) @ v.flatten(1).to(hidden.dtype).T  # [N, M]
    return moments(torch.sigmoid(logits.float() / k + c.mean(dim=1)))


def mc_per_clip(hidden: torch.Tensor, tail, passes: int, p: float, generator: torch.Generator | None = None):
    """MC-Dropout with independent masks per clip and pass (Eq. 8 read per clip): (mean [N], var [N]).

    The alternative to one mask per pass shared by all clips (`dropout_masks`, `mc_from_hidden`):
    every clip draws its own W~^m, so the M samples of different clips are independent. Per
    clip the estimator has the same distribution either way; the tail cannot be folded, so
    each pass is a full pass through it. hidden: [N, K, h1] ReLU outputs; tail: (w2 [K, h2, h1],
    b2 [K, h2], w3 [K, h2], b3 [K]). Masks are drawn on the CPU from `generator`, pass by pass,
    m1 [N, K, h1] then m2 [N, K, h2], as inverted dropout with keep probability 1 - p.
    """
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    w2, b2, w3, b3 = tail
    hidden, keep = hidden.to(w2.dtype), 1.0 - p
    n, k, _ = hidden.shape
    probs = hidden.new_empty(n, passes)
    for m in range(passes):
        m1, m2 = ((torch.rand((n, k, w2.shape[dim]), generator=generator) < keep).to(hidden.device, hidden.dtype) / keep
                  for dim in (2, 1))
        z = torch.einsum("nkh,kgh->nkg", hidden * m1, w2) + b2
        logit = torch.einsum("nkg,kg->nk", z * m2, w3) + b3
        probs[:, m] = torch.sigmoid(logit.mean(dim=1))
    return moments(probs)


def moments(probs: torch.Tensor):
    """(mean [N], var [N]) over the M passes of probs [N, M], var with 1/M (Eq. 9-10).

    Taken about the first pass, so that M equal samples give a variance of exactly 0 (and
    clips with dropout off tie, as `reliable_indices` expects) rather than rounding noise.
    """
    shift = probs[:, :1]
    d = probs - shift
    d_mean = d.mean(dim=1)
    return shift[:, 0] + d_mean, (d - d_mean[:, None]).square().mean(dim=1)


def mc_dropout(model, x: torch.Tensor, passes: int, generator: torch.Generator | None = None,
               *, method: str = "fast", batch_size: int = 65536):
    """Pseudo labels and their uncertainty by MC-Dropout (Eq. 8-10).

    model: a `MultiHeadClassifier` (f_g) or `ClipClassifier` (f_c).
    x: [N, D] clip features (temporal clip features for f_c).
    passes: M stochastic forward passes (50 for f_g, 5 for f_c in the paper).
    method: "fast" (exact, see module docstring), "naive" (M full passes with the same masks,
        the reference the fast path is tested against) or "train" (M passes of the model in
        train mode with torch's per-element dropout, the usual implementation).
    returns: (mean [N], var [N]) of ``sigmoid(model.anomaly_logit(x))``; dropout is active
        and the model is otherwise used as in eval mode; its mode is left unchanged.
    """
    check_ndim("mc_dropout x", x, "[N, D]", ndim=2)
    check_finite("mc_dropout x", x)
    if method not in ("fast", "naive", "train"):
        raise ValueError(f"mc_dropout method must be 'fast', 'naive' or 'train', got {method!r}")
    if method == "train":
        return _mc_train_mode(model, x, passes, generator)
    m1, m2 = dropout_masks(passes, _num_heads(model), model.hidden, model.dropout, generator)
    m1, m2 = m1.to(x.device), m2.to(x.device)
    means, variances = [], []
    with torch.no_grad():
        tail = [t.detach() for t in model.head_weights()]
        if method == "fast":
            v, c = collapse_tail(tail, m1, m2)
        for chunk in x.split(batch_size):
            h = model.hidden1(chunk)
            mean, var = mc_from_hidden(h, v, c) if method == "fast" else _naive(h, tail, m1, m2)
            means.append(mean)
            variances.append(var)
    return torch.cat(means), torch.cat(variances)


def _num_heads(model) -> int:
    return getattr(model, "num_heads", 1)


def _naive(h: torch.Tensor, tail, m1: torch.Tensor, m2: torch.Tensor):
    """M full passes through the tail, one mask per pass, like Eq. 8 read literally."""
    w2, b2, w3, b3 = tail
    probs = []
    for m in range(m1.shape[0]):
        z = torch.einsum("nkh,kgh->nkg", h * m1[m], w2) + b2
        logit = torch.einsum("nkg,kg->nk", z * m2[m], w3) + b3
        probs.append(torch.sigmoid(logit.mean(dim=1)))
    return moments(torch.stack(probs, dim=1))


def _mc_train_mode(model, x: torch.Tensor, passes: int, generator: torch.Generator | None):
    was_training = model.training
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    devices = [x.device] if x.device.type == "cuda" else []
    try:
        model.train()
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            probs = torch.stack([torch.sigmoid(model.anomaly_logit(x)) for _ in range(passes)], dim=1)
    finally:
        model.train(was_training)
    return moments(probs)
