"""The terminal UI: the only package that imports Textual. ``run_tui`` opens it over a hosted or attached core."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.catalog import Catalog
from supervisor.clock import utcnow
from supervisor.config import Config
from supervisor.ledger import Ledger

if TYPE_CHECKING:
    from supervisor.control import Controller
    from supervisor.runtime.runtime import Runtime
    from supervisor.runtime.scheduler import Scheduler


def run_tui(
    config: Config,
    catalog: Catalog,
    ledger: Ledger,
    controller: Controller | None,
    *,
    runtime: Runtime | None = None,
    scheduler: Scheduler | None = None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = utcnow,
    warning: str = "",
    config_path_hint: Path | None = None,
) -> int:
    """Run the app until the user quits; returns the exit code.

    With ``runtime`` (and usually ``scheduler``) the app hosts the agents on a thread of its own and stops them
    cleanly on quit; with an ``AttachedController`` it only reads the ledger and writes decisions to it.
    """
    from supervisor.tui.app import SupervisorApp

    app = SupervisorApp(
        config,
        catalog,
        ledger,
        controller,
        runtime,
        scheduler,
        environ=environ,
        clock=clock,
        warning=warning,
        config_path_hint=config_path_hint,
    )
    result = app.run()
    return int(result or 0)


def run_demo_tui(config: Config, catalog: Catalog, ledger: Ledger, environ: Mapping[str, str], home: Path) -> int:
    """``supervisor demo``: host the demo's runtime and scheduler over its own data dir (the agents start at once)."""
    from supervisor.control import HostedController
    from supervisor.daemon import DaemonLock
    from supervisor.runtime.runtime import Runtime
    from supervisor.runtime.scheduler import Scheduler

    lock = DaemonLock(home)
    lock.acquire()
    try:
        runtime = Runtime(config, catalog, ledger, environ=environ, home=home)
        scheduler = Scheduler(runtime, config.path, register=True)
        return run_tui(
            config,
            catalog,
            ledger,
            HostedController(runtime),
            runtime=runtime,
            scheduler=scheduler,
            environ=environ,
        )
    finally:
        lock.release()


__all__ = ["run_demo_tui", "run_tui"]
