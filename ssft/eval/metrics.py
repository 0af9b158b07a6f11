"""Evaluation metrics for Set Supervised Fine-Tuning (SSFT).

A model is prompted with N forking tags <think1>..<thinkN>; each tag should produce a different
reasoning strategy ("mode"). Given the scored generations of one evaluation run, this module
computes accuracy (pass@1, pass@k, mean accuracy), set-level consensus (cons@N: majority vote over
one sample per tag) and diversity (mode coverage per round, per-tag purity, NMI between tag and mode,
share of blended generations).

Everything here is a pure function over plain Python data (stdlib + numpy), so it can be tested
exhaustively on tiny hand-built inputs and reused for untagged (plain SFT) baselines.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Generation:
    question_id: str
    tag: int | None  # 1..N; None when the model is untagged (plain SFT)
    sample: int  # index within its (question, tag) bucket; for untagged, within the question
    answer: str | None  # extracted, normalised final answer; None when none could be extracted
    correct: bool
    mode: str | None  # strategy name from the task's classifier; None = no strategy / blended
    length: int  # generated tokens


# -----------------------------------------------------------------------------
# building blocks


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021).

    Uses the product form 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never builds huge binomials.
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def fair_split(k: int, n_tags: int) -> list[int]:
    """Split a budget of k samples over n_tags tags as evenly as possible; earlier tags get the extra.

    This is how a k-sample budget is spent by a tagged model: fair_split(32, 6) == [6, 6, 5, 5, 5, 5].
    """
    if n_tags < 1 or k < 0:
        raise ValueError(f"need n_tags >= 1 and k >= 0, got k={k}, n_tags={n_tags}")
    base, extra = divmod(k, n_tags)
    return [base + 1] * extra + [base] * (n_tags - extra)


def top_answers(answers: Sequence[str | None]) -> list[str]:
    """The answers with the most votes (several on a tie at the top, none without a valid answer); None answers
    do not vote."""
    counts = Counter(a for a in answers if a is not None)
    top = max(counts.values(), default=0)
    return [a for a, n in counts.items() if n == top]


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, bool]:
    """Return (winner, tie).

    A tie at the top gives (None, True): breaking it by position would silently favour tag 1.
    With no valid answer at all there is nothing to vote on: (None, False).
    """
    winners = top_answers(answers)
    return (winners[0], False) if len(winners) == 1 else (None, len(winners) > 1)


def interleave(gens_by_tag: Mapping[int, Sequence[Generation]]) -> list[Generation]:
    """Order generations t1s0, t2s0, ..., tNs0, t1s1, ...

    Consecutive chunks of this list then spend a sample budget fairly across tags (see fair_split).
    """
    tags = sorted(gens_by_tag)
    buckets = [sorted(gens_by_tag[t], key=lambda g: g.sample) for t in tags]
    sizes = {t: len(b) for t, b in zip(tags, buckets)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"tag buckets have unequal sizes: {sizes}")
    return [g for round_ in zip(*buckets) for g in round_]


def best_tag(trajectories: Mapping[int, int]) -> int:
    """The paper's Eq. 4: the tag matched to the most distinct trajectories (question, trace) over training;
    a tie goes to the lower number. At N = M with a locked assignment every tag sees each question once, so
    ties are common there: report the validation-chosen tag beside it."""
    if not trajectories:
        raise ValueError("no tags given")
    return max(sorted(trajectories), key=lambda t: trajectories[t])


def _entropy(counts: Sequence[int]) -> float:
    p = np.asarray(counts, dtype=float)
    p = p[p > 0] / p.sum()
    return float(-(p * np.log(p)).sum())


def nmi(pairs: Sequence[tuple[object, object]]) -> float:
    """Normalised mutual information I(T;S) / ((H(T) + H(S)) / 2) of (tag, mode) pairs, natural log.

    1.0 means each tag maps to exactly one mode and vice versa; 0.0 means tags carry no
    information about the mode (incl. a single tag, a single mode, or no pairs).
    """
    if not pairs:
        return 0.0
    n = len(pairs)
    joint = Counter(pairs)
    p_t = Counter(t for t, _ in pairs)
    p_s = Counter(s for _, s in pairs)
    mi = sum(c / n * np.log(c * n / (p_t[t] * p_s[s])) for (t, s), c in joint.items())
    if mi <= 1e-12:
        return 0.0
    h = (_entropy(list(p_t.values())) + _entropy(list(p_s.values()))) / 2
    return float(min(1.0, mi / h))


# -----------------------------------------------------------------------------
# per-question helpers


def _chunks(gens: Sequence[Generation], size: int) -> list[Sequence[Generation]]:
    """Consecutive chunks of `size`; an incomplete trailing chunk is dropped."""
    return [gens[i : i + size] for i in range(0, len(gens) - size + 1, size)]


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else 0.0


def _ordered(qid: str, gens: Sequence[Generation], n_tags: int, tagged: bool) -> list[Generation]:
    """The question's samples in budget order: interleaved over tags, or by sample index."""
    if len(gens) < n_tags:
        raise ValueError(f"question {qid!r} has {len(gens)} generations, fewer than n_tags={n_tags}")
    if not tagged:
        return sorted(gens, key=lambda g: g.sample)
    by_tag: dict[int, list[Generation]] = defaultdict(list)
    for g in gens:
        if g.tag is None:
            raise ValueError(f"question {qid!r} has an untagged generation, expected tags 1..{n_tags}")
        by_tag[g.tag].append(g)
    if set(by_tag) != set(range(1, n_tags + 1)):
        raise ValueError(f"question {qid!r} has tags {sorted(by_tag)}, expected 1..{n_tags}")
    try:
        return interleave(by_tag)
    except ValueError as e:
        raise ValueError(f"question {qid!r}: {e}") from e


