"""Trace selection (traces.select, traces.k): which traces of a question train when a source wrote more than N."""

import random
from collections import Counter
from pathlib import Path

import pytest

from ssft import config as config_mod
from ssft.data import selection, traces
from ssft.data.checkers import get_checker
from ssft.data.sources import synthetic
from ssft.data.tasks import get_task

INT = get_checker("int")


def teacher_rows(n_q: int = 40, copies: int = 3) -> list[dict]:
    """A teacher's samples: each add4 strategy written ``copies`` times (near-copies: a trailing space or not),
    so a question has 4 x copies correct traces, then one wrong answer."""
    task = get_task("add4")
    rows = []
    for r in synthetic.synthetic_rows(task, task.problems(n_q, seed=1)):
        rows += [{**r, "trace": r["trace"].replace("#", " " * c + "#")} for c in range(copies)]
    by_q: dict[str, dict] = {}
    for r in rows:
        by_q.setdefault(r["question_id"], r)
    return rows + [{**r, "trace": r["trace"].replace("#", "#9"), "source": "slip", "mode": None} for r in by_q.values()]


def picked(select: str, k: int, rows: list[dict] | None = None, seed: int = 0, num_tags: int = 4):  # noqa: ANN201
    qs, report = traces.validate(teacher_rows() if rows is None else rows, "t.parquet", num_tags, INT, select, k, seed)
    return qs, report


def test_correct_only_is_todays_behaviour_and_too_many_traces_name_the_fix() -> None:
    with pytest.raises(traces.TraceDataError, match="has 12 traces.*traces.select random_k or diverse"):
        picked("correct_only", 0)
    qs, report = picked("correct_only", 0, num_tags=12)
    assert all(len(q.traces) == 12 and "slip" not in q.sources for q in qs)
    assert report["per_source"]["slip"] == {"kept": 0, "empty": 0, "wrong_answer": 0, "lone": 0} | {
        "wrong_answer": 40}
    assert set(report["per_source"]["l2r"]) == {"kept", "empty", "wrong_answer", "lone"}


def test_all_keeps_wrong_answers_and_counts_them() -> None:
    qs, report = picked("all", 0, num_tags=13)
    assert all(len(q.traces) == 13 and "slip" in q.sources for q in qs)
    assert report["per_source"]["slip"]["wrong_kept"] == 40 and report["dropped_wrong_answer"] == 0


@pytest.mark.parametrize("select", ["random_k", "diverse"])
def test_k_of_the_correct_ones_in_file_order(select: str) -> None:
    qs, report = picked(select, 3)
    assert all(len(q.traces) == 3 for q in qs)
    assert all(INT.correct(t, q.answer) for q in qs for t in q.traces)
    unselected = sum(c["unselected"] for c in report["per_source"].values())
    assert unselected == 40 * (12 - 3) and report["traces"] == 40 * 3
    full = {q.question_id: list(q.traces) for q in picked("correct_only", 0, num_tags=12)[0]}
    for q in qs:  # a subsequence of the question's traces, in their order
        positions = [full[q.question_id].index(t) for t in q.traces]
        assert positions == sorted(positions)


def test_random_k_is_uniform_over_traces_and_independent_per_question() -> None:
    """Every correct trace is picked about k/12 of the time; two questions' draws are not the same draw."""
    qs, _ = picked("random_k", 3)
    counts = Counter((s, t.count(" ")) for q in qs for s, t in zip(q.sources, q.traces))
    share = {key: n / len(qs) for key, n in counts.items()}
    assert len(share) == 12 and all(0.05 < v < 0.5 for v in share.values()), share  # 3/12 = 0.25 each
    draws = {tuple((s, t.count(" ")) for s, t in zip(q.sources, q.traces)) for q in qs}
    assert len(draws) > 20, "questions share one draw (a reused random stream)"


def test_random_k_depends_on_seed_and_question_not_on_file_order() -> None:
    rows = teacher_rows()
    a = {q.question_id: q.traces for q in picked("random_k", 3, rows)[0]}
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    b = {q.question_id: tuple(sorted(q.traces)) for q in picked("random_k", 3, shuffled)[0]}
    assert {k: tuple(sorted(v)) for k, v in a.items()} == b
    other = {q.question_id: q.traces for q in picked("random_k", 3, rows, seed=1)[0]}
    assert other != a


def test_diverse_takes_distinct_strategies_before_near_copies() -> None:
    """4 strategies x 3 near-copies, k = 4: one of each strategy (random_k repeats a strategy on most questions)."""
    qs, _ = picked("diverse", 4)
    assert all(sorted(q.sources) == sorted(["l2r", "r2l", "pair", "sort"]) for q in qs)
    repeats = sum(len(set(q.sources)) < 4 for q in picked("random_k", 4)[0])
    assert repeats > 20


def test_farthest_first_and_distance() -> None:
    grams = [selection.ngrams(t) for t in ("abcdef", "abcdef", "uvwxyz")]
    assert selection.distance(grams[0], grams[1]) == 0 and selection.distance(grams[0], grams[2]) == 1
    assert sorted(selection.farthest_first(["abcdef", "abcdeg", "uvwxyz"], 2, random.Random(0))) in ([0, 2], [1, 2])


@pytest.mark.parametrize("overrides, match", [
    ({"traces.select": "best"}, "traces.select"),
    ({"traces.k": 1}, "traces.k"),
    ({"traces.k": 9, "ssft.num_tags": 4}, "traces.k"),
])
def test_bad_selection_params_name_the_key(overrides: dict, match: str) -> None:
    with pytest.raises(config_mod.ConfigError, match=match):
        config_mod.load(Path(__file__).resolve().parents[1] / "params.yaml", overrides)
