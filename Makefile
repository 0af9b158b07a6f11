# Two commands set everything up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PYTHONUNBUFFERED := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run up down dvc-run test lint bench clean-venv

# The venv is rebuilt when pyproject.toml changes; pip is upgraded first (the stock one is ~4x slower).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

## run: start the local stack, run the deployment ssft/full following its stages' progress here, show the table
run: up
	. scripts/env.sh && python -m flows.watch ssft/full
	@cat results/summary.md
	@. scripts/env.sh && echo "Prefect UI: http://127.0.0.1:$$PREFECT_PORT (password: cat .prefect/auth)   MLflow UI: http://127.0.0.1:$$MLFLOW_PORT   (make down stops them)"

## up / down: the local Prefect server, MLflow server and deployment server (127.0.0.1 only)
up: $(VENV)/.installed
	scripts/up.sh

down:
	scripts/down.sh

## dvc-run: the same pipeline without Prefect
dvc-run: $(VENV)/.installed
	$(BIN)/dvc repro
	@cat results/summary.md

## test: the whole test suite
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests

## bench: what an SSFT step costs next to an SFT step on this CPU; ends with ssft_step/sft_step=... agreement=...
## (GPU: bash bench/gpu.sh on a machine with one H100/H200)
bench: $(VENV)/.installed
	$(BIN)/python bench/bench_step.py

lint: $(VENV)/.installed
	$(BIN)/ruff check ssft tests

clean-venv:
	rm -rf $(VENV)
