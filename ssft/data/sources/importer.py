"""The import source: a user's own trace file, read with HF ``datasets``.

Files: ``.jsonl`` / ``.json``, ``.parquet``, ``.csv``, or a directory written by ``datasets.save_to_disk``.
Two shapes, both covered by one column mapping (``data.columns``; defaults below):

    one row per question   {"question": ..., "answer": ..., "traces": [{"teacher": ..., "text": ...}, ...]}
    one row per trace      {"question": ..., "answer": ..., "teacher": ..., "text": ...}

``question_id`` is optional: without it a question's id is a hash of its text, so the same question always
gets the same id (and the same side of the held-out split). What is structurally wrong raises
TraceDataError naming the file, row, field and fix; empty or wrong traces are left for validation to drop
and count per teacher.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ssft.data.traces import TraceDataError
from ssft.errors import UserError

DEFAULT_COLUMNS = {"question": "question", "answer": "answer", "question_id": "question_id", "traces": "traces",
                   "teacher": "teacher", "text": "text"}
READERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def question_id(question: str) -> str:
    """A stable id for a question without one: the hash of its text."""
    return "q-" + hashlib.sha256(question.encode()).hexdigest()[:12]


def columns(mapping: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(mapping) - set(DEFAULT_COLUMNS))
    if unknown:
        raise UserError(f"data.columns: unknown key(s) {unknown}; map any of {sorted(DEFAULT_COLUMNS)} to your "
                         "column names, e.g. {question: problem, answer: solution}")
    return {**DEFAULT_COLUMNS, **mapping}


def read_table(path: Path) -> list[dict[str, Any]]:
    """Every row of a file or ``save_to_disk`` directory, as dicts."""
    import datasets

    path = Path(path)
    if not path.exists():
        raise TraceDataError(f"{path}: not found; set data.path to your file (keep it under data/raw and "
                             "`dvc add` it so the traces it produces are versioned with it)")
    if path.is_file() and path.stat().st_size == 0:
        raise TraceDataError(f"{path}: empty file (0 bytes); write the traces into it (an interrupted copy or "
                             "export?) or point data.path / data.eval_path at the file that has them")
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path), keep_in_memory=True)
            if isinstance(ds, datasets.DatasetDict):
                if len(ds) != 1:
                    raise TraceDataError(f"{path}: a DatasetDict with splits {list(ds)}; save one split "
                                         "(ds['train'].save_to_disk(...)) or point data.eval_path at the other")
                ds = next(iter(ds.values()))
        elif path.suffix in READERS:
            ds = getattr(datasets.Dataset, f"from_{READERS[path.suffix]}")(str(path), keep_in_memory=True)
        else:
            raise TraceDataError(f"{path}: unknown file type {path.suffix!r}; use .jsonl, .json, .parquet, .csv or "
                                 "a save_to_disk directory")
        return ds.to_list()  # decodes the strings: a file that is not UTF-8 fails here
    except TraceDataError:
        raise
    except Exception as e:  # noqa: BLE001 - pyarrow/datasets raise many types; the user needs the file named
        problem = json_problem(path) if path.is_file() and READERS.get(path.suffix) == "json" else None
        cause: BaseException = e
        while cause.__cause__ is not None:  # "An error occurred while generating the dataset" wraps the reason
            cause = cause.__cause__
        raise TraceDataError(f"{path}: " + (problem or f"cannot be read as {READERS.get(path.suffix, 'a dataset')}: "
                                                       f"{type(cause).__name__}: {cause}")) from e


def json_problem(path: Path) -> str | None:
    """Where a .jsonl / .json file stops being JSON, and the fix (``datasets`` says only "An error occurred while
    generating the dataset", pyarrow a byte position): "line 3, column 47: Expecting ',' delimiter; ..."; None
    when it parses."""
    fix = "; fix that line (a .jsonl file has one JSON object per line)"
    data = path.read_bytes()
    lines = path.suffix == ".jsonl"
    if not lines:  # one JSON document, or JSON Lines under a .json name (datasets reads both)
        try:
            json.loads(data)
            return None
        except UnicodeDecodeError:
            lines = True
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":
                return f"line {e.lineno}, column {e.colno}: {e.msg}; fix the JSON there"
            lines = True
    for n, raw in enumerate(data.splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"line {n}: not UTF-8 text (byte {e.start + 1}: {raw[e.start:e.start + 1]!r}); save it as UTF-8"
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as e:
                return f"line {n}, column {e.colno}: {e.msg}{fix}"
    return None


def _text(value: Any, path: Path, where: str, field: str, fix: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TraceDataError(f"{path}: {where}, field {field!r}: {value!r} is not text; {fix}")
    return str(value).strip() if not isinstance(value, str) else value


def read_questions(path: Path, mapping: dict[str, str]) -> list[dict[str, str]]:
    """The distinct questions of a file (question_id, question, answer); trace columns, if any, are ignored."""
    cols = columns(mapping)
    table = read_table(path)
    _require(table, path, [cols["question"], cols["answer"]])
    out: dict[str, dict[str, str]] = {}
    for i, r in enumerate(table):
        q = _text(r.get(cols["question"]), path, f"row {i}", cols["question"], "every row needs the question text")
        a = _text(r.get(cols["answer"]), path, f"row {i}", cols["answer"], "every row needs the reference answer")
        qid = str(r[cols["question_id"]]) if r.get(cols["question_id"]) is not None else question_id(q)
        out.setdefault(qid, {"question_id": qid, "question": q, "answer": a})
    return list(out.values())


def read_traces(path: Path, mapping: dict[str, str]) -> list[dict[str, Any]]:
    """One trace row per (question, trace) of the file, in file order (see the module docstring)."""
    cols = columns(mapping)
    table = read_table(path)
    _require(table, path, [cols["question"], cols["answer"]])
    nested = cols["traces"] in table[0]
    if not nested and not {cols["teacher"], cols["text"]} <= set(table[0]):
        raise TraceDataError(
            f"{path}: no traces: found columns {sorted(table[0])}; give each row a list column "
            f"{cols['traces']!r} of {{{cols['teacher']}, {cols['text']}}} (one row per question) or columns "
            f"{cols['teacher']!r} and {cols['text']!r} (one row per trace); other names: data.columns")
    rows = []
    for i, r in enumerate(table):
        question = _text(r.get(cols["question"]), path, f"row {i}", cols["question"], "every row needs the question")
        answer = _text(r.get(cols["answer"]), path, f"row {i}", cols["answer"], "every row needs the answer")
        qid = str(r[cols["question_id"]]) if r.get(cols["question_id"]) is not None else question_id(question)
        items = r.get(cols["traces"]) if nested else [{cols["teacher"]: r.get(cols["teacher"]),
                                                       cols["text"]: r.get(cols["text"])}]
        if not isinstance(items, list):
            raise TraceDataError(f"{path}: row {i}, field {cols['traces']!r}: {type(items).__name__}, not a list; "
                                 f"give a list of {{{cols['teacher']}: ..., {cols['text']}: ...}}")
        for k, item in enumerate(items):
            where = f"row {i}, {cols['traces']}[{k}]" if nested else f"row {i}"
            if not isinstance(item, dict) or item.get(cols["teacher"]) in (None, ""):
                raise TraceDataError(f"{path}: {where}: no {cols['teacher']!r}; every trace names the teacher (or "
                                     "strategy) that wrote it")
            text = item.get(cols["text"])
            rows.append({"question_id": qid, "question": question, "answer": answer,
                         "trace": "" if text is None else _text(text, path, where, cols["text"], "a trace is text"),
                         "source": str(item[cols["teacher"]]), "mode": None})
    return rows


def _require(table: list[dict], path: Path, fields: list[str]) -> None:
    if not table:
        raise TraceDataError(f"{path}: no rows")
    missing = [f for f in fields if f not in table[0]]
    if missing:
        raise TraceDataError(f"{path}: missing field(s) {missing}, found {sorted(table[0])}; rename them or map "
                             "them with data.columns, e.g. {question: problem, answer: solution}")
