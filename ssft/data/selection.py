"""Which of a question's traces are trained (``traces.select``, ``traces.k``): the choice matters when a source
wrote more than N of them (teachers' samples), and it is not neutral (*Escaping the Mode Lottery*, arXiv
2606.00544: a random K of N is the unbiased default; keeping what a reward or a likelihood prefers can collapse
the modes before training starts).

    correct_only   every trace whose answer passes data.checker (the default; at most N)
    all            every non-empty trace, wrong answers included: the sources' whole distribution
    random_k       k of the correct ones, uniformly at random (seeded per question)
    diverse        k of the correct ones, far apart: a seeded first pick, then each next the trace least like
                   those chosen (character 3-gram Jaccard distance): distinct strategies before near-copies

k = 0 means N (``ssft.num_tags``). A question keeps its draw when the file grows or is reordered: the
random stream is seeded by (seed, question id) and the candidates are taken in a fixed order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

SELECTIONS = ("correct_only", "all", "random_k", "diverse")
SUBSAMPLING = ("random_k", "diverse")  # the ones that use traces.k


def question_rng(seed: int, question_id: str) -> random.Random:
    """A random stream of its own per question: independent of the other questions and of file order."""
    return random.Random(int(hashlib.sha256(f"{seed}:select:{question_id}".encode()).hexdigest()[:16], 16))


def ngrams(text: str, n: int = 3) -> frozenset[str]:
    return frozenset(text[i:i + n] for i in range(max(len(text) - n + 1, 1)))


def distance(a: frozenset[str], b: frozenset[str]) -> float:
    """1 - Jaccard similarity of two n-gram sets (0: the same n-grams, 1: none shared)."""
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


def farthest_first(texts: Sequence[str], k: int, rng: random.Random) -> list[int]:
    """Indices of ``k`` texts chosen greedily far apart: a random first, then the one whose nearest chosen text
    is farthest (ties to the earlier index)."""
    grams = [ngrams(t) for t in texts]
    chosen = [rng.randrange(len(texts))]
    while len(chosen) < min(k, len(texts)):
        rest = [i for i in range(len(texts)) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (min(distance(grams[i], grams[j]) for j in chosen), -i)))
    return chosen


def choose(rows: list[dict], how: str, k: int, rng: random.Random) -> list[dict]:
    """The trained subset of one question's rows (already checked: wrong answers are in ``rows`` only under
    ``all``), in their file order. The candidates are sorted by trace text first, so the draw depends on the
    traces, not on where the file lists them."""
    if how not in SUBSAMPLING or len(rows) <= k:
        return rows
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["trace"], str(rows[i]["source"])))
    if how == "random_k":
        picked = rng.sample(order, k)
    else:
        picked = [order[i] for i in farthest_first([rows[i]["trace"] for i in order], k, rng)]
    return [rows[i] for i in sorted(picked)]
