"""The ledger: the only code that writes SQLite."""

from supervisor.ledger.ledger import (
    ApprovalRow,
    CallRecord,
    CapHit,
    CapLimits,
    EventRow,
    Ledger,
    ReconcileReport,
    ReportRow,
    Reservation,
    Spend,
    open_ledger,
)

__all__ = [
    "ApprovalRow",
    "CallRecord",
    "CapHit",
    "CapLimits",
    "EventRow",
    "Ledger",
    "ReconcileReport",
    "ReportRow",
    "Reservation",
    "Spend",
    "open_ledger",
]
