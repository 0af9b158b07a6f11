"""Studies: a grid of settings x seeds through the pipeline's own stages, aggregated with their spread.

    ssft study studies/cpu.yaml                  # `make study`; the Prefect deployment ssft/study runs the same

A study file (``studies/<name>.yaml``) holds ``base`` (dotted params.yaml overrides for every cell),
``settings`` (each a ``name`` and its own overrides) and ``seeds``. Each (setting, seed) cell runs in
``.studies/<study>/<setting>/seed<k>/``: its params.yaml, then ``ssft traces``, ``ssft train`` and
``ssft evaluate`` per method, the commands ``dvc.yaml`` runs (no DVC, Prefect or MLflow needed: a GPU box
runs studies too). A finished cell is reused while its params and the code are unchanged (``cell.json``).
The report (``results/study.md`` and figures beside it) is written from the cells' metrics and
details, never by hand: mean and spread over seeds per method, and the paired ssft - baseline differences
per seed and over seeds, with a 95% interval that resamples seeds, then questions (``ssft.eval.intervals``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ssft import atomic, lifeline, stages
from ssft import config as config_mod
from ssft import env as ssft_env
from ssft.errors import UserError
from ssft.eval.evaluate import DETAILS_FILE, METRICS_FILE
from ssft.eval.intervals import Difference, paired_difference
from ssft.eval.report import SWEEP_ROWS, at_k, temperature_of
from ssft.eval.report import columns as report_columns

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
# Rows of the study tables: single-sample accuracy, voting, diversity of modes.
KEYS = ("pass@1", "pass@1_val_tag", "pass@1_best_tag", "pass@1_self", "pass@1_self_greedy_tag", "cons@N",
        "cons@N_split", "cons@N_self", "pass@N", "coverage", "purity", "nmi", "cons@N_ties", "dead_tags",
        "coverage_greedy", "match_agreement_full", "tag_entropy_self", "argmax_best_tag")
# Per-question values for the paired differences (computed from details.jsonl).
PAIRED = ("pass@1", "cons@N", "cons@N_split", "coverage")


@dataclass(frozen=True)
class Setting:
    name: str                                                     # unique in its study: what identifies it
    params: dict[str, Any] = field(compare=False, hash=False)
    seeds: tuple[int, ...] = field(default=(), compare=False)     # () = the study's seeds


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    base: dict[str, Any]
    settings: tuple[Setting, ...]
    seeds: tuple[int, ...]
    path: str  # the study file, as given
    only: tuple[str, ...] = ()  # ssft study --settings: the settings of the file this run was limited to
    # (a, b): setting a against setting b, each method against itself, paired by seed and question (a choice the
    # data or the model makes: trace selection, model size); both must ask the same questions
    contrasts: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Cell:
    setting: Setting
    seed: int

    @property
    def label(self) -> str:
        return f"{self.setting.name}/seed{self.seed}"


def load(path: Path, params: Path = ROOT / "params.yaml") -> Study:
    """A study file, every cell's params validated up front (one line per problem, naming the file)."""
    path = Path(path)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (ROOT / "studies").glob("*.yaml")))
        raise UserError(f"{path}: no such study file; the shipped ones: {known}")
    text = path.read_text()
    raw = yaml.safe_load(text) or {}
    unknown = set(raw) - {"description", "base", "settings", "seeds", "contrasts"}
    if unknown:
        raise UserError(f"{path}: unknown key(s) {sorted(unknown)}; a study has description, base, settings, seeds "
                        "and optionally contrasts")
    for s in raw.get("settings") or []:
        extra = set(s) - {"name", "params", "seeds"} if isinstance(s, dict) else {"(not a mapping)"}
        if extra:
            raise UserError(f"{path}: setting {s.get('name') if isinstance(s, dict) else s!r}: unknown key(s) "
                            f"{sorted(extra)}; a setting has name, params and optionally seeds")
    settings = tuple(Setting(str(s.get("name", "")), dict(s.get("params") or {}),
                             tuple(int(x) for x in s.get("seeds") or ())) for s in raw.get("settings") or [])
    names = [s.name for s in settings]
    if not settings or "" in names or len(set(names)) != len(names):
        raise UserError(f"{path}: settings must be a non-empty list of {{name, params}} with distinct names")
    seeds = tuple(int(s) for s in raw.get("seeds") or [0])
    contrasts = _contrasts(path, raw.get("contrasts") or [], names)
    study = Study(path.stem, str(raw.get("description", "")), dict(raw.get("base") or {}), settings, seeds,
                  str(path), contrasts=contrasts)
    for cell in cells(study):
        try:
            config_mod.load(params, overrides(study, cell))
        except config_mod.ConfigError as e:
            raise UserError(f"{path}: setting {cell.setting.name!r}: {e}") from None
    return study


def _contrasts(path: Path, raw: Any, names: Sequence[str]) -> tuple[tuple[str, str], ...]:
    pairs = raw if isinstance(raw, list) else [raw]
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in names for p in pair) and pair[0] != pair[1]):
            raise UserError(f"{path}: contrasts: {pair!r}: each contrast is a pair of two of its settings, "
                            f"[a, b] for a − b (settings: {', '.join(names)})")
    return tuple((str(a), str(b)) for a, b in pairs)


