# Two commands set everything up on a fresh machine: `make run` and `make test` (`make check`: what CI runs).
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Offline defaults and the local MLflow store: ssft/env.py (recipes source scripts/env.sh, the tests conftest.py).
ENV := . scripts/env.sh &&
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run study up down worker dvc-run test test-all lint types check bench bench-generation bench-memory clean-venv

# The venv is rebuilt when pyproject.toml changes; pip is upgraded first (the stock one is ~4x slower).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "installing the Python dependencies into $(VENV) (~3 min on a fresh machine; quiet until done)"
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

## run: start the local stack, run the deployment ssft/full following its stages' progress here; it ends with
## the table (headline rows marked ◀), links to the MLflow comparison, runs and figures, then the headline line
run: up
	$(ENV) python -m flows.watch ssft/full
	@$(ENV) echo "Prefect UI: http://127.0.0.1:$$PREFECT_PORT (password: the whole line of .prefect/auth, ssft: included)   MLflow UI: http://127.0.0.1:$$MLFLOW_PORT (user ssft, password: .prefect/mlflow-auth)   (make down stops them)"

## study: the deployment ssft/study (studies/cpu.yaml: settings x seeds, under an hour on 2 cores), followed
## here; writes results/study.md with its figures (finished cells are reused: a rerun only redoes what changed)
study: up
	$(ENV) python -m flows.watch ssft/study

## up / down: the local Prefect server, MLflow server and deployment server (127.0.0.1 only)
up: $(VENV)/.installed
	scripts/up.sh

down:
	scripts/down.sh

## worker: on a GPU host, a worker of the work pool POOL (gpu) that runs the stages of pipeline.pool_stages;
## needs PREFECT_API_URL, PREFECT_API_AUTH_STRING and MLFLOW_TRACKING_URI of the orchestrator (README: Scale out)
worker: $(VENV)/.installed
	scripts/worker.sh

## dvc-run: the same pipeline without Prefect
dvc-run: $(VENV)/.installed
	$(ENV) dvc repro
	@cat results/summary.md

## test: the fast tests (under 5 min on 2 cores); the tests marked slow (dvc repro, the local stack, Prefect
## flows, torchrun, the GPU scripts) are skipped
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not slow" tests

## test-all: every test, the slow integration tests included (what CI runs)
test-all: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests

## bench: what an SSFT step costs next to an SFT step on this CPU; ends with ssft_step/sft_step=... agreement=...
## (GPU: bash bench/gpu.sh on a machine with one H100/H200)
bench: $(VENV)/.installed
	$(ENV) python bench/bench_step.py

## bench-generation: generated tokens/s of the hf backend against the openai backend (transformers serve,
## continuous batching) and that server's own throughput; ends with openai/hf=... openai/plain=...
bench-generation: $(VENV)/.installed
	$(ENV) python bench/bench_generation.py

## bench-memory: peak memory of one training step, plain transformers against this project's SFT and SSFT steps
## (vocab 151936, hidden 256, 1024/4096 trace tokens, each case in a fresh process); ends with the ratios
bench-memory: $(VENV)/.installed
	$(ENV) python bench/bench_memory.py

## lint / types: ruff, and mypy (configured in pyproject.toml: ssft and flows)
lint: $(VENV)/.installed
	$(BIN)/ruff check ssft tests flows bench

types: $(VENV)/.installed
	$(BIN)/mypy

## check: everything CI checks
check: lint types test-all

clean-venv:
	rm -rf $(VENV)
