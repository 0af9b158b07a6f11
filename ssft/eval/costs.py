"""Where the matching's cost comes from: ``ssft costs --method ssft``.

The matching scores (trace j, tag i) by the mean NLL of the first L tokens of trace j after ``<think i>``
(:mod:`ssft.train.matching`) and trains the cheapest assignment. What decides it is the margin over the
runner-up, and that margin is a sum over the L positions. Where the model cannot tell the tags apart at the
tokens that name a strategy, the margin is ~0 and the assignment is a coin flip at every step: the 0.45M
pathstar model never copies the opening letter that names a walk, so its matching stayed at entropy ln 2 for
1500 steps while the 1.8M one settled in an epoch. This reads a trained model (or a snapshot) and training
traces, and says per position: the mean NLL, how far the tag moves it (the spread over tags for the same trace),
and how much of the margin between the best and the second-best assignment it carries.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ssft.data import traces as traces_mod
from ssft.errors import UserError
from ssft.train import methods, models
from ssft.train.forking import PromptLayout, completion_ids, prompt_ids
from ssft.train.loss import Targets, token_nll

UNDECIDED = 0.01  # nats: a margin below this flips with the noise of a single step


@dataclass(frozen=True)
class Decision:
    """One question's matching: the margin of the best assignment over the runner-up (nats of mean NLL,
    summed over traces), and what each position adds to it (sums to the margin)."""

    margin: float
    by_position: np.ndarray  # (L,)
    tags: tuple[int, ...]    # the best assignment: trace j -> tag (1-based)


def position_nll(model: torch.nn.Module, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                 tokens: int) -> np.ndarray:
    """(M, N, L) NLL of the first L tokens of each completion (trace) after each prompt (tag), NaN past a
    trace's end; one padded forward pass per question, and only the scored states meet the output projection
    (:func:`ssft.train.loss.token_nll`, as in the matching: a real vocabulary times every position would not fit)."""
    rows = [(list(p), list(c[:tokens])) for c in completions for p in prompts]
    width = max(len(p) + len(c) for p, c in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    positions, targets, slots = [], [], []
    for r, (p, c) in enumerate(rows):
        ids[r, :len(p) + len(c)] = torch.tensor(p + c)
        mask[r, :len(p) + len(c)] = 1
        positions += [r * width + len(p) - 1 + k for k in range(len(c))]  # the state before token k predicts it
        targets += c
        slots += [(r, k) for k in range(len(c))]
    device = next(model.parameters()).device
    nll = token_nll(model, ids.to(device), mask.to(device),
                    Targets(torch.tensor(positions, device=device), torch.tensor(targets, device=device)))
    out = np.full((len(rows), tokens), np.nan)
    for (r, k), v in zip(slots, nll.cpu().numpy()):
        out[r, k] = v
    return out.reshape(len(completions), len(prompts), tokens)


def decide(nll: np.ndarray) -> Decision:
    """The best assignment of traces to tags by mean NLL (as the matching scores it) against the runner-up. The
    second-best assignment leaves out at least one pair of the best, so it is the cheapest of the assignments
    that forbid one pair of the best each (Murty's first partition)."""
    counts = (~np.isnan(nll[:, 0, :])).sum(axis=1)  # scored tokens of each trace (the tag does not change them)
    cost = np.nansum(nll, axis=2) / np.maximum(counts, 1)[:, None]
    rows, best = linear_sum_assignment(cost)
    big = float(np.abs(cost).sum() + 1.0)  # dearer than any whole assignment: a forbidden pair
    runner: tuple[float, np.ndarray] | None = None
    for j, i in zip(rows, best):
        forbidden = cost.copy()
        forbidden[j, i] = big
        r, alt = linear_sum_assignment(forbidden)
        total = float(cost[r, alt].sum())
        if forbidden[r, alt].max() < big and (runner is None or total < runner[0]):
            runner = (total, alt)
    tags = tuple(int(i) + 1 for i in best)
    if runner is None:  # one tag: nothing to choose
        return Decision(0.0, np.zeros(nll.shape[2]), tags)
    gap = np.nan_to_num(nll[rows, runner[1]] - nll[rows, best]) / np.maximum(counts, 1)[:, None]
    return Decision(runner[0] - float(cost[rows, best].sum()), gap.sum(axis=0), tags)


def analyse(model_dir: Path, splits: dict[str, Path], questions: int, tokens: int) -> dict:
    """Per split (name -> trace file): the per-position table, the margins and the assignments over its first
    ``questions`` questions with two or more traces. The training questions are what the matching saw; held-out
    ones say whether what the tags learned carries over to questions never trained."""
    model, tokenizer, meta = models.load(model_dir)
    model.eval()
    layout, n_tags = PromptLayout.from_meta(meta), int(meta["num_tags"])
    if not methods.get(meta["method"]).tagged or n_tags < 2:
        raise UserError(f"{model_dir}: a {meta['method']} model has one tag (<think>), no matching to explain; "
                        "point --method or --model at a tagged model (ssft, random, fixed)")
    out = {}
    for name, path in splits.items():
        items = [q for q in traces_mod.load(path, n_tags)[0] if len(q.traces) >= 2][:questions]
        if not items:
            raise UserError(f"{path}: no question with two or more traces; the matching needs several per question")
        nlls = [position_nll(model, [prompt_ids(tokenizer, layout, q.question, t) for t in range(1, n_tags + 1)],
                             [completion_ids(tokenizer, t) for t in q.traces], tokens) for q in items]
        example = [str(tokenizer.decode([t])) for t in completion_ids(tokenizer, items[0].traces[0])[:tokens]]
        out[name] = summarise(nlls, [decide(n) for n in nlls], [q.sources for q in items], example)
    return {"model": str(model_dir), "tags": n_tags, "tokens": tokens, "splits": out}


def summarise(nlls: list[np.ndarray], decisions: list[Decision], sources: list[Sequence[str]],
              example: list[str]) -> dict:
    """One split's numbers: per position the mean NLL, the tag spread and the share of the margin; the margins;
    the best assignments as tag x strategy counts, and the share of questions that follow the commonest map."""
    margins = np.array([d.margin for d in decisions])
    added = np.mean([d.by_position for d in decisions], axis=0)
    positions = []
    for p in range(added.size):
        at_p = [n[:, :, p] for n in nlls]  # (M, N) per question
        flat = np.concatenate([a.reshape(-1) for a in at_p])
        spread = np.concatenate([(a.max(axis=1) - a.min(axis=1))[~np.isnan(a).any(axis=1)] for a in at_p])
        positions.append({"position": p + 1, "example": example[p] if p < len(example) else "",
                          "mean_nll": float(np.nanmean(flat)) if np.isfinite(flat).any() else None,
                          "tag_spread": float(spread.mean()) if spread.size else None,
                          "margin_nats": float(added[p]),
                          "margin_share": float(added[p] / margins.mean()) if margins.mean() > 0 else None})
    maps = Counter(tuple(sorted(zip(src, d.tags))) for src, d in zip(sources, decisions))
    counts: dict[str, dict[str, int]] = {}
    pairs = Counter((str(tag), name) for names, d in zip(sources, decisions) for name, tag in zip(names, d.tags))
    for (tag, name), n in pairs.items():
        counts.setdefault(tag, {})[name] = n
    return {"questions": len(decisions), "traces_per_question": float(np.mean([len(s) for s in sources])),
            "positions": positions,
            "margin": {"mean": float(margins.mean()), "median": float(np.median(margins)),
                       "undecided": float((margins < UNDECIDED).mean())},
            "tag_strategy": {t: dict(sorted(c.items())) for t, c in sorted(counts.items(), key=lambda kv: int(kv[0]))},
            "agreement": maps.most_common(1)[0][1] / len(decisions)}


def markdown(result: dict) -> str:
    """What a user reads: per split, which positions carry the decision, how firm it is, and whether the tags
    mean the same strategy on every question."""
    lines = [f"Matching cost of {result['model']} ({result['tags']} tags, first {result['tokens']} trace tokens)"]
    for name, r in result["splits"].items():
        m = r["margin"]
        lines += ["", f"{name}: {r['questions']} questions, {r['traces_per_question']:.1f} traces each", "",
                  "| position | e.g. | mean NLL | tag spread | adds to the margin (nats) | share of the margin |",
                  "|---|---|---|---|---|---|"]
        for p in r["positions"]:
            cells = [_num(p["mean_nll"]), _num(p["tag_spread"]), _num(p["margin_nats"]), _num(p["margin_share"])]
            lines.append(f"| {p['position']} | {p['example']!r} | " + " | ".join(cells) + " |")
        maps = "; ".join(f"<think{t}> " + ", ".join(f"{s} {n}" for s, n in c.items())
                         for t, c in r["tag_strategy"].items())
        lines += ["", f"Margin of the best assignment over the runner-up: mean {m['mean']:.3f} nats, median "
                  f"{m['median']:.3f}; {m['undecided']:.0%} of questions below {UNDECIDED} nats (a coin flip each "
                  f"step). Best assignments, tag x strategy: {maps}; {r['agreement']:.0%} of questions follow the "
                  "commonest map."]
    lines += ["", "Tag spread: how far the tag moves a token's NLL for the same trace (max - min over tags). Near 0 "
              "everywhere: the model does not read its tag. Large margins with low agreement: the tags split "
              "something other than the strategies (the 0.45M pathstar model: opening letters, on a different map "
              "per question)."]
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"
