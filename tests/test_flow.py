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


@pytest.mark.slow
def test_flow_runs_every_stage_through_dvc(repo: Path, prefect_harness: None) -> None:
    result = ssft(params={"seed": 3, "tracking.model_name": "ssft-flowtest"}, workspace="project")
    assert result["overrides"] == {"seed": 3, "tracking.model_name": "ssft-flowtest"}
    assert "seed: 3" in (repo / "params.yaml").read_text(), "the override is recorded in params.yaml"
    assert "| metric | ssft | sft | random |" in result["summary"]
    status = subprocess.run(["dvc", "status"], cwd=repo, env=tool_env(), capture_output=True, text=True).stdout
    assert "up to date" in status, status
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ssft-add4").experiment_id])
    assert {r.data.tags["method"] for r in runs} == {"ssft", "sft", "random"}
    assert len({r.data.tags["pipeline_run_id"] for r in runs}) == 1
    assert client.get_model_version_by_alias("ssft-flowtest", "champion").version == 1


def test_failing_stage_fails_the_flow_with_its_error(repo: Path, prefect_harness: None) -> None:
    state = ssft(params={"traces.strategies": ["l2r", "zigzag"]}, workspace="project", return_state=True)
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=r"(?s)stage traces failed.*\['zigzag'\] are not strategies"):
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
