"""The do-nothing tracker (``tracking.enabled: false``, or a rank other than 0): the same calls as
:class:`ssft.tracking.runs.Tracker`, so callers never branch on whether tracking is on. Imports no MLflow."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class NullRun:
    def callbacks(self) -> list:
        return []

    def finish(self, model_dir: Path, stats: dict) -> None:
        pass


class NullRLRun:
    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def finish(self, model_dir: Path, stats: dict) -> None:
        pass


class NullTracker:
    @contextmanager
    def training_run(self, method: str, train_file: Path, world_size: int = 1) -> Iterator[NullRun]:
        yield NullRun()

    @contextmanager
    def rl_run(self, method: str, base_model_dir: Path) -> Iterator[NullRLRun]:
        yield NullRLRun()

    def log_curve(self, method: str, model_dir: Path, rows: list[dict]) -> None:
        pass

    def log_eval(self, method: str, model_dir: Path, results_dir: Path, prefix_forced: bool = False) -> None:
        pass

    def log_comparison(self, methods: list[str], models_dir: Path, plots: list[Path]) -> None:
        pass

    def open_run(self, name: str, parent: str | None = None, tags: dict[str, str] | None = None) -> str:
        return ""

    def close_run(self, run_id: str, metrics: dict[str, float] | None = None, files: Sequence[Path] = (),
                  failed: bool = False) -> None:
        pass

    def register(self, model_dir: Path, metrics: dict[str, float], question: str) -> dict[str, Any]:
        return {"registered": False}
