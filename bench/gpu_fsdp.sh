#!/usr/bin/env bash
# FSDP2 against DDP on a GPU machine (prepared; about a minute on one H100/H200; nothing downloaded): JSON lines.
#   bash bench/gpu_fsdp.sh [NPROC]      # NPROC GPUs (default 1: FSDP with one process still wraps and shards)
# A tiny local qwen2 checkpoint (bench/gpu_cli.py builds it), `ssft train --method ssft` for 20 steps in float32,
# once under accelerate launch --config_file configs/accelerate/fsdp.yaml and once under torchrun (DDP), both
# through bench/fsdp_train.py. Lines: each rank's fsdp_report (wrapping, head shard, float32 vocabulary-sized
# tensors alive between forward and backward, peak CUDA memory), then {"case": "fsdp_vs_ddp", ...}: the largest
# relative difference of the loss and grad-norm curves, and whether the matching statistics are equal.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
eval "$(python3 -m ssft.env "$PWD")"   # offline defaults (ssft/env.py)
NPROC="${1:-1}"
WORK="${SSFT_GPU_FSDP_WORK:-/tmp/ssft-gpu-fsdp}"
rm -rf "$WORK" && mkdir -p "$WORK"
python3 - "$WORK" <<'PY'
import sys
from pathlib import Path
import yaml
from bench.gpu_cli import make_checkpoint, params, write_traces
work = Path(sys.argv[1])
make_checkpoint(work / "checkpoint", "tiny", write_traces(work / "traces"))
p = params(work / "checkpoint", "tiny", 20, "float32")
p["train"].update(logging_steps=1, save_steps=10)  # a checkpoint (FSDP: gathered full state dict) at step 10
(work / "params.yaml").write_text(yaml.safe_dump(p))
PY
args=(--params "$WORK/params.yaml" train --method ssft --traces "$WORK/traces")
accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes "$NPROC" bench/fsdp_train.py \
  "${args[@]}" --models "$WORK/fsdp/m" --checkpoints "$WORK/fsdp/ck" 2>"$WORK/fsdp.log" | grep '^{' \
  | sed 's/^{"fsdp_report"/{"case": "fsdp", "fsdp_report"/'
torchrun --standalone --nproc_per_node "$NPROC" bench/fsdp_train.py \
  "${args[@]}" --models "$WORK/ddp/m" --checkpoints "$WORK/ddp/ck" 2>"$WORK/ddp.log" | grep '^{' \
  | sed 's/^{"fsdp_report"/{"case": "ddp", "fsdp_report"/'
python3 - "$WORK" <<'PY'
import json, sys
from pathlib import Path
work = Path(sys.argv[1])
a, b = (json.loads((work / k / "m" / "ssft" / "train_stats.json").read_text()) for k in ("fsdp", "ddp"))
curve = lambda s, k: [h[k] for h in s["log_history"] if k in h]
rel = lambda k: max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(curve(a, k), curve(b, k)))
same = [ea["tag_source_counts"] == eb["tag_source_counts"] for ea, eb in zip(a["epochs"], b["epochs"])]
print(json.dumps({"case": "fsdp_vs_ddp", "steps": [a["steps"], b["steps"]], "loss_max_rel_diff": rel("loss"),
                  "grad_norm_max_rel_diff": rel("grad_norm"), "tag_source_counts_equal": all(same),
                  "tag_source_totals_equal": a["tag_source_totals"] == b["tag_source_totals"],
                  "final_loss": [curve(a, "loss")[-1], curve(b, "loss")[-1]]}))
PY
