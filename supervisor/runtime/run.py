"""One run of an agent, from its ledger row to its digest: the run lifecycle.

A run snapshots the workspace, then runs each step in order (``StepRunner``); one that does not succeed puts
the workspace back byte for byte. Whatever happens, even a cancellation, ``_finish`` restores or keeps the
workspace, writes the digest and the full record, settles the agent's state and emits ``RunFinished``.
``recover`` does the same for runs a crash left behind.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from supervisor.config import AgentConfig, Config, StepConfig
from supervisor.cost import format_usd
from supervisor.errors import SupervisorError
from supervisor.ledger.ledger import AgentState
from supervisor.runtime import breaker
from supervisor.runtime.agent_state import change_state, pause, paused_reason
from supervisor.runtime.budget import cap_limits
from supervisor.runtime.events import (
    AgentStateChanged,
    BreakerTripped,
    DigestWritten,
    EscalationRequested,
    Event,
    Notice,
    ProgramFinished,
    RunFinished,
    RunStarted,
    TurnFinished,
    WorkspaceRestored,
)
from supervisor.runtime.memory import RunSummary, StepSummary
from supervisor.runtime.planner import PLAN_STEP
from supervisor.runtime.process import CHILDREN_FILE
from supervisor.runtime.workspace import Snapshot, WorkspaceError

if TYPE_CHECKING:
    from supervisor.runtime.program import AttemptGateway
    from supervisor.runtime.runtime import Runtime
    from supervisor.runtime.steps import StepOutcome

Outcome = Literal["success", "failed", "exhausted", "denied", "deferred", "waiting_approval", "paused", "cancelled"]

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

# An approver asks a human (e.g. y/n on the terminal) and returns True/False, or None to leave it pending.
Approver = Callable[[EscalationRequested], Awaitable[bool | None]]


class AgentPaused(Exception):
    """The agent was paused before the run could start: it stops with outcome ``paused``."""


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
class RunState:
    """What one run accumulates while it goes (steps, the planner and approvals read and add to it)."""

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
    gateway: AttemptGateway | None = None  # a gateway started for this run's agent steps (closed at its end)
    gateway_exit: AsyncExitStack | None = None

    @property
    def scheduled(self) -> bool:
        return self.trigger == "schedule"


async def execute_run(
    runtime: Runtime,
    agent: str,
    cfg: AgentConfig,
    trigger: str,
    approval_timeout_s: float | None,
    approver: Approver | None,
) -> RunResult:
    """Start the run's ledger row, run its steps, and finish it whatever happens."""
    simulated = agent_simulated(runtime.config, cfg)
    workspace = runtime.config.workspace(agent)  # before the run row: a bad path must not leave a run "running"
    run_id = runtime.ledger.start_run(agent, trigger, simulated=simulated, now=runtime.clock())
    runtime.own_run(run_id)
    events: list[Event] = []
    unsubscribe = runtime.bus.subscribe(lambda e: events.append(e) if e.run_id == run_id and e.persist else None)
    started = change_state(
        runtime.ledger,
        runtime.bus,
        agent,
        "running",
        f"run {run_id} ({trigger})",
        run_id=run_id,
        event=AgentStateChanged(agent=agent, run_id=run_id, state="running", reason=trigger),
    )
    runtime.bus.publish(
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
    state: RunState | None = None
    tier_reached: str | None = None
    try:
        if not started.applied:
            # Paused (from another process) after run_agent looked: the run stops before its first step.
            raise AgentPaused(paused_reason(agent, started))
        if not workspace.is_dir():
            raise WorkspaceError(f"workspace {workspace} does not exist", f"create it or fix agents.{agent}.workspace")
        limits = runtime.config.file.limits
        snapshot = Snapshot.take(
            workspace,
            runtime.home / "snapshots" / str(run_id),
            ignore=limits.snapshot_ignore,
            max_bytes=limits.max_snapshot_bytes,
        )
        state = RunState(
            agent,
            cfg,
            run_id,
            trigger,
            workspace,
            snapshot,
            runtime.memory(agent).digest(),
            approval_timeout_s,
            approver,
        )
        outcome, reason, tier_reached = await _run_steps(runtime, state, summaries)
    except asyncio.CancelledError:
        outcome, reason = "cancelled", "cancelled"
        row = runtime.ledger.agent(agent)
        if row is not None and row["state"] == "paused":
            outcome, reason = "paused", row["state_reason"]
        raise
    except AgentPaused as exc:
        outcome, reason = "paused", str(exc)
    except SupervisorError as exc:
        outcome, reason = "failed", str(exc)
        runtime.bus.publish(Notice(agent=agent, run_id=run_id, message=str(exc), level="error"))
    finally:
        outcome, reason = await _finish(runtime, run_id, agent, state, outcome, reason, summaries, events, trigger)
        unsubscribe()
    totals = runtime.ledger.query(
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


async def _run_steps(
    runtime: Runtime, state: RunState, summaries: list[StepSummary]
) -> tuple[Outcome, str, str | None]:
    """Run the configured steps (or, in planner mode, plan them first and check the agent's gates at the end)."""
    steps = state.cfg.steps
    tier_reached: str | None = None
    if state.cfg.planner_mode:
        from supervisor.runtime.planner import plan_steps

        steps, plan_outcome = await plan_steps(runtime.steps, state)
        if plan_outcome is not None:
            summaries.append(_summary(PLAN_STEP, plan_outcome))
            return (*_run_outcome(plan_outcome), plan_outcome.tier)
    for step in steps:
        step_outcome = await runtime.steps.run(state, step)
        summaries.append(_summary(step.name, step_outcome))
        tier_reached = step_outcome.tier or tier_reached
        if step_outcome.status != "passed":
            return (*_run_outcome(step_outcome), tier_reached)
    if state.cfg.planner_mode:
        passed, detail = await runtime.steps.run_gates(
            state, "verify", state.cfg.verify, answer=None, tier=None, attempt=0
        )
        if not passed:
            return "failed", f"the agent's verify gate failed after the plan ran: {detail[:300]}", tier_reached
    return "success", "", tier_reached


async def _finish(
    runtime: Runtime,
    run_id: int,
    agent: str,
    state: RunState | None,
    outcome: Outcome,
    reason: str,
    summaries: list[StepSummary],
    events: list[Event],
    trigger: str,
) -> tuple[Outcome, str]:
    """Restore or keep the workspace, write the digest, settle the agent's state: even when cancelled.

    Returns the final outcome and reason (the breaker may turn a finished run into a paused one)."""
    emit = runtime.bus.publish
    if state is not None and state.gateway_exit is not None:
        exit_stack, state.gateway, state.gateway_exit = state.gateway_exit, None, None
        await exit_stack.aclose()  # the run's own gateway: nothing of the run may outlive it
    if state is not None:
        if outcome != "success":
            restored, removed = state.snapshot.restore()
            if restored or removed:
                emit(
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
    cfg = runtime.config.agents.get(agent)
    now = runtime.clock()
    if state is not None and state.pause_after is None:
        state.pause_after = check_hourly(runtime, state)
    if state is not None and state.pause_after is not None:
        trip_breaker(runtime, agent, run_id, state.pause_after)
        if outcome == "success":
            reason = f"succeeded, then paused by the runaway breaker: {state.pause_after.message}"
        else:
            outcome, reason = "paused", f"runaway breaker: {state.pause_after.message}"
    totals = runtime.ledger.query(
        "SELECT coalesce(sum(cost_micros), 0), count(*), coalesce(sum(1 - priced), 0) FROM calls WHERE run_id = ?",
        (run_id,),
    )[0]
    row = runtime.ledger.run(run_id)
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
            path, tokens = runtime.memory(agent).record_run(summary, record_lines(summary, events))
            emit(DigestWritten(agent=agent, run_id=run_id, path=str(path), tokens=tokens))
        except OSError as exc:
            emit(
                Notice(
                    agent=agent,
                    run_id=run_id,
                    message=f"could not write the digest: {exc}",
                    level="error",
                )
            )
    runtime.ledger.finish_run(run_id, outcome, reason, now=runtime.clock())
    # Refused (nothing written) when the agent was paused meanwhile: it stays paused.
    after = AGENT_STATE_AFTER[outcome]
    change_state(
        runtime.ledger,
        runtime.bus,
        agent,
        after,
        reason,
        event=AgentStateChanged(agent=agent, run_id=run_id, state=after, reason=reason),
    )
    emit(
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


def check_hourly(runtime: Runtime, state: RunState) -> breaker.Trip | None:
    """The runaway breaker's hourly-spend rule for this run's agent (only for agents with a day cap)."""
    if not state.cfg.caps.day_usd:
        return None
    limits = cap_limits(runtime.config, state.cfg)
    return breaker.check_hourly_spend(
        runtime.ledger, state.agent, limits.agent_day_micros, runtime.config.file.breaker, runtime.clock()
    )


def trip_breaker(runtime: Runtime, agent: str, run_id: int | None, trip: breaker.Trip) -> None:
    """Record the trip with its evidence and pause the agent (the runtime's runs and the gateway both call it)."""
    runtime.bus.publish(
        BreakerTripped(agent=agent, run_id=run_id, rule=trip.rule, message=trip.message, evidence=trip.evidence)
    )
    pause(
        runtime.ledger,
        runtime.bus,
        agent,
        "breaker",
        f"runaway breaker ({trip.rule}): {trip.message}",
        event=AgentStateChanged(agent=agent, run_id=run_id, state="paused", reason=f"runaway breaker: {trip.rule}"),
    )


def agent_simulated(config: Config, cfg: AgentConfig) -> bool:
    """Does any tier the agent's steps may reach use a simulated (scripted) provider?"""
    tiers = {t for step in cfg.steps for t in (step.ladder or cfg.ladder)} or set(cfg.ladder)
    for tier in tiers:
        for key in config.tiers.models(tier):
            provider = key.partition(":")[0]
            pcfg = config.providers.get(provider)
            if pcfg is not None and pcfg.kind == "scripted":
                return True
    return False


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


def record_lines(summary: RunSummary, events: list[Event]) -> list[str]:
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
    ]
    turns = [e for e in events if isinstance(e, TurnFinished)]
    if turns:
        lines += ["## Turns", "", *(turn_line(t) for t in turns), ""]
    programs = [e for e in events if isinstance(e, ProgramFinished)]
    if programs:
        from supervisor.runtime.program import program_summary

        lines += ["## Agent program attempts", "", *(f"- {e.step}: {program_summary(e)}" for e in programs), ""]
    lines += ["## Events", ""]
    for event in events:
        data = json.dumps(event.data(), default=str, ensure_ascii=False)
        lines.append(f"- {event.at:%H:%M:%S} {event.kind} {data}")
    return lines


def turn_line(turn: TurnFinished) -> str:
    """One built-in worker turn in the run record: every call with its result's first line, tokens and cost."""
    calls = []
    for call in turn.tools:
        result = next((line.strip() for line in str(call.get("result", "")).splitlines() if line.strip()), "")
        mark = "error: " if call.get("error") else ""
        calls.append(f"{call.get('tool')}({call.get('arguments', '')}) -> {mark}{result[:160]}")
    if turn.note:
        calls.append(f"note: {' '.join(turn.note.split())[:200]}")
    cost = format_usd(turn.cost_micros, places=6) if turn.priced and turn.cost_micros is not None else "unpriced"
    tokens = f"{turn.input_tokens if turn.input_tokens is not None else '?'} in / "
    tokens += f"{turn.output_tokens if turn.output_tokens is not None else '?'} out"
    body = "; ".join(calls) or "no tool call"
    return (
        f"- attempt {turn.attempt} turn {turn.turn}/{turn.max_turns} ({turn.tier} {turn.model}, call {turn.call_id}): "
        f"{body}; {tokens}, {cost}"
    )


def recover(runtime: Runtime) -> list[str]:
    """After a crash: reconcile the ledger, stop what the dead runs left running, put their workspaces back.

    Every leftover snapshot of a run that is not running any more is handled, not only the runs reconciled
    just now, so a crash during an earlier recovery is finished by the next one.
    """
    import shutil

    from supervisor.runtime.process import kill_recorded_groups

    report = runtime.ledger.reconcile()
    runtime.ledger.revoke_finished_attempt_keys()  # an agent step's key dies with its run, even a crashed one
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
