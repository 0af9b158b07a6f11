"""One training step on a GPU, side by side: plain transformers SFT against this project's SFT and SSFT steps.

    python bench/gpu_step.py [--shape 0.5b|tiny] [--trace-tokens 1024 4096] [--steps 3]

A random-init model of the Qwen2.5-0.5B shape (494M params, vocab 151936, tied embeddings, sdpa); 2 questions
x 4 traces, N = 6 tags, 128-token prompts, random token ids. Each case builds its own model and optimizer
(fused AdamW) and prints one JSON line: seconds per step (mean after one warm-up), tokens/s (every token
of the trained rows), MFU (6 x params x tokens / time / 989 TFLOP/s, scoring not counted), peak GB.

    plain_sft         model(input_ids, labels=input_ids) on bf16 weights (what a plain-transformers user runs)
    plain_sft_amp     the same on float32 master weights under bf16 autocast (this project's precision)
    project_sft       build_batch + sequence_loss (chunked loss), float32 master weights, bf16 autocast
    project_ssft      score_costs (L cost tokens; 0 = whole trace) + assign + the same train step; for L > 0
                      also with packed scoring (ssft.scoring: packed, one row per question under a block mask):
                      packed_step_s, packed_peak_gb and packed_x_batched in the same line (not for the whole
                      trace: its row of M*N*T tokens needs a (M*N*T)^2 mask)

Ends with the agreement of bf16-autocast assignments with float32 ones. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from ssft.train.matching import ScoreItem, assign, score_costs
from ssft.train.trainer import Example, build_batch, sequence_loss

SHAPES = {
    "0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, vocab_size=151936),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=1000),
}
PEAK_FLOPS = 989e12  # H100/H200 dense bf16
QUESTIONS, TRACES, TAGS, PROMPT = 2, 4, 6, 128


def new_model(shape: str, dtype: torch.dtype, device: str) -> Qwen2ForCausalLM:
    cfg = Qwen2Config(**SHAPES[shape], tie_word_embeddings=True, max_position_embeddings=8192,
                      attn_implementation="sdpa" if device == "cuda" else "eager")
    torch.manual_seed(0)
    with torch.device(device):
        return Qwen2ForCausalLM(cfg).to(dtype)


def examples(vocab: int, trace_tokens: int) -> list[Example]:
    """Random questions: prompt = question + tag + newline (PROMPT tokens), TRACES traces + eos."""
    g = torch.Generator().manual_seed(0)
    ids = lambda n: tuple(torch.randint(10, vocab - TAGS - 10, (n,), generator=g).tolist())
    tags = [vocab - TAGS - 2 + i for i in range(TAGS + 1)]  # shared tag, then <think1..N>
    out = []
    for q in range(QUESTIONS):
        question = ids(PROMPT - 2)
        out.append(Example(f"q{q}", tuple(question + (t, 5) for t in tags), len(question),
                           tuple(ids(trace_tokens - 1) + (1,) for _ in range(TRACES)),
                           tuple(f"s{j}" for j in range(TRACES)), tuple(range(TRACES))))
    return out


def measure(fn: Callable[[], None], steps: int, device: str) -> tuple[float, float]:
    """Seconds per step after one warm-up, and peak GB allocated."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    peak = torch.cuda.max_memory_allocated() / 1e9 if device == "cuda" else 0.0
    return (time.perf_counter() - t0) / steps, peak


def run_case(name: str, shape: str, device: str, trace_tokens: int, steps: int, **kw: object) -> dict:
    pure = name == "plain_sft"
    model = new_model(shape, torch.bfloat16 if pure else torch.float32, device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    exs = examples(model.config.vocab_size, trace_tokens)
    amp = torch.autocast(device, dtype=torch.bfloat16, enabled=not pure)
    n_params = sum(p.numel() for p in model.parameters())
    rows = torch.tensor([list(ex.prompts[0]) + list(c) for ex in exs for c in ex.completions], device=device)

    def plain() -> None:
        with amp:
            loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def project(cost_tokens: int | None, scoring: str = "batched") -> None:
        tags: list = [[None] * TRACES for _ in exs]
        with amp:
            if cost_tokens is not None:
                items = [ScoreItem(ex.prompts[1:], ex.completions) for ex in exs]
                costs = score_costs(model, items, cost_tokens, 0, scoring=scoring)
                tags = [[int(t) + 1 for t in assign(c)] for c in costs]
            loss, count = sequence_loss(model, build_batch(exs, tags, 0, True))
            loss = loss / count
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    fn = plain if name.startswith("plain") else (lambda: project(kw.get("cost_tokens")))
    try:
        sec, peak = measure(fn, steps, device)
        tokens = rows.numel()
        out = {"case": name, **kw, "trace_tokens": trace_tokens, "step_s": round(sec, 4),
               "tokens_per_s": round(tokens / sec), "mfu": round(6 * n_params * tokens / sec / PEAK_FLOPS, 3),
               "peak_gb": round(peak, 1)}
    except torch.OutOfMemoryError:
        out = {"case": name, **kw, "trace_tokens": trace_tokens, "oom": True}
    if kw.get("cost_tokens"):
        try:
            sec, peak = measure(lambda: project(kw.get("cost_tokens"), "packed"), steps, device)
            out.update(packed_step_s=round(sec, 4), packed_peak_gb=round(peak, 1))
            if "step_s" in out:
                out["packed_x_batched"] = round(sec / out["step_s"], 3)
        except torch.OutOfMemoryError:
            out["packed_oom"] = True
    return out  # the model and optimizer go with this frame; main() empties the CUDA cache


def agreement(shape: str, device: str, cost_tokens: int) -> dict:
    """Share of questions whose bf16-autocast assignment equals the float32 one (random init: near ties)."""
    model = new_model(shape, torch.float32, device)
    exs = examples(model.config.vocab_size, 512) * 4
    items = [ScoreItem(ex.prompts[1:], ex.completions) for ex in exs]
    ref = [assign(c).tolist() for c in score_costs(model, items, cost_tokens, 0)]
    with torch.autocast(device, dtype=torch.bfloat16):
        got = [assign(c).tolist() for c in score_costs(model, items, cost_tokens, 0)]
    return {"case": "agreement_bf16_vs_fp32", "cost_tokens": cost_tokens,
            "agreement": float(np.mean([a == b for a, b in zip(ref, got)]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=SHAPES, default="0.5b")
    ap.add_argument("--trace-tokens", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    print(json.dumps({"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
                      "torch": torch.__version__, "shape": args.shape}), flush=True)
    for tt in args.trace_tokens:
        cases = [("plain_sft", {}), ("plain_sft_amp", {}), ("project_sft", {})] + [
            ("project_ssft", {"cost_tokens": L}) for L in (12, 256, 0)]
        results = []
        for name, kw in cases:
            results.append(run_case(name, args.shape, args.device, tt, args.steps, **kw))
            if args.device == "cuda":
                torch.cuda.empty_cache()
        base = next(r for r in results if r["case"] == "project_sft")
        for r in results:
            if "step_s" in r and "step_s" in base:
                r["x_project_sft"] = round(r["step_s"] / base["step_s"], 3)
            print(json.dumps(r), flush=True)
    print(json.dumps(agreement(args.shape, args.device, 256)), flush=True)


if __name__ == "__main__":
    main()
