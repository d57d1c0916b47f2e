"""The ladder walk: a model step tries its tiers cheapest first, each attempt under every cap, gated.

Each attempt builds a fresh prompt, reserves its worst case (``ModelCaller``), calls the model, writes the
answer and runs every gate (``StepRunner.apply_and_verify``); a step with tools runs the built-in worker's loop
instead (``Worker.attempt``), and an agent step runs its program against the gateway (``Programs.attempt``). A failed attempt retries with the failure; a tier
that keeps failing escalates; the frontier tier waits for a human's approval unless the agent says otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from supervisor.backends.base import OnText, Request
from supervisor.backends.repetition import LOOPING, describe_loop
from supervisor.catalog import Tier
from supervisor.config import StepConfig
from supervisor.errors import (
    BackendUnavailable,
    BadRequest,
    ContextOverflow,
    ModelNotFound,
    PromptTooLarge,
    RateLimited,
)
from supervisor.ledger import CapHit, CapLimits
from supervisor.runtime import breaker
from supervisor.runtime.agent_state import change_state, paused_reason
from supervisor.runtime.answer import extract_answer
from supervisor.runtime.budget import cap_limits
from supervisor.runtime.caller import CallOutcome
from supervisor.runtime.events import (
    AgentDeferred,
    Escalated,
    Notice,
    StepVerified,
    TextStreamed,
    TierSkipped,
)
from supervisor.runtime.prompt import ContextFile, attempt_prompt, clean_failure, read_context
from supervisor.runtime.router import Candidate
from supervisor.runtime.run import check_hourly
from supervisor.runtime.steps import Attempt, StepOutcome
from supervisor.runtime.workspace import WorkspaceError
from supervisor.secrets import StreamScrubber

if TYPE_CHECKING:
    from supervisor.runtime.run import RunState
    from supervisor.runtime.runtime import Runtime


@dataclass(slots=True)
class ModelStep:
    """One model step's walk up its ladder: what every attempt shares, and what the walk has learnt so far."""

    state: RunState
    step: StepConfig
    step_id: int
    limits: CapLimits
    failure: str | None = None  # the last gate (or call) failure, carried into the next prompt
    attempts: int = 0  # attempts made so far, over every tier


