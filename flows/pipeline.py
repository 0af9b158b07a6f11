"""Prefect flow ``ssft``: the DVC pipeline, one Prefect task per DVC stage.

Each task runs ``dvc repro --single-item <stage>`` in the workspace, so Prefect and ``dvc repro`` share one
implementation of every stage, DVC versions the outputs and ``dvc status`` is clean after a run. Flow
parameters (``params``, dotted keys such as ``{"train.max_steps": 2000}``) are written into the
workspace's ``params.yaml`` first, as ``dvc exp run -S`` does: dvc.lock, MLflow and this flow's log
record them. ``workspace="scratch"`` runs in a throw-away copy of the project (the ``smoke`` deployment),
so quick checks never touch the real outputs; its MLflow runs still land in the project's store.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import deque
from io import StringIO
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from ruamel.yaml import YAML

from ssft import atomic
from ssft import config as ssft_config

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".prefect" / "workspaces"


def stage_env() -> dict[str, str]:
    """Environment of the stage subprocesses: the venv's tools first, offline, the pipeline run id."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "SSFT_PIPELINE_RUN_ID": str(flow_run.get_id() or "local"), "DVC_NO_ANALYTICS": "1",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@task(retries=1, retry_delay_seconds=2, task_run_name="{stage}")
def run_stage(stage: str, workspace: str) -> None:
    """``dvc repro --single-item <stage>``; its output goes to this task's log, its failure fails the task."""
    logger = get_run_logger()
    tail: deque[str] = deque(maxlen=40)
    proc = subprocess.Popen(["dvc", "repro", "--single-item", stage], cwd=workspace, env=stage_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail.append(line)
            logger.info(line)
    if proc.wait() != 0:
        raise RuntimeError(f"stage {stage} failed (exit {proc.returncode}):\n" + "\n".join(tail))


def copy_project(src: Path, dst: Path) -> Path:
    """The project's files at ``src`` (tracked and untracked, never ignored ones, no results) copied into a
    new git repository at ``dst``: a workspace where the whole pipeline can run without touching ``src``."""
    shutil.rmtree(dst, ignore_errors=True)
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=src, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for f in files:
        if (src / f).is_file() and not f.startswith(("results/", "dvc.lock")):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / f, dst / f)
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    return dst


def apply_params(params_file: Path, overrides: dict[str, Any]) -> None:
    """Write dotted overrides into params.yaml, keeping its comments; validate before writing anything."""
    yaml = YAML()
    doc = yaml.load(params_file.read_text())
    for dotted, value in overrides.items():
        ssft_config.set_dotted(doc, dotted, value)
    plain = YAML(typ="safe")
    buf = StringIO()
    yaml.dump(doc, buf)
    ssft_config.from_dict(plain.load(buf.getvalue()), f"{params_file} with flow parameters {overrides}")
    atomic.write_text(params_file, buf.getvalue())


@flow(name="ssft")
def ssft(params: dict[str, Any] | None = None, workspace: str = "project") -> dict[str, Any]:
    """traces -> train each method -> evaluate each -> report -> register, as DVC stages.

    params: dotted params.yaml overrides, e.g. {"train.max_steps": 2000, "seed": 1}.
    workspace: "project" (this repository) or "scratch" (a throw-away copy, for smoke runs); never another
    path, so a request to the server cannot point the pipeline at an arbitrary directory.
    """
    logger = get_run_logger()
    params = dict(params or {})
    if workspace == "scratch":
        ws = copy_project(ROOT, SCRATCH / str(flow_run.get_id() or "local"))
        store = ROOT / "mlruns"
        store.mkdir(exist_ok=True)
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # else the stages inherit it: never copy a URI (it may
            params.setdefault("tracking.uri", f"sqlite:///{store / 'mlflow.db'}")  # hold credentials) into params
        params.setdefault("tracking.artifacts", str(store / "artifacts"))
    elif workspace == "project":
        ws = ROOT
    else:
        raise ValueError(f"workspace={workspace!r}: use 'project' or 'scratch'")
    if params:  # without overrides params.yaml is left byte for byte as it is
        logger.info("flow parameters override params.yaml: %s", params)
        apply_params(ws / "params.yaml", params)
    cfg = ssft_config.load(ws / "params.yaml")
    stages = ["traces", *(f"train@{m}" for m in cfg.train.methods), *(f"evaluate@{m}" for m in cfg.train.methods),
              "report", "register"]
    for stage in stages:
        run_stage(stage, str(ws))
    summary = (ws / "results" / "summary.md").read_text()
    # The project's table keeps its key; a scratch (smoke) run has its own, so it never shows as the latest.
    create_markdown_artifact(summary + f"\n\nparams overrides: `{params}`\n",
                             key="ssft-summary" if workspace == "project" else "ssft-smoke-summary",
                             description="SSFT vs baselines")
    logger.info("summary:\n%s", summary)
    result = {"workspace": str(ws), "overrides": params, "summary": summary}
    if workspace == "scratch":
        shutil.rmtree(ws, ignore_errors=True)
    return result
