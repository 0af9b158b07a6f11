"""Trace dataset: parquet round trip and a clear error (file, row, field, fix) for each kind of bad input."""

from collections import Counter
from pathlib import Path

import pytest

from ssft.data import traces
from ssft.data.sources import synthetic
from ssft.data.tasks import get_task


def rows(n_q: int = 2) -> list[dict]:
    task = get_task("add4")
    return synthetic.synthetic_rows(task, task.problems(n_q, seed=0))


def test_round_trip(tmp_path: Path) -> None:
    r = rows()
    traces.write(r, tmp_path / "t.parquet")
    qs, report = traces.load(tmp_path / "t.parquet", num_tags=4)
    assert [q.question_id for q in qs] == [r[0]["question_id"], r[4]["question_id"]]
    assert qs[0].sources == ("l2r", "r2l", "pair", "sort") and qs[0].traces[0] == r[0]["trace"]
    assert {k: v for k, v in report.items() if k != "per_source"} == {
        "rows": 8, "questions": 2, "traces": 8, "dropped_questions": 0, "dropped_empty": 0, "dropped_wrong_answer": 0}
    assert report["per_source"]["l2r"] == {"kept": 2, "empty": 0, "wrong_answer": 0, "lone": 0}
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_field(tmp_path: Path) -> None:
    from datasets import Dataset

    Dataset.from_list([{k: v for k, v in r.items() if k != "source"} for r in rows()]).to_parquet(
        str(tmp_path / "bad.parquet"))
    with pytest.raises(traces.TraceDataError, match=r"bad.parquet: missing field\(s\) \['source'\]"):
        traces.load(tmp_path / "bad.parquet", 4)


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r[1].update(question_id=""), r"row 1, field 'question_id': empty"),
    (lambda r: r[2].update(source=None), r"row 2, field 'source': empty"),
    (lambda r: r[1].update(question="1+1+1+1?"), r"row 1, question_id .*question/answer differ"),
    (lambda r: [x.update(question_id="q") for x in r], r"question_id 'q' has 8 traces; SSFT needs at most N"),
    (lambda r: r[3].update(trace=7), r"row 3, field 'trace': int, not text"),
])
def test_bad_rows_name_file_row_field_and_fix(mutate, match: str) -> None:
    r = rows()
    mutate(r)
    with pytest.raises(traces.TraceDataError, match=match):
        traces.validate(r, "f.parquet", num_tags=4)


def test_empty_wrong_and_lone_traces_are_dropped_and_counted_per_source(caplog: pytest.LogCaptureFixture) -> None:
    from ssft.data.checkers import get_checker

    r = rows(3)
    r[0]["trace"] = r[0]["trace"].replace("#", "#9")           # question 0: l2r wrong
    r[1]["trace"] = "  "                                       # question 0: r2l empty
    for x in r[4:7]:
        x["trace"] = x["trace"] + "0"                          # question 1: only sort is right -> dropped
    qs, report = traces.validate(r, "f.parquet", num_tags=4, checker=get_checker("int"))
    assert [len(q.traces) for q in qs] == [2, 4] and qs[0].sources == ("pair", "sort")
    assert (report["dropped_wrong_answer"], report["dropped_empty"], report["dropped_questions"]) == (4, 1, 1)
    assert report["per_source"] == {
        "l2r": {"kept": 1, "empty": 0, "wrong_answer": 2, "lone": 0},
        "r2l": {"kept": 1, "empty": 1, "wrong_answer": 1, "lone": 0},
        "pair": {"kept": 2, "empty": 0, "wrong_answer": 1, "lone": 0},
        "sort": {"kept": 2, "empty": 0, "wrong_answer": 0, "lone": 1}}
    assert "dropped 1 empty trace(s), 4 whose answer fails the checker, and 1 question(s)" in caplog.text
    _, unchecked = traces.validate(r, "f.parquet", num_tags=4)  # no checker: only the empty one goes
    assert unchecked["dropped_wrong_answer"] == 0 and unchecked["dropped_empty"] == 1


def test_corrupt_and_empty_files_name_the_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(traces.TraceDataError, match=r"bad.parquet: not a readable parquet file .*ssft traces"):
        traces.load(tmp_path / "bad.parquet", 4)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({c: pa.array([], pa.string()) for c in traces.COLUMNS}), tmp_path / "empty.parquet")
    with pytest.raises(traces.TraceDataError, match=r"empty.parquet: no rows"):
        traces.load(tmp_path / "empty.parquet", 4)


def test_missing_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(traces.TraceDataError, match="run `ssft traces`"):
        traces.load(tmp_path / "none.parquet", 4)


def test_eval_split_is_held_out() -> None:
    s = synthetic.synthetic_splits(get_task("add4"), 100, 50, seed=3)
    assert not {r["question_id"] for r in s["train"]} & {r["question_id"] for r in s["eval"]}


def test_min_strategies_varies_the_traces_per_training_question_only() -> None:
    task = get_task("add4")
    full = synthetic.synthetic_splits(task, 200, 20, seed=1)
    s = synthetic.synthetic_splits(task, 200, 20, seed=1, min_strategies=2)
    per_q = Counter(r["question_id"] for r in s["train"])
    assert set(per_q.values()) == {2, 3, 4}, per_q                  # every M from 2 to 4 occurs
    assert set(per_q) == {r["question_id"] for r in full["train"]}  # no question is lost
    kept = {(r["question_id"], r["source"]) for r in s["train"]}
    strategies = [tuple(r["source"] for r in s["train"] if r["question_id"] == q) for q in per_q]
    assert len(set(strategies)) > 8, "which strategies are kept is drawn per question"
    assert kept <= {(r["question_id"], r["source"]) for r in full["train"]}
    assert s["eval"] == full["eval"]                                 # held-out questions are untouched
    assert s == synthetic.synthetic_splits(task, 200, 20, seed=1, min_strategies=2)  # seeded
