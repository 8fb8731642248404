"""Algorithm 1: stage 1 (f_g, Eq. 7), then iterative uncertainty-aware refinement (Eq. 8-11).

All functions take a whole `Split` (every clip of every video in one tensor) and a device;
no step that touches all clips loops over videos. Randomness comes from one seed: a
`torch.Generator` for sampling and masks, and a forked global RNG for weight init and
training-time dropout, so a run is bit-identical when repeated on the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cupl._checks import check_finite
from cupl.config import ClipConfig, GeneratorConfig, RunConfig, SelfTrainConfig, to_dict
from cupl.data.split import Split
from cupl.experiments.diagnostics import pseudo_label_quality
from cupl.experiments.steps import autocast, feature_dtype, first_layer, memory_table, run_steps, to_device
from cupl.experiments.timing import StageTimer
from cupl.method.evaluate import evaluate_scores
from cupl.method.losses import clip_loss, generator_loss
from cupl.method.mining import reliable_mask_split
from cupl.method.models import ClipClassifier, MultiHeadClassifier
from cupl.method.pooling import segment_split
from cupl.method.refine import refine_labels
from cupl.method.uncertainty import collapse_tail, dropout_masks, mc_from_hidden, mc_per_clip
from cupl.util import progress as progress_bar


STAGE2_SEED_OFFSET = 7919  # `run` seeds stage 2's streams with seed + 7919, after stage 1


def prepare_split(split: Split, crops: str, device, dtype=torch.float32) -> Split:
    """Move a split to the device; with crops="mean", average the crops first ([N, 1, D]).

    The crop mean accumulates in float32 without a float32 copy of the features.
    """
    if crops == "mean" and split.features.shape[1] > 1:
        from dataclasses import replace

        split = replace(split, features=split.features.mean(dim=1, keepdim=True, dtype=torch.float32))
    return split.to(device=device, dtype=dtype)


def train_generator(train: Split, cfg: GeneratorConfig, *, rng: torch.Generator,
                    amp: bool = False, progress: bool = False, graph: bool | None = None) -> MultiHeadClassifier:
    """Stage 1 (Algorithm 1, l. 2-5): f_g on 32-segment bags with L_MIL + alpha (L_diver + L_norm).

    Each step draws `batch_size` abnormal and `batch_size` normal videos (with replacement)
    and one crop of each, so every crop of a video is a bag of its own over training. All
    draws are made on the CPU first, in the order of the steps, and reach the device in one
    copy: the same bags on every device, and no step waits for a host-to-device copy.
    graph: replay the step as a CUDA graph (`cupl.experiments.steps.run_steps`); default: on CUDA.
    """
    device = train.features.device
    graph = device.type == "cuda" if graph is None else graph
    if graph and device.type != "cuda":
        raise ValueError(f"train_generator: graph=True needs a CUDA device, the split is on {device}")
    labels = train.labels.cpu()
    abnormal, normal = torch.nonzero(labels == 1).flatten(), torch.nonzero(labels == 0).flatten()
    if len(abnormal) == 0 or len(normal) == 0:
        raise ValueError(
            f"train_generator: needs abnormal and normal videos, got {len(abnormal)} abnormal and {len(normal)} normal"
        )
    segments = segment_split(train.features, train.offsets, cfg.num_segments)  # [V, S, C, D]
    num_crops, dim = segments.shape[2], segments.shape[3]
    model = MultiHeadClassifier(dim, cfg.num_heads, cfg.hidden, cfg.dropout).to(device)
    # foreach: one kernel per update over all parameters, as torch does on CUDA by default;
    # the same numbers on the CPU, with fewer per-step operations
    optimizer = torch.optim.Adadelta(model.parameters(), lr=cfg.lr, foreach=True, capturable=graph)
    model.train()
    b = cfg.batch_size
    draws = [(abnormal[torch.randint(len(abnormal), (b,), generator=rng)],
              normal[torch.randint(len(normal), (b,), generator=rng)],
              torch.randint(num_crops, (2 * b,), generator=rng)) for _ in range(cfg.steps)]
    videos = to_device(torch.stack([torch.cat([a, n]) for a, n, _ in draws]), device)  # [steps, 2B]
    crops = to_device(torch.stack([c for _, _, c in draws]), device)  # [steps, 2B]

    def step(v, c):
        with autocast(device, amp):
            heads = model(segments[v, :, c]).float().transpose(1, 2)  # [2B, K, S]
        loss = generator_loss(heads[:b], heads[b:], cfg.alpha, cfg.diversity, cfg.diversity_on_normal,
                              cfg.head_scores, cfg.mil_reduction, cfg.regularizer_reduction, cfg.norm_form)["loss"]
        loss.backward()
        optimizer.step()

    run_steps(step, videos, crops, optimizer, graph=graph, progress=progress, desc="stage 1 (f_g)")
    return model.eval()


def pseudo_labels(model, split: Split, passes: int, *, window: int | None = None,
                  rng: torch.Generator | None = None, batch_size: int = 65536, amp: bool = False,
                  masks: str = "shared"):
    """Pseudo labels and uncertainty of every clip by MC-Dropout (Eq. 8-10), crops averaged.

    model: f_g on clip features (window=None) or f_c on temporal clip features (window=w).
    masks "shared": one set of M masks serves all clips (Eq. 8: one sampled parameter set per
    pass), evaluated exactly by folding the tail; "per_clip": every clip draws its own
    (`mc_per_clip`, M full passes through the tail).
    returns: (labels [N], uncertainty [N]) as float32 on the split's device.
    """
    device = split.features.device
    num_heads = getattr(model, "num_heads", 1)
    labels = torch.empty(split.num_clips, device=device)
    uncertainty = torch.empty(split.num_clips, device=device)
    with torch.no_grad():
        tail = [t.detach().float() for t in model.head_weights()]
        if masks == "shared":
            m1, m2 = dropout_masks(passes, num_heads, model.hidden, model.dropout, rng)
            v, c = collapse_tail(tail, m1.to(device), m2.to(device))
        elif masks != "per_clip":
            raise ValueError(f"pseudo_labels: masks must be 'shared' or 'per_clip', got {masks!r}")
        for lo, hi, h in first_layer(model, split, window, batch_size, amp):
            if masks == "shared":
                mean, var = mc_from_hidden(h, v, c)
            else:
                mean, var = mc_per_clip(h, tail, passes, model.dropout, rng)
            labels[lo:hi] = mean.view(hi - lo, -1).mean(dim=1)
            uncertainty[lo:hi] = var.view(hi - lo, -1).mean(dim=1)
    return labels, uncertainty


def select_reliable(uncertainty: torch.Tensor, split: Split, cfg: SelfTrainConfig,
                    rng: torch.Generator | None = None) -> torch.Tensor:
    """Reliable clip mining (Algorithm 1, l. 11-18): a [N] bool mask of clips to train on.

    "uncertainty": the R% least uncertain clips of each video; "random": as many clips of
    each video drawn at random (standard self-training, Fig. 3); "all": every clip.
    """
    if cfg.selection == "all":
        return torch.ones_like(uncertainty, dtype=torch.bool)
    keys = uncertainty
    if cfg.selection == "random":
        keys = torch.rand(uncertainty.shape, generator=rng).to(uncertainty.device)
    return reliable_mask_split(keys, split.offsets, cfg.ratio)


def train_clip_classifier(train: Split, labels: torch.Tensor, selected: torch.Tensor, cfg: ClipConfig,
                          window: int, *, rng: torch.Generator, model: ClipClassifier | None = None,
                          amp: bool = False, progress: bool = False) -> ClipClassifier:
    """f_c on the reliable set (Algorithm 1, l. 19-22) with BCE against pseudo labels (Eq. 11).

    labels, selected: [N]. Every crop of a selected clip is a sample with the clip's label, fed
    in batches of `cfg.batch_size` for `cfg.epochs` passes or `cfg.steps` steps (`cfg.budget`),
    shuffled across videos or half from normal and half from abnormal videos (`cfg.batches`,
    `clip_batches`). The loss is `clip_loss`, with `cfg.class_weights` when
    `cfg.loss == "weighted"`, and `cfg.label_smoothing`.

    The memory half of each selected clip's temporal feature is computed once, before the
    epochs (`memory_table`), so a step gathers two rows per sample instead of w + 1; the
    inputs are the same numbers `context_features` builds per batch. It holds R times the
    features' size ([S, C, D] in their dtype, S selected clips).
    """
    device = train.features.device
    rows = torch.nonzero(selected).flatten()
    if len(rows) == 0:
        raise ValueError("train_clip_classifier: no clip is selected")
    num_crops = train.features.shape[1]
    sample_clips = torch.arange(len(rows), device=device).repeat_interleave(num_crops)  # into rows
    sample_crops = torch.arange(num_crops, device=device).repeat(len(rows))
    memory = memory_table(train, rows, window)
    targets = labels[rows]
    if model is None:
        model = ClipClassifier(2 * train.features.shape[2], cfg.hidden, cfg.dropout, cfg.two_way).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=True)
    weights = cfg.class_weights if cfg.loss == "weighted" else None
    normal = (train.labels == 0).repeat_interleave(train.lengths)[rows][sample_clips]
    model.train()
    for batch in clip_batches(normal, cfg, rng, progress):
        batch = to_device(batch, device)
        s, c = sample_clips[batch], sample_crops[batch]
        x = torch.cat([train.features[rows[s], c], memory[s, c]], dim=-1)
        with autocast(device, amp):
            logits = model(x).float()
        loss = clip_loss(logits, targets[s], class_weights=weights, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def clip_batches(normal: torch.Tensor, cfg: ClipConfig, rng: torch.Generator, progress: bool = False):
    """Sample indices [b] of f_c's optimiser steps, drawn on the CPU from `rng`.

    normal: [n] bool, which samples come from normal videos. budget "epochs": `cfg.epochs`
    passes over the samples; "steps": `cfg.steps` batches, the same number whatever share of the
    clips is selected. batches "shuffled": samples of all videos mixed, a pass a permutation and
    a step a uniform draw; "balanced": half of each batch from normal and half from abnormal
    videos, a pass ending with the smaller side (as two zipped loaders do).
    """
    normal = normal.cpu()
    count, b = len(normal), cfg.batch_size
    sides = [torch.nonzero(normal).flatten(), torch.nonzero(~normal).flatten()]
    balanced = cfg.batches == "balanced" and all(len(side) for side in sides)
    if cfg.budget == "steps":
        for _ in progress_bar(range(cfg.steps), progress, desc="f_c steps", leave=False):
            if balanced:
                yield torch.cat([side[torch.randint(len(side), (n,), generator=rng)]
                                 for side, n in zip(sides, (b // 2, b - b // 2))])
            else:
                yield torch.randint(count, (b,), generator=rng)
        return
    for _ in progress_bar(range(cfg.epochs), progress, desc="f_c epochs", leave=False):
        if not balanced:
            yield from torch.randperm(count, generator=rng).split(b)
            continue
        halves = [side[torch.randperm(len(side), generator=rng)].split(n)
                  for side, n in zip(sides, (b // 2, b - b // 2))]
        yield from (torch.cat(pair) for pair in zip(*halves))


def score_clips(model: ClipClassifier, split: Split, window: int, *, batch_size: int = 65536,
                amp: bool = False) -> torch.Tensor:
    """Inference (Sec. 3.4): f_c in eval mode on every clip, probabilities averaged over crops. [N]."""
    device = split.features.device
    model.eval()
    out = torch.empty(split.num_clips, device=device)
    with torch.no_grad():
        for lo, hi, h in first_layer(model, split, window, batch_size, amp):
            with autocast(device, amp):
                logits = model.logit_from_hidden(h[:, 0])
            out[lo:hi] = torch.sigmoid(logits.float()).view(hi - lo, -1).mean(dim=1)
    return out


@dataclass
class RunResult:
    """What one two-stage run produced. `metrics` are the final model's, never the best iteration's."""

    config: dict
    metrics: dict
    history: list[dict]
    timings: dict[str, float]
    f_g: MultiHeadClassifier
    f_c: ClipClassifier
    test_scores: torch.Tensor
    arrays: list[dict] = field(default_factory=list)
    peak_memory: dict[str, int] = field(default_factory=dict)  # CUDA: peak bytes allocated per stage


def check_finite_videos(name: str, split: Split) -> None:
    """`check_finite` of the split's [N, C, D] features; the error names the videos holding
    NaN or inf (found only when there are any: the check itself builds no [N] mask)."""
    try:
        check_finite(name, split.features)
    except ValueError as err:
        bad = ~torch.isfinite(split.features).flatten(1).all(1)
        videos = torch.unique(split.video_index[bad.to(split.offsets.device)]).tolist()
        names = [split.names[v] for v in videos]
        more = f" and {len(names) - 10} more" if len(names) > 10 else ""
        raise ValueError(f"{err}, in {len(names)} video(s): {', '.join(names[:10])}{more}") from None


def run(config: RunConfig, train: Split, test: Split, *, oracle: torch.Tensor | None = None,
        progress: bool = True, keep_arrays: bool = False,
        f_g: MultiHeadClassifier | None = None) -> RunResult:
    """Algorithm 1 end to end, with the final f_c evaluated on `test` after every iteration.

    oracle: optional [N] clip-level truth of the train split (synthetic banks only), used
    only to report pseudo-label quality per iteration; training never reads it.
    keep_arrays: keep each iteration's pseudo labels, uncertainty and selection (CPU).
    f_g: a stage-1 model already trained with this config's generator settings and
    seed (`RunResult.f_g` of an earlier run); stage 1 is then skipped, and the run is
    identical to one that trained it, because stage 2 draws from its own seeded streams.
    """
    config.validate()
    check_finite_videos("train features", train)
    check_finite_videos("test features", test)
    device = torch.device(config.device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        return _run(config, train, test, oracle, progress, keep_arrays, device, f_g)


def _run(config, train, test, oracle, progress, keep_arrays, device, f_g) -> RunResult:
    rng = torch.Generator().manual_seed(config.seed)
    st, amp = config.self_train, config.amp
    timed = StageTimer(config, device)
    dtype = feature_dtype(device, amp)
    train = timed("load", prepare_split, train, config.crops, device, dtype)
    test = timed("load", prepare_split, test, config.crops, device, dtype)
    if f_g is None:
        f_g = timed("stage1", _stage1, config, train, rng, progress)
    else:
        f_g = f_g.to(device).eval()
        timed.timings["stage1"] = 0.0
    # stage 2 starts from its own streams, so reusing a stage-1 model changes nothing downstream
    rng = torch.Generator().manual_seed(config.seed + STAGE2_SEED_OFFSET)
    torch.manual_seed(config.seed + STAGE2_SEED_OFFSET)
    normal_rows = (train.labels == 0).repeat_interleave(train.lengths)
    model, window, f_c, history, arrays = f_g, None, None, [], []
    for it in range(1, st.iterations + 1):
        passes = config.generator.mc_passes if it == 1 else config.clip.mc_passes
        labels, unc = timed(f"iter{it}.mc_dropout", pseudo_labels, model, train, passes, window=window,
                            rng=rng, batch_size=config.eval_batch_size, amp=amp, masks=st.mc_masks)
        labels = clip_targets(labels, train, st, it, normal_rows)
        selected = timed(f"iter{it}.mining", select_reliable, unc, train, st, rng)
        f_c = timed(f"iter{it}.train", train_clip_classifier, train, labels, selected, config.clip, st.window,
                    rng=rng, model=None if (config.clip.reinit or f_c is None) else f_c, amp=amp,
                    progress=progress)
        scores = timed(f"iter{it}.score", score_clips, f_c, test, st.window, batch_size=config.eval_batch_size, amp=amp)
        metrics = timed(f"iter{it}.evaluate", evaluate_scores, scores, test)
        history.append(iteration_record(it, passes, metrics, labels, unc, selected, oracle, train))
        if keep_arrays:
            arrays.append({"labels": labels.cpu(), "uncertainty": unc.cpu(), "selected": selected.cpu()})
        model, window = f_c, st.window
    return RunResult(to_dict(config), dict(history[-1]), history, timed.timings, f_g.cpu(), f_c.cpu(), scores.cpu(), arrays,
                     timed.peak_memory)


def clip_targets(labels: torch.Tensor, train: Split, st: SelfTrainConfig, iteration: int,
                 normal_rows: torch.Tensor) -> torch.Tensor:
    """The [N] targets f_c trains on in `iteration`: the pseudo labels, after the step between the
    stages in iteration 1 (`refine_labels`), with the clips of normal videos (`normal_rows`) set
    to 0 when `st.normal_labels` is "zero"."""
    if iteration == 1:  # the step between the stages: f_g's scores into f_c's first targets
        labels = refine_labels(labels, train, st.refine)
    if st.normal_labels == "zero":
        labels = torch.where(normal_rows, torch.zeros_like(labels), labels)
    return labels


def iteration_record(iteration: int, passes: int, metrics: dict, labels: torch.Tensor, uncertainty: torch.Tensor,
                     selected: torch.Tensor, oracle: torch.Tensor | None, train: Split) -> dict:
    """One iteration's line of a run's history: its test metrics, the selection's size and, with
    an `oracle`, the quality of its pseudo labels (`pseudo_label_quality`)."""
    record = {"iteration": iteration, "source": "f_g" if iteration == 1 else "f_c", "mc_passes": passes,
              "selected": int(selected.sum()), **metrics}
    if oracle is not None:
        record.update(pseudo_label_quality(labels, uncertainty, selected, oracle.to(labels.device), train))
    return record


def _stage1(config: RunConfig, train: Split, rng: torch.Generator, progress: bool) -> MultiHeadClassifier:
    """Stage 1 of `run`, called with the streams seeded from `config.seed` and nothing drawn yet."""
    return train_generator(train, config.generator, rng=rng, amp=config.amp, progress=progress)


def stage1(config: RunConfig, train: Split, *, progress: bool = False) -> MultiHeadClassifier:
    """Stage 1 alone, the f_g that `run(config, train, ...)` trains (same seeded streams), on the CPU.

    Lets stage-1 models be trained ahead, elsewhere, and passed to `run` as `f_g`.
    """
    config.validate()
    check_finite_videos("train features", train)
    device = torch.device(config.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        rng = torch.Generator().manual_seed(config.seed)
        split = prepare_split(train, config.crops, device, feature_dtype(device, config.amp))
        return _stage1(config, split, rng, progress).cpu()


