"""Hosting the runtime inside the TUI process: its own thread, its own asyncio loop.

The runtime writes the ledger synchronously and runs gates, scripted answers and model calls on its loop. Giving
it a loop of its own keeps all of that off the UI's loop, so a slow disk or a busy SQLite lock never freezes the
screen. The UI reaches the runtime only through ``call`` (decisions are scheduled onto the runtime's loop) and
hears from it only through the event bus (whose callback posts thread-safe Textual messages).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supervisor.runtime.runtime import Runtime
    from supervisor.runtime.scheduler import Scheduler


class RuntimeHost:
    """Runs ``scheduler.run_forever`` (or just the runtime, when there is no scheduler) until ``stop``."""

    def __init__(self, runtime: Runtime, scheduler: Scheduler | None = None) -> None:
        self.runtime = runtime
        self.scheduler = scheduler
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.finished = threading.Event()
        self._stop: asyncio.Event | None = None
        self._stop_requested = False

    def run(self) -> None:
        """The thread's body: blocks until the loop has stopped and every run has been cancelled and cleaned up."""
        try:
            asyncio.run(self._main())
        finally:
            self.ready.set()
            self.finished.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        self.ready.set()
        from supervisor.gateway.server import hosted_gateway

        try:
            async with hosted_gateway(self.runtime):  # [gateway] in the config: served on this loop too
                if self.scheduler is not None:
                    await self.scheduler.run_forever(self._stop)
                else:
                    await self._stop.wait()
        finally:
            # Cancels runs started by "run now" (the scheduler's own were cancelled by its shutdown); each
            # cancelled run restores its workspace and settles its reservations before this returns.
            await self.runtime.aclose()

    def call(self, fn: Callable[..., Any], *args: Any, on_error: Callable[[BaseException], None]) -> bool:
        """Run ``fn(*args)`` on the runtime's loop; errors go to ``on_error`` (called on the runtime's thread)."""
        if not self.ready.wait(timeout=5.0) or self.loop is None or self.finished.is_set():
            return False

        def invoke() -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - reported to the user, never swallowed
                on_error(exc)

        try:
            self.loop.call_soon_threadsafe(invoke)
        except RuntimeError:  # the loop closed between the check and the call
            return False
        return True

    def stop(self) -> None:
        """Ask the loop to wind down (thread-safe; idempotent)."""
        self._stop_requested = True
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and not self.finished.is_set():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass  # already closed: nothing left to stop

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)
