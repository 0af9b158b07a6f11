"""MLflow, and only here: runs and lineage (``runs``), the model registry (``registry``), figures (``figures``)."""

from ssft.tracking.runs import Tracker

__all__ = ["Tracker"]
