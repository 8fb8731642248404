"""The disk cache of experiments: embedded banks, stage-1 models and finished runs.

What a model or a result depends on besides its settings is the bank's content, the `cupl`
sources and the torch version (`Data.digest`); each cache entry is named by a hash of that
digest and of its settings, and written atomically.

Every entry carries the sha256 of its content in a one-line header, checked on each read: a
truncated, edited or damaged entry is named in a warning, removed and made again, so a cache
never changes a result. A cache folder that cannot be written (read-only, full) costs only
the reuse: the result is computed and returned, with one warning naming the folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from cupl.config import RunConfig, to_dict
from cupl.experiments.train import RunResult, run, stage1
from cupl.files import atomic_write
from cupl.method.losses import completeness_terms

BANK_PRESET = "ucf"
BANK_SEED = 0
# Files up to this size are hashed whole; larger (real) banks by size, head and tail.
FULL_HASH_LIMIT = 256 * 2**20
EDGE_BYTES = 16 * 2**20
ENTRY_HEADER = b"cupl-cache-entry sha256="


class CacheWarning(UserWarning):
    """A cache entry was damaged and is made again, or the cache folder cannot be written."""


_UNWRITABLE: set[Path] = set()  # folders already warned about, so each is named once


def write_entry(path: Path, payload: bytes) -> Path | None:
    """Store `payload` at `path` atomically, behind a header line holding its sha256.

    returns: `path`, or None when the folder cannot be written (warned once per folder)."""
    header = ENTRY_HEADER + hashlib.sha256(payload).hexdigest().encode() + b"\n"
    try:
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(header + payload))
    except OSError as err:
        folder = path.parent
        if folder not in _UNWRITABLE:
            _UNWRITABLE.add(folder)
            warnings.warn(f"cache folder {folder} cannot be written ({err.strerror or err}); results are "
                          f"computed but not kept for reuse", CacheWarning, stacklevel=3)
        return None


def cache_writable(folder: Path) -> bool:
    """Whether entries can be written to `folder`, tried with an empty one (warned once when not)."""
    probe = write_entry(folder / f".probe-{os.getpid()}", b"")
    if probe is None:
        return False
    probe.unlink(missing_ok=True)
    return True


def read_entry(path: Path) -> bytes | None:
    """The payload of the entry at `path`: None when there is none, or when its content does
    not match its digest (then the entry is named in a warning and removed)."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    header, newline, payload = blob.partition(b"\n")
    expected = ENTRY_HEADER + hashlib.sha256(payload).hexdigest().encode()
    if not newline or header != expected:
        discard_entry(path, "its content does not match its sha256 (truncated, edited or damaged)")
        return None
    return payload


def discard_entry(path: Path, why: str) -> None:
    """Warn naming the damaged entry `path` and remove it, so it is made again."""
    warnings.warn(f"cache entry {path}: {why}; removed, it will be made again", CacheWarning, stacklevel=3)
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def default_cache(start: Path | None = None) -> Path:
    """Where embedded banks are cached: $CUPL_CACHE, else `.cupl-cache/banks` of the checkout
    holding `start` (default: the working directory), else the user's cache folder."""
    if os.environ.get("CUPL_CACHE"):
        return Path(os.environ["CUPL_CACHE"])
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists() and (folder / "cupl").is_dir():
            return folder / ".cupl-cache" / "banks"
    return Path.home() / ".cache" / "cupl" / "banks"


def bank_digest(path: Path) -> str:
    """sha256 of the bank: of the whole file up to FULL_HASH_LIMIT bytes (every synthetic
    bank), else of its size, first and last EDGE_BYTES (real multi-GB banks; the HDF5
    superblock and object headers sit there). mtime is left out on purpose, so a
    regenerated identical bank does not force a rerun."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        else:
            h.update(f.read(EDGE_BYTES))
            f.seek(size - EDGE_BYTES)
            h.update(f.read(EDGE_BYTES))
    return h.hexdigest()


def tree_digest(folder: Path) -> str:
    """sha256 over the relative paths and contents of every file under `folder`
    (bytecode caches excluded)."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(path.relative_to(folder).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def package_digest() -> str:
    """Digest of the installed `cupl` package: every source and packaged resource."""
    import cupl

    return tree_digest(Path(cupl.__file__).parent)


