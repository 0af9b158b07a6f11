"""MLflow: one run per (pipeline run, method) whose duration is its training: params, curves, system metrics,
assignment statistics; evaluate and register add child runs of their own. With ``ssft.tracking.registry``
the only modules of ``ssft`` that import mlflow.

Where things go: tracking URI from ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the project's
local store (``ssft.env.store_uri``: absolute paths, as Prefect runs, DVC temp experiments and tests each
have another working directory).

A run is found again by its tags: the train stage opens it (tag ``model_sha`` = hash of the weights it
wrote); evaluate and register attach to the run whose ``model_sha`` matches the model they read. They write
to it only through the client (metrics, figures), never by reopening it, so its end time stays the end of
training. MLflow metric names may not contain ``@``, so ``pass@1`` is logged as ``eval/pass_at_1``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from ssft import env
from ssft.config import Config, ConfigError
from ssft.data.dataset import STATS_FILE as TRACE_STATS_FILE
from ssft.env import git_commit
from ssft.eval.evaluate import DETAILS_FILE, METRICS_FILE
from ssft.eval.report import COMPARED
from ssft.generation.openai import redact  # the one redaction (credentials and query) of every URL shown
from ssft.tracking import registry
from ssft.tracking.figures import eval_figures, tag_distribution_figure, tag_mode_table
from ssft.tracking.names import dvc_data_hash, experiment_name, metric_name, mlflow_safe

log = logging.getLogger(__name__)
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>,]+")
SYSTEM_METRICS_INTERVAL_S = 5.0
DATASET_PARAM = "dataset"  # params dataset.<count>.<source>: the traces stage's counts, and traces over the context


def now_ms() -> int:
    """A metric's timestamp: when it was logged (0 would show every point at 1970 in the UI)."""
    return int(time.time() * 1000)


def tracking_uri(cfg: Config, root: Path) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    env.store_dir(root).mkdir(parents=True, exist_ok=True)
    return env.store_uri(root)


def ui_url(cfg: Config) -> str | None:
    """Where a browser finds the runs: the tracking server itself, else the UI ``make up`` serves (``None``
    for a local store with no UI known)."""
    uri = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri.startswith(("http://", "https://")) and "@" not in uri:
        return uri.rstrip("/")
    return os.environ.get(env.MLFLOW_UI) or None


def runs_view_link(ui: str, experiment_id: str) -> str:
    return f"{ui}/#/experiments/{experiment_id}/runs"


def run_link(ui: str, experiment_id: str, run_id: str) -> str:
    return f"{runs_view_link(ui, experiment_id)}/{run_id}"


def compare_link(ui: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's classic Compare page of these runs (tables of params and metrics, the common artifacts)."""
    from urllib.parse import quote

    return f"{ui}/#/compare-runs?runs={quote(json.dumps(run_ids))}&experiments={quote(json.dumps([experiment_id]))}"


# The charts a comparison opens on, first: the headline metrics as bars, the training loss as lines; every other
# metric keeps its generated chart in a section of its prefix, collapsed.
COMPARE_CHARTS = (("BAR", "eval/cons_at_N"), ("BAR", "eval/pass_at_1_val_tag"), ("BAR", "eval/coverage"),
                  ("BAR", "eval/pass_at_N"), ("LINE", "train/loss"), ("BAR", "eval/pass_at_1_tag1"))
COLLAPSED_SECTIONS = ("eval", "match", "train", "Model metrics", "System metrics")  # MLflow's two own sections


def compare_view(client: MlflowClient, ui: str, experiment_id: str, run_ids: list[str], key: str) -> str:
    """A link to the experiment's chart view of just these runs, opening on :data:`COMPARE_CHARTS`: an MLflow
    shared view (what its "Share" button saves: the view's state in the experiment tag
    ``mlflow.sharedViewState.<key>``, the link naming ``key``)."""
    first = {"uuid": "ssft-compare", "name": "SSFT vs baselines", "display": True, "isReordered": True,
             "deleted": False, "isGenerated": False}
    sections = [first, *({"uuid": f"ssft-{name}", "name": name, "display": False, "isReordered": False,
                          "deleted": False, "isGenerated": True} for name in COLLAPSED_SECTIONS)]
    charts = []
    for kind, metric in COMPARE_CHARTS:
        chart = {"uuid": f"ssft-{metric}", "type": kind, "metricKey": metric, "metricSectionId": first["uuid"],
                 "isGenerated": False, "deleted": False, "runsCountToCompare": 10}
        if kind == "LINE":
            chart |= {"selectedMetricKeys": [metric], "lineSmoothness": 0, "scaleType": "linear",
                      "xAxisScaleType": "linear", "xAxisKey": "step", "selectedXAxisMetricKey": ""}
        charts.append(chart)
    ids = ", ".join(f"'{r}'" for r in run_ids)
    state = {"searchFilter": f"attributes.run_id IN ({ids})", "orderByKey": "attributes.start_time",
             "orderByAsc": True, "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
             "modelVersionFilter": "All Runs", "compareRunCharts": charts, "compareRunSections": sections,
             "isAccordionReordered": True, "hideEmptyCharts": True, "useGroupedValuesInCharts": True,
             "runsHiddenMode": "SHOW_ALL", "runListHidden": False, "viewMaximized": False, "groupBy": None,
             "groupsExpanded": {}, "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0,
                                                             "selectedXAxisMetricKey": ""}}
    client.set_experiment_tag(experiment_id, f"{SHARED_VIEW_TAG}{key}", json.dumps(state))
    return f"{ui}/#/experiments/{experiment_id}/runs?viewStateShareKey={key}&compareRunsMode=CHART"


SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow UI's prefix for a shared view's experiment tag


def comparison_artifact(plot: Path) -> str:
    """Where a report figure lies in every method's run: top level, the same name in each."""
    return f"comparison_{Path(plot).name}"


def pipeline_run() -> str:
    """What ran this stage: a Prefect flow run (its id), a DVC experiment (``dvc-exp:<name>``), else ``manual``."""
    if os.environ.get(env.PIPELINE_RUN_ID):
        return os.environ[env.PIPELINE_RUN_ID]
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run` for the stages it runs
        return f"dvc-exp:{os.environ['DVC_EXP_NAME']}"
    return "manual"


def run_label(pipeline: str) -> str:
    """The run name's suffix: the DVC experiment's name, a flow run's short id, or when a manual run started."""
    if pipeline.startswith(("dvc-exp:", "study:")):
        return pipeline.split(":", 1)[1]
    return pipeline[:8] if pipeline != "manual" else time.strftime("%m%d-%H%M%S")


def model_sha(model_dir: Path) -> str:
    """Identity of a trained model: hash of its weight files."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def flat_params(cfg: Config) -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = redact_urls(json.dumps(node) if isinstance(node, (list, dict)) else str(node))

    walk("", cfg.to_dict())
    return out


def redact_urls(text: str) -> str:
    """``text`` with every URL in it redacted (a teacher's base_url inside the ``data.teachers`` list)."""
    return URL.sub(lambda m: redact(m.group()), text)


@contextmanager
def first_use(uri: str) -> Iterator[None]:
    """One process at a time through a local SQLite store's first use: two stages that open a new store at once
    (the flow's train stages side by side) both ran MLflow's schema migrations, and one died with alembic's
    "table _alembic_tmp_... already exists". A server-backed store migrates once, on the server."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f".{db.name}.init.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def use_store(uri: str) -> None:
    """This process logs to ``uri``; its child processes are not told. ``mlflow.set_tracking_uri`` also exports
    MLFLOW_TRACKING_URI, which ``tracking_uri`` obeys: every stage a process started afterwards (the flow's next
    run on another workspace, a test after a test) logged to the first store it had opened."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def probe(uri: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, with one line, when an MLflow server is not answering: its client would otherwise
    retry for minutes before the stage does any work."""
    if not uri.startswith(("http://", "https://")):
        return
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    # Credentials in the URI go in a header: in the URL, urllib would take "user:pw@host" for the host.
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else parts.netloc
    base = urllib.parse.urlunsplit(parts._replace(netloc=host)).rstrip("/")
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
    else:  # what MLflow's client sends (a server with a login: `make up`'s, or a team's)
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "") + ":" + os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    login = {"Authorization": "Basic " + base64.b64encode(user.encode()).decode()} if user != ":" else {}

    def status(path: str) -> int | str:
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, headers=login), timeout=timeout_s) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, OSError, ValueError) as e:
            return str(getattr(e, "reason", e))

    health = status("/health")
    if health != 200:
        reason = f"HTTP {health}" if isinstance(health, int) else health
        raise ConfigError(f"MLflow at {redact(uri)} is not answering ({reason}); start it (`make up`), point "
                          "tracking.uri / MLFLOW_TRACKING_URI at a running server, or set tracking.enabled: false")
    answer = status("/api/2.0/mlflow/experiments/search?max_results=1")
    if answer in (401, 403):
        who = f"user {user.split(':')[0]!r}" if user != ":" else "no login"
        raise ConfigError(f"MLflow at {redact(uri)} refused {who} (HTTP {answer}); set MLFLOW_TRACKING_USERNAME "
                          "and MLFLOW_TRACKING_PASSWORD to its login (`make up`'s server: user ssft, the password "
                          "in .prefect/mlflow-auth of the machine that runs it)")


class Tracker:
    """MLflow for one pipeline stage (``ssft.tracking.null.NullTracker`` when ``tracking.enabled: false``)."""

    def __init__(self, cfg: Config, root: Path) -> None:
        self.cfg, self.root = cfg, Path(root).resolve()
        uri = tracking_uri(cfg, self.root)
        probe(uri)
        use_store(uri)
        with first_use(uri):
            self.client = MlflowClient()
            self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        eid = self._experiment_id()
        # Open in MLflow's model-training view (runs, metrics, Compare), not the GenAI traces dashboard.
        self.client.set_experiment_tag(eid, "mlflow.experimentKind", "custom_model_development")
        return eid

    def _experiment_id(self) -> str:
        name = experiment_name(self.cfg)
        exp = self.client.get_experiment_by_name(name)
        if exp:
            return exp.experiment_id
        uri = mlflow.get_tracking_uri()
        # Local stores get an absolute artifact root under mlruns/, so the UI server and direct clients agree.
        root = Path(self.cfg.tracking.artifacts) if self.cfg.tracking.artifacts else env.artifact_root(self.root)
        location = root.resolve().as_uri() if uri.startswith("sqlite") else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # created concurrently by another stage
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    # -- runs ------------------------------------------------------------------------------
    def _find(self, method: str, sha: str, stage: str | None = None) -> str | None:
        """The newest run of ``method`` that produced weights ``sha`` at ``stage`` (None: training; gfpo: the
        RL stage, whose model can have the very weights it started from when no reward differed)."""
        runs = self.client.search_runs([self.experiment_id], f"tags.method = '{method}' and tags.model_sha = '{sha}'",
                                       order_by=["attributes.start_time DESC"])
        return next((r.info.run_id for r in runs if r.data.tags.get("stage") == stage), None)

    @contextmanager
    def training_run(self, method: str, train_file: Path, world_size: int = 1) -> Iterator[TrainingRun]:
        """A new run for training ``method``: params (``world_size``: processes of the job), lineage tags, the
        dataset as input. Under torchrun only rank 0 opens it."""
        pipeline = pipeline_run()
        tags = {"method": method, "pipeline_run_id": pipeline, "git_commit": git_commit(self.root),
                "dvc_data_md5": dvc_data_hash(self.root), "task": self.cfg.dataset_name,
                "data_source": self.cfg.data.source, "checker": self.cfg.data.checker,
                "base_model": self.cfg.model.checkpoint or "tiny",
                "mlflow.runName": f"{method}-{run_label(pipeline)}", "mlflow.note.content": self._description(method)}
        if os.environ.get(env.PARENT_RUN_ID):  # a study's cell: its runs nest under the cell's run
            tags["mlflow.parentRunId"] = os.environ[env.PARENT_RUN_ID]
        run = self.client.create_run(self.experiment_id, tags=tags)
        rid = run.info.run_id
        params = flat_params(self.cfg)
        items = list(params.items())
        for i in range(0, len(items), 90):
            self.client.log_batch(rid, params=[mlflow.entities.Param(k, v) for k, v in items[i:i + 90]])
        self.client.log_param(rid, "method", method)
        self.client.log_param(rid, "world_size", world_size)
        self._log_dataset(rid, train_file, tags["dvc_data_md5"])
        self._log_trace_stats(rid, Path(train_file).parent / TRACE_STATS_FILE)
        # The run is active while training, so MLflow samples CPU, memory (and GPU) beside the curves; leaving
        # the block ends it (FAILED on an exception).
        if not os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"):
            mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
        mlflow.set_system_metrics_samples_before_logging(1)
        with mlflow.start_run(run_id=rid, log_system_metrics=self.cfg.tracking.system_metrics):
            yield TrainingRun(self.client, rid)

    @contextmanager
    def rl_run(self, method: str, base_model_dir: Path) -> Iterator[RLRun]:
        """A child run ``gfpo`` of the run that trained ``base_model_dir``: the RL stage's curves per step, its
        statistics and the tag distribution before and after. Tagged with the RL model it produced, so its
        evaluation nests under it."""
        parent = self.attach(method, base_model_dir)
        pipeline = pipeline_run()
        rid = self.client.create_run(self.experiment_id, tags={
            "method": method, "stage": "gfpo", "pipeline_run_id": pipeline, "git_commit": git_commit(self.root),
            "mlflow.parentRunId": parent, "mlflow.runName": f"{method}-gfpo-{run_label(pipeline)}"}).info.run_id
        params = {k: v for k, v in flat_params(self.cfg).items() if k.startswith("gfpo.")}
        self.client.log_batch(rid, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
        try:
            yield RLRun(self.client, rid)
        except BaseException:
            self.client.set_terminated(rid, "FAILED")
            raise
        self.client.set_terminated(rid, "FINISHED")

    def _description(self, method: str) -> str:
        """The run page's description: what ran it, with the Prefect flow run's link when there is one."""
        url = os.environ.get(env.PIPELINE_RUN_URL)
        origin = f"Prefect flow run [{os.environ.get(env.PIPELINE_RUN_ID)}]({url})" if url else \
            "`dvc repro` / the `ssft` CLI"
        return (f"**{method}** on {self.cfg.dataset_name}: trained by {origin}. Child runs `evaluate` (and "
                "`register`) hold the later stages; their metrics and figures are copied here for Compare.")

    def _log_dataset(self, rid: str, path: Path, dvc_md5: str) -> None:
        from datasets import Dataset
        from mlflow.data.huggingface_dataset import from_huggingface

        ds = Dataset.from_parquet(str(path), keep_in_memory=True)
        digest = dvc_md5 if dvc_md5 != "none" else hashlib.md5(Path(path).read_bytes()).hexdigest()
        dataset = from_huggingface(ds, path=str(Path(path).resolve()), name="traces", digest=digest[:36])
        with mlflow.start_run(run_id=rid):
            try:
                mlflow.log_input(dataset, context="training")
            except mlflow.exceptions.MlflowException as e:
                # Training stages side by side log the same dataset at once: the server inserts it for one and
                # refuses the other (UNIQUE constraint); it exists now, so the second try only links it.
                if "UNIQUE constraint" not in str(e):
                    raise
                mlflow.log_input(dataset, context="training")

    def _log_trace_stats(self, rid: str, path: Path) -> None:
        """What the traces stage kept and dropped, per source: the file, and params ``dataset.<count>.<source>``
        (facts about the data, the same for every method: params, so Compare's metric views and the run page's
        charts start with what training and evaluation measured)."""
        if not path.exists():
            return
        stats = json.loads(path.read_text())
        self.client.log_dict(rid, stats, "data/stats.json")
        train = stats.get("train", {})
        params = {f"{DATASET_PARAM}.{what}.{mlflow_safe(source)}": n
                  for source, counts in train.get("per_source", {}).items() for what, n in counts.items()}
        params |= {f"{DATASET_PARAM}.{k}": train[k] for k in ("questions", "traces", "dropped_questions") if k in train}
        self._log_params(rid, params)

    def _log_params(self, rid: str, params: dict[str, Any]) -> None:
        items = [mlflow.entities.Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(rid, params=items[i:i + 90])

    def attach(self, method: str, model_dir: Path) -> str:
        """The run that trained the model in ``model_dir`` (a new run if none is known, e.g. a copied model)."""
        from ssft.train.models import TAGS_FILE

        sha = model_sha(model_dir)
        tags_file = Path(model_dir) / TAGS_FILE
        stage = json.loads(tags_file.read_text()).get("stage") if tags_file.exists() else None
        rid = self._find(method, sha, stage)
        if rid is None:
            rid = self.client.create_run(self.experiment_id, tags={
                "method": method, "model_sha": sha, "pipeline_run_id": pipeline_run(),
                "git_commit": git_commit(self.root), "mlflow.runName": f"{method}-eval"}).info.run_id
            self.client.set_terminated(rid, "FINISHED")
        return rid

    @contextmanager
    def child_run(self, parent: str, name: str) -> Iterator[str]:
        """A run nested under ``parent`` for a later stage: its own duration, the parent's lineage tags."""
        tags = {k: v for k, v in self.client.get_run(parent).data.tags.items()  # not model_sha: that finds the
                if not k.startswith("mlflow.") and k != "model_sha"}                # parent (attach) only
        tags |= {"mlflow.parentRunId": parent, "mlflow.runName": name, "stage": name}
        with mlflow.start_run(run_id=self.client.create_run(self.experiment_id, tags=tags).info.run_id) as run:
            yield run.info.run_id

    # -- evaluation -------------------------------------------------------------------------
    def log_curve(self, method: str, model_dir: Path, rows: list[dict]) -> None:
        """The learning curve (``ssft evaluate --curve``) onto the model's training run: ``curve/<metric>`` of
        the compared metrics at the training step of each snapshot, a line beside ``train/loss``."""
        rid = self.attach(method, model_dir)
        self.client.log_batch(rid, metrics=[
            mlflow.entities.Metric(f"curve/{metric_name(k)}", float(r[k]), now_ms(), int(r["step"]))
            for r in rows for k in COMPARED if isinstance(r.get(k), (int, float))])

    def log_eval(self, method: str, model_dir: Path, results_dir: Path, prefix_forced: bool = False) -> None:
        """Every metric of metrics.json, figures and tables into a child run ``evaluate`` of the model's run; the
        report's compared rows (``COMPARED``) and the figures also onto the model's run itself (without reopening
        it), so the runs view and Compare put the methods side by side: its figures at the top of its artifacts
        (``eval_<figure>.png``), where Compare's Artifacts tab finds the files the runs have in common.
        ``prefix_forced``: the same model decoded with forced openings, a child ``evaluate-prefix-forced`` only
        (the model's own metrics stay those of its plain decoding)."""
        rid = self.attach(method, model_dir)
        metrics = json.loads((Path(results_dir) / METRICS_FILE).read_text())
        details = [json.loads(line) for line in (Path(results_dir) / DETAILS_FILE).read_text().splitlines()]
        batch = [mlflow.entities.Metric(f"eval/{metric_name(k)}", float(v), now_ms(), 0) for k, v in metrics.items()]
        figures = eval_figures(metrics, details, self.cfg.ssft.num_tags)
        with self.child_run(rid, "evaluate-prefix-forced" if prefix_forced else "evaluate") as child:
            self.client.log_batch(child, metrics=batch)
            compared = {f"eval/{metric_name(k)}" for k in COMPARED}
            if not prefix_forced:
                self.client.log_batch(rid, metrics=[m for m in batch if m.key in compared])
            for name, fig in figures.items():
                self.client.log_figure(child, fig, f"eval/{name}.png")
                if not prefix_forced:
                    self.client.log_figure(rid, fig, f"eval_{name}.png")
            self.client.log_dict(child, metrics, "eval/metrics.json")
            self.client.log_table(child, tag_mode_table(details), "eval/tag_mode_counts.json")
            self.client.log_artifact(child, str(Path(results_dir) / DETAILS_FILE), "eval")

    def log_comparison(self, methods: list[str], models_dir: Path, plots: list[Path]) -> None:
        """The report's cross-method figures into every method's run, at the top of its artifacts as
        ``comparison_<figure>.png`` (Compare's Artifacts tab lists only top-level files common to all runs); each
        run's page shows where it stands."""
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            named = [Path(shutil.copyfile(plot, Path(tmp) / comparison_artifact(plot))) for plot in plots]
            for method in methods:
                if (Path(models_dir) / method).is_dir():
                    rid = self.attach(method, Path(models_dir) / method)
                    for plot in named:
                        self.client.log_artifact(rid, str(plot))

    def open_run(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None) -> str:
        """A run that groups others (a study; one of its cells), left RUNNING until :meth:`close_run`."""
        tags = {"mlflow.runName": name, "git_commit": git_commit(self.root), **(tags or {})}
        if parent:
            tags["mlflow.parentRunId"] = parent
        return self.client.create_run(self.experiment_id, tags=tags).info.run_id

    def close_run(self, run_id: str, metrics: dict[str, float] | None = None, files: Sequence[Path] = (),
                  failed: bool = False) -> None:
        """Metrics (names made MLflow-safe) and files onto a grouping run, then end it."""
        batch = [mlflow.entities.Metric(mlflow_safe(metric_name(k)), float(v), now_ms(), 0)
                 for k, v in (metrics or {}).items()]
        for i in range(0, len(batch), 900):
            self.client.log_batch(run_id, metrics=batch[i:i + 900])
        for f in files:
            self.client.log_artifact(run_id, str(f))
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def pipeline_runs(self, pipeline_run_id: str) -> dict[str, str]:
        """method -> its training run, for one Prefect flow run (the newest per method)."""
        runs = self.client.search_runs([self.experiment_id], f"tags.pipeline_run_id = '{pipeline_run_id}'",
                                       order_by=["attributes.start_time ASC"])
        return {r.data.tags["method"]: r.info.run_id for r in runs
                if "method" in r.data.tags and "mlflow.parentRunId" not in r.data.tags}

    def register(self, model_dir: Path, metrics: dict[str, float], question: str) -> dict[str, Any]:
        """Log the SSFT model under its training run and register it as a new version (``registry``)."""
        if not self.cfg.tracking.register:
            return {"registered": False}
        rid = self.attach("ssft", model_dir)  # an RL-trained model: its gfpo run
        from ssft.train.models import TAGS_FILE  # the register stage loads the model anyway

        stage = json.loads((Path(model_dir) / TAGS_FILE).read_text()).get("stage")  # None: stage 1, ssft
        with self.child_run(rid, "register"):  # the training run keeps its duration
            info = registry.register(self.client, self.cfg, self.root, model_dir, question)
        return registry.promote(self.client, info["name"], info["version"], float(metrics["cons@N"]),
                                {**info, "run_id": rid}, tuple(self.cfg.tracking.baselines), stage=stage)


class TrainingRun:
    """The open training run: a Trainer callback for curves and per-epoch assignment statistics."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def callbacks(self) -> list:
        from ssft.tracking.callback import MlflowTrainingCallback  # transformers' Trainer: the train stage only

        return [MlflowTrainingCallback(self.client, self.run_id)]

    def finish(self, model_dir: Path, stats: dict) -> None:
        """Tag the run with the model it produced (later stages find it by that) and keep the stats."""
        from ssft.train.models import TAGS_FILE  # torch: only in the training stage, which has it loaded

        self.client.set_tag(self.run_id, "model_sha", model_sha(model_dir))
        self.client.log_dict(self.run_id, {k: v for k, v in stats.items() if k != "log_history"},
                             "train/train_stats.json")
        self.client.log_artifact(self.run_id, str(Path(model_dir) / TAGS_FILE), "train")
        over = stats.get("context", {}).get("over_context", {})  # traces too long for the model, per source
        if over:
            self.client.log_batch(self.run_id, params=[mlflow.entities.Param(
                f"{DATASET_PARAM}.over_context.{mlflow_safe(source)}", str(n)) for source, n in over.items()])


class RLRun:
    """The open RL (GFPO/GRPO) run: ``log`` per step, ``finish`` with the model it wrote."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.client.log_batch(self.run_id, metrics=[mlflow.entities.Metric(f"gfpo/{k}", float(v), now_ms(), step)
                                                    for k, v in metrics.items()])

    def finish(self, model_dir: Path, stats: dict) -> None:
        self.client.set_tag(self.run_id, "model_sha", model_sha(model_dir))
        self.client.log_dict(self.run_id, stats, "gfpo/gfpo_stats.json")
        if stats.get("tag_distribution_before"):
            self.client.log_figure(self.run_id, tag_distribution_figure(stats), "gfpo/tag_distribution.png")
