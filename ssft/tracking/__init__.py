"""MLflow, and only here: runs and lineage (``runs``), the model registry (``registry``), figures (``figures``);
``null`` is the do-nothing tracker used when tracking is off (it imports no MLflow)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # ``from ssft.tracking import Tracker`` loads MLflow only when asked
    if name == "Tracker":
        from ssft.tracking.runs import Tracker

        return Tracker
    raise AttributeError(name)


__all__ = ["Tracker"]
