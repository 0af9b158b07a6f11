"""Prefect flow ``ssft``: the DVC pipeline, one Prefect task per DVC stage, independent stages side by side.

The stages, their commands and what each needs come from ``dvc.yaml`` through DVC itself (``foreach``
expanded), so the flow and ``dvc repro`` share one definition of the pipeline. A stage runs when the stages it
needs have finished, up to ``pipeline.parallel`` at once: the three ``train@`` stages overlap, so do the
``evaluate@`` ones. DVC's repo lock lets only one ``dvc repro`` run at a time, so each task does what
``dvc repro --single-item`` does, in DVC's supported pieces: ``dvc status <stage>`` (skip it when up to date),
the stage's command, then ``dvc commit <stage>`` (hashes into dvc.lock, outputs into the cache). The short DVC
calls wait for DVC's lock (``--wait-for-lock``) while the commands run in parallel; ``dvc status`` is clean
after a run.

Flow parameters (``params``, dotted keys such as ``{"train.max_steps": 2000}``) are written into the
workspace's ``params.yaml`` first, as ``dvc exp run -S`` does: dvc.lock, MLflow and this flow's log record
them. ``workspace="scratch"`` runs in a throw-away copy of the project (the ``smoke`` deployment), so quick
checks never touch the real outputs; its MLflow runs still land in the project's store.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    WorkerFilter,
    WorkerFilterStatus,
)
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.futures import PrefectFuture, as_completed
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run
from ruamel.yaml import YAML

from flows import watch
from ssft import atomic, lifeline
from ssft import config as ssft_config
from ssft import env as ssft_env
from ssft import study as ssft_study

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".prefect" / "workspaces"


@dataclass(frozen=True)
class Stage:
    name: str                # DVC's address, e.g. train@ssft
    cmd: str
    needs: tuple[str, ...]   # stages whose outputs it reads


def stages(workspace: Path) -> list[Stage]:
    """The stages of ``dvc.yaml`` in file order, as DVC resolves them (params interpolated, foreach expanded)."""
    from dvc.repo import Repo

    def address(stage: Any) -> str:  # what `dvc status <target>` takes, from the workspace (not this process's cwd)
        rel = os.path.relpath(stage.dvcfile.path, workspace)
        return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"

    with Repo(str(workspace)) as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
        return [Stage(address(s), s.cmd, tuple(address(d) for d in graph.successors(s))) for s in graph.nodes]


def stage_env() -> dict[str, str]:
    """Environment of the stage subprocesses: the venv's tools first, offline, links to this flow run."""
    run_id = str(flow_run.get_id() or "local")
    return {**ssft_env.with_defaults(os.environ),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            ssft_env.PIPELINE_RUN_ID: run_id, ssft_env.PIPELINE_RUN_URL: str(flow_run.ui_url or "")}