def only(study: Study, names: Sequence[str]) -> Study:
    """The study restricted to some of its settings (``ssft study FILE --settings a,b``): their cells are the
    full study's (same directories, reused by a later full run while params and code are unchanged)."""
    known = [s.name for s in study.settings]
    missing = [n for n in names if n not in known]
    if missing:
        raise UserError(f"{study.path}: --settings {','.join(missing)}: no such setting; it has {', '.join(known)}")
    return dataclasses.replace(study, settings=tuple(s for s in study.settings if s.name in names),
                               only=tuple(names), contrasts=tuple(c for c in study.contrasts if set(c) <= set(names)))


def default_report(name: str) -> Path:
    """``results/study.md`` for the default study (``cpu``), ``results/study-<name>.md`` for the others."""
    return Path("results") / ("study.md" if name == "cpu" else f"study-{name}.md")


def cells(study: Study) -> list[Cell]:
    return [Cell(s, seed) for s in study.settings for seed in s.seeds or study.seeds]


def overrides(study: Study, cell: Cell) -> dict[str, Any]:
    """The cell's params.yaml overrides: its own MLflow experiment and never the registry unless the study
    says otherwise, then the study's base, the setting, the seed."""
    return {"tracking.experiment": f"ssft-study-{study.name}", "tracking.register": False, **study.base,
            **cell.setting.params, "seed": cell.seed}


# what a cell runs (gfpo where a setting asks for it); its report and MLflow logging are the study's
CELL_STAGES = ("traces", "train", "evaluate", "gfpo")


def code_hash(root: Path = ROOT) -> str:
    """What the cells' results depend on besides their params: the code of the stages a cell runs (the lists of
    ``ssft.stages``, which dvc.yaml and the trainer read too). An edit of the report or of MLflow logging
    rewrites the report without rerunning an hour of cells."""
    return stages.code_digest(CELL_STAGES, root)[:16]


def cell_dir(workdir: Path, study: Study, cell: Cell) -> Path:
    return workdir / study.name / cell.setting.name / f"seed{cell.seed}"


def run_cell(study: Study, cell: Cell, workdir: Path, params: Path = ROOT / "params.yaml",
             env: dict[str, str] | None = None,
             slots: threading.Semaphore | None = None) -> dict[str, dict[str, float]]:
    """The cell's stages (reused when finished with the same params and code); method -> metrics. Each
    method's evaluation follows its own training; ``slots`` bounds the stages running at once (shared by the
    cells that run together; default: what ``pipeline.parallel`` allows)."""
    d = cell_dir(workdir, study, cell)
    raw = yaml.safe_load(params.read_text())
    for dotted, value in overrides(study, cell).items():
        config_mod.set_dotted(raw, dotted, value)
    text = yaml.safe_dump(raw, sort_keys=False)
    cfg = config_mod.from_dict(yaml.safe_load(text), f"{study.name}: {cell.label}")
    key = hashlib.sha256((text + code_hash()).encode()).hexdigest()[:16]
    methods, columns = list(cfg.train.methods), report_columns(cfg)
    done = d / "cell.json"
    if done.exists() and json.loads(done.read_text()).get("key") == key:
        log.info("%s: finished before, reused", cell.label)
        return {c: json.loads((d / "results" / sub / METRICS_FILE).read_text()) for c, sub in columns.items()}
    d.mkdir(parents=True, exist_ok=True)
    atomic.write_text(d / "params.yaml", text)
    t0 = time.monotonic()
    slots = slots or threading.BoundedSemaphore(ssft_env.stage_parallelism(cfg.pipeline.parallel, cfg.train.threads))
    # MLflow: the project's store (not one per cell), runs named after the cell
    stage_env = {"MLFLOW_TRACKING_URI": os.environ.get("MLFLOW_TRACKING_URI") or ssft_env.store_uri(ROOT),
                 ssft_env.PIPELINE_RUN_ID: f"study:{study.name}/{cell.label}", **(env or {})}

    def stage(args: list[str]) -> None:
        with slots:
            _stage(d, args, cell.label, stage_env)

    def method(m: str) -> None:
        stage(["train", "--method", m])
        stage(["evaluate", "--method", m])
        if cfg.eval.every_steps:  # the learning curve, from the snapshots training kept
            stage(["evaluate", "--method", m, "--curve"])
        if m in cfg.eval.prefix_forced:  # the same model made to open with each strategy's first token
            stage(["evaluate", "--method", m, "--prefix-forced", "--results", "results/forced"])
        if m in cfg.gfpo.methods:  # the RL stage, then its model's evaluation (dvc.yaml's gfpo, evaluate-gfpo)
            stage(["gfpo", "--method", m])
            stage(["evaluate", "--method", m, "--models", "models/gfpo", "--results", "results/gfpo"])

    stage(["traces", "--out", "data/traces"])
    with ThreadPoolExecutor(max_workers=len(methods)) as pool:  # each thread keeps the cell's context (Prefect's)
        for f in [pool.submit(contextvars.copy_context().run, method, m) for m in methods]:
            f.result()
    atomic.write_text(done, json.dumps({"key": key, "seconds": round(time.monotonic() - t0, 1),
                                        "overrides": overrides(study, cell)}, indent=2))
    log.info("%s: done in %.0f s", cell.label, time.monotonic() - t0)
    return {c: json.loads((d / "results" / sub / METRICS_FILE).read_text()) for c, sub in columns.items()}


