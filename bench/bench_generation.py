"""Generated tokens/s of the generation backends, side by side on one machine, as ratios.

    make bench-generation   # = .venv/bin/python bench/bench_generation.py [--questions 16] [--reps 3]

The shipped tiny model (params.yaml's model section, random init, the project's tags) and the task's evaluation
prompts (every question x every tag, greedy, ``eval.max_new_tokens``):

    hf      the hf backend (batched, left-padded ``model.generate`` in this process, ``eval.batch_size``)
    openai  the openai backend against ``transformers serve`` on the same model directory (continuous batching)
    plain   the same server driven by a plain client: the official ``openai`` client, the same prompts (as text:
            transformers serve takes no token ids) and settings from as many threads, no checks, no decoding

Cases are interleaved over ``--reps`` rounds so load changes hit each alike, and each case's median round is
reported (every round's rate is printed too); tokens are the generated tokens the backend reports (the server's
own count for openai and plain). On a shared machine one round can be 10x another: read the rounds. Last line:
``openai/hf=<ratio> openai/plain=<ratio>`` (the goal: openai/plain >= 0.9, the backend costs < 10% of what the
server delivers). On a GPU, serve the model with vLLM instead (``--server http://127.0.0.1:8000/v1``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from openai import OpenAI

from ssft.config import load
from ssft.data.sources import synthetic
from ssft.data.tasks import get_task
from ssft.generation.factory import checkpoint_stops
from ssft.generation.hf import HfSampler
from ssft.generation.openai import CONCURRENCY, OpenAISampler
from ssft.generation.serve import transformers_serve
from ssft.train import models
from ssft.train.forking import prompt_ids

ROOT = Path(__file__).resolve().parents[1]


def plain_client(url: str, model: str, texts: list[str], max_new_tokens: int, stops: list[int]) -> Callable[[], int]:
    """One greedy completion per prompt from ``CONCURRENCY`` threads; returns the generated tokens it counted."""
    client = OpenAI(base_url=url, api_key="EMPTY")
    config = json.dumps({"do_sample": False, "max_new_tokens": max_new_tokens, "eos_token_id": stops})

    def one(text: str) -> int:
        resp = client.completions.create(model=model, prompt=text, max_tokens=max_new_tokens,
                                         extra_body={"generation_config": config})
        return resp.usage.completion_tokens if resp.usage else 0

    def run() -> int:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            return sum(pool.map(one, texts))
    return run


def timed(fn: Callable[[], int]) -> tuple[int, float]:
    t0 = time.perf_counter()
    tokens = fn()
    return tokens, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=int, default=16, help="evaluation questions (x every tag = prompts)")
    p.add_argument("--reps", type=int, default=3, help="interleaved rounds of every case")
    p.add_argument("--max-new-tokens", type=int, default=0, help="0 = params.yaml eval.max_new_tokens")
    p.add_argument("--server", help="an already running server of the model (e.g. vLLM); default: transformers serve")
    args = p.parse_args()
    cfg = load(ROOT / "params.yaml")
    budget = args.max_new_tokens or cfg.eval.max_new_tokens
    model, tok = models.build(cfg.model, cfg.ssft.num_tags, cfg.seed)
    layout = models.prompt_layout(cfg.model, tok, cfg.ssft.num_tags)
    task = get_task(cfg.task.name, marked=cfg.task.marked, **cfg.task.options)
    questions = synthetic.synthetic_splits(task, 1, args.questions, cfg.seed)["eval"]
    prompts = [prompt_ids(tok, layout, q["question"], t) for q in {r["question_id"]: r for r in questions}.values()
               for t in range(1, cfg.ssft.num_tags + 1)]
    with ExitStack() as stack:
        model_dir = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "model"
        models.save(model, tok, model_dir, {"method": "ssft", "num_tags": cfg.ssft.num_tags}, layout=layout)
        url = args.server or stack.enter_context(transformers_serve(model_dir, continuous_batching=True))
        hf = HfSampler(model.eval(), tok, cfg.eval.batch_size)
        stops = checkpoint_stops(model_dir, tok)
        served = OpenAISampler(url, model_dir, tok, stops, layout.all_tags)
        texts = [tok.decode(p, skip_special_tokens=False) for p in prompts]
        cases: dict[str, Callable[[], int]] = {
            "hf": lambda: sum(s.length for (s,) in hf.generate(prompts, 1, None, max_new_tokens=budget)),
            "plain": plain_client(url, served.model, texts, budget, stops),
            "openai": lambda: sum(s.length for (s,) in served.generate(prompts, 1, None, max_new_tokens=budget))}
        cases["plain"]()  # warm-up: the server's first requests start its batching engine
        rounds: dict[str, list[tuple[int, float]]] = {name: [] for name in cases}
        for _ in range(args.reps):
            for name, fn in cases.items():
                rounds[name].append(timed(fn))
    # The median round: a shared machine's load comes in bursts that one round's total would carry.
    rate = {name: statistics.median(tokens / seconds for tokens, seconds in runs) for name, runs in rounds.items()}
    print(f"{len(prompts)} prompts x {budget} new tokens max, {args.reps} rounds, server {url.split('//')[1]}")
    for name, r in rate.items():
        print(f"{name:>7}: {r:9.1f} generated tokens/s (median round; rounds: "
              f"{', '.join(f'{t / s:.0f}' for t, s in rounds[name])})")
    print(f"openai/hf={rate['openai'] / rate['hf']:.3f} openai/plain={rate['openai'] / rate['plain']:.3f}")


if __name__ == "__main__":
    main()
