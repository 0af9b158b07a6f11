"""A stage dies with whatever started it: ``dvc repro``, ``ssft study``, the Prefect flow.

Killing the parent alone (``kill <pid>``, a cancelled flow, a CI timeout; a terminal's Ctrl-C reaches the whole
foreground group already) used to leave ``ssft train`` running on its own, writing outputs nobody waits for.
Two mechanisms, both Linux's ``PR_SET_PDEATHSIG`` (the kernel signals a process when its parent dies, SIGKILL
included):

- ``die_with_dvc()``: the CLI under ``dvc repro`` (DVC names every stage's command in ``DVC_STAGE``). DVC runs a
  stage through ``$SHELL -c``, which execs a single command, so DVC is the parent.
- ``kept(cmd, parent)``: a command wrapped in a keeper (a bare interpreter) that starts it in a process group
  of its own and stops that whole group (TERM, 10 s, KILL) when the parent dies or the keeper is signalled: for
  commands that start children of their own (``dvc repro`` under the flow) or are not ``ssft`` (a study's
  stages are, but the keeper also covers their DataLoader workers).

A process started under ``nohup`` asked to outlive its parent: it is left alone.
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DVC_STAGE = "DVC_STAGE"  # set by DVC for every stage command (dvc/stage/run.py)


def _pdeathsig(sig: int) -> bool:
    """Ask the kernel for ``sig`` when this process's parent dies; False where that cannot be asked."""
    if sys.platform != "linux":
        return False
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig) == 0


def die_with_dvc() -> None:
    """Under ``dvc repro``: SIGTERM when DVC dies (no-op elsewhere, or under ``nohup``). A DVC that died before
    this line leaves the stage reparented: it exits at once."""
    if DVC_STAGE not in os.environ or signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        return
    parent = os.getppid()
    if _pdeathsig(signal.SIGTERM) and (parent == 1 or not _alive(parent)):
        sys.exit(128 + signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


KEEPER = """
import ctypes, os, signal, subprocess, sys
stage = None
def stop(signum, frame):
    if stage is not None:
        try:
            os.killpg(stage.pid, signal.SIGTERM)
            stage.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(stage.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(128 + signum)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, stop)
if sys.platform == "linux":
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):  # the parent died before that
    sys.exit(143)
stage = subprocess.Popen(sys.argv[2:], process_group=0)
code = stage.wait()
sys.exit(code if code >= 0 else 128 - code)
"""


def kept(cmd: list[str], parent: int | None = None) -> list[str]:
    """``cmd`` run by a keeper that stops its process group when ``parent`` (default: this process) dies. Start
    the result from a thread that waits for it: PR_SET_PDEATHSIG follows the thread that forked the keeper."""
    return [sys.executable, "-c", KEEPER, str(parent or os.getpid()), *cmd]
