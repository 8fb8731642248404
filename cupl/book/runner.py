"""`cupl book`: execute the notebook chain with papermill, then build the Jupyter Book.

The book is built from executed copies, never from the stored notebooks (which have no
outputs): each notebook listed in `_toc.yml` as `_executed/notebooks/NN_topic` is run from
`notebooks/NN_topic.ipynb`, in toc order, into that folder. Then `jupyter-book build` renders
them with execution off and warnings as errors.

A notebook is re-executed only when one of its inputs changed. Its digest covers the
notebook file, the resolved parameters, every file of the `cupl` package and, when the
notebook takes a `bank`, the bank's digest (`bank_digest`). The digest and the run time sit
beside the executed copy in `NN_topic.run.json`.

Parameters are typed and range-checked (`check_parameter`) before anything runs. The book
of earlier inputs is removed before the first notebook is re-executed, so no book looks
current that is not. A failing notebook stops the chain: its partial copy is kept under
`_executed/failed/`, and the error names the notebook and the cell. The build goes to a
staging folder swapped in whole, so `_build/html` is never a partial book.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cupl.book.chain import EXECUTED, NotebookRun, chain_notebooks, read_record, write_record
from cupl.book.provenance import write_provenance
from cupl.config import ConfigError, check_value, in_range, typed
from cupl.experiments.cache import bank_digest, default_cache, package_digest, synthetic_bank, tree_digest

PROFILES = ("smoke", "quick", "full")
# Notebooks numbered from here on report measurements of the build (the performance appendix).
REPORTS = 90


class UnknownParameterError(ValueError):
    """A parameter was given that a notebook does not declare in its `parameters` cell."""


class NotebookFailed(RuntimeError):
    """A notebook of the chain raised; the message names the notebook and the cell."""


class BuildFailed(RuntimeError):
    """`jupyter-book build` failed (a warning counts as a failure)."""


@dataclass
class ChainResult:
    """The notebooks in chain order, the bank they were given, the build's wall time
    (None when not built)."""

    runs: list[NotebookRun]
    bank: Path | None
    build_s: float | None


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged `parameters`."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def resolve_parameters(notebook: Path, declared: set[str], chain: dict, extra: dict) -> dict:
    """The parameters papermill passes: the chain's (`profile`, `bank`, ...) that the notebook
    declares, then every extra, each of which it must declare."""
    unknown = sorted(set(extra) - declared)
    if unknown:
        raise UnknownParameterError(
            f"{notebook}: no parameter {', '.join(map(repr, unknown))} in its `parameters` cell "
            f"(it declares {sorted(declared) or 'none'})"
        )
    params = {k: v for k, v in chain.items() if k in declared and v is not None}
    params.update(extra)
    return params


# Notebook parameters that carry a configuration value take the configuration's rule
# (`cupl.config.check_value`), list parameters take it for every item; None keeps the
# notebook's own choice. A parameter named nowhere here is passed as given.
CONFIG_PARAMETERS = {
    "device": "device", "num_segments": "generator.num_segments", "num_heads": "generator.num_heads",
    "alpha": "generator.alpha", "passes": "generator.mc_passes", "window": "self_train.window",
    "iterations": "self_train.iterations", "ratio": "self_train.ratio",
}
LIST_PARAMETERS = {
    "heads": "generator.num_heads", "alphas": "generator.alpha", "ratios": "self_train.ratio",
    "pass_counts": "generator.mc_passes",
}
COUNT_PARAMETERS = ("seeds", "check_clips")


def check_parameter(name: str, value):
    """`value` of notebook parameter `name`, typed and range-checked with the rules the same
    value follows everywhere else; ConfigError naming the parameter."""
    label = f"parameter {name!r}"
    if name == "profile":
        if value not in PROFILES:
            raise ConfigError(f"{label} must be one of {', '.join(map(repr, PROFILES))}, got {value!r}")
        return value
    if name == "bank":
        return typed(label, str, str(value) if isinstance(value, os.PathLike) else value)
    if name in COUNT_PARAMETERS:
        return in_range(label, typed(label, int, value), "[1, inf)")
    if name in CONFIG_PARAMETERS:
        return None if value is None else check_value(CONFIG_PARAMETERS[name], value, name=label)
    if name in LIST_PARAMETERS:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{label} must be a non-empty list, got {value!r}")
        return [check_value(LIST_PARAMETERS[name], v, name=f"{label}[{i}]") for i, v in enumerate(value)]
    return value


def input_digest(notebook: Path, params: dict, code_digest: str, bank: str | None, measured=None) -> str:
    """What an executed copy depends on: notebook, parameters, `cupl` sources, bank, and for a
    page that reports measurements (`REPORTS`) the measurements: `measured`."""
    record = {
        "notebook": hashlib.sha256(notebook.read_bytes()).hexdigest(),
        "parameters": params,
        "cupl": code_digest,
        "bank": bank,
        "measured": measured,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def _kernel_manager_class():
    """A kernel manager that starts the interpreter running this code, over IPC: ipykernel's
    native spec resolves to `sys.executable`, and an empty kernel search path keeps a user's
    own `python3` kernel (possibly of another environment) out of the way."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ThisInterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return KernelSpecManager(kernel_dirs=[])

        # local sockets: nothing travels over TCP, and the kernel has no plain-text warning to give
        @default("transport")
        def _transport_default(self):
            return "ipc"

        # an absolute, short socket path (a Unix socket's path holds at most 107 bytes)
        @default("ip")
        def _ip_default(self):
            return os.path.join(tempfile.gettempdir(), f"cupl-kernel-{uuid.uuid4().hex[:12]}")

    return ThisInterpreterKernelManager


