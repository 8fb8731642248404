# Two entry points for a fresh machine: `make book` and `make test`.
# Both create .venv if it is missing and install what they need into it.

PYTHON ?= python3
VENV ?= .venv
# torch is installed on purpose before the package: whoever installed a CUDA build into
# the venv first keeps it (the step is skipped when `import torch` works).
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BOOK_ARGS ?=
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet

.PHONY: book test install clean

book: install
	$(VENV)/bin/cupl book $(BOOK_ARGS)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

install: $(VENV)/.cupl-installed

$(VENV)/.cupl-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -e ".[book,test]"
	touch $@

# Generated files only; the virtual environment stays (rm -rf .venv to drop it).
clean:
	rm -rf _build _executed .cupl-cache .pytest_cache
