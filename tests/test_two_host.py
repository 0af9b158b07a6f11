"""Stages on a work pool: an orchestrator clone and a "GPU host" clone on one machine, sharing only a Prefect
server, an MLflow server and a DVC remote directory. The pipeline (`pipeline.pool` set) sends its train stages
to a worker of the GPU host's clone, which trains them in its own workspace; the orchestrator ends with the
dvc.lock a one-machine run writes. Plus the pieces: which stages go to the pool, what travels, what is refused."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
from conftest import ROOT, copy_project, tool_env
from test_stack import free_port

from flows import pipeline
from flows.serve import SMOKE
from ssft import config

POOL = "gpu"
TRAIN = ("train@ssft", "train@sft", "train@random")


def git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=tool_env(), capture_output=True, text=True, check=True).stdout


def test_pool_settings_are_validated_with_the_fix() -> None:
    with pytest.raises(config.ConfigError, match=r"pipeline.pool: 'gpu/a' is invalid; use a work pool name"):
        config.from_dict({"pipeline": {"pool": "gpu/a"}})
    with pytest.raises(config.ConfigError, match=r"pipeline.pool_stages: \['report'\] is invalid; list stage names"):
        config.from_dict({"pipeline": {"pool": POOL, "pool_stages": ["report"]}})
    cfg = config.from_dict({"pipeline": {"pool": POOL, "pool_stages": ["train@*", "evaluate@ssft"]}}).pipeline
    assert [pipeline.pool_of(cfg, s) for s in ("train@sft", "evaluate@ssft", "evaluate@sft", "traces")] == [
        POOL, POOL, None, None]
    assert pipeline.pool_of(config.from_dict({}).pipeline, "train@ssft") is None, "no pool: everything local"


def test_what_travels_through_the_remote_is_each_stage_s_tracked_inputs() -> None:
    assert pipeline.tracked_inputs(ROOT, "train@ssft") == ["data/traces"]
    assert pipeline.tracked_inputs(ROOT, "evaluate@sft") == ["data/traces", "models/sft"]
    entry = {"cmd": "ssft train --method ssft", "outs": [{"path": "models/ssft", "md5": "ab.dir", "nfiles": 3}]}
    assert pipeline.lock_entry(pipeline.lock_markdown("train@ssft", entry)) == entry


def test_a_worker_gets_committed_code_only(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "ssft").mkdir(parents=True)
    for name in ("params.yaml", "dvc.lock", "ssft/train.py"):
        (repo / name).write_text("a\n")
    git(["init", "-q"], repo)
    with pytest.raises(ValueError, match="has no git commit for a worker to check out"):
        pipeline.committed_code(repo)
    git(["add", "."], repo)
    git(["commit", "-qm", "x"], repo)
    (repo / "params.yaml").write_text("b\n")  # the flow's overrides and finished stages travel as text
    (repo / "dvc.lock").write_text("b\n")
    assert pipeline.committed_code(repo) == git(["rev-parse", "HEAD"], repo).strip()
    (repo / "ssft/train.py").write_text("b\n")
    with pytest.raises(ValueError, match=r"ssft/train.py differ from commit \w+, and a worker runs committed code"):
        pipeline.committed_code(repo)


# -- the two hosts ---------------------------------------------------------------------------------------------
def trained_files(repo: Path, stages: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Each train stage's output as dvc.lock records it: file -> md5, from the directory's manifest in the cache."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    files = {}
    for stage in stages:
        (out,) = lock[stage]["outs"]
        manifest = repo / ".dvc" / "cache" / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
        files[stage] = {"(the directory)": out["md5"],
                        **{f["relpath"]: f["md5"] for f in json.loads(manifest.read_text())}}
    return files


def start_worker(clone: Path, env: dict[str, str]) -> subprocess.Popen:
    """scripts/worker.sh in the GPU host's clone, as `make worker` runs it, once its deployment is registered."""
    log = open(clone / "worker.log", "w")  # noqa: SIM115 - the worker writes to it until the test stops it
    proc = subprocess.Popen(["scripts/worker.sh"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    for _ in range(240):
        text = (clone / "worker.log").read_text()
        if f"worker: pool {POOL}" in text:
            return proc
        assert proc.poll() is None, text
        time.sleep(0.5)
    raise AssertionError((clone / "worker.log").read_text())


def stop(proc: subprocess.Popen) -> None:
    """TERM to the worker's whole process group, KILL after a grace period (a worker may ignore TERM)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.mark.slow
def test_train_stages_run_on_a_worker_of_another_clone_and_come_back_as_a_local_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The orchestrator's clone: committed, with a DVC remote (a directory standing in for S3).
    orch = copy_project(tmp_path / "orchestrator")
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], orch)
    git(["add", "."], orch)
    git(["commit", "-qm", "project"], orch)
    gpu = tmp_path / "gpu-host"
    git(["clone", "-q", str(orch), str(gpu)], tmp_path)  # its origin is the orchestrator: SSFT_REPO
    ports = {"PREFECT_PORT": str(free_port()), "MLFLOW_PORT": str(free_port())}
    env = tool_env(**ports, PYTHONPATH=str(orch))  # the orchestrator's stages import its own code
    for key in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "PREFECT_API_AUTH_STRING"):
        env.pop(key, None)
    worker = None
    try:
        run(["scripts/up.sh"], orch, env)
        worker_env = tool_env(
            PREFECT_API_URL=f"http://127.0.0.1:{ports['PREFECT_PORT']}/api", POOL=POOL, LIMIT="2",
            PREFECT_API_AUTH_STRING=(orch / ".prefect" / "auth").read_text().strip(),
            MLFLOW_TRACKING_URI=f"http://127.0.0.1:{ports['MLFLOW_PORT']}", PREFECT_WORKER_QUERY_SECONDS="2",
            MLFLOW_TRACKING_USERNAME="ssft",  # the orchestrator's MLflow login
            MLFLOW_TRACKING_PASSWORD=(orch / ".prefect" / "mlflow-auth").read_text().strip())
        for key in ("PREFECT_HOME", "PYTHONPATH"):
            worker_env.pop(key, None)
        worker = start_worker(gpu, worker_env)
        params = {**SMOKE, "pipeline.pool": POOL}
        args = " ".join(f"--param '{k}={json.dumps(v)}'" for k, v in params.items())
        flow = run(["bash", "-c", f". scripts/env.sh && python -m flows.watch ssft/full {args}"], orch, env)
        assert any(line.endswith(": Completed") for line in flow.strip().splitlines()[-5:]), flow[-3000:]
        # The GPU host trained: its workspaces hold the models, and their training lines reached this log.
        for method in ("ssft", "sft", "random"):
            assert (gpu / ".prefect" / "worker" / f"train-{method}" / "models" / method / "tags.json").exists()
        assert re.search(r"train@ssft: sent to work pool gpu as flow run", flow), flow[-3000:]
        assert re.search(r"step 16/16 +loss [\d.]+", flow), "the worker's progress lines, forwarded"
        # The orchestrator holds the models and a clean dvc.lock; the remote holds every output.
        assert "up to date" in run(["dvc", "status"], orch, env)
        assert "Cache and remote 'storage' are in sync" in run(["dvc", "status", "-c"], orch, env)
        # MLflow is shared: the worker's training and the orchestrator's evaluation are the same run.
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ssft")  # the server asks for the orchestrator's login
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", worker_env["MLFLOW_TRACKING_PASSWORD"])
        client = mlflow.MlflowClient(f"http://127.0.0.1:{ports['MLFLOW_PORT']}")
        exp = client.get_experiment_by_name("ssft-smoke")
        runs = [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
        assert {r.data.tags["method"] for r in runs} == {"ssft", "sft", "random"}
        assert all("train/loss" in r.data.metrics and "eval/cons_at_N" in r.data.metrics for r in runs)
        assert len({r.data.tags["pipeline_run_id"] for r in runs}) == 1
        # A one-machine run of the same params trains the very same models (bitwise on one CPU), tokenizer,
        # tags and checkpoints included: every file of dvc.lock's outputs but the timings.
        pooled = trained_files(orch, TRAIN)
        assert all("model.safetensors" in files for files in pooled.values()), pooled
        run(["dvc", "repro", "--force", "--single-item", *TRAIN], orch, env)
        assert trained_files(orch, TRAIN) == pooled
    finally:
        if worker is not None:
            stop(worker)
        subprocess.run(["scripts/down.sh"], cwd=orch, env=env, capture_output=True, timeout=120)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes still running from {tmp_path}: {leftovers}"


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(cmd, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res.stdout