def split_vote(answers: Sequence[str | None], correct_answers: set[str]) -> float:
    """The chance that the majority answer is correct when a tie at the top is broken uniformly at random: the
    share of the top answers that are correct (0 with no valid answer). Counting ties as misses favours a model
    whose samples tie less often; this is the rule without that bias."""
    winners = top_answers(answers)
    return sum(a in correct_answers for a in winners) / len(winners) if winners else 0.0


def _consensus(chunks: Sequence[Sequence[Generation]], correct_answers: set[str]) -> tuple[float, float, float]:
    """(share of chunks whose majority answer is correct, share of chunks that tied, the first with ties broken
    at random, in expectation)."""
    answers = [[g.answer for g in c] for c in chunks]
    votes = [majority_vote(a) for a in answers]
    return (_mean([w is not None and w in correct_answers for w, _ in votes]), _mean([t for _, t in votes]),
            _mean([split_vote(a, correct_answers) for a in answers]))


def _purity(gens: Sequence[Generation]) -> float:
    """Share of a group's generations that follow its most common (non-None) mode."""
    modes = Counter(g.mode for g in gens if g.mode is not None)
    return max(modes.values()) / len(gens) if modes else 0.0


def main_sampled(rows: Sequence[Mapping]) -> list[Mapping]:
    """The details rows of the main sampled set (``eval.temperature``): not greedy, not a temperature sweep."""
    return [r for r in rows if r["set"] == "sampled"]


# -----------------------------------------------------------------------------
# the whole evaluation


def compute_metrics(
    gens: Sequence[Generation],
    n_tags: int,
    ks: Sequence[int] = (),
    best: int | None = None,
    suffix: str = "",
    val_tag: int | None = None,
) -> dict[str, float]:
    """All metrics of one evaluation run as a flat dict; every key gets `suffix` appended.

    A "round" is a consecutive chunk of n_tags generations of a question's ordered samples (one
    per tag for tagged sets), so an untagged baseline is compared at the same sample budget.
    Per-question values are averaged first, then over questions, so every question weighs the same.
    """
    if not gens:
        raise ValueError("no generations")
    if n_tags < 1:
        raise ValueError(f"n_tags must be >= 1, got {n_tags}")
    if any(k < 1 for k in ks):
        raise ValueError(f"every k in ks must be >= 1, got {list(ks)}")
    n_tagged = sum(g.tag is not None for g in gens)
    if 0 < n_tagged < len(gens):
        raise ValueError("generations mix tagged and untagged samples")
    tagged = n_tagged > 0
    if tagged and best is not None and not 1 <= best <= n_tags:
        raise ValueError(f"best tag {best} not in 1..{n_tags}")

    by_q: dict[str, list[Generation]] = defaultdict(list)
    for g in gens:
        by_q[g.question_id].append(g)
    ordered = {q: _ordered(q, qg, n_tags, tagged) for q, qg in by_q.items()}
    min_n = min(len(o) for o in ordered.values())
    extra_ks = sorted({k for k in ks if k != n_tags and k <= min_n})

    def acc(tag: int | None = None) -> float:  # per-question mean correctness, then mean
        return _mean([_mean([g.correct for g in o if tag is None or g.tag == tag]) for o in ordered.values()])

    def consensus(size: int) -> tuple[float, float, float]:
        per_q = []
        for o in ordered.values():
            correct_answers = {g.answer for g in o if g.correct and g.answer is not None}
            per_q.append(_consensus(_chunks(o, size), correct_answers))
        return _mean([c for c, _, _ in per_q]), _mean([t for _, t, _ in per_q]), _mean([s for _, _, s in per_q])

    def pass_k(k: int) -> float:
        return _mean([pass_at_k(len(o), sum(g.correct for g in o), k) for o in ordered.values()])

    m: dict[str, float] = {}
    # pass@1 is the mean accuracy of every sample (all tags): no tag choice behind it. The paper prompts
    # <think1> (pass@1_tag1) or the tag of its Eq. 4 (pass@1_best_tag); a dead tag 1 makes the former ~0.
    m["pass@1"] = acc()
    m["pass@1_tag1"] = acc(1) if tagged else m["pass@1"]
    m["pass@1_best_tag"] = acc(best) if tagged and best is not None else m["pass@1"]
    if val_tag is not None or not tagged:  # the tag with the best accuracy on the validation questions
        m["pass@1_val_tag"] = acc(val_tag) if tagged else m["pass@1"]
    # cons@N counts a tie at the top as a miss (the paper's rule); cons@N_split breaks it at random instead.
    m["cons@N"], m["cons@N_ties"], m["cons@N_split"] = consensus(n_tags)
    for k in extra_ks:
        m[f"cons@{k}"], m[f"cons@{k}_ties"], _ = consensus(k)
    # pass@k: the unbiased estimator over all of a question's samples, pooled over tags, as the paper's
    # protocol computes it (on its first 32 predictions); cons@k is the one split fairly over tags.
    m["pass@N"] = pass_k(n_tags)
    for k in extra_ks:
        if k != 1:  # pass@1 is defined above
            m[f"pass@{k}"] = pass_k(k)

    # Distinct final answers among a round's N samples: how much the tags disagree (1 = all the same).
    m["distinct_answers"] = _mean(
        [_mean([len({g.answer for g in r} - {None}) for r in _chunks(o, n_tags)]) for o in ordered.values()]
    )
    m["coverage"] = _mean(
        [_mean([len({g.mode for g in r} - {None}) for r in _chunks(o, n_tags)]) for o in ordered.values()]
    )
    groups: dict[int | None, list[Generation]] = defaultdict(list)
    for g in gens:
        groups[g.tag].append(g)
    m["purity"] = _mean([_purity(group) for group in groups.values()])
    m["nmi"] = nmi([(g.tag, g.mode) for g in gens if g.mode is not None])
    m["blended"] = sum(g.mode is None for g in gens) / len(gens)

    if tagged:
        for t in range(1, n_tags + 1):
            m[f"acc_tag{t}"] = acc(t)
            m[f"len_tag{t}"] = _mean([_mean([g.length for g in o if g.tag == t]) for o in ordered.values()])
    m["n_questions"] = float(len(ordered))
    m["n_generations"] = float(len(gens))
    return {key + suffix: float(v) for key, v in m.items()}