def _stage(cell_path: Path, args: list[str], label: str, env: dict[str, str] | None) -> None:
    """One ``ssft`` stage in the cell's directory (its relative default paths land there), in a process group
    of its own that dies with the study (``lifeline.kept``). Its progress and error lines are passed on as they come;
    a failure raises with the stage's last line."""
    cmd = lifeline.kept([sys.executable, "-m", "ssft.cli", "--params", "params.yaml", *args])
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.Popen(cmd, cwd=cell_path, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    assert proc.stdout is not None
    last = "no output"
    try:
        for line in proc.stdout:
            if line.strip():
                last = line.strip()
            if "step " in line and "ETA" in line or " ERROR " in line:
                log.info("%s %s: %s", label, args[0], last.split(" INFO ")[-1].split(" ERROR ")[-1])
        proc.wait()
    finally:
        if proc.poll() is None:  # interrupted here (a cancelled flow): the keeper stops the stage's group
            proc.terminate()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: ssft {' '.join(args)} failed (exit {proc.returncode}): {last}")


# -- aggregation ----------------------------------------------------------------------------------------
def spread(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n); std 0 for one value."""
    xs = [float(v) for v in values]
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return mean, std, len(xs)


def aggregate(results: dict[Cell, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, tuple]]]:
    """setting -> method -> metric -> (mean, std, seeds) over the setting's seeds, for every numeric metric
    (the tables show KEYS; the figures and study.json use the rest: pass@k, cons@k, the temperature sweep)."""
    out: dict[str, dict[str, dict[str, tuple]]] = {}
    for setting in dict.fromkeys(c.setting.name for c in results):
        mine = [r for c, r in results.items() if c.setting.name == setting]
        methods = list(dict.fromkeys(m for r in mine for m in r))
        out[setting] = {}
        for m in methods:
            keys = dict.fromkeys(k for r in mine if m in r for k, v in r[m].items()
                                 if isinstance(v, (int, float)) and math.isfinite(v))
            out[setting][m] = {k: spread(r[m][k] for r in mine if m in r and k in r[m]) for k in keys}
    return out


def per_question(details: Path, n_tags: int, ks: Sequence[int] = ()) -> dict[str, dict[str, float]]:
    """question -> PAIRED metrics of the sampled generations of one method (details.jsonl), and pass@k for each
    k of ``ks`` past 1 that the question sampled enough for (named by k: pass@N is pass@<N> here)."""
    from ssft.eval.evaluate import _as_generations
    from ssft.eval.metrics import compute_metrics, main_sampled

    rows: dict[str, list] = {}
    for r in main_sampled([json.loads(line) for line in details.read_text().splitlines()]):
        rows.setdefault(r["question_id"], []).append(r)
    wanted = (*PAIRED, *(f"pass@{k}" for k in sorted(set(ks)) if k > 1))
    out = {}
    for q, rs in rows.items():
        m = compute_metrics(_as_generations(rs, n_tags), n_tags, ks)
        m.setdefault(f"pass@{n_tags}", m["pass@N"])
        out[q] = {k: m[k] for k in wanted if k in m}
    return out


def paired(cell_paths: list[Path], a: str, b: str, n_tags: int, ks: Sequence[int] = ()) -> dict[str, Difference]:
    """a − b per metric: per seed (cell) over the questions both answered, then over seeds with the two-stage
    bootstrap of :mod:`ssft.eval.intervals`. Pairs share the question and the seed's data: only the models differ."""
    return paired_details([(fa, fb) for fa, fb in (details_of(d, a, b) for d in cell_paths)], (n_tags, n_tags), ks)


def contrast(a_cells: list[Path], b_cells: list[Path], method: str, n_tags: tuple[int, int],
             ks: Sequence[int] = ()) -> dict[str, Difference]:
    """Setting a − setting b for one method, paired by seed (the cells' directory names) and question."""
    b_by_seed = {d.name: d for d in b_cells}
    return paired_details([(details_of(d, method)[0], details_of(b_by_seed[d.name], method)[0])
                           for d in a_cells if d.name in b_by_seed], n_tags, ks)


def details_of(cell: Path, *columns: str) -> list[Path]:
    """Report columns' generations in a cell (sft+forced: results/forced/sft), its params read once."""
    where = report_columns_from(cell) if (cell / "params.yaml").exists() else {}
    return [cell / "results" / where.get(c, c) / DETAILS_FILE for c in columns]


def paired_details(pairs: list[tuple[Path, Path]], n_tags: tuple[int, int],
                   ks: Sequence[int] = ()) -> dict[str, Difference]:
    """a − b per metric (PAIRED, then pass@k for ``ks``) over (a, b) generation files, one pair per seed: per seed
    over the questions both answered, then over seeds (a pair with a file missing is skipped)."""
    diffs: dict[str, list[list[float]]] = {k: [] for k in (*PAIRED, *(f"pass@{k}" for k in sorted(set(ks)) if k > 1))}
    for fa, fb in pairs:
        if not (fa.exists() and fb.exists()):
            continue
        qa, qb = per_question(fa, n_tags[0], ks), per_question(fb, n_tags[1], ks)
        shared = sorted(qa.keys() & qb.keys())
        for k in diffs:
            diffs[k].append([qa[q][k] - qb[q][k] for q in shared if k in qa[q] and k in qb[q]])
    return {k: paired_difference(groups) for k, groups in diffs.items() if any(groups)}


# -- the run and its report -----------------------------------------------------------------------------
CellRunner = Callable[[Study, Cell, dict[str, str], threading.Semaphore], dict[str, dict[str, float]]]


def _tracker(cfg: config_mod.Config) -> Any:
    """MLflow when the study's cells track (one parent run, a child per cell), else the do-nothing tracker."""
    if not cfg.tracking.enabled:
        from ssft.tracking.null import NullTracker

        return NullTracker()
    from ssft.tracking import Tracker

    return Tracker(cfg, ROOT)


def run(study: Study, report: Path, workdir: Path, runner: CellRunner | None = None,
        params: Path = ROOT / "params.yaml") -> str:
    """Every cell (``runner``: :func:`run_cell` unless the Prefect flow wraps it), then the report. Cells run
    side by side, their stages sharing ``pipeline.parallel`` slots, so a one-method cell does not leave a
    core idle. MLflow: a parent run for the study, a child per cell (its stages' runs nest under it) with the
    cell's metrics, and the report, its aggregate and figures on the parent."""
    t0 = time.monotonic()
    runner = runner or (lambda s, c, e, slots: run_cell(s, c, workdir, params, e, slots))
    cfg = config_mod.load(params, overrides(study, cells(study)[0]))  # the first cell's: tracking, parallelism
    width = ssft_env.stage_parallelism(cfg.pipeline.parallel, cfg.train.threads)
    slots = threading.BoundedSemaphore(width)
    tracker = _tracker(cfg)
    parent = tracker.open_run(f"study-{study.name}", tags={"study": study.name})

    def one(cell: Cell) -> dict[str, dict[str, float]]:
        rid = tracker.open_run(cell.label, parent, {"study": study.name, "setting": cell.setting.name,
                                                    "seed": str(cell.seed)})
        try:
            result = runner(study, cell, {ssft_env.PARENT_RUN_ID: rid} if rid else {}, slots)
        except BaseException:
            tracker.close_run(rid, failed=True)
            raise
        tracker.close_run(rid, {f"{m}/{k}": v for m, ms in result.items() for k, v in ms.items() if k in KEYS})
        return result

    try:
        with ThreadPoolExecutor(max_workers=width) as pool:  # each thread keeps the caller's context (Prefect's)
            futures = {c: pool.submit(contextvars.copy_context().run, one, c) for c in cells(study)}
            try:
                results = {c: f.result() for c, f in futures.items()}
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # cells not started yet never start
                raise
        agg = aggregate(results)
        text = write_report(study, results, agg, workdir, report, time.monotonic() - t0)
    except BaseException:
        tracker.close_run(parent, failed=True)
        raise
    tracker.close_run(parent, {f"{s}/{m}/{k}": v[0] for s, t in agg.items() for m, ms in t.items()
                               for k, v in ms.items() if k in KEYS},
                      [report, report.with_suffix(".json"), *sorted(report.with_suffix("").glob("*.png"))])
    log.info("study %s: %d cells in %.0f s -> %s", study.name, len(results), time.monotonic() - t0, report)
    return text


def _fmt(stat: tuple) -> str:
    mean, std, n = stat
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def write_report(study: Study, results: dict[Cell, dict[str, dict[str, float]]],
                 agg: dict[str, dict[str, dict[str, tuple]]], workdir: Path, report: Path, seconds: float) -> str:
    """``report`` (markdown), ``<report stem>/`` figures and ``<report stem>.json`` (``agg``, from
    :func:`aggregate`)."""
    seeds = sorted({len(s.seeds or study.seeds) for s in study.settings})
    lines = [f"# Study `{study.name}`", "", study.description.strip(), "",
             f"Command: `ssft study {_shown(study.path)}"
             f"{' --settings ' + ','.join(study.only) if study.only else ''}` · git {ssft_env.git_commit(ROOT)} · "
             f"{len(results)} cells ({len(study.settings)} settings x {' or '.join(map(str, seeds))} seeds) · "
             f"{seconds / 60:.1f} min this run (reused cells count as 0) · the cells' own wall times sum to "
             f"{_cell_minutes(workdir, study, results):.1f} min (they run side by side).", "",
             "Mean ± standard deviation over seeds. Paired differences: the mean over seeds of each seed's mean "
             "difference over its questions, a 95% interval from a bootstrap that resamples seeds, then questions "
             "within them (seeds vary most), and each seed's own difference; a difference is called only when the "
             "interval excludes 0 and no seed says the opposite.", ""]
    n_tags: dict[str, int] = {}
    ks: dict[str, tuple[int, ...]] = {}
    paths: dict[str, list[Path]] = {}
    diffs: dict[str, dict[str, dict[str, Difference]]] = {}
    for setting in study.settings:
        methods = list(agg.get(setting.name, {}))
        paths[setting.name] = [cell_dir(workdir, study, c) for c in results if c.setting == setting]
        n_tags[setting.name], ks[setting.name] = _tags_and_ks(paths[setting.name])
        diffs[setting.name] = {b: d for b in methods if b != "ssft" and "ssft" in methods
                               if (d := paired(paths[setting.name], "ssft", b, n_tags[setting.name], ks[setting.name]))}
    runs = {name: curve_runs(ps) for name, ps in paths.items()}  # the learning curves, read once per setting
    contrasts = {(a, b): {m: d for m in agg.get(a, {}) if m in agg.get(b, {})
                          if (d := contrast(paths[a], paths[b], m, (n_tags[a], n_tags[b]),
                                            sorted(set(ks[a]) & set(ks[b]))))}
                 for a, b in study.contrasts}
    lines += _glance_lines(study, agg, diffs) + _reading_lines(agg, diffs, contrasts, runs, n_tags)
    for setting in study.settings:
        table = agg.get(setting.name, {})
        methods = list(table)
        lines += [f"## {setting.name}", "", f"Overrides: `{json.dumps({**study.base, **setting.params})}`", "",
                  "| metric | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for k in KEYS:
            if any(k in table[m] for m in methods):
                lines.append(f"| {k} | " + " | ".join(_fmt(table[m][k]) if k in table[m] else "–"
                                                      for m in methods) + " |")
        for base, diff in diffs[setting.name].items():
            lines += ["", f"ssft − {base} (paired):", ""]
            lines += [f"- {k}: {d}: {d.reading()}" for k, d in diff.items()]
        lines += _rl_lines(paths[setting.name], table)
        lines += _at_k_lines(table, n_tags[setting.name]) + _temperature_lines(table)
        lines += _dynamics_lines(paths[setting.name]) + _cost_lines(paths[setting.name])
        lines += _curve_lines(runs[setting.name])
        lines.append("")
    lines += _contrast_lines(contrasts)
    try:
        from ssft.tracking.figures import save_figures, study_figures

        curves = {name: c for name, r in runs.items() if (c := curve_spread(r))}
        figures = save_figures(study_figures(agg, n_tags, curves), report.with_suffix(""))
    except ImportError:  # a GPU image without matplotlib: the tables still say everything
        log.warning("matplotlib is not installed: %s has no figures", report)
        figures = []
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(report.parent).as_posix()})" for p in figures]
    text = "\n".join(lines) + "\n"
    atomic.write_text(report, text)
    atomic.write_text(report.with_suffix(".json"), json.dumps(
        {s: {m: {k: list(v) for k, v in ms.items()} for m, ms in t.items()} for s, t in agg.items()}, indent=2))
    return text