def _failed_cell(source_nb: Path, partial: Path | None) -> tuple[int, int, str]:
    """(1-based index, number of cells, first line) in the stored notebook of the cell that
    raised, found in the partial copy (papermill adds cells of its own) by cell id, or by
    source where the stored notebook has no ids. Index 0: no cell was marked as failed."""
    import nbformat

    cells = nbformat.read(source_nb, as_version=4).cells
    failing = None
    if partial is not None and partial.is_file():
        executed = nbformat.read(partial, as_version=4).cells
        failing = next(
            (c for c in executed if c.get("metadata", {}).get("papermill", {}).get("exception")),
            None,
        )
    if failing is None:
        return 0, len(cells), ""
    index = next((i for i, c in enumerate(cells) if c.get("id") == failing.get("id")), None)
    if index is None:
        index = next((i for i, c in enumerate(cells) if c.source == failing.source), -1)
    first_line = (failing.source.strip().splitlines() or [""])[0]
    return index + 1, len(cells), first_line


def _failure_message(root: Path, name: str, exc: BaseException, partial: Path | None) -> str:
    source = root / "notebooks" / f"{name}.ipynb"
    index, count, first_line = _failed_cell(source, partial)
    if hasattr(exc, "ename"):
        error = f"{exc.ename}: {exc.evalue}"
    else:
        error = f"{type(exc).__name__}: {exc}"
    where = f" in cell {index} of {count} (`{first_line}`)" if index > 0 else " (no cell reported it)"
    kept = f"partially executed copy: {partial.relative_to(root)}" if partial else "no partial copy"
    return f"notebooks/{name}.ipynb failed{where}: {error}\n{kept}"


def remove_book(root: Path) -> None:
    """Delete the rendered book so a failed run never leaves one that looks complete."""
    shutil.rmtree(root / "_build" / "html", ignore_errors=True)


def execute_notebook(root: Path, name: str, params: dict, progress: bool) -> float:
    """Run `notebooks/{name}.ipynb` into `_executed/notebooks/`; returns the wall time.

    The kernel starts in `notebooks/` (as in Jupyter). The copy is written under
    `_executed/running/` and moved into place only when every cell succeeded."""
    import papermill

    running = root / EXECUTED / "running" / f"{name}.ipynb"
    failed = root / EXECUTED / "failed" / f"{name}.ipynb"
    final = root / EXECUTED / "notebooks" / f"{name}.ipynb"
    for folder in (running.parent, failed.parent, final.parent):
        folder.mkdir(parents=True, exist_ok=True)
    running.unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(root / "notebooks" / f"{name}.ipynb"), str(running), parameters=params,
            kernel_name="python3", kernel_manager_class=_kernel_manager_class(),
            cwd=str(root / "notebooks"), progress_bar=progress,
        )
    except BaseException as exc:
        partial = None
        if running.is_file():
            os.replace(running, failed)
            partial = failed
        final.unlink(missing_ok=True)
        (final.with_suffix(".run.json")).unlink(missing_ok=True)
        remove_book(root)
        if isinstance(exc, Exception):
            raise NotebookFailed(_failure_message(root, name, exc, partial)) from exc
        raise
    wall = time.perf_counter() - start
    os.replace(running, final)
    failed.unlink(missing_ok=True)
    return wall


