"""Evaluation on the real UCF-Crime test structure: frame-level curves against clip-weighted ones.

The 290 test videos of UCF-Crime with their real frame counts and annotated intervals
(`cupl.data.ucf`, 69,634 clips of 16 frames) get random clip scores. Both ways of computing
the protocol's ROC-AUC, AP, PR-AUC and abnormal-video AUC are timed side by side, best of
`--repeats`, and their results compared:

  frames    `protocol_arrays` (every clip's score repeated for its 16 frames) and
            scikit-learn on the 1.1M frames, as the field computes it;
  weighted  `evaluate_scores`: one sample per clip and label, weighted by its frame counts.

    python benchmarks/evaluation.py
    python benchmarks/evaluation.py --json benchmarks/results/evaluation.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from cupl.book.performance import write_result
from cupl.experiments.timing import cpu_name
from cupl.data.annotations import frame_mask
from cupl.data.split import Split
from cupl.data.ucf import load_ucf_test_annotations
from cupl.evaluate import evaluate_scores, frame_ap, frame_auc, pr_auc, protocol_arrays


def ucf_test_split() -> Split:
    """The UCF-Crime test split's structure (no features): ceil(frames / 16) clips a video."""
    videos = load_ucf_test_annotations()
    lengths = np.array([-(-v["num_frames"] // 16) for v in videos])
    return Split(features=torch.zeros(int(lengths.sum()), 1, 1),
                 offsets=torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)])),
                 labels=torch.tensor([int(v["category"] != "Normal") for v in videos]),
                 names=[v["name"] for v in videos], categories=[v["category"] for v in videos],
                 num_frames=torch.tensor([v["num_frames"] for v in videos]),
                 frame_labels=[frame_mask(v["intervals"], v["num_frames"])[0] for v in videos])


def by_frames(scores, split) -> dict[str, float]:
    s, y, abnormal = protocol_arrays(scores, split)
    return {"auc": frame_auc(s, y), "ap": frame_ap(s, y), "pr_auc": pr_auc(s, y),
            "auc_abnormal": frame_auc(s[abnormal], y[abnormal])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here, with the machine and date")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    split = ucf_test_split()
    scores = torch.rand(split.num_clips, generator=torch.Generator().manual_seed(args.seed))
    ways = {"frames": lambda: by_frames(scores, split), "weighted": lambda: evaluate_scores(scores, split)}
    best, results = {name: float("inf") for name in ways}, {}
    for _ in range(args.repeats):  # interleaved, against drifting load
        for name, fn in ways.items():
            start = time.perf_counter()
            results[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    diff = max(abs(results["frames"][k] - results["weighted"][k]) for k in results["frames"])
    print(f"UCF-Crime test structure: {split.num_videos} videos, {split.num_clips:,} clips, "
          f"{16 * split.num_clips:,} frames; {cpu_name()}, load average {os.getloadavg()[0]:.2f}\n")
    print("| way | seconds (best of %d) | AUC | AP | PR-AUC | AUC, abnormal videos |" % args.repeats)
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(f"| {name} | {best[name]:.3f} | {r['auc']:.6f} | {r['ap']:.6f} | {r['pr_auc']:.6f} | "
              f"{r['auc_abnormal']:.6f} |")
    print(f"\nframes / weighted time: {best['frames'] / best['weighted']:.1f}x; largest difference {diff:.1e}")
    if args.json:
        write_result(args.json, {
            "videos": split.num_videos, "clips": split.num_clips, "frames": 16 * split.num_clips,
            "repeats": args.repeats, "frames_s": best["frames"], "weighted_s": best["weighted"],
            "speedup": best["frames"] / best["weighted"], "max_abs_diff": diff, "metrics": results},
            load_before=load_before)
    return 0 if diff <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
