"""Experiments the notebooks run: banks by name, multi-seed runs, ablation rows, sweeps.

Every training result is reported over several seeds as mean ± spread, from the final
model of each run (never the best iteration on the test set). Runs that differ only in
stage 2 share one stage-1 model f_g per seed, and a run repeated with the same configuration
(the default point of one sweep is a point of the next, chapters share their default runs) is
made once: in memory within a `Data`, and between notebooks on disk when `Data.cache` names a
folder. Both are keyed by the bank's digest, the `cupl` sources and the torch version, with
every setting stage 1 reads for a generator and the whole configuration for a run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cupl.config import RunConfig, make_config, to_dict
from cupl.data.split import Split
from cupl.train import RunResult, run

METRICS = ("auc", "ap", "pr_auc", "auc_abnormal")


def default_cache() -> Path:
    """Where embedded banks are cached: $CUPL_CACHE, else `.cupl-cache/banks` of the checkout."""
    if os.environ.get("CUPL_CACHE"):
        return Path(os.environ["CUPL_CACHE"])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists() and (folder / "cupl").is_dir():
            return folder / ".cupl-cache" / "banks"
    return Path.home() / ".cache" / "cupl" / "banks"


def resolve_bank(bank: str | os.PathLike, profile: str = "quick") -> Path:
    """The bank a notebook should read: `bank` if given, else the embedded benchmark of `profile`."""
    if bank:
        path = Path(bank).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"bank {path} does not exist (give a .h5 from `cupl synth` or `cupl import`)")
        return path
    from cupl.book import synthetic_bank

    return synthetic_bank(profile, default_cache(), progress=False)


@dataclass
class Data:
    """A bank loaded for training: both splits and, for synthetic banks, the train oracle."""

    path: Path
    attrs: dict
    train: Split
    test: Split
    oracle: torch.Tensor | None
    generators: dict = field(default_factory=dict)  # stage-1 models shared by runs that differ only later
    cache: Path | None = None  # stage-1 models and run results shared between processes; None: memory only
    runs: dict = field(default_factory=dict)  # whole runs by configuration: a sweep's default point is another's
    modality: str = "rgb"  # the features `train` and `test` hold
    pool: tuple | None = field(default=None, repr=False, compare=False)  # (workers, executor) of `prefetch`

    @cached_property
    def digest(self) -> str:
        """What a model or a result of this bank depends on besides its settings: the
        bank's content, the `cupl` sources and the torch version."""
        from cupl.book import bank_digest, package_digest

        return hashlib.sha256(f"{bank_digest(self.path)} {package_digest()} {torch.__version__}".encode()).hexdigest()

    @property
    def preset(self) -> str:
        """The paper preset matching the bank: ucf, xd or tad."""
        for key in ("preset", "dataset"):
            if str(self.attrs.get(key, "")) in ("ucf", "xd", "tad"):
                return str(self.attrs[key])
        return "ucf"


def load_data(bank: str | os.PathLike, profile: str = "quick", modality: str = "rgb", *,
              cache: str | os.PathLike | None = "default") -> Data:
    """Both splits of `bank` (the embedded benchmark of `profile` when empty) and its train oracle.

    cache: where stage-1 models and run results are shared between notebooks; "default" is
    `default_cache() / "experiments"`, None keeps them in memory only.
    """
    from cupl.data.bank import BankError, FeatureBank

    if cache == "default":
        cache = default_cache() / "experiments"

    path = resolve_bank(bank, profile)
    with FeatureBank.open(path) as fb:
        train = fb.load_split("train", modality=modality)
        test = fb.load_split("test", modality=modality)
        try:
            oracle = fb.oracle_split_labels("train", modality=modality)
        except BankError:
            oracle = None
        return Data(path, dict(fb.attrs), train, test, oracle, cache=Path(cache) if cache is not None else None,
                    modality=modality)


def stage1_key(config: RunConfig) -> tuple:
    """Every setting stage 1 reads (Algorithm 1, l. 2-5), and nothing else.

    With one head or without L_diver, Eq. 7 is L_MIL alone: alpha and the diversity switches
    then change nothing, so K = 1 of Table 5 shares its f_g with the baseline of Table 4.
    mc_passes is read after stage 1 (the first pseudo labels) and is left out.
    """
    g = dataclasses.asdict(config.generator)
    del g["mc_passes"]
    if g["num_heads"] == 1 or not g["diversity"]:
        g.update(diversity=False, alpha=0.0, diversity_on_normal=False)
    return (tuple(sorted(g.items())), config.seed, config.crops, config.modality, config.device, config.amp)


