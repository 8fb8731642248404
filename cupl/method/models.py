"""The two classifiers of the method.

`MultiHeadClassifier` is the completeness-enhanced pseudo-label generator f_g (Sec. 3.2):
K parallel heads, each FC 512 -> ReLU -> dropout -> FC 128 -> dropout -> FC 1 (Sec. 4.2).
`ClipClassifier` is the final clip classifier f_c (Sec. 3.3): FC 512 -> ReLU -> dropout ->
FC 32 -> dropout -> FC 1 (or 2, the released checkpoint's softmax head), on temporal clip
features [c_t, mean(c_{t-w} .. c_{t-1})].

Both share one shape, which `cupl.uncertainty` exploits: the only nonlinearity is the ReLU
after the first layer; dropout follows it and the (linear) second layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


# Training-time dropout draws its masks from 16-bit slices of 64-bit random words: four mask
# entries per generator call, where `bernoulli_` makes one call per entry and took half of a
# stage-1 step on the CPU. The keep probability is quantised to 1/65536 (0.4 -> 26214/65536,
# off by 6e-6) and the scale is its exact inverse, so the masked output stays unbiased.
_LEVELS = 1 << 16


def dropout_mask(shape, p: float, *, device=None, generator: torch.Generator | None = None,
                 dtype=torch.float32) -> torch.Tensor:
    """An inverted-dropout mask of `shape`: each entry 0, or 1 / q with probability q ~= 1 - p.

    q is 1 - p rounded to a multiple of 1/65536. Entries are independent and drawn from
    `generator` (torch's default generator of `device` when None), in the order of a
    contiguous tensor of `shape`, whatever the layout of the input it will multiply.
    """
    kept = _kept_levels(p)
    n = math.prod(shape)
    words = torch.randint(-(1 << 63), (1 << 63) - 1, (_words(n),), dtype=torch.int64, device=device,
                          generator=generator)
    return _mask_from_words(words, n, shape, kept, dtype)


def dropout_masks_stacked(count: int, shape, p: float, generators: list, *, device=None,
                          dtype=torch.float32) -> list[torch.Tensor]:
    """`dropout_mask(shape, p, generator=generators[n])` for several shapes and models at once:
    masks[i][n] [*shape[i]] of models n = 0..count-1, model n drawing its masks in the order of
    `shape` from its generator, as it would alone. The same bits as one call per model and
    shape; the words are drawn into one buffer per shape and compared and scaled together.
    """
    if len(generators) != count:
        raise ValueError(f"dropout_masks_stacked: {count} models but {len(generators)} generators")
    kept = _kept_levels(p)
    sizes = [math.prod(s) for s in shape]
    words = [torch.empty(count, _words(n), dtype=torch.int64, device=device) for n in sizes]
    for m, generator in enumerate(generators):
        for buffer, n in zip(words, sizes):
            torch.randint(-(1 << 63), (1 << 63) - 1, (_words(n),), dtype=torch.int64, device=device,
                          generator=generator, out=buffer[m])
    return [_mask_from_words(w, n, (count, *s), kept, dtype) for w, n, s in zip(words, sizes, shape)]


def _kept_levels(p: float) -> int:
    kept = round((1.0 - p) * _LEVELS)
    if not 0 < kept <= _LEVELS:
        raise ValueError(f"dropout_mask: p must leave some units, got p={p!r}")
    return kept


def _words(n: int) -> int:
    return (n + 3) // 4  # four 16-bit mask entries per 64-bit word


def _mask_from_words(words: torch.Tensor, n: int, shape, kept: int, dtype) -> torch.Tensor:
    """The first n 16-bit slices of each row of `words` ([..., W] int64) as a mask of `shape`."""
    keep = words.view(torch.int16)[..., :n].reshape(shape) < kept - (_LEVELS >> 1)
    return keep.to(dtype).mul_(_LEVELS / kept)


def dropout(x: torch.Tensor, p: float, training: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout, as `F.dropout`, with masks from `dropout_mask`."""
    if not training or p == 0.0:
        return x
    return x * dropout_mask(x.shape, p, device=x.device, generator=generator, dtype=x.dtype)


class Dropout(nn.Dropout):
    """`nn.Dropout` with masks from `dropout_mask` (no parameters: checkpoints are unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def _check_last_dim(name: str, x: torch.Tensor, in_dim: int):
    if x.ndim < 1 or x.shape[-1] != in_dim:
        raise ValueError(f"{name}: expected input [..., {in_dim}], got {tuple(x.shape)}")


class MultiHeadClassifier(nn.Module):
    """f_g: K heads of three FC layers, evaluated together (Eq. 1, 4).

    forward(x [..., D]) -> [..., K] per-head logits A^k.
    anomaly_logit(x [..., D]) -> [...] A^avg, the head average before the sigmoid of Eq. 4.

    The K first layers are one `Linear(D, K * h1)`; the later layers are per-head weight
    stacks applied with einsum, so K heads cost one matmul, not K.
    """

    def __init__(self, in_dim: int = 2048, num_heads: int = 2, hidden=(512, 128), dropout: float = 0.6):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        h1, h2 = hidden
        self.in_dim, self.num_heads, self.hidden, self.dropout = in_dim, num_heads, (h1, h2), dropout
        self.fc1 = nn.Linear(in_dim, num_heads * h1)
        self.w2 = nn.Parameter(torch.empty(num_heads, h2, h1))
        self.b2 = nn.Parameter(torch.empty(num_heads, h2))
        self.w3 = nn.Parameter(torch.empty(num_heads, h2))
        self.b3 = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    def reset_parameters(self):
        """Xavier-uniform weights and zero biases, per head, as in the MIL ranking models."""
        k, (h1, h2) = self.num_heads, self.hidden
        for i in range(k):
            nn.init.xavier_uniform_(self.fc1.weight.data[i * h1:(i + 1) * h1])
            nn.init.xavier_uniform_(self.w2.data[i])
        bound = math.sqrt(6.0 / (h2 + 1))
        nn.init.uniform_(self.w3, -bound, bound)
        for b in (self.fc1.bias, self.b2, self.b3):
            nn.init.zeros_(b)

    def hidden1(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] -> [..., K, h1]: the deterministic part before the first dropout."""
        _check_last_dim("MultiHeadClassifier input", x, self.in_dim)
        h = F.relu(self.fc1(x))
        return h.view(*h.shape[:-1], self.num_heads, self.hidden[0])

    def head_weights(self):
        """The linear tail per head: (w2 [K, h2, h1], b2 [K, h2], w3 [K, h2], b3 [K])."""
        return self.w2, self.b2, self.w3, self.b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = dropout(self.hidden1(x), self.dropout, self.training)
        z = torch.einsum("...kh,kgh->...kg", h, self.w2) + self.b2
        z = dropout(z, self.dropout, self.training)
        return torch.einsum("...kg,kg->...k", z, self.w3) + self.b3

    def anomaly_logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x).mean(-1)


