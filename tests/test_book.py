"""The notebook chain: hygiene of the stored notebooks, the toc, and the runner's
promises (unknown parameters refused, failures named and kept, unchanged inputs skipped),
then the whole book executed on the smoke profile and built."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest

from cupl.book import runner as book
from cupl.cli import book as book_cli
from cupl.experiments import cache
from cupl.util import parse_literal

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


# ---------------------------------------------------------------- hygiene


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no chapter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), "name must be NN_topic.ipynb"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] for c in code), "outputs must be stripped"
    assert all(c.execution_count is None for c in code), "execution counts must be empty"
    params = [c for c in nb.cells if "parameters" in tags(c)]
    assert len(params) == 1, f"exactly one cell tagged `parameters`, found {len(params)}"
    first, last = nb.cells[0], nb.cells[-1]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    assert "learn" in first.source.lower(), "the first cell says what the reader will learn"
    assert last.cell_type == "markdown"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_holds_plain_literals(path):
    nb = nbformat.read(path, as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in tags(c)]
    tree = ast.parse(cell.source)
    assert tree.body, "empty parameters cell"
    for statement in tree.body:
        assert isinstance(statement, ast.Assign), ast.unparse(statement)
        assert len(statement.targets) == 1 and isinstance(statement.targets[0], ast.Name)
        ast.literal_eval(statement.value)  # raises on anything but a plain literal
    names = {s.targets[0].id for s in tree.body}
    assert {"profile", "bank", "seeds", "device"} <= names


def test_toc_lists_every_notebook_and_only_existing_ones():
    toc = (REPO / "_toc.yml").read_text()
    listed = re.findall(r"file:\s*_executed/notebooks/(\S+)", toc)
    assert len(listed) == len(set(listed)), "a notebook is listed twice"
    assert sorted(listed) == [p.stem for p in NOTEBOOKS]
    assert listed == sorted(listed), "chapters are read in their number order"


# ---------------------------------------------------------------- runner


def test_parse_literal():
    assert parse_literal("3") == 3
    assert parse_literal("0.5") == 0.5
    assert parse_literal("True") is True
    assert parse_literal("[1, 2]") == [1, 2]
    assert parse_literal("ucf.h5") == "ucf.h5"
    assert parse_literal("'7'") == "7"


def test_bank_digest_small_file_hashes_size_and_content(tmp_path):
    path = tmp_path / "bank.h5"
    path.write_bytes(b"abc" * 1000)
    expected = hashlib.sha256(b"3000" + b"abc" * 1000).hexdigest()
    assert cache.bank_digest(path) == expected


def test_bank_digest_large_file_reads_head_and_tail(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "FULL_HASH_LIMIT", 100)
    monkeypatch.setattr(cache, "EDGE_BYTES", 10)
    data = bytes(range(200))
    path = tmp_path / "bank.h5"
    path.write_bytes(data)
    expected = hashlib.sha256(b"200" + data[:10] + data[-10:]).hexdigest()
    assert cache.bank_digest(path) == expected


def test_unknown_parameter_is_refused_naming_notebook_and_parameter(tiny_book):
    root = tiny_book({
        "01_a": ("profile = 'quick'\nalpha = 0.1", "x = alpha"),
        "02_b": ("profile = 'quick'", "y = 1"),
    })
    with pytest.raises(book.UnknownParameterError, match=r"02_b\.ipynb.*'alpha'"):
        book.run_chain(root, profile="smoke", extra={"alpha": 0.5}, build=False, progress=False)
    assert not (root / "_executed" / "notebooks").exists(), "nothing may run before the check"
    # with --only selecting a notebook that declares it, the same parameter is accepted
    result = book.run_chain(root, profile="smoke", extra={"alpha": 0.5}, only=["01"],
                            build=False, progress=False)
    assert [r.name for r in result.runs] == ["01_a"]


def test_unknown_parameter_through_the_command(tiny_book, monkeypatch, capsys):
    import argparse

    root = tiny_book({"01_a": ("profile = 'quick'", "x = 1")})
    parser = argparse.ArgumentParser()
    book_cli.configure_parser(parser)
    monkeypatch.chdir(root / "notebooks")  # the root is found upwards
    code = book_cli.main(parser.parse_args(["--no-build", "--quiet", "-p", "alpha", "0.5"]))
    assert code == 1
    err = capsys.readouterr().err
    assert "01_a.ipynb" in err and "'alpha'" in err


def test_parameters_passed_are_only_the_declared_ones(tiny_book):
    root = tiny_book({"01_a": ("profile = 'quick'\nseeds = 3\nk = 2", "out = (profile, seeds, k)")})
    book.run_chain(root, profile="smoke", device="cuda", extra={"k": 4}, build=False, progress=False)
    executed = json.loads((root / "_executed" / "notebooks" / "01_a.ipynb").read_text())
    assert executed["metadata"]["papermill"]["parameters"] == {"profile": "smoke", "k": 4}


def test_kernel_is_this_interpreter_whatever_kernels_are_installed(tiny_book, tmp_path, monkeypatch):
    # a `python3` kernel found first on the Jupyter path that cannot start
    spec = tmp_path / "jupyter" / "kernels" / "python3" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": ["/bin/false", "{connection_file}"],
                                "display_name": "elsewhere", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    root = tiny_book({"01_a": ("profile = 'quick'", "import sys\nprint(sys.executable)")})
    book.run_chain(root, profile="smoke", build=False, progress=False)
    executed = nbformat.read(root / "_executed" / "notebooks" / "01_a.ipynb", as_version=4)
    printed = [o.text for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert printed == [sys.executable + "\n"]


def test_failing_notebook_fails_the_chain_with_name_and_cell(tiny_book):
    root = tiny_book({
        "01_ok": ("profile = 'quick'", "x = 1"),
        "02_bad": ("profile = 'quick'", "y = 2", "z = y / 0\nprint(z)", "never = True"),
        "03_after": ("profile = 'quick'", "w = 3"),
    })
    html = root / "_build" / "html"
    html.mkdir(parents=True)
    (html / "index.html").write_text("<html>an older, complete-looking book</html>")
    with pytest.raises(book.NotebookFailed) as info:
        book.run_chain(root, profile="smoke", progress=False)
    message = str(info.value)
    # cells: title, parameters, `y = 2`, `z = y / 0` -> the 4th cell of 6
    assert "notebooks/02_bad.ipynb" in message
    assert "cell 4 of 6" in message and "`z = y / 0`" in message
    assert "ZeroDivisionError" in message
    partial = root / "_executed" / "failed" / "02_bad.ipynb"
    assert "_executed/failed/02_bad.ipynb" in message
    nb = nbformat.read(partial, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert [e.ename for e in errors] == ["ZeroDivisionError"]
    assert not (html / "index.html").exists()
    assert not (root / "_executed" / "notebooks" / "02_bad.ipynb").exists()
    assert not (root / "_executed" / "notebooks" / "03_after.ipynb").exists(), "the chain stops"


def test_unchanged_notebooks_are_skipped(tiny_book, tmp_path):
    bank = tmp_path / "bank.h5"
    bank.write_bytes(b"first bank")
    root = tiny_book({
        "01_a": ("profile = 'quick'\nbank = ''", "x = 1"),
        "02_b": ("profile = 'quick'\nk = 1", "y = k"),
    })
    executed = root / "_executed" / "notebooks" / "01_a.ipynb"

    def statuses(**kw):
        result = book.run_chain(root, bank=bank, build=False, progress=False, **kw)
        return {r.name: r.status for r in result.runs}

    assert statuses() == {"01_a": "executed", "02_b": "executed"}
    stamp = executed.stat().st_mtime_ns
    assert statuses() == {"01_a": "unchanged", "02_b": "unchanged"}
    assert executed.stat().st_mtime_ns == stamp, "a skipped notebook is not rewritten"

    bank.write_bytes(b"other bank")  # only 01_a takes the bank
    assert statuses() == {"01_a": "executed", "02_b": "unchanged"}
    assert statuses(only=["02"], extra={"k": 2}) == {"02_b": "executed"}

    source = root / "notebooks" / "02_b.ipynb"
    nb = nbformat.read(source, as_version=4)
    nb.cells[2].source = "y = k + 1"
    nbformat.write(nb, source)
    assert statuses() == {"01_a": "unchanged", "02_b": "executed"}
    assert statuses(force=True) == {"01_a": "executed", "02_b": "executed"}


def test_provenance_lists_every_notebook_with_status(tiny_book):
    root = tiny_book({"01_a": ("profile = 'quick'", "x = 1"), "02_b": ("profile = 'quick'", "y = 2")})
    book.run_chain(root, profile="smoke", only=["01"], build=False, progress=False)
    text = (root / "_executed" / "provenance.md").read_text()
    rows = {m[0]: m[1] for m in re.findall(r"\| \{doc\}`notebooks/(\w+)` \| ([^|]+) \|", text)}
    assert rows == {"01_a": "executed in this run", "02_b": "not executed"}
    assert "| profile | `smoke` |" in text


# ---------------------------------------------------------------- the real book


@pytest.mark.slow
def test_smoke_chain_executes_every_notebook_and_builds_the_book(smoke_book):
    root, result, seconds = smoke_book
    toc = (root / "_toc.yml").read_text()
    listed = re.findall(r"file:\s*_executed/notebooks/(\S+)", toc)
    assert [r.name for r in result.runs] == listed
    assert all(r.status == "executed" for r in result.runs)
    html = root / "_build" / "html"
    assert (html / "index.html").is_file()
    for name in listed:
        assert (html / "_executed" / "notebooks" / f"{name}.html").is_file(), name
        executed = json.loads((root / "_executed" / "notebooks" / f"{name}.ipynb").read_text())
        assert executed["metadata"]["papermill"]["parameters"]["profile"] == "smoke"
    assert (html / "_executed" / "provenance.html").is_file()
    print(f"smoke chain + build: {seconds:.1f} s; build {result.build_s:.1f} s; "
          + ", ".join(f"{r.name} {r.wall_s:.1f} s" for r in result.runs))
