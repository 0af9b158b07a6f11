"""The traces stage on a user's own file: both shapes and every format, the seeded held-out split, per-teacher
counts of what was dropped, and one clear error per structural problem."""

import json
from pathlib import Path

import pytest
from conftest import TEACHER_STYLES, s1k_rows, tiny_cfg, write_s1k

from ssft.data import dataset, traces
from ssft.data.sources import importer

N_QUESTIONS = 24


def _cfg(path: Path, **over: object):  # noqa: ANN202
    # validation off unless a test asks: the counts below are train + eval
    return tiny_cfg(**{"data.source": "import", "data.path": str(path), "data.checker": "math", "data.val_share": 0,
                       **over})


def _built(tmp_path: Path, path: Path, **over: object) -> tuple[dict, list[dict], list[dict]]:
    stats = dataset.build(_cfg(path, **over), tmp_path / "out")
    out = tmp_path / "out"
    return stats, traces.read_rows(out / "train.parquet"), traces.read_rows(out / "eval.parquet")


def test_s1k_file_is_imported_checked_counted_and_split(tmp_path: Path) -> None:
    stats, train, evals = _built(tmp_path, write_s1k(tmp_path / "raw" / "s1k.jsonl", N_QUESTIONS))
    train_q, eval_q = {r["question_id"] for r in train}, {r["question_id"] for r in evals}
    assert not train_q & eval_q, "a held-out question reached training"
    assert {r["question_id"] for r in evals} == eval_q and all(r["trace"] == "" for r in evals)
    assert 1 <= len(eval_q) <= 8 and len(train_q) + len(eval_q) + stats["train"]["dropped_questions"] == N_QUESTIONS
    per = stats["train"]["per_source"]
    assert set(per) == set(TEACHER_STYLES)
    flawed = {importer.question_id(r["question"]): k for k, r in enumerate(s1k_rows(N_QUESTIONS)) if k < 3}
    assert not set(flawed) & eval_q, "seed 0 keeps the three flawed questions in training (the counts below)"
    assert per["alpha"] == {"kept": N_QUESTIONS - len(eval_q) - 2, "empty": 0, "wrong_answer": 1, "lone": 1}
    assert per["beta"] == {"kept": N_QUESTIONS - len(eval_q) - 2, "empty": 1, "wrong_answer": 0, "lone": 0}
    assert per["gamma"]["kept"] == per["delta"]["kept"] == N_QUESTIONS - len(eval_q) - 1
    assert stats["train"]["dropped_questions"] == 1
    assert sum(c["kept"] for c in per.values()) == len(train) == stats["train"]["traces"]
    assert {r["source"] for r in train} == set(TEACHER_STYLES) and all(r["mode"] is None for r in train)
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats


def test_validation_questions_are_neither_trained_nor_evaluated(tmp_path: Path) -> None:
    stats, train, evals = _built(tmp_path, write_s1k(tmp_path / "raw" / "s1k.jsonl", N_QUESTIONS),
                                 **{"data.val_share": 0.3})
    val = traces.read_rows(tmp_path / "out" / "val.parquet")
    train_q, eval_q, val_q = ({r["question_id"] for r in rows} for rows in (train, evals, val))
    assert val_q and not val_q & train_q and not val_q & eval_q and all(r["trace"] == "" for r in val)
    assert len(train_q | eval_q | val_q) + stats["train"]["dropped_questions"] == N_QUESTIONS
    assert stats["val"]["questions"] == len(val_q)


def test_the_split_is_seeded_and_stable(tmp_path: Path) -> None:
    ids = [f"q{k}" for k in range(2000)]
    held = [q for q in ids if dataset.held_out(q, 0, 0.1)]
    assert 150 <= len(held) <= 250, len(held)
    assert held == [q for q in ids if dataset.held_out(q, 0, 0.1)]
    assert held != [q for q in ids if dataset.held_out(q, 1, 0.1)]
    assert set(held[:10]) <= {q for q in ids + ["new"] if dataset.held_out(q, 0, 0.1)}  # growing keeps sides


@pytest.mark.parametrize("fmt", ["csv", "parquet", "disk"])
def test_one_row_per_trace_in_every_format_with_a_column_mapping(tmp_path: Path, fmt: str) -> None:
    from datasets import Dataset

    flat = [{"id": f"p{k}", "problem": r["question"], "solution": r["answer"], "model": t["teacher"],
             "output": t["text"]} for k, r in enumerate(s1k_rows(N_QUESTIONS)) for t in r["traces"]]
    ds = Dataset.from_list(flat)
    path = tmp_path / {"csv": "t.csv", "parquet": "t.parquet", "disk": "t_dir"}[fmt]
    {"csv": ds.to_csv, "parquet": ds.to_parquet, "disk": ds.save_to_disk}[fmt](str(path))
    columns = {"question_id": "id", "question": "problem", "answer": "solution", "teacher": "model", "text": "output"}
    stats, train, evals = _built(tmp_path, path, **{"data.columns": columns})
    assert {r["question_id"] for r in train} | {r["question_id"] for r in evals} <= {f"p{k}" for k in range(24)}
    assert stats["train"]["traces"] == len(train) > 40


