"""`ssft` imports on a box that has only torch, transformers and scipy: Prefect, MLflow and DVC stay at the
edges (flows/, ssft/tracking/), and the CLI works with tracking off."""

import subprocess
import sys
from pathlib import Path

BLOCK = """
import sys
for name in ('prefect', 'mlflow', 'dvc'):
    sys.modules[name] = None  # import raises ImportError, find_spec says "not installed"
import importlib, pkgutil, ssft
for m in pkgutil.walk_packages(ssft.__path__, 'ssft.'):
    if not m.name.startswith('ssft.tracking'):
        importlib.import_module(m.name)
from ssft.cli import main
sys.exit(main(['--params', sys.argv[1], '--set', 'tracking.enabled=false', 'traces', '--out', sys.argv[2]]))
"""


def test_ssft_imports_without_prefect_mlflow_dvc(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", BLOCK, str(root / "params.yaml"), str(tmp_path / "d")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "d" / "train.parquet").exists()


TRAIN_WITHOUT_DATASETS = """
import sys
for name in ('prefect', 'mlflow', 'dvc', 'datasets'):
    sys.modules[name] = None
from ssft.cli import main
code = main(['--params', sys.argv[1], 'train', '--method', 'ssft', '--traces', sys.argv[2], '--models', sys.argv[3],
             '--checkpoints', sys.argv[3] + '/ck'])
assert 'datasets' not in sys.modules or sys.modules['datasets'] is None
sys.exit(code)
"""


def test_training_runs_without_datasets(tmp_path: Path, trace_dir: Path) -> None:
    """A GPU image has torch and transformers but not datasets: `ssft train` must not need it."""
    import yaml
    from conftest import TINY

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "max_steps": 2},
                                                          "tracking": {"enabled": False}}))
    res = subprocess.run([sys.executable, "-c", TRAIN_WITHOUT_DATASETS, str(tmp_path / "params.yaml"), str(trace_dir),
                          str(tmp_path / "m")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "m" / "ssft" / "model.safetensors").exists()
