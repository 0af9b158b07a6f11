"""A local SQLite MLflow store opened by several stages at once (the flow's train stages side by side)."""

import fcntl
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import TINY

from ssft import config, env
from ssft.tracking.runs import Tracker, first_use, tracking_uri


def test_a_new_sqlite_store_is_opened_by_one_process_at_a_time(tmp_path: Path) -> None:
    """While one process holds the store's first use, another waits (two migrating one new store at once: alembic's
    "table _alembic_tmp_... already exists"); it goes on once the first is done. Servers are not locked."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    inside = tmp_path / "inside"
    code = (f"from pathlib import Path\nfrom ssft.tracking.runs import first_use\nprint('ready', flush=True)\n"
            f"with first_use({uri!r}):\n    Path({str(inside)!r}).touch()")
    with first_use(uri):
        other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert other.stdout is not None and other.stdout.readline().strip() == "ready"  # imports done
        time.sleep(2)
        assert not inside.exists(), "the second process went through while the first held the store"
    assert other.wait(timeout=60) == 0 and inside.exists()
    lock = tmp_path / "mlruns" / ".mlflow.db.init.lock"
    with open(lock) as f:  # released: nobody holds it now
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with first_use("http://127.0.0.1:5000"):
        pass


def test_a_tracker_does_not_send_the_stages_it_starts_to_its_own_store(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that opened workspace A's store (the flow's links at the end of a run, a study) then starts a
    stage in workspace B: the stage logs to B's store. mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, so B's
    stages logged to A's store (CI: the flow test found no experiment in its own store after an earlier test)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = config.from_dict(TINY)
    a, b = tmp_path / "a", tmp_path / "b"
    assert Tracker(cfg, a).experiment_id
    assert mlflow.get_tracking_uri() == env.store_uri(a), "this process logs to A's store"
    assert tracking_uri(cfg, b) == env.store_uri(b), "a stage in B logs to B's store"
