# archbench: `make demo` sets everything up and runs the quick suite; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned first so pip never pulls a multi-GB CUDA build (the CPU build lies on local disk).
TORCH ?= torch==2.13.0

.PHONY: demo test test-fast bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/archbench run --suite quick
	$(BIN)/archbench site --out site-out

# every test, the `slow` ones (a whole suite run in cell subprocesses) included
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# the same without the `slow` tests, for the edit-test loop
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(VENV)/.installed
	$(BIN)/python -m pytest benchmarks --benchmark-only -q

lint: $(VENV)/.installed
	$(BIN)/ruff check harness architectures tasks tests

clean:
	rm -rf $(VENV) site-out
