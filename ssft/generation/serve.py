"""A local OpenAI-compatible server for a model directory: ``transformers serve`` as a subprocess (the tests and
``bench/bench_generation.py`` start it; users serve with vLLM, see README "Generation backends").

    with transformers_serve(Path("models/ssft")) as url:   # http://127.0.0.1:<free port>/v1
        ...

It binds 127.0.0.1 only, waits for ``/health`` and stops the server (TERM, then KILL) when the block ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ssft.errors import UserError

STARTUP_S = 180.0  # a loaded 2-core machine took ~5 s for a tiny model; the model loads before /health answers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _executable() -> str:
    """This environment's ``transformers`` command (the one installed beside this Python), else PATH's."""
    here = Path(sys.executable).parent / "transformers"
    found = str(here) if here.exists() else shutil.which("transformers")
    if not found:
        raise UserError("transformers serve: no `transformers` command; pip install 'transformers[serving]'")
    return found


@contextmanager
def transformers_serve(model_dir: Path, continuous_batching: bool = False,
                       env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Serve ``model_dir`` on a free local port for the block; yields the base URL (``.../v1``)."""
    port = free_port()
    cmd = [_executable(), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
           "--continuous-batching" if continuous_batching else "--no-continuous-batching"]
    # Its log goes to a file: it warns once per request, which would fill (and block on) an unread pipe.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env=dict(env) if env is not None else dict(os.environ),
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            _wait_healthy(proc, f"http://127.0.0.1:{port}/health", log)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(proc: subprocess.Popen, health: str, log: IO[str]) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            err = log.read()[-2000:]
            raise UserError(f"transformers serve exited with {proc.returncode} before answering: {err.strip()}")
        try:
            with urllib.request.urlopen(health, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise UserError(f"transformers serve: {health} did not answer within {STARTUP_S:.0f} s")
