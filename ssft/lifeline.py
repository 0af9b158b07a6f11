"""A stage dies with whatever started it: ``dvc repro``, ``ssft study``, the Prefect flow.

Killing the parent alone (``kill <pid>``, a cancelled flow, a CI timeout; a terminal's Ctrl-C reaches the whole
foreground group already) used to leave ``ssft train`` running on its own, writing outputs nobody waits for.
Two mechanisms, both Linux's ``PR_SET_PDEATHSIG`` (the kernel signals a process when its parent dies, SIGKILL
included):

- ``die_with_dvc()``: the CLI under ``dvc repro`` (DVC names every stage's command in ``DVC_STAGE``). DVC runs a
  stage through ``$SHELL -c`` (``/bin/sh`` where ``SHELL`` is unset, as on CI). bash execs a single command, so
  DVC is the parent; dash (Debian's ``/bin/sh``) does not: the shell is the parent, DVC the grandparent, and a
  watcher thread stops the stage once the shell loses DVC (it is reparented when DVC dies).
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
import threading
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DVC_STAGE = "DVC_STAGE"  # set by DVC for every stage command (dvc/stage/run.py)
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish", "busybox"})
WATCH_S = 1.0  # how often the watcher looks at the shell's parent


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
    if _comm(parent) in SHELLS:  # a shell that did not exec the stage: DVC is its parent
        dvc = _ppid(parent)
        if dvc in (None, 1):
            sys.exit(128 + signal.SIGTERM)
        threading.Thread(target=_watch, args=(parent, dvc), name="die-with-dvc", daemon=True).start()


def _comm(pid: int) -> str:
    """The process's name ('' where it cannot be read: not Linux, or gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _ppid(pid: int) -> int | None:
    """The parent of ``pid`` (None where it cannot be read). The name in ``stat`` may hold spaces and parentheses:
    the fields after the last ')' are fixed."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _watch(shell: int, dvc: int) -> None:
    """SIGTERM this process once ``shell`` is no longer ``dvc``'s child (DVC died; the shell was reparented).
    The shell dying itself is PR_SET_PDEATHSIG's."""
    while _ppid(shell) == dvc:
        time.sleep(WATCH_S)
    os.kill(os.getpid(), signal.SIGTERM)


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
