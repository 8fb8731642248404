"""Sweeps as one batched model: N runs of Algorithm 1 trained side by side (`run_many`).

A sweep (alpha x seeds, the rows of Table 4 x seeds) is many small runs. Runs that share
every shape are trained here as one model: stage 1 holds N generators f_g as weight stacks
[N, ...] with one bmm per layer and one Adadelta step for all (Adadelta is elementwise, so
one step on the stacks is N steps); MC-Dropout and scoring take every model's first layer
in one matmul over the shared clips; f_c trains N classifiers, each on its own reliable set
of its own size, with per-model weights on the loss and per-model masks on the optimiser
(`StackedAdam`), so that a model with fewer batches takes exactly its own steps.

Each model reproduces its run alone (`cupl.experiments.train.run`). Every model has the run's two
streams: `explicit`, the seeded `torch.Generator` of bag draws, MC masks, random selections
and shuffles, and `glob`, a generator holding what the global RNG holds in `run` (weight
init and training-time dropout), seeded from `config.seed`, then `seed + 7919` for stage 2.
Training dropout is drawn as `cupl.method.models.dropout` draws it (`dropout_mask` of the
input's shape). Models whose `glob` streams are in the same state and
draw the same shapes (same seed, same reliable-set sizes) share the draws: an alpha grid
draws each seed's dropout masks once. On the CPU the batched runs equal the runs alone up to
float rounding (the batched matmuls add in another order; f_c's Adam is the fused form), which
long runs can amplify; `benchmarks/sweep.py` measures both the time and the AUC differences.
Only the settings in `BATCHED` are reproduced; `run_many` refuses others.
On CUDA `run` draws
dropout from the CUDA RNG, and a device generator seeded alike stands in here (same
distribution, other masks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from cupl._checks import check_finite
from cupl.config import ClipConfig, RunConfig, to_dict
from cupl.data.split import Split
from cupl.experiments.cache import stage1_key
from cupl.experiments.steps import autocast as _autocast
from cupl.experiments.steps import feature_dtype, memory_table
from cupl.experiments.steps import sync as _sync
from cupl.experiments.train import RunResult, prepare_split, select_reliable
from cupl.method.evaluate import evaluate_scores
from cupl.method.mining import context_features, context_memory
from cupl.method.models import ClipClassifier, MultiHeadClassifier, dropout_mask
from cupl.method.pooling import segment_split
from cupl.method.uncertainty import collapse_tail, dropout_masks, moments
from cupl.util import progress as progress_bar

STAGE2_SEED_OFFSET = 7919  # `run` reseeds both streams with seed + 7919 after stage 1


def run_many(configs, train: Split, test: Split, *, oracle: torch.Tensor | None = None, keep_arrays: bool = False,
             progress: bool = False, max_models: int | None = None,
             generators: dict | None = None) -> list[RunResult]:
    """`cupl.experiments.train.run` of every config, as batched models; results in the order of `configs`.

    Configs that differ only in seed, generator.alpha and self_train.selection form one batch
    (`batch_key`); others go to batches of their own. Runs with the same stage-1 settings and
    seed share one trained f_g (`stage1_key`, `cupl.experiments.cache.stage1_key`);
    `generators` maps such keys to f_g trained before (read, and extended with the new ones).
    max_models caps the models of one batch
    (memory: f_c keeps every model's memory table). Each result's `timings` holds the batch's
    stage times divided by the batch's models, so that they add up to the sweep's time.
    """
    configs = [c.validate() for c in configs]
    if not configs:
        return []
    for config in configs:
        unsupported = not_batched(config)
        if unsupported:
            raise ValueError(f"run_many does not reproduce run() with {', '.join(unsupported)}; "
                             "run these configurations with cupl.experiments.train.run")
    check_finite("train features", train.features)
    check_finite("test features", test.features)
    if max_models is not None and max_models < 1:
        raise ValueError(f"run_many: max_models must be >= 1, got {max_models}")
    batches: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        batches.setdefault(batch_key(config), []).append(i)
    results: list[RunResult | None] = [None] * len(configs)
    generators = {} if generators is None else generators
    devices = sorted({c.device for c in configs if torch.device(c.device).type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        for members in batches.values():
            size = max_models or len(members)
            for lo in range(0, len(members), size):
                chunk = members[lo:lo + size]
                out = _run_batch([configs[i] for i in chunk], train, test, oracle, keep_arrays, progress, generators)
                for i, result in zip(chunk, out):
                    results[i] = result
    return results


# The settings the batched models reproduce; any other value of these keys goes to `run`.
BATCHED = {"generator.mil_reduction": "mean", "generator.regularizer_reduction": "mean",
           "generator.norm_form": "paper", "clip.budget": "epochs", "clip.batches": "shuffled",
           "clip.loss": "bce", "clip.label_smoothing": 0.0, "self_train.refine": "none",
           "self_train.mc_masks": "shared"}


def not_batched(config: RunConfig) -> list[str]:
    """The settings of `config` that the batched models do not reproduce ("key = value")."""
    flat = {f"{section}.{key}": value for section, values in to_dict(config).items()
            if isinstance(values, dict) for key, value in values.items()}
    return [f"{key} = {flat[key]!r}" for key, want in BATCHED.items() if flat[key] != want]


def batch_key(config: RunConfig) -> str:
    """What the runs of one batch must share: everything but seed, alpha and the selection rule."""
    data = to_dict(config)
    del data["seed"], data["generator"]["alpha"], data["self_train"]["selection"]
    return repr(sorted(data.items()))



@dataclass
class Streams:
    """One model's random streams as `run` has them (module docstring). explicit: CPU
    generator of explicit draws; glob: CPU generator standing for the global RNG (init and,
    on the CPU, training dropout); dropout: training dropout's generator (glob on the CPU)."""

    explicit: torch.Generator
    glob: torch.Generator
    dropout: torch.Generator

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> "Streams":
        glob = torch.Generator().manual_seed(seed)
        dropout = glob if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
        return cls(torch.Generator().manual_seed(seed), glob, dropout)

    def follow(self, leader: "Streams"):
        """Take the leader's global-RNG state (after the leader drew what this model would have)."""
        self.glob.set_state(leader.glob.get_state())
        if self.dropout is not self.glob:
            self.dropout.set_state(leader.dropout.get_state())


def init_from(glob: torch.Generator, make):
    """make() with the global RNG in `glob`'s state, as `run` inits its models; `glob` advances."""
    torch.set_rng_state(glob.get_state())
    out = make()
    glob.set_state(torch.get_rng_state())
    return out


def generator_dropout_shapes(cfg, batch: int, dim: int) -> list[tuple]:
    """Shapes of the inputs of f_g's two dropout sites in `MultiHeadClassifier.forward` on
    `batch` bags, worked out on meta tensors with the same operations."""
    model = MultiHeadClassifier(dim, cfg.num_heads, cfg.hidden, cfg.dropout).to("meta")
    h = model.hidden1(torch.empty(batch, cfg.num_segments, dim, device="meta"))
    z = torch.einsum("...kh,kgh->...kg", h, model.w2) + model.b2
    return [tuple(t.shape) for t in (h, z)]


def stream_groups(keys) -> tuple[list[int], list[int]]:
    """(leaders, group of each model): models with equal keys share the leader's draws."""
    first: dict = {}
    group = [first.setdefault(k, len(first)) for k in keys]
    leaders = [group.index(g) for g in range(len(first))]
    return leaders, group





# ---------------------------------------------------------------- stage 1


def stack_parameters(models: list[torch.nn.Module], names, device) -> list[torch.Tensor]:
    """The parameters `names` of N models of one layout, each stacked along a new leading
    dimension [N, ...] on `device`, as one trainable tensor."""
    return [torch.stack([dict(m.named_parameters())[n].detach() for m in models]).to(device).requires_grad_()
            for n in names]


def unstack_model(model: torch.nn.Module, names, params, n: int) -> torch.nn.Module:
    """`model` (a fresh instance of the layout) holding member n of stacked `params`, in eval mode."""
    model.load_state_dict({k: p[n].detach().cpu().clone() for k, p in zip(names, params)})
    return model.eval()


@dataclass
class StackedGenerators:
    """N generators f_g as weight stacks: fc1 [N, K h1, D] + [N, K h1], w2 [N, K, h2, h1],
    b2 [N, K, h2], w3 [N, K, h2], b3 [N, K] (the `MultiHeadClassifier` layout per model)."""

    in_dim: int
    num_heads: int
    hidden: tuple[int, int]
    dropout: float
    params: list[torch.Tensor]

    NAMES = ("fc1.weight", "fc1.bias", "w2", "b2", "w3", "b3")

    @classmethod
    def stack(cls, models: list[MultiHeadClassifier], device) -> "StackedGenerators":
        m = models[0]
        return cls(m.in_dim, m.num_heads, m.hidden, m.dropout, stack_parameters(models, cls.NAMES, device))

    def model(self, n: int) -> MultiHeadClassifier:
        fresh = MultiHeadClassifier(self.in_dim, self.num_heads, self.hidden, self.dropout)
        return unstack_model(fresh, self.NAMES, self.params, n)

    def forward(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        """x [N, B, S, D] -> [N, B, S, K] head logits; noise: (m1, m2) multiplying the two
        dropout sites, shaped [N, B, S, K, h] or [G, 1, B, S, K, h] for N = G x (N / G) models."""
        w1, b1, w2, b2, w3, b3 = self.params
        n, b, s, _ = x.shape
        h = F.relu(torch.baddbmm(b1[:, None], x.flatten(1, 2), w1.transpose(1, 2)))
        h = _apply(h.view(n, b, s, self.num_heads, -1), noise, 0)
        z = torch.einsum("nbskh,nkgh->nbskg", h, w2) + b2[:, None, None]
        z = _apply(z, noise, 1)
        return torch.einsum("nbskg,nkg->nbsk", z, w3) + b3[:, None, None]

    def first_layer(self, x: torch.Tensor) -> torch.Tensor:
        """x [R, D] -> [N, R, K h1]: every model's ReLU(W1 x + b1) in one matmul."""
        w1, b1 = self.params[0], self.params[1]
        h = F.relu(F.linear(x, w1.flatten(0, 1), b1.flatten()))
        return h.view(x.shape[0], len(w1), -1).transpose(0, 1)

    def tail(self, n: int):
        return tuple(p[n] for p in self.params[2:])


def _apply(h: torch.Tensor, noise, site: int) -> torch.Tensor:
    if noise is None:
        return h
    m = noise[site]
    if m.shape[0] == h.shape[0]:
        return h * m
    return (h.view(m.shape[0], -1, *h.shape[1:]) * m).view(h.shape)


def generator_losses(abnormal: torch.Tensor, normal: torch.Tensor, alpha: torch.Tensor, cfg) -> torch.Tensor:
    """Eq. 7 per model, as `cupl.method.losses.generator_loss`: [N] losses from [N, B, K, S] head logits
    of B abnormal and B normal videos per model; alpha [N]."""
    scores_a = torch.sigmoid(abnormal.mean(dim=2))
    scores_n = torch.sigmoid(normal.mean(dim=2))
    loss = F.relu(1.0 - scores_a.max(dim=2).values + scores_n.max(dim=2).values).mean(dim=1)
    k = abnormal.shape[2]
    if cfg.diversity and k >= 2:
        bags = torch.cat([abnormal, normal], dim=1) if cfg.diversity_on_normal else abnormal
        if cfg.head_scores == "sigmoid":
            bags = torch.sigmoid(bags)
        p = F.normalize(torch.softmax(bags, dim=3), dim=3)
        cos = p @ p.transpose(2, 3)  # [N, B, K, K]
        pairs = torch.triu_indices(k, k, offset=1, device=bags.device)
        diversity = cos[:, :, pairs[0], pairs[1]].flatten(1).mean(dim=1)
        per_head = bags.norm(dim=3).mean(dim=2)
        norm = (per_head - bags.mean(dim=2).norm(dim=2)).mean(dim=1)
        loss = loss + alpha * diversity + alpha * norm
    return loss


def train_generators(configs: list[RunConfig], train: Split, *, amp: bool = False,
                     progress: bool = False) -> list[MultiHeadClassifier]:
    """Stage 1 of every config (same generator shapes; any seed and alpha) as one batched model.

    Each model is the f_g `cupl.train.train_generator` trains for its config under `run`'s
    streams: init under `torch.manual_seed(seed)`, bags drawn from `Generator().manual_seed(seed)`,
    dropout masks from the global stream after init. Models of one seed share the init, the
    bags and the masks (all drawn from identical states), so those are drawn once per seed.
    """
    cfg = configs[0].generator
    device = train.features.device
    labels = train.labels.cpu()
    abnormal, normal = torch.nonzero(labels == 1).flatten(), torch.nonzero(labels == 0).flatten()
    if len(abnormal) == 0 or len(normal) == 0:
        raise ValueError(f"train_generators: needs abnormal and normal videos, got {len(abnormal)} abnormal "
                         f"and {len(normal)} normal")
    segments = segment_split(train.features, train.offsets, cfg.num_segments)  # [V, S, C, D]
    num_crops, dim = segments.shape[2], segments.shape[3]
    # models of one seed next to each other, so masks broadcast over equal groups without copies
    order = sorted(range(len(configs)), key=lambda i: configs[i].seed)
    seeds = [configs[i].seed for i in order]
    leaders, group = stream_groups(seeds)
    b = cfg.batch_size
    inits, streams, videos, crops = [], [], [], []
    for i in leaders:
        seed = seeds[i]
        torch.manual_seed(seed)
        inits.append(MultiHeadClassifier(dim, cfg.num_heads, cfg.hidden, cfg.dropout))
        s = Streams.seeded(seed, device)
        s.glob.set_state(torch.get_rng_state())
        streams.append(s)
        draws = [(abnormal[torch.randint(len(abnormal), (b,), generator=s.explicit)],
                  normal[torch.randint(len(normal), (b,), generator=s.explicit)],
                  torch.randint(num_crops, (2 * b,), generator=s.explicit)) for _ in range(cfg.steps)]
        videos.append(torch.stack([torch.cat([a, n]) for a, n, _ in draws]))  # [steps, 2B]
        crops.append(torch.stack([c for _, _, c in draws]))
    index = torch.tensor(group)
    videos = torch.stack(videos, dim=1)[:, index].to(device)  # [steps, N, 2B]
    crops = torch.stack(crops, dim=1)[:, index].to(device)
    stacked = StackedGenerators.stack([inits[g] for g in group], device)
    optimizer = torch.optim.Adadelta(stacked.params, lr=cfg.lr, foreach=True)
    alpha = torch.tensor([float(configs[i].generator.alpha) for i in order], device=device)
    sizes = [group.count(g) for g in range(len(leaders))]
    broadcast = len(set(sizes)) == 1 and len(leaders) < len(order)
    p = cfg.dropout
    shapes = generator_dropout_shapes(cfg, 2 * b, dim)
    for step in progress_bar(range(cfg.steps), progress, leave=False, desc="stage 1 (f_g), batched"):
        v, c = videos[step], crops[step]
        x = segments[v, :, c]  # [N, 2B, S, D]
        noise = None
        if p > 0:
            dtype = torch.bfloat16 if amp and device.type == "cuda" else torch.float32  # the autocast output's
            per_group = [[dropout_mask(shape, p, device=device, generator=s.dropout, dtype=dtype) for shape in shapes]
                         for s in streams]
            # `dropout` draws site 1 then site 2 of a step; each leader's stream draws in that order
            noise = tuple(torch.stack([m[site] for m in per_group]) for site in (0, 1))
            noise = tuple(m[:, None] if broadcast else m[index] for m in noise)
        with _autocast(device, amp):
            heads = stacked.forward(x, noise).float().transpose(2, 3)  # [N, 2B, K, S]
        loss = generator_losses(heads[:, :b], heads[:, b:], alpha, cfg).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    out: list[MultiHeadClassifier | None] = [None] * len(configs)
    for n, i in enumerate(order):
        out[i] = stacked.model(n)
    return out


# ---------------------------------------------------------------- f_c


@dataclass
class StackedClassifiers:
    """N clip classifiers f_c as weight stacks: W1 [N, h1, 2D], b1 [N, h1], W2 [N, h2, h1],
    b2 [N, h2], W3 [N, O, h2], b3 [N, O] (O = 2 with two_way), the `ClipClassifier` layers."""

    in_dim: int
    hidden: tuple[int, int]
    dropout: float
    two_way: bool
    params: list[torch.Tensor]

    NAMES = ("regressor.0.weight", "regressor.0.bias", "regressor.3.weight", "regressor.3.bias",
             "regressor.5.weight", "regressor.5.bias")

    @classmethod
    def stack(cls, models: list[ClipClassifier], device) -> "StackedClassifiers":
        m = models[0]
        return cls(m.in_dim, m.hidden, m.dropout, m.two_way, stack_parameters(models, cls.NAMES, device))

    def model(self, n: int) -> ClipClassifier:
        return unstack_model(ClipClassifier(self.in_dim, self.hidden, self.dropout, self.two_way), self.NAMES,
                             self.params, n)

    def logits(self, x: torch.Tensor, noise=None) -> torch.Tensor:
        """x [N, B, 2D] -> [N, B] anomaly logits; noise: (m1 [N, B, h1], m2 [N, B, h2]) or None (eval)."""
        w1, b1 = self.params[0], self.params[1]
        return self.logits_from_hidden(F.relu(torch.baddbmm(b1[:, None], x, w1.transpose(1, 2))), noise)

    def logits_from_hidden(self, h: torch.Tensor, noise=None) -> torch.Tensor:
        """h [N, B, h1] (after the ReLU) -> [N, B], as `ClipClassifier.logit_from_hidden`."""
        _, _, w2, b2, w3, b3 = self.params
        if noise is not None:
            h = h * noise[0]
        z = torch.baddbmm(b2[:, None], h, w2.transpose(1, 2))
        if noise is not None:
            z = z * noise[1]
        out = torch.baddbmm(b3[:, None], z, w3.transpose(1, 2))
        return out[..., 1] - out[..., 0] if self.two_way else out[..., 0]

    def tail(self, n: int):
        """Model n's linear tail as one head, as `ClipClassifier.head_weights`."""
        _, _, w2, b2, w3, b3 = (p[n] for p in self.params)
        if self.two_way:
            w3, b3 = w3[1:] - w3[:1], b3[1:] - b3[:1]
        return w2[None], b2[None], w3, b3


class StackedAdam:
    """Adam with L2 weight decay on weight stacks [N, ...], one step count per model: each
    step updates the slices of the `active` models only, so each model takes exactly its own
    steps, as `torch.optim.Adam` does for it alone.

    One fused kernel (`torch._fused_adam_`) over the active models' slices: a model's slices
    are updated in one pass each, while they are in cache; on the CPU an elementwise op on
    the whole stacks reads every weight from memory again per op and was slower than N
    separate optimisers. The fused step rounds as Adam's fused form does (within 1e-7 of the
    foreach form that `cupl.train` uses).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float = 0.0,
                 betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.weight_decay, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.state_steps = [torch.zeros((), dtype=torch.float32, device=params[0].device) for _ in params[0]]

    @property
    def steps(self) -> list[int]:
        return [int(s) for s in self.state_steps]

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: list[bool]):
        models = [n for n, a in enumerate(active) if a]
        if not models:
            return
        steps = [self.state_steps[n] for n in models]
        torch._foreach_add_(steps, 1)

        def slices(stacks):
            return [t[n] for t in stacks for n in models]

        torch._fused_adam_(slices(self.params), slices([p.grad for p in self.params]), slices(self.exp_avg),
                           slices(self.exp_avg_sq), [], steps * len(self.params), lr=self.lr,
                           beta1=self.betas[0], beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps,
                           amsgrad=False, maximize=False)


def epoch_batches(num_samples: int, cfg: ClipConfig, generator: torch.Generator) -> list[torch.Tensor]:
    """The sample batches of one model's f_c training, in order (today's rule, as
    `cupl.experiments.train.train_clip_classifier`): `epochs` passes, each a fresh permutation of the
    model's samples drawn from its generator, cut into batches of `batch_size`."""
    batches = []
    for _ in range(cfg.epochs):
        batches += list(torch.randperm(num_samples, generator=generator).split(cfg.batch_size))
    return batches


def train_clip_classifiers(train: Split, labels: torch.Tensor, selected: torch.Tensor, cfg: ClipConfig, window: int,
                           streams: list[Streams], counts_history: list[tuple], *,
                           models: StackedClassifiers | None = None, seeds=None, amp: bool = False,
                           progress: bool = False) -> StackedClassifiers:
    """f_c of N models (Algorithm 1, l. 19-22, Eq. 11), each on its own reliable set.

    labels [N, clips], selected [N, clips] bool. Each model's batches come from its own
    explicit stream (`epoch_batches`); then one batched step per optimiser step, every model
    weighted by 1 / its batch size and masked out of the steps past its own last batch.
    Models whose global streams are in one state (same seed, same set sizes so far:
    `counts_history`) share the init and the dropout masks.
    """
    device = train.features.device
    num_models, num_crops = len(labels), train.features.shape[1]
    rows = [torch.nonzero(s).flatten() for s in selected]
    if any(len(r) == 0 for r in rows):
        raise ValueError("train_clip_classifiers: a model has no clip selected")
    memory = torch.cat([memory_table(train, r, window) for r in rows])  # [sum S, C, D]
    all_rows = torch.cat(rows)
    targets = torch.cat([y[r] for y, r in zip(labels, rows)])
    base = torch.tensor([0] + [len(r) for r in rows]).cumsum(0)[:-1]
    schedules = [epoch_batches(len(r) * num_crops, cfg, s.explicit) for r, s in zip(rows, streams)]
    num_steps = max(len(s) for s in schedules)
    width = max(len(b) for s in schedules for b in s)
    sample = torch.full((num_steps, num_models, width), -1, dtype=torch.long)
    for n, schedule in enumerate(schedules):
        for t, batch in enumerate(schedule):
            sample[t, n, :len(batch)] = batch
    sizes = (sample >= 0).sum(dim=2)  # [T, N]
    valid = sample >= 0
    clip = base[None, :, None] + sample.clamp(min=0) // num_crops  # into memory / all_rows
    crop = sample.clamp(min=0) % num_crops
    weight = valid / sizes.clamp(min=1)[..., None]  # BCE averaged over each model's own batch
    clip, crop, weight = clip.to(device), crop.to(device), weight.to(device)
    all_rows, targets = all_rows.to(device), targets.to(device)

    leaders, group = stream_groups(counts_history)
    if models is None:
        inits = [init_from(streams[i].glob, lambda: ClipClassifier(2 * train.features.shape[2], cfg.hidden,
                                                                    cfg.dropout, cfg.two_way)) for i in leaders]
        models = StackedClassifiers.stack([inits[g] for g in group], device)
    optimizer = StackedAdam(models.params, cfg.lr, cfg.weight_decay)
    p, (h1, h2) = cfg.dropout, cfg.hidden
    members = [torch.tensor([n for n in range(num_models) if group[n] == g], device=device) for g in range(len(leaders))]
    for t in progress_bar(range(num_steps), progress, leave=False, desc="f_c, batched"):
        active = (sizes[t] > 0).tolist()
        noise = None
        if p > 0:
            noise = (torch.zeros(num_models, width, h1, device=device), torch.zeros(num_models, width, h2, device=device))
            for g, i in enumerate(leaders):
                b = int(sizes[t, i])
                if b:
                    for site, h in enumerate((h1, h2)):
                        noise[site][members[g], :b] = dropout_mask((b, h), p, device=device,
                                                                    generator=streams[i].dropout)
        c, r = crop[t], clip[t]
        x = torch.cat([train.features[all_rows[r], c], memory[r, c]], dim=-1)  # [N, B, 2D]
        with _autocast(device, amp):
            logits = models.logits(x, noise).float()
        loss = F.binary_cross_entropy_with_logits(logits, targets[r], reduction="none")
        loss = (loss * weight[t]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step(active)
    optimizer.zero_grad()
    for n, g in enumerate(group):
        if n != leaders[g]:
            streams[n].follow(streams[leaders[g]])
    return models


# ---------------------------------------------------------------- MC-Dropout and scoring


def first_layers(models, split: Split, window: int | None, batch_size: int, amp: bool):
    """Yield (lo, hi, h) over runs of clips, h [N, (hi - lo) C, h] = every model's first layer
    (after the ReLU) on every crop of clips lo..hi-1, as `cupl.train._first_layer` does per model:
    f_g on clip features (window None), f_c on temporal features (window w), projected when D > h1."""
    features, device = split.features, split.features.device
    num_models = len(models.params[0])
    rows = max(1, batch_size // (features.shape[1] * num_models))
    starts = None if window is None else split.starts
    project = window is not None and features.shape[-1] > models.hidden[0]
    for lo in range(0, split.num_clips, rows):
        hi = min(lo + rows, split.num_clips)
        with _autocast(device, amp):
            if window is None:
                h = models.first_layer(features[lo:hi].flatten(0, 1))
            else:
                w1, b1 = models.params[0], models.params[1]
                half = w1.shape[2] // 2
                if not project:
                    x = context_features(features, starts, torch.arange(lo, hi, device=device), window)
                    h = F.relu(F.linear(x.flatten(0, 1), w1.flatten(0, 1), b1.flatten()))
                else:
                    halo = max(lo - window, 0)
                    projected = F.linear(features[halo:hi], w1[:, :, half:].flatten(0, 1))  # [hi - halo, C, N h1]
                    local = torch.arange(lo - halo, hi - halo, device=device)
                    memory = context_memory(projected, starts[halo:hi] - halo, local, window)
                    h = F.relu(F.linear(features[lo:hi], w1[:, :, :half].flatten(0, 1), b1.flatten()) + memory)
                    h = h.flatten(0, 1)
                h = h.view(h.shape[0], num_models, -1).transpose(0, 1)
        yield lo, hi, h


def pseudo_labels_many(models, split: Split, masks: list[tuple], *, window: int | None = None,
                       batch_size: int = 65536, amp: bool = False):
    """`cupl.train.pseudo_labels` of N models (Eq. 8-10): masks[n] = (m1 [M, K, h1], m2 [M, K, h2])
    drawn by model n's stream. returns (labels [N, clips], uncertainty [N, clips]) float32."""
    device = split.features.device
    num_models = len(masks)
    with torch.no_grad():
        tails = [collapse_tail([t.detach().float() for t in models.tail(n)], m1.to(device), m2.to(device))
                 for n, (m1, m2) in enumerate(masks)]
        v = torch.stack([t[0].flatten(1) for t in tails])  # [N, M, K h1]
        c = torch.stack([t[1].mean(dim=1) for t in tails])  # [N, M]
        k = tails[0][0].shape[1]
        labels = torch.empty(num_models, split.num_clips, device=device)
        uncertainty = torch.empty(num_models, split.num_clips, device=device)
        for lo, hi, h in first_layers(models, split, window, batch_size, amp):
            logits = h @ v.to(h.dtype).transpose(1, 2)  # [N, R, M]
            mean, var = moments(torch.sigmoid(logits.float() / k + c[:, None]).flatten(0, 1))
            labels[:, lo:hi] = mean.view(num_models, hi - lo, -1).mean(dim=2)
            uncertainty[:, lo:hi] = var.view(num_models, hi - lo, -1).mean(dim=2)
    return labels, uncertainty


def score_clips_many(models: StackedClassifiers, split: Split, window: int, *, batch_size: int = 65536,
                     amp: bool = False) -> torch.Tensor:
    """`cupl.train.score_clips` of N models: [N, clips] probabilities averaged over crops."""
    device = split.features.device
    num_models = len(models.params[0])
    out = torch.empty(num_models, split.num_clips, device=device)
    with torch.no_grad():
        for lo, hi, h in first_layers(models, split, window, batch_size, amp):
            with _autocast(device, amp):
                logits = models.logits_from_hidden(h)
            out[:, lo:hi] = torch.sigmoid(logits.float()).view(num_models, hi - lo, -1).mean(dim=2)
    return out


# ---------------------------------------------------------------- one batch


def _run_batch(configs: list[RunConfig], train: Split, test: Split, oracle, keep_arrays: bool, progress: bool,
               generators: dict) -> list[RunResult]:
    """Algorithm 1 for configs of one `batch_key`, stage by stage for all of them."""
    from cupl.experiments.diagnostics import pseudo_label_quality

    first = configs[0]
    device, amp, st0 = torch.device(first.device), first.amp, first.self_train
    num_models = len(configs)
    timings: dict[str, float] = {}

    def timed(key, fn, *args, **kw):
        _sync(device)
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        _sync(device)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        return out

    dtype = feature_dtype(device, amp)
    train = timed("load", prepare_split, train, first.crops, device, dtype)
    test = timed("load", prepare_split, test, first.crops, device, dtype)

    keys = [stage1_key(c) for c in configs]
    missing = list({k: c for k, c in zip(keys, configs) if k not in generators}.items())
    if missing:
        trained = timed("stage1", train_generators, [c for _, c in missing], train, amp=amp, progress=progress)
        generators.update({k: m for (k, _), m in zip(missing, trained)})
    else:
        timings["stage1"] = 0.0
    f_g = StackedGenerators.stack([generators[k] for k in keys], device)
    f_g.params = [p.detach() for p in f_g.params]

    seeds = [c.seed + STAGE2_SEED_OFFSET for c in configs]
    streams = [Streams.seeded(s, device) for s in seeds]
    normal_rows = (train.labels == 0).repeat_interleave(train.lengths)
    counts: list[tuple] = [(s,) for s in seeds]
    model, window, f_c = f_g, None, None
    histories: list[list[dict]] = [[] for _ in configs]
    arrays: list[list[dict]] = [[] for _ in configs]
    for it in range(1, st0.iterations + 1):
        passes = first.generator.mc_passes if it == 1 else first.clip.mc_passes
        k = model.num_heads if model is f_g else 1
        masks = [dropout_masks(passes, k, model.hidden, model.dropout, s.explicit) for s in streams]
        labels, unc = timed(f"iter{it}.mc_dropout", pseudo_labels_many, model, train, masks, window=window,
                            batch_size=first.eval_batch_size, amp=amp)
        if st0.normal_labels == "zero":
            labels = torch.where(normal_rows, torch.zeros_like(labels), labels)
        selected = timed(f"iter{it}.mining", lambda: torch.stack(
            [select_reliable(unc[n], train, c.self_train, s.explicit) for n, (c, s) in enumerate(zip(configs, streams))]))
        counts = [h + (int(s.sum()),) for h, s in zip(counts, selected)]
        f_c = timed(f"iter{it}.train", train_clip_classifiers, train, labels, selected, first.clip, st0.window,
                    streams, counts, models=None if (first.clip.reinit or f_c is None) else f_c, amp=amp,
                    progress=progress)
        scores = timed(f"iter{it}.score", score_clips_many, f_c, test, st0.window,
                       batch_size=first.eval_batch_size, amp=amp)
        metrics = timed(f"iter{it}.evaluate", lambda: [evaluate_scores(s, test) for s in scores])
        for n in range(num_models):
            record = {"iteration": it, "source": "f_g" if it == 1 else "f_c", "mc_passes": passes,
                      "selected": int(selected[n].sum()), **metrics[n]}
            if oracle is not None:
                record.update(pseudo_label_quality(labels[n], unc[n], selected[n], oracle.to(labels.device), train))
            histories[n].append(record)
            if keep_arrays:
                arrays[n].append({"labels": labels[n].cpu(), "uncertainty": unc[n].cpu(),
                                  "selected": selected[n].cpu()})
        model, window = f_c, st0.window
    share = {key: value / num_models for key, value in timings.items()}
    return [RunResult(to_dict(c), dict(histories[n][-1]), histories[n], dict(share), generators[keys[n]],
                      f_c.model(n), scores[n].cpu(), arrays[n]) for n, c in enumerate(configs)]
