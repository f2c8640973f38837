# The two commands of the README: `make test` and `make demo`. Both set up everything they need
# on a fresh machine (a virtualenv, the Docker engine, the test tools) and are safe to re-run.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup engine tools demo-tools lint typecheck unit test demo bench chaos clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

engine:
	scripts/ensure-docker

# The test tools include packages that ship system services (docker-registry, prometheus);
# the demo needs only the static busybox its runner image is built from.
tools:
	scripts/ensure-tools test

demo-tools:
	scripts/ensure-tools demo

lint: setup
	$(BIN)/ruff check operator tests bench scripts
	$(BIN)/ruff format --check operator tests bench scripts
	$(BIN)/mypy

test: setup tools engine lint
	$(BIN)/python -m pytest

demo: setup demo-tools engine
	$(BIN)/runscaler demo $(DEMO_ARGS)

# `make bench BENCH_ARGS=--quick` for the short CI variants.
bench: setup tools engine
	$(BIN)/python bench/table.py $(BENCH_ARGS)

# Seeded chaos against the real operator: 3 seeds x 4 minutes, or `make chaos SEED=N` to replay
# one seed; CHAOS_ARGS="--minutes 1" or "--short" for other lengths. Exits non-zero on a loss.
chaos: setup tools engine
	$(BIN)/python -m tests.chaos $(if $(SEED),--seed $(SEED)) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
