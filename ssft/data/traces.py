"""The trace dataset: one row per (question, trace), as parquet written with HF ``datasets``.

Schema: ``question_id, question, answer, trace, source, mode``: ``source`` is the strategy or teacher that
wrote the trace, ``mode`` the strategy name when known (synthetic tasks), else empty.
``validate`` groups rows per question. What is structurally wrong (a missing id, question or source, one id
with two questions, more traces than tags) raises TraceDataError naming the file, row, field and fix; empty
traces and traces whose answer fails the checker are dropped and counted per source, and a question left
with fewer than 2 traces is dropped and counted, never silently.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ssft import atomic
from ssft.data import selection
from ssft.errors import UserError

if TYPE_CHECKING:
    from ssft.data.checkers import Checker

log = logging.getLogger(__name__)
COLUMNS = ("question_id", "question", "answer", "trace", "source", "mode")
REQUIRED = ("question_id", "question", "answer", "trace", "source")
NON_EMPTY = ("question_id", "question", "answer", "source")  # an empty trace is dropped and counted instead


class TraceDataError(UserError):
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


def write(rows: list[dict], path: Path) -> None:
    """Write rows as parquet (string columns, what ``datasets`` reads) atomically: a sibling temp file, then
    a rename. pyarrow only, so the synthetic traces stage runs where ``datasets`` is not installed (a GPU
    image); an empty split still has its columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: pa.array([None if r.get(c) is None else str(r[c]) for r in rows], pa.string())
                      for c in COLUMNS})
    with atomic.replacing(Path(path)) as tmp:  # a full disk: the error names the file, no temp is left
        pq.write_table(table, str(tmp))


def num_rows(path: Path) -> int:
    """Rows in a parquet split, from its footer (an empty validation split is legitimate: validation off)."""
    import pyarrow.parquet as pq

    return int(pq.read_metadata(path).num_rows)