def _select(names: list[str], only: list[str] | None) -> list[str]:
    if not only:
        return names
    chosen = [n for n in names if any(n == o or n.startswith(f"{o}_") for o in only)]
    unmatched = [o for o in only if not any(n == o or n.startswith(f"{o}_") for n in names)]
    if unmatched:
        raise ValueError(f"--only {unmatched}: no such notebook in _toc.yml (it lists {names})")
    return chosen


def run_chain(
    root: Path | str = ".",
    profile: str = "quick",
    bank: Path | str | None = None,
    seeds: int | None = None,
    device: str | None = None,
    extra: dict | None = None,
    only: list[str] | None = None,
    force: bool = False,
    build: bool = True,
    progress: bool = True,
    cache_dir: Path | str | None = None,
    student: bool = False,
) -> ChainResult:
    """Execute the chain of `_toc.yml` under `root` and (unless `build=False`) build the book.

    bank: a feature bank file; None makes (or reuses) the synthetic bank of `profile`
    under `cache_dir` (default: `cupl.experiments.cache.default_cache`, $CUPL_CACHE if set). seeds, device: passed only when
    given. extra: more parameters, each of which every selected notebook must declare.
    only: notebook numbers or names to run. progress: per-notebook lines and papermill's
    cell progress bar. Raises UnknownParameterError before anything runs, NotebookFailed,
    BuildFailed.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    # Kernels inherit this: OpenMP threads that spin while waiting made the small training runs
    # of the chapters up to four times slower on a busy 2-core machine. A user's setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    root = Path(root).resolve()
    extra = {name: check_parameter(name, value) for name, value in (extra or {}).items()}
    for name, value in (("seeds", seeds), ("device", device)):
        if value is not None:
            check_parameter(name, value)
    selected = _select(chain_notebooks(root), only)
    declared = {n: declared_parameters(root / "notebooks" / f"{n}.ipynb") for n in selected}
    chain = {"profile": profile, "seeds": seeds, "device": device}
    for n in selected:  # refuse unknown parameters before anything runs
        resolve_parameters(root / "notebooks" / f"{n}.ipynb", declared[n], chain, extra)

    bank_path, bank_hash, kernel_env = None, None, {}
    if any("bank" in d for d in declared.values()):
        if bank is None:
            cache = Path(cache_dir) if cache_dir else default_cache(root)
            bank_path = synthetic_bank(profile, cache, progress)
            # the notebooks find the same bank through the cache folder, so no machine path is
            # passed as a parameter (and shown on a page)
            kernel_env["CUPL_CACHE"] = str(cache)
        else:
            bank_path = Path(bank).resolve()
            if not bank_path.is_file():
                raise FileNotFoundError(f"--bank {bank}: no such file")
            chain["bank"] = str(bank_path)
        bank_hash = bank_digest(bank_path)

    code = package_digest()
    runs: list[NotebookRun] = []
    chain_start = time.perf_counter()
    with _environment(kernel_env):
        for i, name in enumerate(selected, 1):
            source = root / "notebooks" / f"{name}.ipynb"
            params = resolve_parameters(source, declared[name], chain, extra)
            report = name[:2].isdigit() and int(name[:2]) >= REPORTS
            measured = _measurements(root, selected[:i - 1]) if report else None
            digest = input_digest(source, params, code, bank_hash if "bank" in declared[name] else None, measured)
            executed = root / EXECUTED / "notebooks" / f"{name}.ipynb"
            record_path = executed.with_suffix(".run.json")
            record = read_record(record_path)
            if not force and executed.is_file() and record and record.get("digest") == digest:
                runs.append(NotebookRun(name, "unchanged", record["wall_s"], record["finished"]))
                if progress:
                    print(f"[{i}/{len(selected)}] {name}: inputs unchanged, kept", flush=True)
                continue
            if progress:
                print(f"[{i}/{len(selected)}] {name}: running with {params}", flush=True)
            # the book of the previous inputs is no longer current, and an interrupted chain
            # would leave it beside copies made with two parameter sets: it goes first
            remove_book(root)
            wall = execute_notebook(root, name, params, progress)
            finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
            write_record(record_path, {"digest": digest, "parameters": params, "wall_s": wall,
                                      "finished": finished, "bank_sha256": bank_hash})
            runs.append(NotebookRun(name, "executed", wall, finished))
            if progress:
                elapsed = time.perf_counter() - chain_start
                print(f"[{i}/{len(selected)}] {name}: done in {wall:.1f} s "
                      f"(chain {elapsed:.1f} s so far)", flush=True)

    write_provenance(root, runs, profile, bank_path, bank_hash, chain, extra)
    build_s = build_book(root, force=force, progress=progress, student=student) if build else None
    return ChainResult(runs, bank_path, build_s)


def _measurements(root: Path, before: list[str]) -> dict:
    """What a report page reads: the committed benchmark results and the run records of the
    notebooks before it, so that it is executed again whenever any of them changed."""
    results = root / "benchmarks" / "results"
    return {"results": tree_digest(results) if results.is_dir() else None,
            "runs": {n: (read_record(root / EXECUTED / "notebooks" / f"{n}.run.json") or {}).get("finished")
                     for n in before}}


@contextlib.contextmanager
def _environment(values: dict):
    """Environment variables set for the kernels started inside, restored afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _jupyter_book() -> str:
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.is_file() else shutil.which("jupyter-book")
    if found is None:
        raise BuildFailed("jupyter-book is not installed: pip install -e '.[book]'")
    return found