class Ladder:
    """Walks model steps up their ladders for ``runtime`` (router, caller and config are read at each call)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def run_model_step(self, state: RunState, step: StepConfig, step_id: int) -> StepOutcome:
        rt = self.runtime
        cfg = state.cfg
        ladder: list[Tier] = list(step.ladder or cfg.ladder)
        attempts_per_tier = step.attempts_per_tier or cfg.attempts_per_tier
        walk = ModelStep(state, step, step_id, cap_limits(rt.config, cfg))
        last_tier: str | None = None
        try:
            # No tier can fix a missing or oversized context file: fail the step now instead of escalating.
            read_context(state.workspace, step, rt.config.file.limits.max_context_file_bytes)
        except (PromptTooLarge, WorkspaceError) as exc:
            return StepOutcome("failed", str(exc), failure=str(exc))
        approved_frontier = self._approved_frontier(state.agent, step.name)
        if approved_frontier is not None and "frontier" in ladder:
            rt.bus.publish(
                Notice(
                    agent=state.agent,
                    run_id=state.run_id,
                    message=f"approval #{approved_frontier} granted earlier: going straight to the frontier tier",
                )
            )
            ladder = ["frontier"]
        for index, tier in enumerate(ladder):
            is_last = index == len(ladder) - 1
            if rt.config.offline and tier != "local":
                reason = "offline: the step needs a tier above local"
                self._defer(state, step.name, reason)
                return StepOutcome(
                    "deferred", reason, tier=last_tier, attempts=walk.attempts, failure=walk.failure or ""
                )
            candidates, skipped, missing = await rt.router.available(tier)
            for why in missing:  # skipped like an unreachable provider: the run goes on with what is here
                rt.bus.publish(Notice(agent=state.agent, run_id=state.run_id, message=why, level="warning"))
            skipped += missing
            if step.uses_tools:
                # A model configured as unable to use tools at all (tiers.no_tools) never gets a tool step.
                able = [c for c in candidates if rt.config.tiers.can_use_tools(tier, c.key)]
                skipped += [f"{c.key}: cannot use tools (tiers.no_tools)" for c in candidates if c not in able]
                candidates = able
            if not candidates:
                why = "; ".join(skipped) or "no models configured for this tier"
                rt.bus.publish(
                    TierSkipped(agent=state.agent, run_id=state.run_id, step=step.name, tier=tier, reason=why)
                )
                continue
            if tier != "frontier" and not is_last:
                learned = rt.router.learned_skip(state.agent, step.name, tier, current_run=state.run_id)
                if learned is not None:
                    rt.bus.publish(
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
                        attempts=walk.attempts,
                        failure=walk.failure or "",
                    )
                if approved_frontier is None and (policy == "ask" or state.scheduled):
                    decision = await rt.approvals.ask(state, step, candidates[0], walk.failure)
                    if decision.status != "passed":
                        return StepOutcome(
                            decision.status,
                            decision.reason,
                            tier=last_tier,
                            attempts=walk.attempts,
                            failure=walk.failure or "",
                            approval_id=decision.approval_id,
                        )
                tier_attempts = 1  # an approval buys one frontier attempt
            if last_tier is not None:
                rt.bus.publish(
                    Escalated(
                        agent=state.agent,
                        run_id=state.run_id,
                        step=step.name,
                        from_tier=last_tier,
                        to_tier=tier,
                        reason=(walk.failure or "")[:500],
                    )
                )
            outcome = await self._try_tier(walk, tier, candidates, tier_attempts)
            walk.attempts = outcome.attempts
            if outcome.status != "failed" or outcome.final:
                return outcome
            walk.failure = outcome.failure or walk.failure
            last_tier = tier
        return StepOutcome(
            "exhausted",
            f"step {step.name!r}: no tier on the ladder ({', '.join(ladder)}) produced an answer that passed its gates",
            tier=last_tier,
            attempts=walk.attempts,
            failure=walk.failure or "",
        )

    def _approved_frontier(self, agent: str, step: str) -> int | None:
        ledger = self.runtime.ledger
        row = ledger.open_approval_for(agent, step, "frontier")
        if row is not None and row.state == "approved" and ledger.consume_approval(row.id):
            return row.id
        return None

    def _defer(self, state: RunState, step: str, reason: str, cap: CapHit | None = None) -> None:
        rt = self.runtime
        state.decisions.append(f"{rt.clock():%Y-%m-%d %H:%M} deferred at step {step}: {reason}")
        rt.bus.publish(
            AgentDeferred(
                agent=state.agent,
                run_id=state.run_id,
                step=step,
                reason=reason,
                cap=cap.cap if cap else None,
                resets_at=cap.resets_at if cap else None,
            )
        )

    async def _try_tier(
        self,
        walk: ModelStep,
        tier: Tier,
        candidates: list[Candidate],
        attempts: int,
    ) -> StepOutcome:
        """Up to ``attempts`` attempts at ``tier``; "failed" here means: escalate.

        An attempt is one call (``_single_call``) or, for a step with tools, the built-in worker's loop of
        calls (``Worker.attempt``); both go through the same caller and end the same way (``Attempt``)."""
        rt = self.runtime
        state, step = walk.state, walk.step
        failure = walk.failure
        remaining = list(candidates)
        attempt = 0
        used = walk.attempts
        last_model: str | None = None
        while attempt < attempts and remaining:
            candidate = remaining[0]
            last_model = candidate.key
            running = change_state(
                rt.ledger,
                rt.bus,
                state.agent,
                "running",
                f"{step.name} at {tier}",
                run_id=state.run_id,
                step=step.name,
                tier=tier,
                model=candidate.key,
            )
            if not running.applied:
                # Paused from elsewhere (another terminal, the breaker): stop here, at the attempt boundary.
                return StepOutcome(
                    "paused", paused_reason(state.agent, running), tier=tier, attempts=used, failure=failure or ""
                )
            try:
                context = read_context(state.workspace, step, rt.config.file.limits.max_context_file_bytes)
            except (PromptTooLarge, WorkspaceError) as exc:
                return StepOutcome("failed", str(exc), tier=tier, attempts=used, failure=str(exc))
            attempt += 1
            used += 1

            def drop(why: str) -> None:
                remaining.pop(0)
                rt.bus.publish(Notice(agent=state.agent, run_id=state.run_id, message=why, level="warning"))

            hourly = check_hourly(rt, state)
            if hourly is not None:
                # Spending too fast: stop before the next call rather than at the end of the run.
                state.pause_after = hourly
                return StepOutcome(
                    "paused", f"runaway breaker: {hourly.message}", tier=tier, model=candidate.key, attempts=used - 1
                )
            if step.is_agent_step:
                result = await rt.programs.attempt(walk, tier, candidate, used, failure)
            elif step.uses_tools:
                result = await rt.worker.attempt(walk, tier, candidate, used, failure, context)
            else:
                result = await self._single_call(walk, tier, candidate, used, failure, context)
            if result.kind == "not_sent":
                # Nothing was sent. Too big for this model, or it cannot be reached: another model of the tier,
                # or the next tier, may serve. The attempt does not count.
                drop(result.detail)
                attempt -= 1
                used -= 1
                if result.overflow:
                    failure = failure or result.detail
                continue
            if result.kind == "dropped":
                drop(result.detail)  # the provider refused it: not the model's failure
                attempt -= 1
                continue
            if result.kind == "deferred":
                assert result.cap is not None
                reason = result.cap.describe()
                self._defer(state, step.name, reason, result.cap)
                return StepOutcome(
                    "deferred",
                    reason,
                    tier=tier,
                    model=candidate.key,
                    attempts=used if result.calls else used - 1,
                    failure=failure or "",
                    cap=result.cap,
                )
            if result.kind == "paused":
                return StepOutcome(
                    "paused", result.detail, tier=tier, model=candidate.key, attempts=used, failure=failure or ""
                )
            if result.kind == "broken":
                reason = result.detail.splitlines()[0] if result.detail else "the step cannot be done here"
                return StepOutcome("failed", reason, tier=tier, attempts=used, failure=result.detail, final=True)
            if result.kind == "call_failed":
                failure = f"the call failed: {result.error}"
                if isinstance(result.error, BadRequest):
                    break
                continue
            passed, detail = result.passed, result.detail
            rt.ledger.record_attempt(
                agent=state.agent,
                run_id=state.run_id,
                step=step.name,
                tier=tier,
                model=candidate.key,
                attempt=used,
                passed=passed,
                failure=detail,
            )
            rising = (
                None
                if result.rising_checked
                else breaker.check_rising_input(rt.ledger, state.agent, step.name, rt.config.file.breaker)
            )
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
                rt.bus.publish(
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
            trip = breaker.check_repeated_failure(rt.ledger, state.agent, step.name, tier, rt.config.file.breaker)
            if trip is not None:
                state.pause_after = trip
                rt.bus.publish(
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

    async def _single_call(
        self,
        walk: ModelStep,
        tier: Tier,
        candidate: Candidate,
        attempt: int,
        failure: str | None,
        context: list[ContextFile],
    ) -> Attempt:
        """One call: a fresh prompt, the model's answer written (or kept), every gate run."""
        rt = self.runtime
        state, step = walk.state, walk.step
        pcfg = rt.pool.provider(candidate.provider)
        limit = rt.config.file.limits.failure_excerpt_chars
        prompt = attempt_prompt(
            state.agent,
            state.cfg,
            step,
            spec=candidate.spec,
            provider=pcfg,
            local=candidate.local,
            workspace=state.workspace,
            digest=state.digest,
            context=context,
            failure=clean_failure(failure, state.workspace, rt.ledger.redactor, limit),
            failure_chars=limit,
        )
        request = Request(
            model=candidate.model_id,
            messages=prompt.messages,
            max_output_tokens=prompt.max_output_tokens,
            temperature=step.temperature,
            timeout_s=step.timeout_s,
            context_window=candidate.spec.context_window,
            cache_ttl=pcfg.cache_ttl,
        )
        stream, flush = text_stream(rt, state, step.name)
        try:
            outcome = await rt.caller.call(
                agent=state.agent,
                run_id=state.run_id,
                step=step.name,
                step_id=walk.step_id,
                attempt=attempt,
                candidate=candidate,
                request=request,
                limits=walk.limits,
                on_text=stream,
            )
            flush()
        except (ContextOverflow, BackendUnavailable, ModelNotFound) as exc:
            # Nothing was sent: too big for this model, unreachable, or not on this machine.
            overflow = isinstance(exc, ContextOverflow)
            return Attempt(
                "not_sent", detail=str(exc) if overflow else f"{candidate.key} unavailable: {exc}", overflow=overflow
            )
        if isinstance(outcome, CapHit):
            return Attempt("deferred", cap=outcome)
        assert isinstance(outcome, CallOutcome)
        if outcome.error is not None:
            if isinstance(outcome.error, PROVIDER_REFUSED):
                return Attempt("dropped", detail=f"{candidate.key}: {outcome.error}", calls=1)
            return Attempt("call_failed", error=outcome.error, calls=1)
        assert outcome.result is not None
        if outcome.result.finish_reason == LOOPING:
            # The backend stopped a generation that cycled: a failed attempt that cost seconds, not minutes.
            detail = describe_loop(outcome.result.text)
            rt.bus.publish(
                Notice(agent=state.agent, run_id=state.run_id, message=f"{candidate.key}: {detail}", level="warning")
            )
            return Attempt("judged", passed=False, detail=detail, calls=1)
        answer = extract_answer(outcome.result.text, prompt.form)
        passed, detail = await rt.steps.apply_and_verify(state, step, answer, tier, attempt, candidate.key)
        return Attempt("judged", passed=passed, detail=detail, calls=1)


# Errors where the provider refused the call before the model saw it: another model may serve; not a failure.
PROVIDER_REFUSED = (BackendUnavailable, RateLimited, ModelNotFound)


def text_stream(rt: Runtime, state: RunState, step: str) -> tuple[OnText, Callable[[], None]]:
    """(on_text for a call, flush after it): model text as it arrives, scrubbed of secrets, as ``TextStreamed``."""
    scrubber = StreamScrubber(rt.ledger.redactor)

    def stream(text: str) -> None:
        clean = scrubber.feed(text)  # a key split across deltas is caught too
        if clean:
            rt.bus.publish(TextStreamed(agent=state.agent, run_id=state.run_id, step=step, text=clean))

    def flush() -> None:
        rest = scrubber.flush()
        if rest:
            rt.bus.publish(TextStreamed(agent=state.agent, run_id=state.run_id, step=step, text=rest))

    return stream, flush
