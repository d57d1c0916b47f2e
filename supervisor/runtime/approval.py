"""The approval sub-protocol: a step that needs the frontier tier asks a human, and waits.

The request is a ledger row (with the call's estimated cost and the caps left) and an ``EscalationRequested``
event. The decision may come from anywhere: this process (the TUI's runtime API, a terminal approver) wakes the
waiting run at once; another process (``supervisor approve``, an attached TUI) writes the ledger, which the
wait polls every ``APPROVAL_POLL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from supervisor.config import StepConfig
from supervisor.errors import PromptTooLarge
from supervisor.runtime.agent_state import change_state, paused_reason
from supervisor.runtime.budget import caps_left, estimate_call
from supervisor.runtime.events import AgentStateChanged, ApprovalDecided, EscalationRequested
from supervisor.runtime.prompt import build_messages, clean_failure, read_context
from supervisor.runtime.router import Candidate
from supervisor.runtime.steps import StepOutcome
from supervisor.runtime.workspace import WorkspaceError

if TYPE_CHECKING:
    from supervisor.runtime.run import RunState
    from supervisor.runtime.runtime import Runtime

APPROVAL_POLL_S = 0.25


class Approvals:
    """Asks for, decides and waits on approvals for ``runtime``'s runs."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._events: dict[int, asyncio.Event] = {}

    def decide(self, approval_id: int, approve: bool, by: str) -> None:
        """Record a decision and wake the run waiting on it in this process, if any."""
        self.runtime.ledger.decide_approval(approval_id, approve, by)
        event = self._events.get(approval_id)
        if event is not None:
            event.set()

    async def ask(self, state: RunState, step: StepConfig, candidate: Candidate, failure: str | None) -> StepOutcome:
        """Ask (or keep asking, for an approval already pending) to run ``step`` at the frontier tier."""
        rt = self.runtime
        existing = rt.ledger.open_approval_for(state.agent, step.name, "frontier")
        if existing is not None and existing.state == "pending":
            approval_id = existing.id
        else:
            approval_id = self._request(state, step, candidate, failure)
        state.approval_id = approval_id
        waiting = change_state(
            rt.ledger,
            rt.bus,
            state.agent,
            "waiting_approval",
            f"approval #{approval_id}: {step.name} -> {candidate.key}",
            run_id=state.run_id,
            step=step.name,
            tier="frontier",
            model=candidate.key,
            event=AgentStateChanged(
                agent=state.agent,
                run_id=state.run_id,
                state="waiting_approval",
                reason=f"approval #{approval_id}",
            ),
        )
        if not waiting.applied:
            return StepOutcome("paused", paused_reason(state.agent, waiting), approval_id=approval_id)
        decision = await self._wait(approval_id, state)
        if decision is None:
            return StepOutcome(
                "waiting_approval",
                f"waiting for approval #{approval_id} (`supervisor approve {approval_id}`)",
                approval_id=approval_id,
            )
        running = change_state(
            rt.ledger,
            rt.bus,
            state.agent,
            "running",
            f"approval #{approval_id} {'approved' if decision else 'denied'}",
            run_id=state.run_id,
        )
        if not running.applied:
            return StepOutcome("paused", paused_reason(state.agent, running), approval_id=approval_id)
        if not decision:
            state.decisions.append(
                f"{rt.clock():%Y-%m-%d %H:%M} approval #{approval_id} denied ({step.name} -> frontier)"
            )
            return StepOutcome("denied", f"approval #{approval_id} denied", approval_id=approval_id)
        if not rt.ledger.consume_approval(approval_id):
            return StepOutcome("denied", f"approval #{approval_id} was already used", approval_id=approval_id)
        state.decisions.append(
            f"{rt.clock():%Y-%m-%d %H:%M} approval #{approval_id} approved ({step.name} -> frontier)"
        )
        return StepOutcome("passed", approval_id=approval_id)

    def _request(self, state: RunState, step: StepConfig, candidate: Candidate, failure: str | None) -> int:
        rt = self.runtime
        limits = rt.config.file.limits
        context = []
        with contextlib.suppress(PromptTooLarge, WorkspaceError):
            context = read_context(state.workspace, step, limits.max_context_file_bytes)
        messages = build_messages(
            state.agent,
            state.cfg,
            step,
            digest=state.digest,
            context=context,
            failure=clean_failure(
                failure, state.workspace, rt.ledger.redactor, rt.config.file.limits.failure_excerpt_chars
            ),
            failure_chars=limits.failure_excerpt_chars,
        )
        from supervisor.backends.base import estimate_tokens

        prefix = estimate_tokens(messages[:1])
        other = estimate_tokens(messages[1:])
        output = min(step.max_output_tokens, candidate.spec.max_output_tokens)
        estimate = estimate_call(candidate.spec, prefix, other, output, rt.clock())
        cold, warm = estimate.cold_micros, estimate.warm_micros
        if step.uses_tools:
            # A worker's loop: up to max_turns calls, each with the tools and a transcript at its budget; the
            # prefix written to the cache by the first turn is read back by the others.
            from supervisor.runtime.tools import tool_specs

            tools = estimate_tokens((), tool_specs(step.tools or (), step.commands)) - estimate_tokens(())
            turn = estimate_call(
                candidate.spec, prefix + tools, other + limits.tool_transcript_tokens, output, rt.clock()
            )
            cold = turn.cold_micros + (step.turn_limit - 1) * turn.warm_micros
            warm = step.turn_limit * turn.warm_micros
        reason = (failure or "the lower tiers could not serve this step").strip()
        if step.is_agent_step:
            # An agent program's calls are its own: bound by max_calls at the per-call worst case, and the
            # attempt cap. The approval comes before the program starts.
            from supervisor.runtime.program import attempt_estimate

            cold, why = attempt_estimate(rt.config, state.cfg, step, candidate.spec, rt.clock())
            warm = cold
            reason = f"{why}\n\n{reason}"
        left = caps_left(rt.ledger, rt.config, state.agent, state.run_id, rt.clock())
        approval_id = rt.ledger.request_approval(
            agent=state.agent,
            run_id=state.run_id,
            step=step.name,
            tier="frontier",
            model=candidate.key,
            reason=reason[:4000],
            est_cold_micros=cold,
            est_warm_micros=warm,
            caps_left=left,
            simulated=candidate.simulated,
        )
        rt.bus.publish(
            EscalationRequested(
                agent=state.agent,
                run_id=state.run_id,
                approval_id=approval_id,
                step=step.name,
                model=candidate.key,
                reason=reason[:2000],
                est_cold_micros=cold,
                est_warm_micros=warm,
                caps_left=left,
                simulated=candidate.simulated,
            )
        )
        return approval_id

    async def _wait(self, approval_id: int, state: RunState) -> bool | None:
        """True/False once decided (here or in another process); None if still pending when the wait ends."""
        rt = self.runtime
        if state.approver is not None:
            row = rt.ledger.approval(approval_id)
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
                current = rt.ledger.approval(approval_id)
                if current is not None and current.state == "pending":
                    (rt.approve if answer else rt.deny)(approval_id, "terminal")
                    rt.bus.publish(
                        ApprovalDecided(
                            agent=state.agent,
                            run_id=state.run_id,
                            approval_id=approval_id,
                            approved=answer,
                            by="terminal",
                        )
                    )
        timeout = state.approval_timeout_s
        event = self._events.setdefault(approval_id, asyncio.Event())
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                row = rt.ledger.approval(approval_id)
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
            self._events.pop(approval_id, None)
