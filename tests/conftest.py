"""Shared fixtures: tiny books made of hand-written notebooks, and the real book on the
smoke profile, executed and built once per test session into a temporary folder."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _one_intra_op_thread():
    """The tests' models are tiny: a second intra-op thread only adds synchronisation, which
    on a busy two-core machine made small training runs many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
@pytest.fixture(scope="session")
def load_benchmark():
    """load_benchmark(name): the script benchmarks/<name>.py as a module (its folder on sys.path,
    for the scripts that import each other)."""
    import importlib.util
    import sys

    folder = REPO / "benchmarks"

    def load(name: str):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        spec = importlib.util.spec_from_file_location(f"bench_{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load


BOOK_SOURCES = ("_config.yml", "_toc.yml", "book", "notebooks", "benchmarks/results")


def write_notebook(path: Path, parameters: str, *code_cells: str) -> Path:
    """A notebook as the book stores them: a markdown title, a `parameters` cell, code
    cells, a closing markdown cell, no outputs."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {path.stem}\n\nWhat you will learn: nothing."),
        params,
        *[nbformat.v4.new_code_cell(c) for c in code_cells],
        nbformat.v4.new_markdown_cell("The end."),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


@pytest.fixture
def tiny_book(tmp_path):
    """Factory: a book root in tmp_path whose toc chains the given notebooks, in order.

    notebooks: {name: (parameters source, code cell, ...)}."""

    def make(notebooks: dict[str, tuple[str, ...]]) -> Path:
        root = tmp_path / "book"
        for name, (parameters, *cells) in notebooks.items():
            write_notebook(root / "notebooks" / f"{name}.ipynb", parameters, *cells)
        chapters = "".join(f"  - file: _executed/notebooks/{n}\n" for n in notebooks)
        (root / "_toc.yml").write_text(f"format: jb-book\nroot: intro\nchapters:\n{chapters}")
        (root / "_config.yml").write_text("title: tiny\nexecute:\n  execute_notebooks: 'off'\n")
        (root / "intro.md").write_text("# Tiny\n")
        return root

    return make


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory):
    """The repository's book on the smoke profile: every notebook of `_toc.yml` executed
    and the book built (warnings as errors) in a copy of the book sources.

    Returns (root, ChainResult, wall seconds of chain + build)."""
    from cupl.book.runner import run_chain

    root = tmp_path_factory.mktemp("smoke-book")
    for name in BOOK_SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        else:
            shutil.copy2(source, root / name)
    start = time.perf_counter()
    result = run_chain(root, profile="smoke", progress=False,
                       cache_dir=tmp_path_factory.mktemp("bank-cache"))
    return root, result, time.perf_counter() - start


@pytest.fixture
def make_notebook():
    """The `write_notebook` helper, for tests that need stored notebooks of their own."""
    return write_notebook
