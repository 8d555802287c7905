# Two entry points for a new user: `make reproduce` and `make test`. Both build .venv first.
# `make test-lower-bound` (CI runs it too) tests the engine on the lowest transformers the
# requirements allow, in a venv of its own; `make test` gets the highest.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

LOWER := .venv-lower
LOWER_STAMP := $(LOWER)/.installed
TRANSFORMERS_LOWEST := $(shell sed -n 's/^transformers>=\([0-9.]*\).*/\1/p' envs/requirements.txt)
ENGINE_TESTS := tests/test_interventions.py tests/test_devices.py tests/test_benchmark.py tests/test_architectures.py

.PHONY: setup reproduce test test-lower-bound lint clean-venv

setup: $(STAMP)

$(STAMP): envs/requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r envs/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --rerun-incomplete

test: $(STAMP)
	$(BIN)/python -m pytest

$(LOWER_STAMP): envs/requirements.txt pyproject.toml
	test -n "$(TRANSFORMERS_LOWEST)"
	test -x $(LOWER)/bin/python || $(PYTHON) -m venv $(LOWER)
	$(LOWER)/bin/python -m pip install --quiet --upgrade pip
	$(LOWER)/bin/python -m pip install --quiet -r envs/requirements.txt "transformers==$(TRANSFORMERS_LOWEST)"
	$(LOWER)/bin/python -m pip install --quiet --no-deps -e .
	touch $(LOWER_STAMP)

test-lower-bound: $(LOWER_STAMP)
	$(LOWER)/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	$(LOWER)/bin/python -m pytest $(ENGINE_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/mypy
	$(BIN)/snakemake --lint

clean-venv:
	rm -rf $(VENV) $(LOWER)
