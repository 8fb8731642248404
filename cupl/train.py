"""Algorithm 1: stage 1 (f_g, Eq. 7), then iterative uncertainty-aware refinement (Eq. 8-11).

All functions take a whole `Split` (every clip of every video in one tensor) and a device;
no step that touches all clips loops over videos. Randomness comes from one seed: a
`torch.Generator` for sampling and masks, and a forked global RNG for weight init and
training-time dropout, so a run is bit-identical when repeated on the same machine.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch

from cupl.config import ClipConfig, GeneratorConfig, RunConfig, SelfTrainConfig, make_config, to_dict
from cupl.data.split import Split
from cupl.evaluate import evaluate_scores
from cupl.losses import clip_loss, generator_loss
from cupl.mining import context_features, reliable_mask_split
from cupl.models import ClipClassifier, MultiHeadClassifier
from cupl.pooling import segment_split
from cupl.uncertainty import collapse_tail, dropout_masks, mc_from_hidden


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _bar(iterable, progress: bool, **kw):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, **kw)


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_split(split: Split, crops: str, device, dtype=torch.float32) -> Split:
    """Move a split to the device; with crops="mean", average the crops first ([N, 1, D])."""
    if crops == "mean" and split.features.shape[1] > 1:
        from dataclasses import replace

        split = replace(split, features=split.features.float().mean(dim=1, keepdim=True))
    return split.to(device=device, dtype=dtype)


def train_generator(train: Split, cfg: GeneratorConfig, *, generator: torch.Generator,
                    amp: bool = False, progress: bool = False) -> MultiHeadClassifier:
    """Stage 1 (Algorithm 1, l. 2-5): f_g on 32-segment bags with L_MIL + alpha (L_diver + L_norm).

    Each step draws `batch_size` abnormal and `batch_size` normal videos (with replacement)
    and one crop of each, so every crop of a video is a bag of its own over training.
    """
    device = train.features.device
    labels = train.labels.cpu()
    abnormal, normal = torch.nonzero(labels == 1).flatten(), torch.nonzero(labels == 0).flatten()
    if len(abnormal) == 0 or len(normal) == 0:
        raise ValueError(
            f"train_generator: needs abnormal and normal videos, got {len(abnormal)} abnormal and {len(normal)} normal"
        )
    segments = segment_split(train.features, train.offsets, cfg.num_segments)  # [V, S, C, D]
    num_crops, dim = segments.shape[2], segments.shape[3]
    model = MultiHeadClassifier(dim, cfg.num_heads, cfg.hidden, cfg.dropout).to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=cfg.lr)
    model.train()
    b = cfg.batch_size
    for _ in _bar(range(cfg.steps), progress, desc="stage 1 (f_g)"):
        videos = torch.cat([abnormal[torch.randint(len(abnormal), (b,), generator=generator)],
                            normal[torch.randint(len(normal), (b,), generator=generator)]]).to(device)
        crops = torch.randint(num_crops, (2 * b,), generator=generator).to(device)
        with _autocast(device, amp):
            heads = model(segments[videos, :, crops]).float().transpose(1, 2)  # [2B, K, S]
        loss = generator_loss(heads[:b], heads[b:], cfg.alpha, cfg.diversity, cfg.diversity_on_normal)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def _model_inputs(split: Split, rows: torch.Tensor, window: int | None) -> torch.Tensor:
    """[b, C, D] clip features (window None, for f_g) or [b, C, 2D] temporal features (f_c)."""
    if window is None:
        return split.features[rows]
    return context_features(split.features, split.starts, rows, window)


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
    labels, uncertainty = [], []
    with torch.no_grad():
        v, c = collapse_tail([t.detach().float() for t in model.head_weights()], m1.to(device), m2.to(device))
        rows_per_chunk = max(1, batch_size // split.features.shape[1])
        for rows in torch.arange(split.num_clips, device=device).split(rows_per_chunk):
            x = _model_inputs(split, rows, window)
            with _autocast(device, amp):
                h = model.hidden1(x.flatten(0, 1))
            mean, var = mc_from_hidden(h, v, c)
            labels.append(mean.view(len(rows), -1).mean(dim=1))
            uncertainty.append(var.view(len(rows), -1).mean(dim=1))
    return torch.cat(labels), torch.cat(uncertainty)


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
    """
    device = train.features.device
    rows = torch.nonzero(selected).flatten()
    if len(rows) == 0:
        raise ValueError("train_clip_classifier: no clip is selected")
    num_crops = train.features.shape[1]
    sample_rows = rows.repeat_interleave(num_crops)
    sample_crops = torch.arange(num_crops, device=device).repeat(len(rows))
    starts = train.starts
    if model is None:
        model = ClipClassifier(2 * train.features.shape[2], cfg.hidden, cfg.dropout, cfg.two_way).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    for _ in _bar(range(cfg.epochs), progress, desc="f_c epochs"):
        order = torch.randperm(len(sample_rows), generator=generator).to(device)
        for batch in order.split(cfg.batch_size):
            r, c = sample_rows[batch], sample_crops[batch]
            x = context_features(train.features, starts, r, window, crop=c)
            with _autocast(device, amp):
                logits = model(x).float()
            loss = clip_loss(logits, labels[r])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def score_clips(model: ClipClassifier, split: Split, window: int, *, batch_size: int = 65536,
                amp: bool = False) -> torch.Tensor:
    """Inference (Sec. 3.4): f_c in eval mode on every clip, probabilities averaged over crops. [N]."""
    device = split.features.device
    model.eval()
    out = []
    rows_per_chunk = max(1, batch_size // split.features.shape[1])
    with torch.no_grad():
        for rows in torch.arange(split.num_clips, device=device).split(rows_per_chunk):
            x = context_features(split.features, split.starts, rows, window)
            with _autocast(device, amp):
                out.append(torch.sigmoid(model(x).float()).mean(dim=1))
    return torch.cat(out)


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

    def timed(key, fn, *args, **kw):
        _sync(device)
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        _sync(device)
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        return out

    train = timed("load", prepare_split, train, config.crops, device)
    test = timed("load", prepare_split, test, config.crops, device)
    if generator_model is None:
        f_g = timed("stage1", train_generator, train, config.generator, generator=gen, amp=amp, progress=progress)
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
    return RunResult(to_dict(config), dict(history[-1]), history, timings, f_g.cpu(), f_c.cpu(), scores.cpu(), arrays)


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
