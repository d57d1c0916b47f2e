"""Step execution: one step of a run, its verify gates, and writing a model's answer under a snapshot.

``StepRunner.run`` records the step and dispatches on its kind. To add a kind of step: name it in ``StepKind``
and ``step_kind``, and give ``StepRunner._kinds`` the coroutine that runs it (it receives the run's state, the
step and its ledger row id, and returns a ``StepOutcome``). A ``run`` step is tier 0 (a command, no model);
``model``, ``plan`` and ``agent`` steps walk their ladder (``supervisor.runtime.ladder``), an ``agent`` step's
attempts running an agent program through the gateway (``supervisor.runtime.program``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from supervisor.atomic_file import atomic_write
from supervisor.config import Gate, StepConfig
from supervisor.errors import BackendError
from supervisor.ledger import CapHit
from supervisor.runtime.events import (
    CommandFinished,
    GateChecked,
    PlanRecorded,
    StepFinished,
    StepStarted,
    WorkspaceRestored,
)
from supervisor.runtime.planner import PLAN_STEP
from supervisor.runtime.process import CHILDREN_FILE, run_command
from supervisor.runtime.verify import run_gate
from supervisor.runtime.workspace import Snapshot, WorkspaceError, resolve_inside

if TYPE_CHECKING:
    from supervisor.runtime.run import RunState
    from supervisor.runtime.runtime import Runtime

StepStatus = Literal["passed", "failed", "exhausted", "denied", "deferred", "waiting_approval", "paused"]
StepKind = Literal["run", "model", "plan", "agent"]


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
    final: bool = False  # a "failed" that no other tier can fix: the ladder stops here instead of escalating


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt at a tier ended, for the ladder walk to act on (a single call, or a worker's loop).

    ``judged``: the gates ran (``passed``, and the failure in ``detail``); ``not_sent``: nothing was sent
    (too big for the model, or it cannot be reached: another model may serve; ``overflow`` says which);
    ``dropped``: the provider refused the call (not the model's failure); ``call_failed``: the call failed
    (``error``); ``deferred``: a cap stopped it before a call (``cap``); ``paused``: the agent was paused
    (``detail`` says by whom) or the breaker tripped; ``broken``: nothing a tier could change went wrong (an agent
    program that cannot start or never asks for a model): the step fails without escalating (``detail``)."""

    kind: Literal["judged", "not_sent", "dropped", "call_failed", "deferred", "paused", "broken"]
    passed: bool = False
    detail: str = ""
    overflow: bool = False
    error: BackendError | None = None
    cap: CapHit | None = None
    calls: int = 0  # model calls sent (a worker's loop sends one per turn)
    rising_checked: bool = False  # the worker checked the rising-input rule after every turn


def attempt_snapshot(rt: Runtime, state: RunState) -> Snapshot:
    """What an attempt may change, taken before it starts (on top of the run's snapshot), so a failure can undo it."""
    limits = rt.config.file.limits
    return Snapshot.take(
        state.workspace,
        rt.home / "snapshots" / f"{state.run_id}-attempt",
        ignore=limits.snapshot_ignore,
        max_bytes=limits.max_snapshot_bytes,
        base=state.snapshot,
    )


def restore_attempt(rt: Runtime, state: RunState, step: str, snapshot: Snapshot, *, report_empty: bool = True) -> None:
    """Put the workspace back as the attempt found it and say so (``WorkspaceRestored``, scope "attempt");
    ``report_empty=False`` stays quiet when there was nothing to put back."""
    restored, removed = snapshot.restore()
    if restored or removed or report_empty:
        rt.bus.publish(
            WorkspaceRestored(
                agent=state.agent,
                run_id=state.run_id,
                step=step,
                files_restored=restored,
                files_removed=removed,
                scope="attempt",
            )
        )


def step_kind(step: StepConfig) -> StepKind:
    """The kind of a configured step: a command (``run``), an agent program (``agent``) or a model step."""
    if step.run is not None:
        return "run"
    return "agent" if step.is_agent_step else "model"


