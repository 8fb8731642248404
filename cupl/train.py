"""Algorithm 1: stage 1 (f_g, Eq. 7), then iterative uncertainty-aware refinement (Eq. 8-11).

All functions take a whole `Split` (every clip of every video in one tensor) and a device;
no step that touches all clips loops over videos. Randomness comes from one seed: a
`torch.Generator` for sampling and masks, and a forked global RNG for weight init and
training-time dropout, so a run is bit-identical when repeated on the same machine.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from cupl._checks import check_finite
from cupl.config import ClipConfig, GeneratorConfig, RunConfig, SelfTrainConfig, make_config, to_dict
from cupl.data.split import Split
from cupl.evaluate import evaluate_scores
from cupl.losses import clip_loss, generator_loss
from cupl.mining import context_features, context_memory, reliable_mask_split
from cupl.models import ClipClassifier, MultiHeadClassifier
from cupl.pooling import segment_split
from cupl.uncertainty import collapse_tail, dropout_masks, mc_from_hidden

# The setting that bounds the memory of each stage of `run`, named when a stage runs out of it.
MEMORY_KNOBS = {"stage1": "generator.batch_size", "mc_dropout": "eval_batch_size",
                "train": "clip.batch_size", "score": "eval_batch_size"}


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        # no cast cache: each region casts its weights once anyway, and CUDA graphs forbid it
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def _bar(iterable, progress: bool, **kw):
    if not progress:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, leave=False, **kw)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to the device without waiting for queued work (pinned memory on CUDA)."""
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def feature_dtype(device, amp: bool) -> torch.dtype:
    """bfloat16 on CUDA with amp (half the memory of float32; autocast runs every matmul in
    bfloat16 anyway), float32 otherwise."""
    return torch.bfloat16 if amp and torch.device(device).type == "cuda" else torch.float32


def prepare_split(split: Split, crops: str, device, dtype=torch.float32) -> Split:
    """Move a split to the device; with crops="mean", average the crops first ([N, 1, D]).

    The crop mean accumulates in float32 without a float32 copy of the features.
    """
    if crops == "mean" and split.features.shape[1] > 1:
        from dataclasses import replace

        split = replace(split, features=split.features.mean(dim=1, keepdim=True, dtype=torch.float32))
    return split.to(device=device, dtype=dtype)