def dvc(args: list[str], workspace: str) -> str:
    """A short DVC call that waits for DVC's repo lock (another stage may hold it for its own commit)."""
    proc = subprocess.run(["dvc", "--wait-for-lock", *args], cwd=workspace, env=stage_env(), capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def reason(lines: list[str]) -> str:
    """The line that says why a stage failed: its last error line (the CLI prints one for bad input)."""
    errors = [line for line in lines if " ERROR " in line or line.startswith(("ERROR", "error"))]
    return (errors or lines or ["no output"])[-1]


def run_logged(cmd: str | list[str], what: str, cwd: str, env: dict[str, str]) -> None:
    """Run a stage's command with its output in this task's log (progress lines included); its failure raises
    with its one-line reason."""
    logger = get_run_logger()
    tail: deque[str] = deque(maxlen=40)
    argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else cmd
    # In a process group of its own that dies with this flow process (a cancelled or killed flow run).
    proc = subprocess.Popen(lifeline.kept(argv), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line:
            tail.append(line)
            logger.info(line)
    if proc.wait() != 0:
        logger.error("last lines of %s:\n%s", what, "\n".join(tail))
        raise RuntimeError(f"stage {what} failed (exit {proc.returncode}): {reason(list(tail))}")


class NotRetried(RuntimeError):
    """A stage failure that a retry of the whole stage would only fix by running its command again: a stage sent
    to a work pool, or a push after the command ran. Training is never repeated on a hiccup; the network steps
    (``transfer``) retry on their own."""


@contextmanager
def not_retried() -> Iterator[None]:
    """Whatever fails inside fails ``run_stage`` for good (``NotRetried``), with its message."""
    try:
        yield
    except Exception as e:
        raise NotRetried(str(e)) from e


def retry_unless_ran(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry condition of ``run_stage``: its retry is for failures before or in a local command."""
    try:
        state.result()
    except NotRetried:
        return False
    except Exception:  # noqa: BLE001 - any other failure keeps the task's retry policy
        return True
    return True


@task(retries=1, retry_delay_seconds=2, retry_condition_fn=retry_unless_ran, task_run_name="{stage.name}")
def run_stage(stage: Stage, workspace: str) -> str:
    """``dvc repro --single-item <stage>`` in pieces that can run beside other stages; the command's output goes
    to this task's log (progress lines included), its failure fails the task with its one-line reason. With
    ``pipeline.pool`` set, the pool's stages run on its workers instead (``run_on_pool``)."""
    logger = get_run_logger()
    if not json.loads(dvc(["status", "--json", stage.name], workspace) or "{}"):
        logger.info("%s: up to date", stage.name)
        return "up to date"
    t0 = time.monotonic()
    pipeline = ssft_config.load(Path(workspace) / "params.yaml").pipeline
    pool = pool_of(pipeline, stage.name)
    if pool is not None:
        with not_retried():
            run_on_pool(stage, workspace, pool)
    else:
        run_logged(stage.cmd, stage.name, workspace, stage_env())
        dvc(["commit", "--force", "--quiet", stage.name], workspace)
        if pipeline.pool:  # the remote holds every output: any host, and `dvc status -c`, agree with this one
            with not_retried():
                transfer("push", [stage.name], workspace)
    logger.info("%s: done in %.0f s", stage.name, time.monotonic() - t0)
    return "ran"


# -- stages on a work pool: the orchestrator's half (the worker's half is flows/stage.py) ----------------------
STAGE_FLOW = "ssft-stage"      # flows/stage.py's flow; its deployment on work pool P is ssft-stage/P
LOCK_ARTIFACT = "ssft-stage-lock"  # the artifact a worker's stage run hands its dvc.lock entry back in
SENT_AS_TEXT = ("params.yaml", "dvc.lock")  # the flow writes them; a worker gets their text with the stage


def pool_of(cfg: ssft_config.PipelineConfig, name: str) -> str | None:
    """The work pool that runs stage ``name`` (``pipeline.pool`` when ``pipeline.pool_stages`` matches it),
    None when it runs in this process."""
    if cfg.pool and any(fnmatch.fnmatchcase(name, pattern) for pattern in cfg.pool_stages):
        return cfg.pool
    return None


def tracked_inputs(workspace: Path, name: str) -> list[str]:
    """The DVC-tracked outputs (of other stages or .dvc files) that stage ``name`` reads, in dvc.yaml order:
    what the DVC remote carries to a worker. Whole outputs, so their directory manifests travel too."""
    from dvc.repo import Repo

    target = workspace / (name if ":" in name else f"dvc.yaml:{name}")  # DVC reads a bare name from the cwd
    with Repo(str(workspace)) as repo:
        (stage,) = repo.stage.collect(str(target))
        outs = [o.def_path for s in repo.index.stages if s.addressing != stage.addressing for o in s.outs]
        deps = [d.def_path for d in stage.deps]
    return [o for o in outs if any(d == o or d.startswith(o.rstrip("/") + "/") for d in deps)]


@task(retries=3, retry_delay_seconds=[5, 30, 120], task_run_name="dvc {verb} {targets}")
def transfer(verb: str, targets: list[str], workspace: str) -> None:
    """``dvc push`` / ``dvc pull`` of these targets: the network steps, the only ones that retry."""
    dvc([verb, "--quiet", *targets], workspace)


@contextmanager
def dvc_locked(workspace: Path) -> Iterator[None]:
    """Hold DVC's repository lock (waiting for it, as ``dvc --wait-for-lock`` does) while reading or writing
    dvc.lock beside the stages' own DVC calls."""
    from dvc.repo import Repo

    with Repo(str(workspace), _wait_for_lock=True) as repo, repo.lock:  # the CLI's --wait-for-lock flag
        yield


def committed_code(workspace: Path) -> str:
    """The workspace's git commit, which a worker checks out; refuses code a worker could not check out."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True)
    if head.returncode != 0:
        raise ValueError(f"pipeline.pool: {workspace} has no git commit for a worker to check out; commit the "
                         "project (and push it where the workers clone from, $SSFT_REPO)")
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                              *(f":!{f}" for f in SENT_AS_TEXT)], cwd=workspace, capture_output=True, text=True,
                             check=True).stdout.split("\n")
    changed = [line[3:] for line in changed if line.strip()]
    if changed:
        raise ValueError(f"pipeline.pool: {', '.join(changed)} differ from commit {head.stdout.strip()[:12]}, "
                         "and a worker runs committed code only; commit them and push the commit to $SSFT_REPO")
    return head.stdout.strip()


def lock_markdown(name: str, entry: dict[str, Any]) -> str:
    """The artifact a worker hands back: stage ``name``'s dvc.lock entry, readable in the Prefect UI."""
    buf = StringIO()
    YAML(typ="safe", pure=True).dump(entry, buf)
    return f"dvc.lock entry of `{name}`, as the worker committed it:\n\n```yaml\n{buf.getvalue()}```\n"


def lock_entry(markdown: str) -> dict[str, Any]:
    """The dvc.lock entry inside ``lock_markdown``'s text."""
    return YAML(typ="safe", pure=True).load(markdown.split("```yaml\n", 1)[1].rsplit("```", 1)[0])


async def follow_run(run_id: Any, logger: Any) -> Any:
    """Wait for a flow run to end, its log lines (a worker's training progress) forwarded to ``logger`` so the
    pipeline's own log, and `make run`, show them; its final state."""
    since, seen, quiet = None, set[str](), 0
    async with get_client() as client:
        while True:
            state = (await client.read_flow_run(run_id)).state
            logs = await watch.new_logs(client, run_id, since, seen)
            for log in logs:
                logger.info(log.message)
            since = logs[-1].timestamp - timedelta(seconds=watch.LATE_S) if logs else since
            quiet = 0 if logs else quiet + 1
            if state is not None and state.is_final() and quiet >= watch.FINAL_QUIET_POLLS:
                return state
            await asyncio.sleep(watch.POLL_S)


def launch(name: str, pool: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """Run stage ``name`` as a flow run of ssft-stage/<pool>, followed here; the dvc.lock entry it hands back."""
    logger = get_run_logger()
    deployment = f"{STAGE_FLOW}/{pool}"
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            raise ValueError(f"pipeline.pool={pool!r}: no deployment {deployment}; start a worker of the pool on a "
                             f"GPU host (`make worker POOL={pool}`)") from None
        online = WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"]))
        if not client.read_workers_for_work_pool(pool, worker_filter=online):
            logger.warning("%s waits for a worker: none of pool %s is online (`make worker POOL=%s`)", name, pool, pool)
    # run_deployment is @sync_compatible, typed as "maybe a coroutine"; called synchronously it returns the run
    run = cast(FlowRun, run_deployment(deployment, parameters=parameters, timeout=0))
    logger.info("%s: sent to work pool %s as flow run %s", name, pool, run.name)
    state = asyncio.run(follow_run(run.id, logger))
    if not state.is_completed():
        raise RuntimeError(f"stage {name} failed on work pool {pool} (flow run {run.name}): {state.message}")
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), key=ArtifactFilterKey(any_=[LOCK_ARTIFACT])))
    if not found:
        raise RuntimeError(f"stage {name}: flow run {run.name} on pool {pool} handed back no dvc.lock entry")
    return lock_entry(str(found[0].data))


def run_on_pool(stage: Stage, workspace: str, pool: str) -> None:
    """Send a stage to a worker of ``pool`` and take its outputs in, so that dvc.lock and the workspace end up as
    after a local run: push the outputs it reads, run ssft-stage/<pool> with this commit and this params.yaml
    and dvc.lock, write the dvc.lock entry it hands back, pull the outputs, check ``dvc status``, commit."""
    ws = Path(workspace)
    commit = committed_code(ws)
    inputs = tracked_inputs(ws, stage.name)
    if inputs:
        transfer("push", inputs, workspace)
    with dvc_locked(ws):
        texts = {f: (ws / f).read_text() if (ws / f).exists() else "" for f in SENT_AS_TEXT}
    entry = launch(stage.name, pool, {
        "stage": stage.name, "commit": commit, "params_yaml": texts["params.yaml"], "dvc_lock": texts["dvc.lock"],
        "pipeline_run_id": str(flow_run.get_id() or "local"), "pipeline_run_url": str(flow_run.ui_url or "")})
    with dvc_locked(ws):
        yaml = YAML()
        lock = yaml.load((ws / "dvc.lock").read_text()) if (ws / "dvc.lock").exists() else None
        lock = lock or {"schema": "2.0", "stages": {}}
        lock["stages"][stage.name] = entry
        buf = StringIO()
        yaml.dump(lock, buf)
        atomic.write_text(ws / "dvc.lock", buf.getvalue())
    transfer("pull", [stage.name], workspace)
    drift = json.loads(dvc(["status", "--json", stage.name], workspace) or "{}")
    if drift:  # the worker read other code or data than this workspace holds
        raise RuntimeError(f"stage {stage.name} ran on pool {pool}, but its inputs differ from this workspace's: "
                           f"{drift}; commit and push what changed, then run again")
    dvc(["commit", "--force", "--quiet", stage.name], workspace)  # dvc.lock in DVC's own words, run-cache too


def run_graph(graph: list[Stage], workspace: str, parallel: int) -> dict[str, str]:
    """Every stage once its needs are done, at most ``parallel`` at a time, in dvc.yaml order among the ready
    ones. A failed stage stops the stages that need it (others go on); the first failure is raised at the end."""
    logger = get_run_logger()
    pending = list(graph)
    running: dict[PrefectFuture, Stage] = {}
    outcome: dict[str, str] = {}
    failure: BaseException | None = None
    while pending or running:
        for stage in [s for s in pending if all(outcome.get(n) in ("ran", "up to date") for n in s.needs)]:
            if len(running) >= parallel:
                break
            pending.remove(stage)
            running[run_stage.submit(stage, workspace)] = stage
        blocked = [s for s in pending if any(outcome.get(n, "").startswith(("failed", "skipped")) for n in s.needs)]
        for stage in blocked:
            pending.remove(stage)
            outcome[stage.name] = "skipped"
            logger.warning("%s: skipped, a stage it needs failed", stage.name)
        if not running:
            continue
        future = next(as_completed(list(running)))
        stage = running.pop(future)
        try:
            outcome[stage.name] = future.result()
        except BaseException as e:  # noqa: BLE001 - recorded; the stages that do not need it go on
            outcome[stage.name] = "failed"
            failure = failure or e
    if failure is not None:
        raise failure
    return outcome


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


def mlflow_links(cfg: ssft_config.Config, workspace: Path) -> str:
    """Markdown for the end of a flow run: the comparison (the chart view of this run's methods, opening on the
    headline bars and the loss curves), MLflow's classic Compare page, each method's run, and the comparison
    figures (served by the MLflow UI); '' when tracking is off."""
    if not cfg.tracking.enabled:
        return ""
    from ssft.tracking.runs import (
        Tracker,
        compare_link,
        compare_view,
        comparison_artifact,
        redact,
        run_link,
        runs_view_link,
        tracking_uri,
        ui_url,
    )

    tracker = Tracker(cfg, workspace)
    pipeline = str(flow_run.get_id() or "local")
    found = tracker.pipeline_runs(pipeline)
    runs = {m: found[m] for m in cfg.train.methods if m in found}  # in params order, whichever finished first
    ui, eid = ui_url(cfg), tracker.experiment_id
    if ui is None:
        return (f"MLflow: experiment `{tracker.experiment_id}`, runs {runs}; see them with "
                f"`mlflow ui --backend-store-uri {redact(tracking_uri(cfg, workspace))}`")
    ids = list(runs.values())
    lines = [f"MLflow comparison ({', '.join(runs)}: cons@N, pass@1, coverage, pass@N, train/loss): "
             f"{compare_view(tracker.client, ui, eid, ids, f'ssft-{pipeline[:8]}')}",
             f"MLflow Compare page (params, metrics, common artifacts): {compare_link(ui, eid, ids)}",
             f"MLflow runs view: {runs_view_link(ui, eid)}",
             *(f"MLflow run {m}: {run_link(ui, eid, rid)}" for m, rid in runs.items())]
    first = next(iter(runs.values()), None)  # every method's run holds the same comparison figures
    figures = "".join(f"\n![{p.stem}]({ui}/get-artifact?path={comparison_artifact(p)}&run_uuid={first})"
                      for p in sorted((workspace / "results" / "plots").glob("*.png"))) if first else ""
    return "\n".join(f"- {line}" for line in lines) + "\n" + figures


@task(task_run_name="{cell.label}", cache_policy=NO_CACHE)  # slots: a lock shared by the cells, not data
def study_cell(spec: ssft_study.Study, cell: ssft_study.Cell, env: dict[str, str],
               slots: threading.Semaphore) -> dict[str, dict[str, float]]:
    """One (setting, seed) cell of a study: its stages, or its finished results when nothing changed."""
    return ssft_study.run_cell(spec, cell, ROOT / ".studies", ROOT / "params.yaml", env, slots)


def run_study(name: str) -> dict[str, Any]:
    """``studies/<name>.yaml`` cell by cell (a Prefect task each), then its report as an artifact."""
    known = sorted(p.stem for p in (ROOT / "studies").glob("*.yaml"))
    if name not in known:  # a name, never a path: a request cannot point the flow at an arbitrary file
        raise ValueError(f"study={name!r}: use one of {known}")
    spec = ssft_study.load(ROOT / "studies" / f"{name}.yaml", ROOT / "params.yaml")
    report = ROOT / ssft_study.default_report(name)
    # The cells' progress and failure lines (logger ssft.study) go to this flow run's log, as the pipeline's
    # stage lines do: `make study` follows them.
    study_log, forward = logging.getLogger(ssft_study.__name__), APILogHandler()
    level = study_log.level
    study_log.addHandler(forward)
    study_log.setLevel(logging.INFO)
    try:
        text = ssft_study.run(spec, report, ROOT / ".studies",
                              runner=lambda s, c, e, slots: study_cell(s, c, e, slots))
    finally:
        study_log.removeHandler(forward)
        study_log.setLevel(level)
    create_markdown_artifact(text, key=f"ssft-study-{name}", description=f"study {name}")
    get_run_logger().info("study report: %s\n%s", report, text)
    return {"study": name, "report": str(report)}


@flow(name="ssft")
def ssft(params: dict[str, Any] | None = None, workspace: str = "project",
         study: str | None = None) -> dict[str, Any]:
    """traces -> train each method -> evaluate each -> report -> register, as DVC stages; or, with ``study``,
    the cells of ``studies/<study>.yaml`` and their report.

    params: dotted params.yaml overrides, e.g. {"train.max_steps": 2000, "seed": 1}.
    workspace: "project" (this repository) or "scratch" (a throw-away copy, for smoke runs); never another
    path, so a request to the server cannot point the pipeline at an arbitrary directory.
    study: a study's name (a file of studies/: cpu, ablations, gpu): runs that study instead of the pipeline.
    """
    if study is not None:
        return run_study(study)
    logger = get_run_logger()
    params = dict(params or {})
    if workspace == "scratch":
        ws = copy_project(ROOT, SCRATCH / str(flow_run.get_id() or "local"))
        ssft_env.store_dir(ROOT).mkdir(exist_ok=True)
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # else the stages inherit it: never copy a URI (it may
            params.setdefault("tracking.uri", ssft_env.store_uri(ROOT))  # hold credentials) into params
        params.setdefault("tracking.artifacts", str(ssft_env.artifact_root(ROOT)))
    elif workspace == "project":
        ws = ROOT
    else:
        raise ValueError(f"workspace={workspace!r}: use 'project' or 'scratch'")
    if params:  # without overrides params.yaml is left byte for byte as it is
        logger.info("flow parameters override params.yaml: %s", params)
        apply_params(ws / "params.yaml", params)
    cfg = ssft_config.load(ws / "params.yaml")
    graph, parallel = stages(ws), ssft_env.stage_parallelism(cfg.pipeline.parallel, cfg.train.threads)
    logger.info("stages: %s; up to %d at once", ", ".join(s.name for s in graph), parallel)
    t0 = time.monotonic()
    outcome = run_graph(graph, str(ws), parallel)
    logger.info("pipeline finished in %.0f s (%d stages at once at most)", time.monotonic() - t0, parallel)
    summary = (ws / "results" / "summary.md").read_text()
    links = mlflow_links(cfg, ws)
    # The project's table keeps its key; a scratch (smoke) run has its own, so it never shows as the latest.
    create_markdown_artifact(f"{summary}\n{links}\n\nparams overrides: `{params}`\n",
                             key="ssft-summary" if workspace == "project" else "ssft-smoke-summary",
                             description="SSFT vs baselines, with links to the MLflow runs")
    logger.info("summary:\n%s\n%s", summary, links)
    result = {"workspace": str(ws), "overrides": params, "summary": summary, "links": links, "stages": outcome}
    if workspace == "scratch":
        shutil.rmtree(ws, ignore_errors=True)
    return result
