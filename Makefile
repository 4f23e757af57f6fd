# archbench: `make demo` sets everything up and runs the quick suite; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Pinned first so pip never pulls a multi-GB CUDA build (the CPU build lies on local disk).
TORCH ?= torch==2.13.0

.PHONY: demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/archbench run --suite quick
	$(BIN)/archbench site --out site-out

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m pytest benchmarks --benchmark-only -q

lint: $(VENV)/.installed
	$(BIN)/ruff check harness architectures tasks tests

clean:
	rm -rf $(VENV) site-out
