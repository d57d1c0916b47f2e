"""The ``supervisor daemon`` process: one per data dir (a file lock), running the scheduler until SIGTERM/SIGINT.

The scheduler itself lives in ``supervisor.runtime.scheduler`` (the TUI runs the same loop in-process when no
daemon is up); ``daemon_status`` tells other processes whether a daemon is alive for this data dir.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from supervisor.clock import parse_iso, utcnow
from supervisor.config import Config
from supervisor.errors import SupervisorError
from supervisor.ledger import Ledger
from supervisor.runtime.runtime import Runtime
from supervisor.runtime.scheduler import Scheduler

STALE_AFTER_S = 15.0


class DaemonRunning(SupervisorError):
    exit_code = 2


def daemon_status(ledger: Ledger, now: datetime | None = None) -> dict[str, Any] | None:
    """The running daemon for this data dir (pid alive, heartbeat fresh), or None."""
    info = ledger.daemon_info()
    if info is None:
        return None
    import psutil

    now = now or utcnow()
    fresh = (now - parse_iso(info["heartbeat_at"])).total_seconds() < STALE_AFTER_S
    alive = psutil.pid_exists(int(info["pid"]))
    return info if (fresh and alive) else None


class DaemonLock:
    """One daemon per data dir: an exclusive, non-blocking file lock held for the daemon's life."""

    def __init__(self, home: Path) -> None:
        self.path = home / "daemon.lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the daemon's whole life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DaemonRunning(
                f"a supervisor daemon is already running for {self.path.parent} (pid {holder})",
                "stop it first (SIGTERM), or point SUPERVISOR_HOME at another data dir",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def run_daemon(
    config: Config,
    runtime: Runtime,
    home: Path,
    *,
    tick_s: float = 1.0,
    force_offline: bool = False,
    on_start: Callable[[], None] | None = None,
) -> int:
    """The ``supervisor daemon`` process: lock, schedule, stop cleanly on SIGTERM/SIGINT."""
    lock = DaemonLock(home)
    lock.acquire()  # holding the lock means any daemon row left in the ledger is stale; register() replaces it
    if on_start is not None:
        on_start()
    scheduler = Scheduler(runtime, config.path, tick_s=tick_s, force_offline=force_offline)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        from supervisor.gateway.server import hosted_gateway

        try:
            async with hosted_gateway(runtime):
                await scheduler.run_forever(stop)
        finally:
            await runtime.aclose()

    try:
        asyncio.run(main())
    finally:
        lock.release()
    return 0


__all__ = ["DaemonLock", "DaemonRunning", "daemon_status", "run_daemon"]
