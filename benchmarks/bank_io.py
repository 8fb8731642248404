"""Reading a whole split: one feature bank vs per-video .npy files (the RTFM layout).

Writes the first N training videos of a synthetic bank as ``<name>_i3d.npy`` files of
[T, crops, D] float32 (how RTFM and its successors ship I3D features) and as feature banks
(the default format, float16 with Fletcher-32 checksums, and the same without checksums),
then times turning each into the one [N, C, D] float32 CPU tensor the training loops use:
opening, reading and converting, best of `--repeats`, the readers taking turns; wall-clock
time and, steadier on a shared machine, the process's CPU time.

warm: the files in the page cache (read just before). cold: the page cache dropped before
every read, with ``sync; echo 3 > /proc/sys/vm/drop_caches`` where allowed (root), else
with ``posix_fadvise(POSIX_FADV_DONTNEED)`` on the files read (the output says which).

    python benchmarks/bank_io.py --profile quick --videos 240
    python benchmarks/bank_io.py --profile full --videos 40 --json out.json   # 10 crops x 2048-d
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cupl.book.performance import write_result
from cupl.data import bank as bank_module
from cupl.data import synth
from cupl.data.bank import FeatureBank, write_bank
from cupl.files import drop_from_page_cache


def read_npy_split(folder: Path, names: list[str]) -> torch.Tensor:
    """[N, C, D] float32: every video's .npy loaded and concatenated in list order."""
    arrays = [np.load(folder / f"{name}_i3d.npy", allow_pickle=False) for name in names]
    return torch.from_numpy(np.concatenate(arrays).astype(np.float32, copy=False))


def read_bank_split(path: Path) -> torch.Tensor:
    with FeatureBank.open(path) as bank:
        return bank.load_split("train").features


def drop_caches() -> str | None:
    """Drop the whole page cache; None if done, else why not."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as err:
        return f"drop_caches failed ({err.strerror or err})"
    return None


def evict(paths: list[Path]):
    """Ask the kernel to forget the (clean) cached pages of `paths`."""
    for p in paths:
        if not drop_from_page_cache(p):
            raise OSError(f"{p}: this system cannot drop a file from the page cache (no posix_fadvise)")


def timings(readers: dict, repeats: int, before=None) -> tuple[dict[str, float], dict[str, float]]:
    """Best wall-clock and best CPU time of each reader; the readers take turns so that load
    from other processes hits all of them alike."""
    wall, cpu = ({k: [] for k in readers} for _ in range(2))
    for _ in range(repeats):
        for key, (read, files) in readers.items():
            if before is not None:
                before(files)
            start, start_cpu = time.perf_counter(), time.process_time()
            read()
            wall[key].append(time.perf_counter() - start)
            cpu[key].append(time.process_time() - start_cpu)
    return {k: min(v) for k, v in wall.items()}, {k: min(v) for k, v in cpu.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ucf", choices=sorted(synth.PRESETS))
    p.add_argument("--profile", default="quick", choices=sorted(synth.PROFILES))
    p.add_argument("--videos", type=int, default=240, help="training videos to write")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cold-method", choices=["drop_caches", "fadvise"], default="drop_caches")
    p.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    p.add_argument("--chunk-kib", type=int, default=None,
                   help="chunk size of the banks (default: cupl.data.bank.CHUNK_BYTES)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)")
    p.add_argument("--json", default=None, help="write the timings here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    if args.chunk_kib:
        bank_module.CHUNK_BYTES = args.chunk_kib * 2**10

    videos = [v for v in itertools.islice(synth.generate(args.preset, args.profile, 0), args.videos)
              if v.split == "train"]
    names = [v.name for v in videos]
    attrs = synth.bank_attrs(args.preset, args.profile, 0)
    clips = sum(v.features["rgb"].shape[0] for v in videos)
    shape = videos[0].features["rgb"].shape[1:]
    print(f"{len(videos)} videos, {clips} clips of {shape[0]} crops x {shape[1]}-d "
          f"({args.preset}/{args.profile}); {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"torch threads {torch.get_num_threads()}, bank chunks {bank_module.CHUNK_BYTES // 2**10} KiB")

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        npy_files = [folder / f"{name}_i3d.npy" for name in names]
        for v, f in zip(videos, npy_files):
            np.save(f, v.features["rgb"].astype(np.float32))
        bank, unchecked = folder / "bank.h5", folder / "bank_unchecked.h5"
        write_bank(bank, videos, attrs=attrs, progress=False)
        write_bank(unchecked, videos, attrs=attrs, progress=False, checksum=False)
        readers = {"npy": (lambda: read_npy_split(folder, names), npy_files),
                   "bank": (lambda: read_bank_split(bank), [bank]),
                   "bank_unchecked": (lambda: read_bank_split(unchecked), [unchecked])}
        sizes = {"npy": sum(f.stat().st_size for f in npy_files), "bank": bank.stat().st_size,
                 "bank_unchecked": unchecked.stat().st_size}
        expected = read_npy_split(folder, names).half().float()
        assert all(torch.equal(read_bank_split(b), expected) for b in (bank, unchecked))

        warm, warm_cpu = timings(readers, args.repeats)
        note = drop_caches() if args.cold_method == "drop_caches" else "fadvise asked for"
        method = "drop_caches" if note is None else "fadvise"
        cold, cold_cpu = timings(readers, args.repeats,
                                 before=lambda files: drop_caches() if method == "drop_caches" else evict(files))

    label = {"npy": "per-video .npy float32", "bank": "bank float16 checksummed",
             "bank_unchecked": "bank float16 no checksums"}
    print(f"cold: page cache dropped with {method}" + (f" ({note})" if note else ""))
    print(f"{'':28s} {'warm':>8s} {'cold':>8s} {'warm CPU':>9s} {'cold CPU':>9s} {'MiB':>8s}"
          f"  warm / npy  cold / npy")
    for key in readers:
        print(f"{label[key]:28s} {warm[key]:7.3f}s {cold[key]:7.3f}s {warm_cpu[key]:8.3f}s "
              f"{cold_cpu[key]:8.3f}s {sizes[key] / 2**20:8.1f}  "
              f"{warm[key] / warm['npy']:10.2f}  {cold[key] / cold['npy']:10.2f}")
    for what, a, b in (("wall", warm, cold), ("CPU", warm_cpu, cold_cpu)):
        print(f"checksums ({what} time): warm {a['bank'] / a['bank_unchecked']:.2f}x, "
              f"cold {b['bank'] / b['bank_unchecked']:.2f}x the time without")
    if args.json:
        result = dict(npy_s=warm["npy"], bank_s=warm["bank"], cold_npy_s=cold["npy"], cold_bank_s=cold["bank"],
                      bank_unchecked_s=warm["bank_unchecked"], cold_bank_unchecked_s=cold["bank_unchecked"],
                      cpu_s={k: [warm_cpu[k], cold_cpu[k]] for k in readers},
                      cold_method=method, cold_note=note, bytes=sizes, videos=len(videos), clips=clips,
                      profile=args.profile, preset=args.preset, repeats=args.repeats,
                      torch_threads=torch.get_num_threads(), chunk_bytes=bank_module.CHUNK_BYTES)
        write_result(args.json, result, load_before=load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
