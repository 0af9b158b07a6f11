"""Prefect flow ``ssft-stage``: one DVC stage on a work-pool worker (a GPU host), for the pipeline flow.

    make worker POOL=gpu     # on the GPU host: the pool, the deployment ssft-stage/gpu, a worker (scripts/worker.sh)

The pipeline flow (``pipeline.pool: gpu``) sends each of ``pipeline.pool_stages`` here with its git commit and
the exact params.yaml and dvc.lock it holds. The run checks that commit out in a workspace of this host (a
clone of ``$SSFT_REPO``), so the worker runs the orchestrator's code and not its own; pulls the stage's inputs
from the DVC remote; runs the stage (``dvc repro --single-item``: its command, then ``dvc commit``); pushes its
outputs; and hands its dvc.lock entry back as an artifact. Data moves only through the DVC remote, and the
stage logs to the MLflow server this host's ``MLFLOW_TRACKING_URI`` names. Only the network steps retry.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from ruamel.yaml import YAML

from flows import pipeline
from ssft import atomic
from ssft import env as ssft_env

ROOT = Path(__file__).resolve().parents[1]  # this host's clone: its venv runs the stages
REPO = "SSFT_REPO"                # the git repository workspaces clone (the orchestrator pushes its commits there)
HOME = "SSFT_WORKER_HOME"         # where workspaces and the shared DVC cache live; default .prefect/worker


def workspace_of(stage: str) -> Path:
    """One workspace per stage on this host, kept between runs: a killed training resumes from its checkpoint
    there, and two stages of a pipeline run side by side without sharing a checkout."""
    home = Path(os.environ.get(HOME) or ROOT / ".prefect" / "worker")
    return home / re.sub(r"[^\w.-]", "-", stage)


def git(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


@task(retries=3, retry_delay_seconds=[5, 30, 120])
def fetch(repo: str, ws: Path) -> None:
    """Clone ``repo`` into the workspace, or fetch what is new: the network step of the checkout."""
    if not (ws / ".git").exists():
        ws.parent.mkdir(parents=True, exist_ok=True)
        git(["clone", "--quiet", "--no-checkout", repo, str(ws)], ws.parent)
    else:
        git(["remote", "set-url", "origin", repo], ws)
        git(["fetch", "--quiet", "--tags", "origin"], ws)


def checkout(ws: Path, commit: str, repo: str, texts: dict[str, str]) -> None:
    """The orchestrator's commit, with its params.yaml and dvc.lock as they are now (its flow may have written
    overrides and finished stages into them); the DVC cache is shared by this host's workspaces."""
    try:
        git(["checkout", "--quiet", "--force", "--detach", commit], ws)
    except RuntimeError:
        raise ValueError(f"commit {commit} is not in {repo}: push it there (the workers clone $SSFT_REPO)") from None
    for name, text in texts.items():
        if text:
            atomic.write_text(ws / name, text)
        else:
            (ws / name).unlink(missing_ok=True)
    pipeline.dvc(["config", "--local", "cache.dir", str(ws.parent / "dvc-cache")], str(ws))


@flow(name=pipeline.STAGE_FLOW, flow_run_name="{stage}")
def ssft_stage(stage: str, commit: str, params_yaml: str, dvc_lock: str, repo: str | None = None,
               pipeline_run_id: str = "", pipeline_run_url: str = "") -> dict:
    """Run DVC stage ``stage`` (e.g. train@ssft) of ``commit`` here; its dvc.lock entry, also as an artifact.

    params_yaml, dvc_lock: the orchestrator's files, as text. repo: the git URL to clone (default $SSFT_REPO).
    pipeline_run_id, pipeline_run_url: the pipeline's flow run, which the stage's MLflow run links to.
    """
    logger = get_run_logger()
    repo = repo or os.environ.get(REPO)
    if not repo:
        raise ValueError(f"no repository to check {commit} out from: set {REPO} where the worker starts "
                         "(`make worker` takes this clone's origin) or pass the flow parameter repo")
    ws = workspace_of(stage)
    logger.info("%s: commit %s of %s in %s", stage, commit[:12], repo, ws)
    fetch(repo, ws)
    checkout(ws, commit, repo, {"params.yaml": params_yaml, "dvc.lock": dvc_lock})
    inputs = pipeline.tracked_inputs(ws, stage)
    if inputs:
        pipeline.transfer("pull", inputs, str(ws))
    # The checkout's own code, not this clone's editable install, is what the stage imports.
    env = {**pipeline.stage_env(), "PYTHONPATH": str(ws), ssft_env.PIPELINE_RUN_ID: pipeline_run_id or "manual",
           ssft_env.PIPELINE_RUN_URL: pipeline_run_url}
    pipeline.run_logged(["dvc", "repro", "--single-item", stage], stage, str(ws), env)
    pipeline.transfer("push", [stage], str(ws))
    entry = YAML(typ="safe", pure=True).load((ws / "dvc.lock").read_text())["stages"][stage]
    create_markdown_artifact(pipeline.lock_markdown(stage, entry), key=pipeline.LOCK_ARTIFACT,
                             description=f"dvc.lock: {stage}")
    return entry


def deploy(pool: str) -> None:
    """(Re)register the deployment ssft-stage/<pool>. Its entrypoint is a module path, so each worker imports
    flows.stage from its own clone (scripts/worker.sh puts it on PYTHONPATH): no code storage to configure."""
    from prefect.types.entrypoint import EntrypointType

    ssft_stage.deploy(name=pool, work_pool_name=pool, entrypoint_type=EntrypointType.MODULE_PATH, build=False,
                      push=False, print_next_steps=False, ignore_warnings=True,
                      description="One DVC stage of the ssft pipeline on this pool's workers (flows/stage.py).")


if __name__ == "__main__":
    from flows import stage  # the deployment must name the module workers import, never __main__

    stage.deploy(sys.argv[1] if len(sys.argv) > 1 else "gpu")
