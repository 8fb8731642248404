"""The book's provenance page: what produced its pages (environment, device, bank, per-notebook
run times and status)."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from cupl.book.chain import EXECUTED, NotebookRun, chain_notebooks, read_record
from cupl.experiments.timing import cpu_name
from cupl.files import atomic_write

STATUS_TEXT = {"executed": "executed in this run", "unchanged": "inputs unchanged, reused"}

PROVENANCE_PACKAGES = (
    "cupl", "torch", "numpy", "h5py", "scikit-learn", "matplotlib", "pandas",
    "papermill", "nbclient", "ipykernel", "jupyter-book", "myst-nb", "sphinx",
)


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
        record = read_record(executed.with_suffix(".run.json"))
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
    text = "\n".join(lines)
    return atomic_write(root / EXECUTED / "provenance.md", lambda tmp: Path(tmp).write_text(text))