# -- the RL stage (GFPO, and GRPO as its baseline) ------------------------------------------------------
def single_sample(details: Path, metrics: dict) -> dict[str, float]:
    """question -> the model's best single-sample accuracy without being told a tag: a tagged model's own tag
    (``self_sampled``, GFPO's inference), else its validation tag, else every sampled generation."""
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    own = [r for r in rows if r["set"] == "self_sampled"]
    if not own:
        val = int(metrics.get("val_tag", 0))
        own = [r for r in rows if r["set"] == "sampled" and (not val or r["tag"] == val)]
    by_q: dict[str, list[bool]] = {}
    for r in own:
        by_q.setdefault(r["question_id"], []).append(bool(r["correct"]))
    return {q: sum(c) / len(c) for q, c in by_q.items()}


RL_PAIRS = (("ssft+gfpo", "ssft"), ("ssft+gfpo", "sft+grpo"), ("ssft+gfpo", "sft"), ("sft+grpo", "sft"))


def _rl_lines(paths: list[Path], table: dict[str, dict[str, tuple]]) -> list[str]:
    """Paired single-sample differences around the RL stage (per seed, then over seeds), and the tag distribution
    before and after GFPO (mean P(tag | question) over the RL questions, averaged over seeds)."""
    if not {a for pair in RL_PAIRS for a in pair if "+" in a} & set(table):  # sft+forced is no RL column
        return []
    where = report_columns_from(paths[0]) if paths else {}
    lines = ["", "Single sample without a given tag (tagged: the model's own tag, pass@1_self; untagged: pass@1; "
             "ssft before RL: its own tag too), paired per seed, then over seeds:", ""]
    for a, b in RL_PAIRS:
        if a not in where or b not in where:
            continue
        groups = []
        for d in paths:
            fa, fb = d / "results" / where[a], d / "results" / where[b]
            qa = single_sample(fa / DETAILS_FILE, json.loads((fa / METRICS_FILE).read_text()))
            qb = single_sample(fb / DETAILS_FILE, json.loads((fb / METRICS_FILE).read_text()))
            groups.append([qa[q] - qb[q] for q in sorted(qa.keys() & qb.keys())])
        if any(groups):
            diff = paired_difference(groups)
            lines.append(f"- {a} − {b}: {diff}: {diff.reading(a)}")
    from ssft.train.gfpo import GFPO_FILE

    dists = [json.loads(f.read_text()) for d in paths if (f := d / "models" / "gfpo" / "ssft" / GFPO_FILE).exists()]
    if dists:
        before = [sum(x) / len(dists) for x in zip(*(s["tag_distribution_before"] for s in dists))]
        after = [sum(x) / len(dists) for x in zip(*(s["tag_distribution_after"] for s in dists))]
        lines += ["", "ssft's tag distribution, mean P(tag | question) before → after GFPO: " + ", ".join(
            f"<think{t + 1}> {p:.2f} → {q:.2f}" for t, (p, q) in enumerate(zip(before, after)))]
    return lines


