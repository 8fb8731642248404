"""Reading a whole split: one feature bank vs per-video .npy files (the RTFM layout).

Writes the first N training videos of a synthetic bank twice, as ``<name>_i3d.npy``
files of [T, crops, D] float32 (how RTFM and its successors ship I3D features) and as a
feature bank (per compression filter), then times turning each into the one [N, C, D]
float32 tensor the training loops use. Both are read from a warm page cache, right after
writing; the numbers compare the formats' decoding and per-file costs, not the disk.

    python benchmarks/bank_io.py --profile quick --videos 240
    python benchmarks/bank_io.py --profile full --videos 40     # 10 crops x 2048-d
"""

from __future__ import annotations

import argparse
import itertools
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cupl.data import synth
from cupl.data.bank import FeatureBank, write_bank


def read_npy_split(folder: Path, names: list[str]) -> torch.Tensor:
    """[N, C, D] float32: every video's .npy loaded and concatenated in list order."""
    arrays = [np.load(folder / f"{name}_i3d.npy", allow_pickle=False) for name in names]
    return torch.from_numpy(np.concatenate(arrays).astype(np.float32, copy=False))


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ucf", choices=sorted(synth.PRESETS))
    p.add_argument("--profile", default="quick", choices=sorted(synth.PROFILES))
    p.add_argument("--videos", type=int, default=240, help="training videos to write")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = p.parse_args(argv)

    videos = [v for v in itertools.islice(synth.generate(args.preset, args.profile, 0), args.videos)
              if v.split == "train"]
    names = [v.name for v in videos]
    attrs = synth.bank_attrs(args.preset, args.profile, 0)
    clips = sum(v.features["rgb"].shape[0] for v in videos)
    shape = videos[0].features["rgb"].shape[1:]
    print(f"{len(videos)} videos, {clips} clips of {shape[0]} crops x {shape[1]}-d "
          f"({args.preset}/{args.profile}); {platform.processor() or platform.machine()}, "
          f"torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        for v in videos:
            np.save(folder / f"{v.name}_i3d.npy", v.features["rgb"].astype(np.float32))
        npy_bytes = sum(f.stat().st_size for f in folder.glob("*_i3d.npy"))
        npy = best_of(args.repeats, lambda: read_npy_split(folder, names))
        print(f"{'per-video .npy float32':32s} {npy:8.3f} s  {npy_bytes / 2**20:9.1f} MiB")
        for dtype, compression in [("float16", "lzf"), ("float16", "gzip"), ("float16", None),
                                   ("float32", "lzf")]:
            path = folder / f"bank_{dtype}_{compression}.h5"
            write_bank(path, videos, attrs=attrs, dtype=dtype, progress=False, compression=compression)
            with FeatureBank.open(path) as bank:
                seconds = best_of(args.repeats, lambda: bank.load_split("train"))
            label = f"bank {dtype} {compression or 'uncompressed'}"
            print(f"{label:32s} {seconds:8.3f} s  {path.stat().st_size / 2**20:9.1f} MiB  "
                  f"bank / npy time = {seconds / npy:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
