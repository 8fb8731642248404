"""Timing and memory of the stages of a run: seconds and CUDA peak bytes per stage, what to turn
when a stage runs out of memory, and the processor's name for reports."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cupl.experiments.steps import sync


# The setting that bounds the memory of each stage of `run`, named when a stage runs out of it.
MEMORY_KNOBS = {"stage1": "generator.batch_size", "mc_dropout": "eval_batch_size",
                "train": "clip.batch_size", "score": "eval_batch_size"}

def is_out_of_memory(err: RuntimeError) -> bool:
    text = str(err)
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text

def memory_advice(key: str, config, device: torch.device) -> str:
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


class StageTimer:
    """Calls `fn` as stage `key` of a run: adds its seconds to `timings[key]`, its CUDA peak bytes
    to `peak_memory[key]`, and turns an out-of-memory error into `memory_advice`."""

    def __init__(self, config, device: torch.device):
        self.config, self.device = config, device
        self.timings: dict[str, float] = {}
        self.peak_memory: dict[str, int] = {}

    def __call__(self, key: str, fn, *args, **kw):
        cuda = self.device.type == "cuda"
        sync(self.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kw)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            raise type(err)(memory_advice(key, self.config, self.device)) from err
        sync(self.device)
        self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - t0
        if cuda:
            self.peak_memory[key] = max(self.peak_memory.get(key, 0), torch.cuda.max_memory_allocated(self.device))
        return out


def stage_totals(timings) -> dict[str, float]:
    """Seconds per stage, summed over runs' `timings` (RunResult.timings) with the iterations
    folded together: "iter1.train" and "iter2.train" both count as "train"."""
    out: dict[str, float] = {}
    for run_timings in timings:
        for key, seconds in run_timings.items():
            stage = key.split(".")[-1]
            out[stage] = out.get(stage, 0.0) + seconds
    return out


def cpu_name() -> str:
    """The processor's model name, for provenance and benchmark reports."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
