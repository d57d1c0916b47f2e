"""The headless core's control API: run agents, pause and resume them, decide approvals.

The CLI, the daemon's scheduler and the TUI all go through ``Runtime``. What one run does lives next to it:
``run`` (the run lifecycle and crash recovery), ``steps`` (one step, its gates, writing an answer), ``ladder``
(a model step's walk up its tiers) and ``approval`` (asking a human for the frontier tier).

A run snapshots the workspace, then runs each step in order. A ``run`` step is tier 0 (a command, no model). A
model step walks its ladder: each attempt builds a fresh prompt, reserves its worst case under every cap, calls
the model, writes the answer, and runs every gate. A failed attempt restores the workspace exactly and retries
with the failure; a tier that keeps failing escalates; the frontier tier waits for a human's approval unless the
agent says otherwise. A run that does not succeed leaves the workspace byte-for-byte as it found it.

This module knows agents, tiers, caps and gates, and nothing about Textual: views subscribe to ``bus``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from supervisor import paths
from supervisor.backends.base import Backend
from supervisor.catalog import Catalog
from supervisor.clock import utcnow
from supervisor.config import Config
from supervisor.errors import SupervisorError
from supervisor.ledger import Ledger
from supervisor.procident import owner_alive
from supervisor.runtime import agent_state
from supervisor.runtime.approval import Approvals
from supervisor.runtime.caller import ModelCaller
from supervisor.runtime.events import AgentStateChanged, EventBus
from supervisor.runtime.ladder import Ladder
from supervisor.runtime.memory import AgentMemory
from supervisor.runtime.pool import BackendPool
from supervisor.runtime.process import ProcessRegistry
from supervisor.runtime.program import AttemptGateway, GatewayFactory, Programs
from supervisor.runtime.router import Router
from supervisor.runtime.run import EXIT_CODES, Approver, Outcome, RunResult, RunState, execute_run, recover
from supervisor.runtime.steps import StepOutcome, StepRunner
from supervisor.runtime.worker import Worker

__all__ = [
    "EXIT_CODES",
    "AlreadyRunning",
    "Approver",
    "Outcome",
    "RunResult",
    "RunState",
    "Runtime",
    "StepOutcome",
    "recover",
]


class AlreadyRunning(SupervisorError):
    exit_code = 1


class Runtime:
    """Runs agents. Construct it with everything it needs; it connects to nothing at import time."""

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        ledger: Ledger,
        *,
        environ: Mapping[str, str] | None = None,
        backends: Mapping[str, Backend] | None = None,
        clock: Callable[[], datetime] = utcnow,
        home: Path | None = None,
        gateway_factory: GatewayFactory | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.ledger = ledger
        self.environ = environ if environ is not None else config.environ
        self.clock = clock
        self.home = home or paths.home(self.environ)
        # Whatever ledger we were given, it scrubs the values of every configured provider's key variable too.
        key_names = [p.api_key_env for p in config.providers.values() if p.api_key_env]
        ledger.redactor = ledger.redactor.including(self.environ, key_names)
        self.bus = EventBus(ledger)
        self.pool = BackendPool(config, self.environ, backends)
        self.router = Router(config, catalog, self.pool, ledger)
        self.caller = ModelCaller(ledger, self.pool, self.bus, clock)
        self.processes = ProcessRegistry()
        self.approvals = Approvals(self)
        self.ladder = Ladder(self)
        self.steps = StepRunner(self)
        self.worker = Worker(self)
        self.programs = Programs(self)
        # Agent steps reach models through a gateway in this process: the one it hosts (the daemon's, the TUI's),
        # else one started for the run by ``gateway_factory`` (set by whoever builds the runtime: the CLI).
        self.gateway: AttemptGateway | None = None
        self.gateway_factory = gateway_factory
        self._semaphore = asyncio.Semaphore(config.file.limits.max_concurrent_agents)
        self._running: dict[str, asyncio.Task[RunResult]] = {}
        self._run_ids: set[int] = set()  # runs this runtime started
        for name in config.agents:
            ledger.ensure_agent(name)

    # ----------------------------------------------------------------------------------------------------
    # Public API (the CLI, the daemon and the TUI all go through these)

    def reconfigure(self, config: Config) -> None:
        """Use a new config from now on (runs in progress keep the agent config they started with)."""
        self.config = config
        self.pool = BackendPool(config, self.environ, self.pool.loaded())
        self.router = Router(config, self.catalog, self.pool, self.ledger)
        self.caller = ModelCaller(self.ledger, self.pool, self.bus, self.clock)
        for name in config.agents:
            self.ledger.ensure_agent(name)

    def memory(self, agent: str) -> AgentMemory:
        return AgentMemory(agent, self.home / "agents", self.config.agent(agent).memory_tokens, self.ledger.redactor)

    def is_running(self, agent: str) -> bool:
        task = self._running.get(agent)
        return task is not None and not task.done()

    def own_run(self, run_id: int) -> None:
        """Note that this runtime started ``run_id`` (so it is not mistaken for another process's run)."""
        self._run_ids.add(run_id)

    def _live_runs(self, agent: str) -> list[int]:
        """Runs of ``agent`` marked running whose owning process (this one or another) is alive."""
        rows = self.ledger.query(
            "SELECT id, owner_pid, owner_started FROM runs WHERE agent = ? AND outcome = 'running'", (agent,)
        )
        return [int(r["id"]) for r in rows if owner_alive(r["owner_pid"] or 0, r["owner_started"] or 0.0)]

    def live_run_elsewhere(self, agent: str) -> int | None:
        """The id of a run of ``agent`` that someone other than this runtime is running, if any."""
        return next((run_id for run_id in self._live_runs(agent) if run_id not in self._run_ids), None)

    def approve(self, approval_id: int, by: str = "human") -> None:
        self.approvals.decide(approval_id, True, by)

    def deny(self, approval_id: int, by: str = "human") -> None:
        self.approvals.decide(approval_id, False, by)

    def pause(self, agent: str, by: str = "human", reason: str = "paused by a human") -> None:
        self.config.agent(agent)
        agent_state.pause(
            self.ledger,
            self.bus,
            agent,
            by,
            reason,
            event=AgentStateChanged(agent=agent, state="paused", reason=reason),
        )
        task = self._running.get(agent)
        if task is not None and not task.done():
            task.cancel()

    def resume(self, agent: str) -> bool:
        self.config.agent(agent)
        event = AgentStateChanged(agent=agent, state="idle", reason="resumed by a human")
        return agent_state.resume(self.ledger, self.bus, agent, event=event)

    def start(
        self,
        agent: str,
        trigger: str = "tui",
        *,
        approval_timeout_s: float | None = 0.0,
        approver: Approver | None = None,
    ) -> asyncio.Task[RunResult]:
        """Run ``agent`` in the background (the TUI's "run now")."""
        if self.is_running(agent):
            raise AlreadyRunning(f"agent {agent!r} is already running")
        task = asyncio.create_task(
            self.run_agent(agent, trigger, approval_timeout_s=approval_timeout_s, approver=approver)
        )
        self._running[agent] = task
        return task

    async def aclose(self) -> None:
        for task in list(self._running.values()):
            if not task.done():
                task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, SupervisorError):
                await task
        await self.pool.aclose()

    async def run_agent(
        self,
        agent: str,
        trigger: str = "cli",
        *,
        approval_timeout_s: float | None = 0.0,
        approver: Approver | None = None,
    ) -> RunResult:
        """One run of ``agent``; ``approval_timeout_s=None`` waits for approvals as long as it takes."""
        cfg = self.config.agent(agent)
        if cfg.external:
            raise SupervisorError(
                f"agent {agent!r} is an external agent (no steps): it has nothing to run",
                "its programs call models through the gateway (`supervisor gateway`); give it steps to run it here",
            )
        row = self.ledger.agent(agent)
        if row is not None and row["state"] == "paused":
            reason = f"paused by {row['paused_by'] or 'a human'}: {row['state_reason']}; `supervisor resume {agent}`"
            return RunResult(0, agent, "paused", reason)
        live = self._live_runs(agent)
        if live:
            raise AlreadyRunning(f"agent {agent!r} is already running (run {live[0]})", "wait for it, or pause it")
        current = asyncio.current_task()
        if current is not None and agent not in self._running:
            self._running[agent] = current
        try:
            async with self._semaphore:
                return await execute_run(self, agent, cfg, trigger, approval_timeout_s, approver)
        finally:
            if self._running.get(agent) is current:
                self._running.pop(agent, None)
