"""The trace dataset: one row per (question, trace), as parquet written with HF ``datasets``.

Schema: ``question_id, question, answer, trace, source, mode`` (``mode`` = strategy name when known).
``load`` validates a file and groups it per question; structural problems raise TraceDataError naming
the file, row, field and fix; traces whose answer fails the checker are dropped and counted, never
silently.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ssft import atomic
from ssft.data.tasks import Task, extract_answer
from ssft.data.tasks.base import Problem

log = logging.getLogger(__name__)
COLUMNS = ("question_id", "question", "answer", "trace", "source", "mode")
REQUIRED = ("question_id", "question", "answer", "trace", "source")


class TraceDataError(ValueError):
    """A trace file that cannot be used as it is."""


@dataclass(frozen=True)
class QuestionTraces:
    """All valid traces of one question, in file order."""

    question_id: str
    question: str
    answer: str
    traces: tuple[str, ...]
    sources: tuple[str, ...]
    modes: tuple[str | None, ...]


def synthetic_rows(task: Task, problems: list[Problem], strategies: list[str] | None = None) -> list[dict]:
    """One row per (problem, strategy), every trace rendered by the task's program."""
    strategies = strategies or list(task.strategies)
    unknown = [s for s in strategies if s not in task.strategies]
    if unknown:
        raise ValueError(f"traces.strategies: {unknown} are not strategies of task {task.name!r}; "
                         f"choose from {list(task.strategies)}")
    return [{"question_id": p.question_id, "question": p.question, "answer": p.answer,
             "trace": task.render(p, s), "source": s, "mode": s} for p in problems for s in strategies]


def synthetic_splits(task: Task, n_train: int, n_eval: int, seed: int,
                     strategies: list[str] | None = None) -> dict[str, list[dict]]:
    """Train and eval rows; eval questions are drawn first and excluded from training."""
    eval_problems = task.problems(n_eval, seed=seed * 1000 + 1)
    train_problems = task.problems(n_train, seed=seed * 1000 + 2, exclude={p.question_id for p in eval_problems})
    return {"train": synthetic_rows(task, train_problems, strategies),
            "eval": synthetic_rows(task, eval_problems, strategies)}


def write(rows: list[dict], path: Path) -> None:
    """Write rows as parquet atomically (a sibling temp file, then rename)."""
    from datasets import Dataset

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.temp_path(path)
    Dataset.from_list([{c: r.get(c) for c in COLUMNS} for r in rows]).to_parquet(str(tmp))
    os.replace(tmp, path)


def read_rows(path: Path) -> list[dict]:
    """Rows of a trace parquet file. Read with pyarrow (what ``datasets`` stores in) so that training runs
    where ``datasets`` is not installed, e.g. a GPU image."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise TraceDataError(f"{path}: no such trace file; run `ssft traces` (or `dvc repro traces`) first")
    table = pq.read_table(path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise TraceDataError(f"{path}: missing field(s) {missing}; every row needs {list(REQUIRED)} "
                             f"(and optionally 'mode'), found {table.column_names}")
    return table.to_pylist()


def validate(rows: list[dict], path: Path | str, num_tags: int) -> tuple[list[QuestionTraces], dict]:
    """Group rows per question and check them; returns the questions and a report of what was dropped."""
    errors: list[str] = []
    by_q: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for i, r in enumerate(rows):
        for f in REQUIRED:
            if r.get(f) is None or str(r[f]).strip() == "":
                errors.append(f"{path}: row {i}, field '{f}': empty; every trace row needs a non-empty {f}")
        by_q[str(r.get("question_id"))].append((i, r))
    report = {"rows": len(rows), "dropped_wrong_answer": 0, "dropped_questions": 0}
    questions = []
    for qid, items in by_q.items():
        first = items[0][1]
        seen: set[str] = set()
        for i, r in items:
            if (r.get("question"), str(r.get("answer"))) != (first.get("question"), str(first.get("answer"))):
                errors.append(f"{path}: row {i}, question_id {qid!r}: question/answer differ from row {items[0][0]}; "
                              "one id must mean one question (give the other question its own id)")
            if r.get("source") in seen:
                errors.append(f"{path}: row {i}, question_id {qid!r}: duplicate source {r.get('source')!r}; "
                              "each (question_id, source) pair may appear once")
            seen.add(r.get("source"))
        if len(items) < 2 or len(items) > num_tags:
            errors.append(f"{path}: question_id {qid!r} has {len(items)} traces; SSFT needs 2..N with "
                          f"ssft.num_tags N={num_tags} (raise ssft.num_tags or drop traces)")
        if errors:
            continue
        good = [r for _, r in items if extract_answer(str(r["trace"])) == str(r["answer"]).strip()]
        report["dropped_wrong_answer"] += len(items) - len(good)
        if len(good) < 2:
            report["dropped_questions"] += 1
            continue
        questions.append(QuestionTraces(qid, first["question"], str(first["answer"]).strip(),
                                        tuple(r["trace"] for r in good), tuple(r["source"] for r in good),
                                        tuple(r.get("mode") for r in good)))
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise TraceDataError(f"{len(errors)} problem(s) in the trace data:\n  - " + "\n  - ".join(shown))
    if report["dropped_wrong_answer"] or report["dropped_questions"]:
        log.warning("%s: dropped %d trace(s) whose answer fails the checker and %d question(s) left with < 2 "
                    "traces", path, report["dropped_wrong_answer"], report["dropped_questions"])
    report["questions"] = len(questions)
    report["traces"] = sum(len(q.traces) for q in questions)
    return questions, report


def load(path: Path, num_tags: int) -> tuple[list[QuestionTraces], dict]:
    """Read and validate one split."""
    return validate(read_rows(path), path, num_tags)