def _cached(data: Data, kind: str, key) -> Path | None:
    """The file of `key` in the disk cache (None without one): `kind`-<digest>."""
    if data.cache is None:
        return None
    name = hashlib.sha256(json.dumps([data.digest, repr(key)]).encode()).hexdigest()[:24]
    return data.cache / f"{kind}-{name}"


def _write_atomic(path: Path, write) -> None:
    """write(tmp) into a temporary file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_stage1(data: Data, key: tuple, config: RunConfig):
    """The stage-1 model of `key` from memory or the disk cache, else None."""
    if key in data.generators:
        return data.generators[key]
    path = _cached(data, "f_g", key)
    if path is None or not path.is_file():
        return None
    from cupl.models import MultiHeadClassifier

    g = config.generator
    model = MultiHeadClassifier(data.train.features.shape[-1], g.num_heads, g.hidden, g.dropout)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    data.generators[key] = model.eval()
    return model


def _store_stage1(data: Data, key: tuple, model) -> None:
    """Keep a stage-1 model in memory and in the disk cache."""
    data.generators[key] = model
    path = _cached(data, "f_g", key)
    if path is not None and not path.is_file():
        _write_atomic(path, lambda tmp: torch.save(model.state_dict(), tmp))


def _load_run(data: Data, run_key: str) -> RunResult | None:
    """A run's results from the disk cache: config, metrics, history and timings, without
    models, test scores or arrays (enough for `run_seeds` with keep=False). None if absent."""
    path = _cached(data, "run", run_key)
    if path is None or not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return RunResult(saved["config"], saved["metrics"], saved["history"], saved["timings"],
                     generator=None, classifier=None, test_scores=None)


def _store_run(data: Data, run_key: str, result: RunResult) -> None:
    path = _cached(data, "run", run_key)
    if path is not None and not path.is_file():
        saved = {k: getattr(result, k) for k in ("config", "metrics", "history", "timings")}
        _write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(saved)))


def run_seeds(data: Data, seeds, *, preset: str | None = None, profile: str = "quick", variant: str = "full",
              progress: bool = False, keep: bool = False, workers: int | None = None, **overrides):
    """Run one configuration once per seed.

    workers: processes that make the missing runs side by side (`prefetch`); None: `default_workers`.
    returns: (runs, history) DataFrames — one row per seed with the final metrics, and one row
    per (seed, iteration); with keep=True also the list of RunResults.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    preset = preset or data.preset
    configs = [make_config(preset, profile, variant, seed=seed, **overrides) for seed in seeds]
    prefetch(data, configs, keep=keep, workers=workers, progress=progress)
    rows, history, results = [], [], []
    for seed, config in zip(_bar(seeds, progress, desc=f"{variant} seeds"), configs):
        result = _run_once(data, config, keep)
        rows.append({"seed": seed, **result.metrics, "seconds": sum(result.timings.values())})
        history += [{"seed": seed, **h} for h in result.history]
        if keep:
            results.append(result)
    out = (pd.DataFrame(rows), pd.DataFrame(history))
    return (*out, results) if keep else out


def _run_once(data: Data, config: RunConfig, keep: bool) -> RunResult:
    """`train.run` of `config`, or the same run made earlier (memory, then disk cache).

    keep=True needs the models, scores and arrays of a run, which only a run made in this
    process with keep=True holds; anything else is run again.
    """
    run_key = json.dumps(to_dict(config), sort_keys=True)
    done = data.runs.get(run_key) or (None if keep else _load_run(data, run_key))
    if done is not None and (done.arrays or not keep):
        data.runs[run_key] = done
        return done
    key = stage1_key(config)
    result = run(config, data.train, data.test, oracle=data.oracle, progress=False, keep_arrays=keep,
                 generator_model=_load_stage1(data, key, config))
    _store_stage1(data, key, result.generator)
    _store_run(data, run_key, result)
    data.runs[run_key] = result
    return result


