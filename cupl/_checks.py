"""Input checks shared by the method's functions: a wrong shape is a ValueError naming both shapes."""

from __future__ import annotations

import torch


def check_ndim(name: str, x, expected: str, ndim: int | None = None, min_ndim: int | None = None):
    """Raise ValueError unless `x` has `ndim` (or at least `min_ndim`) dimensions."""
    shape = tuple(x.shape)
    if (ndim is not None and len(shape) != ndim) or (min_ndim is not None and len(shape) < min_ndim):
        raise ValueError(f"{name}: expected shape {expected}, got {shape}")


def check_finite(name: str, x: torch.Tensor):
    if x.numel() == 0:
        return
    # min and max are finite exactly when every value is (NaN propagates): no [N] bool mask,
    # which at paper scale would be as large as the features
    lo, hi = torch.aminmax(x)
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name}: {bad} non-finite values (NaN or inf) in tensor of shape {tuple(x.shape)}")


def check_nonempty(name: str, x, axis: int = 0):
    if x.shape[axis] == 0:
        raise ValueError(f"{name}: empty along axis {axis}, got shape {tuple(x.shape)}")
