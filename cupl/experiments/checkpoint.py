"""Stage-2 checkpoints: the authors' released `UCF_0.8622.pth` and cupl's own, interchangeably.

The released classifier f_c (Sec. 3.3, Sec. 4.2) is a dict ``{"model": state_dict}`` with
``Regressor.0`` (Linear 4096 -> 512), ReLU, dropout, ``Regressor.3`` (Linear 512 -> 32),
dropout, ``Regressor.5`` (Linear 32 -> 2) and a softmax whose class 1 is "abnormal". It scores
``concat(c_t, mean of the previous <= 5 clips)`` per crop (the long-term temporal context,
w = 5), and a clip's score is the crop average. `cupl.models.ClipClassifier(two_way=True)`
has the same layers, and its logit ``z_1 - z_0`` gives ``sigmoid(logit) = softmax(z)[1]``, so
one scoring path serves both formats.

cupl's own files add a format tag, the architecture and the run's configuration:
``{"format": "cupl.ClipClassifier", "architecture": {...}, "config": {...}, "model": ...}``.
Everything is loaded with ``torch.load(weights_only=True)``: no code runs from a checkpoint,
no apex and no CUDA are needed.
"""

from __future__ import annotations

import dataclasses
import pickle
import warnings
from pathlib import Path

import torch

from cupl.config import check_value
from cupl.files import atomic_write

FORMAT = "cupl.ClipClassifier"
_LAYERS = (0, 3, 5)  # the Linear layers of the released `Regressor` (1: ReLU, 2 and 4: dropout)
_OFFICIAL_KEYS = {f"Regressor.{i}.{p}" for i in _LAYERS for p in ("weight", "bias")}
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that is neither the released layout nor cupl's own; the message says why."""


# ---------------------------------------------------------------------------------------
# Loading and saving


def _official_architecture(path, state: dict) -> dict:
    keys = set(state)
    if keys != _OFFICIAL_KEYS:
        raise CheckpointError(
            f"{path}: not the released stage-2 layout; missing keys {sorted(_OFFICIAL_KEYS - keys)}, "
            f"unknown keys {sorted(keys - _OFFICIAL_KEYS)}")
    w0, w3, w5 = (state[f"Regressor.{i}.weight"] for i in _LAYERS)
    if w3.shape[1] != w0.shape[0] or w5.shape[1] != w3.shape[0] or w5.shape[0] != 2:
        raise CheckpointError(
            f"{path}: layer shapes {tuple(w0.shape)}, {tuple(w3.shape)}, {tuple(w5.shape)} do not chain "
            f"into in -> h1 -> h2 -> 2")
    return {"in_dim": w0.shape[1], "hidden": (w0.shape[0], w3.shape[0]), "dropout": 0.8, "two_way": True}


def _read(path) -> dict:
    """The checkpoint's top-level dict, loaded weights-only on the CPU."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError as err:
        # torch's message goes on to advise weights_only=False, which would run whatever code
        # the file carries: never the advice for a file of unknown origin, so it is not repeated
        detail = str(err).partition("WeightsUnpickler error:")[2].strip()
        if "global" in detail.lower():
            objects = detail.split(" was not", 1)[0].removeprefix("Unsupported global:").strip()
            raise CheckpointError(
                f"{path}: holds pickled Python objects ({objects}) besides tensors and plain data; "
                f"they are not loaded, for safety (unpickling can run code). cupl reads "
                f"stage-2 checkpoints weights-only: the released UCF_0.8622.pth layout or a "
                f"file written by `cupl train --save`") from None
        reason = detail.splitlines()[0] if detail else "unreadable pickle data"
        raise CheckpointError(f"{path}: not a loadable checkpoint, damaged or of another format ({reason})") from None
    except Exception as err:  # torch raises RuntimeError or EOFError for other bad files
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({err})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict, got {type(blob).__name__}"
                              + (f" with keys {sorted(blob)}" if isinstance(blob, dict) else ""))
    return blob


def load_checkpoint(path):
    """A `ClipClassifier` in eval mode, on the CPU, from the released ``{"model": ...}`` file or
    a cupl file. Raises CheckpointError for any other layout (missing or unknown keys, shapes)."""
    from cupl.method.models import ClipClassifier

    blob = _read(path)
    state = blob["model"]
    if blob.get("format") == FORMAT:
        arch = dict(blob["architecture"])
    else:
        arch = _official_architecture(path, state)
        state = {k.replace("Regressor.", "regressor.", 1): v for k, v in state.items()}
    model = ClipClassifier(arch["in_dim"], tuple(arch["hidden"]), arch["dropout"], arch["two_way"])
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: state dict does not fit ClipClassifier{tuple(arch.values())}: {err}") from None
    return model.eval()


def load_config(path) -> dict:
    """The run configuration stored in a cupl checkpoint; {} for the released file."""
    return dict(_read(path).get("config", {}))


def _check_plain(value, where: str):
    """Configs must be plain data, so that weights-only loading can read them back."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"config key {where}.{k!r} must be a string")
            _check_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise ValueError(f"config value {where} has type {type(value).__name__}; use str, int, float, "
                         f"bool, None, lists or dicts")


