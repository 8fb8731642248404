"""The chain of notebooks the book is built from: `_toc.yml`'s order, where executed copies live,
and the record kept beside each copy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cupl.files import atomic_write

EXECUTED = "_executed"

CHAIN_PREFIX = f"{EXECUTED}/notebooks/"


@dataclass
class NotebookRun:
    """One notebook of the chain. status: 'executed' (this run) or 'unchanged' (reused)."""

    name: str
    status: str
    wall_s: float
    finished: str

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


def write_record(path: Path, data: dict) -> None:
    """The JSON record beside an executed copy (digest, parameters, run time), written atomically."""
    text = json.dumps(data, indent=1, sort_keys=True, default=str)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
