"""The ledger: the only code that writes SQLite."""

from supervisor.ledger.ledger import (
    ApprovalRow,
    CallRecord,
    CapHit,
    CapLimits,
    EventRow,
    GatewayKey,
    Ledger,
    PendingEvent,
    ReconcileReport,
    ReportRow,
    Reservation,
    Spend,
    StateChange,
    open_ledger,
)

__all__ = [
    "ApprovalRow",
    "CallRecord",
    "CapHit",
    "CapLimits",
    "EventRow",
    "GatewayKey",
    "Ledger",
    "PendingEvent",
    "ReconcileReport",
    "ReportRow",
    "Reservation",
    "Spend",
    "StateChange",
    "open_ledger",
]