# -- learning curves (eval.every_steps) ----------------------------------------------------------------
def curve_runs(paths: list[Path]) -> dict[str, list[dict[int, dict]]]:
    """method -> per seed (cell), step -> that step's metrics (``results/curves``)."""
    from ssft.eval.curves import CURVES_DIR, read

    out: dict[str, list[dict[int, dict]]] = {}
    for d in paths:
        for f in sorted((d / "results" / CURVES_DIR).glob("*.jsonl")):
            out.setdefault(f.stem, []).append({r["step"]: r for r in read(f)})
    return out


def shared_steps(at: list[dict[int, dict]]) -> list[int]:
    """The steps every seed's curve evaluated, in order."""
    return sorted(set.intersection(*(set(a) for a in at))) if at else []


def curve_spread(runs: dict[str, list[dict[int, dict]]]) -> dict[str, dict[str, list[tuple]]]:
    """method -> metric -> [(step, mean, std, seeds)] over the seeds' curves (:func:`curve_runs`), at the steps
    every seed evaluated."""
    out: dict[str, dict[str, list[tuple]]] = {}
    for m, at in runs.items():
        steps = shared_steps(at)
        first = at[0][steps[0]] if steps else {}
        keys = [k for k in first if k != "step" and all(k in a[s] for a in at for s in steps)]
        out[m] = {k: [(s, *spread(a[s][k] for a in at)) for s in steps] for k in keys}
    return out