# -----------------------------------------------------------------------------
# tag-free inference: the model picks its own tag


SELF_SETS = {"greedy_tag": "self_greedy", "sampled_tag": "self_sampled"}  # rollouts mode -> details set


def self_tag_metrics(gens: Sequence[Generation], n_tags: int, ks: Sequence[int] = (), suffix: str = "_self"
                     ) -> dict[str, float]:
    """Accuracy and votes of samples whose tag the model picked itself, one pool per question (as an untagged
    model's): ``pass@1_self``, ``cons@N_self`` (rounds of N samples), ``cons@k_self``, ``pass@k_self``,
    ``coverage_self`` and ``distinct_answers_self``."""
    pooled = compute_metrics([Generation(g.question_id, None, k, g.answer, g.correct, g.mode, g.length)
                              for k, g in enumerate(gens)], n_tags, ks)
    keep = [k for k in pooled if k.startswith(("pass@", "cons@")) and not k.startswith("pass@1_")]
    return {k + suffix: pooled[k] for k in [*keep, "coverage", "distinct_answers"]}


def tag_choice_metrics(probs: Mapping[str, Sequence[float]], picked: Sequence[Generation],
                       tagged: Sequence[Generation]) -> dict[str, float]:
    """How the model chooses its tag. ``probs``: question -> P(tag | question) over the N tags (one forward
    pass); ``picked``: the self-tagged samples (their ``tag`` = the tag drawn); ``tagged``: the tag-prompted
    samples, which say per question which tags answer best.

    tag_entropy_self    mean over questions of the entropy (nats) of P(tag | question)
    argmax_best_tag     share of questions whose most likely tag is among its most accurate tags
    pick_rate_tagI      share of self-tagged samples written under tag I
    """
    acc: dict[str, dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for g in tagged:
        if g.tag is not None:
            acc[g.question_id][g.tag].append(g.correct)
    hits = []
    for q, p in probs.items():
        if q in acc:
            means = {t: _mean(c) for t, c in acc[q].items()}
            hits.append(means.get(int(np.argmax(p)) + 1, -1.0) == max(means.values()))
    n_tags = len(next(iter(probs.values()))) if probs else 0
    picks = Counter(g.tag for g in picked)
    return {"tag_entropy_self": _mean([float(-sum(x * np.log(x) for x in p if x > 0)) for p in probs.values()]),
            "argmax_best_tag": _mean(hits),
            **{f"pick_rate_tag{t}": picks[t] / max(len(picked), 1) for t in range(1, n_tags + 1)}}
