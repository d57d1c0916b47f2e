"""The scheduler: wakes scheduled agents, takes commands from other processes, and keeps the ledger honest.

``supervisor daemon`` runs it until SIGTERM/SIGINT; the TUI runs the same loop in-process when no daemon is up.
Rules from the 136M-token fire: a scheduled run is a fresh session that starts at the bottom of its ladder, a
frontier call in a scheduled run always waits for a human, and nothing is ever kept warm with pings.

Other processes reach a running scheduler only through the ledger: approvals (the waiting run polls them),
pause/resume (the agents table), and "run now" (the commands table).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from supervisor.clock import parse_iso, utcnow
from supervisor.config import AgentConfig, Schedule, load_config
from supervisor.errors import ConfigError, SupervisorError
from supervisor.ledger import Ledger
from supervisor.runtime.events import AgentDeferred, Notice
from supervisor.runtime.runtime import RunResult, Runtime, recover

HEARTBEAT_S = 2.0


def next_wake(schedule: Schedule, last_start: datetime | None, now: datetime) -> datetime:
    """When a scheduled agent should next run: an interval after its last scheduled start, or the next daily time."""
    if schedule.interval_s is not None:
        if last_start is None:
            return now
        return last_start + timedelta(seconds=schedule.interval_s)
    assert schedule.daily_at is not None
    day = now.astimezone().date()

    def at(d: date) -> datetime:  # that local wall-clock time, with the day's own UTC offset
        return datetime.combine(d, schedule.daily_at).astimezone()  # type: ignore[arg-type]

    if last_start is None:
        # Never ran: today's time if it is still ahead, else tomorrow's (no surprise run at start-up).
        return at(day) if at(day) >= now else at(day + timedelta(days=1))
    candidate = at(day)
    if candidate <= last_start:
        candidate = at(day + timedelta(days=1))
    return candidate


@dataclass
class Scheduler:
    """Runs scheduled agents and commands; ``tick()`` is one pass, ``run_forever`` loops until stopped."""

    runtime: Runtime
    config_path: Path | None = None
    tick_s: float = 1.0
    clock: Callable[[], datetime] = utcnow
    register: bool = True  # write the daemon row (False when the TUI hosts the loop alongside a real daemon check)
    tasks: dict[str, asyncio.Task[RunResult]] = field(default_factory=dict)
    force_offline: bool = False  # --offline on the command line survives config reloads
    _config_mtime: float = 0.0
    _last_heartbeat: float = 0.0
    _approvals_started: set[int] = field(default_factory=set)
    _deferred_retried: dict[str, int] = field(default_factory=dict)
    _retry_all_deferred: bool = False
    _next_runs: dict[str, datetime | None] = field(default_factory=dict)

    def _set_next_run(self, agent: str, wake: datetime | None) -> None:
        """Write the next wake only when it changes (a write per agent per tick would keep the ledger busy)."""
        if agent in self._next_runs and self._next_runs[agent] == wake:
            return
        self._next_runs[agent] = wake
        self.ledger.set_next_run(agent, wake)

    def _retry_deferred(self, agent: str, now: datetime) -> bool:
        """A deferred agent runs again once: when its cap window resets, or after the config changed (a raised
        cap, offline mode lifted). Each deferral is retried at most once, so a cap still hit stays quiet."""
        deferrals = self.ledger.events_after(0, agent=agent, kinds=[AgentDeferred.kind])
        if not deferrals:
            return False
        last = deferrals[-1]
        if self._deferred_retried.get(agent) == last.id:
            return False
        resets = last.data.get("resets_at")
        due = self._retry_all_deferred or (resets is not None and parse_iso(str(resets)) <= now)
        if due:
            self._deferred_retried[agent] = last.id
        return due

    @property
    def ledger(self) -> Ledger:
        return self.runtime.ledger

    def last_scheduled_start(self, agent: str) -> datetime | None:
        value = self.ledger.scalar(
            "SELECT max(started_at) FROM runs WHERE agent = ? AND trigger = 'schedule'", (agent,)
        )
        return parse_iso(value) if value else None

    def due(self, name: str, agent: AgentConfig, now: datetime) -> datetime | None:
        schedule = agent.schedule_spec
        if schedule is None or not agent.enabled:
            return None
        return next_wake(schedule, self.last_scheduled_start(name), now)

    def _start(self, agent: str, trigger: str) -> None:
        if agent in self.tasks and not self.tasks[agent].done():
            return
        if self.runtime.is_running(agent) or self.runtime.live_run_elsewhere(agent) is not None:
            return  # another process (a `supervisor run`) has it; its next due time is checked next tick
        task = asyncio.create_task(self.runtime.run_agent(agent, trigger, approval_timeout_s=None))
        self.tasks[agent] = task
        task.add_done_callback(functools.partial(self._finished, agent))

    def _finished(self, agent: str, task: asyncio.Task[RunResult]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.runtime.bus.publish(Notice(agent=agent, message=f"run failed to start: {exc}", level="error"))

    async def tick(self) -> None:
        now = self.clock()
        loop = asyncio.get_running_loop()
        if self.register and loop.time() - self._last_heartbeat >= HEARTBEAT_S:
            self.ledger.daemon_heartbeat(os.getpid())
            self._last_heartbeat = loop.time()
        self._maybe_reload()
        retry_all = self._retry_all_deferred
        for command in self.ledger.take_commands():
            agent, kind = command["agent"], command["kind"]
            if agent not in self.runtime.config.agents:
                continue
            if kind == "run_now":
                row = self.ledger.agent(agent)
                if row is not None and row["state"] == "paused":
                    self.runtime.bus.publish(Notice(agent=agent, message="run now ignored: the agent is paused"))
                else:
                    self._start(agent, "manual")
            elif kind == "cancel":
                task = self.tasks.get(agent)
                if task is not None and not task.done():
                    task.cancel()
        rows = {r["name"]: r for r in self.ledger.agents()}
        for name, agent in self.runtime.config.agents.items():
            row = rows.get(name, {})
            task = self.tasks.get(name)
            running = task is not None and not task.done()
            if row.get("state") == "paused":
                if running and task is not None:
                    task.cancel()  # a pause from another process stops the run; the runtime restores the workspace
                self._set_next_run(name, None)
                continue
            if running or agent.external:
                continue  # an external agent has nothing to run: its approvals are the gateway's to use
            # An approval given elsewhere starts one run that goes straight to the approved step (once per
            # approval: a run that fails before reaching it must not be restarted every second).
            fresh = [
                a.id
                for a in self.ledger.approvals(states=("approved",), agent=name)
                if a.id not in self._approvals_started
            ]
            if fresh:
                self._approvals_started.update(fresh)
                self._start(name, "approval")
                continue
            if row.get("state") == "deferred" and self._retry_deferred(name, now):
                self._start(name, "retry")
                continue
            wake = self.due(name, agent, now)
            self._set_next_run(name, wake)
            if wake is not None and wake <= now:
                self._start(name, "schedule")
        if retry_all:
            self._retry_all_deferred = False

    def _maybe_reload(self) -> None:
        """Pick up a changed config file (a raised cap lets a deferred agent run again); keep the old one if broken."""
        if self.config_path is None or not self.config_path.exists():
            return
        mtime = self.config_path.stat().st_mtime
        if not self._config_mtime:
            self._config_mtime = mtime
            return
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            config = load_config(self.config_path, self.runtime.environ, required=True)
        except ConfigError as exc:
            self.runtime.bus.publish(Notice(message=f"config change ignored: {exc}", level="error"))
            return
        if self.force_offline or self.runtime.config.offline_override:
            config = config.with_offline(True)
        self.runtime.reconfigure(config)
        self._retry_all_deferred = True  # a raised cap or lifted offline mode may let deferred agents run
        self.runtime.bus.publish(Notice(message=f"reloaded {self.config_path}"))

    async def run_forever(self, stop: asyncio.Event) -> None:
        if self.register:
            self.ledger.register_daemon(os.getpid(), str(self.config_path or ""))
        recover(self.runtime)
        try:
            while not stop.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.tick_s)
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        """Cancel running steps (their workspaces are restored and reservations settled), then leave."""
        running = [t for t in self.tasks.values() if not t.done()]
        for task in running:
            task.cancel()
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, SupervisorError):
                await task
        if self.register:
            self.ledger.clear_daemon(os.getpid())
