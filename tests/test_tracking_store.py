"""A local SQLite MLflow store opened by several stages at once (the flow's train stages side by side)."""

import fcntl
import subprocess
import sys
import time
from pathlib import Path

from ssft.tracking.runs import first_use


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
