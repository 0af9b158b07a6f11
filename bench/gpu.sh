#!/usr/bin/env bash
# The prepared GPU check (one H100/H200, under 9 minutes, nothing downloaded): JSON lines on stdout.
#   bash bench/gpu.sh                      # from the repo root, on a machine with torch + transformers
# The GPU image has torch, transformers, accelerate, scipy, pyarrow, peft but not datasets, mlflow, prefect or
# dvc: none of those is needed here. Wheels in .whl/ (e.g. liger-kernel) are installed first when present.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
eval "$(python3 -m ssft.env "$PWD")"   # offline defaults (ssft/env.py)
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import json, torch, transformers; print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__}))'
python3 bench/gpu_step.py --shape 0.5b --trace-tokens 1024 4096 --steps 3
python3 bench/gpu_cli.py --shapes tiny 0.5b --methods ssft sft
bash bench/gpu_fsdp.sh 1                    # FSDP2 vs DDP on a tiny qwen2 checkpoint (about a minute)
