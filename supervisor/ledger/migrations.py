"""Named, append-only migrations of the ledger schema. Never edit one that has shipped: add the next.

Each migration says in one line why it exists. Money is integer micro-dollars; unit prices are decimal strings
(USD per million tokens) copied onto each call row so history never changes when the catalog does.
"""

from __future__ import annotations

from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("frugal-supervisor")


@migrations()
def m001_initial(db: Database) -> None:
    """The ledger: agents, runs, steps, calls (every token component priced separately), reservations,
    approvals, events, and per-day rollups so reports stay fast at a million calls."""
    db.execute(
        """
        CREATE TABLE agents (
            name TEXT PRIMARY KEY,
            state TEXT NOT NULL DEFAULT 'idle',
            state_reason TEXT NOT NULL DEFAULT '',
            state_since TEXT NOT NULL,
            paused_by TEXT,
            current_run_id INTEGER,
            current_step TEXT,
            current_tier TEXT,
            current_model TEXT,
            next_run_at TEXT,
            updated_at TEXT NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            agent TEXT NOT NULL,
            trigger TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            outcome TEXT NOT NULL DEFAULT 'running',
            reason TEXT NOT NULL DEFAULT '',
            owner_pid INTEGER,
            owner_started REAL,
            simulated INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX runs_agent_started ON runs(agent, started_at)")
    db.execute("CREATE INDEX runs_outcome ON runs(outcome)")
    db.execute(
        """
        CREATE TABLE steps (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            started_at TEXT NOT NULL,
            ended_at TEXT,
            outcome TEXT NOT NULL DEFAULT 'running',
            tier_reached TEXT,
            model TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            verify_result TEXT,
            verify_detail TEXT NOT NULL DEFAULT ''
        )
        """
    )
    db.execute("CREATE INDEX steps_run ON steps(run_id)")
    db.execute(
        """
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY,
            agent TEXT NOT NULL,
            run_id INTEGER,
            step_id INTEGER,
            step TEXT,
            attempt INTEGER NOT NULL DEFAULT 1,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            tier TEXT NOT NULL,
            simulated INTEGER NOT NULL DEFAULT 0,
            started_at TEXT NOT NULL,
            ended_at TEXT NOT NULL,
            input_uncached INTEGER,
            cache_read INTEGER,
            cache_write_5m INTEGER,
            cache_write_1h INTEGER,
            output INTEGER,
            reasoning INTEGER,
            price_input TEXT,
            price_cache_read TEXT,
            price_cache_write TEXT,
            price_cache_write_1h TEXT,
            price_output TEXT,
            price_label TEXT NOT NULL DEFAULT '',
            cost_input_micros INTEGER,
            cost_cache_read_micros INTEGER,
            cost_cache_write_5m_micros INTEGER,
            cost_cache_write_1h_micros INTEGER,
            cost_output_micros INTEGER,
            cost_micros INTEGER,
            priced INTEGER NOT NULL,
            unpriced_reason TEXT NOT NULL DEFAULT '',
            latency_s REAL,
            ttft_s REAL,
            tokens_per_s REAL,
            compute_s REAL,
            finish_reason TEXT,
            error_class TEXT,
            error TEXT NOT NULL DEFAULT '',
            reservation_id INTEGER,
            prompt_tokens_est INTEGER
        )
        """
    )
    db.execute("CREATE INDEX calls_started ON calls(started_at)")
    db.execute("CREATE INDEX calls_agent_started ON calls(agent, started_at)")
    db.execute("CREATE INDEX calls_run ON calls(run_id)")
    db.execute(
        """
        CREATE TABLE call_rollup (
            day TEXT NOT NULL,
            agent TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            tier TEXT NOT NULL,
            simulated INTEGER NOT NULL,
            calls INTEGER NOT NULL DEFAULT 0,
            unpriced_calls INTEGER NOT NULL DEFAULT 0,
            error_calls INTEGER NOT NULL DEFAULT 0,
            input_uncached INTEGER NOT NULL DEFAULT 0,
            cache_read INTEGER NOT NULL DEFAULT 0,
            cache_write INTEGER NOT NULL DEFAULT 0,
            output INTEGER NOT NULL DEFAULT 0,
            reasoning INTEGER NOT NULL DEFAULT 0,
            cost_micros INTEGER NOT NULL DEFAULT 0,
            compute_s REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (day, agent, provider, model, tier, simulated)
        )
        """
    )
    # The rollup is maintained by the database itself, so it can never drift from the calls it sums.
    db.execute(
        """
        CREATE TRIGGER calls_rollup AFTER INSERT ON calls BEGIN
            INSERT INTO call_rollup (day, agent, provider, model, tier, simulated, calls, unpriced_calls,
                error_calls, input_uncached, cache_read, cache_write, output, reasoning, cost_micros, compute_s)
            VALUES (date(NEW.started_at, 'localtime'), NEW.agent, NEW.provider, NEW.model, NEW.tier,
                NEW.simulated, 1, 1 - NEW.priced, NEW.error_class IS NOT NULL,
                coalesce(NEW.input_uncached, 0), coalesce(NEW.cache_read, 0),
                coalesce(NEW.cache_write_5m, 0) + coalesce(NEW.cache_write_1h, 0), coalesce(NEW.output, 0),
                coalesce(NEW.reasoning, 0), coalesce(NEW.cost_micros, 0), coalesce(NEW.compute_s, 0))
            ON CONFLICT (day, agent, provider, model, tier, simulated) DO UPDATE SET
                calls = calls + 1,
                unpriced_calls = unpriced_calls + excluded.unpriced_calls,
                error_calls = error_calls + excluded.error_calls,
                input_uncached = input_uncached + excluded.input_uncached,
                cache_read = cache_read + excluded.cache_read,
                cache_write = cache_write + excluded.cache_write,
                output = output + excluded.output,
                reasoning = reasoning + excluded.reasoning,
                cost_micros = cost_micros + excluded.cost_micros,
                compute_s = compute_s + excluded.compute_s;
        END
        """
    )
    db.execute(
        """
        CREATE TABLE reservations (
            id INTEGER PRIMARY KEY,
            agent TEXT NOT NULL,
            run_id INTEGER,
            provider TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            amount_micros INTEGER NOT NULL,
            tokens INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'held',
            sent INTEGER NOT NULL DEFAULT 0,
            actual_micros INTEGER,
            actual_tokens INTEGER,
            settled_at TEXT,
            owner_pid INTEGER NOT NULL,
            owner_started REAL NOT NULL,
            note TEXT NOT NULL DEFAULT ''
        )
        """
    )
    db.execute("CREATE INDEX reservations_created ON reservations(created_at)")
    db.execute("CREATE INDEX reservations_agent_created ON reservations(agent, created_at)")
    db.execute("CREATE INDEX reservations_run ON reservations(run_id)")
    db.execute("CREATE INDEX reservations_state ON reservations(state)")
    db.execute(
        """
        CREATE TABLE approvals (
            id INTEGER PRIMARY KEY,
            agent TEXT NOT NULL,
            run_id INTEGER,
            step TEXT NOT NULL,
            tier TEXT NOT NULL,
            model TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            est_cold_micros INTEGER,
            est_warm_micros INTEGER,
            caps_left TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL DEFAULT 'pending',
            requested_at TEXT NOT NULL,
            decided_at TEXT,
            decided_by TEXT,
            consumed_at TEXT,
            simulated INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX approvals_state ON approvals(state)")
    db.execute("CREATE INDEX approvals_agent_step ON approvals(agent, step)")
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            agent TEXT,
            run_id INTEGER,
            kind TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}'
        )
        """
    )
    db.execute("CREATE INDEX events_agent ON events(agent, id)")
    db.execute("CREATE INDEX events_kind ON events(kind, id)")
    db.execute(
        """
        CREATE TABLE commands (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            agent TEXT NOT NULL,
            kind TEXT NOT NULL,
            requested_by TEXT NOT NULL DEFAULT '',
            state TEXT NOT NULL DEFAULT 'pending',
            done_at TEXT
        )
        """
    )
    db.execute("CREATE INDEX commands_state ON commands(state, id)")
    db.execute(
        """
        CREATE TABLE daemon (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pid INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            heartbeat_at TEXT NOT NULL,
            config_path TEXT NOT NULL DEFAULT ''
        )
        """
    )


@migrations()
def m002_plans(db: Database) -> None:
    """Planner mode records each plan, the tier and model that wrote it, and whether it passed validation."""
    db.execute(
        """
        CREATE TABLE plans (
            id INTEGER PRIMARY KEY,
            agent TEXT NOT NULL,
            run_id INTEGER NOT NULL,
            tier TEXT NOT NULL,
            model TEXT NOT NULL,
            created_at TEXT NOT NULL,
            valid INTEGER NOT NULL,
            validation_error TEXT NOT NULL DEFAULT '',
            plan TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX plans_run ON plans(run_id)")


@migrations()
def m003_attempts(db: Database) -> None:
    """Each model attempt's gate verdict per tier, so routing can learn which tier a step needs and the breaker
    can see the same failure repeating across runs."""
    db.execute(
        """
        CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            agent TEXT NOT NULL,
            run_id INTEGER NOT NULL,
            step TEXT NOT NULL,
            tier TEXT NOT NULL,
            model TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            at TEXT NOT NULL,
            passed INTEGER NOT NULL,
            failure_hash TEXT NOT NULL DEFAULT '',
            failure TEXT NOT NULL DEFAULT ''
        )
        """
    )
    db.execute("CREATE INDEX attempts_agent_step ON attempts(agent, step, id)")


@migrations()
def m004_status_indexes(db: Database) -> None:
    """Status and the TUI look up each step's latest call per tier and each agent's spend per window: index both,
    so a million-call ledger answers in milliseconds."""
    db.execute("CREATE INDEX calls_agent_step_tier ON calls(agent, step, tier, id)")
    db.execute(
        "CREATE INDEX reservations_agent_spend ON reservations"
        "(agent, created_at, state, amount_micros, actual_micros, tokens, actual_tokens)"
    )


_SPENT = "CASE {r}.state WHEN 'held' THEN {r}.amount_micros WHEN 'released' THEN 0 ELSE coalesce({r}.actual_micros, {r}.amount_micros) END"
_HELD = "CASE {r}.state WHEN 'held' THEN {r}.amount_micros ELSE 0 END"
_TOKENS = (
    "CASE {r}.state WHEN 'held' THEN {r}.tokens WHEN 'released' THEN 0 ELSE coalesce({r}.actual_tokens, {r}.tokens) END"
)
_HELD_TOKENS = "CASE {r}.state WHEN 'held' THEN {r}.tokens ELSE 0 END"


def _delta(r: str, sign: str) -> str:
    return ", ".join(f"{sign}({expr.format(r=r)})" for expr in (_SPENT, _HELD, _TOKENS, _HELD_TOKENS))


@migrations()
def m005_spend_days(db: Database) -> None:
    """Running spend per agent and local day, kept by triggers on reservations, so a cap check reads a few rows
    instead of summing every reservation of the month while it holds the write lock."""
    db.execute(
        """
        CREATE TABLE spend_days (
            agent TEXT NOT NULL,
            day TEXT NOT NULL,
            micros INTEGER NOT NULL DEFAULT 0,
            held_micros INTEGER NOT NULL DEFAULT 0,
            tokens INTEGER NOT NULL DEFAULT 0,
            held_tokens INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, agent)
        )
        """
    )
    db.execute("CREATE INDEX spend_days_agent ON spend_days(agent, day)")
    upsert = (
        "INSERT INTO spend_days (agent, day, micros, held_micros, tokens, held_tokens) "
        "VALUES ({r}.agent, date({r}.created_at, 'localtime'), {values}) "
        "ON CONFLICT (day, agent) DO UPDATE SET micros = micros + excluded.micros, "
        "held_micros = held_micros + excluded.held_micros, tokens = tokens + excluded.tokens, "
        "held_tokens = held_tokens + excluded.held_tokens;"
    )
    db.execute(
        "CREATE TRIGGER reservations_spend_insert AFTER INSERT ON reservations BEGIN "
        + upsert.format(r="NEW", values=_delta("NEW", "+"))
        + " END"
    )
    db.execute(
        "CREATE TRIGGER reservations_spend_update AFTER UPDATE OF state, amount_micros, actual_micros, tokens, "
        "actual_tokens ON reservations BEGIN "
        + upsert.format(r="OLD", values=_delta("OLD", "-"))
        + " "
        + upsert.format(r="NEW", values=_delta("NEW", "+"))
        + " END"
    )
    db.execute(
        f"""INSERT INTO spend_days (agent, day, micros, held_micros, tokens, held_tokens)
            SELECT r.agent, date(r.created_at, 'localtime'), sum({_SPENT.format(r="r")}), sum({_HELD.format(r="r")}),
                   sum({_TOKENS.format(r="r")}), sum({_HELD_TOKENS.format(r="r")})
            FROM reservations r GROUP BY r.agent, date(r.created_at, 'localtime')"""
    )


@migrations()
def m006_call_price_source(db: Database) -> None:
    """Each call row names where its prices came from (a bundled or user catalog file, or the genai-prices fallback
    and its version), next to the price date already in price_label."""
    db.execute("ALTER TABLE calls ADD COLUMN price_source TEXT NOT NULL DEFAULT ''")


@migrations()
def m007_call_turn(db: Database) -> None:
    """A built-in worker's step makes one call per turn: each call row says which turn of its attempt it was."""
    db.execute("ALTER TABLE calls ADD COLUMN turn INTEGER")


@migrations()
def m008_gateway(db: Database) -> None:
    """The gateway: hashed per-agent keys (with the bindings and limits an agent step's short-lived key needs),
    each call's requested model and how it was authenticated, reservations per key and per approval window, and
    approvals that can be windows ("frontier for this agent, up to $2, for 15 minutes")."""
    db.execute(
        """
        CREATE TABLE gateway_keys (
            id INTEGER PRIMARY KEY,
            agent TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            label TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            expires_at TEXT,
            revoked_at TEXT,
            run_id INTEGER,
            step TEXT,
            attempt INTEGER,
            tier TEXT,
            max_calls INTEGER,
            max_micros INTEGER,
            max_tokens INTEGER,
            max_output_tokens INTEGER
        )
        """
    )
    db.execute("CREATE INDEX gateway_keys_agent ON gateway_keys(agent, id)")
    for column in ("requested_model TEXT", "auth TEXT", "key_id INTEGER", "via TEXT NOT NULL DEFAULT 'runtime'"):
        db.execute(f"ALTER TABLE calls ADD COLUMN {column}")
    for column in ("key_id INTEGER", "approval_id INTEGER"):
        db.execute(f"ALTER TABLE reservations ADD COLUMN {column}")
    db.execute("CREATE INDEX reservations_key ON reservations(key_id) WHERE key_id IS NOT NULL")
    db.execute("CREATE INDEX reservations_approval ON reservations(approval_id) WHERE approval_id IS NOT NULL")
    for column in ("window_until TEXT", "budget_micros INTEGER"):
        db.execute(f"ALTER TABLE approvals ADD COLUMN {column}")
    # The breaker reads an agent's last few calls of one step after every gateway call: newest first, by index.
    db.execute("CREATE INDEX calls_agent_step_id ON calls(agent, step, id)")


def apply(db: Database, **kwargs: Any) -> None:
    """Bring ``db`` up to the newest schema."""
    migrations.apply(db, **kwargs)
