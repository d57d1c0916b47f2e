"""Shared pieces for the TUI tests: apps over a hosted runtime or a fixed ledger, and waiting for conditions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual.pilot import Pilot
from textual.widgets import RichLog

from supervisor.runtime.scheduler import Scheduler
from supervisor.tui.app import SupervisorApp
from tests.helpers import Harness
from tests.tui.seed import NOW, Seeded, fake_models_probe


@dataclass
class FakeDaemonController:
    """Looks attached (for the header) but goes nowhere: snapshot tests never change anything."""

    mode: str = "attached"
    decisions: list[tuple[str, Any]] | None = None

    @property
    def description(self) -> str:
        return "attached to the daemon (pid 4242): closing this window leaves the agents running"

    def _record(self, what: str, arg: Any) -> None:
        if self.decisions is None:
            self.decisions = []
        self.decisions.append((what, arg))

    def approve(self, approval_id: int) -> None:
        self._record("approve", approval_id)

    def deny(self, approval_id: int) -> None:
        self._record("deny", approval_id)

    def pause(self, agent: str) -> None:
        self._record("pause", agent)

    def resume(self, agent: str) -> bool:
        self._record("resume", agent)
        return True

    def run_now(self, agent: str) -> None:
        self._record("run_now", agent)


def seeded_app(seeded: Seeded, controller: Any | None = None) -> SupervisorApp:
    return SupervisorApp(
        seeded.config,
        seeded.catalog,
        seeded.ledger,
        controller if controller is not None else FakeDaemonController(mode="hosted"),
        environ={},
        clock=lambda: NOW,
        models_probe=fake_models_probe,
    )


def hosted_app(harness: Harness, **runtime_kwargs: Any) -> tuple[SupervisorApp, Any, dict[str, Any]]:
    """An app hosting a runtime over scripted tiers, with its scheduler, as ``supervisor tui`` would."""
    from supervisor.control import HostedController

    runtime, backends = harness.runtime(**runtime_kwargs)
    scheduler = Scheduler(runtime, harness.config_path, register=True, tick_s=0.2)
    app = SupervisorApp(
        runtime.config,
        runtime.catalog,
        runtime.ledger,
        HostedController(runtime),
        runtime,
        scheduler,
        environ=harness.environ,
        models_probe=fake_models_probe,
    )
    return app, runtime, backends


async def until(pilot: Pilot[Any], condition: Callable[[], Any], timeout: float = 15.0, what: str = "") -> None:
    """Let the app run until ``condition()`` is true (fails the test after ``timeout`` seconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.05)


async def settle(pilot: Pilot[Any]) -> None:
    """Wait for the first status load and every screen's loading worker (not the endless tail/runtime ones)."""
    app = pilot.app
    assert isinstance(app, SupervisorApp)
    await until(
        pilot,
        lambda: app.snapshot is not None and app.snapshot.complete and not app._loading,
        what="the first complete status load",
    )

    def idle() -> bool:
        return not [w for w in app.workers if w.group not in ("tail", "runtime") and w.is_running]

    await until(pilot, idle, what="workers to finish")
    await pilot.pause(0.1)
    await until(pilot, idle, what="workers to finish")


def log_text(app: SupervisorApp) -> str:
    """Everything the current screen's step log shows (lines, plus the streaming area)."""
    log = app.screen.query_one(RichLog)
    return "\n".join(strip.text for strip in log.lines)