def synthetic_bank(profile: str, cache_dir: Path, progress: bool = True, premise_variant: str = "default",
                   crops: int | None = None) -> Path:
    """The embedded benchmark bank for `profile`, written once under `cache_dir`.

    premise_variant: a name of `cupl.data.synth.PREMISE_VARIANTS` (one premise moved).
    crops: crops per clip instead of the profile's (None: the profile's).
    The file name carries preset, premise variant, profile, seed, the generator's
    GENERATOR_VERSION and a digest of the `cupl.data` sources, so a changed generator never
    reuses an old bank even when its version number was not bumped."""
    import cupl.data
    from cupl.data.synth import GENERATOR_VERSION, premises_of, resolve, write_synthetic

    premises_of(premise_variant)  # an unknown variant is named before any work
    resolve(BANK_PRESET, profile, crops)
    sources = tree_digest(Path(cupl.data.__file__).parent)[:8]
    variant = premise_variant if crops is None else f"{premise_variant}-crops{crops}"
    stem = f"{BANK_PRESET}-{variant}-{profile}-seed{BANK_SEED}-v{GENERATOR_VERSION}-{sources}"
    path = Path(cache_dir) / f"{stem}.h5"
    if _intact_bank(path):
        return path
    if progress:
        print(f"writing the synthetic {BANK_PRESET} bank, premises {premise_variant}, profile {profile!r}: {path}",
              flush=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic(path, preset=BANK_PRESET, profile=profile, seed=BANK_SEED, progress=progress,
                        premise_variant=premise_variant, crops=crops)
        digest = bank_digest(path)
        atomic_write(_digest_file(path), lambda tmp: Path(tmp).write_text(digest + "\n"))
    except OSError as err:
        fallback = Path(tempfile.gettempdir()) / "cupl-cache" / "banks"
        if path.parent == fallback:
            raise
        warnings.warn(f"cache folder {path.parent} cannot be written ({err.strerror or err}); the bank goes "
                      f"to {fallback}", CacheWarning, stacklevel=2)
        return synthetic_bank(profile, fallback, progress, premise_variant, crops)
    return path


def _digest_file(bank: Path) -> Path:
    return bank.with_name(bank.name + ".sha256")


def _intact_bank(path: Path) -> bool:
    """Whether the cached bank `path` exists and matches the sha256 recorded beside it when it
    was written; one that does not (truncated, damaged, or with no digest because its writer
    was stopped) is named in a warning and removed."""
    if not path.is_file():
        return False
    try:
        recorded = _digest_file(path).read_text().strip()
    except FileNotFoundError:
        recorded = None
    if recorded == bank_digest(path):
        return True
    why = "no sha256 recorded beside it" if recorded is None else "its content does not match its sha256"
    discard_entry(path, f"{why} (an interrupted write, or truncated or damaged)")
    with contextlib.suppress(OSError):
        _digest_file(path).unlink(missing_ok=True)
    return False


def stage1_key(config: RunConfig) -> tuple:
    """Every setting stage 1 reads (Algorithm 1, l. 2-5), and nothing else.

    With one head or without L_diver, Eq. 7 is L_MIL alone: alpha and the diversity switches
    then change nothing, so K = 1 of Table 5 shares its f_g with the baseline of Table 4.
    mc_passes is read after stage 1 (the first pseudo labels) and is left out.
    """
    g = dataclasses.asdict(config.generator)
    del g["mc_passes"]
    if not completeness_terms(g["num_heads"], g["diversity"]):
        g.update(diversity=False, alpha=0.0, diversity_on_normal=False, head_scores="sigmoid",
                 regularizer_reduction="mean", norm_form="paper")
    return (tuple(sorted(g.items())), config.seed, config.crops, config.modality, config.device, config.amp)

def cache_path(data: "Data", kind: str, key) -> Path | None:
    """The file of `key` in the disk cache (None without one): `kind`-<digest>."""
    if data.cache is None:
        return None
    name = hashlib.sha256(json.dumps([data.digest, repr(key)]).encode()).hexdigest()[:24]
    return data.cache / f"{kind}-{name}"

def load_stage1(data: "Data", key: tuple, config: RunConfig):
    """The stage-1 model of `key` from memory or the disk cache, else None."""
    if key in data.generators:
        return data.generators[key]
    path = cache_path(data, "f_g", key)
    payload = read_entry(path) if path is not None else None
    if payload is None:
        return None
    from cupl.method.models import MultiHeadClassifier

    g = config.generator
    model = MultiHeadClassifier(data.train.features.shape[-1], g.num_heads, g.hidden, g.dropout)
    try:
        model.load_state_dict(torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True))
    except Exception as err:  # a payload whose digest matches but which is no such model
        discard_entry(path, f"not a stage-1 model of this configuration ({type(err).__name__})")
        return None
    data.generators[key] = model.eval()
    return model

