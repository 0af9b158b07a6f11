"""The environment the pipeline runs in, in one place: offline defaults, where the local MLflow store lives,
and the variables that link a Prefect flow run, its stages and their MLflow runs.

Python reads it directly (the CLI, the flow, the tests); the shell gets the same values from
``python -m ssft.env`` (``scripts/env.sh`` evaluates its output). Imports nothing heavy: it runs before
huggingface_hub reads ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# Nothing is ever downloaded and nothing phones home; a user's explicit setting still wins.
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "TOKENIZERS_PARALLELISM": "false",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "DVC_NO_ANALYTICS": "1", "ITERATIVE_DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}

# The same numbers on every x86 CPU: torch's CPU kernels and MKL's BLAS both pick a code path for the CPU they
# find (AVX-512 here, AVX2 elsewhere), and their float rounding differs, which training amplifies (each of the
# two alone changes a trained model's weights on this machine). Pinning both to AVX2, which every x86 CPU of
# the last decade has, makes a run's outputs depend on the code and params only. Read when torch loads.
REPRODUCIBLE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}

PIPELINE_RUN_ID = "SSFT_PIPELINE_RUN_ID"    # the Prefect flow run a stage belongs to ("manual" outside a flow)
PIPELINE_RUN_URL = "SSFT_PIPELINE_RUN_URL"  # its page in the Prefect UI
MLFLOW_UI = "SSFT_MLFLOW_UI"                # where the MLflow UI answers, for links (`make up` sets it)
PARENT_RUN_ID = "SSFT_PARENT_RUN_ID"        # an MLflow run the stages' runs nest under (a study's cell)


def stage_parallelism(requested: int, threads: int) -> int:
    """Stages to run at once: ``requested`` (``pipeline.parallel``), or 0 = what the cores allow when each
    stage's torch uses ``threads`` of them (``train.threads``; 0 = all cores, so one at a time)."""
    if requested:
        return requested
    return max(1, (os.cpu_count() or 1) // threads) if threads else 1


def with_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the offline and reproducibility defaults filled in where it does not set them."""
    return {**OFFLINE, **REPRODUCIBLE, **environ}


def apply() -> None:
    """The offline and reproducibility defaults into this process's environment (explicit settings win); before
    torch is imported, or its kernels keep the code path they already chose."""
    for key, value in {**OFFLINE, **REPRODUCIBLE}.items():
        os.environ.setdefault(key, value)


def store_dir(root: Path) -> Path:
    """The local MLflow store of a project: ``<root>/mlruns`` (database ``mlflow.db``, ``artifacts/``)."""
    return Path(root).resolve() / "mlruns"


def store_uri(root: Path) -> str:
    return f"sqlite:///{store_dir(root) / 'mlflow.db'}"


def artifact_root(root: Path) -> Path:
    return store_dir(root) / "artifacts"


DVC_LOCK = "dvc.lock"  # DVC's record of each stage's deps and outputs, beside dvc.yaml


def git_commit(root: Path) -> str:
    """The checkout's commit, ``-dirty`` when tracked source differs from it; ``none`` outside git. What DVC
    writes does not count (see ``dvc_managed``): an earlier stage's ``dvc commit`` rewrites dvc.lock and its
    outputs without changing the code a run is reproduced from."""
    try:
        head = _git(root, "rev-parse", "HEAD")
        if head.returncode != 0:
            return "none"
        excluded = [f":(exclude,glob){pattern}" for pattern in dvc_managed(root)]
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "none"


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)


def dvc_managed(root: Path) -> list[str]:
    """Glob patterns (relative to ``root``) of what DVC writes: dvc.lock, ``*.dvc`` files, and the top-level
    folders its stages' outputs live in as dvc.lock records them (data/, models/, results/ here)."""
    import yaml  # only here: the rest of this module runs before anything heavy is imported

    patterns = [DVC_LOCK, "**/*.dvc"]
    try:
        stages = (yaml.safe_load((Path(root) / DVC_LOCK).read_text()) or {}).get("stages", {})
        tops = {Path(out["path"]).parts[0] for stage in stages.values() for out in stage.get("outs", [])}
    except (OSError, yaml.YAMLError, AttributeError, KeyError, TypeError, IndexError):
        return patterns  # no (or an unreadable) dvc.lock: no outputs to leave out
    return patterns + [f"{top}/**" for top in sorted(tops)]


def shell(root: Path) -> str:
    """``export`` lines for the shell: the offline defaults and the local store (already-set values win)."""
    values = {**OFFLINE, **REPRODUCIBLE, "MLFLOW_TRACKING_URI": store_uri(root),
              "SSFT_MLFLOW_ARTIFACTS": str(artifact_root(root))}
    return "\n".join(f'export {k}="${{{k}:-{v}}}"' for k, v in values.items())


if __name__ == "__main__":
    print(shell(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()))
