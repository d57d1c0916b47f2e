"""The Ledger: the only code that writes SQLite.

WAL mode with ``synchronous=NORMAL`` survives a SIGKILL of any writer (a commit is durable once it returns;
only a power cut can lose the last commits). ``busy_timeout`` makes concurrent processes wait rather than
fail. Anything that checks and then writes (budget reservations, taking commands) runs inside one
``BEGIN IMMEDIATE`` transaction, so two processes can never both see room under a cap and both spend it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from supervisor.clock import (
    iso,
    local_day_start,
    local_month_start,
    next_local_day,
    next_local_month,
    parse_iso,
    utcnow,
)
from supervisor.cost import Cost
from supervisor.errors import LedgerError
from supervisor.procident import owner_alive, process_identity
from supervisor.secrets import Redactor, scrub_tree
from supervisor.usage import Usage

BUSY_TIMEOUT_MS = 30_000
OPEN_DEADLINE_S = 120.0
CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024  # SQLite's own default: 1,000 pages of 4 KiB

AgentState = Literal["idle", "running", "waiting_approval", "deferred", "paused", "failed", "exhausted", "denied"]
StateActor = Literal["run", "human", "breaker"]  # who asks for an agent's state to change
ReportBy = Literal["agent", "model", "day", "run", "tier"]

# States a run leaves its agent in when it ends (waiting_approval: the run ended while its request waits).
RUN_END_STATES: frozenset[str] = frozenset({"idle", "failed", "exhausted", "denied", "deferred", "waiting_approval"})


def transition_allowed(current: str, new: AgentState, actor: StateActor) -> bool:
    """The agent state diagram: idle → running → (waiting_approval → running) → idle | failed | exhausted | denied;
    running → deferred; any → paused by a human or the breaker; paused leaves only by a human's resume (to idle).

    A run may start (→ running) from any state but paused, and re-asserts running at each attempt; it ends (or
    waits for an approval) only from running or waiting_approval. A run never writes paused, and never leaves it.
    """
    if new == "paused":
        return actor in ("human", "breaker")
    if current == "paused":
        return actor == "human" and new == "idle"
    if actor != "run":
        return False
    if new == "running":
        return True
    return current in ("running", "waiting_approval") and new in RUN_END_STATES


# --------------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One model call as the ledger stores it: every token component and every cost component separately."""

    agent: str
    provider: str
    model: str
    tier: str
    started_at: datetime
    ended_at: datetime
    usage: Usage
    cost: Cost
    run_id: int | None = None
    step_id: int | None = None
    step: str | None = None
    attempt: int = 1
    simulated: bool = False
    latency_s: float | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    compute_s: float | None = None
    finish_reason: str | None = None
    error_class: str | None = None
    error: str = ""
    reservation_id: int | None = None
    prompt_tokens_est: int | None = None
    price_source: str = ""  # "bundled openai.toml", "user /path/x.toml", "genai-prices 0.2.5", "local provider ($0)"
    turn: int | None = None  # the built-in worker's turn within the attempt (None: a single-call step)
    requested_model: str | None = None  # the gateway: the model name the client asked for
    auth: str | None = None  # the gateway: "key" or "port" (how the caller was identified)
    key_id: int | None = None  # the gateway key the call was made with
    via: str = "runtime"  # "runtime" (the supervisor's own steps) or "gateway"


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event row to write in the same transaction as the change it reports."""

    kind: str
    data: dict[str, Any]
    run_id: int | None = None
    at: datetime | None = None
    agent: str | None = None  # when the change is not the agent's own row (a reservation, a call row)


@dataclass(frozen=True, slots=True)
class StateChange:
    """The answer to a state change: whether it was applied, and the agent's state (and why) after it.

    A refused change (a run asking for running while a human has paused the agent) leaves the row as it was:
    ``state`` and ``reason`` then say what the agent is, and ``paused_by`` who paused it."""

    applied: bool
    state: str
    reason: str
    paused_by: str | None = None


@dataclass(frozen=True, slots=True)
class CapLimits:
    """The caps that apply to one call, in micro-dollars and tokens; ``None`` = no cap."""

    run_micros: int | None = None
    agent_day_micros: int | None = None
    agent_month_micros: int | None = None
    global_day_micros: int | None = None
    global_month_micros: int | None = None
    run_tokens: int | None = None
    agent_day_tokens: int | None = None
    agent_month_tokens: int | None = None
    key_micros: int | None = None  # a gateway key's own dollar cap over its life (an agent step's attempt)
    key_tokens: int | None = None
    key_calls: int | None = None  # most calls one key may make
    approval_micros: int | None = None  # what is left to an approval window ("up to $2 for 15 minutes")


@dataclass(frozen=True, slots=True)
class GatewayKey:
    """A gateway key as stored: only its hash, a display prefix, the agent it belongs to, and optional bindings
    (an agent step's attempt: run, step, attempt, tier) and limits. The token itself is never stored."""

    id: int
    agent: str
    prefix: str
    label: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    run_id: int | None = None
    step: str | None = None
    attempt: int | None = None
    tier: str | None = None
    max_calls: int | None = None
    max_micros: int | None = None
    max_tokens: int | None = None
    max_output_tokens: int | None = None

    def usable(self, now: datetime) -> str | None:
        """``None`` when the key may be used now, else why not."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and parse_iso(self.expires_at) <= now:
            return "expired"
        return None


@dataclass(frozen=True, slots=True)
class CapHit:
    """Why a reservation was refused: which cap, how much is already spent/held, and when the window resets."""

    cap: str  # e.g. "agent day_usd", "global month_usd", "run_usd", "agent day_tokens"
    unit: Literal["micros", "tokens", "calls"]
    limit: int
    spent: int  # settled spend in the window
    held: int  # open reservations in the window
    needed: int  # what this call could cost at worst
    resets_at: datetime | None

    def describe(self) -> str:
        from supervisor.cost import format_usd

        if self.unit == "micros":
            used, limit, need = (
                format_usd(self.spent + self.held),
                format_usd(self.limit),
                format_usd(self.needed),
            )
        else:
            used, limit, need = (
                f"{self.spent + self.held} {self.unit}",
                f"{self.limit} {self.unit}",
                f"{self.needed} {self.unit}",
            )
        when = f"; resets {self.resets_at.astimezone():%Y-%m-%d %H:%M}" if self.resets_at else ""
        return f"{self.cap} cap: {used} of {limit} used, this call could need {need}{when}"


@dataclass(frozen=True, slots=True)
class Reservation:
    id: int
    amount_micros: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a reservation ends: the actual cost (``None`` = unknown, keep the worst case), or a release."""

    reservation_id: int
    actual_micros: int | None
    actual_tokens: int | None
    release: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class Spend:
    """Spend (settled + held) in micro-dollars and tokens for one scope and window."""

    micros: int
    tokens: int
    held_micros: int


@dataclass(frozen=True, slots=True)
class ReportRow:
    group: str
    calls: int
    unpriced_calls: int
    error_calls: int
    input_uncached: int
    cache_read: int
    cache_write: int
    output: int
    reasoning: int
    cost_micros: int
    local_compute_s: float
    simulated: bool = False
    attempts: tuple[ReportRow, ...] = ()  # --by run: the run's calls per step attempt (an agent program's too)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    at: str
    agent: str | None
    run_id: int | None
    kind: str
    data: dict[str, Any]

    @classmethod
    def from_sql(cls, row: sqlite3.Row) -> EventRow:
        return cls(row["id"], row["at"], row["agent"], row["run_id"], row["kind"], json.loads(row["data"]))


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    id: int
    agent: str
    run_id: int | None
    step: str
    tier: str
    model: str
    reason: str
    est_cold_micros: int | None
    est_warm_micros: int | None
    caps_left: dict[str, Any]
    state: str
    requested_at: str
    decided_at: str | None
    decided_by: str | None
    simulated: bool
    window_until: str | None = None
    budget_micros: int | None = None


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    released_reservations: int = 0
    charged_reservations: int = 0
    crashed_runs: list[int] = field(default_factory=list)
    recovered_agents: list[str] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(
            self.released_reservations or self.charged_reservations or self.crashed_runs or self.recovered_agents
        )


_KEY_COLUMNS = (
    "id, agent, prefix, label, created_at, expires_at, revoked_at, run_id, step, attempt, tier, max_calls, "
    "max_micros, max_tokens, max_output_tokens"
)
_SPENT = (
    "CASE state WHEN 'held' THEN amount_micros WHEN 'released' THEN 0 ELSE coalesce(actual_micros, amount_micros) END"
)
_HELD = "CASE state WHEN 'held' THEN amount_micros ELSE 0 END"
_TOKENS = "CASE state WHEN 'held' THEN tokens WHEN 'released' THEN 0 ELSE coalesce(actual_tokens, tokens) END"


_OWN_WINDOW_SQL: dict[tuple[str, str], str] = {
    (window, unit): (
        f"SELECT coalesce(sum({_SPENT}), 0), coalesce(sum({_HELD}), 0) FROM reservations WHERE {column} = ?"
        if unit == "micros"
        else f"SELECT coalesce(sum({_TOKENS}), 0), coalesce(sum(CASE state WHEN 'held' THEN tokens ELSE 0 END), 0) "
        f"FROM reservations WHERE {column} = ?"
    )
    for window, column in (("run", "run_id"), ("key", "key_id"), ("approval", "approval_id"))
    for unit in ("micros", "tokens")
}
# One pass over the month's per-day totals gives all four windows (the day is inside the month):
# (spent, held) micros then tokens, for agent day, agent month, global day, global month.
_DAY_WINDOWS_SQL = (
    "SELECT "
    + ", ".join(
        f"coalesce(sum({case.format(col=col)}), 0)"
        for case in (
            "CASE WHEN agent = :agent AND day = :today THEN {col} END",
            "CASE WHEN agent = :agent THEN {col} END",
            "CASE WHEN day = :today THEN {col} END",
            "{col}",
        )
        for col in ("micros", "held_micros", "tokens", "held_tokens")
    )
    + " FROM spend_days WHERE day >= :first AND day < :end"
)


def _day_windows(
    conn: sqlite3.Connection, agent: str, today: str, month_first: str, month_end: str
) -> dict[tuple[str, str], tuple[int, int]]:
    row = conn.execute(
        _DAY_WINDOWS_SQL, {"agent": agent, "today": today, "first": month_first, "end": month_end}
    ).fetchone()
    values = [int(v) for v in row]
    out: dict[tuple[str, str], tuple[int, int]] = {}
    for i, window in enumerate(("agent day", "agent month", "global day", "global month")):
        out[window, "micros"] = (values[4 * i], values[4 * i + 1])
        out[window, "tokens"] = (values[4 * i + 2], values[4 * i + 3])
    return out


def _transient(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def _is_current(conn: sqlite3.Connection, names: tuple[str, ...]) -> bool:
    """WAL already on and every migration applied (checked with plain SQL: no sqlite-utils import)."""
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode != "wal":
        return False
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'").fetchone()
    if not exists:
        return False
    applied = {r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")}
    return set(names) <= applied


class Ledger:
    """A connection to the ledger file; safe to share between threads of one process (one lock)."""

    def __init__(self, path: Path, *, redactor: Redactor | None = None, migrate: bool = True) -> None:
        self.path = Path(path)
        # Safe by default: without an explicit redactor, every key-bearing variable of this process is scrubbed.
        self.redactor = redactor if redactor is not None else Redactor.from_environ(os.environ)
        self._lock = threading.RLock()
        self._calendar_cache: tuple[datetime, datetime, tuple[str, str, str]] | None = None
        # SQLite's busy handler covers nearly every wait, but a few lock transitions while another process
        # opens, converts or closes the same file answer "locked" at once (or after one busy timeout on a
        # starved machine). Opening is idempotent, so a transient lock is retried with backoff until a
        # deadline; anything else, or a lock that outlasts the deadline, is reported.
        deadline = time.monotonic() + OPEN_DEADLINE_S
        delay = 0.01
        while True:
            try:
                self.conn = self._open(migrate)
                return
            except sqlite3.OperationalError as exc:
                if not _transient(exc) or time.monotonic() + delay > deadline:
                    raise self._open_error(exc) from None
            except sqlite3.DatabaseError as exc:
                raise self._open_error(exc) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _open_error(self, exc: sqlite3.DatabaseError) -> LedgerError:
        return LedgerError(
            f"cannot open the ledger {self.path}: {exc}",
            "check the file is a supervisor ledger and the disk is writable; `supervisor ledger path` shows it",
        )

    def _open(self, migrate: bool) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = OFF")
            self._prepare(conn, migrate)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection, migrate: bool) -> None:
        """WAL mode and migrations, once per file: cheap when the file is already current.

        Switching a new file to WAL takes an exclusive lock that SQLite's busy handler does not wait for, so
        processes opening a fresh ledger together take turns under a file lock.
        """
        from supervisor.ledger.schema import MIGRATION_NAMES

        # Even the "is it current?" check runs under the lock: while another process is switching a new file
        # to WAL, SQLite can answer "locked" without waiting. The lock is held for microseconds when current.
        lock_path = self.path.with_name(self.path.name + ".migrate.lock")
        with open(lock_path, "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                if _is_current(conn, MIGRATION_NAMES):
                    return
                conn.execute("PRAGMA journal_mode = WAL")
                if migrate and not _is_current(conn, MIGRATION_NAMES):
                    from sqlite_utils import Database

                    from supervisor.ledger import migrations

                    migrations.apply(Database(conn))
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def checkpoint_in_background(
        self, *, wal_bytes: int = CHECKPOINT_WAL_BYTES, poll_s: float = 0.1
    ) -> Callable[[], None]:
        """Move WAL checkpoints off this connection's commits, into a thread with its own connection; returns the
        function that stops it (and gives the checkpoints back to the commits).

        SQLite's automatic checkpoint runs inside the commit that crosses 1,000 WAL pages: that commit copies the
        pages back and syncs the file, ~10 ms here, on the gateway's event loop (its p99). The thread runs the same
        PASSIVE checkpoint once the WAL passes ``wal_bytes``: it never blocks writers or readers, and its I/O runs
        without the GIL. Durability is unchanged: commits still go to the WAL exactly as before."""
        wal = self.path.with_name(self.path.name + "-wal")
        stop = threading.Event()

        def run() -> None:
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            try:
                while not stop.wait(poll_s):
                    try:
                        if wal.stat().st_size > wal_bytes:
                            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except (OSError, sqlite3.Error):
                        continue  # the next poll tries again; the WAL is never lost, only longer
            finally:
                conn.close()

        thread = threading.Thread(target=run, name="ledger-checkpoint", daemon=True)
        with self._lock:
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(5)
            with self._lock, contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_autocheckpoint = 1000")

        return halt

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------------------
    # Transactions

    @contextmanager
    def immediate(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: take the write lock up front (check-then-write is atomic)."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")

    def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.immediate() as conn:
            cur = conn.execute(sql, params)
            return int(cur.lastrowid or 0)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self.conn.execute(sql, params))

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            row = self.conn.execute(sql, params).fetchone()
            return None if row is None else row[0]

    def integrity_check(self) -> str:
        return str(self.scalar("PRAGMA integrity_check"))

    def applied_migrations(self) -> list[str]:
        return [r[0] for r in self.query("SELECT name FROM _sqlite_migrations ORDER BY id")]

    # ----------------------------------------------------------------------------------------------------
    # Agents

    def ensure_agent(self, name: str, now: datetime | None = None) -> None:
        stamp = iso(now or utcnow())
        self._write(
            "INSERT INTO agents (name, state, state_since, updated_at) VALUES (?, 'idle', ?, ?) "
            "ON CONFLICT(name) DO NOTHING",
            (name, stamp, stamp),
        )

    def change_agent_state(
        self,
        name: str,
        state: AgentState,
        reason: str = "",
        *,
        run_id: int | None = None,
        step: str | None = None,
        tier: str | None = None,
        model: str | None = None,
        event: PendingEvent | None = None,
        now: datetime | None = None,
    ) -> StateChange:
        """A run moves its agent to ``state``: checked against the state diagram and written, with ``event``, in
        one transaction. Refused (nothing written) when the agent is paused: the run must stop."""
        return self._transition(
            name, state, reason, actor="run", run_id=run_id, step=step, tier=tier, model=model, event=event, now=now
        )

    def _transition(
        self,
        name: str,
        state: AgentState,
        reason: str,
        *,
        actor: StateActor,
        run_id: int | None = None,
        step: str | None = None,
        tier: str | None = None,
        model: str | None = None,
        paused_by: str | None = None,
        event: PendingEvent | None = None,
        now: datetime | None = None,
        create: bool = True,
    ) -> StateChange:
        stamp = iso(now or utcnow())
        reason = self.redactor.scrub(reason)
        with self.immediate() as conn:
            if create:
                conn.execute(
                    "INSERT INTO agents (name, state, state_since, updated_at) VALUES (?, 'idle', ?, ?) "
                    "ON CONFLICT(name) DO NOTHING",
                    (name, stamp, stamp),
                )
            row = conn.execute("SELECT state, state_reason, paused_by FROM agents WHERE name = ?", (name,)).fetchone()
            if row is None:
                return StateChange(False, "", f"no agent named {name!r}")
            if not transition_allowed(row["state"], state, actor):
                return StateChange(False, row["state"], row["state_reason"] or "", row["paused_by"])
            conn.execute(
                """UPDATE agents SET
                     state_since = CASE WHEN state = ? THEN state_since ELSE ? END,
                     state = ?, state_reason = ?, current_run_id = ?, current_step = ?, current_tier = ?,
                     current_model = ?, paused_by = ?, updated_at = ?
                   WHERE name = ?""",
                (state, stamp, state, reason, run_id, step, tier, model, paused_by, stamp, name),
            )
            if event is not None:
                self._insert_event(conn, event.kind, event.data, agent=name, run_id=event.run_id, at=event.at)
            return StateChange(True, state, reason, paused_by)

    def update_agent_position(self, name: str, *, step: str | None, tier: str | None, model: str | None) -> None:
        self._write(
            "UPDATE agents SET current_step = ?, current_tier = ?, current_model = ?, updated_at = ? WHERE name = ?",
            (step, tier, model, iso(utcnow()), name),
        )

    def set_next_run(self, name: str, at: datetime | None) -> None:
        self._write("UPDATE agents SET next_run_at = ? WHERE name = ?", (iso(at) if at else None, name))

    def agents(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM agents ORDER BY name")]

    def agent(self, name: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM agents WHERE name = ?", (name,))
        return dict(rows[0]) if rows else None

    def pause_agent(
        self, name: str, by: str, reason: str, *, event: PendingEvent | None = None, now: datetime | None = None
    ) -> StateChange:
        """Pause ``name`` from any state (``by`` a human, or "breaker"): only a human's resume lets it run again."""
        actor: StateActor = "breaker" if by == "breaker" else "human"
        return self._transition(name, "paused", reason, actor=actor, paused_by=by, event=event, now=now)

    def resume_agent(self, name: str, *, event: PendingEvent | None = None) -> bool:
        """Lift a pause (with ``event``, in the same transaction); returns False if the agent was not paused."""
        return self._transition(name, "idle", "resumed", actor="human", event=event, create=False).applied

    # ----------------------------------------------------------------------------------------------------
    # Runs and steps

    def start_run(self, agent: str, trigger: str, *, simulated: bool = False, now: datetime | None = None) -> int:
        pid, started = process_identity()
        return self._write(
            "INSERT INTO runs (agent, trigger, started_at, owner_pid, owner_started, simulated) VALUES (?, ?, ?, ?, ?, ?)",
            (agent, trigger, iso(now or utcnow()), pid, started, int(simulated)),
        )

    def finish_run(self, run_id: int, outcome: str, reason: str = "", now: datetime | None = None) -> None:
        self._write(
            "UPDATE runs SET outcome = ?, reason = ?, ended_at = ? WHERE id = ?",
            (outcome, self.redactor.scrub(reason), iso(now or utcnow()), run_id),
        )

    def run(self, run_id: int) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM runs WHERE id = ?", (run_id,))
        return dict(rows[0]) if rows else None

    def recent_runs(self, agent: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        where, params = ("WHERE r.agent = ?", [agent]) if agent else ("", [])
        return [
            dict(r)
            for r in self.query(
                f"""SELECT r.*, (SELECT sum(cost_micros) FROM calls c WHERE c.run_id = r.id) AS cost_micros,
                           (SELECT count(*) FROM calls c WHERE c.run_id = r.id) AS calls,
                           (SELECT sum(1 - priced) FROM calls c WHERE c.run_id = r.id) AS unpriced_calls
                    FROM runs r {where} ORDER BY r.id DESC LIMIT ?""",
                [*params, limit],
            )
        ]

    def start_step(self, run_id: int, name: str, kind: str, now: datetime | None = None) -> int:
        return self._write(
            "INSERT INTO steps (run_id, name, kind, started_at) VALUES (?, ?, ?, ?)",
            (run_id, name, kind, iso(now or utcnow())),
        )

    def finish_step(
        self,
        step_id: int,
        outcome: str,
        *,
        tier_reached: str | None = None,
        model: str | None = None,
        attempts: int = 0,
        verify_result: str | None = None,
        verify_detail: str = "",
        now: datetime | None = None,
    ) -> None:
        self._write(
            """UPDATE steps SET outcome = ?, tier_reached = ?, model = ?, attempts = ?, verify_result = ?,
                 verify_detail = ?, ended_at = ? WHERE id = ?""",
            (
                outcome,
                tier_reached,
                model,
                attempts,
                verify_result,
                self.redactor.scrub(verify_detail),
                iso(now or utcnow()),
                step_id,
            ),
        )

    def steps(self, run_id: int) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM steps WHERE run_id = ? ORDER BY id", (run_id,))]

    # ----------------------------------------------------------------------------------------------------
    # Calls

    _CALL_COLUMNS = (
        "agent, run_id, step_id, step, attempt, provider, model, tier, simulated, started_at, ended_at, "
        "input_uncached, cache_read, cache_write_5m, cache_write_1h, output, reasoning, "
        "price_input, price_cache_read, price_cache_write, price_cache_write_1h, price_output, price_label, "
        "cost_input_micros, cost_cache_read_micros, cost_cache_write_5m_micros, cost_cache_write_1h_micros, "
        "cost_output_micros, cost_micros, priced, unpriced_reason, latency_s, ttft_s, tokens_per_s, compute_s, "
        "finish_reason, error_class, error, reservation_id, prompt_tokens_est, price_source, turn, requested_model, "
        "auth, key_id, via"
    )
    _CALL_INSERT = f"INSERT INTO calls ({_CALL_COLUMNS}) VALUES ({', '.join('?' * 46)})"

    def _call_params(self, r: CallRecord) -> tuple[Any, ...]:
        u, c = r.usage, r.cost
        rates = c.rates
        return (
            r.agent,
            r.run_id,
            r.step_id,
            r.step,
            r.attempt,
            r.provider,
            r.model,
            r.tier,
            int(r.simulated),
            iso(r.started_at),
            iso(r.ended_at),
            u.input_uncached,
            u.cache_read,
            u.cache_write_5m,
            u.cache_write_1h,
            u.output,
            u.reasoning,
            None if rates is None else str(rates.input),
            None if rates is None else str(rates.cache_read),
            None if rates is None else str(rates.cache_write),
            None if rates is None else str(rates.write_1h),
            None if rates is None else str(rates.output),
            c.price_label,
            c.input_uncached_micros,
            c.cache_read_micros,
            c.cache_write_5m_micros,
            c.cache_write_1h_micros,
            c.output_micros,
            c.total_micros,
            int(c.priced),
            c.reason,
            r.latency_s,
            r.ttft_s,
            r.tokens_per_s,
            r.compute_s,
            r.finish_reason,
            r.error_class,
            self.redactor.scrub(r.error),
            r.reservation_id,
            r.prompt_tokens_est,
            r.price_source,
            r.turn,
            r.requested_model,
            r.auth,
            r.key_id,
            r.via,
        )

    def record_call(
        self,
        record: CallRecord,
        settlement: Settlement | None = None,
        event: Callable[[int], PendingEvent | None] | None = None,
    ) -> int:
        """Insert one call row (committed when this returns), and settle its reservation in the same transaction
        when ``settlement`` is given: the two can never be seen apart, even after a crash. ``event`` (given the
        new call's id) is the event row that reports it, written in the same transaction too."""
        with self.immediate() as conn:
            cur = conn.execute(self._CALL_INSERT, self._call_params(record))
            call_id = int(cur.lastrowid or 0)
            if settlement is not None:
                self._settle(conn, settlement)
            row = event(call_id) if event is not None else None
            if row is not None:
                self._insert_event(conn, row.kind, row.data, agent=row.agent, run_id=row.run_id, at=row.at)
            return call_id

    def record_calls(self, records: Iterable[CallRecord]) -> int:
        """Insert many call rows in one transaction (imports, benchmarks)."""
        with self.immediate() as conn:
            cur = conn.executemany(self._CALL_INSERT, [self._call_params(r) for r in records])
            return cur.rowcount

    def calls(self, run_id: int | None = None, agent: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return [dict(r) for r in self.query(f"SELECT * FROM calls {where} ORDER BY id DESC LIMIT ?", [*params, limit])]

    # ----------------------------------------------------------------------------------------------------
    # Reservations: the only way paid traffic gets sent

    def reserve(
        self,
        *,
        agent: str,
        run_id: int | None,
        provider: str,
        model: str,
        amount_micros: int,
        tokens: int,
        limits: CapLimits,
        now: datetime | None = None,
        key_id: int | None = None,
        approval_id: int | None = None,
        sent: bool = False,
        event: PendingEvent | None = None,
    ) -> Reservation | CapHit:
        """Hold ``amount_micros`` (the call's worst case) and ``tokens`` unless that could cross any cap.

        Runs in one ``BEGIN IMMEDIATE`` transaction: the check and the hold are atomic across processes.
        A $0 call is never blocked by a dollar cap (local models keep working when money runs out).
        ``sent=True`` marks it sent in the same transaction (the gateway forwards at once: a crash before it
        did keeps the worst case, never less). ``event`` is written with the reservation (only if it is made).
        """
        if amount_micros < 0 or tokens < 0:
            raise ValueError("a reservation cannot be negative")
        now = now or utcnow()
        pid, started = process_identity()
        today, month_first, month_end = self._calendar(now)
        with self.immediate() as conn:
            if limits.key_calls is not None and key_id is not None:
                made = conn.execute(
                    "SELECT count(*) FROM reservations WHERE key_id = ? AND state != 'released'", (key_id,)
                ).fetchone()[0]
                if made + 1 > limits.key_calls:
                    return CapHit("key calls", "calls", limits.key_calls, int(made), 0, 1, None)
            # (cap, window, unit, limit), in the order a refusal names them.
            checks: tuple[tuple[str, str, Literal["micros", "tokens"], int | None], ...] = (
                ("run_usd", "run", "micros", limits.run_micros),
                ("agent day_usd", "agent day", "micros", limits.agent_day_micros),
                ("agent month_usd", "agent month", "micros", limits.agent_month_micros),
                ("global day_usd", "global day", "micros", limits.global_day_micros),
                ("global month_usd", "global month", "micros", limits.global_month_micros),
                ("run_tokens", "run", "tokens", limits.run_tokens),
                ("agent day_tokens", "agent day", "tokens", limits.agent_day_tokens),
                ("agent month_tokens", "agent month", "tokens", limits.agent_month_tokens),
                ("key usd", "key", "micros", limits.key_micros),
                ("key tokens", "key", "tokens", limits.key_tokens),
                ("approval window usd", "approval", "micros", limits.approval_micros),
            )
            ids = {"run": run_id, "key": key_id, "approval": approval_id}
            # Day and month windows read the trigger-kept per-day totals (a few rows, whatever the volume), all
            # four in one statement; run, key and approval windows sum their own reservations.
            days: dict[tuple[str, str], tuple[int, int]] | None = None
            for cap, window, unit, limit in checks:
                if limit is None:
                    continue
                needed = amount_micros if unit == "micros" else tokens
                if needed <= 0:
                    continue
                if window in ids:
                    owner = ids[window]
                    if owner is None:
                        continue
                    row = conn.execute(_OWN_WINDOW_SQL[window, unit], (owner,)).fetchone()
                    spent_total, held = int(row[0]), int(row[1])
                else:
                    if days is None:
                        days = _day_windows(conn, agent, today, month_first, month_end)
                    spent_total, held = days[window, unit]
                if spent_total + needed > limit:
                    resets = (
                        None
                        if window in ids
                        else next_local_day(now)
                        if window.endswith("day")
                        else next_local_month(now)
                    )
                    return CapHit(cap, unit, limit, spent_total - held, held, needed, resets)
            cur = conn.execute(
                """INSERT INTO reservations (agent, run_id, provider, model, created_at, amount_micros, tokens,
                     owner_pid, owner_started, key_id, approval_id, sent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    agent,
                    run_id,
                    provider,
                    model,
                    iso(now),
                    amount_micros,
                    tokens,
                    pid,
                    started,
                    key_id,
                    approval_id,
                    int(sent),
                ),
            )
            if event is not None:
                self._insert_event(conn, event.kind, event.data, agent=event.agent, run_id=event.run_id, at=event.at)
            return Reservation(int(cur.lastrowid or 0), amount_micros, tokens)

    def _calendar(self, now: datetime) -> tuple[str, str, str]:
        """The local day, the month's first day and the next month's first day of ``now`` (as the per-day spend
        rows name them); computed once per local day."""
        cached = self._calendar_cache
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        day = local_day_start(now)
        names = (
            day.date().isoformat(),
            local_month_start(now).date().isoformat(),
            next_local_month(now).date().isoformat(),
        )
        self._calendar_cache = (day, next_local_day(now), names)
        return names

    def mark_sent(self, reservation_id: int) -> None:
        """The request is about to leave: from now on a crash means "maybe billed", not "never sent"."""
        self._write("UPDATE reservations SET sent = 1 WHERE id = ?", (reservation_id,))

    def settle(self, reservation_id: int, actual_micros: int | None, actual_tokens: int | None, note: str = "") -> None:
        """Replace the hold by the actual cost; unknown cost keeps the worst case (never $0)."""
        with self.immediate() as conn:
            self._settle(conn, Settlement(reservation_id, actual_micros, actual_tokens, note=note))

    def release(self, reservation_id: int, note: str = "") -> None:
        """The call was never sent: give the hold back."""
        with self.immediate() as conn:
            self._settle(conn, Settlement(reservation_id, 0, 0, release=True, note=note))

    @staticmethod
    def _settle(conn: sqlite3.Connection, s: Settlement) -> None:
        if (s.actual_micros is not None and s.actual_micros < 0) or (
            s.actual_tokens is not None and s.actual_tokens < 0
        ):
            raise ValueError("an actual cost cannot be negative")
        if s.release:
            conn.execute(
                "UPDATE reservations SET state = 'released', actual_micros = 0, actual_tokens = 0, settled_at = ?, "
                "note = ? WHERE id = ? AND state = 'held'",
                (iso(utcnow()), s.note, s.reservation_id),
            )
            return
        conn.execute(
            """UPDATE reservations SET state = CASE WHEN ? IS NULL THEN 'settled_unpriced' ELSE 'settled' END,
                 actual_micros = coalesce(?, amount_micros), actual_tokens = coalesce(?, tokens),
                 settled_at = ?, note = ? WHERE id = ? AND state = 'held'""",
            (s.actual_micros, s.actual_micros, s.actual_tokens, iso(utcnow()), s.note, s.reservation_id),
        )

    def spend(self, *, agent: str | None = None, run_id: int | None = None, since: datetime | None = None) -> Spend:
        clauses: list[str] = []
        params: list[Any] = []
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if since is not None:
            clauses.append("created_at >= ?")
            params.append(iso(since))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        row = self.query(
            f"SELECT coalesce(sum({_SPENT}), 0), coalesce(sum({_TOKENS}), 0), coalesce(sum({_HELD}), 0) FROM reservations {where}",
            params,
        )[0]
        return Spend(int(row[0]), int(row[1]), int(row[2]))

    def held_reservations(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.query("SELECT * FROM reservations WHERE state = 'held' ORDER BY id")]

    def reconcile(self, now: datetime | None = None) -> ReconcileReport:
        """After a crash: settle reservations, runs and agents whose owning process is gone.

        A reservation that was never sent is released. One that was sent but has no call row may have been
        billed: it stays charged at its worst case and an unpriced call row records what we know.
        """
        now = now or utcnow()
        released = charged = 0
        crashed: list[int] = []
        recovered: list[str] = []
        with self.immediate() as conn:
            for row in conn.execute("SELECT * FROM reservations WHERE state = 'held'").fetchall():
                if owner_alive(row["owner_pid"], row["owner_started"]):
                    continue
                call = conn.execute(
                    "SELECT cost_micros, priced, coalesce(input_uncached, 0) + coalesce(cache_read, 0) + "
                    "coalesce(cache_write_5m, 0) + coalesce(cache_write_1h, 0) + coalesce(output, 0) AS tokens, "
                    "input_uncached IS NOT NULL AND output IS NOT NULL AS tokens_known "
                    "FROM calls WHERE reservation_id = ? ORDER BY id DESC LIMIT 1",
                    (row["id"],),
                ).fetchone()
                if call is not None:
                    conn.execute(
                        "UPDATE reservations SET state = CASE WHEN ? THEN 'settled' ELSE 'settled_unpriced' END, "
                        "actual_micros = coalesce(?, amount_micros), actual_tokens = CASE WHEN ? THEN ? ELSE tokens END, "
                        "settled_at = ?, note = 'reconciled from its call row' WHERE id = ?",
                        (
                            call["priced"],
                            call["cost_micros"],
                            call["tokens_known"],
                            call["tokens"],
                            iso(now),
                            row["id"],
                        ),
                    )
                    charged += 1
                elif not row["sent"]:
                    conn.execute(
                        "UPDATE reservations SET state = 'released', actual_micros = 0, actual_tokens = 0, "
                        "settled_at = ?, note = 'reconciled: owner died before sending' WHERE id = ?",
                        (iso(now), row["id"]),
                    )
                    released += 1
                else:
                    conn.execute(
                        "UPDATE reservations SET state = 'settled_unpriced', actual_micros = amount_micros, "
                        "settled_at = ?, note = 'reconciled: owner died after sending; usage unknown' WHERE id = ?",
                        (iso(now), row["id"]),
                    )
                    conn.execute(
                        self._CALL_INSERT,
                        self._call_params(
                            CallRecord(
                                agent=row["agent"],
                                provider=row["provider"],
                                model=row["model"],
                                tier="unknown",
                                started_at=parse_iso(row["created_at"]),
                                ended_at=now,
                                usage=Usage(),
                                cost=Cost(priced=False, reason="interrupted by a crash; usage unknown"),
                                run_id=row["run_id"],
                                error_class="interrupted",
                                error="the supervisor process died while this call was in flight",
                                reservation_id=row["id"],
                            )
                        ),
                    )
                    charged += 1
            for row in conn.execute(
                "SELECT id, agent, owner_pid, owner_started FROM runs WHERE outcome = 'running'"
            ).fetchall():
                if owner_alive(row["owner_pid"] or 0, row["owner_started"] or 0.0):
                    continue
                conn.execute(
                    "UPDATE runs SET outcome = 'crashed', reason = 'the supervisor process died during this run', "
                    "ended_at = ? WHERE id = ?",
                    (iso(now), row["id"]),
                )
                conn.execute(
                    "UPDATE steps SET outcome = 'crashed', ended_at = ? WHERE run_id = ? AND outcome = 'running'",
                    (iso(now), row["id"]),
                )
                crashed.append(int(row["id"]))
            live_runs = {int(r["id"]) for r in conn.execute("SELECT id FROM runs WHERE outcome = 'running'").fetchall()}
            for row in conn.execute(
                "SELECT name, state, current_run_id FROM agents WHERE state IN ('running', 'waiting_approval')"
            ).fetchall():
                if row["current_run_id"] in live_runs:
                    continue
                if (
                    row["state"] == "waiting_approval"
                    and conn.execute(
                        "SELECT 1 FROM approvals WHERE agent = ? AND state IN ('pending', 'approved')", (row["name"],)
                    ).fetchone()
                ):
                    continue  # the run ended but its request still waits: that is the agent's true state
                conn.execute(
                    "UPDATE agents SET state = 'idle', state_reason = 'recovered after the supervisor stopped', "
                    "current_run_id = NULL, current_step = NULL, current_tier = NULL, current_model = NULL, "
                    "state_since = ?, updated_at = ? WHERE name = ?",
                    (iso(now), iso(now), row["name"]),
                )
                recovered.append(str(row["name"]))
        return ReconcileReport(released, charged, crashed, recovered)

    # ----------------------------------------------------------------------------------------------------
    # Approvals

    def request_approval(
        self,
        *,
        agent: str,
        run_id: int | None,
        step: str,
        tier: str,
        model: str,
        reason: str,
        est_cold_micros: int | None,
        est_warm_micros: int | None,
        caps_left: dict[str, Any],
        simulated: bool = False,
    ) -> int:
        return self._write(
            """INSERT INTO approvals (agent, run_id, step, tier, model, reason, est_cold_micros, est_warm_micros,
                 caps_left, requested_at, simulated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                agent,
                run_id,
                step,
                tier,
                model,
                self.redactor.scrub(reason),
                est_cold_micros,
                est_warm_micros,
                json.dumps(caps_left),
                iso(utcnow()),
                int(simulated),
            ),
        )

    def decide_approval(
        self,
        approval_id: int,
        approve: bool,
        by: str,
        *,
        window_until: datetime | None = None,
        budget_micros: int | None = None,
    ) -> ApprovalRow:
        """Approve or deny a pending request (from any process); a decided request cannot be re-decided.

        An approval with ``window_until`` is a window: it serves every request of the agent at that tier until
        then (and, with ``budget_micros``, until that much is spent through it) instead of being used once."""
        with self.immediate() as conn:
            row = conn.execute("SELECT state FROM approvals WHERE id = ?", (approval_id,)).fetchone()
            if row is None:
                raise LedgerError(
                    f"no approval request #{approval_id}", "`supervisor approvals` lists the pending ones"
                )
            if row["state"] != "pending":
                raise LedgerError(f"approval #{approval_id} is already {row['state']}")
            conn.execute(
                "UPDATE approvals SET state = ?, decided_at = ?, decided_by = ?, window_until = ?, budget_micros = ? "
                "WHERE id = ?",
                (
                    "approved" if approve else "denied",
                    iso(utcnow()),
                    by,
                    iso(window_until) if window_until is not None and approve else None,
                    budget_micros if approve else None,
                    approval_id,
                ),
            )
        found = self.approval(approval_id)
        assert found is not None
        return found

    def consume_approval(self, approval_id: int) -> bool:
        """Use an approval once; False if it was not approved or already used."""
        with self.immediate() as conn:
            cur = conn.execute(
                "UPDATE approvals SET state = 'consumed', consumed_at = ? WHERE id = ? AND state = 'approved'",
                (iso(utcnow()), approval_id),
            )
            return cur.rowcount == 1

    def approval(self, approval_id: int) -> ApprovalRow | None:
        rows = self.query("SELECT * FROM approvals WHERE id = ?", (approval_id,))
        return _approval(rows[0]) if rows else None

    def approvals(self, states: Sequence[str] = ("pending",), agent: str | None = None) -> list[ApprovalRow]:
        clauses = [f"state IN ({', '.join('?' * len(states))})"]
        params: list[Any] = list(states)
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        return [
            _approval(r)
            for r in self.query(f"SELECT * FROM approvals WHERE {' AND '.join(clauses)} ORDER BY id", params)
        ]

    def open_approval_for(self, agent: str, step: str, tier: str) -> ApprovalRow | None:
        """A pending or approved (not yet used) request for this agent's step at this tier, if any."""
        rows = self.query(
            "SELECT * FROM approvals WHERE agent = ? AND step = ? AND tier = ? AND state IN ('pending', 'approved') "
            "ORDER BY id DESC LIMIT 1",
            (agent, step, tier),
        )
        return _approval(rows[0]) if rows else None

    def approval_window(self, agent: str, step: str, tier: str, now: datetime) -> ApprovalRow | None:
        """An approved window for this agent's ``step`` at ``tier`` that is still open at ``now``."""
        rows = self.query(
            "SELECT * FROM approvals WHERE agent = ? AND step = ? AND tier = ? AND state = 'approved' "
            "AND window_until IS NOT NULL AND window_until > ? ORDER BY id DESC LIMIT 1",
            (agent, step, tier, iso(now)),
        )
        return _approval(rows[0]) if rows else None

    # ----------------------------------------------------------------------------------------------------
    # Gateway keys (only hashes are stored; the token is shown once, when it is created)

    def create_key(
        self,
        *,
        agent: str,
        key_hash: str,
        prefix: str,
        label: str = "",
        expires_at: datetime | None = None,
        run_id: int | None = None,
        step: str | None = None,
        attempt: int | None = None,
        tier: str | None = None,
        max_calls: int | None = None,
        max_micros: int | None = None,
        max_tokens: int | None = None,
        max_output_tokens: int | None = None,
    ) -> int:
        return self._write(
            """INSERT INTO gateway_keys (agent, key_hash, prefix, label, created_at, expires_at, run_id, step, attempt,
                 tier, max_calls, max_micros, max_tokens, max_output_tokens)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                agent,
                key_hash,
                prefix,
                label,
                iso(utcnow()),
                iso(expires_at) if expires_at else None,
                run_id,
                step,
                attempt,
                tier,
                max_calls,
                max_micros,
                max_tokens,
                max_output_tokens,
            ),
        )

    def key_by_hash(self, key_hash: str) -> GatewayKey | None:
        rows = self.query(f"SELECT {_KEY_COLUMNS} FROM gateway_keys WHERE key_hash = ?", (key_hash,))
        return GatewayKey(*rows[0]) if rows else None

    def gateway_key(self, key_id: int) -> GatewayKey | None:
        rows = self.query(f"SELECT {_KEY_COLUMNS} FROM gateway_keys WHERE id = ?", (key_id,))
        return GatewayKey(*rows[0]) if rows else None

    def gateway_keys(self, agent: str | None = None) -> list[GatewayKey]:
        where, params = ("WHERE agent = ?", [agent]) if agent else ("", [])
        return [
            GatewayKey(*r) for r in self.query(f"SELECT {_KEY_COLUMNS} FROM gateway_keys {where} ORDER BY id", params)
        ]

    def revoke_key(self, key_id: int) -> bool:
        """Revoke a key; False if there is no such key or it was already revoked."""
        with self.immediate() as conn:
            cur = conn.execute(
                "UPDATE gateway_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (iso(utcnow()), key_id)
            )
            return cur.rowcount == 1

    def revoke_finished_attempt_keys(self) -> int:
        """Revoke the keys of agent step attempts whose run is over (a crash left them alive until expiry)."""
        with self.immediate() as conn:
            cur = conn.execute(
                """UPDATE gateway_keys SET revoked_at = ? WHERE revoked_at IS NULL AND run_id IS NOT NULL
                   AND run_id NOT IN (SELECT id FROM runs WHERE outcome = 'running')""",
                (iso(utcnow()),),
            )
            return cur.rowcount

    # ----------------------------------------------------------------------------------------------------
    # Events

    def append_event(
        self,
        kind: str,
        data: dict[str, Any],
        *,
        agent: str | None = None,
        run_id: int | None = None,
        at: datetime | None = None,
    ) -> int:
        with self.immediate() as conn:
            return self._insert_event(conn, kind, data, agent=agent, run_id=run_id, at=at)

    def _insert_event(
        self,
        conn: sqlite3.Connection,
        kind: str,
        data: dict[str, Any],
        *,
        agent: str | None,
        run_id: int | None,
        at: datetime | None,
    ) -> int:
        text = json.dumps(data, default=str, ensure_ascii=False)
        if self.redactor.secrets and self.redactor.may_hide_in_json(text):
            # Scrub the strings before encoding: JSON escaping could hide a key from a scrub of the text.
            text = json.dumps(scrub_tree(data, self.redactor), default=str, ensure_ascii=False)
        cur = conn.execute(
            "INSERT INTO events (at, agent, run_id, kind, data) VALUES (?, ?, ?, ?, ?)",
            (iso(at or utcnow()), agent, run_id, kind, text),
        )
        return int(cur.lastrowid or 0)

    def events_after(
        self,
        last_id: int = 0,
        *,
        agent: str | None = None,
        kinds: Sequence[str] | None = None,
        limit: int = 1000,
    ) -> list[EventRow]:
        clauses: list[str] = ["id > ?"]
        params: list[Any] = [last_id]
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        if kinds:
            clauses.append(f"kind IN ({', '.join('?' * len(kinds))})")
            params.extend(kinds)
        rows = self.query(f"SELECT * FROM events WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?", [*params, limit])
        return [EventRow.from_sql(r) for r in rows]

    def last_event_id(self) -> int:
        return int(self.scalar("SELECT coalesce(max(id), 0) FROM events") or 0)

    # ----------------------------------------------------------------------------------------------------
    # Commands (from the CLI/TUI to a running daemon) and the daemon's presence

    def enqueue_command(self, agent: str, kind: str, by: str) -> int:
        return self._write(
            "INSERT INTO commands (at, agent, kind, requested_by) VALUES (?, ?, ?, ?)",
            (iso(utcnow()), agent, kind, by),
        )

    def take_commands(self) -> list[dict[str, Any]]:
        with self.immediate() as conn:
            rows = [
                dict(r) for r in conn.execute("SELECT * FROM commands WHERE state = 'pending' ORDER BY id").fetchall()
            ]
            if rows:
                conn.execute(
                    f"UPDATE commands SET state = 'done', done_at = ? WHERE id IN ({', '.join('?' * len(rows))})",
                    [iso(utcnow()), *[r["id"] for r in rows]],
                )
            return rows

    def register_daemon(self, pid: int, config_path: str) -> None:
        stamp = iso(utcnow())
        self._write(
            "INSERT INTO daemon (id, pid, started_at, heartbeat_at, config_path) VALUES (1, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, started_at = excluded.started_at, "
            "heartbeat_at = excluded.heartbeat_at, config_path = excluded.config_path",
            (pid, stamp, stamp, config_path),
        )

    def daemon_heartbeat(self, pid: int) -> None:
        self._write("UPDATE daemon SET heartbeat_at = ? WHERE id = 1 AND pid = ?", (iso(utcnow()), pid))

    def clear_daemon(self, pid: int) -> None:
        self._write("DELETE FROM daemon WHERE id = 1 AND pid = ?", (pid,))

    def daemon_info(self) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM daemon WHERE id = 1")
        return dict(rows[0]) if rows else None

    # ----------------------------------------------------------------------------------------------------
    # Plans (planner mode)

    def record_plan(self, *, agent: str, run_id: int, tier: str, model: str, plan: str, valid: bool, error: str) -> int:
        return self._write(
            "INSERT INTO plans (agent, run_id, tier, model, created_at, valid, validation_error, plan) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                agent,
                run_id,
                tier,
                model,
                iso(utcnow()),
                int(valid),
                self.redactor.scrub(error),
                self.redactor.scrub(plan),
            ),
        )

    # ----------------------------------------------------------------------------------------------------
    # Attempts (gate verdicts per tier: learned routing and the repeated-failure breaker)

    def record_attempt(
        self,
        *,
        agent: str,
        run_id: int,
        step: str,
        tier: str,
        model: str,
        attempt: int,
        passed: bool,
        failure: str,
    ) -> int:
        import hashlib

        digest = hashlib.sha256(failure.encode("utf-8", "replace")).hexdigest()[:16] if not passed else ""
        return self._write(
            "INSERT INTO attempts (agent, run_id, step, tier, model, attempt, at, passed, failure_hash, failure) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                agent,
                run_id,
                step,
                tier,
                model,
                attempt,
                iso(utcnow()),
                int(passed),
                digest,
                self.redactor.scrub(failure[:2000]),
            ),
        )

    def recent_attempts(self, agent: str, step: str, limit: int = 50) -> list[dict[str, Any]]:
        """The step's latest attempts, newest first."""
        return [
            dict(r)
            for r in self.query(
                "SELECT * FROM attempts WHERE agent = ? AND step = ? ORDER BY id DESC LIMIT ?",
                (agent, step, limit),
            )
        ]

    def recent_agent_calls(
        self, agent: str, limit: int, *, step: str | None = None, after_id: int = 0, key_id: int | None = None
    ) -> list[dict[str, Any]]:
        """The agent's latest calls that reached a model (optionally of one step, after a call id, made with one
        gateway key), newest first."""
        where = "agent = ? AND error_class IS NULL AND id > ?"
        params: list[Any] = [agent, after_id]
        if step is not None:
            where += " AND step = ?"
            params.append(step)
        if key_id is not None:
            where += " AND key_id = ?"
            params.append(key_id)
        return [
            dict(r)
            for r in self.query(
                "SELECT id, run_id, step, input_uncached, cache_read, cache_write_5m, cache_write_1h, output, cost_micros "
                f"FROM calls WHERE {where} ORDER BY id DESC LIMIT ?",
                [*params, limit],
            )
        ]

    def recent_run_ids(self, agent: str, limit: int) -> list[int]:
        return [
            int(r[0])
            for r in self.query("SELECT id FROM runs WHERE agent = ? ORDER BY id DESC LIMIT ?", (agent, limit))
        ]

    # ----------------------------------------------------------------------------------------------------
    # Reports

    def report(
        self,
        by: ReportBy,
        *,
        since: date | None = None,
        until: date | None = None,
        agent: str | None = None,
    ) -> list[ReportRow]:
        """Totals per group with every token component, cost, call and unpriced counts, local compute time.

        Simulated calls (demo tiers) are reported in their own groups, never mixed with real spend.
        """
        if by == "run":
            return self._report_by_run(since=since, until=until, agent=agent)
        group_expr = {"agent": "agent", "model": "provider || ':' || model", "day": "day", "tier": "tier"}[by]
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("day >= ?")
            params.append(since.isoformat())
        if until is not None:
            clauses.append("day <= ?")
            params.append(until.isoformat())
        if agent is not None:
            clauses.append("agent = ?")
            params.append(agent)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.query(
            f"""SELECT {group_expr} AS grp, simulated, sum(calls), sum(unpriced_calls), sum(error_calls),
                       sum(input_uncached), sum(cache_read), sum(cache_write), sum(output), sum(reasoning),
                       sum(cost_micros), sum(compute_s)
                FROM call_rollup {where} GROUP BY grp, simulated ORDER BY grp, simulated""",
            params,
        )
        return [_report_row(r) for r in rows]

    def _report_by_run(
        self, *, since: date | None, until: date | None, agent: str | None, limit: int = 100
    ) -> list[ReportRow]:
        """Per run; without a date range, the latest ``limit`` runs (found through the run_id index, so it is fast)."""
        clauses: list[str] = []
        params: list[Any] = []
        if since is None and until is None:
            run_filter = (
                "SELECT DISTINCT run_id FROM calls"
                + (" WHERE agent = ?" if agent else "")
                + " ORDER BY run_id DESC LIMIT ?"
            )
            clauses.append(f"(c.run_id IN ({run_filter}) OR c.run_id IS NULL)")
            params.extend([agent, limit] if agent else [limit])
        if since is not None:
            clauses.append("c.started_at >= ?")
            params.append(iso(datetime.combine(since, datetime.min.time()).astimezone()))
        if until is not None:
            clauses.append("c.started_at < ?")
            params.append(iso(datetime.combine(until + timedelta(days=1), datetime.min.time()).astimezone()))
        if agent is not None:
            clauses.append("c.agent = ?")
            params.append(agent)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        per_attempt: dict[tuple[str, bool], list[ReportRow]] = {}
        for r in self.query(
            f"""SELECT 'run ' || c.run_id || ' ' || c.agent AS run_grp,
                       coalesce(c.step, '-') || ' attempt ' || coalesce(c.attempt, '-') || ' ' || c.tier
                       || CASE WHEN max(c.key_id IS NOT NULL AND c.via = 'gateway') THEN ' (agent program)' ELSE '' END,
                       c.simulated, count(*),
                       sum(1 - c.priced), sum(c.error_class IS NOT NULL), sum(coalesce(c.input_uncached, 0)),
                       sum(coalesce(c.cache_read, 0)),
                       sum(coalesce(c.cache_write_5m, 0) + coalesce(c.cache_write_1h, 0)),
                       sum(coalesce(c.output, 0)), sum(coalesce(c.reasoning, 0)), sum(coalesce(c.cost_micros, 0)),
                       sum(coalesce(c.compute_s, 0))
                FROM calls c {where} {"AND" if where else "WHERE"} c.run_id IS NOT NULL
                GROUP BY c.run_id, c.agent, c.simulated, c.step, c.attempt, c.tier ORDER BY min(c.id)""",
            params,
        ):
            per_attempt.setdefault((str(r[0]), bool(r[2])), []).append(_report_row(tuple(r)[1:]))
        rows = self.query(
            f"""SELECT 'run ' || coalesce(c.run_id, '-') || ' ' || c.agent AS grp, c.simulated, count(*),
                       sum(1 - c.priced), sum(c.error_class IS NOT NULL), sum(coalesce(c.input_uncached, 0)),
                       sum(coalesce(c.cache_read, 0)),
                       sum(coalesce(c.cache_write_5m, 0) + coalesce(c.cache_write_1h, 0)),
                       sum(coalesce(c.output, 0)), sum(coalesce(c.reasoning, 0)), sum(coalesce(c.cost_micros, 0)),
                       sum(coalesce(c.compute_s, 0))
                FROM calls c {where} GROUP BY c.run_id, c.agent, c.simulated ORDER BY c.run_id, c.agent, c.simulated""",
            params,
        )
        out = []
        for r in rows:
            row = _report_row(r)
            out.append(replace(row, attempts=tuple(per_attempt.get((row.group, row.simulated), ()))))
        return out


def _report_row(r: sqlite3.Row | tuple[Any, ...]) -> ReportRow:
    return ReportRow(
        group=str(r[0]),
        simulated=bool(r[1]),
        calls=int(r[2] or 0),
        unpriced_calls=int(r[3] or 0),
        error_calls=int(r[4] or 0),
        input_uncached=int(r[5] or 0),
        cache_read=int(r[6] or 0),
        cache_write=int(r[7] or 0),
        output=int(r[8] or 0),
        reasoning=int(r[9] or 0),
        cost_micros=int(r[10] or 0),
        local_compute_s=round(float(r[11] or 0.0), 3),
    )


def _approval(r: sqlite3.Row) -> ApprovalRow:
    return ApprovalRow(
        id=r["id"],
        agent=r["agent"],
        run_id=r["run_id"],
        step=r["step"],
        tier=r["tier"],
        model=r["model"],
        reason=r["reason"],
        est_cold_micros=r["est_cold_micros"],
        est_warm_micros=r["est_warm_micros"],
        caps_left=json.loads(r["caps_left"] or "{}"),
        state=r["state"],
        requested_at=r["requested_at"],
        decided_at=r["decided_at"],
        decided_by=r["decided_by"],
        simulated=bool(r["simulated"]),
        window_until=r["window_until"],
        budget_micros=r["budget_micros"],
    )


def open_ledger(path: Path | None = None, *, redactor: Redactor | None = None) -> Ledger:
    """Open (creating and migrating if needed) the ledger at ``path`` or the default location."""
    from supervisor import paths

    return Ledger(path or paths.ledger_path(), redactor=redactor)
