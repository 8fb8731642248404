"""`cupl book`: execute the notebook chain with papermill, then build the Jupyter Book.

The book is built from executed copies, never from the stored notebooks (which have no
outputs): each notebook listed in `_toc.yml` as `_executed/notebooks/NN_topic` is run from
`notebooks/NN_topic.ipynb`, in toc order, into that folder. Then `jupyter-book build` renders
them with execution off and warnings as errors.

A notebook is re-executed only when one of its inputs changed. Its digest covers the
notebook file, the resolved parameters, every file of the `cupl` package and, when the
notebook takes a `bank`, the bank's digest (`bank_digest`). The digest and the run time sit
beside the executed copy in `NN_topic.run.json`.

A failing notebook stops the chain: its partial copy is kept under `_executed/failed/`,
any previous `_build/html` is removed so no complete-looking book is left, and the error
names the notebook and the cell.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

EXECUTED = "_executed"
CHAIN_PREFIX = f"{EXECUTED}/notebooks/"
PROFILES = ("smoke", "quick", "full")
BANK_PRESET = "ucf"
BANK_SEED = 0
# Files up to this size are hashed whole; larger (real) banks by size, head and tail.
FULL_HASH_LIMIT = 256 * 2**20
EDGE_BYTES = 16 * 2**20
STATUS_TEXT = {"executed": "executed in this run", "unchanged": "inputs unchanged, reused"}
PROVENANCE_PACKAGES = (
    "cupl", "torch", "numpy", "h5py", "scikit-learn", "matplotlib", "pandas",
    "papermill", "nbclient", "ipykernel", "jupyter-book", "myst-nb", "sphinx",
)


class UnknownParameterError(ValueError):
    """A parameter was given that a notebook does not declare in its `parameters` cell."""


class NotebookFailed(RuntimeError):
    """A notebook of the chain raised; the message names the notebook and the cell."""


class BuildFailed(RuntimeError):
    """`jupyter-book build` failed (a warning counts as a failure)."""


@dataclass
class NotebookRun:
    """One notebook of the chain. status: 'executed' (this run) or 'unchanged' (reused)."""

    name: str
    status: str
    wall_s: float
    finished: str


@dataclass
class ChainResult:
    """The notebooks in chain order, the bank they were given, the build's wall time
    (None when not built)."""

    runs: list[NotebookRun]
    bank: Path | None
    build_s: float | None


def find_root(start: Path) -> Path:
    """The book root: `start` or the nearest parent holding `_toc.yml`."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    raise FileNotFoundError(f"no _toc.yml in {start} or any parent: run from the book's folder")


