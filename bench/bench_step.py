"""What SSFT costs next to plain SFT, as ratios measured side by side in one run (CPU time, 1 thread).

    .venv/bin/python bench/bench_step.py [--questions 8] [--reps 20]

Prints, against one SFT step that trains the same sequences: a full SSFT step (score + match + train)
with the shipped settings, with full-trace scoring, and without the prefix cache; and scoring alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ssft.config import from_dict
from ssft.data.tasks import get_task
from ssft.train.forking import completion_ids, prompt_ids, question_ids
from ssft.train.matching import ScoreItem, assign, score_costs
from ssft.train.models import build, prompt_layout
from ssft.train.trainer import Example, build_batch, sequence_loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = from_dict({"model": {"hidden_size": 96, "num_layers": 3, "num_heads": 4, "intermediate_size": 384}})
    n = cfg.ssft.num_tags
    model, tok = build(cfg.model, n, 0)
    layout = prompt_layout(cfg.model, tok, n)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    task = get_task("add4", marked=True)
    exs = [Example(p.question_id,
                   tuple(tuple(prompt_ids(tok, layout, p.question, t)) for t in [None, *range(1, n + 1)]),
                   len(question_ids(tok, layout, p.question)),
                   tuple(tuple(completion_ids(tok, task.render(p, s))) for s in task.strategies),
                   task.strategies, (0, 1, 2, 3)) for p in task.problems(args.questions, seed=0)]
    items = [ScoreItem(ex.prompts[1:], ex.completions) for ex in exs]

    def train_step(tags: list) -> None:
        loss, count = sequence_loss(model, build_batch(exs, tags, tok.pad_token_id, True))
        (loss / count).backward()
        opt.step()
        opt.zero_grad()

    def ssft_step(cost_tokens: int, cache: bool) -> None:
        costs = score_costs(model, items, cost_tokens, tok.pad_token_id, cache)
        train_step([[int(t) + 1 for t in assign(c)] for c in costs])

    cases = {
        "sft step": lambda: train_step([[None] * 4 for _ in exs]),
        "ssft step (L=12, prefix cache)": lambda: ssft_step(12, True),
        "ssft step (L=12, no cache)": lambda: ssft_step(12, False),
        "ssft step (full trace, prefix cache)": lambda: ssft_step(0, True),
        "scoring only (L=12, prefix cache)": lambda: score_costs(model, items, 12, tok.pad_token_id, True),
        "scoring only (full trace, no cache)": lambda: score_costs(model, items, 0, tok.pad_token_id, False),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.reps):            # interleaved, so load changes hit every case alike
        for name, fn in cases.items():
            t0 = time.process_time()
            fn()
            times[name].append(time.process_time() - t0)
    base = float(np.median(times["sft step"]))
    print(f"{args.questions} questions x 4 traces, N={n}; median CPU ms, ratio to the SFT step")
    for name, ts in times.items():
        print(f"  {name:40s} {1000 * np.median(ts):7.1f} ms  {np.median(ts) / base:5.2f}x")


if __name__ == "__main__":
    main()
