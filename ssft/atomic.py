"""Atomic writes: a finished output appears whole or not at all (a sibling temp, then a rename)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def temp_path(path: Path) -> Path:
    """The sibling a writer fills before :func:`os.replace` moves it into place."""
    return path.with_name(path.name + ".tmp")


def write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def replace_dir(tmp: Path, out: Path) -> None:
    """Swap a finished directory into place (the old one is removed only after the new one is complete)."""
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