def read_rows(path: Path) -> list[dict]:
    """Rows of a trace parquet file. Read with pyarrow (what ``datasets`` stores in) so that training runs
    where ``datasets`` is not installed, e.g. a GPU image."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.exists():
        raise TraceDataError(f"{path}: no such trace file; run `ssft traces` (or `dvc repro traces`) first")
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise TraceDataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e}); rebuild it with "
                             "`ssft traces` (or `dvc repro traces`)") from e
    if table.num_rows == 0:
        raise TraceDataError(f"{path}: no rows; rebuild it with `ssft traces` (or `dvc repro traces`)")
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise TraceDataError(f"{path}: missing field(s) {missing}; every row needs {list(REQUIRED)} "
                             f"(and optionally 'mode'), found {table.column_names}")
    return table.to_pylist()


def validate(rows: list[dict], path: Path | str, num_tags: int, checker: Checker | None = None,
             select: str = "correct_only", k: int = 0, seed: int = 0) -> tuple[list[QuestionTraces], dict]:
    """Group rows per question and check them; returns the questions and what was kept and dropped, per
    source. ``checker`` judges each trace's answer (None or ``none``: answers are not checked); ``select`` and
    ``k`` (0 = N) choose the trained traces among the rest (:mod:`ssft.data.selection`; ``all`` keeps the wrong
    answers too), seeded by ``seed`` and the question id."""
    errors: list[str] = []
    by_q: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for i, r in enumerate(rows):
        for f in NON_EMPTY:
            if r.get(f) is None or str(r[f]).strip() == "":
                errors.append(f"{path}: row {i}, field '{f}': empty; every trace row needs a non-empty {f}")
        if r.get("trace") is not None and not isinstance(r["trace"], str):
            errors.append(f"{path}: row {i}, field 'trace': {type(r['trace']).__name__}, not text")
        by_q[str(r.get("question_id"))].append((i, r))
    counts: dict[str, Counter] = defaultdict(Counter)  # source -> kept / empty / wrong_answer / lone
    questions, dropped = [], 0
    for qid, items in by_q.items():
        first = items[0][1]
        for i, r in items:
            if (r.get("question"), str(r.get("answer"))) != (first.get("question"), str(first.get("answer"))):
                errors.append(f"{path}: row {i}, question_id {qid!r}: question/answer differ from row {items[0][0]}; "
                              "one id must mean one question (give the other question its own id)")
        good = [r for _, r in items if _keep(r, checker, counts, keep_wrong=select == "all")]
        chosen = selection.choose(good, select, k or num_tags, selection.question_rng(seed, qid))
        for r in good:
            if not any(r is c for c in chosen):
                counts[str(r["source"])]["kept"] -= 1
                counts[str(r["source"])]["unselected"] += 1
        good = chosen
        if len(good) > num_tags:
            errors.append(f"{path}: question_id {qid!r} has {len(good)} traces; SSFT needs at most N with "
                          f"ssft.num_tags N={num_tags} (raise ssft.num_tags, or train k of them: "
                          "traces.select random_k or diverse)")
        if errors:
            continue
        if len(good) < 2:
            dropped += 1
            for r in good:
                counts[str(r["source"])]["kept"] -= 1
                counts[str(r["source"])]["lone"] += 1
            continue
        questions.append(QuestionTraces(qid, first["question"], str(first["answer"]).strip(),
                                        tuple(r["trace"] for r in good), tuple(str(r["source"]) for r in good),
                                        tuple(r.get("mode") for r in good)))
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise TraceDataError(f"{len(errors)} problem(s) in the trace data:\n  - " + "\n  - ".join(shown))
    # what the selection adds: traces left out by it, or wrong answers it kept (absent under the default)
    keys = ("kept", "empty", "wrong_answer", "lone") + (
        ("unselected",) if select in selection.SUBSAMPLING else ("wrong_kept",) if select == "all" else ())
    per_source = {s: {key: c[key] for key in keys} for s, c in sorted(counts.items())}
    report = {"rows": len(rows), "questions": len(questions), "traces": sum(len(q.traces) for q in questions),
              "dropped_questions": dropped, "dropped_empty": sum(c["empty"] for c in per_source.values()),
              "dropped_wrong_answer": sum(c["wrong_answer"] for c in per_source.values()), "per_source": per_source}
    if dropped or report["dropped_empty"] or report["dropped_wrong_answer"]:
        log.warning("%s: dropped %d empty trace(s), %d whose answer fails the checker, and %d question(s) left "
                    "with < 2 traces; per source (kept/empty/wrong/lone): %s", path, report["dropped_empty"],
                    report["dropped_wrong_answer"], dropped,
                    {s: "/".join(str(v) for v in c.values()) for s, c in per_source.items()})
    return questions, report


def _keep(row: dict, checker: Checker | None, counts: dict[str, Counter], keep_wrong: bool = False) -> bool:
    """Whether a trace is kept; counts why not, per source (``keep_wrong``: a wrong answer is kept and counted
    as such)."""
    source, text = str(row["source"]), row.get("trace")
    if not isinstance(text, str) or not text.strip():
        counts[source]["empty"] += 1
        return False
    if checker is not None and checker.name != "none" and not checker.correct(text, str(row["answer"])):
        counts[source]["wrong_kept" if keep_wrong else "wrong_answer"] += 1
        if not keep_wrong:
            return False
    counts[source]["kept"] += 1
    return True


def load_questions(path: Path) -> list[QuestionTraces]:
    """The distinct questions of a split, in file order, with whatever traces they have (evaluation needs the
    questions and answers only; generated data has no traces for held-out questions)."""
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in read_rows(path):
        by_q[str(r["question_id"])].append(r)
    return [QuestionTraces(qid, rs[0]["question"], str(rs[0]["answer"]).strip(),
                           tuple(r["trace"] for r in rs if r.get("trace")),
                           tuple(str(r["source"]) for r in rs if r.get("trace")),
                           tuple(r.get("mode") for r in rs if r.get("trace"))) for qid, rs in by_q.items()]


def load(path: Path, num_tags: int) -> tuple[list[QuestionTraces], dict]:
    """Read and validate one split written by the traces stage (its answers were checked there)."""
    return validate(read_rows(path), path, num_tags)
