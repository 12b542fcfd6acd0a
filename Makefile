# The few commands a contributor needs. Each creates its own virtual environment.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

## Start the server on the embedded default (SQLite in ./data), with demo devices.
run: $(STAMP)
	$(BIN)/headless-ops serve --demo

## Run the whole suite: lint, types, then every test on SQLite and PostgreSQL.
test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

## Benchmarks, run by hand; results go to docs/benchmarks.md. The scheduler's baselines
## (Procrastinate, APScheduler 3) come from the `bench` extra, never from the server's deps.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.api_create
	$(BIN)/python -m bench.api_list
	$(BIN)/python -m bench.dispatch
	$(BIN)/python -m bench.lateness
	$(BIN)/python -m bench.ssh_backup
	$(BIN)/python -m bench.cwmp_sessions
	$(BIN)/python -m bench.cwmp_firmware

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