def chain_notebooks(root: Path) -> list[str]:
    """Names (`NN_topic`) of the executed notebooks that `_toc.yml` lists, in reading order."""
    import yaml

    toc_path = root / "_toc.yml"
    toc = yaml.safe_load(toc_path.read_text())
    names: list[str] = []

    def visit(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                entry = node.get(key)
                if isinstance(entry, str) and entry.startswith(CHAIN_PREFIX):
                    names.append(Path(entry).name.removesuffix(".ipynb"))
            for value in node.values():
                if isinstance(value, (list, dict)):
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(toc)
    missing = [n for n in names if not (root / "notebooks" / f"{n}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{toc_path} lists {[CHAIN_PREFIX + n for n in missing]} but "
            f"{[f'notebooks/{n}.ipynb' for n in missing]} do not exist"
        )
    return names


def parse_value(text: str):
    """A `-p NAME VALUE` value: a Python literal when it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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


def input_digest(notebook: Path, params: dict, code_digest: str, bank: str | None) -> str:
    """What an executed copy depends on: notebook, parameters, `cupl` sources, bank."""
    record = {
        "notebook": hashlib.sha256(notebook.read_bytes()).hexdigest(),
        "parameters": params,
        "cupl": code_digest,
        "bank": bank,
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def synthetic_bank(profile: str, cache_dir: Path, progress: bool = True) -> Path:
    """The embedded benchmark bank for `profile`, written once under `cache_dir`.

    The file name carries preset, profile, seed, the generator's GENERATOR_VERSION and a
    digest of the `cupl.data` sources, so a changed generator never reuses an old bank
    even when its version number was not bumped."""
    import cupl.data
    from cupl.data.synth import GENERATOR_VERSION, write_synthetic

    sources = tree_digest(Path(cupl.data.__file__).parent)[:8]
    stem = f"{BANK_PRESET}-{profile}-seed{BANK_SEED}-v{GENERATOR_VERSION}-{sources}"
    path = cache_dir / f"{stem}.h5"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{stem}.{os.getpid()}.tmp.h5")
    if progress:
        print(f"writing the synthetic {BANK_PRESET} bank, profile {profile!r}: {path}", flush=True)
    try:
        write_synthetic(tmp, preset=BANK_PRESET, profile=profile, seed=BANK_SEED, progress=progress)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _kernel_manager_class():
    """A kernel manager that starts the interpreter running this code: ipykernel's native
    spec resolves to `sys.executable`, and an empty kernel search path keeps a user's own
    `python3` kernel (possibly of another environment) out of the way."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class ThisInterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self):
            return KernelSpecManager(kernel_dirs=[])

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
) -> ChainResult:
    """Execute the chain of `_toc.yml` under `root` and (unless `build=False`) build the book.

    bank: a feature bank file; None makes (or reuses) the synthetic bank of `profile`
    under `cache_dir` (default `root/.cupl-cache/banks`). seeds, device: passed only when
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
    extra = dict(extra or {})
    selected = _select(chain_notebooks(root), only)
    declared = {n: declared_parameters(root / "notebooks" / f"{n}.ipynb") for n in selected}
    chain = {"profile": profile, "seeds": seeds, "device": device}
    for n in selected:  # refuse unknown parameters before anything runs
        resolve_parameters(root / "notebooks" / f"{n}.ipynb", declared[n], chain, extra)

    bank_path, bank_hash = None, None
    if any("bank" in d for d in declared.values()):
        if bank is None:
            cache = Path(cache_dir) if cache_dir else root / ".cupl-cache" / "banks"
            bank_path = synthetic_bank(profile, cache, progress)
        else:
            bank_path = Path(bank).resolve()
            if not bank_path.is_file():
                raise FileNotFoundError(f"--bank {bank}: no such file")
        bank_hash = bank_digest(bank_path)
        chain["bank"] = str(bank_path)

    code = package_digest()
    runs: list[NotebookRun] = []
    chain_start = time.perf_counter()
    for i, name in enumerate(selected, 1):
        source = root / "notebooks" / f"{name}.ipynb"
        params = resolve_parameters(source, declared[name], chain, extra)
        digest = input_digest(source, params, code, bank_hash if "bank" in params else None)
        executed = root / EXECUTED / "notebooks" / f"{name}.ipynb"
        record_path = executed.with_suffix(".run.json")
        record = _read_json(record_path)
        if not force and executed.is_file() and record and record.get("digest") == digest:
            runs.append(NotebookRun(name, "unchanged", record["wall_s"], record["finished"]))
            if progress:
                print(f"[{i}/{len(selected)}] {name}: inputs unchanged, kept", flush=True)
            continue
        if progress:
            print(f"[{i}/{len(selected)}] {name}: running with {params}", flush=True)
        wall = execute_notebook(root, name, params, progress)
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_json(record_path, {"digest": digest, "parameters": params, "wall_s": wall,
                                  "finished": finished, "bank_sha256": bank_hash})
        runs.append(NotebookRun(name, "executed", wall, finished))
        if progress:
            elapsed = time.perf_counter() - chain_start
            print(f"[{i}/{len(selected)}] {name}: done in {wall:.1f} s "
                  f"(chain {elapsed:.1f} s so far)", flush=True)

    write_provenance(root, runs, profile, bank_path, bank_hash, chain, extra)
    build_s = build_book(root, force=force, progress=progress) if build else None
    return ChainResult(runs, bank_path, build_s)


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


def _torch_device() -> str:
    try:
        import torch
    except ImportError:
        return "torch not installed"
    if torch.cuda.is_available():
        return f"cuda available: {torch.cuda.get_device_name(0)}"
    return "cpu only (no CUDA device visible)"


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def write_provenance(root: Path, runs: list[NotebookRun], profile: str, bank: Path | None,
                     bank_hash: str | None, chain: dict, extra: dict) -> Path:
    """Write `_executed/provenance.md`: environment, device, and per-notebook run times and
    status for every notebook of the chain (those not run now are reported from their records)."""
    import importlib.metadata
    import platform

    by_name = {r.name: r for r in runs}
    rows = []
    for name in chain_notebooks(root):
        executed = root / EXECUTED / "notebooks" / f"{name}.ipynb"
        record = _read_json(executed.with_suffix(".run.json"))
        run = by_name.get(name)
        if run is not None:
            rows.append((name, STATUS_TEXT[run.status], f"{run.wall_s:.1f}", run.finished))
        elif executed.is_file() and record:
            wall = f"{record['wall_s']:.1f}"
            rows.append((name, "not selected, earlier copy", wall, record["finished"]))
        else:
            rows.append((name, "not executed", "", ""))

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    shown = {k: v for k, v in chain.items() if k != "bank" and v is not None}
    lines = [
        "# Provenance",
        "",
        "Written by `cupl book` after executing the chain: what produced the pages of this book.",
        "",
        "| setting | value |",
        "| --- | --- |",
        f"| date | {datetime.now(timezone.utc).isoformat(timespec='seconds')} |",
        f"| profile | `{profile}` |",
        f"| parameters | `{json.dumps({**shown, **extra}, sort_keys=True, default=str)}` |",
        f"| bank | `{bank.name if bank else 'none'}` |",
        f"| bank sha256 | `{bank_hash[:16] if bank_hash else '-'}` |",
        f"| git commit | `{_git_commit(root)}` |",
        f"| python | {platform.python_version()} ({platform.python_implementation()}) |",
        f"| torch device | {_torch_device()} |",
        f"| CPU | {cpu_name()}, {os.cpu_count()} logical cores |",
        f"| platform | {platform.platform()} |",
        "",
        "## Notebooks",
        "",
        "| notebook | status | run time (s) | finished (UTC) |",
        "| --- | --- | ---: | --- |",
        *[f"| {{doc}}`notebooks/{n}` | {s} | {t} | {f} |" for n, s, t, f in rows],
        "",
        "## Packages",
        "",
        "| package | version |",
        "| --- | --- |",
        *[f"| {p} | {version(p)} |" for p in PROVENANCE_PACKAGES],
        "",
    ]
    path = root / EXECUTED / "provenance.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, path)
    return path


def _jupyter_book() -> str:
    beside = Path(sys.executable).with_name("jupyter-book")
    found = str(beside) if beside.is_file() else shutil.which("jupyter-book")
    if found is None:
        raise BuildFailed("jupyter-book is not installed: pip install -e '.[book]'")
    return found


def build_book(root: Path, force: bool = False, progress: bool = True) -> float:
    """`jupyter-book build ROOT -W -n --keep-going` (`--all` with force); returns its wall
    time. Every executed notebook of the toc must exist. On failure the partial
    `_build/html` is removed and BuildFailed carries the build's last lines."""
    missing = [n for n in chain_notebooks(root)
               if not (root / EXECUTED / "notebooks" / f"{n}.ipynb").is_file()]
    if missing:
        remove_book(root)
        raise BuildFailed(f"not executed yet: {missing}; run `cupl book` without --only "
                          "(or pass --no-build)")
    command = [_jupyter_book(), "build", str(root), "-W", "-n", "--keep-going"]
    if force:
        command.append("--all")
    if progress:
        print("building the book:", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        remove_book(root)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
        raise BuildFailed(f"jupyter-book build failed (exit {done.returncode}); "
                          f"no book was left in _build/html:\n{tail}")
    if progress:
        print(f"book built in {wall:.1f} s: {root / '_build' / 'html' / 'index.html'}", flush=True)
    return wall


def configure_parser(parser) -> None:
    parser.add_argument("--profile", choices=PROFILES, default="quick",
                        help="benchmark size and training budget (default: quick)")
    parser.add_argument("--bank", type=Path, default=None,
                        help="feature bank (.h5); default: the embedded synthetic benchmark")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per training result")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="another notebook parameter (a Python literal or a string); "
                             "refused if a selected notebook does not declare it")
    parser.add_argument("--only", action="append", default=None, metavar="NN",
                        help="run only this notebook (number or name); repeatable")
    parser.add_argument("--no-build", action="store_true", help="execute, do not build")
    parser.add_argument("--force", action="store_true",
                        help="rerun every notebook and rebuild every page")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def main(args) -> int:
    try:
        result = run_chain(
            find_root(Path.cwd()), profile=args.profile, bank=args.bank, seeds=args.seeds,
            device=args.device, extra={k: parse_value(v) for k, v in args.parameter},
            only=args.only, force=args.force, build=not args.no_build, progress=not args.quiet,
        )
    except (UnknownParameterError, NotebookFailed, BuildFailed, FileNotFoundError, ValueError) as exc:
        print(f"cupl book: {exc}", file=sys.stderr)
        return 1
    executed = sum(r.status == "executed" for r in result.runs)
    total = sum(r.wall_s for r in result.runs if r.status == "executed")
    build = f", book built in {result.build_s:.1f} s" if result.build_s is not None else ""
    print(f"{executed} of {len(result.runs)} notebooks executed in {total:.1f} s{build}")
    return 0
