"""Agent state changes: each one ledger transaction (the agents row and its ``AgentStateChanged`` event), checked
against the state diagram (``supervisor.ledger.ledger.transition_allowed``), then announced in-process.

A run's change is refused when the agent has been paused (from another terminal, or by the breaker): the run
acts on the refusal by stopping at its next attempt boundary with outcome ``paused``.
"""

from __future__ import annotations

from supervisor.ledger import Ledger, PendingEvent, StateChange
from supervisor.ledger.ledger import AgentState
from supervisor.runtime.events import AgentStateChanged, EventBus


def _pending(event: AgentStateChanged | None) -> PendingEvent | None:
    if event is None:
        return None
    return PendingEvent(event.kind, event.data(), run_id=event.run_id, at=event.at)


def change_state(
    ledger: Ledger,
    bus: EventBus,
    agent: str,
    state: AgentState,
    reason: str,
    *,
    event: AgentStateChanged | None = None,
    run_id: int | None = None,
    step: str | None = None,
    tier: str | None = None,
    model: str | None = None,
) -> StateChange:
    """A run moves ``agent`` to ``state`` (the row's ``reason`` and position), with ``event`` if it is one the
    feed should show; refused, with nothing written, when the agent is paused."""
    change = ledger.change_agent_state(
        agent, state, reason, run_id=run_id, step=step, tier=tier, model=model, event=_pending(event)
    )
    if change.applied and event is not None:
        bus.announce(event)
    return change


def pause(
    ledger: Ledger, bus: EventBus | None, agent: str, by: str, reason: str, *, event: AgentStateChanged
) -> StateChange:
    """Pause ``agent`` (``by`` a human, or "breaker"); allowed from any state."""
    change = ledger.pause_agent(agent, by, reason, event=_pending(event))
    if change.applied and bus is not None:
        bus.announce(event)
    return change


def resume(ledger: Ledger, bus: EventBus | None, agent: str, *, event: AgentStateChanged) -> bool:
    """A human lifts a pause; False (nothing written) if the agent was not paused."""
    resumed = ledger.resume_agent(agent, event=_pending(event))
    if resumed and bus is not None:
        bus.announce(event)
    return resumed


def paused_reason(agent: str, change: StateChange) -> str:
    """Why a refused run stops: who paused the agent, why, and how to let it run again."""
    return f"paused by {change.paused_by or 'a human'}: {change.reason}; `supervisor resume {agent}`"