STAGING_PREFIX = ".building-"


def build_book(root: Path, force: bool = False, progress: bool = True, student: bool = False) -> float:
    """`jupyter-book build ROOT -W -n --keep-going` (`--all` with force) into a staging folder
    under `_build/`, started from a copy of the previous build (so it stays incremental), and
    swapped in whole: `_build/html` is always the previous complete book or the new one, even
    when the build is interrupted. Returns its wall time. Every executed notebook of the toc
    must exist. On failure no book is left and BuildFailed carries the build's last lines.

    student: the course edition, in `_build/student`: the same book with the solutions of the
    exercises hidden (sphinx-exercise's `hide_solutions`), for handing out."""
    missing = [n for n in chain_notebooks(root)
               if not (root / EXECUTED / "notebooks" / f"{n}.ipynb").is_file()]
    if missing:
        remove_book(root)
        raise BuildFailed(f"not executed yet: {missing}; run `cupl book` without --only "
                          "(or pass --no-build)")
    out = root / "_build"
    for stale in out.glob(f"{STAGING_PREFIX}*"):  # left by a build that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = out / f"{STAGING_PREFIX}{os.getpid()}"
    edition, doctrees = ("student", ".doctrees-student") if student else ("html", ".doctrees")
    for part, kept in (("html", edition), (".doctrees", doctrees)):
        if (out / kept).is_dir():
            shutil.copytree(out / kept, staging / "_build" / part, symlinks=True)
    command = [_jupyter_book(), "build", str(root), "--path-output", str(staging), "-W", "-n", "--keep-going"]
    if student:
        command += ["--config", str(student_config(root, staging))]
    if force:
        command.append("--all")
    if progress:
        print("building the book:", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    try:
        done = _run_builder(command, root)
        wall = time.perf_counter() - start
        built = staging / "_build" / "html"
        if done.returncode != 0 or not (built / "index.html").is_file():
            remove_book(root)
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
            raise BuildFailed(f"jupyter-book build failed (exit {done.returncode}"
                              f"{'' if done.returncode else ', no index.html'}); "
                              f"no book was left in _build/html:\n{tail}")
        if (staging / "_build" / ".doctrees").is_dir():
            swap_in(staging / "_build" / ".doctrees", out / doctrees)
        swap_in(built, out / edition)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if progress:
        print(f"book built in {wall:.1f} s: {out / edition / 'index.html'}", flush=True)
    return wall


def student_config(root: Path, folder: Path) -> Path:
    """The book's `_config.yml` with the exercises' solutions hidden, written into `folder`."""
    import yaml

    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    sphinx = config.setdefault("sphinx", {})
    sphinx.setdefault("config", {})["hide_solutions"] = True
    # relative paths of the configuration are read from the book's root, not from `folder`
    for key, value in sphinx.get("local_extensions", {}).items():
        sphinx["local_extensions"][key] = str((root / value).resolve())
    config["bibtex_bibfiles"] = [str((root / b).resolve()) for b in config.get("bibtex_bibfiles", [])]
    config.setdefault("title", "")
    config["title"] = f"{config['title']} (course edition)".strip()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "_config.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _run_builder(command: list[str], root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=root, capture_output=True, text=True)


def swap_in(new: Path, dest: Path) -> None:
    """Put the folder `new` at `dest`, replacing the folder there by two renames: no moment
    shows a partly written `dest`."""
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)
