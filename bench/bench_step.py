"""What SSFT costs next to plain SFT, as ratios measured side by side in one run (CPU time, 1 thread).

    make bench            # = .venv/bin/python bench/bench_step.py [--questions 8] [--reps 20]

The shipped settings of params.yaml (model, task, N = M = 4, L, prefix cache). Prints, against one SFT step
that trains the same sequences: a full SSFT step (score + match + train), the same with full-trace scoring
and without the prefix cache, and scoring alone; each SSFT step also with packed scoring (``ssft.scoring:
packed``, one row per question) at the shipped L and at a longer one (``--long-cost-tokens``), next to the
batched step. Steps are interleaved so load changes hit every case alike. The line before the last:
``packed/batched ssft step: L=<L> <ratio>, L=<long> <ratio>``.
Last line: ``ssft_step/sft_step=<ratio> agreement=<fraction>``, where agreement is the share of questions
whose assignment from the shipped scoring equals the one from a naive reference (one unpadded forward per
(trace, tag) pair, full-vocabulary float64 log-softmax) on the model as trained by the timed steps.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ssft.config import load
from ssft.data import traces
from ssft.data.sources import synthetic
from ssft.data.tasks import get_task
from ssft.train.matching import ScoreItem, assign, score_costs
from ssft.train.models import build, prompt_layout
from ssft.train.trainer import Example, build_batch, sequence_loss, tokenize

ROOT = Path(__file__).resolve().parents[1]


def reference_costs(model: torch.nn.Module, item: ScoreItem, cost_tokens: int) -> np.ndarray:
    """(M, N): mean NLL of the first L trace tokens, one forward per pair, nothing shared or chunked."""
    out = np.zeros((len(item.completions), len(item.prompts)))
    with torch.no_grad():
        for j, comp in enumerate(item.completions):
            scored = list(comp[:cost_tokens] if cost_tokens else comp)
            for i, prompt in enumerate(item.prompts):
                ids = torch.tensor([list(prompt) + scored])
                logp = model(input_ids=ids).logits[0, len(prompt) - 1: -1].double().log_softmax(-1)
                out[j, i] = -logp.gather(1, torch.tensor(scored)[:, None]).mean().item()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--long-cost-tokens", type=int, default=32, help="the longer L of the packed/batched ratio")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load(args.params)
    n, L, long_l = cfg.ssft.num_tags, cfg.ssft.cost_tokens, args.long_cost_tokens
    model, tok = build(cfg.model, n, cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    task = get_task(cfg.task.name, marked=cfg.task.marked, **cfg.task.options)
    questions, _ = traces.validate(synthetic.synthetic_rows(task, task.problems(args.questions, seed=cfg.seed)),
                                   "bench", n)
    exs: list[Example] = tokenize(questions, tok, n, list(task.strategies),
                                  layout=prompt_layout(cfg.model, tok, n))
    items = [ScoreItem(ex.prompts[1:], ex.completions) for ex in exs]
    m = len(exs[0].completions)

    def train_step(tags: list) -> None:
        loss, count = sequence_loss(model, build_batch(exs, tags, tok.pad_token_id, cfg.ssft.tag_in_loss))
        (loss / count).backward()
        opt.step()
        opt.zero_grad()

    def ssft_step(cost_tokens: int, cache: bool, scoring: str = "batched") -> None:
        costs = score_costs(model, items, cost_tokens, tok.pad_token_id, cache, scoring)
        train_step([[int(t) + 1 for t in assign(c)] for c in costs])

    cases: dict[str, Callable[[], object]] = {
        "sft step": lambda: train_step([[None] * m for _ in exs]),
        f"ssft step (L={L}, prefix cache)": lambda: ssft_step(L, True),
        f"ssft step (L={L}, packed)": lambda: ssft_step(L, True, "packed"),
        f"ssft step (L={L}, no cache)": lambda: ssft_step(L, False),
        f"ssft step (L={long_l}, prefix cache)": lambda: ssft_step(long_l, True),
        f"ssft step (L={long_l}, packed)": lambda: ssft_step(long_l, True, "packed"),
        "ssft step (full trace, prefix cache)": lambda: ssft_step(0, True),
        f"scoring only (L={L}, prefix cache)": lambda: score_costs(model, items, L, tok.pad_token_id, True),
        f"scoring only (L={L}, packed)": lambda: score_costs(model, items, L, tok.pad_token_id, True, "packed"),
        "scoring only (full trace, no cache)": lambda: score_costs(model, items, 0, tok.pad_token_id, False),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.reps):
        for name, fn in cases.items():
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
    base = float(np.median(times["sft step"]))
    print(f"{cfg.task.name}: {args.questions} questions x {m} traces, N={n}, L={L}; median CPU ms, ratio to SFT")
    for name, ts in times.items():
        print(f"  {name:40s} {1000 * np.median(ts):7.1f} ms  {np.median(ts) / base:5.2f}x")
    packed = {c: np.median(times[f"ssft step (L={c}, packed)"]) / np.median(times[f"ssft step (L={c}, prefix cache)"])
              for c in (L, long_l)}
    print("packed/batched ssft step: " + ", ".join(f"L={c} {r:.3f}" for c, r in packed.items()))
    shipped = score_costs(model, items, L, tok.pad_token_id, cfg.ssft.prefix_cache, cfg.ssft.scoring)
    agree = np.mean([np.array_equal(assign(c), assign(reference_costs(model, it, L))) for c, it in zip(shipped, items)])
    ratio = np.median(times[f"ssft step (L={L}, prefix cache)"]) / base
    print(f"ssft_step/sft_step={ratio:.3f} agreement={agree:.3f}")


if __name__ == "__main__":
    main()
