"""What each pipeline stage's result depends on: its source code and its ``params.yaml`` keys. One list,
read by all three things that decide "is this result still current?":

    dvc.yaml          each stage's ``deps`` (code) and ``params``: a test checks they equal these lists
    the trainer       the checkpoint fingerprint (resume only a run of the same code, params and data)
    the study         a cell's key (a finished cell is reused while its code and params are unchanged)

A second test walks each stage's imports and checks that every ``ssft`` module the stage can execute is
covered by its ``code``, so a new import cannot silently escape the list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssft.config import Config, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
# The foundation every stage runs on: typed params, errors, atomic writes.
BASE = ("ssft/config.py", "ssft/errors.py", "ssft/atomic.py")
# train.* keys that do not change the trained model: what runs, how often it saves and logs, CPU threads.
BOOKKEEPING = ("methods", "save_steps", "logging_steps", "threads")


@dataclass(frozen=True)
class StageInputs:
    code: tuple[str, ...]    # files or packages (relative to the project root) whose edit changes the result
    params: tuple[str, ...]  # params.yaml sections or dotted keys the result depends on


def _train_params() -> tuple[str, ...]:
    keys = tuple(f"train.{f.name}" for f in dataclasses.fields(TrainConfig) if f.name not in BOOKKEEPING)
    return ("seed", "task", "model", "ssft", *keys)


STAGES: dict[str, StageInputs] = {
    "traces": StageInputs(code=("ssft/data", "ssft/generation", *BASE),
                          params=("seed", "data", "task", "traces", "ssft.num_tags")),
    "train": StageInputs(code=("ssft/train", "ssft/data/traces.py", "ssft/data/selection.py", "ssft/data/checkers.py",
                               "ssft/data/tasks",
                               "ssft/stages.py", *BASE),
                         params=_train_params()),
    "evaluate": StageInputs(code=("ssft/eval/evaluate.py", "ssft/eval/metrics.py", "ssft/eval/classify.py",
                                  "ssft/generation", "ssft/data/tasks", "ssft/data/checkers.py",
                                  "ssft/data/traces.py", "ssft/data/selection.py", "ssft/train/forking.py",
                                  "ssft/train/models.py",
                                  "ssft/train/methods.py", "ssft/train/precision.py", "ssft/train/rollouts.py",
                                  "ssft/data/grading.py",
                                  # methods.SSFT picks tags with these (never at evaluation, but importable)
                                  "ssft/train/matching.py", "ssft/train/loss.py", *BASE),
                            params=("seed", "data.source", "data.checker", "task", "eval")),
    "gfpo": StageInputs(code=("ssft/train", "ssft/generation", "ssft/data/grading.py", "ssft/data/traces.py",
                              "ssft/data/selection.py",
                              "ssft/data/checkers.py", "ssft/data/tasks", *BASE),
                        params=("seed", "task", "data.source", "data.checker", "gfpo", "model.save_dtype",
                                "eval.batch_size")),
}


def code_files(stage: str, root: Path = ROOT) -> list[Path]:
    """The source files of a stage's ``code``, in a stable order (packages expanded to their ``.py`` files)."""
    files: set[Path] = set()
    for entry in STAGES[stage].code:
        p = root / entry
        files |= set(p.rglob("*.py")) if p.is_dir() else {p}
    return sorted(f for f in files if f.exists())


def params_of(stage: str, cfg: Config) -> dict[str, Any]:
    """The stage's params, read from ``cfg``: what dvc.yaml records in dvc.lock for it."""
    full = cfg.to_dict()
    out: dict[str, Any] = {}
    for key in STAGES[stage].params:
        node: Any = full
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return out


def code_digest(stages: tuple[str, ...], root: Path = ROOT) -> str:
    """A hash of the source files the given stages run (each file once, named, in a stable order)."""
    h = hashlib.sha256()
    for f in sorted({f for s in stages for f in code_files(s, root)}):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def params_digest(stage: str, cfg: Config) -> str:
    return hashlib.sha256(json.dumps(params_of(stage, cfg), sort_keys=True, default=str).encode()).hexdigest()
