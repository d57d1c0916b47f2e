"""Read-only queries the TUI needs beyond ``Ledger``'s own read API: charts, newest-first lists, change detection.

Nothing here writes. Every query is served by an index or by the per-day ``call_rollup`` table, so each stays
in the milliseconds on a million-call ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from supervisor.ledger.ledger import ApprovalRow, EventRow, Ledger, _approval


@dataclass(frozen=True, slots=True)
class DaySpend:
    """One local day of calls: real and simulated cost kept apart, unpriced calls counted, not guessed."""

    day: date
    cost_micros: int
    simulated_micros: int
    calls: int
    unpriced_calls: int


def data_version(ledger: Ledger) -> int:
    """SQLite's ``data_version`` for this connection: it changes whenever another connection commits."""
    return int(ledger.scalar("PRAGMA data_version") or 0)


def spend_per_day(ledger: Ledger, since: date, until: date, agent: str | None = None) -> list[DaySpend]:
    """Every day from ``since`` to ``until`` (inclusive), zero-filled, from the rollup table."""
    clauses = ["day >= ?", "day <= ?"]
    params: list[Any] = [since.isoformat(), until.isoformat()]
    if agent is not None:
        clauses.append("agent = ?")
        params.append(agent)
    rows = ledger.query(
        f"""SELECT day,
                   coalesce(sum(CASE WHEN simulated = 0 THEN cost_micros ELSE 0 END), 0),
                   coalesce(sum(CASE WHEN simulated = 1 THEN cost_micros ELSE 0 END), 0),
                   coalesce(sum(calls), 0), coalesce(sum(unpriced_calls), 0)
            FROM call_rollup WHERE {" AND ".join(clauses)} GROUP BY day ORDER BY day""",
        params,
    )
    found = {str(r[0]): r for r in rows}
    out: list[DaySpend] = []
    day = since
    while day <= until:
        r = found.get(day.isoformat())
        if r is None:
            out.append(DaySpend(day, 0, 0, 0, 0))
        else:
            out.append(DaySpend(day, int(r[1]), int(r[2]), int(r[3]), int(r[4])))
        day += timedelta(days=1)
    return out


def spend_split(ledger: Ledger, agent: str, since: date) -> tuple[int, int]:
    """(real, simulated) cost of the agent's calls from ``since`` (a local day), from the rollup table."""
    row = ledger.query(
        """SELECT coalesce(sum(CASE WHEN simulated = 0 THEN cost_micros ELSE 0 END), 0),
                  coalesce(sum(CASE WHEN simulated = 1 THEN cost_micros ELSE 0 END), 0)
           FROM call_rollup WHERE agent = ? AND day >= ?""",
        (agent, since.isoformat()),
    )[0]
    return int(row[0]), int(row[1])


def latest_events(
    ledger: Ledger,
    *,
    agent: str | None = None,
    kinds: tuple[str, ...] = (),
    before_id: int | None = None,
    limit: int = 200,
) -> list[EventRow]:
    """The newest events (optionally of one agent, of some kinds, with ids up to ``before_id``), oldest first."""
    clauses: list[str] = []
    params: list[Any] = []
    if agent is not None:
        clauses.append("agent = ?")
        params.append(agent)
    if kinds:
        clauses.append(f"kind IN ({', '.join('?' * len(kinds))})")
        params.extend(kinds)
    if before_id is not None:
        clauses.append("id <= ?")
        params.append(before_id)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = ledger.query(f"SELECT * FROM events {where} ORDER BY id DESC LIMIT ?", [*params, limit])
    return [EventRow.from_sql(r) for r in reversed(rows)]


def recent_approvals(ledger: Ledger, limit: int = 100) -> list[ApprovalRow]:
    """Every pending request, then the most recently decided ones, newest first within each group."""
    pending = ledger.query("SELECT * FROM approvals WHERE state = 'pending' ORDER BY id DESC")
    decided = ledger.query("SELECT * FROM approvals WHERE state != 'pending' ORDER BY id DESC LIMIT ?", (limit,))
    return [_approval(r) for r in (*pending, *decided)]


def counts(ledger: Ledger) -> dict[str, int]:
    """Pending approvals and agents paused by the runaway breaker (the header's badges)."""
    pending = int(ledger.scalar("SELECT count(*) FROM approvals WHERE state = 'pending'") or 0)
    tripped = int(ledger.scalar("SELECT count(*) FROM agents WHERE state = 'paused' AND paused_by = 'breaker'") or 0)
    return {"pending_approvals": pending, "breaker_paused": tripped}


__all__ = [
    "DaySpend",
    "counts",
    "data_version",
    "latest_events",
    "recent_approvals",
    "spend_per_day",
    "spend_split",
]