def save_checkpoint(path, model, config=None) -> Path:
    """Write `model` (a ClipClassifier) and its run `config` (dict or dataclass) atomically."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    config = dict(config or {})
    _check_plain(config, "config")
    blob = {
        "format": FORMAT,
        "architecture": {"in_dim": model.in_dim, "hidden": list(model.hidden), "dropout": model.dropout,
                         "two_way": model.two_way},
        "config": config,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(blob, tmp))
    return path


# ---------------------------------------------------------------------------------------
# Scoring and evaluation


def score_split(model, split, window: int = 5, batch_size: int = 65536, device=None,
                crops: str = "each") -> torch.Tensor:
    """Anomaly probability of every clip of `split`: [N] on the CPU, list order (Sec. 3.4).

    Each crop of clip t is scored on ``concat(c_t, mean of the previous <= w clips)`` and the
    probabilities ``sigmoid(logit)`` (= softmax class 1 for the released head) are averaged
    over the crops; ``crops="mean"`` averages the crops' features first, for models trained
    that way. `batch_size` counts (clip, crop) inputs per forward pass, on `device`.
    """
    from cupl.experiments.train import prepare_split, score_clips

    if model.in_dim != 2 * split.features.shape[-1]:
        raise ValueError(
            f"classifier expects {model.in_dim}-d inputs = concat(clip, context) of {model.in_dim // 2}-d "
            f"clips, but the split has {split.features.shape[-1]}-d clips (shape {tuple(split.features.shape)})")
    device = torch.device(device) if device is not None else split.features.device
    split = prepare_split(split, crops, device)
    return score_clips(model.to(device), split, window, batch_size=batch_size).cpu()


def evaluate_checkpoint(checkpoint, bank, *, modality: str | None = None, window: int | None = None,
                        batch_size: int = 65536, device=None, progress: bool = True) -> dict:
    """Load `checkpoint`, score the test split of `bank`, and apply the field's protocol.

    modality, window: None takes them from a cupl checkpoint's config, else the released
    setting ("rgb", w = 5); the crop handling always comes from the config ("each" if none).
    Returns `cupl.evaluate.evaluate_scores`'s "auc", "ap", "pr_auc", "auc_abnormal", plus
    "metric" (the figure the paper reports for this bank's dataset: "pr_auc" for XD-Violence,
    whose Table 3 uses ``auc(recall, precision)``, else "auc"), "clip_scores" ([N] tensor,
    list order) and what was evaluated.
    """
    from cupl.data.bank import FeatureBank
    from cupl.method.evaluate import evaluate_scores

    model = load_checkpoint(checkpoint)
    config = load_config(checkpoint)
    modality = modality or config.get("modality", "rgb")
    trained_window = config.get("self_train", {}).get("window", 5)
    if window is None:
        window = trained_window
    else:
        window = check_value("self_train.window", window, name="window")
        if window != trained_window:
            warnings.warn(f"{checkpoint} was trained with the temporal context window w = {trained_window}; "
                          f"scoring with w = {window} changes every score and the metrics", stacklevel=2)
    crops = config.get("crops", "each")
    with FeatureBank.open(bank) as features:
        split = features.load_split("test", modality=modality, progress=progress)
    scores = score_split(model, split, window=window, batch_size=batch_size, device=device, crops=crops)
    result = dict(evaluate_scores(scores, split))
    result.update(metric="pr_auc" if split.attrs.get("source") == "xd-violence" else "auc",
                  clip_scores=scores, checkpoint=str(checkpoint), bank=str(bank), modality=modality,
                  window=window, crops=crops, num_videos=split.num_videos)
    return result


# ---------------------------------------------------------------------------------------
# `cupl evaluate`
