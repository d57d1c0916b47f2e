"""Process identity: (pid, start time) tells a live owner of a run or reservation from a reused pid."""

from __future__ import annotations

import functools
import os


def process_identity(pid: int | None = None) -> tuple[int, float]:
    """(pid, start time): together they tell a live owner from a reused pid."""
    if pid is None:
        return _own_identity(os.getpid())  # cached per pid: it is on every reservation's path
    return _identity(pid)


@functools.lru_cache(maxsize=4)
def _own_identity(pid: int) -> tuple[int, float]:
    return _identity(pid)


def _identity(pid: int) -> tuple[int, float]:
    import psutil

    try:
        return pid, psutil.Process(pid).create_time()
    except psutil.Error:
        return pid, 0.0


def owner_alive(pid: int, started: float) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return bool(abs(proc.create_time() - started) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
