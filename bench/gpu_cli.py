"""The CLI on local checkpoints, as a user runs it on a GPU: `ssft train` + `ssft evaluate`, JSON lines out.

    python bench/gpu_cli.py [--shapes tiny 0.5b] [--methods ssft sft] [--work DIR]

Builds, offline, a random-init Qwen2 checkpoint per shape (bench/gpu_step.py's SHAPES) with a byte-level BPE
tokenizer, a ChatML chat template and two eos ids in its generation_config, writes the add4 trace parquet
files with pyarrow (no `datasets` needed), then runs the stages with `model.dtype: bfloat16` (float32 master
weights, bf16 autocast) and sdpa. Each run prints one JSON line: steps/s, loss, wall seconds, headline metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.gpu_step import SHAPES  # noqa: E402
from ssft.data import traces  # noqa: E402
from ssft.data.sources import synthetic  # noqa: E402
from ssft.data.tasks import get_task  # noqa: E402
from ssft.eval.evaluate import METRICS_FILE  # noqa: E402

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
RUN = {"tiny": {"max_steps": 300, "lr": 1e-3}, "0.5b": {"max_steps": 60, "lr": 2e-5}}


def write_traces(out: Path) -> list[str]:
    """add4 (marked) train/eval parquet files; returns all trace texts (the tokenizer's training corpus)."""
    splits = synthetic.synthetic_splits(get_task("add4", marked=True), 400, 64, seed=0)
    for split, rows in splits.items():
        out.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in traces.COLUMNS} for r in rows]),
                       out / f"{split}.parquet")
    return [r["question"] for r in splits["train"]] + [r["trace"] for r in splits["train"]]


def make_checkpoint(out: Path, shape: str, corpus: list[str]) -> None:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML)
    fast.save_pretrained(out)
    vocab = max(SHAPES[shape]["vocab_size"], len(fast))
    cfg = Qwen2Config(**{**SHAPES[shape], "vocab_size": vocab}, tie_word_embeddings=True,
                      max_position_embeddings=4096, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    eos = [fast.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    GenerationConfig(eos_token_id=eos, pad_token_id=fast.pad_token_id).save_pretrained(out)


def params(ckpt: Path, shape: str, max_steps: int | None, dtype: str) -> dict:
    run = {**RUN[shape], **({"max_steps": max_steps} if max_steps else {})}
    return {"seed": 0, "task": {"name": "add4", "marked": True},
            "model": {"checkpoint": str(ckpt), "dtype": dtype, "attn_implementation": "sdpa",
                      "max_length": 256},
            "ssft": {"num_tags": 4, "cost_tokens": 12},
            "train": {**run, "questions_per_step": 8, "warmup_steps": 10, "save_steps": 10_000,
                      "logging_steps": 20, "threads": 0},
            "eval": {"samples": 8, "ks": [8], "max_new_tokens": 64, "batch_size": 512},
            "tracking": {"enabled": False}}


def stage(work: Path, *args: str) -> float:
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "ssft.cli", "--params", str(work / "params.yaml"), *args],
                         capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if res.returncode != 0:
        raise SystemExit(f"ssft {' '.join(args)} failed:\n{res.stderr[-4000:]}")
    return time.monotonic() - t0


def run_one(work: Path, data: Path, shape: str, method: str, dtype: str) -> dict:
    """Train and evaluate one method; the JSON line of the run."""
    common = ["--traces", str(data), "--models", str(work / "models")]
    train_s = stage(work, "train", "--method", method, *common, "--checkpoints", str(work / "ckpt"))
    eval_s = stage(work, "evaluate", "--method", method, *common, "--results", str(work / "results"))
    stats = json.loads((work / "models" / method / "train_stats.json").read_text())
    timing = json.loads((work / "ckpt" / method / "timing.json").read_text())  # wall clock: beside the checkpoints
    metrics = json.loads((work / "results" / method / METRICS_FILE).read_text())
    return {"case": "cli", "shape": shape, "method": method, "dtype": dtype, "steps": stats["steps"],
            "steps_per_s": round(stats["steps"] / timing["train_seconds"], 2),
            "train_loss": round(stats["train_loss"], 4), "train_wall_s": round(train_s, 1),
            "host_ms": round(float(np.mean([h["host_ms"] for h in timing["log_history"] if "host_ms" in h])), 2),
            "eval_wall_s": round(eval_s, 1),
            **{k: round(metrics[k], 3) for k in ("pass@1", "cons@N", "pass@N", "coverage")},
            "loss_curve": [round(h["loss"], 3) for h in stats["log_history"] if "loss" in h]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["tiny", "0.5b"], choices=SHAPES)
    ap.add_argument("--methods", nargs="+", default=["ssft", "sft"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/ssft-gpu-cli"))
    ap.add_argument("--max-steps", type=int, help="override the per-shape step count (a quick CPU smoke run)")
    args = ap.parse_args()
    data = args.work / "traces"
    corpus = write_traces(data)
    runs = [(shape, method, "bfloat16") for shape in args.shapes for method in args.methods]
    if "tiny" in args.shapes:  # bf16 mixed precision must follow the float32 loss curve
        runs.append(("tiny", args.methods[0], "float32"))
    for shape, method, dtype in runs:
        work = args.work / shape / dtype
        if not (work / "checkpoint" / "config.json").exists():
            make_checkpoint(work / "checkpoint", shape, corpus)
        (work / "params.yaml").write_text(yaml.safe_dump(params(work / "checkpoint", shape, args.max_steps, dtype)))
        print(json.dumps(run_one(work, data, shape, method, dtype)), flush=True)


if __name__ == "__main__":
    main()
