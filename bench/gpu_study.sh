#!/usr/bin/env bash
# The prepared GPU study (one H100/H200): studies/gpu.yaml through `ssft study`, tracking off, no DVC,
# Prefect or MLflow needed; writes results/study-gpu.md and its figures. From the repo root:
#   bash bench/gpu_study.sh
# The synthetic traces stage writes parquet with pyarrow, so `datasets` is not needed either.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
eval "$(python3 -m ssft.env "$PWD")"   # offline defaults (ssft/env.py)
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
time python3 -m ssft.cli study studies/gpu.yaml --workdir .studies