def train_generator(train: Split, cfg: GeneratorConfig, *, generator: torch.Generator,
                    amp: bool = False, progress: bool = False, graph: bool | None = None) -> MultiHeadClassifier:
    """Stage 1 (Algorithm 1, l. 2-5): f_g on 32-segment bags with L_MIL + alpha (L_diver + L_norm).

    Each step draws `batch_size` abnormal and `batch_size` normal videos (with replacement)
    and one crop of each, so every crop of a video is a bag of its own over training. All
    draws are made on the CPU first, in the order of the steps, and reach the device in one
    copy: the same bags on every device, and no step waits for a host-to-device copy.
    graph: replay the step as a CUDA graph (`_run_steps`); default: on CUDA.
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
    draws = [(abnormal[torch.randint(len(abnormal), (b,), generator=generator)],
              normal[torch.randint(len(normal), (b,), generator=generator)],
              torch.randint(num_crops, (2 * b,), generator=generator)) for _ in range(cfg.steps)]
    videos = _to_device(torch.stack([torch.cat([a, n]) for a, n, _ in draws]), device)  # [steps, 2B]
    crops = _to_device(torch.stack([c for _, _, c in draws]), device)  # [steps, 2B]

    def step(v, c):
        with _autocast(device, amp):
            heads = model(segments[v, :, c]).float().transpose(1, 2)  # [2B, K, S]
        loss = generator_loss(heads[:b], heads[b:], cfg.alpha, cfg.diversity, cfg.diversity_on_normal,
                              cfg.head_scores, cfg.mil_reduction, cfg.regularizer_reduction, cfg.norm_form)["loss"]
        loss.backward()
        optimizer.step()

    _run_steps(step, videos, crops, optimizer, graph=graph, progress=progress, desc="stage 1 (f_g)")
    return model.eval()


def _run_steps(step, videos: torch.Tensor, crops: torch.Tensor, optimizer, *, graph: bool, progress: bool,
               desc: str, warmup: int = 3):
    """step(videos[s], crops[s]) for every step s in order, gradients cleared before each.

    With `graph` (CUDA): the first `warmup` steps run eagerly on a side stream, as CUDA graphs
    need; one step is captured, and the graph is replayed for the remaining steps with their
    indices copied into its input buffers, one launch per step instead of a few hundred
    small kernels launched from Python (a stage-1 step was 4 ms of launches on an H200).
    The optimizer must be `capturable`. Should capture fail, the remaining steps run eagerly.
    """
    steps, done = len(videos), 0
    if graph and steps > warmup:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for s in range(warmup):
                optimizer.zero_grad(set_to_none=True)
                step(videos[s], crops[s])
        torch.cuda.current_stream().wait_stream(side)
        done = warmup
        static_v, static_c = videos[warmup].clone(), crops[warmup].clone()
        captured = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)  # backward in the graph then writes, not adds, the gradients
        try:
            with torch.cuda.graph(captured):
                step(static_v, static_c)
        except RuntimeError as err:
            warnings.warn(f"{desc}: CUDA graph capture failed, the remaining steps run eagerly ({err})")
        else:
            for s in _bar(range(warmup, steps), progress, desc=desc):
                static_v.copy_(videos[s])
                static_c.copy_(crops[s])
                captured.replay()
            done = steps
    for s in _bar(range(done, steps), progress, desc=desc):
        optimizer.zero_grad(set_to_none=True)
        step(videos[s], crops[s])
    optimizer.zero_grad(set_to_none=True)


def _first_layer(model, split: Split, window: int | None, batch_size: int, amp: bool,
                 project: bool | None = None):
    """Yield (lo, hi, h) over runs of clips: h [(hi - lo) C, K, h1] = ReLU of the first layer
    of every crop of clips lo..hi-1, at most about `batch_size` vectors at a time.

    f_g (window None) reads the clip features. f_c (window w) reads temporal features
    [c_t, m_t], built per run of clips, when D <= h1. When D > h1 (I3D's 2048 against 512)
    its first layer is split instead, W_a c_t + W_b m_t + b1, and as m_t is a mean of clips,
    W_b m_t is the same mean of W_b c: each clip is projected once and the window mean is
    taken over h1-d projections, so the w gathers per clip move h1 values instead of D and
    no [b, C, 2D] input is built, at the same FLOPs (the w clips before a run are projected
    again as its halo). Exact up to float rounding (ReLU outputs within 4e-6 at 2048-d).
    Measured (`benchmarks/pipeline.py`, one CPU thread, quick-profile video lengths): 1.4-1.5x
    faster at D = 2048, 1.4-1.7x slower at D = 256, where the projections are the wider
    rows. `project` forces either way.
    """
    features, device = split.features, split.features.device
    rows = max(1, batch_size // features.shape[1])
    starts = None if window is None else split.starts
    if project is None:
        project = features.shape[-1] > model.hidden[0]
    for lo in range(0, split.num_clips, rows):
        hi = min(lo + rows, split.num_clips)
        with _autocast(device, amp):
            if window is None:
                h = model.hidden1(features[lo:hi].flatten(0, 1))
            elif not project:
                x = context_features(features, starts, torch.arange(lo, hi, device=device), window)
                h = model.hidden1(x.flatten(0, 1))
            else:
                w_a, w_b, b1 = model.context_weights()
                halo = max(lo - window, 0)
                projected = F.linear(features[halo:hi], w_b)  # [hi - halo, C, h1]
                local = torch.arange(lo - halo, hi - halo, device=device)
                memory = context_memory(projected, starts[halo:hi] - halo, local, window)
                h = F.relu(F.linear(features[lo:hi], w_a, b1) + memory).flatten(0, 1).unsqueeze(1)
        yield lo, hi, h


def pseudo_labels(model, split: Split, passes: int, *, window: int | None = None,
                  generator: torch.Generator | None = None, batch_size: int = 65536, amp: bool = False):
    """Pseudo labels and uncertainty of every clip by MC-Dropout (Eq. 8-10), crops averaged.

    model: f_g on clip features (window=None) or f_c on temporal clip features (window=w).
    One set of M masks serves all clips (Eq. 8: one sampled parameter set per pass).
    returns: (labels [N], uncertainty [N]) as float32 on the split's device.
    """
    device = split.features.device
    num_heads = getattr(model, "num_heads", 1)
    m1, m2 = dropout_masks(passes, num_heads, model.hidden, model.dropout, generator)
    labels = torch.empty(split.num_clips, device=device)
    uncertainty = torch.empty(split.num_clips, device=device)
    with torch.no_grad():
        v, c = collapse_tail([t.detach().float() for t in model.head_weights()], m1.to(device), m2.to(device))
        for lo, hi, h in _first_layer(model, split, window, batch_size, amp):
            mean, var = mc_from_hidden(h, v, c)
            labels[lo:hi] = mean.view(hi - lo, -1).mean(dim=1)
            uncertainty[lo:hi] = var.view(hi - lo, -1).mean(dim=1)
    return labels, uncertainty


def select_reliable(uncertainty: torch.Tensor, split: Split, cfg: SelfTrainConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Reliable clip mining (Algorithm 1, l. 11-18): a [N] bool mask of clips to train on.

    "uncertainty": the R% least uncertain clips of each video; "random": as many clips of
    each video drawn at random (standard self-training, Fig. 3); "all": every clip.
    """
    if cfg.selection == "all":
        return torch.ones_like(uncertainty, dtype=torch.bool)
    keys = uncertainty
    if cfg.selection == "random":
        keys = torch.rand(uncertainty.shape, generator=generator).to(uncertainty.device)
    return reliable_mask_split(keys, split.offsets, cfg.ratio)


def train_clip_classifier(train: Split, labels: torch.Tensor, selected: torch.Tensor, cfg: ClipConfig,
                          window: int, *, generator: torch.Generator, model: ClipClassifier | None = None,
                          amp: bool = False, progress: bool = False) -> ClipClassifier:
    """f_c on the reliable set (Algorithm 1, l. 19-22) with BCE against pseudo labels (Eq. 11).

    labels, selected: [N]. Every crop of a selected clip is a sample with the clip's label;
    samples are shuffled across videos and fed in batches of `cfg.batch_size`.

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
    model.train()
    for _ in _bar(range(cfg.epochs), progress, desc="f_c epochs"):
        order = _to_device(torch.randperm(len(sample_clips), generator=generator), device)
        for batch in order.split(cfg.batch_size):
            s, c = sample_clips[batch], sample_crops[batch]
            x = torch.cat([train.features[rows[s], c], memory[s, c]], dim=-1)
            with _autocast(device, amp):
                logits = model(x).float()
            loss = clip_loss(logits, targets[s])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def memory_table(split: Split, rows: torch.Tensor, window: int, chunk: int = 65536) -> torch.Tensor:
    """[S, C, D] long-term feature memory (`context_memory`) of the clips `rows` [S] of a split,
    every crop, in the features' dtype, built `chunk` vectors at a time."""
    features = split.features
    table = features.new_empty((len(rows), *features.shape[1:]))
    step = max(1, chunk // features.shape[1])
    for lo in range(0, len(rows), step):
        table[lo:lo + step] = context_memory(features, split.starts, rows[lo:lo + step], window)
    return table


def score_clips(model: ClipClassifier, split: Split, window: int, *, batch_size: int = 65536,
                amp: bool = False) -> torch.Tensor:
    """Inference (Sec. 3.4): f_c in eval mode on every clip, probabilities averaged over crops. [N]."""
    device = split.features.device
    model.eval()
    out = torch.empty(split.num_clips, device=device)
    with torch.no_grad():
        for lo, hi, h in _first_layer(model, split, window, batch_size, amp):
            with _autocast(device, amp):
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
    generator: MultiHeadClassifier
    classifier: ClipClassifier
    test_scores: torch.Tensor
    arrays: list[dict] = field(default_factory=list)
    peak_memory: dict[str, int] = field(default_factory=dict)  # CUDA: peak bytes allocated per stage


def run(config: RunConfig, train: Split, test: Split, *, oracle: torch.Tensor | None = None,
        progress: bool = True, keep_arrays: bool = False,
        generator_model: MultiHeadClassifier | None = None) -> RunResult:
    """Algorithm 1 end to end, with the final f_c evaluated on `test` after every iteration.

    oracle: optional [N] clip-level truth of the train split (synthetic banks only), used
    only to report pseudo-label quality per iteration; training never reads it.
    keep_arrays: keep each iteration's pseudo labels, uncertainty and selection (CPU).
    generator_model: a stage-1 f_g already trained with this config's generator settings and
    seed (`RunResult.generator` of an earlier run); stage 1 is then skipped, and the run is
    identical to one that trained it, because stage 2 draws from its own seeded streams.
    """
    config.validate()
    check_finite("train features", train.features)
    check_finite("test features", test.features)
    device = torch.device(config.device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        return _run(config, train, test, oracle, progress, keep_arrays, device, generator_model)


def _run(config, train, test, oracle, progress, keep_arrays, device, generator_model) -> RunResult:
    from cupl.diagnostics import pseudo_label_quality

    gen = torch.Generator().manual_seed(config.seed)
    st, amp = config.self_train, config.amp
    timings: dict[str, float] = {}
    peak_memory: dict[str, int] = {}
    cuda = device.type == "cuda"

    def timed(key, fn, *args, **kw):
        _sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kw)
        except RuntimeError as err:
            if not _is_out_of_memory(err):
                raise
            raise type(err)(_memory_advice(key, config, device)) from err
        _sync(device)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        if cuda:
            peak_memory[key] = max(peak_memory.get(key, 0), torch.cuda.max_memory_allocated(device))
        return out

    dtype = feature_dtype(device, amp)
    train = timed("load", prepare_split, train, config.crops, device, dtype)
    test = timed("load", prepare_split, test, config.crops, device, dtype)
    if generator_model is None:
        f_g = timed("stage1", _stage1, config, train, gen, progress)
    else:
        f_g = generator_model.to(device).eval()
        timings["stage1"] = 0.0
    # stage 2 starts from its own streams, so reusing a stage-1 model changes nothing downstream
    gen = torch.Generator().manual_seed(config.seed + 7919)
    torch.manual_seed(config.seed + 7919)
    normal_rows = (train.labels == 0).repeat_interleave(train.lengths)
    model, window, f_c, history, arrays = f_g, None, None, [], []
    for it in range(1, st.iterations + 1):
        passes = config.generator.mc_passes if it == 1 else config.clip.mc_passes
        labels, unc = timed(f"iter{it}.mc_dropout", pseudo_labels, model, train, passes, window=window,
                            generator=gen, batch_size=config.eval_batch_size, amp=amp)
        if st.normal_labels == "zero":
            labels = torch.where(normal_rows, torch.zeros_like(labels), labels)
        selected = timed(f"iter{it}.mining", select_reliable, unc, train, st, gen)
        f_c = timed(f"iter{it}.train", train_clip_classifier, train, labels, selected, config.clip, st.window,
                    generator=gen, model=None if (config.clip.reinit or f_c is None) else f_c, amp=amp,
                    progress=progress)
        scores = timed(f"iter{it}.score", score_clips, f_c, test, st.window, batch_size=config.eval_batch_size, amp=amp)
        metrics = timed(f"iter{it}.evaluate", evaluate_scores, scores, test)
        record = {"iteration": it, "source": "f_g" if it == 1 else "f_c", "mc_passes": passes,
                  "selected": int(selected.sum()), **metrics}
        if oracle is not None:
            record.update(pseudo_label_quality(labels, unc, selected, oracle.to(labels.device), train))
        history.append(record)
        if keep_arrays:
            arrays.append({"labels": labels.cpu(), "uncertainty": unc.cpu(), "selected": selected.cpu()})
        model, window = f_c, st.window
    return RunResult(to_dict(config), dict(history[-1]), history, timings, f_g.cpu(), f_c.cpu(), scores.cpu(), arrays,
                     peak_memory)


def _stage1(config: RunConfig, train: Split, gen: torch.Generator, progress: bool) -> MultiHeadClassifier:
    """Stage 1 of `run`, called with the streams seeded from `config.seed` and nothing drawn yet."""
    return train_generator(train, config.generator, generator=gen, amp=config.amp, progress=progress)


def stage1(config: RunConfig, train: Split, *, progress: bool = False) -> MultiHeadClassifier:
    """Stage 1 alone, the f_g that `run(config, train, ...)` trains (same seeded streams), on the CPU.

    Lets stage-1 models be trained ahead, elsewhere, and passed to `run` as `generator_model`.
    """
    config.validate()
    check_finite("train features", train.features)
    device = torch.device(config.device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        gen = torch.Generator().manual_seed(config.seed)
        split = prepare_split(train, config.crops, device, feature_dtype(device, config.amp))
        return _stage1(config, split, gen, progress).cpu()


def _is_out_of_memory(err: RuntimeError) -> bool:
    text = str(err)
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def _memory_advice(key: str, config: RunConfig, device: torch.device) -> str:
    """What to turn when stage `key` of a run does not fit in the memory of `device`."""
    stage = key.split(".")[-1]
    if stage == "load":
        return (f"load: the features of a split do not fit on {device}; on CUDA set amp=True to keep them "
                f"in bfloat16 (half of float32), or crops='mean' to keep one averaged crop per clip")
    if stage not in MEMORY_KNOBS:
        return f"{key}: out of memory on {device}"
    knob = MEMORY_KNOBS[stage]
    value = config
    for part in knob.split("."):
        value = getattr(value, part)
    advice = f"{key}: out of memory on {device}; lower {knob} (now {value}) to take fewer clips at a time"
    if stage == "train":
        advice += (f"; the memory table of the selected clips takes self_train.ratio "
                   f"(now {config.self_train.ratio}) times the memory of the features")
    return advice


def configure_parser(p):
    p.add_argument("--bank", required=True, help="feature bank (.h5)")
    p.add_argument("--preset", default="ucf", choices=["ucf", "xd", "tad"])
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--variant", default="full", help="full, baseline, completeness, uncertainty, standard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                   help="override a config key, e.g. --set generator.alpha 1.0")
    p.add_argument("--save", help="write the trained f_c checkpoint here")


def main(args) -> int:
    import ast

    from cupl.data.bank import FeatureBank

    overrides = {}
    for key, value in args.set:
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    config = make_config(args.preset, args.profile, args.variant, seed=args.seed, device=args.device, **overrides)
    with FeatureBank.open(args.bank) as bank:
        train = bank.load_split("train", modality=config.modality)
        test = bank.load_split("test", modality=config.modality)
    result = run(config, train, test)
    for record in result.history:
        print(f"iteration {record['iteration']}: AUC {record['auc']:.4f}  AP {record['ap']:.4f}  "
              f"selected {record['selected']}")
    if args.save:
        from cupl.checkpoint import save_checkpoint

        save_checkpoint(args.save, result.classifier, result.config)
        print(f"saved {args.save}")
    return 0
