"""Learning curves: every training snapshot (``eval.every_steps``, :mod:`ssft.train.snapshots`) evaluated on a
cheap set, so a budget at which a method has not converged shows as a rising curve, not as a verdict.

    ssft evaluate --method ssft --curve      # -> results/curves/ssft.jsonl, one line per step

The cheap set: the first ``eval.curve_questions`` evaluation questions, one greedy generation per tag and
``eval.curve_samples`` sampled ones per question, no temperature sweep and no tag-free inference; the
single-sample tag is chosen on the validation questions at each step, as for the final model. The model the
pipeline saved (the last step) closes the curve when no snapshot has its step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

from ssft import atomic
from ssft.config import Config
from ssft.data import traces
from ssft.eval.evaluate import evaluate
from ssft.train import snapshots
from ssft.train.models import STATS_FILE

log = logging.getLogger(__name__)
CURVES_DIR = "curves"  # results/curves/<method>.jsonl


def cheap(cfg: Config) -> Config:
    """The curve's evaluation settings: few samples, no sweep, no tag-free inference, ks that fit."""
    e = cfg.eval
    return dataclasses.replace(cfg, eval=dataclasses.replace(
        e, samples=e.curve_samples, temperatures=[], self_tag=False, ks=[k for k in e.ks if k <= e.curve_samples]))


def final_step(model_dir: Path) -> int:
    """The step the saved model was trained to (its training statistics)."""
    return int(json.loads((Path(model_dir) / STATS_FILE).read_text())["steps"])


def points(model_dir: Path, ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, model directory) along training: the snapshots, then the saved model unless a snapshot has its
    step."""
    found = snapshots.listed(ckpt_dir)
    last = final_step(model_dir)
    return found if any(step == last for step, _ in found) else [*found, (last, Path(model_dir))]


def first_questions(eval_file: Path, n: int, out: Path) -> Path:
    """The rows of the first ``n`` questions of ``eval_file`` (file order), written to ``out``: the cheap set."""
    rows = traces.read_rows(eval_file)
    wanted = set(list(dict.fromkeys(str(r["question_id"]) for r in rows))[:n])
    traces.write([r for r in rows if str(r["question_id"]) in wanted], out)
    return out


def evaluate_curve(cfg: Config, model_dir: Path, ckpt_dir: Path, eval_file: Path, out_file: Path,
                   train_file: Path | None = None, val_file: Path | None = None) -> list[dict]:
    """Evaluate each point of the curve; write ``out_file`` (JSON lines ``{"step": k, <metrics>}``) atomically."""
    settings = cheap(cfg)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ssft-curve-") as tmp:
        subset = first_questions(eval_file, cfg.eval.curve_questions, Path(tmp) / "eval.parquet")
        for step, model in points(model_dir, ckpt_dir):
            result = evaluate(settings, model, subset, Path(tmp) / f"step-{step}", train_file, val_file)
            rows.append({"step": step, **result})
            log.info("curve %s step %d: cons@N %.3f, pass@1_val_tag %.3f, coverage %.2f", model_dir.name, step,
                     result["cons@N"], result.get("pass@1_val_tag", result["pass@1"]), result["coverage"])
    atomic.write_text(Path(out_file), "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    return rows


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