def store_stage1(data: "Data", key: tuple, model) -> None:
    """Keep a stage-1 model in memory and in the disk cache."""
    data.generators[key] = model
    path = cache_path(data, "f_g", key)
    if path is not None and not path.is_file():
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        write_entry(path, buffer.getvalue())

def stage1_model(data: "Data", config: RunConfig):
    """The f_g that a run of `config` on `data` trains: from memory or the disk cache, else
    trained now (`train.stage1`) and kept for the runs that follow."""
    key = stage1_key(config)
    model = load_stage1(data, key, config)
    if model is None:
        model = stage1(config, data.train)
        store_stage1(data, key, model)
    return model

def load_run(data: "Data", run_key: str) -> RunResult | None:
    """A run's results from the disk cache: config, metrics, history and timings, without
    models, test scores or arrays (enough for `run_seeds` with keep=False). None if absent."""
    path = cache_path(data, "run", run_key)
    payload = read_entry(path) if path is not None else None
    if payload is None:
        return None
    try:
        saved = json.loads(payload)
        return RunResult(saved["config"], saved["metrics"], saved["history"], saved["timings"],
                         f_g=None, f_c=None, test_scores=None)
    except (ValueError, KeyError, TypeError) as err:
        discard_entry(path, f"not a run record ({type(err).__name__}: {err})")
        return None

def store_run(data: "Data", run_key: str, result: RunResult) -> None:
    path = cache_path(data, "run", run_key)
    if path is not None and not path.is_file():
        saved = {k: getattr(result, k) for k in ("config", "metrics", "history", "timings")}
        write_entry(path, json.dumps(saved).encode())

def run_key(config: RunConfig) -> str:
    """The key of a run in memory and in the disk cache: its whole configuration."""
    return json.dumps(to_dict(config), sort_keys=True)


def made_run(data: "Data", config: RunConfig, keep: bool) -> RunResult | None:
    """The run of `config` made earlier (memory, then disk cache), or None.

    keep=True needs the models, scores and arrays of a run, which only a run made in this
    process with keep=True holds; without them the run counts as not made.
    """
    key = run_key(config)
    done = data.runs.get(key) or (None if keep else load_run(data, key))
    if done is not None and (done.arrays or not keep):
        data.runs[key] = done
        return done
    return None


def keep_run(data: "Data", config: RunConfig, result: RunResult) -> None:
    """Keep a run just made, and its stage-1 model, in memory and in the disk cache."""
    store_stage1(data, stage1_key(config), result.f_g)
    store_run(data, run_key(config), result)
    data.runs[run_key(config)] = result


def run_once(data: "Data", config: RunConfig, keep: bool) -> RunResult:
    """`train.run` of `config`, or the same run made earlier (`made_run`)."""
    done = made_run(data, config, keep)
    if done is not None:
        return done
    result = run(config, data.train, data.test, oracle=data.oracle, progress=False, keep_arrays=keep,
                 f_g=load_stage1(data, stage1_key(config), config))
    keep_run(data, config, result)
    return result
