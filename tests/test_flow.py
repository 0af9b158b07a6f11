"""The Prefect flow under Prefect's test harness: a whole run leaves DVC clean and MLflow filled; a failing
stage fails the flow with the stage's error."""

import subprocess
from pathlib import Path

import mlflow
import pytest
from conftest import copy_project, tool_env

from flows import pipeline
from flows.pipeline import apply_params, ssft


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project that the flow's workspace "project" points at."""
    repo = copy_project(tmp_path / "repo")
    monkeypatch.setattr(pipeline, "ROOT", repo)
    return repo


def _task_spans(flow_run_id) -> dict[str, tuple]:
    """Each task run of a flow run: name -> (start, end), from the Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: (r.start_time, r.end_time) for r in runs}


@pytest.mark.slow
def test_flow_runs_independent_stages_side_by_side_and_leaves_dvc_clean(repo: Path, prefect_harness: None) -> None:
    overrides = {"seed": 3, "tracking.model_name": "ssft-flowtest", "pipeline.parallel": 2}
    state = ssft(params=overrides, workspace="project", return_state=True)
    result = state.result()
    assert result["overrides"] == overrides
    assert "seed: 3" in (repo / "params.yaml").read_text(), "the override is recorded in params.yaml"
    assert "| metric | ssft | sft | random |" in result["summary"]
    # Every stage of dvc.yaml ran once; the train stages overlapped, and never more than two stages at once.
    spans = _task_spans(state.state_details.flow_run_id)
    expected = {"traces", "report", "register", "register-gfpo",
                *(f"{s}@{m}" for s in ("train", "evaluate") for m in ("ssft", "sft", "random")),
                *(f"{s}@{m}" for s in ("gfpo", "evaluate-gfpo") for m in ("ssft", "sft"))}
    assert set(spans) == expected
    a, b = spans["train@ssft"], spans["train@sft"]
    assert a[0] < b[1] and b[0] < a[1], f"train@ssft {a} and train@sft {b} ran one after the other"
    for t in sorted(s for s, _ in spans.values()):
        assert sum(s <= t < e for s, e in spans.values()) <= 2
    # DVC's lock file and cache agree with the workspace, as after `dvc repro`.
    status = subprocess.run(["dvc", "status"], cwd=repo, env=tool_env(), capture_output=True, text=True).stdout
    assert "up to date" in status, status
    assert (repo / "results" / "plots" / "metrics.png").exists()
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    eid = client.get_experiment_by_name("ssft-add4").experiment_id
    runs = [r for r in client.search_runs([eid]) if "mlflow.parentRunId" not in r.data.tags]
    assert {r.data.tags["method"] for r in runs} == {"ssft", "sft", "random"}
    assert {r.data.tags["pipeline_run_id"] for r in runs} == {str(state.state_details.flow_run_id)}
    for r in runs:  # Compare shows the same comparison figures for every method
        assert {"comparison_metrics.png", "comparison_pass_cons_vs_k.png", "comparison_tag_mode.png"} <= {
            a.path for a in client.list_artifacts(r.info.run_id)}
    # register and register-gfpo: one version each, under their own aliases (champion only beats sft's cons@N)
    assert client.get_model_version_by_alias("ssft-flowtest", "candidate").tags["stage"] == "ssft"
    assert client.get_model_version_by_alias("ssft-flowtest", "candidate-gfpo").tags["stage"] == "gfpo"
    store = f"--backend-store-uri sqlite:///{repo.resolve()}/mlruns/mlflow.db"
    assert "MLflow: experiment" in result["links"] and store in result["links"], "no UI known: how to open the store"
    # A second run finds every stage up to date and runs nothing.
    lock = (repo / "dvc.lock").read_text()
    again = ssft(params=overrides, workspace="project")
    assert set(again["stages"].values()) == {"up to date"} and (repo / "dvc.lock").read_text() == lock


def test_failing_stage_fails_the_flow_with_its_error(repo: Path, prefect_harness: None) -> None:
    state = ssft(params={"traces.strategies": ["l2r", "zigzag"]}, workspace="project", return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=r"stage traces failed \(exit 2\): .*\['zigzag'\] are not strategies"):
        state.result()
    assert not (repo / "models" / "ssft").exists(), "no stage after the failing one ran"


def test_the_workspace_is_the_project_or_a_scratch_copy_never_a_path(tmp_path: Path, prefect_harness: None) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    state = ssft(workspace=str(tmp_path), return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match=r"workspace=.*use 'project' or 'scratch'"):
        state.result()


def test_bad_override_is_refused_before_anything_runs(tmp_path: Path) -> None:
    repo = copy_project(tmp_path / "repo")
    before = (repo / "params.yaml").read_text()
    with pytest.raises(ValueError, match="train.max_steps: -5 is invalid"):
        apply_params(repo / "params.yaml", {"train.max_steps": -5})
    assert (repo / "params.yaml").read_text() == before


def test_a_study_is_named_never_a_path(prefect_harness: None) -> None:
    state = ssft(study="../params", return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match=r"study='../params': use one of \['ablations', 'cpu', 'gpu'\]"):
        state.result()


def test_stage_parallelism_is_the_request_or_what_the_cores_allow(monkeypatch: pytest.MonkeyPatch) -> None:
    from ssft import env

    monkeypatch.setattr(env.os, "cpu_count", lambda: 16)
    assert env.stage_parallelism(3, 1) == 3
    assert env.stage_parallelism(0, 4) == 4 and env.stage_parallelism(0, 32) == 1
    assert env.stage_parallelism(0, 0) == 1, "threads 0 = every core: one stage at a time"


@pytest.mark.slow
def test_the_study_flow_runs_cells_side_by_side_and_logs_their_progress(repo: Path, prefect_harness: None) -> None:
    """`ssft(study=...)`: a task run per cell, linked to the flow run (the cells run in threads), two cells at
    once, their progress lines in the flow run's log (what `make study` follows), the report in results/."""
    import time

    import yaml
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from test_study import MINI

    (repo / "studies" / "mini.yaml").write_text(yaml.safe_dump({**MINI, "base": {**MINI["base"],
                                                                                 "pipeline.parallel": 2}}))
    state = ssft(study="mini", return_state=True)
    assert state.result()["report"] == str(repo / "results" / "study-mini.md")
    assert "## At a glance" in (repo / "results" / "study-mini.md").read_text()
    flow_run_id = state.state_details.flow_run_id
    spans = _task_spans(flow_run_id)
    assert set(spans) == {"a/seed0", "a/seed1", "b/seed0", "b/seed1"}
    (s1, e1), (s2, e2) = spans["a/seed0"], spans["a/seed1"]
    assert s1 < e2 and s2 < e1, "the first two cells ran side by side"
    messages: list[str] = []
    for _ in range(30):  # the log handler ships its batches in the background
        with get_client(sync_client=True) as client:
            messages = [r.message for r in client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
        if sum("done in" in m for m in messages) == 4:
            break
        time.sleep(1)
    assert any(m.startswith("b/seed1 train: ") and " step 8/8" in m for m in messages), "a stage's progress line"
    assert {c for c in ("a/seed0", "a/seed1", "b/seed0", "b/seed1")
            if any(m.startswith(f"{c}: done in") for m in messages)} == {"a/seed0", "a/seed1", "b/seed0", "b/seed1"}
