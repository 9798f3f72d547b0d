# `make demo` and `make test` do all set-up: they create .venv and install Rivulet into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo serve serve-scoring test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m fixtures.demo

serve: $(STAMP)
	$(BIN)/python -m fixtures.serve_demo

serve-scoring: $(STAMP)
	$(BIN)/python -m fixtures.serve_demo scoring

test: $(STAMP)
	$(BIN)/python -m pytest -q

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check engine tests jobs bench fixtures
	$(BIN)/ruff format --check engine tests jobs bench fixtures
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) offline_store bench/results/*.json bench/results/*.png