class ClipClassifier(nn.Module):
    """f_c: three FC layers with dropout 0.8 (Sec. 4.2), on temporal clip features.

    forward(x [..., D]) -> [...] anomaly logit. With `two_way=True` the last layer has two
    outputs like the released checkpoint, and the logit is z_1 - z_0, so that
    ``sigmoid(logit) == softmax(z)[..., 1]`` and BCE on it equals the 2-way cross entropy.
    `regressor` keeps the released layout: indices 0 (Linear), 3 (Linear), 5 (Linear).
    """

    def __init__(self, in_dim: int = 4096, hidden=(512, 32), dropout: float = 0.8, two_way: bool = False):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        h1, h2 = hidden
        self.in_dim, self.hidden, self.dropout, self.two_way = in_dim, (h1, h2), dropout, two_way
        self.regressor = nn.Sequential(
            nn.Linear(in_dim, h1), nn.ReLU(), Dropout(dropout),
            nn.Linear(h1, h2), Dropout(dropout),
            nn.Linear(h2, 2 if two_way else 1),
        )
        for i in (0, 3, 5):
            nn.init.xavier_uniform_(self.regressor[i].weight)
            nn.init.zeros_(self.regressor[i].bias)

    def hidden1(self, x: torch.Tensor) -> torch.Tensor:
        """[..., D] -> [..., 1, h1]: the deterministic part, shaped like a single head."""
        _check_last_dim("ClipClassifier input", x, self.in_dim)
        return F.relu(self.regressor[0](x)).unsqueeze(-2)

    def logit_from_hidden(self, h: torch.Tensor) -> torch.Tensor:
        """[..., h1] first-layer outputs (after the ReLU) -> [...] anomaly logit: the rest of
        `regressor`, so that ``logit_from_hidden(hidden1(x)[..., 0, :]) == forward(x)``."""
        z = self.regressor[2:](h)
        return z[..., 1] - z[..., 0] if self.two_way else z[..., 0]

    def context_weights(self):
        """The first layer split over a temporal feature [c_t, m_t] (Sec. 3.3):
        (W_a [h1, D/2], W_b [h1, D/2], b1 [h1]) with W1 [c; m] + b1 = W_a c + W_b m + b1."""
        fc1 = self.regressor[0]
        half = self.in_dim // 2
        return fc1.weight[:, :half], fc1.weight[:, half:], fc1.bias

    def head_weights(self):
        """The linear tail as one head: (w2 [1, h2, h1], b2 [1, h2], w3 [1, h2], b3 [1])."""
        fc2, fc3 = self.regressor[3], self.regressor[5]
        w3, b3 = fc3.weight, fc3.bias
        if self.two_way:
            w3, b3 = w3[1:] - w3[:1], b3[1:] - b3[:1]
        return fc2.weight[None], fc2.bias[None], w3, b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_last_dim("ClipClassifier input", x, self.in_dim)
        z = self.regressor(x)
        return z[..., 1] - z[..., 0] if self.two_way else z[..., 0]

    def anomaly_logit(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)