def test_eval_file_holds_its_questions_out_of_training(tmp_path: Path) -> None:
    rows = s1k_rows(N_QUESTIONS)
    write_s1k(tmp_path / "all.jsonl", N_QUESTIONS)
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n"
                                                for r in rows[-5:]))
    stats, train, evals = _built(tmp_path, tmp_path / "all.jsonl", **{"data.eval_path": str(tmp_path / "eval.jsonl")})
    assert {r["question"] for r in evals} == {r["question"] for r in rows[-5:]}
    assert not {r["question"] for r in train} & {r["question"] for r in evals}
    assert len({r["question_id"] for r in train}) == N_QUESTIONS - 5 - stats["train"]["dropped_questions"]


@pytest.mark.parametrize("content, match", [
    ('{"q": "x", "answer": "1", "traces": []}\n', r"raw.jsonl: missing field\(s\) \['question'\].*data.columns"),
    ('{"question": "x", "answer": "1"}\n', r"raw.jsonl: no traces: .*'traces'.*one row per question"),
    ('{"question": "x", "answer": "1", "traces": "abc"}\n', r"raw.jsonl: row 0, field 'traces': str, not a list"),
    ('{"question": "x", "answer": "1", "traces": [{"text": "t"}]}\n', r"row 0, traces\[0\]: no 'teacher'"),
    ('{"question": 3, "answer": "1", "traces": [{"teacher": "a", "text": "t"}]}\n', None),
])
def test_structural_problems_name_file_row_field_and_fix(tmp_path: Path, content: str, match: str | None) -> None:
    path = tmp_path / "raw.jsonl"
    path.write_text(content)
    if match is None:  # a number where text was expected is read as text
        assert importer.read_traces(path, {})[0]["question"] == "3"
        return
    with pytest.raises(traces.TraceDataError, match=match):
        importer.read_traces(path, {})


def test_unknown_file_type_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(traces.TraceDataError, match=r"t.xlsx: unknown file type '.xlsx'; use .jsonl"):
        importer.read_traces(tmp_path / "t.xlsx", {})
    with pytest.raises(traces.TraceDataError, match=r"none.jsonl: not found; set data.path"):
        importer.read_traces(tmp_path / "none.jsonl", {})
    with pytest.raises(ValueError, match=r"data.columns: unknown key\(s\) \['prompt'\]"):
        importer.read_traces(write_s1k(tmp_path / "s.jsonl", 3), {"prompt": "p"})


def test_every_answer_failing_the_checker_is_one_clear_error(tmp_path: Path) -> None:
    path = write_s1k(tmp_path / "s.jsonl", N_QUESTIONS)
    with pytest.raises(traces.TraceDataError, match=r"no training question kept 2 or more traces.*data.checker='int'"):
        dataset.build(_cfg(path, **{"data.checker": "int"}), tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing is written when the stage fails"


def test_generate_source_asks_teachers_for_training_questions_only(tmp_path: Path) -> None:
    """data.source generate: two hf teachers answer the training questions (never the held-out ones); their
    traces are checked and counted per teacher like imported ones."""
    from conftest import chat_checkpoint

    rows = s1k_rows(N_QUESTIONS)
    ckpt = chat_checkpoint(tmp_path / "teacher", [t["text"] for r in rows for t in r["traces"]])
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"question": r["question"], "answer": r["answer"]}) + "\n"
                                              for r in rows))
    teachers = [{"name": name, "backend": "hf", "model": str(ckpt), "max_tokens": 6, "temperature": t}
                for name, t in (("warm", 1.0), ("hot", 1.5))]
    stats, train, evals = _built(tmp_path, tmp_path / "q.jsonl", **{
        "data.source": "generate", "data.checker": "none", "data.teachers": teachers,
        "data.cache": str(tmp_path / "cache")})
    eval_q = {r["question"] for r in evals}
    assert eval_q and not eval_q & {r["question"] for r in train}
    cached = [json.loads(x) for f in (tmp_path / "cache").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert len(cached) == 2 * (N_QUESTIONS - len(eval_q)), "one trace per teacher per training question, no more"
    assert set(stats["train"]["per_source"]) == {"warm", "hot"} and stats["source"] == "generate"
