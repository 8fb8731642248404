"""Worker processes that make the missing runs of a sweep side by side, one per CPU core.

Each process loads the bank once and is kept for later sweeps of the same `Data`; runs that
share a stage-1 model go to one process, so no f_g is trained twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys

import torch

from cupl.config import from_dict, to_dict
from cupl.experiments.cache import cache_path, cache_writable, load_stage1, run_once, stage1_key, store_stage1
from cupl.experiments.loading import Data, load_data
from cupl.experiments.train import stage1
from cupl.util import progress as progress_bar


def default_workers(data: Data, device: str = "cpu") -> int:
    """Processes for `prefetch`: $CUPL_WORKERS if set; else, on the CPU, one per core up to 4
    when both splits' features fit in 256 MiB (each process holds a copy, and torch, about
    0.4 GB), one otherwise; one on CUDA, where a run already fills the device.

    A stage-1 step of the quick profile runs only 1.2x faster on two threads than on one, so
    two one-thread processes make the runs of a sweep faster than one two-thread process
    (measured side by side by `benchmarks/pipeline.py`).
    """
    if os.environ.get("CUPL_WORKERS"):
        try:
            workers = int(os.environ["CUPL_WORKERS"])
        except ValueError:
            raise ValueError(f"CUPL_WORKERS must be a whole number of processes, got {os.environ['CUPL_WORKERS']!r}")
        if workers < 1:
            raise ValueError(f"CUPL_WORKERS must be at least 1, got {workers}")
        return workers
    size = data.train.features.nbytes + data.test.features.nbytes
    if torch.device(device).type != "cpu" or size > 2**28:
        return 1
    return min(os.cpu_count() or 1, 4)

def prefetch(data: Data, configs, *, keep: bool = False, workers: int | None = None, progress: bool = False) -> int:
    """Make what `configs` still lack in `workers` processes side by side (started once per `data`
    and kept for later calls), into `data.cache`:
    each whole run (keep=False) or, for keep=True, only its stage-1 model (the models, scores
    and arrays that keep=True returns stay in the calling process, which then runs stage 2).

    Runs that share a stage-1 model go to one process, one after another, so no f_g is trained
    twice. Every process runs the same code on the same bank with the same seeds, so the
    results are those of the calling process, up to float rounding where thread counts differ.
    Does nothing without a disk cache that can be written, with one worker or with fewer than
    two jobs.
    returns: the number of jobs made.
    """
    configs = list(configs)
    if not configs or data.cache is None:
        return 0
    workers = default_workers(data, configs[0].device) if workers is None else workers
    jobs: dict[tuple, list[dict]] = {}
    cost: dict[tuple, tuple] = {}
    for config in configs:
        key = stage1_key(config)
        trained = key in data.generators or cache_path(data, "f_g", key).is_file()
        if trained:
            if keep:
                continue
            run_key = json.dumps(to_dict(config), sort_keys=True)
            if run_key in data.runs or cache_path(data, "run", run_key).is_file():
                continue
        group = jobs.setdefault(key, [])
        if not (keep and group):
            group.append(to_dict(config))
        g = config.generator
        stage1_cost, stage2_cost = cost.get(key, (0 if trained else g.steps * g.batch_size * g.num_heads, 0))
        cost[key] = (stage1_cost, stage2_cost + (0 if keep else config.self_train.iterations * config.clip.epochs))
    # workers hand their results over through the cache: without one that can be written they
    # would only compute what this process computes again
    if workers <= 1 or len(jobs) < 2 or not cache_writable(data.cache):
        return 0
    # the longest jobs first, so that no process is left with a long one while the others wait
    jobs = dict(sorted(jobs.items(), key=lambda item: cost[item[0]], reverse=True))
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    pool = _pool(data, workers)
    with _main_hidden():  # workers start on submit
        futures = {pool.submit(_worker_job, group, keep): group for group in jobs.values()}
    for future in progress_bar(as_completed(futures), progress, total=len(futures), desc=f"{workers} processes"):
        try:
            future.result()
        except BrokenProcessPool as err:
            data.pool = None
            raise RuntimeError(f"prefetch: a worker process died (out of memory?); run with workers=1 "
                               f"to make the runs in this process ({err})") from err
        except Exception as err:
            config = futures[future][0]
            raise RuntimeError(f"prefetch: the run with seed {config['seed']} and generator "
                               f"{config['generator']} failed in a worker process: {err}") from err
    return len(jobs)

def _pool(data: Data, workers: int):
    """The processes of `data`, started once and kept for later sweeps: starting one costs
    seconds (torch, the package and the bank are loaded again)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if data.pool is not None and data.pool[0] == workers:
        return data.pool[1]
    end_workers(data)
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: a forked child of a process that has started OpenMP threads can hang
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                               initargs=(str(data.path), data.modality, str(data.cache), threads))
    data.pool = (workers, pool)
    return pool

def end_workers(data: Data) -> None:
    """End the worker processes of `data`, if it has any (a bank used for one grid only)."""
    if data.pool is not None:
        data.pool[1].shutdown()
        data.pool = None

@contextlib.contextmanager
def _main_hidden():
    """Spawned processes run the caller's main script again before their work, unless it is
    hidden; the workers need nothing from it, and a script without an
    ``if __name__ == "__main__":`` guard would start its own work again in each of them."""
    main = sys.modules["__main__"]
    saved = {key: main.__dict__[key] for key in ("__file__", "__spec__") if key in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)

_WORKER: dict = {}

def quiet_interrupt() -> None:
    """Make SIGINT end this worker process at once and silently. A Jupyter kernel interrupts
    its whole process group when it shuts down, and Ctrl-C reaches every process of the
    terminal's group: the calling process reports the interrupt, once; each worker would
    otherwise print a KeyboardInterrupt traceback. Its cache writes are atomic, so an
    interrupted one leaves nothing that looks finished."""
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(128 + signum))


def _worker_start(path: str, modality: str, cache: str, threads: int) -> None:
    quiet_interrupt()
    torch.set_num_threads(threads)
    _WORKER["data"] = load_data(path, modality=modality, cache=cache)

def _worker_job(configs: list[dict], keep: bool) -> None:
    data = _WORKER["data"]
    for saved in configs:
        config = from_dict(saved)
        if keep:
            key = stage1_key(config)
            if load_stage1(data, key, config) is None:
                store_stage1(data, key, stage1(config, data.train))
        else:
            run_once(data, config, keep=False)
