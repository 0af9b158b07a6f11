"""Shared fixtures: offline HF, a tiny config, a tiny trace dataset on disk."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")

from pathlib import Path

import pytest

from ssft import config
from ssft.data import traces
from ssft.data.tasks import get_task

TINY = {
    "seed": 0,
    "task": {"name": "add4", "marked": True},
    "traces": {"train_questions": 32, "eval_questions": 8},
    "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_length": 64},
    "ssft": {"num_tags": 4, "cost_tokens": 12},
    "train": {"max_steps": 8, "questions_per_step": 4, "warmup_steps": 2, "save_steps": 4, "logging_steps": 2,
              "lr": 0.003},
    "eval": {"samples": 8, "ks": [8], "max_new_tokens": 40},
}


def tiny_cfg(**overrides: object) -> config.Config:
    """TINY with dotted overrides, e.g. tiny_cfg(**{"train.max_steps": 20})."""
    import copy

    raw = copy.deepcopy(TINY)
    for dotted, value in overrides.items():
        config.set_dotted(raw, dotted, value)
    return config.from_dict(raw)


@pytest.fixture(autouse=True)
def _hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf"))


@pytest.fixture
def cfg() -> config.Config:
    return tiny_cfg()


@pytest.fixture
def trace_dir(tmp_path: Path, cfg: config.Config) -> Path:
    task = get_task("add4", marked=True)
    splits = traces.synthetic_splits(task, cfg.traces.train_questions, cfg.traces.eval_questions, cfg.seed)
    for split, rows in splits.items():
        traces.write(rows, tmp_path / "data" / f"{split}.parquet")
    return tmp_path / "data"


ROOT = Path(__file__).resolve().parents[1]


def copy_project(dst: Path, params: dict | None = None) -> Path:
    """The project in a new git repo at ``dst`` (as the smoke deployment's scratch copy), with TINY params
    (plus ``params``) so a whole pipeline runs in seconds."""
    import yaml

    from flows.pipeline import copy_project as copy_files

    copy_files(ROOT, dst)
    raw = yaml.safe_load((dst / "params.yaml").read_text())
    for section, values in {**TINY, **(params or {})}.items():
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    (dst / "params.yaml").write_text(yaml.safe_dump(raw))
    return dst


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this venv's tools first, offline, quiet."""
    import sys

    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", **extra}


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for every flow test of the run (startup raised to 120 s for slow CI)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
