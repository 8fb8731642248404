"""The package's architecture as a contract: import-linter's layers, acyclic and independence
contracts of pyproject.toml, and the public API's import paths (DESIGN's contract)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    pytest.importorskip("importlinter")
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_a_broken_layer_is_reported(tmp_path):
    """The check can fail: a copy of the package whose method imports the experiments breaks it."""
    pytest.importorskip("importlinter")
    import shutil

    shutil.copytree(REPO / "cupl", tmp_path / "cupl", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "cupl" / "method" / "pooling.py", "a") as f:
        f.write("\nfrom cupl.experiments import train  # noqa: E402,F401\n")
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"],
                          cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path), "PATH": ""})
    assert done.returncode != 0
    assert "Layers: command line, book, experiments, method, data and config, helpers BROKEN" in done.stdout
    assert "- cupl.method.pooling -> cupl.experiments.train" in done.stdout


@pytest.mark.parametrize("module, names", [
    ("cupl.pooling", ["segment"]),
    ("cupl.models", ["MultiHeadClassifier", "ClipClassifier"]),
    ("cupl.losses", ["mil_ranking_loss", "diversity_loss", "norm_loss"]),
    ("cupl.uncertainty", ["mc_dropout"]),
    ("cupl.mining", ["temporal_context", "reliable_indices"]),
    ("cupl.evaluate", ["frame_scores", "frame_auc", "frame_ap"]),
    ("cupl.data", ["FeatureBank"]),
])
def test_public_api_paths(module, names):
    import importlib

    mod = importlib.import_module(module)
    for name in names:
        assert callable(getattr(mod, name)), f"{module}.{name}"
