"""Peak memory of one training step on the CPU: plain transformers against this project's SFT and SSFT steps.

    make bench-memory      # = .venv/bin/python bench/bench_memory.py [--trace-tokens 1024 4096] [--limit-gb 6]

A vocabulary-heavy small model (Qwen2 shape: vocab 151936, hidden 256, 2 layers, tied embeddings, float32) and
bench/gpu_step.py's batch: 2 questions x 4 traces, 6 tags, 128-token prompts, random token ids. Each case runs
in a fresh process (the peak of one process is its own), builds the model and AdamW, runs one step and reports
its peak RSS above the process's RSS before the model existed (weights, gradients, AdamW state, activations,
logits: what CUDA's max_memory_allocated counts on a GPU):

    plain         model(input_ids, labels=input_ids).loss.backward() + AdamW (full float32 logits)
    project_sft   ssft.train.trainer build_batch + sequence_loss (chunked loss at the labelled positions only)
    project_ssft  ssft.train.matching score_batch + score (L cost tokens, prefix cache) + assign, then the same

torch's CPU allocations are invisible to tracemalloc; ``resource.getrusage`` sees them. Each case runs under an
address-space limit (--limit-gb above the idle process, so a case cannot starve the machine): one that needs
more is reported as ``over_limit``, and the ratios against it are upper bounds (printed with ``<``), taken against
the larger of the limit and plain's float32 logits (``floor_mb``: rows x width x vocab x 4 bytes, which it holds).
Last line: ``sft/plain@T=... ssft/plain@T=... ssft_extra_over_sft@T=...%`` for the largest T measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("plain", "project_sft", "project_ssft")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def one_case(args: argparse.Namespace) -> dict:
    """In this (fresh) process: build, limit the address space, run one step of ``args.case``, report the peak."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(ROOT))
    from bench.gpu_step import TRACES, examples
    from ssft.train.matching import ScoreItem, assign, score, score_batch
    from ssft.train.trainer import build_batch, sequence_loss

    torch.set_num_threads(args.threads)
    rss0_kb = _status_kb("VmRSS")
    limit = _status_kb("VmSize") * 1024 + int(args.limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    out = {"case": args.case, "trace_tokens": args.trace_tokens[0], "vocab": args.vocab, "hidden": args.hidden}
    try:
        cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                          num_attention_heads=4, num_key_value_heads=2, intermediate_size=2 * args.hidden,
                          tie_word_embeddings=True, max_position_embeddings=8192, attn_implementation="sdpa")
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        exs = examples(args.vocab, args.trace_tokens[0])
        if args.case == "plain":
            rows = torch.tensor([list(ex.prompts[0]) + list(c) for ex in exs for c in ex.completions])
            out["floor_mb"] = round(rows.numel() * args.vocab * 4 / 2**20, 1)  # its float32 logits, at least
            model(input_ids=rows, labels=rows).loss.backward()
        else:
            tags: list = [[None] * TRACES for _ in exs]
            if args.case == "project_ssft":
                items = [ScoreItem(ex.prompts[1:], ex.completions) for ex in exs]
                costs = score(model, score_batch(items, args.cost_tokens, 0, True), items)
                tags = [[int(t) + 1 for t in assign(c)] for c in costs]
            loss, count = sequence_loss(model, build_batch(exs, tags, 0, True))
            (loss / count).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out["peak_mb"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0_kb) / 1024, 1)
    except (MemoryError, RuntimeError) as e:  # torch: "DefaultCPUAllocator: can't allocate memory"
        if "allocate" not in str(e) and not isinstance(e, MemoryError):
            raise
        out.update(over_limit=True, limit_gb=args.limit_gb)
    return out


def ratio(num: dict, den: dict) -> str:
    """num/den as text; '<x' when only the denominator is over the limit (its true peak is larger)."""
    if num.get("over_limit"):
        return "n/a"
    if den.get("over_limit"):  # its peak is above the limit and above its float32 logits alone
        return f"<{num['peak_mb'] / max(den['limit_gb'] * 1024, den['floor_mb']):.3f}"
    return f"{num['peak_mb'] / den['peak_mb']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace-tokens", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--cost-tokens", type=int, default=256, help="L, the scored trace tokens of SSFT's matching")
    ap.add_argument("--limit-gb", type=float, default=6.0, help="address space a case may add (GB)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # internal: one case in this process
    args = ap.parse_args()
    if args.case:
        print(json.dumps(one_case(args)), flush=True)
        return
    last = ""
    for tokens in args.trace_tokens:
        res = {}
        for case in CASES:
            cmd = [sys.executable, __file__, "--case", case, "--trace-tokens", str(tokens), "--vocab", str(args.vocab),
                   "--hidden", str(args.hidden), "--layers", str(args.layers), "--cost-tokens", str(args.cost_tokens),
                   "--limit-gb", str(args.limit_gb), "--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{case} at {tokens} tokens failed:\n{done.stderr[-3000:]}")
            res[case] = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps(res[case]), flush=True)
        sft, ssft, plain = res["project_sft"], res["project_ssft"], res["plain"]
        extra = "n/a" if sft.get("over_limit") or ssft.get("over_limit") else \
            f"{100 * (ssft['peak_mb'] / sft['peak_mb'] - 1):.1f}%"
        last = (f"sft/plain@{tokens}={ratio(sft, plain)} ssft/plain@{tokens}={ratio(ssft, plain)} "
                f"ssft_extra_over_sft@{tokens}={extra}")
        print(f"# {tokens} trace tokens: {last}", flush=True)
    print(last)


if __name__ == "__main__":
    main()
