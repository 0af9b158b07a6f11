"""Matching: the no-grad M x N cost matrix per question, the Hungarian assignment, and its statistics.

Cost (paper Eq. 2): ``C[j, i]`` = mean NLL of the first L tokens of trace j given question + ``<think i>``;
only trace tokens are scored, never the question or the tag. Assignment (Eq. 3): the injective map
traces -> tags of least total cost, ``scipy.optimize.linear_sum_assignment`` on the rectangular (M <= N)
matrix. Scoring runs the shared question prefix once and reuses its KV cache for all M*N rows.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from transformers import PreTrainedModel

TIE_RESOLUTION = 1e-6  # costs closer than this (nats) count as equal


@dataclass(frozen=True)
class ScoreItem:
    """What scoring needs of one question: the N tag prompts and the M trace completions, as token ids."""

    prompts: Sequence[Sequence[int]]      # N, one per tag
    completions: Sequence[Sequence[int]]  # M


def _common_prefix(rows: Sequence[Sequence[int]]) -> int:
    n = min(len(r) for r in rows)
    for k in range(n):
        if any(r[k] != rows[0][k] for r in rows):
            return k
    return n


def _rows(item: ScoreItem, cost_tokens: int, skip: int) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """The M*N scored rows (trace-major), each prompt[skip:] + first L completion tokens, and the
    (start, end) span of the scored completion tokens within each row."""
    rows, spans = [], []
    for comp in item.completions:
        comp = list(comp[:cost_tokens] if cost_tokens > 0 else comp)
        for prompt in item.prompts:
            head = list(prompt[skip:])
            rows.append(head + comp)
            spans.append((len(head), len(head) + len(comp)))
    return rows, spans


def _nll(logits: torch.Tensor, ids: torch.Tensor, spans: list[tuple[int, int]]) -> list[float]:
    """Mean NLL over each row's span ``[a, b)``; token t is predicted by the logits at t-1 (a >= 1 always)."""
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")  # (R, T-1)
    pos = torch.arange(1, ids.shape[1], device=ids.device)[None, :]                              # (1, T-1)
    a, b = (torch.tensor(x, device=ids.device)[:, None] for x in zip(*spans))                    # (R, 1)
    span = ((pos >= a) & (pos < b)).to(nll.dtype)
    return ((nll * span).sum(1) / span.sum(1)).tolist()


@torch.no_grad()
def score_costs(model: PreTrainedModel, items: Sequence[ScoreItem], cost_tokens: int, pad_id: int,
                prefix_cache: bool = True) -> list[np.ndarray]:
    """One (M, N) cost matrix per question; no gradient, model in eval mode for the call."""
    was_training = model.training
    model.eval()
    try:
        if prefix_cache:
            return _score_grouped(model, items, cost_tokens, pad_id)
        return [_score_one(model, it, cost_tokens, pad_id) for it in items]
    finally:
        model.train(was_training)


def _pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, r in enumerate(rows):
        ids[k, : len(r)] = torch.tensor(r)
        mask[k, : len(r)] = 1
    return ids.to(device), mask.to(device)


def _score_one(model: PreTrainedModel, item: ScoreItem, cost_tokens: int, pad_id: int) -> np.ndarray:
    """Reference path: every row scored in full, no cache (right padding keeps positions from 0)."""
    rows, spans = _rows(item, cost_tokens, 0)
    ids, mask = _pad(rows, pad_id, model.device)
    logits = model(input_ids=ids, attention_mask=mask).logits
    m, n = len(item.completions), len(item.prompts)
    return np.array(_nll(logits, ids, spans), dtype=np.float64).reshape(m, n)


def _score_grouped(model: PreTrainedModel, items: Sequence[ScoreItem], cost_tokens: int,
                   pad_id: int) -> list[np.ndarray]:
    """Questions whose shared prefix has the same length run together: one prefix forward for the group,
    its KV cache repeated for each of the question's M*N rows, then one forward over the tails."""
    results: list[np.ndarray | None] = [None] * len(items)
    groups: dict[int, list[int]] = defaultdict(list)
    for q, it in enumerate(items):
        # Keep at least one prompt token out of the prefix so every row's tail starts inside the prompt.
        groups[min(_common_prefix(it.prompts), min(len(p) for p in it.prompts) - 1)].append(q)
    for plen, qs in groups.items():
        if plen == 0:
            for q in qs:
                results[q] = _score_one(model, items[q], cost_tokens, pad_id)
            continue
        prefix = torch.tensor([list(items[q].prompts[0][:plen]) for q in qs], device=model.device)
        cache = model(input_ids=prefix, use_cache=True).cache
        rows, spans, owner = [], [], []
        for g, q in enumerate(qs):
            r, s = _rows(items[q], cost_tokens, plen)
            rows += r
            spans += s
            owner += [g] * len(r)
        cache.reorder_cache(torch.tensor(owner, device=model.device))
        ids, mask = _pad(rows, pad_id, model.device)
        full_mask = torch.cat([torch.ones(len(rows), plen, dtype=mask.dtype, device=mask.device), mask], dim=1)
        logits = model(input_ids=ids, attention_mask=full_mask, cache=cache, use_cache=False).logits
        costs = _nll(logits, ids, spans)
        start = 0
        for q in qs:
            m, n = len(items[q].completions), len(items[q].prompts)
            results[q] = np.array(costs[start: start + m * n], dtype=np.float64).reshape(m, n)
            start += m * n
    return results  # type: ignore[return-value]


