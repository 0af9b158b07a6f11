"""The synthetic source: a task's questions with one program-rendered trace per strategy (the default demo).

Held-out questions are drawn first; no training question has the canonical form of one (for the arithmetic
tasks: the same operands in any order).
"""

from __future__ import annotations

import random

from ssft.data.tasks import Task
from ssft.data.tasks.base import Problem
from ssft.errors import UserError


def synthetic_rows(task: Task, problems: list[Problem], strategies: list[str] | None = None) -> list[dict]:
    """One row per (problem, strategy), every trace rendered by the task's program."""
    strategies = strategies or list(task.strategies)
    unknown = [s for s in strategies if s not in task.strategies]
    if unknown:
        raise UserError(f"traces.strategies: {unknown} are not strategies of task {task.name!r}; "
                         f"choose from {list(task.strategies)}")
    return [{"question_id": p.question_id, "question": p.question, "answer": p.answer,
             "trace": task.render(p, s), "source": s, "mode": s} for p in problems for s in strategies]


def vary_strategies(rows: list[dict], low: int, seed: int) -> list[dict]:
    """Each question keeps a seeded random subset of ``low``..M of its M traces (in their order): M varies
    per question, as with teachers that fail on some questions."""
    by_q: dict[str, list[dict]] = {}
    for r in rows:
        by_q.setdefault(r["question_id"], []).append(r)
    rng = random.Random(seed)
    kept = []
    for rs in by_q.values():
        keep = set(rng.sample(range(len(rs)), rng.randint(min(low, len(rs)), len(rs))))
        kept += [r for k, r in enumerate(rs) if k in keep]
    return kept


def synthetic_splits(task: Task, n_train: int, n_eval: int, seed: int, strategies: list[str] | None = None,
                     n_val: int = 0, min_strategies: int = 0) -> dict[str, list[dict]]:
    """Train, validation and eval rows. Eval questions are drawn first, validation questions next; neither
    shares a canonical form with a later split. ``min_strategies`` > 0: training questions keep between that
    many and all of the strategies (:func:`vary_strategies`)."""
    eval_problems = task.problems(n_eval, seed=seed * 1000 + 1)
    held = {task.canonical(p.operands) for p in eval_problems}
    val_problems = task.problems(n_val, seed=seed * 1000 + 3, exclude=held) if n_val else []
    held |= {task.canonical(p.operands) for p in val_problems}
    train_problems = task.problems(n_train, seed=seed * 1000 + 2, exclude=held)
    train = synthetic_rows(task, train_problems, strategies)
    if min_strategies:
        train = vary_strategies(train, min_strategies, seed * 1000 + 4)
    return {"train": train,
            "val": synthetic_rows(task, val_problems, strategies),
            "eval": synthetic_rows(task, eval_problems, strategies)}
