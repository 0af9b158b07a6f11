"""Trace dataset: parquet round trip and a clear error (file, row, field, fix) for each kind of bad input."""

from pathlib import Path

import pytest

from ssft.data import traces
from ssft.data.tasks import get_task


def rows(n_q: int = 2) -> list[dict]:
    task = get_task("add4")
    return traces.synthetic_rows(task, task.problems(n_q, seed=0))


def test_round_trip(tmp_path: Path) -> None:
    r = rows()
    traces.write(r, tmp_path / "t.parquet")
    qs, report = traces.load(tmp_path / "t.parquet", num_tags=4)
    assert [q.question_id for q in qs] == [r[0]["question_id"], r[4]["question_id"]]
    assert qs[0].sources == ("l2r", "r2l", "pair", "sort") and qs[0].traces[0] == r[0]["trace"]
    assert report == {"rows": 8, "dropped_wrong_answer": 0, "dropped_questions": 0, "questions": 2, "traces": 8}
    assert not list(tmp_path.glob("*.tmp"))


def test_missing_field(tmp_path: Path) -> None:
    from datasets import Dataset

    Dataset.from_list([{k: v for k, v in r.items() if k != "source"} for r in rows()]).to_parquet(
        str(tmp_path / "bad.parquet"))
    with pytest.raises(traces.TraceDataError, match=r"bad.parquet: missing field\(s\) \['source'\]"):
        traces.load(tmp_path / "bad.parquet", 4)


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r[1].update(trace=""), r"row 1, field 'trace': empty"),
    (lambda r: r[1].update(source="l2r"), r"row 1, question_id .*duplicate source 'l2r'"),
    (lambda r: r[1].update(question="1+1+1+1?"), r"row 1, question_id .*question/answer differ"),
    (lambda r: [x.update(question_id="q") for x in r], r"question_id 'q' has 8 traces; SSFT needs 2..N"),
    (lambda r: r[0].update(question_id="solo"), r"question_id 'solo' has 1 traces"),
])
def test_bad_rows_name_file_row_field_and_fix(mutate, match: str) -> None:
    r = rows()
    mutate(r)
    with pytest.raises(traces.TraceDataError, match=match):
        traces.validate(r, "f.parquet", num_tags=4)


def test_wrong_answers_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    r = rows(3)
    r[0]["trace"] = r[0]["trace"].replace("#", "#9")           # one wrong trace in question 0
    for x in r[4:7]:
        x["trace"] = x["trace"] + "0"                          # question 1 keeps only 1 good trace
    qs, report = traces.validate(r, "f.parquet", num_tags=4)
    assert report["dropped_wrong_answer"] == 4 and report["dropped_questions"] == 1
    assert [len(q.traces) for q in qs] == [3, 4]
    assert "dropped 4 trace(s)" in caplog.text


def test_missing_file_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(traces.TraceDataError, match="run `ssft traces`"):
        traces.load(tmp_path / "none.parquet", 4)


def test_eval_split_is_held_out() -> None:
    s = traces.synthetic_splits(get_task("add4"), 100, 50, seed=3)
    assert not {r["question_id"] for r in s["train"]} & {r["question_id"] for r in s["eval"]}
