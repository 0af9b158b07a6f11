"""The traces stage: pick the source, hold out evaluation questions, check every trace, write the dataset.

    ssft traces --out data/traces      # -> train, val, eval .parquet and stats.json (one unit, atomically)

Sources (``data.source``): ``synthetic`` (the task's strategies), ``import`` (a file of traces), ``generate``
(teachers answer the questions of a file). Held-out questions come from ``data.eval_path`` or a seeded hash
of each question id (``data.eval_share``); they never reach training. Validation questions (``val.parquet``,
``traces.val_questions`` / ``data.val_share``) are neither trained nor evaluated: evaluation picks the
single-sample tag on them. Training traces are checked with
``data.checker``; what is dropped is counted per source (teacher) in ``stats.json`` and the log.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from ssft import atomic
from ssft.config import Config
from ssft.data import traces
from ssft.data.checkers import get_checker
from ssft.data.sources import importer, synthetic
from ssft.data.tasks import get_task

log = logging.getLogger(__name__)
STATS_FILE = "stats.json"


def held_out(question_id: str, seed: int, share: float) -> bool:
    """Whether a question is in the evaluation split: a seeded hash of its id, so the split is the same on
    every run and a question keeps its side when the file grows."""
    h = int(hashlib.sha256(f"{seed}:{question_id}".encode()).hexdigest()[:12], 16)
    return h / 16**12 < share


def _question_rows(questions: list[dict]) -> list[dict]:
    """Evaluation rows of questions without traces (evaluation needs the question and answer only)."""
    return [{**q, "trace": "", "source": "", "mode": None} for q in questions]


def _split_questions(cfg: Config, questions: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train, eval) questions: the eval file's, or a seeded share; a training question seen in eval is removed."""
    d = cfg.data
    if d.eval_path:
        evals = importer.read_questions(Path(d.eval_path), d.columns)
    else:
        evals = [q for q in questions if held_out(q["question_id"], cfg.seed, d.eval_share)]
    seen = {q["question_id"] for q in evals} | {q["question"].strip() for q in evals}
    train = [q for q in questions if q["question_id"] not in seen and q["question"].strip() not in seen]
    if d.eval_path and len(train) < len(questions):
        log.warning("%d question(s) of %s are also in data.eval_path=%s: removed from training",
                    len(questions) - len(train), d.path, d.eval_path)
    return train, evals


def splits(cfg: Config) -> dict[str, list[dict]]:
    """Train and eval rows of ``cfg.data.source`` (eval rows of imported/generated data carry no traces)."""
    d = cfg.data
    if d.source == "synthetic":
        task = get_task(cfg.task.name, marked=cfg.task.marked, **cfg.task.options)
        return synthetic.synthetic_splits(task, cfg.traces.train_questions, cfg.traces.eval_questions, cfg.seed,
                                          cfg.traces.strategies or None, cfg.traces.val_questions,
                                          cfg.traces.min_strategies)
    assert d.path is not None, "config validation requires data.path for import and generate"
    if d.source == "import":
        rows = importer.read_traces(Path(d.path), d.columns)
        questions = list({r["question_id"]: {k: r[k] for k in ("question_id", "question", "answer")}
                          for r in rows}.values())
        train, evals = _split_questions(cfg, questions)
        train, val = _split_val(cfg, train)
        keep = {q["question_id"] for q in train}
        return {"train": [r for r in rows if r["question_id"] in keep], "val": _question_rows(val),
                "eval": _question_rows(evals)}
    from ssft.data.sources import teachers

    train, evals = _split_questions(cfg, importer.read_questions(Path(d.path), d.columns))
    train, val = _split_val(cfg, train)
    rows = teachers.generate(train, d.teachers, Path(d.cache), cfg.seed)
    return {"train": rows, "val": _question_rows(val), "eval": _question_rows(evals)}


def _split_val(cfg: Config, questions: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train, validation): a seeded share of the training questions (another hash than the eval split's)."""
    val = [q for q in questions if held_out(q["question_id"], cfg.seed + 7919, cfg.data.val_share)]
    ids = {q["question_id"] for q in val}
    return [q for q in questions if q["question_id"] not in ids], val


def build(cfg: Config, out: Path) -> dict:
    """The traces stage: rows of the source, checked, written to ``out`` as one unit; returns the stats."""
    rows = splits(cfg)
    checker = get_checker(cfg.data.checker)
    kept, report = traces.validate(rows["train"], f"{cfg.dataset_name} training traces", cfg.ssft.num_tags, checker,
                                   cfg.traces.select, cfg.traces.k, cfg.seed)
    if not kept:
        raise traces.TraceDataError(
            f"{cfg.dataset_name}: no training question kept 2 or more traces (per source: {report['per_source']}); "
            f"check data.checker={cfg.data.checker!r} against the answers, or the teachers' output")
    stats: dict[str, Any] = {"source": cfg.data.source, "checker": cfg.data.checker, "train": report,
                             "val": {"questions": len({r["question_id"] for r in rows["val"]})},
                             "eval": {"questions": len({r["question_id"] for r in rows["eval"]})}}
    train_rows = [{"question_id": q.question_id, "question": q.question, "answer": q.answer, "trace": t,
                   "source": s, "mode": m} for q in kept for t, s, m in zip(q.traces, q.sources, q.modes)]
    with atomic.filling(out) as tmp:  # a full disk: one error naming the file, no traces.tmp left
        traces.write(train_rows, tmp / "train.parquet")
        traces.write(rows["eval"], tmp / "eval.parquet")
        traces.write(rows["val"], tmp / "val.parquet")  # empty when validation is off: still a file DVC can track
        atomic.write_text(tmp / STATS_FILE, json.dumps(stats, indent=2))
    counts: dict[str, int] = next(iter(report["per_source"].values()), {})
    log.info("traces (%s, checker %s, select %s): %d training questions, %d traces, %d held-out questions; per "
             "source %s: %s", cfg.data.source, cfg.data.checker, cfg.traces.select, report["questions"],
             report["traces"], stats["eval"]["questions"], "/".join(k.replace("_answer", "") for k in counts),
             {s: "/".join(map(str, c.values())) for s, c in report["per_source"].items()})
    return stats
