"""`cupl evaluate`: evaluate a stage-2 checkpoint (cupl's or the released one) on a bank."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from cupl.experiments.checkpoint import CheckpointError, evaluate_checkpoint
from cupl.files import atomic_write
from cupl.method.evaluate import frame_scores


def configure_parser(parser):
    parser.add_argument("--checkpoint", required=True, help="stage-2 checkpoint (released UCF_0.8622.pth or cupl's)")
    parser.add_argument("--bank", required=True, help="feature bank (.h5) with a test split")
    parser.add_argument("--modality", choices=["rgb", "audio", "rgb+audio"],
                        help="features to score (default: the checkpoint's config, else rgb)")
    parser.add_argument("--window", type=int,
                        help="temporal context window w (default: the checkpoint's config, else 5)")
    parser.add_argument("--batch-size", type=int, default=65536,
                        help="(clip, crop) inputs per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    parser.add_argument("--json", help="write the metrics to this JSON file")
    parser.add_argument("--frame-scores", help="write the frame scores (16 per clip, list order) to this .npy")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args) -> int:
    try:
        result = evaluate_checkpoint(args.checkpoint, args.bank, modality=args.modality, window=args.window,
                                     batch_size=args.batch_size, device=args.device,
                                     progress=not args.no_progress)
    except (CheckpointError, ValueError) as err:
        print(f"cupl evaluate: {err}", file=sys.stderr)
        return 1
    clip_scores = result.pop("clip_scores")
    print(f"{result['num_videos']} test videos of {args.bank}, {result['modality']}, w = {result['window']}")
    for key, what in (("auc", "frame ROC-AUC (Tables 1, 2)"), ("pr_auc", "AP as auc(recall, precision) (Table 3)"),
                      ("ap", "AP, scikit-learn average_precision_score"),
                      ("auc_abnormal", "ROC-AUC on abnormal videos only")):
        mark = "*" if key == result["metric"] else " "
        print(f"{mark} {key:>12} {result[key]:.4f}  {what}")
    status = 0
    if args.json:
        text = json.dumps(result, indent=2, default=float)
        status |= _write(args.json, lambda tmp: Path(tmp).write_text(text))
    if args.frame_scores:
        frames = frame_scores(clip_scores).numpy()
        status |= _write(args.frame_scores, lambda tmp: _save_npy(tmp, frames))
    return status


def _write(path, write) -> int:
    """atomic_write, with a failure (a full disk, a read-only folder) named: 0 written, 1 not."""
    try:
        atomic_write(path, write)
    except OSError as err:
        print(f"cupl evaluate: could not write {path}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _save_npy(path, array) -> None:
    with open(path, "wb") as fp:  # a file object: np.save would append .npy to a path
        np.save(fp, array)
