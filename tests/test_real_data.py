"""A user's own data end to end, offline: an s1K-style file (4 teachers, \\boxed{} answers, a wrong, an empty
and a lone trace) and a local chat checkpoint, through `dvc add` + `dvc repro`: import -> train -> evaluate ->
register, with names, per-teacher counts and lineage in MLflow."""

import json
from pathlib import Path

import mlflow
import pytest
from conftest import TEACHER_STYLES, chat_checkpoint, copy_project, s1k_rows, write_s1k
from test_pipeline import run

N_QUESTIONS = 40


@pytest.mark.slow
def test_import_train_evaluate_register_through_dvc_repro(tmp_path: Path) -> None:
    ckpt = chat_checkpoint(tmp_path / "chat-model", [t["text"] for r in s1k_rows(N_QUESTIONS) for t in r["traces"]]
                           + [r["question"] for r in s1k_rows(N_QUESTIONS)])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    repo = copy_project(tmp_path / "repo", {
        "data": {"source": "import", "path": "data/raw/s1k.jsonl", "checker": "math"},
        "model": {"checkpoint": str(ckpt), "max_length": 0},
        "tracking": {"uri": uri}})
    write_s1k(repo / "data" / "raw" / "s1k.jsonl", N_QUESTIONS)
    run(["dvc", "add", "data/raw/s1k.jsonl"], repo)
    run(["dvc", "repro"], repo)

    stats = json.loads((repo / "data" / "traces" / "stats.json").read_text())
    per = stats["train"]["per_source"]
    assert set(per) == set(TEACHER_STYLES) and (per["alpha"]["wrong_answer"], per["beta"]["empty"]) == (1, 1)
    assert stats["train"]["dropped_questions"] == 1 and stats["checker"] == "math"
    for method in ("ssft", "sft", "random"):
        m = json.loads((repo / "results" / method / "metrics.json").read_text())
        assert 0 <= m["pass@1"] <= 1 and m["n_questions"] == stats["eval"]["questions"]
        assert m["teachers"] == 4 and 0.9 <= m["teacher_classifier_acc"] <= 1, m["teacher_classifier_acc"]
        assert "distinct_answers" in m and "coverage" in m
    details = [json.loads(x) for x in (repo / "results" / "ssft" / "details.jsonl").read_text().splitlines()]
    assert {d["mode"] for d in details} <= set(TEACHER_STYLES) | {None}

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("ssft-s1k")
    assert exp is not None, [e.name for e in client.search_experiments()]
    runs = {r.data.tags["method"]: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"ssft", "sft", "random"}
    ssft = runs["ssft"]
    assert ssft.data.params["dataset.wrong_answer.alpha"] == "1" and ssft.data.params["dataset.empty.beta"] == "1"
    assert ssft.data.tags["checker"] == "math" and ssft.data.tags["base_model"] == str(ckpt)
    version = client.get_model_version_by_alias("ssft-s1k", "candidate")  # champion: only if it beats sft
    assert version.tags["base_model"] == str(ckpt) and version.tags["checker"] == "math"
    assert version.tags["dvc_data_md5"] not in ("", "none")
    assert "up to date" in run(["dvc", "repro"], repo)
