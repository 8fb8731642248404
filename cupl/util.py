"""Small helpers every layer uses, one per job: reading a typed value, tensors to numpy, progress."""

from __future__ import annotations

import ast
import re

import numpy as np

# repr of a numpy scalar under numpy >= 2, e.g. np.float64(0.25)
_NUMPY_SCALAR = re.compile(r"^np\.\w+\((.*)\)$", re.DOTALL)


def parse_literal(text: str, *, strict: bool = False):
    """The Python literal `text` spells ('0.25', 'np.float64(0.25)', "'x'", '(1, 2)').

    strict=False: text that is no literal is returned as the string itself (a command-line
    value such as `sigmoid`); strict=True: returns None instead.
    """
    stripped = text.strip()
    match = _NUMPY_SCALAR.match(stripped)
    if match:
        stripped = match.group(1)
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None if strict else text


def to_numpy(x) -> np.ndarray:
    """A tensor or array-like as a numpy array on the host; half-precision tensors as float32
    (numpy has no bfloat16)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.dtype.is_floating_point and x.element_size() < 4:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def progress(iterable, enabled: bool, **kw):
    """`iterable` with a tqdm progress bar when `enabled` (keyword arguments go to tqdm)."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, **kw)