def _curve_lines(runs: dict[str, list[dict[int, dict]]]) -> list[str]:
    """The learning curves as a table: cons@N per method at each evaluated step (mean ± sd over seeds), and what
    each curve's last interval says about the budget."""
    curves = curve_spread(runs)
    if not curves:
        return []
    methods = list(curves)
    steps = [p[0] for p in curves[methods[0]].get("cons@N", [])]
    lines = ["", "Learning curve (cons@N on the cheap set: eval.curve_questions questions, eval.curve_samples "
             "samples each), mean ± sd over seeds; the figure learning_curves adds pass@1_val_tag and coverage:", "",
             "| step | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for i, step in enumerate(steps):
        cells = [_fmt(curves[m]["cons@N"][i][1:]) if i < len(curves[m].get("cons@N", [])) else "–" for m in methods]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return lines + ["", *(f"- {m}: {still_rising(last_gains(runs[m]), steps[-2:])}" for m in methods
                          if len(steps) >= 2)]


def last_gains(at: list[dict[int, dict]], metric: str = "cons@N") -> list[float]:
    """Each seed's change of ``metric`` over the last interval of the steps all seeds share."""
    steps = shared_steps(at)
    return [a[steps[-1]][metric] - a[steps[-2]][metric] for a in at] if len(steps) >= 2 else []


def still_rising(gains: list[float], steps: Sequence[int], tolerance: float = 0.02) -> str:
    """What the end of a curve says about the budget, from each seed's gain over the last interval: still rising
    when the mean gain passes ``tolerance`` and every seed rose, flat when the mean gain is within it, else
    unclear. (Snapshots along one schedule are not runs stopped at each budget: the learning rate is still high
    mid-way, so an early point understates a shorter run.)"""
    if not gains:
        return "one point: no curve"
    mean = sum(gains) / len(gains)
    span = f"({mean:+.3f} from step {steps[0]} to {steps[1]}; per seed {', '.join(f'{g:+.3f}' for g in gains)})"
    return {"still rising": f"still rising at the last step {span}: not converged at this budget",
            "flat": f"flat at the end {span}: converged at this budget, as far as cons@N goes",
            "unclear": f"unclear at the end {span}: the seeds disagree"}[trend(gains, tolerance)]


def trend(gains: list[float], tolerance: float = 0.02) -> str:
    """:func:`still_rising` in a word: ``still rising``, ``flat`` or ``unclear``."""
    mean = sum(gains) / len(gains)
    if mean > tolerance and all(g > 0 for g in gains):
        return "still rising"
    return "flat" if abs(mean) <= tolerance else "unclear"


def report_columns_from(cell: Path) -> dict[str, str]:
    """A finished cell's report columns, from the params it ran with."""
    return report_columns(config_mod.load(cell / "params.yaml"))


def _cell_minutes(workdir: Path, study: Study, results: Iterable[Cell]) -> float:
    """Wall minutes of every cell's own run (``cell.json``), summed (cells overlap, so a run from scratch
    takes less)."""
    done = [cell_dir(workdir, study, c) / "cell.json" for c in results]
    return sum(json.loads(f.read_text()).get("seconds", 0.0) for f in done if f.exists()) / 60


def _shown(path: str) -> str:
    """A study file as a user in the project would name it (the flow passes absolute paths)."""
    p = Path(path)
    return p.relative_to(ROOT).as_posix() if p.is_absolute() and p.is_relative_to(ROOT) else path


def _glance_lines(study: Study, agg: dict[str, dict[str, dict[str, tuple]]],
                  diffs: dict[str, dict[str, dict[str, Difference]]]) -> list[str]:
    """One row per setting: SSFT's votes, modes and matching, and its paired cons@N difference to each baseline
    with the verdict of the interval."""
    lines = ["## At a glance", "", "| setting | ssft pass@1 | ssft cons@N | ssft coverage | ssft nmi | agreement L "
             "vs whole trace | ssft − baseline cons@N [95%] |", "|---|---|---|---|---|---|---|"]
    for setting in study.settings:
        ssft = agg.get(setting.name, {}).get("ssft")
        if ssft is None:
            continue
        vs = "; ".join(f"{b} {d['cons@N'].short()} {CALLS[d['cons@N'].call]}" for b, d in diffs[setting.name].items()
                       if "cons@N" in d) or "–"
        cells = [_fmt(ssft[k]) if k in ssft else "–" for k in ("pass@1", "cons@N", "coverage", "nmi",
                                                               "match_agreement_full")]
        lines.append(f"| {setting.name} | " + " | ".join(cells) + f" | {vs} |")
    return [*lines, ""]


CALLS = {"ahead": "ssft ahead", "unclear": "no clear difference", "behind": "ssft behind"}
SIGNS = {"ahead": "higher", "unclear": "no clear difference", "behind": "lower"}  # a contrast: setting a − b


def _reading_lines(agg: dict[str, dict[str, dict[str, tuple]]], diffs: dict[str, dict[str, dict[str, Difference]]],
                   contrasts: dict[tuple[str, str], dict[str, dict[str, Difference]]],
                   runs: dict[str, dict[str, list[dict[int, dict]]]], n_tags: dict[str, int]) -> list[str]:
    """What holds and what does not, in a few lines: the paired calls (:attr:`Difference.call`) grouped by verdict,
    pass@k against the best baseline at each k, whether the tags follow the strategies, where the learning curves
    end, and the contrasts. Written from the same numbers as the tables, so it changes when they do."""
    lines = ["## Reading", "", "What the paired intervals support (ahead or behind only where the 95% interval "
             "excludes 0 and no seed says the opposite; values: ssft − baseline, mean [95%]):", ""]
    for metric, label in (("cons@N", "Majority vote, cons@N"), ("coverage", "Modes kept, coverage of N")):
        groups: dict[str, list[str]] = {c: [] for c in CALLS}
        for setting, per_base in diffs.items():
            for call in CALLS:
                hits = [f"{b} {d[metric].short()}" for b, d in per_base.items()
                        if metric in d and d[metric].call == call]
                if hits:
                    groups[call].append(f"{setting} ({'; '.join(hits)})")
        if any(groups.values()):
            lines += [f"- {label}:"] + [f"  - {CALLS[c]}: {', '.join(v)}" for c, v in groups.items() if v]
    by_k = [line for setting, per_base in diffs.items()
            if (line := _best_baseline_at_k(setting, agg, per_base, n_tags[setting]))]
    if by_k:
        lines += ["- pass@k past k = 1, against the baseline with the best mean at each k:", *by_k]
    tagged = {s: t["ssft"]["nmi"][0] for s, t in agg.items() if "ssft" in t and "nmi" in t["ssft"] and n_tags[s] > 1}
    if tagged:
        follow = [f"{s} ({v:.2f})" for s, v in tagged.items() if v >= 0.9]
        rest = [f"{s} ({v:.2f})" for s, v in tagged.items() if v < 0.9]
        lines.append("- ssft's tags name the strategies (nmi >= 0.9): " + (", ".join(follow) or "nowhere")
                     + (f"; not quite or not at all: {', '.join(rest)}" if rest else ""))
    ends = [f"  - {s}: " + ", ".join(f"{m} {trend(g)}" for m, at in r.items() if (g := last_gains(at)))
            for s, r in runs.items() if any(last_gains(at) for at in r.values())]
    if ends:
        lines += ["- The end of each learning curve (cons@N over its last interval):", *ends]
    for (a, b), by_method in contrasts.items():
        parts = [f"{m} cons@N {d['cons@N'].short()} {SIGNS[d['cons@N'].call]}" for m, d in by_method.items()
                 if "cons@N" in d]
        if parts:
            lines.append(f"- {a} − {b}: " + "; ".join(parts))
    return [*lines, ""]


def _best_baseline_at_k(setting: str, agg: dict[str, dict[str, dict[str, tuple]]],
                        per_base: dict[str, dict[str, Difference]], n_tags: int) -> str:
    """ssft − the strongest baseline at each k of the setting (by mean pass@k), paired, in one line."""
    table = agg.get(setting, {})
    ks = sorted({int(k.split("@")[1]) for d in per_base.values() for k in d if k.startswith("pass@") and k != "pass@1"})
    parts = []
    for k in ks:
        means = {b: at_k(table[b], "pass", n_tags)[k][0] for b, d in per_base.items()
                 if f"pass@{k}" in d and k in at_k(table.get(b, {}), "pass", n_tags)}
        if means:
            best = max(means, key=lambda b: means[b])
            d = per_base[best][f"pass@{k}"]
            parts.append(f"k={k} {best} {d.short()} {CALLS[d.call].replace('ssft ', '')}")
    return f"  - {setting}: " + "; ".join(parts) if parts else ""


def _contrast_lines(contrasts: dict[tuple[str, str], dict[str, dict[str, Difference]]]) -> list[str]:
    """Each contrast of the study file: setting a − setting b, method by method, paired by seed and question."""
    lines = []
    for (a, b), by_method in contrasts.items():
        for m, diff in by_method.items():
            lines += [f"{a} − {b}, {m} (paired by seed and question):", ""]
            lines += [f"- {k}: {d}: {d.reading(a)}" for k, d in diff.items()] + [""]
    return ["## Contrasts", "", *lines] if lines else []


def _at_k_lines(table: dict[str, dict[str, tuple]], n_tags: int) -> list[str]:
    """pass@k and cons@k against k, where the setting sampled enough for k beyond N."""
    curves = {m: (at_k(ms, "pass", n_tags), at_k(ms, "cons", n_tags)) for m, ms in table.items()}
    ks = sorted({k for p, c in curves.values() for k in (*p, *c)})
    if len(ks) < 3:
        return []
    lines = ["", "pass@k / cons@k against k (k = N: pass@N / cons@N):", "",
             "| k | " + " | ".join(f"{m} pass@k | {m} cons@k" for m in curves) + " |",
             "|---|" + "---|---|" * len(curves)]
    for k in ks:
        lines.append(f"| {k} | " + " | ".join(f"{_fmt(p[k]) if k in p else '–'} | {_fmt(c[k]) if k in c else '–'}"
                                              for p, c in curves.values()) + " |")
    return lines


def _temperature_lines(table: dict[str, dict[str, tuple]]) -> list[str]:
    """Diversity against accuracy: each method greedy and at every sampled temperature (eval.temperatures)."""
    temps = sorted({t for ms in table.values() for k in ms if (t := temperature_of(k)) is not None})
    if not temps:
        return []
    lines = ["", "Temperature sweep (greedy = one generation per tag; coverage of N):", "",
             "| method | temperature | pass@1 | cons@N | coverage |", "|---|---|---|---|---|"]
    for m, ms in table.items():
        for label, suffix in [("greedy", "_greedy"), *((f"{t:g}", f"_t{t:g}") for t in temps)]:
            if f"pass@1{suffix}" in ms:
                lines.append(f"| {m} | {label} | " + " | ".join(_fmt(ms[k + suffix]) if k + suffix in ms else "–"
                                                                  for k in SWEEP_ROWS) + " |")
    return lines


def _dynamics_lines(paths: list[Path]) -> list[str]:
    """SSFT's matching over training: churn, assignment entropy and matched cost per epoch (over seeds), and
    the tag x strategy matrix of the first seed at its first, middle and last epoch."""
    from ssft.train.models import STATS_FILE

    found = {p: json.loads(f.read_text())["epochs"] for p in paths
             if (f := p / "models" / "ssft" / STATS_FILE).exists()}
    found = {p: r for p, r in found.items() if r}
    if not found:
        return []
    runs = list(found.values())
    epochs = min(len(r) for r in runs)
    lines = ["", "SSFT matching per epoch (mean ± std over seeds; churn: share of questions whose assignment "
             "changed since last seen):", "", "| epoch | step | churn | assignment entropy | matched cost |",
             "|---|---|---|---|---|"]
    for e in range(epochs):
        cols = [[r[e][k] for r in runs if r[e].get(k) is not None]
                for k in ("churn", "assignment_entropy", "mean_matched_cost")]
        lines.append(f"| {e} | {runs[0][e]['step']} | "
                     + " | ".join(_fmt(spread(c)) if c else "–" for c in cols) + " |")
    path, first = next(iter(found.items()))
    for e in sorted({0, epochs // 2, epochs - 1}):
        counts = first[e]["tag_source_counts"]
        sources = sorted({src for c in counts.values() for src in c})
        lines += ["", f"Tag x strategy, epoch {e} ({path.name}, question-steps):", "",
                  "| tag | " + " | ".join(sources) + " |", "|---|" + "---|" * len(sources)]
        lines += [f"| {t if t != '0' else 'shared'} | " + " | ".join(str(c.get(src, 0)) for src in sources) + " |"
                  for t, c in sorted(counts.items(), key=lambda kv: int(kv[0]))]
    return lines


COST_QUESTIONS = 32  # held-out questions `ssft costs` scores for the report (seconds per setting on a CPU)


def _cost_lines(paths: list[Path]) -> list[str]:
    """Where the first seed's ssft matching is decided, from ``ssft costs`` on held-out questions: the positions
    that carry a tenth of the margin or more, how firm it is, how many questions share one tag x strategy map."""
    from ssft.eval import costs

    cell = next((p for p in paths if (p / "models" / "ssft").is_dir() and (p / "params.yaml").exists()), None)
    if cell is None:
        return []
    tokens = config_mod.load(cell / "params.yaml").ssft.cost_tokens
    try:
        r = costs.analyse(cell / "models" / "ssft", {"held-out": cell / "data" / "traces" / "eval.parquet"},
                          COST_QUESTIONS, tokens)["splits"]["held-out"]
    except (UserError, FileNotFoundError) as e:  # held-out questions without traces (real data): nothing to score
        log.info("%s: no matching costs in the report (%s)", cell, e)
        return []
    top = [p for p in r["positions"] if (p["margin_share"] or 0) >= 0.1]
    m = r["margin"]
    where = ", ".join(f"{p['position']} ({p['margin_share']:.0%}, tag spread {p['tag_spread']:.2f} nats)" for p in top)
    return ["", f"Where the matching is decided (`ssft costs`, {cell.name}, {r['questions']} held-out questions, the "
            f"first {tokens} trace tokens): " + (f"the margin comes from position {where}" if top else
                                                 "no position carries a tenth of the margin") + "; median margin "
            f"{m['median']:.3f} nats, {m['undecided']:.0%} of questions below {costs.UNDECIDED}; "
            f"{r['agreement']:.0%} on the commonest tag x strategy map."]


def _tags_and_ks(paths: list[Path]) -> tuple[int, tuple[int, ...]]:
    """A setting's N (ssft.num_tags) and its eval.ks, from the params its cells ran with."""
    for d in paths:
        if (d / "params.yaml").exists():
            cfg = config_mod.load(d / "params.yaml")
            return cfg.ssft.num_tags, tuple(cfg.eval.ks)
    return 1, ()
