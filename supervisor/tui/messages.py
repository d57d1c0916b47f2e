"""The one place where runtime events and ledger event rows become Textual messages.

A hosted runtime hands the app live ``Event`` objects (from its own thread); an attached view reads ``EventRow``s
the daemon wrote to the ledger. Both become the same ``FeedItem``, so every screen handles one shape whichever
way the agents run. The other messages here carry what thread workers loaded back to the widgets that show it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from textual.message import Message

from supervisor.clock import parse_iso
from supervisor.ledger import ApprovalRow, EventRow
from supervisor.runtime.events import (
    AgentDeferred,
    AgentStateChanged,
    ApprovalDecided,
    BreakerTripped,
    CallRecorded,
    EscalationRequested,
    Event,
    GateChecked,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    TextStreamed,
)
from supervisor.tui.data import AgentDetail, Alarm, CostsData, ModelsData, Snapshot

# Events that change what the Agents screen shows (state, position, spend): each schedules a debounced reload.
STATE_KINDS = frozenset(
    {
        AgentStateChanged.kind,
        RunStarted.kind,
        RunFinished.kind,
        StepStarted.kind,
        StepFinished.kind,
        CallRecorded.kind,
        EscalationRequested.kind,
        ApprovalDecided.kind,
        AgentDeferred.kind,
        BreakerTripped.kind,
        GateChecked.kind,
    }
)


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One thing that happened, whichever process saw it happen."""

    kind: str
    agent: str | None
    run_id: int | None
    at: datetime
    data: dict[str, Any]
    event_id: int | None = None  # the ledger's id (attached mode and history); None for live in-process events

    @property
    def live_only(self) -> bool:
        """Streamed model text is never written to the ledger (the full answer is, once the call ends)."""
        return self.kind == TextStreamed.kind


def from_event(event: Event) -> FeedItem:
    """A live event from a runtime this process hosts."""
    return FeedItem(event.kind, event.agent, event.run_id, event.at, event.data())


def from_row(row: EventRow) -> FeedItem:
    """An event another process (the daemon, the CLI) wrote to the ledger."""
    return FeedItem(row.kind, row.agent, row.run_id, parse_iso(row.at), dict(row.data), row.id)


class Feed(Message):
    """Events, in order (a batch: an attached view reads them from the ledger several at a time)."""

    def __init__(self, items: Iterable[FeedItem]) -> None:
        super().__init__()
        self.items = tuple(items)

    @classmethod
    def of_event(cls, event: Event) -> Feed:
        return cls([from_event(event)])

    @classmethod
    def of_rows(cls, rows: Iterable[EventRow]) -> Feed:
        return cls(from_row(r) for r in rows)


class SnapshotLoaded(Message):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class AgentDetailLoaded(Message):
    def __init__(self, detail: AgentDetail) -> None:
        super().__init__()
        self.detail = detail


class ProcessesSampled(Message):
    def __init__(self, agent: str, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self.agent = agent
        self.rows = rows


class CostsLoaded(Message):
    def __init__(self, costs: CostsData) -> None:
        super().__init__()
        self.costs = costs


class ModelsLoaded(Message):
    def __init__(self, models: ModelsData) -> None:
        super().__init__()
        self.models = models


class ApprovalsLoaded(Message):
    def __init__(self, approvals: list[ApprovalRow]) -> None:
        super().__init__()
        self.approvals = approvals


class AlarmsLoaded(Message):
    def __init__(self, alarms: list[Alarm]) -> None:
        super().__init__()
        self.alarms = alarms


class Problem(Message):
    """Something failed off the event loop (a decision the ledger refused, a probe that broke)."""

    def __init__(self, text: str, severity: str = "error") -> None:
        super().__init__()
        self.text = text
        self.severity = severity


class HostStopped(Message):
    """The hosted runtime's loop ended (on quit, or because it crashed: ``error`` says why)."""

    def __init__(self, error: str | None) -> None:
        super().__init__()
        self.error = error


__all__ = [
    "STATE_KINDS",
    "AgentDetailLoaded",
    "AlarmsLoaded",
    "ApprovalsLoaded",
    "Booted",
    "CostsLoaded",
    "Feed",
    "FeedItem",
    "HostStopped",
    "LedgerChanged",
    "ModelsLoaded",
    "Problem",
    "ProcessesSampled",
    "SnapshotLoaded",
    "StatusLoadDone",
    "from_event",
    "from_row",
]


class Booted(Message):
    """The read connection is open and the ledger's newest event id is known: live updates can start."""

    def __init__(self, start_event_id: int) -> None:
        super().__init__()
        self.start_event_id = start_event_id


class LedgerChanged(Message):
    """The periodic check saw agents change in the ledger (``agents`` names them; None: anything may have)."""

    def __init__(self, agents: set[str] | None) -> None:
        super().__init__()
        self.agents = agents


class StatusLoadDone(Message):
    """A status reload finished (after its last ``SnapshotLoaded``)."""
