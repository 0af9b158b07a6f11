"""How things are named and identified in MLflow: metric names, the experiment and the registered model of
a dataset, and the DVC hash of the training data (lineage). Runs and the registry both read them here."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ssft.config import Config


def metric_name(key: str) -> str:
    return key.replace("@", "_at_")


def experiment_name(cfg: Config) -> str:
    return cfg.tracking.experiment or f"ssft-{mlflow_safe(cfg.dataset_name)}"


def registered_name(cfg: Config) -> str:
    return cfg.tracking.model_name or f"ssft-{mlflow_safe(cfg.dataset_name)}"


def mlflow_safe(name: str) -> str:
    """Letters, digits and - _ . / only (what MLflow accepts in metric names; tidy in experiment names too)."""
    return re.sub(r"[^A-Za-z0-9_./-]+", "-", name).strip("-") or "data"


def dvc_data_hash(root: Path, path: str = "data/traces") -> str:
    """The md5 DVC recorded for the trace dataset in dvc.lock ('none' outside a DVC pipeline)."""
    lock = root / "dvc.lock"
    if not lock.exists():
        return "none"
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return str(out.get("md5", "none"))
    return "none"
