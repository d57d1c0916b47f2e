"""The headless core: runs agents step by step, cheapest capable tier first, under caps, with verify gates.

A run: snapshot the workspace, then each step in order. A ``run`` step is tier 0 (a command, no model). A model
step walks its ladder: each attempt builds a fresh prompt, reserves its worst case under every cap, calls the
model, writes the answer, and runs every gate. A failed attempt restores the workspace exactly and retries with
the failure; a tier that keeps failing escalates; the frontier tier waits for a human's approval unless the
agent says otherwise. A run that does not succeed leaves the workspace byte-for-byte as it found it.

This module knows agents, tiers, caps and gates, and nothing about Textual: views subscribe to ``bus``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from supervisor import paths
from supervisor.backends.base import Backend, Request
from supervisor.catalog import Catalog, Tier
from supervisor.clock import utcnow
from supervisor.config import AgentConfig, Config, StepConfig
from supervisor.errors import (
    BackendUnavailable,
    BadRequest,
    ContextOverflow,
    ModelNotFound,
    PromptTooLarge,
    RateLimited,
    SupervisorError,
)
from supervisor.ledger import CapHit, Ledger
from supervisor.ledger.ledger import AgentState
from supervisor.runtime import breaker
from supervisor.runtime.budget import cap_limits, caps_left, estimate_call
from supervisor.runtime.caller import CallOutcome, ModelCaller
from supervisor.runtime.events import (
    AgentDeferred,
    AgentStateChanged,
    ApprovalDecided,
    BreakerTripped,
    CommandFinished,
    DigestWritten,
    Escalated,
    EscalationRequested,
    Event,
    EventBus,
    GateChecked,
    Notice,
    PlanRecorded,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    StepVerified,
    TextStreamed,
    TierSkipped,
    WorkspaceRestored,
)
from supervisor.runtime.memory import AgentMemory, RunSummary, StepSummary
from supervisor.runtime.planner import PLAN_STEP
from supervisor.runtime.process import ProcessRegistry, run_command
from supervisor.runtime.prompt import build_messages, extract_answer, read_context
from supervisor.runtime.router import BackendPool, Candidate, Router
from supervisor.runtime.verify import run_gate
from supervisor.runtime.workspace import Snapshot, WorkspaceError, atomic_write, resolve_inside
from supervisor.secrets import StreamScrubber

Outcome = Literal["success", "failed", "exhausted", "denied", "deferred", "waiting_approval", "paused", "cancelled"]
StepStatus = Literal["passed", "failed", "exhausted", "denied", "deferred", "waiting_approval", "paused"]

CHILDREN_FILE = "children"  # process groups a run started, so a recovery can stop what a crash left running
EXIT_CODES: dict[str, int] = {
    "success": 0,
    "failed": 1,
    "exhausted": 1,
    "denied": 1,
    "cancelled": 1,
    "deferred": 3,
    "waiting_approval": 4,
    "paused": 5,
}
AGENT_STATE_AFTER: dict[str, AgentState] = {
    "success": "idle",
    "failed": "failed",
    "exhausted": "exhausted",
    "denied": "denied",
    "cancelled": "idle",
    "deferred": "deferred",
    "waiting_approval": "waiting_approval",
    "paused": "paused",
}
APPROVAL_POLL_S = 0.25

# An approver asks a human (e.g. y/n on the terminal) and returns True/False, or None to leave it pending.
Approver = Callable[[EscalationRequested], Awaitable[bool | None]]


class AlreadyRunning(SupervisorError):
    exit_code = 1


@dataclass(frozen=True, slots=True)
class StepOutcome:
    status: StepStatus
    reason: str = ""
    tier: str | None = None
    model: str | None = None
    attempts: int = 0
    failure: str = ""
    approval_id: int | None = None
    cap: CapHit | None = None


@dataclass
class RunResult:
    run_id: int
    agent: str
    outcome: Outcome
    reason: str = ""
    cost_micros: int = 0
    calls: int = 0
    unpriced_calls: int = 0
    approval_id: int | None = None
    steps: list[StepSummary] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    tier_reached: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


@dataclass
class _RunState:
    """What one run accumulates while it goes."""

    agent: str
    cfg: AgentConfig
    run_id: int
    trigger: str
    workspace: Path
    snapshot: Snapshot
    digest: str
    approval_timeout_s: float | None
    approver: Approver | None
    events: list[Event] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)
    pause_after: breaker.Trip | None = None
    approval_id: int | None = None
    planning_step: StepConfig | None = None  # the planner's own step (planner mode), checked as a plan

    @property
    def scheduled(self) -> bool:
        return self.trigger == "schedule"


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
        self._semaphore = asyncio.Semaphore(config.file.limits.max_concurrent_agents)
        self._running: dict[str, asyncio.Task[RunResult]] = {}
        self._approval_events: dict[int, asyncio.Event] = {}
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

    def _live_runs(self, agent: str) -> list[int]:
        """Runs of ``agent`` marked running whose owning process (this one or another) is alive."""
        from supervisor.procident import owner_alive

        rows = self.ledger.query(
            "SELECT id, owner_pid, owner_started FROM runs WHERE agent = ? AND outcome = 'running'", (agent,)
        )
        return [int(r["id"]) for r in rows if owner_alive(r["owner_pid"] or 0, r["owner_started"] or 0.0)]

    def live_run_elsewhere(self, agent: str) -> int | None:
        """The id of a run of ``agent`` that someone other than this runtime is running, if any."""
        return next((run_id for run_id in self._live_runs(agent) if run_id not in self._run_ids), None)

    def approve(self, approval_id: int, by: str = "human") -> None:
        self.ledger.decide_approval(approval_id, True, by)
        self._wake_approval(approval_id)

    def deny(self, approval_id: int, by: str = "human") -> None:
        self.ledger.decide_approval(approval_id, False, by)
        self._wake_approval(approval_id)

    def _wake_approval(self, approval_id: int) -> None:
        event = self._approval_events.get(approval_id)
        if event is not None:
            event.set()

    def pause(self, agent: str, by: str = "human", reason: str = "paused by a human") -> None:
        self.config.agent(agent)
        self.ledger.pause_agent(agent, by, reason)
        self.bus.publish(AgentStateChanged(agent=agent, state="paused", reason=reason))
        task = self._running.get(agent)
        if task is not None and not task.done():
            task.cancel()

    def resume(self, agent: str) -> bool:
        self.config.agent(agent)
        resumed = self.ledger.resume_agent(agent)
        if resumed:
            self.bus.publish(AgentStateChanged(agent=agent, state="idle", reason="resumed by a human"))
        return resumed

    def start(self, agent: str, trigger: str = "tui", **kwargs: Any) -> asyncio.Task[RunResult]:
        """Run ``agent`` in the background (the TUI's "run now")."""
        if self.is_running(agent):
            raise AlreadyRunning(f"agent {agent!r} is already running")
        task = asyncio.create_task(self.run_agent(agent, trigger, **kwargs))
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

    # ----------------------------------------------------------------------------------------------------
    # A run

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
                return await self._run(agent, cfg, trigger, approval_timeout_s, approver)
        finally:
            if self._running.get(agent) is current:
                self._running.pop(agent, None)

    async def _run(
        self,
        agent: str,
        cfg: AgentConfig,
        trigger: str,
        approval_timeout_s: float | None,
        approver: Approver | None,
    ) -> RunResult:
        simulated = self._agent_simulated(cfg)
        workspace = self.config.workspace(agent)  # before the run row: a bad path must not leave a run "running"
        run_id = self.ledger.start_run(agent, trigger, simulated=simulated, now=self.clock())
        self._run_ids.add(run_id)
        events: list[Event] = []
        unsubscribe = self.bus.subscribe(lambda e: events.append(e) if e.run_id == run_id and e.persist else None)
        self.ledger.set_agent_state(agent, "running", f"run {run_id} ({trigger})", run_id=run_id)
        self._emit(AgentStateChanged(agent=agent, run_id=run_id, state="running", reason=trigger))
        self._emit(
            RunStarted(
                agent=agent,
                run_id=run_id,
                trigger=trigger,
                steps=[s.name for s in cfg.steps],
                simulated=simulated,
            )
        )
        outcome: Outcome = "failed"
        reason = ""
        summaries: list[StepSummary] = []
        state: _RunState | None = None
        tier_reached: str | None = None
        try:
            if not workspace.is_dir():
                raise WorkspaceError(
                    f"workspace {workspace} does not exist", f"create it or fix agents.{agent}.workspace"
                )
            limits = self.config.file.limits
            snapshot = Snapshot.take(
                workspace,
                self.home / "snapshots" / str(run_id),
                ignore=limits.snapshot_ignore,
                max_bytes=limits.max_snapshot_bytes,
            )
            state = _RunState(
                agent,
                cfg,
                run_id,
                trigger,
                workspace,
                snapshot,
                self.memory(agent).digest(),
                approval_timeout_s,
                approver,
            )
            outcome, reason, tier_reached = await self._run_steps(state, summaries)
        except asyncio.CancelledError:
            outcome, reason = "cancelled", "cancelled"
            row = self.ledger.agent(agent)
            if row is not None and row["state"] == "paused":
                outcome, reason = "paused", row["state_reason"]
            raise
        except SupervisorError as exc:
            outcome, reason = "failed", str(exc)
            self._emit(Notice(agent=agent, run_id=run_id, message=str(exc), level="error"))
        finally:
            outcome, reason = await self._finish(run_id, agent, state, outcome, reason, summaries, events, trigger)
            unsubscribe()
        totals = self.ledger.query(
            "SELECT coalesce(sum(cost_micros), 0), count(*), coalesce(sum(1 - priced), 0) FROM calls WHERE run_id = ?",
            (run_id,),
        )[0]
        return RunResult(
            run_id,
            agent,
            outcome,
            reason,
            cost_micros=int(totals[0]),
            calls=int(totals[1]),
            unpriced_calls=int(totals[2]),
            approval_id=state.approval_id if state else None,
            steps=summaries,
            artifacts=dict(state.artifacts) if state else {},
            tier_reached=tier_reached,
        )

    async def _run_steps(self, state: _RunState, summaries: list[StepSummary]) -> tuple[Outcome, str, str | None]:
        """Run the configured steps (or, in planner mode, plan them first and check the agent's gates at the end)."""
        steps = state.cfg.steps
        tier_reached: str | None = None
        if state.cfg.planner_mode:
            from supervisor.runtime.planner import plan_steps

            steps, plan_outcome = await plan_steps(self, state)
            if plan_outcome is not None:
                summaries.append(_summary(PLAN_STEP, plan_outcome))
                return (*_run_outcome(plan_outcome), plan_outcome.tier)
        for step in steps:
            step_outcome = await self._run_step(state, step)
            summaries.append(_summary(step.name, step_outcome))
            tier_reached = step_outcome.tier or tier_reached
            if step_outcome.status != "passed":
                return (*_run_outcome(step_outcome), tier_reached)
        if state.cfg.planner_mode:
            passed, detail = await self._run_gates(state, "verify", state.cfg.verify, answer=None, tier=None, attempt=0)
            if not passed:
                return "failed", f"the agent's verify gate failed after the plan ran: {detail[:300]}", tier_reached
        return "success", "", tier_reached

    async def _finish(
        self,
        run_id: int,
        agent: str,
        state: _RunState | None,
        outcome: Outcome,
        reason: str,
        summaries: list[StepSummary],
        events: list[Event],
        trigger: str,
    ) -> tuple[Outcome, str]:
        """Restore or keep the workspace, write the digest, settle the agent's state: even when cancelled.

        Returns the final outcome and reason (the breaker may turn a finished run into a paused one)."""
        if state is not None:
            if outcome != "success":
                restored, removed = state.snapshot.restore()
                if restored or removed:
                    self._emit(
                        WorkspaceRestored(
                            agent=agent,
                            run_id=run_id,
                            step=None,
                            files_restored=restored,
                            files_removed=removed,
                            scope="run",
                        )
                    )
            state.snapshot.discard()
        cfg = self.config.agents.get(agent)
        now = self.clock()
        if state is not None and state.pause_after is None:
            state.pause_after = self._check_hourly(state)
        if state is not None and state.pause_after is not None:
            self._trip(agent, run_id, state.pause_after)
            if outcome == "success":
                reason = f"succeeded, then paused by the runaway breaker: {state.pause_after.message}"
            else:
                outcome, reason = "paused", f"runaway breaker: {state.pause_after.message}"
        totals = self.ledger.query(
            "SELECT coalesce(sum(cost_micros), 0), count(*), coalesce(sum(1 - priced), 0) FROM calls WHERE run_id = ?",
            (run_id,),
        )[0]
        row = self.ledger.run(run_id)
        summary = RunSummary(
            run_id=run_id,
            agent=agent,
            trigger=trigger,
            started_at=row["started_at"] if row else "",
            ended_at=now.isoformat(),
            outcome=outcome,
            reason=reason,
            cost_micros=int(totals[0]),
            unpriced_calls=int(totals[2]),
            steps=summaries,
            decisions=state.decisions if state else [],
        )
        if cfg is not None:
            try:
                path, tokens = self.memory(agent).record_run(summary, _record_lines(summary, events))
                self._emit(DigestWritten(agent=agent, run_id=run_id, path=str(path), tokens=tokens))
            except OSError as exc:
                self._emit(
                    Notice(
                        agent=agent,
                        run_id=run_id,
                        message=f"could not write the digest: {exc}",
                        level="error",
                    )
                )
        self.ledger.finish_run(run_id, outcome, reason, now=self.clock())
        paused = self.ledger.agent(agent)
        if not (paused is not None and paused["state"] == "paused"):
            agent_state = AGENT_STATE_AFTER[outcome]
            self.ledger.set_agent_state(agent, agent_state, reason)
            self._emit(AgentStateChanged(agent=agent, run_id=run_id, state=agent_state, reason=reason))
        self._emit(
            RunFinished(
                agent=agent,
                run_id=run_id,
                outcome=outcome,
                reason=reason,
                cost_micros=int(totals[0]),
                calls=int(totals[1]),
                unpriced_calls=int(totals[2]),
            )
        )
        return outcome, reason

    def _clean_failure(self, failure: str | None, workspace: Path) -> str | None:
        """The gate failure as the next prompt sees it: no keys, and no absolute workspace paths (so the prompt,
        and its cost, do not depend on where the workspace happens to live)."""
        if not failure:
            return None
        return self.ledger.redactor.scrub(failure).replace(str(workspace) + "/", "").replace(str(workspace), ".")

    def _check_hourly(self, state: _RunState) -> breaker.Trip | None:
        if not state.cfg.caps.day_usd:
            return None
        limits = cap_limits(self.config, state.cfg)
        return breaker.check_hourly_spend(
            self.ledger, state.agent, limits.agent_day_micros, self.config.file.breaker, self.clock()
        )

    def _trip(self, agent: str, run_id: int | None, trip: breaker.Trip) -> None:
        self.ledger.pause_agent(agent, "breaker", f"runaway breaker ({trip.rule}): {trip.message}")
        self._emit(
            BreakerTripped(agent=agent, run_id=run_id, rule=trip.rule, message=trip.message, evidence=trip.evidence)
        )
        self._emit(
            AgentStateChanged(agent=agent, run_id=run_id, state="paused", reason=f"runaway breaker: {trip.rule}")
        )

    def _emit(self, event: Event) -> None:
        self.bus.publish(event)

    def _agent_simulated(self, cfg: AgentConfig) -> bool:
        tiers = {t for step in cfg.steps for t in (step.ladder or cfg.ladder)} or set(cfg.ladder)
        for tier in tiers:
            for key in self.config.tiers.models(tier):
                provider = key.partition(":")[0]
                pcfg = self.config.providers.get(provider)
                if pcfg is not None and pcfg.kind == "scripted":
                    return True
        return False

    # ----------------------------------------------------------------------------------------------------
    # Steps

    async def _run_step(self, state: _RunState, step: StepConfig, kind: str | None = None) -> StepOutcome:
        kind = kind or ("run" if step.run is not None else "model")
        step_id = self.ledger.start_step(state.run_id, step.name, kind, now=self.clock())
        self._emit(StepStarted(agent=state.agent, run_id=state.run_id, step=step.name, step_kind=kind))
        self.ledger.update_agent_position(
            state.agent, step=step.name, tier="tier0" if kind == "run" else None, model=None
        )
        if step.run is not None:
            outcome = await self._run_command_step(state, step)
        else:
            outcome = await self._run_model_step(state, step, step_id)
        self.ledger.finish_step(
            step_id,
            outcome.status,
            tier_reached=outcome.tier,
            model=outcome.model,
            attempts=outcome.attempts,
            verify_result="pass" if outcome.status == "passed" else ("fail" if outcome.failure else None),
            verify_detail=outcome.failure[:4000],
        )
        self._emit(
            StepFinished(
                agent=state.agent,
                run_id=state.run_id,
                step=step.name,
                outcome=outcome.status,
                tier=outcome.tier,
                model=outcome.model,
                attempts=outcome.attempts,
            )
        )
        return outcome

    async def _run_command_step(self, state: _RunState, step: StepConfig) -> StepOutcome:
        assert step.run is not None
        limits = self.config.file.limits
        result = await run_command(
            step.run,
            state.workspace,
            timeout_s=step.timeout_s,
            capture_bytes=limits.max_capture_bytes,
            registry=self.processes,
            agent=state.agent,
            group_file=state.snapshot.directory / CHILDREN_FILE,
        )
        self._emit(
            CommandFinished(
                agent=state.agent,
                run_id=state.run_id,
                step=step.name,
                command=step.run,
                exit_code=result.exit_code,
                timed_out=result.timed_out,
                output=result.output[-4000:],
                seconds=round(result.seconds, 3),
            )
        )
        if not result.ok:
            return StepOutcome(
                "failed",
                f"step {step.name!r}: command failed",
                tier="tier0",
                attempts=1,
                failure=result.summary(),
            )
        passed, detail = await self._run_gates(state, step.name, step.verify, answer=None, tier="tier0", attempt=1)
        if not passed:
            return StepOutcome(
                "failed", f"step {step.name!r}: verify gate failed", tier="tier0", attempts=1, failure=detail
            )
        return StepOutcome("passed", tier="tier0", attempts=1)

    async def _run_gates(
        self,
        state: _RunState,
        step: str,
        gates: list[Any],
        *,
        answer: str | None,
        tier: str | None,
        attempt: int,
    ) -> tuple[bool, str]:
        for gate in gates:
            result = await run_gate(
                gate,
                answer=answer,
                workspace=state.workspace,
                capture_bytes=self.config.file.limits.max_capture_bytes,
                registry=self.processes,
                agent=state.agent,
                group_file=state.snapshot.directory / CHILDREN_FILE,
            )
            self._emit(
                GateChecked(
                    agent=state.agent,
                    run_id=state.run_id,
                    step=step,
                    gate=result.gate,
                    passed=result.passed,
                    output=result.output[-4000:],
                    tier=tier,
                    attempt=attempt,
                )
            )
            if not result.passed:
                return False, f"{result.gate}\n{result.output}"
        return True, ""

    async def _run_model_step(self, state: _RunState, step: StepConfig, step_id: int) -> StepOutcome:
        cfg = state.cfg
        ladder: list[Tier] = list(step.ladder or cfg.ladder)
        attempts_per_tier = step.attempts_per_tier or cfg.attempts_per_tier
        limits = cap_limits(self.config, cfg)
        failure: str | None = None
        last_tier: str | None = None
        total_attempts = 0
        try:
            # No tier can fix a missing or oversized context file: fail the step now instead of escalating.
            read_context(state.workspace, step, self.config.file.limits.max_context_file_bytes)
        except (PromptTooLarge, WorkspaceError) as exc:
            return StepOutcome("failed", str(exc), failure=str(exc))
        approved_frontier = self._approved_frontier(state.agent, step.name)
        if approved_frontier is not None and "frontier" in ladder:
            self._emit(
                Notice(
                    agent=state.agent,
                    run_id=state.run_id,
                    message=f"approval #{approved_frontier} granted earlier: going straight to the frontier tier",
                )
            )
            ladder = ["frontier"]
        for index, tier in enumerate(ladder):
            is_last = index == len(ladder) - 1
            if self.config.offline and tier != "local":
                reason = "offline: the step needs a tier above local"
                self._defer(state, step.name, reason)
                return StepOutcome("deferred", reason, tier=last_tier, attempts=total_attempts, failure=failure or "")
            candidates, skipped = self.router.candidates(tier)
            if not candidates:
                why = "; ".join(skipped) or "no models configured for this tier"
                self._emit(TierSkipped(agent=state.agent, run_id=state.run_id, step=step.name, tier=tier, reason=why))
                continue
            if tier != "frontier" and not is_last:
                learned = self.router.learned_skip(state.agent, step.name, tier, current_run=state.run_id)
                if learned is not None:
                    self._emit(
                        TierSkipped(
                            agent=state.agent,
                            run_id=state.run_id,
                            step=step.name,
                            tier=tier,
                            reason=f"learned: {learned.reason}",
                        )
                    )
                    continue
            tier_attempts = attempts_per_tier
            if tier == "frontier":
                policy = cfg.frontier
                if policy == "never":
                    return StepOutcome(
                        "exhausted",
                        f'step {step.name!r}: every tier below frontier failed and frontier = "never"',
                        tier=last_tier,
                        attempts=total_attempts,
                        failure=failure or "",
                    )
                if approved_frontier is None and (policy == "ask" or state.scheduled):
                    decision = await self._ask_approval(state, step, candidates[0], failure, limits)
                    if decision.status != "passed":
                        return StepOutcome(
                            decision.status,
                            decision.reason,
                            tier=last_tier,
                            attempts=total_attempts,
                            failure=failure or "",
                            approval_id=decision.approval_id,
                        )
                tier_attempts = 1  # an approval buys one frontier attempt
            if last_tier is not None:
                self._emit(
                    Escalated(
                        agent=state.agent,
                        run_id=state.run_id,
                        step=step.name,
                        from_tier=last_tier,
                        to_tier=tier,
                        reason=(failure or "")[:500],
                    )
                )
            outcome = await self._try_tier(
                state, step, step_id, tier, candidates, tier_attempts, failure, limits, total_attempts
            )
            total_attempts = outcome.attempts
            if outcome.status != "failed":
                return outcome
            failure = outcome.failure or failure
            last_tier = tier
        return StepOutcome(
            "exhausted",
            f"step {step.name!r}: no tier on the ladder ({', '.join(ladder)}) produced an answer that passed its gates",
            tier=last_tier,
            attempts=total_attempts,
            failure=failure or "",
        )

    def _approved_frontier(self, agent: str, step: str) -> int | None:
        row = self.ledger.open_approval_for(agent, step, "frontier")
        if row is not None and row.state == "approved" and self.ledger.consume_approval(row.id):
            return row.id
        return None

    async def _try_tier(
        self,
        state: _RunState,
        step: StepConfig,
        step_id: int,
        tier: Tier,
        candidates: list[Candidate],
        attempts: int,
        failure: str | None,
        limits: Any,
        attempts_so_far: int,
    ) -> StepOutcome:
        """Up to ``attempts`` attempts at ``tier``; "failed" here means: escalate."""
        remaining = list(candidates)
        attempt = 0
        used = attempts_so_far
        last_model: str | None = None
        while attempt < attempts and remaining:
            candidate = remaining[0]
            last_model = candidate.key
            self.ledger.update_agent_position(state.agent, step=step.name, tier=tier, model=candidate.key)
            self.ledger.set_agent_state(
                state.agent,
                "running",
                f"{step.name} at {tier}",
                run_id=state.run_id,
                step=step.name,
                tier=tier,
                model=candidate.key,
            )
            try:
                context = read_context(state.workspace, step, self.config.file.limits.max_context_file_bytes)
            except (PromptTooLarge, WorkspaceError) as exc:
                return StepOutcome("failed", str(exc), tier=tier, attempts=used, failure=str(exc))
            messages = build_messages(
                state.agent,
                state.cfg,
                step,
                digest=state.digest,
                context=context,
                failure=self._clean_failure(failure, state.workspace),
                failure_chars=self.config.file.limits.failure_excerpt_chars,
            )
            pcfg = self.pool.provider(candidate.provider)
            request = Request(
                model=candidate.model_id,
                messages=messages,
                max_output_tokens=min(step.max_output_tokens, candidate.spec.max_output_tokens),
                temperature=step.temperature,
                timeout_s=step.timeout_s,
                context_window=candidate.spec.context_window,
                cache_ttl=pcfg.cache_ttl,
            )
            attempt += 1
            used += 1

            scrubber = StreamScrubber(self.ledger.redactor)

            def stream(text: str, _step: str = step.name, _scrubber: StreamScrubber = scrubber) -> None:
                clean = _scrubber.feed(text)  # a key split across deltas is caught too
                if clean:
                    self.bus.publish(TextStreamed(agent=state.agent, run_id=state.run_id, step=_step, text=clean))

            def drop(why: str) -> None:
                remaining.pop(0)
                self._emit(Notice(agent=state.agent, run_id=state.run_id, message=why, level="warning"))

            hourly = self._check_hourly(state)
            if hourly is not None:
                # Spending too fast: stop before the next call rather than at the end of the run.
                state.pause_after = hourly
                return StepOutcome(
                    "paused", f"runaway breaker: {hourly.message}", tier=tier, model=candidate.key, attempts=used - 1
                )
            try:
                outcome = await self.caller.call(
                    agent=state.agent,
                    run_id=state.run_id,
                    step=step.name,
                    step_id=step_id,
                    attempt=used,
                    candidate=candidate,
                    request=request,
                    limits=limits,
                    on_text=stream,
                )
                rest = scrubber.flush()
                if rest:
                    self.bus.publish(TextStreamed(agent=state.agent, run_id=state.run_id, step=step.name, text=rest))
            except (ContextOverflow, BackendUnavailable) as exc:
                # Nothing was sent. Too big for this model, or it cannot be reached: another model of the tier,
                # or the next tier, may serve. The attempt does not count.
                drop(str(exc) if isinstance(exc, ContextOverflow) else f"{candidate.key} unavailable: {exc}")
                attempt -= 1
                used -= 1
                if isinstance(exc, ContextOverflow):
                    failure = failure or str(exc)
                continue
            if isinstance(outcome, CapHit):
                reason = f"{outcome.describe()}"
                self._defer(state, step.name, reason, outcome)
                return StepOutcome(
                    "deferred",
                    reason,
                    tier=tier,
                    model=candidate.key,
                    attempts=used - 1,
                    failure=failure or "",
                    cap=outcome,
                )
            assert isinstance(outcome, CallOutcome)
            if outcome.error is not None:
                error = outcome.error
                if isinstance(error, (BackendUnavailable, RateLimited, ModelNotFound)):
                    drop(f"{candidate.key}: {error}")  # the provider refused it: not the model's failure
                    attempt -= 1
                    continue
                failure = f"the call failed: {error}"
                if isinstance(error, BadRequest):
                    break
                continue
            assert outcome.result is not None
            answer = extract_answer(outcome.result.text)
            passed, detail = await self._apply_and_verify(state, step, answer, tier, used, candidate.key)
            self.ledger.record_attempt(
                agent=state.agent,
                run_id=state.run_id,
                step=step.name,
                tier=tier,
                model=candidate.key,
                attempt=used,
                passed=passed,
                failure=detail,
            )
            rising = breaker.check_rising_input(self.ledger, state.agent, step.name, self.config.file.breaker)
            if rising is not None:
                state.pause_after = rising
                return StepOutcome(
                    "paused",
                    f"runaway breaker: {rising.message}",
                    tier=tier,
                    model=candidate.key,
                    attempts=used,
                    failure=detail,
                )
            if passed:
                self._emit(
                    StepVerified(
                        agent=state.agent,
                        run_id=state.run_id,
                        step=step.name,
                        tier=tier,
                        model=candidate.key,
                        attempt=used,
                    )
                )
                return StepOutcome("passed", tier=tier, model=candidate.key, attempts=used)
            failure = detail
            trip = breaker.check_repeated_failure(self.ledger, state.agent, step.name, tier, self.config.file.breaker)
            if trip is not None:
                state.pause_after = trip
                self._emit(
                    Notice(
                        agent=state.agent,
                        run_id=state.run_id,
                        message=f"runaway breaker: {trip.message}; escalating",
                        level="warning",
                    )
                )
                break
        return StepOutcome(
            "failed",
            f"{tier} did not pass",
            tier=tier,
            model=last_model,
            attempts=used,
            failure=failure or "",
        )

    async def _apply_and_verify(
        self, state: _RunState, step: StepConfig, answer: str, tier: str, attempt: int, model: str
    ) -> tuple[bool, str]:
        """Write the answer (or keep it as an artifact), run every gate; on failure restore what the attempt touched."""
        limits = self.config.file.limits
        snapshot = Snapshot.take(
            state.workspace,
            self.home / "snapshots" / f"{state.run_id}-attempt",
            ignore=limits.snapshot_ignore,
            max_bytes=limits.max_snapshot_bytes,
            base=state.snapshot,
        )
        try:
            if step.writes:
                target = resolve_inside(state.workspace, step.writes)
                ignored = set(limits.snapshot_ignore) & set(Path(step.writes).parts)
                if ignored:
                    raise WorkspaceError(
                        f"step {step.name!r} may not write {step.writes}: {', '.join(sorted(ignored))} is left out of "
                        "workspace snapshots, so a failed attempt could not be undone",
                        "write somewhere else, or remove that directory from limits.snapshot_ignore",
                    )
                atomic_write(target, answer.encode("utf-8"))
            else:
                name = step.output or step.name
                artifact = self.home / "agents" / state.agent / "artifacts" / str(state.run_id) / name
                artifact.parent.mkdir(parents=True, exist_ok=True)
                artifact.write_text(self.ledger.redactor.scrub(answer), encoding="utf-8")  # under our data dir
                state.artifacts[name] = str(artifact)
            passed, detail = True, ""
            if state.planning_step is step:
                passed, detail = self._check_plan(state, answer, tier, model, attempt)
            if passed:
                passed, detail = await self._run_gates(
                    state, step.name, step.verify, answer=answer, tier=tier, attempt=attempt
                )
        except WorkspaceError as exc:
            passed, detail = False, str(exc)
        except BaseException:
            restored, removed = snapshot.restore()
            snapshot.discard()
            raise
        if not passed:
            restored, removed = snapshot.restore()
            self._emit(
                WorkspaceRestored(
                    agent=state.agent,
                    run_id=state.run_id,
                    step=step.name,
                    files_restored=restored,
                    files_removed=removed,
                    scope="attempt",
                )
            )
        snapshot.discard()
        return passed, detail

    def _check_plan(self, state: _RunState, answer: str, tier: str, model: str, attempt: int) -> tuple[bool, str]:
        from supervisor.runtime.planner import validate_plan

        result = validate_plan(answer, state.cfg, self.config.file.limits.snapshot_ignore)
        self.ledger.record_plan(
            agent=state.agent,
            run_id=state.run_id,
            tier=tier,
            model=model,
            plan=answer,
            valid=result.passed,
            error="" if result.passed else result.output,
        )
        steps = 0
        if result.passed:
            steps = len(json.loads(answer)["steps"])
        self._emit(
            PlanRecorded(
                agent=state.agent,
                run_id=state.run_id,
                tier=tier,
                model=model,
                valid=result.passed,
                error="" if result.passed else result.output,
                steps=steps,
            )
        )
        self._emit(
            GateChecked(
                agent=state.agent,
                run_id=state.run_id,
                step=PLAN_STEP,
                gate="plan",
                passed=result.passed,
                output=result.output,
                tier=tier,
                attempt=attempt,
            )
        )
        return result.passed, "" if result.passed else f"plan: {result.output}"

    def _defer(self, state: _RunState, step: str, reason: str, cap: CapHit | None = None) -> None:
        state.decisions.append(f"{self.clock():%Y-%m-%d %H:%M} deferred at step {step}: {reason}")
        self._emit(
            AgentDeferred(
                agent=state.agent,
                run_id=state.run_id,
                step=step,
                reason=reason,
                cap=cap.cap if cap else None,
                resets_at=cap.resets_at if cap else None,
            )
        )

    # ----------------------------------------------------------------------------------------------------
    # Approvals

    async def _ask_approval(
        self, state: _RunState, step: StepConfig, candidate: Candidate, failure: str | None, limits: Any
    ) -> StepOutcome:
        existing = self.ledger.open_approval_for(state.agent, step.name, "frontier")
        if existing is not None and existing.state == "pending":
            approval_id = existing.id
        else:
            approval_id = self._request_approval(state, step, candidate, failure)
        state.approval_id = approval_id
        self.ledger.set_agent_state(
            state.agent,
            "waiting_approval",
            f"approval #{approval_id}: {step.name} -> {candidate.key}",
            run_id=state.run_id,
            step=step.name,
            tier="frontier",
            model=candidate.key,
        )
        self._emit(
            AgentStateChanged(
                agent=state.agent,
                run_id=state.run_id,
                state="waiting_approval",
                reason=f"approval #{approval_id}",
            )
        )
        decision = await self._wait_approval(approval_id, state)
        if decision is None:
            return StepOutcome(
                "waiting_approval",
                f"waiting for approval #{approval_id} (`supervisor approve {approval_id}`)",
                approval_id=approval_id,
            )
        self.ledger.set_agent_state(
            state.agent,
            "running",
            f"approval #{approval_id} {'approved' if decision else 'denied'}",
            run_id=state.run_id,
        )
        if not decision:
            state.decisions.append(
                f"{self.clock():%Y-%m-%d %H:%M} approval #{approval_id} denied ({step.name} -> frontier)"
            )
            return StepOutcome("denied", f"approval #{approval_id} denied", approval_id=approval_id)
        if not self.ledger.consume_approval(approval_id):
            return StepOutcome("denied", f"approval #{approval_id} was already used", approval_id=approval_id)
        state.decisions.append(
            f"{self.clock():%Y-%m-%d %H:%M} approval #{approval_id} approved ({step.name} -> frontier)"
        )
        return StepOutcome("passed", approval_id=approval_id)

    def _request_approval(self, state: _RunState, step: StepConfig, candidate: Candidate, failure: str | None) -> int:
        context = []
        with contextlib.suppress(PromptTooLarge, WorkspaceError):
            context = read_context(state.workspace, step, self.config.file.limits.max_context_file_bytes)
        messages = build_messages(
            state.agent,
            state.cfg,
            step,
            digest=state.digest,
            context=context,
            failure=self._clean_failure(failure, state.workspace),
            failure_chars=self.config.file.limits.failure_excerpt_chars,
        )
        from supervisor.backends.base import estimate_tokens

        prefix = estimate_tokens(messages[:1])
        other = estimate_tokens(messages[1:])
        output = min(step.max_output_tokens, candidate.spec.max_output_tokens)
        estimate = estimate_call(candidate.spec, prefix, other, output, self.clock())
        left = caps_left(self.ledger, self.config, state.agent, state.run_id, self.clock())
        reason = (failure or "the lower tiers could not serve this step").strip()
        approval_id = self.ledger.request_approval(
            agent=state.agent,
            run_id=state.run_id,
            step=step.name,
            tier="frontier",
            model=candidate.key,
            reason=reason[:4000],
            est_cold_micros=estimate.cold_micros,
            est_warm_micros=estimate.warm_micros,
            caps_left=left,
            simulated=candidate.simulated,
        )
        self._emit(
            EscalationRequested(
                agent=state.agent,
                run_id=state.run_id,
                approval_id=approval_id,
                step=step.name,
                model=candidate.key,
                reason=reason[:2000],
                est_cold_micros=estimate.cold_micros,
                est_warm_micros=estimate.warm_micros,
                caps_left=left,
                simulated=candidate.simulated,
            )
        )
        return approval_id

    async def _wait_approval(self, approval_id: int, state: _RunState) -> bool | None:
        """True/False once decided (here or in another process); None if still pending when the wait ends."""
        if state.approver is not None:
            row = self.ledger.approval(approval_id)
            request = EscalationRequested(
                agent=state.agent,
                run_id=state.run_id,
                approval_id=approval_id,
                step=row.step if row else "",
                model=row.model if row else "",
                reason=row.reason if row else "",
                est_cold_micros=row.est_cold_micros if row else None,
                est_warm_micros=row.est_warm_micros if row else None,
                caps_left=row.caps_left if row else {},
            )
            answer = await state.approver(request)
            if answer is not None:
                current = self.ledger.approval(approval_id)
                if current is not None and current.state == "pending":
                    (self.approve if answer else self.deny)(approval_id, "terminal")
                    self._emit(
                        ApprovalDecided(
                            agent=state.agent,
                            run_id=state.run_id,
                            approval_id=approval_id,
                            approved=answer,
                            by="terminal",
                        )
                    )
        timeout = state.approval_timeout_s
        event = self._approval_events.setdefault(approval_id, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                row = self.ledger.approval(approval_id)
                if row is None:
                    return None
                if row.state in ("approved", "denied"):
                    # Whoever decided (the CLI, a TUI, the terminal approver) recorded the decision event.
                    return row.state == "approved"
                if row.state != "pending":
                    return False
                if deadline is not None and loop.time() >= deadline:
                    return None
                wait = APPROVAL_POLL_S if deadline is None else max(0.0, min(APPROVAL_POLL_S, deadline - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=wait)
                event.clear()
        finally:
            self._approval_events.pop(approval_id, None)


def _summary(name: str, outcome: StepOutcome) -> StepSummary:
    return StepSummary(
        name,
        outcome.status,
        outcome.tier,
        outcome.model,
        outcome.attempts,
        outcome.failure if outcome.status != "passed" else "",
    )


def _run_outcome(step: StepOutcome) -> tuple[Outcome, str]:
    mapping: dict[str, Outcome] = {
        "failed": "failed",
        "exhausted": "exhausted",
        "denied": "denied",
        "deferred": "deferred",
        "waiting_approval": "waiting_approval",
        "paused": "paused",
    }
    return mapping[step.status], step.reason


def _record_lines(summary: RunSummary, events: list[Event]) -> list[str]:
    """The full record of a run (``runs/<id>.md``): never sent to a model."""
    lines = [
        f"# Run {summary.run_id} of {summary.agent}",
        "",
        f"- trigger: {summary.trigger}",
        f"- started: {summary.started_at}",
        f"- ended: {summary.ended_at}",
        f"- outcome: {summary.outcome}" + (f" ({summary.reason})" if summary.reason else ""),
        f"- cost: {summary.cost_micros} micro-USD"
        + (f", {summary.unpriced_calls} unpriced call(s)" if summary.unpriced_calls else ""),
        "",
        "## Events",
        "",
    ]
    for event in events:
        data = json.dumps(event.data(), default=str, ensure_ascii=False)
        lines.append(f"- {event.at:%H:%M:%S} {event.kind} {data}")
    return lines


def recover(runtime: Runtime) -> list[str]:
    """After a crash: reconcile the ledger, stop what the dead runs left running, put their workspaces back.

    Every leftover snapshot of a run that is not running any more is handled, not only the runs reconciled
    just now, so a crash during an earlier recovery is finished by the next one.
    """
    import shutil

    from supervisor.runtime.process import kill_recorded_groups

    report = runtime.ledger.reconcile()
    notes: list[str] = []
    snapshots = runtime.home / "snapshots"
    for directory in sorted(snapshots.iterdir()) if snapshots.is_dir() else []:
        run_text = directory.name.removesuffix("-attempt")
        if not run_text.isdigit():
            continue
        run_id = int(run_text)
        row = runtime.ledger.run(run_id)
        if row is not None and row["outcome"] == "running":
            continue  # a live run in another process (reconcile has already crashed the dead ones)
        if directory.name.endswith("-attempt"):
            shutil.rmtree(directory, ignore_errors=True)  # the run's own snapshot covers what it held
            continue
        killed = kill_recorded_groups(directory / CHILDREN_FILE)
        snapshot = Snapshot.load(directory)
        agent = row["agent"] if row else None
        if snapshot is not None and (row is None or row["outcome"] != "success"):
            try:
                restored, removed = snapshot.restore()
            except WorkspaceError as exc:  # damaged snapshot: say so, never make it worse
                notes.append(f"run {run_id} ({agent}): the workspace could not be restored: {exc.message}")
                snapshot.discard()
                continue
            runtime.bus.publish(
                WorkspaceRestored(
                    agent=agent, run_id=run_id, step=None, files_restored=restored, files_removed=removed, scope="crash"
                )
            )
            extra = f"; stopped {killed} leftover process(es)" if killed else ""
            notes.append(
                f"run {run_id} ({agent}) was interrupted: workspace restored ({restored} put back, {removed} removed){extra}"
            )
        if snapshot is not None:
            snapshot.discard()
        else:
            shutil.rmtree(directory, ignore_errors=True)
    if report.released_reservations or report.charged_reservations:
        notes.append(
            f"reconciled {report.released_reservations + report.charged_reservations} reservation(s) left by a crash "
            f"({report.charged_reservations} kept as possibly billed)"
        )
    for agent in report.recovered_agents:
        notes.append(f"agent {agent} was left running by a stopped supervisor; it is idle again")
    for note in notes:
        runtime.bus.publish(Notice(message=note, level="warning"))
    return notes
