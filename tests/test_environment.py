"""environment.yml (conda) installs what pyproject.toml declares, for a Python it allows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")
from packaging.requirements import Requirement  # noqa: E402
from packaging.specifiers import SpecifierSet  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def env():
    return yaml.safe_load((REPO / "environment.yml").read_text())


def conda_and_pip(env):
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = [p for d in env["dependencies"] if isinstance(d, dict) for p in d.get("pip", [])]
    return conda, pip


def test_python_version_is_allowed_by_pyproject(env, pyproject):
    conda, _ = conda_and_pip(env)
    (python,) = [d for d in conda if re.match(r"python\b", d)]
    version = python.split("=", 1)[1].lstrip("=")
    assert version in SpecifierSet(pyproject["requires-python"])
    assert "pip" in conda


def test_pip_installs_the_project_with_book_and_test_extras(env, pyproject):
    _, pip = conda_and_pip(env)
    local = [p for p in pip if re.match(r"(-e\s+)?\.(\[|$)", p)]
    assert len(local) == 1, f"environment.yml must pip-install this project once, has {pip}"
    extras = set(re.search(r"\[(.*)\]", local[0]).group(1).split(","))
    assert {"book", "test"} <= extras <= set(pyproject["optional-dependencies"])


def test_packages_listed_beside_the_project_are_declared_in_pyproject(env, pyproject):
    conda, pip = conda_and_pip(env)
    declared = {Requirement(r).name.lower() for r in pyproject["dependencies"]}
    for extra in pyproject["optional-dependencies"].values():
        declared |= {Requirement(r).name.lower() for r in extra}
    others = [d for d in conda if not re.match(r"(python|pip)\b", d)]
    others += [p for p in pip if not re.match(r"(-e\s+)?\.(\[|$)", p)]
    undeclared = [d for d in others if re.split(r"[=<>!~\[ ]", d)[0].lower() not in declared]
    assert undeclared == [], "listed in environment.yml but not in pyproject.toml"
