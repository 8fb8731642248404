"""Draw the README figure, book/_static/pooling.png: a 3000-clip video with a one-clip and a
long event, before and after segment pooling (Sec. 3.1; the example of the pooling chapter).

    python book/readme_figure.py
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cupl.pooling import boundaries, segment  # noqa: E402

OUT = Path(__file__).resolve().parent / "_static" / "pooling.png"


def video(rng: np.random.Generator, num_clips: int = 3000) -> np.ndarray:
    """[T] a background of noise, a one-clip event at 30 % and a long event at 60-80 %."""
    signal = 0.05 * rng.standard_normal(num_clips)
    signal[int(0.3 * num_clips)] += 1.0
    signal[int(0.6 * num_clips):int(0.8 * num_clips)] += 1.0
    return signal


def main() -> Path:
    clips = video(np.random.default_rng(0))
    num_clips = len(clips)
    fig, ax = plt.subplots(figsize=(8, 2.6), dpi=120)
    position = np.arange(num_clips) / num_clips
    ax.plot(position, clips, color="0.65", lw=0.6, label=f"{num_clips} clip features")
    edges = boundaries(num_clips, 32) / num_clips
    ax.stairs(segment(clips, 32), edges, color="C3", lw=2, zorder=3,
              label="32 segments (mean of clips)")
    ax.annotate("one-clip event:\naveraged away", xy=(0.3, 0.03), xytext=(0.33, 0.55),
                arrowprops={"arrowstyle": "->"})
    ax.set_xlabel("position in the video")
    ax.set_ylabel("evidence")
    ax.set_ylim(-0.3, 1.5)
    ax.legend(loc="upper left", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_name(f".{OUT.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, OUT)
    return OUT


if __name__ == "__main__":
    print(main())
