"""Writing a file so a crash never leaves it half written: a temporary file beside it, fsync, then a rename."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

TMP_SUFFIX = ".supervisor-tmp"


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file (keeps its mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    if path.exists():
        shutil.copymode(path, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write`` for UTF-8 text."""
    atomic_write(path, text.encode("utf-8"))
