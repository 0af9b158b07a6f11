"""Atomic writes: a finished output appears whole or not at all (a sibling temp, then a rename)."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ssft.errors import UserError


def temp_path(path: Path) -> Path:
    """The sibling a writer fills before :func:`os.replace` moves it into place."""
    return path.with_name(path.name + ".tmp")


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def naming(path: Path) -> Iterator[None]:
    """An OSError that names no file (pyarrow's, a full disk inside a library) names ``path``:
    ``[Errno 28] No space left on device: 'data/traces.tmp/train.parquet'``."""
    try:
        yield
    except OSError as e:
        if e.filename is not None or e.errno is None:
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(path)) from e


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Write one file: the block fills the yielded sibling temp, which replaces ``path`` when the block ends;
    when it raises (a full disk), the temp is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with naming(path):
            yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


@contextmanager
def filling(out: Path) -> Iterator[Path]:
    """Write a directory as one unit: the block fills the yielded sibling ``.tmp`` (a stale one, left by a
    killed run, is removed first), which replaces ``out`` whole when the block ends; when it raises (a full
    disk), the ``.tmp`` is removed and ``out`` is untouched."""
    out = Path(out)
    tmp = temp_path(out)
    shutil.rmtree(tmp, ignore_errors=True)  # never mixed into this run
    try:
        with naming(out):
            tmp.mkdir(parents=True)
            yield tmp
            replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(tmp: Path, out: Path) -> None:
    """Swap a finished directory into place (the old one is removed only after the new one is complete)."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """One writer at a time for ``path`` (an output or checkpoint directory): a second writer fails at once,
    naming the path and the process that holds it, instead of both writing. The lock is ``flock`` on a
    hidden sibling file, so a killed writer never leaves a stale lock behind."""
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UserError(f"{path} is being written by another process (pid {holder}); wait for it to finish "
                        "or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