def default_workers(data: Data, device: str = "cpu") -> int:
    """Processes for `prefetch`: $CUPL_WORKERS if set; else, on the CPU, one per core up to 4
    when both splits' features fit in 256 MiB (each process holds a copy, and torch, about
    0.4 GB), one otherwise; one on CUDA, where a run already fills the device.

    A stage-1 step of the quick profile runs only 1.2x faster on two threads than on one, so
    two one-thread processes make the runs of a sweep faster than one two-thread process
    (the book's performance appendix, *Building the book*).
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
    Does nothing without a disk cache, with one worker or with fewer than two jobs.
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
        trained = key in data.generators or _cached(data, "f_g", key).is_file()
        if trained:
            if keep:
                continue
            run_key = json.dumps(to_dict(config), sort_keys=True)
            if run_key in data.runs or _cached(data, "run", run_key).is_file():
                continue
        group = jobs.setdefault(key, [])
        if not (keep and group):
            group.append(to_dict(config))
        g = config.generator
        stage1_cost, stage2_cost = cost.get(key, (0 if trained else g.steps * g.batch_size * g.num_heads, 0))
        cost[key] = (stage1_cost, stage2_cost + (0 if keep else config.self_train.iterations * config.clip.epochs))
    if workers <= 1 or len(jobs) < 2:
        return 0
    # the longest jobs first, so that no process is left with a long one while the others wait
    jobs = dict(sorted(jobs.items(), key=lambda item: cost[item[0]], reverse=True))
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    pool = _pool(data, workers)
    with _main_hidden():  # workers start on submit
        futures = {pool.submit(_worker_job, group, keep): group for group in jobs.values()}
    for future in _bar(as_completed(futures), progress, total=len(futures), desc=f"{workers} processes"):
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
    if data.pool is not None:
        data.pool[1].shutdown()
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn: a forked child of a process that has started OpenMP threads can hang
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_start,
                               initargs=(str(data.path), data.modality, str(data.cache), threads))
    data.pool = (workers, pool)
    return pool


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


def _worker_start(path: str, modality: str, cache: str, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["data"] = load_data(path, modality=modality, cache=cache)


def _worker_job(configs: list[dict], keep: bool) -> None:
    from cupl.config import from_dict
    from cupl.train import stage1

    data = _WORKER["data"]
    for saved in configs:
        config = from_dict(saved)
        if keep:
            key = stage1_key(config)
            if _load_stage1(data, key, config) is None:
                _store_stage1(data, key, stage1(config, data.train))
        else:
            _run_once(data, config, keep=False)


def grid(data: Data, name: str, values, seeds, *, key: str | None = None, variant: str = "full",
         profile: str = "quick", preset: str | None = None, progress: bool = True, workers: int | None = None,
         **overrides) -> pd.DataFrame:
    """One row per (value, seed): a hyperparameter sweep (K, alpha, R, j) or the variants of Table 4.

    name: the column name; key: the dotted config key set to each value (None when `values`
    are variant names, as for the ablation). workers: as in `run_seeds`, over the whole grid.
    """
    values = list(values)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    preset = preset or data.preset

    def settings(value):
        extra = dict(overrides)
        if key is not None:
            extra[key] = value
        return value if key is None else variant, extra

    prefetch(data, [make_config(preset, profile, v, seed=seed, **extra)
                    for v, extra in map(settings, values) for seed in seed_list],
             workers=workers, progress=progress)
    frames = []
    for value in _bar(values, progress, desc=name):
        row_variant, extra = settings(value)
        runs, _ = run_seeds(data, seed_list, preset=preset, profile=profile, variant=row_variant, workers=1,
                            **extra)
        runs.insert(0, name, value)
        frames.append(runs)
    return pd.concat(frames, ignore_index=True)


def summarize(frame: pd.DataFrame, by, metrics=("auc",), scale: float = 100.0) -> pd.DataFrame:
    """Mean, standard deviation and count per group, metrics scaled to percent."""
    by = [by] if isinstance(by, str) else list(by)
    out = frame.groupby(by, sort=False)[list(metrics)].agg(["mean", "std", "count"])
    for m in metrics:
        out[(m, "mean")] *= scale
        out[(m, "std")] *= scale
    return out


def mean_pm(frame: pd.DataFrame, by, metric: str = "auc", scale: float = 100.0, digits: int = 2) -> pd.Series:
    """'mean ± std (n)' strings per group, the form the book's tables use."""
    s = summarize(frame, by, (metric,), scale)[metric]
    return s.apply(lambda r: f"{r['mean']:.{digits}f} ± {r['std']:.{digits}f} (n={int(r['count'])})", axis=1)


def gain(treated: pd.DataFrame, control: pd.DataFrame, metric: str = "auc", scale: float = 100.0):
    """treated - control in points: the difference of the seed means and its spread.

    treated, control: one row per seed (`run_seeds`, or a slice of `grid`).
    returns: (difference, spread) with spread = sqrt(std_t^2 + std_c^2), the standard
    deviation of the difference of two single runs, as `cupl.diagnostics.verdict` judges
    it; NaN with a single seed on either side.
    """
    a, b = treated[metric].to_numpy(float) * scale, control[metric].to_numpy(float) * scale
    if a.size == 0 or b.size == 0:
        raise ValueError(f"gain: needs seeds on both sides, got {a.size} and {b.size} rows of {metric!r}")
    spread = float(np.hypot(a.std(ddof=1), b.std(ddof=1))) if min(a.size, b.size) > 1 else float("nan")
    return float(a.mean() - b.mean()), spread


