"""Events as text for the terminal: a readable log, or JSON lines (``--json``). The headless face of the TUI."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from supervisor.cost import format_usd
from supervisor.render import sanitize, tool_call_text
from supervisor.runtime.events import (
    AgentDeferred,
    BreakerTripped,
    CallRecorded,
    CommandFinished,
    Escalated,
    EscalationRequested,
    Event,
    GateChecked,
    GatewayRefused,
    ModelSubstituted,
    Notice,
    ProgramFinished,
    ProgramOutput,
    ProgramStarted,
    RunFinished,
    RunStarted,
    StepFinished,
    StepVerified,
    TierSkipped,
    TurnFinished,
    WorkerFinished,
    WorkspaceRestored,
)
from supervisor.runtime.program import program_summary


def describe(event: Event) -> str | None:
    """One line for ``event``, or None for events not worth a line of their own."""
    who = event.agent or "-"
    if isinstance(event, RunStarted):
        sim = " [simulated tiers]" if event.simulated else ""
        return f"{who}: run {event.run_id} started ({event.trigger}){sim}: {', '.join(event.steps) or 'planner'}"
    if isinstance(event, CommandFinished):
        status = "timed out" if event.timed_out else f"exit {event.exit_code}"
        return f"{who}: {event.step}: tier 0 $ {event.command} -> {status} ({event.seconds:.2f}s)"
    if isinstance(event, CallRecorded) and event.turn is not None and not event.error_class:
        return None  # the turn's own line carries its tokens and cost
    if isinstance(event, CallRecorded):
        sim = " simulated" if event.simulated else ""
        if event.error_class:
            return f"{who}: {event.step}: {event.tier} {event.model} attempt {event.attempt}: {event.error_class}: {event.error[:200]}"
        cost = format_usd(event.cost_micros) if event.priced else "unpriced (usage unknown)"
        tokens = f"{event.input_uncached or 0} in"
        if event.cache_read:
            tokens += f" + {event.cache_read} cached"
        tokens += f" / {event.output if event.output is not None else '?'} out"
        stopped = " (stopped: looping)" if event.finish_reason == "looping" else ""
        return (
            f"{who}: {event.step}: {event.tier} {event.model} attempt {event.attempt}: {tokens}, {cost}{sim}{stopped}"
        )
    if isinstance(event, TurnFinished):
        calls = "; ".join(tool_call_text(c) for c in event.tools) or f"no tool call: {event.note[:160]}"
        cost = format_usd(event.cost_micros) if event.priced else "unpriced"
        return (
            f"{who}: {event.step}: {event.tier} turn {event.turn}/{event.max_turns}: {calls} "
            f"({event.input_tokens if event.input_tokens is not None else '?'} in / "
            f"{event.output_tokens if event.output_tokens is not None else '?'} out, {cost})"
        )
    if isinstance(event, WorkerFinished):
        return f"{who}: {event.step}: worker stopped after {event.turns} turn(s) ({event.end}): {event.summary[:200]}"
    if isinstance(event, ProgramStarted):
        return (
            f"{who}: {event.step}: {event.tier} attempt {event.attempt}: agent program started (pid {event.pid}, "
            f"model {event.model!r}, key {event.key_prefix}...): $ {event.command}"
        )
    if isinstance(event, ProgramOutput):
        lines = [line for line in event.text.splitlines() if line.strip()]
        return "\n".join(f"{who}: {event.step}: | {line[:300]}" for line in lines) or None
    if isinstance(event, ProgramFinished):
        return f"{who}: {event.step}: {program_summary(event)}"
    if isinstance(event, GateChecked):
        verdict = "passed" if event.passed else "FAILED"
        detail = "" if event.passed else " -- " + " ".join(event.output.split())[-200:]
        return f"{who}: {event.step}: gate {event.gate}: {verdict}{detail}"
    if isinstance(event, WorkspaceRestored):
        return f"{who}: workspace restored ({event.scope}): {event.files_restored} file(s) put back, {event.files_removed} removed"
    if isinstance(event, Escalated):
        return f"{who}: {event.step}: escalating {event.from_tier} -> {event.to_tier}"
    if isinstance(event, TierSkipped):
        return f"{who}: {event.step}: skipping {event.tier}: {event.reason}"
    if isinstance(event, StepVerified):
        return f"{who}: {event.step}: verified at {event.tier} ({event.model})"
    if isinstance(event, StepFinished) and event.outcome != "passed":
        return f"{who}: {event.step}: {event.outcome}"
    if isinstance(event, EscalationRequested):
        return (
            f"{who}: approval #{event.approval_id} needed: {event.step} -> {event.model}; estimated "
            f"{format_usd(event.est_cold_micros)} cold cache / {format_usd(event.est_warm_micros)} warm"
        )
    if isinstance(event, AgentDeferred):
        return f"{who}: deferred: {event.reason}"
    if isinstance(event, BreakerTripped):
        return f"{who}: RUNAWAY BREAKER ({event.rule}): {event.message}; paused until `supervisor resume {who}`"
    if isinstance(event, ModelSubstituted):
        return f"{who}: gateway: {event.requested!r} served by {event.served} ({event.reason})"
    if isinstance(event, GatewayRefused):
        return f"{who}: gateway refused {event.requested!r} ({event.status}): {event.reason}"
    if isinstance(event, Notice):
        return f"{who}: {event.level}: {event.message}"
    if isinstance(event, RunFinished):
        unpriced = f", {event.unpriced_calls} unpriced" if event.unpriced_calls else ""
        reason = f" ({event.reason})" if event.reason else ""
        return f"{who}: run {event.run_id} {event.outcome}{reason}: {event.calls} call(s), {format_usd(event.cost_micros)}{unpriced}"
    return None


class Printer:
    """Subscribes to a runtime's events and writes them as they happen."""

    def __init__(self, *, as_json: bool, out: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout

    def __call__(self, event: Event) -> None:
        if self.as_json:
            if event.persist:
                self.out.write(json.dumps(event.to_json(), default=str, ensure_ascii=False) + "\n")
                self.out.flush()
            return
        text = describe(event)
        if text is not None:
            stamp = f"{event.at.astimezone():%H:%M:%S}"
            self.out.write("".join(f"{stamp} {sanitize(line)}\n" for line in text.split("\n")))
            self.out.flush()
