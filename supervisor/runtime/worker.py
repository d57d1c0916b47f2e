"""The built-in worker: a model step with ``tools`` runs as a bounded loop of turns, then its gates decide.

One attempt of such a step, at one tier and model:

1. The workspace is snapshotted (incrementally, like a single call's attempt).
2. Each turn is a fresh, lean request (``Transcript``: the step's head and the loop's own past turns, old
   tool outputs cut to a line) sent through the one call path (``ModelCaller.call``: window check, worst
   case reserved under every cap, ledger row with the agent, run, step, attempt and turn). The model's calls
   run inside the workspace (``ToolBox``); every result, refusals included, goes back to the model and into a
   ``TurnFinished`` event. After each turn the runaway breaker's rising-input rule is checked (with the
   lean transcript's settled size as its floor, see ``breaker.check_rising_input``).
3. The loop ends when the model calls ``finish`` (or, with native tools, answers without calling any), at
   ``max_turns``, when the next turn's reservation would cross a cap (no further turn is sent: the step
   defers), when the agent is paused or the breaker trips, or on cancellation.
4. The step's gates decide. A failure restores the workspace byte for byte; the ladder then retries with the
   failure or escalates, exactly as for a single call (``Ladder._try_tier`` handles both).

Native tool calling is used where the backend has it (``Backend.supports_tools``: Ollama, OpenAI-compatible,
Anthropic); other models (MLX, the embedded SmolLM2, scripted tiers) get the tools as text and answer with one
JSON call per reply (``supervisor.runtime.toolproto``), read strictly: a reply that is not a valid call costs a
turn and is answered with what was wrong, never guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from supervisor.backends.base import Request, Result, ToolCall, ToolSpec
from supervisor.catalog import Tier
from supervisor.errors import BackendUnavailable, ContextOverflow, ModelNotFound
from supervisor.ledger import CapHit
from supervisor.runtime import breaker
from supervisor.runtime.agent_state import change_state, paused_reason
from supervisor.runtime.caller import CallOutcome
from supervisor.runtime.events import TurnFinished, WorkerFinished
from supervisor.runtime.process import CHILDREN_FILE
from supervisor.runtime.prompt import ContextFile, build_messages, clean_failure
from supervisor.runtime.router import Candidate
from supervisor.runtime.steps import Attempt, attempt_snapshot, restore_attempt
from supervisor.runtime.toolproto import ToolProtocolError, parse_reply, render_error, render_tools
from supervisor.runtime.tools import ToolBox, ToolLimits, tool_specs
from supervisor.runtime.transcript import (
    MAX_CALLS_PER_TURN,
    Protocol,
    ToolOutput,
    Transcript,
    TranscriptPolicy,
    Turn,
    replayable,
    short_arguments,
)
from supervisor.runtime.workspace import WorkspaceError, resolve_inside

if TYPE_CHECKING:
    from supervisor.runtime.ladder import ModelStep
    from supervisor.runtime.run import RunState
    from supervisor.runtime.runtime import Runtime

EVENT_ARGUMENT_CHARS = 300
EVENT_RESULT_CHARS = 400
CUT_REPLY_NOTE = "Your reply hit the output limit before it made a tool call: make one call per reply, kept short."


@dataclass
class LoopEnd:
    """How the loop ended. ``attempt`` is set when the attempt ends here, without the gates."""

    end: str  # finished | answered | max_turns | window | unavailable | call_failed | deferred | paused | ...
    turns: int
    why: str = ""
    summary: str = ""
    attempt: Attempt | None = None
    changed: list[str] = field(default_factory=list)


class Worker:
    """Runs the attempts of steps with tools for ``runtime`` (its config, caller and pool are read at each call)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def attempt(
        self,
        walk: ModelStep,
        tier: Tier,
        candidate: Candidate,
        attempt: int,
        failure: str | None,
        context: list[ContextFile],
    ) -> Attempt:
        """One attempt: the loop in a snapshot of the workspace, then the gates; restored unless they pass."""
        rt = self.runtime
        state, step = walk.state, walk.step
        limits = rt.config.file.limits
        try:
            backend = rt.pool.get(candidate.provider)
        except BackendUnavailable as exc:
            return Attempt("not_sent", detail=f"{candidate.key} unavailable: {exc}")
        protocol: Protocol = "native" if backend.supports_tools else "text"
        specs = tool_specs(step.tools or (), step.commands)
        head = build_messages(
            state.agent,
            state.cfg,
            step,
            digest=state.digest,
            context=context,
            failure=clean_failure(
                failure, state.workspace, rt.ledger.redactor, rt.config.file.limits.failure_excerpt_chars
            ),
            failure_chars=limits.failure_excerpt_chars,
            tools_text=render_tools(specs) if protocol == "text" else None,
        )
        max_output = min(step.max_output_tokens, candidate.spec.max_output_tokens)
        policy = TranscriptPolicy(
            budget_tokens=limits.tool_transcript_tokens,
            result_bytes=max(limits.max_tool_read_bytes, 4 * limits.max_tool_output_chars) + 1024,
            said_bytes=4 * max_output,
        )
        transcript = Transcript((head[0], head[1]), protocol, specs, policy)
        snapshot = attempt_snapshot(rt, state)
        box = ToolBox(
            state.workspace,
            specs,
            commands=step.commands,
            ignore=limits.snapshot_ignore,
            limits=ToolLimits(
                max_read_bytes=limits.max_tool_read_bytes,
                max_write_bytes=limits.max_tool_write_bytes,
                max_output_chars=limits.max_tool_output_chars,
                capture_bytes=limits.max_capture_bytes,
            ),
            scrub=rt.ledger.redactor.scrub,
            registry=rt.processes,
            agent=state.agent,
            group_file=state.snapshot.directory / CHILDREN_FILE,
        )
        loop: LoopEnd | None = None
        try:
            loop = await self._loop(walk, tier, candidate, attempt, transcript, box, protocol, max_output)
            if loop.attempt is not None:
                passed, detail = False, ""
            else:
                answer = self._answer(state, step.writes, loop.summary)
                passed, detail = await rt.steps.run_gates(
                    state, step.name, step.verify, answer=answer, tier=tier, attempt=attempt
                )
                if not passed and loop.end != "finished":
                    detail = f"{detail}\n(the worker stopped after {loop.turns} turn(s): {loop.why})"
        except WorkspaceError as exc:
            passed, detail = False, str(exc)
        except BaseException:
            snapshot.restore()
            snapshot.discard()
            raise
        if not passed:
            restore_attempt(rt, state, step.name, snapshot, report_empty=loop is not None and loop.attempt is None)
        snapshot.discard()
        if loop is not None and loop.attempt is not None:
            return loop.attempt
        return Attempt("judged", passed=passed, detail=detail, calls=loop.turns if loop else 0, rising_checked=True)

    def _answer(self, state: RunState, writes: str | None, summary: str) -> str:
        """What content gates check: the file the step names in ``writes``, else the model's summary."""
        if writes:
            path = resolve_inside(state.workspace, writes)
            try:
                return path.read_text(encoding="utf-8") if path.is_file() else ""
            except (OSError, UnicodeDecodeError):
                return ""
        return summary

    async def _loop(
        self,
        walk: ModelStep,
        tier: Tier,
        candidate: Candidate,
        attempt: int,
        transcript: Transcript,
        box: ToolBox,
        protocol: Protocol,
        max_output: int,
    ) -> LoopEnd:
        from supervisor.runtime.ladder import PROVIDER_REFUSED, text_stream
        from supervisor.runtime.run import check_hourly

        rt = self.runtime
        state, step = walk.state, walk.step
        max_turns = step.turn_limit
        pcfg = rt.pool.provider(candidate.provider)
        # The lean transcript settles at about this size: growth below it is the budget filling up, by design.
        floor = transcript.fixed_tokens() + transcript.summary_tokens() + transcript.policy.budget_tokens
        changed: list[str] = []

        def end(kind: str, turns: int, why: str = "", summary: str = "", attempt_: Attempt | None = None) -> LoopEnd:
            rt.bus.publish(
                WorkerFinished(
                    agent=state.agent,
                    run_id=state.run_id,
                    step=step.name,
                    tier=tier,
                    model=candidate.key,
                    attempt=attempt,
                    turns=turns,
                    end=kind,
                    summary=(summary or why)[:500],
                    files_changed=list(changed),
                    input_bound_tokens=transcript.bound(),
                )
            )
            return LoopEnd(kind, turns, why, summary, attempt_, list(changed))

        for turn in range(1, max_turns + 1):
            if turn > 1:
                running = change_state(
                    rt.ledger,
                    rt.bus,
                    state.agent,
                    "running",
                    f"{step.name} at {tier}, turn {turn} of {max_turns}",
                    run_id=state.run_id,
                    step=step.name,
                    tier=tier,
                    model=candidate.key,
                )
                if not running.applied:
                    why = paused_reason(state.agent, running)
                    return end("paused", turn - 1, why, attempt_=Attempt("paused", detail=why, calls=turn - 1))
                hourly = check_hourly(rt, state)
                if hourly is not None:
                    state.pause_after = hourly
                    why = f"runaway breaker: {hourly.message}"
                    return end("paused", turn - 1, why, attempt_=Attempt("paused", detail=why, calls=turn - 1))
            request = Request(
                model=candidate.model_id,
                messages=transcript.messages(turns_left=max_turns - turn + 1),
                max_output_tokens=max_output,
                temperature=step.temperature,
                timeout_s=step.timeout_s,
                context_window=candidate.spec.context_window,
                cache_ttl=pcfg.cache_ttl,
                tools=transcript.tools if protocol == "native" else (),
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
                    turn=turn,
                )
                flush()
            except (ContextOverflow, BackendUnavailable, ModelNotFound) as exc:
                # Nothing was sent: too big for this model, unreachable, or not servable here (as in the ladder).
                overflow = isinstance(exc, ContextOverflow)
                why = str(exc) if overflow else f"{candidate.key} unavailable: {exc}"
                if turn == 1:
                    return end("not_sent", 0, why, attempt_=Attempt("not_sent", detail=why, overflow=overflow))
                # Later turns: what the loop did so far may already pass; the gates decide.
                return end("window" if overflow else "unavailable", turn - 1, f"turn {turn} was not sent: {why}")
            if isinstance(outcome, CapHit):
                why = outcome.describe()
                return end("deferred", turn - 1, why, attempt_=Attempt("deferred", cap=outcome, calls=turn - 1))
            assert isinstance(outcome, CallOutcome)
            if outcome.error is not None:
                error = outcome.error
                if turn == 1:
                    if isinstance(error, PROVIDER_REFUSED):
                        detail = f"{candidate.key}: {error}"
                        return end("dropped", 1, detail, attempt_=Attempt("dropped", detail=detail, calls=1))
                    return end("call_failed", 1, str(error), attempt_=Attempt("call_failed", error=error, calls=1))
                return end("call_failed", turn, f"turn {turn}: the call failed: {error}")
            assert outcome.result is not None
            result = outcome.result
            calls, note = self._calls(result, protocol, transcript.tools, turn)
            outputs: list[ToolOutput] = []
            finished: str | None = None
            for index, call in enumerate(calls[:MAX_CALLS_PER_TURN]):
                done = await box.execute(call)
                outputs.append(ToolOutput(replayable(call, turn, index), done.content, done.is_error))
                changed.extend(p for p in done.changed if p not in changed)
                if done.finished:
                    finished = done.content.removeprefix("finished").removeprefix(": ")
                    break
            if len(calls) > MAX_CALLS_PER_TURN and finished is None:
                note = f"You made {len(calls)} calls; only the first {MAX_CALLS_PER_TURN} ran. {note}".strip()
            transcript.add(Turn(turn, result.text, tuple(outputs), note))
            # With JSON-in-text the reply is the call itself; only a reply that was not a call is worth showing.
            text = result.text if protocol == "native" or not outputs else ""
            self._publish_turn(walk, tier, candidate, attempt, turn, max_turns, protocol, outcome, outputs, text, note)
            rising = breaker.check_rising_input(
                rt.ledger, state.agent, step.name, rt.config.file.breaker, floor_tokens=floor
            )
            if rising is not None:
                state.pause_after = rising
                why = f"runaway breaker: {rising.message}"
                return end("paused", turn, why, attempt_=Attempt("paused", detail=why, calls=turn))
            if finished is not None:
                return end("finished", turn, "the model called finish", summary=finished)
            if protocol == "native" and not calls and not note:
                return end("answered", turn, "the model answered without calling a tool", summary=result.text.strip())
        return end("max_turns", max_turns, f"max_turns ({max_turns}) reached without finish")

    def _calls(
        self, result: Result, protocol: Protocol, tools: tuple[ToolSpec, ...], turn: int
    ) -> tuple[list[ToolCall], str]:
        """The turn's calls, and what to tell the model when its reply was not a usable call."""
        cut = result.finish_reason == "length"
        if protocol == "native":
            calls = list(result.tool_calls)
            return calls, (CUT_REPLY_NOTE if cut and not calls else "")
        try:
            return [parse_reply(result.text, tools, call_id=f"call_{turn}")], ""
        except ToolProtocolError as exc:
            note = render_error(exc)
            return [], f"{CUT_REPLY_NOTE} {note}" if cut else note

    def _publish_turn(
        self,
        walk: ModelStep,
        tier: Tier,
        candidate: Candidate,
        attempt: int,
        turn: int,
        max_turns: int,
        protocol: Protocol,
        outcome: CallOutcome,
        outputs: list[ToolOutput],
        text: str,
        note: str,
    ) -> None:
        usage = outcome.result.usage if outcome.result else None
        self.runtime.bus.publish(
            TurnFinished(
                agent=walk.state.agent,
                run_id=walk.state.run_id,
                step=walk.step.name,
                tier=tier,
                model=candidate.key,
                attempt=attempt,
                turn=turn,
                max_turns=max_turns,
                call_id=outcome.call_id,
                protocol=protocol,
                tools=[
                    {
                        "tool": o.call.name,
                        "arguments": short_arguments(o.call.arguments)[:EVENT_ARGUMENT_CHARS],
                        "result": o.content[:EVENT_RESULT_CHARS],
                        "error": o.is_error,
                    }
                    for o in outputs
                ],
                text=text.strip()[:EVENT_RESULT_CHARS],
                note=note[:EVENT_RESULT_CHARS],
                input_tokens=usage.prompt_tokens if usage else None,
                output_tokens=usage.output if usage else None,
                cost_micros=outcome.cost.total_micros if outcome.cost.priced else None,
                priced=outcome.cost.priced,
                simulated=candidate.simulated,
            )
        )