def paper_verdict(treated: pd.DataFrame, control: pd.DataFrame, paper_gain: float, metric: str = "auc",
                  scale: float = 100.0, digits: int = 2) -> str:
    """Does a gain the paper reports (points, on real features) reproduce on this bank?

    Judged by direction only: sizes measured on another bank are not comparable. "reproduces"
    when our difference exceeds its spread with the paper's sign; otherwise it "does not
    reproduce here", because there is no clear difference or because the sign is reversed.
    """
    diff, spread = gain(treated, control, metric, scale)
    numbers = f"{diff:+.{digits}f} ± {spread:.{digits}f} points here, {paper_gain:+.{digits}f} in the paper"
    if not abs(diff) > spread:  # also when spread is NaN (one seed)
        return f"does not reproduce here: no clear difference ({numbers})"
    if np.sign(diff) != np.sign(paper_gain):
        return f"does not reproduce here: the sign is reversed ({numbers})"
    return f"reproduces in direction ({numbers})"


def best_setting(frame: pd.DataFrame, by: str, metric: str = "auc", scale: float = 100.0, digits: int = 2) -> str:
    """The value of `by` with the highest mean `metric`, and which others are not clearly worse.

    Another value is "within one standard deviation" of the best when the difference of the
    means is at most sqrt(std_best^2 + std_other^2), as in `gain`.
    """
    s = summarize(frame, by, (metric,), scale)[metric]
    best = s["mean"].idxmax()
    spread = np.hypot(s["std"].fillna(np.inf), s.loc[best, "std"])
    close = [v for v in s.index if v != best and s.loc[best, "mean"] - s.loc[v, "mean"] <= spread[v]]
    head = (f"{by} = {best} gives the highest mean {metric.upper()}, "
            f"{s.loc[best, 'mean']:.{digits}f} ± {s.loc[best, 'std']:.{digits}f}")
    if not close:
        return f"{head}; every other value is lower by more than one standard deviation"
    return f"{head}; {', '.join(f'{by} = {v}' for v in close)} within one standard deviation of it"


def paper_table(preset: str, ours: str | None = None, label: str = "cupl, this bank") -> pd.DataFrame:
    """Table 1, 2 or 3 of the paper (`cupl.paper.TABLES`), its numbers in a column labelled as the
    paper's, and `ours` (e.g. a `mean_pm` string) beside the paper's own I3D row in a column `label`."""
    from cupl import paper

    if preset not in paper.TABLES:
        raise ValueError(f"paper_table: no table for preset {preset!r}; choose from {sorted(paper.TABLES)}")
    table = pd.DataFrame(paper.TABLES[preset])
    metric = table.columns[-1]
    table = table.rename(columns={metric: f"{metric.upper()} (%), the paper's"})
    table[label] = ""
    own = table["method"].str.contains("this method") & (table["feature"] == "I3D")
    table.loc[own, label] = "not run" if ours is None else ours
    return table.set_index(["supervision", "method", "feature"])


def example_videos(split) -> dict[str, int]:
    """Three test videos to look at (the paper's Fig. 5): indices into `split`.

    "multi-event": the abnormal video with the most annotated intervals (the longer video on
    ties); "long event": another abnormal video with the longest single interval (in frames);
    "normal": the longest normal video, where false alarms have the most room.
    """
    from cupl.diagnostics import event_runs

    if split.frame_labels is None:
        raise ValueError("example_videos: the split has no frame labels (is it a test split?)")
    lengths = np.array([len(m) for m in split.frame_labels])
    video, start, end = event_runs(np.concatenate(split.frame_labels).astype(bool),
                                   np.concatenate([[0], np.cumsum(lengths)]))
    counts = np.bincount(video, minlength=split.num_videos)
    longest = np.zeros(split.num_videos, dtype=np.int64)
    np.maximum.at(longest, video, end - start)
    abnormal = split.labels.cpu().numpy() == 1
    if counts[abnormal].max(initial=0) == 0 or not (~abnormal).any():
        raise ValueError("example_videos: the split needs an annotated abnormal video and a normal video")
    multi = int(np.lexsort((lengths, np.where(abnormal, counts, -1)))[-1])
    others = np.where(abnormal & (np.arange(split.num_videos) != multi), longest, -1)
    long = int(np.argmax(others)) if others.max() > 0 else multi
    normal = int(np.argmax(np.where(abnormal, -1, lengths)))
    return {"multi-event": multi, "long event": long, "normal": normal}


def _bar(iterable, progress: bool, **kw):
    if not progress:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, **kw)


__all__ = ["Data", "load_data", "resolve_bank", "stage1_key", "run_seeds", "prefetch", "default_workers", "grid",
           "summarize", "mean_pm", "gain", "paper_verdict", "best_setting", "paper_table", "example_videos",
           "RunConfig", "RunResult"]
