# Two entry points for a new user: `make reproduce` and `make test`. Both build .venv first.
# `make test-lower-bound` (CI runs it too) tests on the lowest version of every package that the
# requirements allow, in a venv of its own; `make test` gets the highest.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

LOWER := .venv-lower
LOWER_STAMP := $(LOWER)/.installed

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

# Each requirement's lower bound (`name>=X` or `name==X`) becomes `name==X`. From an empty venv each
# time: what an earlier install left would not be the lowest.
$(LOWER_STAMP): envs/requirements.txt pyproject.toml
	rm -rf $(LOWER)
	$(PYTHON) -m venv $(LOWER)
	$(LOWER)/bin/python -m pip install --quiet --upgrade pip
	sed -nE 's/^([A-Za-z0-9_.-]+)(==|>=)([0-9.]+).*/\1==\3/p' envs/requirements.txt > $(LOWER)/lowest.txt
	test $$(wc -l < $(LOWER)/lowest.txt) -eq $$(grep -c '^[A-Za-z]' envs/requirements.txt)
	$(LOWER)/bin/python -m pip install --quiet -r $(LOWER)/lowest.txt
	$(LOWER)/bin/python -m pip install --quiet --no-deps -e .
	touch $(LOWER_STAMP)

test-lower-bound: $(LOWER_STAMP)
	tr '\n' ' ' < $(LOWER)/lowest.txt; echo
	$(LOWER)/bin/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/mypy
	$(BIN)/snakemake --lint

clean-venv:
	rm -rf $(VENV) $(LOWER)
