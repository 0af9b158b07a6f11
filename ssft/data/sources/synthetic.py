"""The synthetic source: a task's questions with one program-rendered trace per strategy (the default demo).

Held-out questions are drawn first; no training question has the canonical form of one (for the arithmetic
tasks: the same operands in any order).
"""

from __future__ import annotations

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


def synthetic_splits(task: Task, n_train: int, n_eval: int, seed: int, strategies: list[str] | None = None,
                     n_val: int = 0) -> dict[str, list[dict]]:
    """Train, validation and eval rows. Eval questions are drawn first, validation questions next; neither
    shares a canonical form with a later split."""
    eval_problems = task.problems(n_eval, seed=seed * 1000 + 1)
    held = {task.canonical(p.operands) for p in eval_problems}
    val_problems = task.problems(n_val, seed=seed * 1000 + 3, exclude=held) if n_val else []
    held |= {task.canonical(p.operands) for p in val_problems}
    train_problems = task.problems(n_train, seed=seed * 1000 + 2, exclude=held)
    return {"train": synthetic_rows(task, train_problems, strategies),
            "val": synthetic_rows(task, val_problems, strategies),
            "eval": synthetic_rows(task, eval_problems, strategies)}