def assign(cost: np.ndarray) -> np.ndarray:
    """Trace j -> tag index ``tags[j]`` (0-based) minimising the summed cost; injective, M <= N.

    Ties (costs within TIE_RESOLUTION) break deterministically towards low tags for early traces (all
    costs equal -> trace j gets tag j). The tie-breaker sums to < TIE_RESOLUTION / 2, so it never
    overrules a real difference.
    """
    m, n = cost.shape
    if m > n:
        raise ValueError(f"{m} traces but only {n} tags: ssft.num_tags must be >= traces per question")
    rounded = np.round(cost / TIE_RESOLUTION) * TIE_RESOLUTION
    j, i = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    tiebreak = 0.5 * TIE_RESOLUTION * i * (m - j) / (n * m * m)
    rows, cols = linear_sum_assignment(rounded + tiebreak)
    tags = np.empty(m, dtype=np.int64)
    tags[rows] = cols
    return tags


@dataclass
class MatchStats:
    """Assignment statistics, accumulated over an epoch and closed into ``history`` at its end.

    Per epoch: tag x source counts, per-tag match rate (share of question-steps in which the tag got a
    trace: dead tags show as 0), churn (share of questions whose assignment changed since they were last
    seen), assignment entropy (nats, over source->tag configurations), mean matched cost.
    """

    num_tags: int
    counts: dict[int, Counter] = field(default_factory=lambda: defaultdict(Counter))
    configs: Counter = field(default_factory=Counter)
    cost_sum: float = 0.0
    cost_n: int = 0
    questions: int = 0
    changed: int = 0
    revisited: int = 0
    last: dict[str, tuple] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)

    def record(self, qid: str, sources: Sequence[str], tags: Sequence[int | None], costs: Sequence[float] = ()) -> None:
        """One question-step: trace k of ``sources`` was trained under tag ``tags[k]`` (1-based; None = shared)."""
        config = tuple(sorted(zip(sources, [t or 0 for t in tags])))
        for s, t in zip(sources, tags):
            self.counts[t or 0][s] += 1
        self.configs[config] += 1
        self.questions += 1
        if qid in self.last:
            self.revisited += 1
            self.changed += self.last[qid] != config
        self.last[qid] = config
        for c in costs:
            self.cost_sum += float(c)
            self.cost_n += 1

    def summary(self) -> dict:
        total = sum(self.configs.values())
        probs = [c / total for c in self.configs.values()] if total else []
        matched = {t: sum(c.values()) for t, c in self.counts.items()}
        return {
            "questions": self.questions,
            "churn": self.changed / self.revisited if self.revisited else None,
            "assignment_entropy": max(0.0, -sum(p * math.log(p) for p in probs)),
            "mean_matched_cost": self.cost_sum / self.cost_n if self.cost_n else None,
            "tag_match_rate": {str(t): matched.get(t, 0) / max(self.questions, 1) for t in range(1, self.num_tags + 1)},
            "tag_source_counts": {str(t): dict(sorted(c.items())) for t, c in sorted(self.counts.items())},
        }

    def close_epoch(self, epoch: int, step: int) -> dict:
        """Append this epoch's summary to history and start a new epoch (``last`` carries over for churn)."""
        summary = {"epoch": epoch, "step": step, **self.summary()}
        self.history.append(summary)
        self.counts, self.configs = defaultdict(Counter), Counter()
        self.cost_sum, self.cost_n, self.questions, self.changed, self.revisited = 0.0, 0, 0, 0, 0
        return summary

    def totals(self) -> dict[int, dict[str, int]]:
        """Tag -> source -> matches over all closed epochs and the open one (input of pass@1_best_tag)."""
        out: dict[int, Counter] = defaultdict(Counter)
        for h in self.history:
            for t, c in h["tag_source_counts"].items():
                out[int(t)].update(c)
        for t, c in self.counts.items():
            out[t].update(c)
        return {t: dict(c) for t, c in out.items()}

    def state(self) -> dict:
        """JSON-safe state for checkpoints (int keys become str; :meth:`from_state` turns them back)."""
        return {"num_tags": self.num_tags, "history": self.history,
                "counts": {str(t): dict(c) for t, c in self.counts.items()},
                "configs": [[list(map(list, k)), v] for k, v in self.configs.items()],
                "cost_sum": self.cost_sum, "cost_n": self.cost_n, "questions": self.questions,
                "changed": self.changed, "revisited": self.revisited,
                "last": {q: list(map(list, c)) for q, c in self.last.items()}}

    @classmethod
    def from_state(cls, state: dict) -> MatchStats:
        st = cls(num_tags=state["num_tags"], history=state["history"])
        for t, c in state["counts"].items():
            st.counts[int(t)] = Counter(c)
        st.configs = Counter({tuple(map(tuple, k)): v for k, v in state["configs"]})
        st.cost_sum, st.cost_n, st.questions = state["cost_sum"], state["cost_n"], state["questions"]
        st.changed, st.revisited = state["changed"], state["revisited"]
        st.last = {q: tuple(map(tuple, c)) for q, c in state["last"].items()}
        return st