class StepRunner:
    """Runs the steps of a run for ``runtime`` (its config, ledger, bus and processes are read at each call, so a
    reconfigured runtime is seen by the next step)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._kinds: dict[StepKind, Callable[[RunState, StepConfig, int], Awaitable[StepOutcome]]] = {
            "run": self._run_command_step,
            "model": runtime.ladder.run_model_step,
            "plan": runtime.ladder.run_model_step,
            "agent": runtime.ladder.run_model_step,
        }

    async def run(self, state: RunState, step: StepConfig, kind: StepKind | None = None) -> StepOutcome:
        """Run one step: record it, dispatch on its kind, record how it ended."""
        rt = self.runtime
        kind = kind or step_kind(step)
        step_id = rt.ledger.start_step(state.run_id, step.name, kind, now=rt.clock())
        rt.bus.publish(StepStarted(agent=state.agent, run_id=state.run_id, step=step.name, step_kind=kind))
        rt.ledger.update_agent_position(
            state.agent, step=step.name, tier="tier0" if kind == "run" else None, model=None
        )
        outcome = await self._kinds[kind](state, step, step_id)
        rt.ledger.finish_step(
            step_id,
            outcome.status,
            tier_reached=outcome.tier,
            model=outcome.model,
            attempts=outcome.attempts,
            verify_result="pass" if outcome.status == "passed" else ("fail" if outcome.failure else None),
            verify_detail=outcome.failure[:4000],
        )
        rt.bus.publish(
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

    async def _run_command_step(self, state: RunState, step: StepConfig, step_id: int) -> StepOutcome:
        assert step.run is not None
        rt = self.runtime
        limits = rt.config.file.limits
        result = await run_command(
            step.run,
            state.workspace,
            timeout_s=step.timeout_s,
            capture_bytes=limits.max_capture_bytes,
            registry=rt.processes,
            agent=state.agent,
            group_file=state.snapshot.directory / CHILDREN_FILE,
        )
        rt.bus.publish(
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
        passed, detail = await self.run_gates(state, step.name, step.verify, answer=None, tier="tier0", attempt=1)
        if not passed:
            return StepOutcome(
                "failed", f"step {step.name!r}: verify gate failed", tier="tier0", attempts=1, failure=detail
            )
        return StepOutcome("passed", tier="tier0", attempts=1)

    async def run_gates(
        self,
        state: RunState,
        step: str,
        gates: Sequence[Gate],
        *,
        answer: str | None,
        tier: str | None,
        attempt: int,
    ) -> tuple[bool, str]:
        """Run ``gates`` in order, stopping at the first that fails: (passed, what failed and its output)."""
        rt = self.runtime
        for gate in gates:
            result = await run_gate(
                gate,
                answer=answer,
                workspace=state.workspace,
                capture_bytes=rt.config.file.limits.max_capture_bytes,
                registry=rt.processes,
                agent=state.agent,
                group_file=state.snapshot.directory / CHILDREN_FILE,
            )
            rt.bus.publish(
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

    async def apply_and_verify(
        self, state: RunState, step: StepConfig, answer: str, tier: str, attempt: int, model: str
    ) -> tuple[bool, str]:
        """Write the answer (or keep it as an artifact), run every gate; on failure restore what the attempt touched."""
        rt = self.runtime
        limits = rt.config.file.limits
        snapshot = attempt_snapshot(rt, state)
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
                artifact = rt.home / "agents" / state.agent / "artifacts" / str(state.run_id) / name
                artifact.parent.mkdir(parents=True, exist_ok=True)
                artifact.write_text(rt.ledger.redactor.scrub(answer), encoding="utf-8")  # under our data dir
                state.artifacts[name] = str(artifact)
            passed, detail = True, ""
            if state.planning_step is step:
                passed, detail = self._check_plan(state, answer, tier, model, attempt)
            if passed:
                passed, detail = await self.run_gates(
                    state, step.name, step.verify, answer=answer, tier=tier, attempt=attempt
                )
        except WorkspaceError as exc:
            passed, detail = False, str(exc)
        except BaseException:
            snapshot.restore()
            snapshot.discard()
            raise
        if not passed:
            restore_attempt(rt, state, step.name, snapshot)
        snapshot.discard()
        return passed, detail

    def _check_plan(self, state: RunState, answer: str, tier: str, model: str, attempt: int) -> tuple[bool, str]:
        from supervisor.runtime.planner import validate_plan

        rt = self.runtime
        result = validate_plan(answer, state.cfg, rt.config.file.limits.snapshot_ignore)
        rt.ledger.record_plan(
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
        rt.bus.publish(
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
        rt.bus.publish(
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
