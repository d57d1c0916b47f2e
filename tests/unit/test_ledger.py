"""The Ledger against real SQLite files in ``tmp_path``; crash recovery against real child processes."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

from supervisor import paths
from supervisor.catalog import Catalog, load_catalog
from supervisor.config import ProviderConfig
from supervisor.cost import Cost, cost_of, unpriced
from supervisor.errors import LedgerError
from supervisor.ledger import CallRecord, CapHit, CapLimits, Ledger, PendingEvent, Reservation
from supervisor.ledger.ledger import AgentState, StateActor, transition_allowed
from supervisor.ledger.migrations import migrations
from supervisor.secrets import Redactor
from supervisor.usage import Usage

# Every registered migration, newest last (later migrations are added by other changes; never edited).
ALL_MIGRATIONS = [m.name for m in migrations.pending(Database(memory=True))]
T0 = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)  # a Tuesday, mid-month, noon UTC: far from any day edge
CHILD_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([paths.bundled_models_dir()])


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[Ledger]:
    with Ledger(ledger_path) as opened:
        yield opened


def priced_call(
    catalog: Catalog,
    *,
    agent: str = "fixer",
    model: str = "anthropic:claude-opus-5-5",
    started_at: datetime = T0,
    usage: Usage | None = None,
    **extra: Any,
) -> CallRecord:
    spec = catalog.get(model)
    assert spec is not None, model
    usage = usage or Usage(
        input_uncached=2_000, cache_read=140_000, cache_write_5m=0, cache_write_1h=8_000, output=1_500
    )
    cost = cost_of(usage, spec, started_at)
    assert cost.priced
    return CallRecord(
        agent=agent,
        provider=spec.provider,
        model=spec.id,
        tier=spec.tier,
        started_at=started_at,
        ended_at=started_at + timedelta(seconds=3),
        usage=usage,
        cost=cost,
        **extra,
    )


def unpriced_call(agent: str = "fixer", started_at: datetime = T0, **extra: Any) -> CallRecord:
    return CallRecord(
        agent=agent,
        provider="openai",
        model="gpt-unknown",
        tier="frontier",
        started_at=started_at,
        ended_at=started_at + timedelta(seconds=1),
        usage=Usage(),
        cost=unpriced("the provider did not report usage"),
        **extra,
    )


def call_row(ledger: Ledger, call_id: int) -> dict[str, Any]:
    rows = ledger.query("SELECT * FROM calls WHERE id = ?", (call_id,))
    assert rows, call_id
    return dict(rows[0])


# ------------------------------------------------------------------------------------------------------------
# Migrations


def test_a_new_ledger_has_every_migration_and_wal(ledger: Ledger) -> None:
    assert ALL_MIGRATIONS[:2] == ["m001_initial", "m002_plans"]
    assert ledger.applied_migrations() == ALL_MIGRATIONS
    assert ledger.scalar("PRAGMA journal_mode") == "wal"
    assert ledger.scalar("PRAGMA busy_timeout") == 30_000
    tables = {r[0] for r in ledger.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {
        "agents",
        "runs",
        "steps",
        "calls",
        "call_rollup",
        "reservations",
        "approvals",
        "events",
    } <= tables
    assert {"commands", "daemon", "plans"} <= tables
    assert ledger.integrity_check() == "ok"


def test_reopening_applies_nothing_twice(ledger_path: Path, catalog: Catalog) -> None:
    with Ledger(ledger_path) as first:
        first.record_call(priced_call(catalog))
    with Ledger(ledger_path) as second:
        assert second.applied_migrations() == ALL_MIGRATIONS
        assert second.scalar("SELECT count(*) FROM _sqlite_migrations") == len(ALL_MIGRATIONS)
        assert second.scalar("SELECT count(*) FROM calls") == 1


def _old_call(ledger: Ledger, record: CallRecord) -> int:
    """The call row a supervisor of an older schema wrote: only the columns its ``calls`` table has (later
    migrations add columns, e.g. m006's ``price_source``, m007's ``turn``)."""
    present = {row[1] for row in ledger.query("PRAGMA table_info(calls)")}
    columns = [c.strip() for c in Ledger._CALL_COLUMNS.split(",")]
    kept = [(c, v) for c, v in zip(columns, ledger._call_params(record), strict=True) if c in present]
    names = ", ".join(c for c, _ in kept)
    return ledger._write(f"INSERT INTO calls ({names}) VALUES ({', '.join('?' * len(kept))})", [v for _, v in kept])


def test_upgrading_an_m001_ledger_applies_m002_and_keeps_every_row(ledger_path: Path, catalog: Catalog) -> None:
    conn = sqlite3.connect(str(ledger_path), isolation_level=None)
    migrations.apply(Database(conn), stop_before="m002_plans")
    conn.close()

    with Ledger(ledger_path, migrate=False) as old:
        assert old.applied_migrations() == ["m001_initial"]
        assert old.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'plans'") == 0
        run_id = old.start_run("fixer", "schedule", now=T0)
        call_ids = [_old_call(old, priced_call(catalog, run_id=run_id)), _old_call(old, unpriced_call())]
        old_call_columns = ", ".join(row[1] for row in old.query("PRAGMA table_info(calls)"))
        event_id = old.append_event("run_started", {"run": run_id}, agent="fixer", run_id=run_id)
        approval_id = old.request_approval(
            agent="fixer",
            run_id=run_id,
            step="fix",
            tier="frontier",
            model="anthropic:claude-opus-5-5",
            reason="cheap tier failed twice",
            est_cold_micros=130_000,
            est_warm_micros=40_000,
            caps_left={"agent day_usd": 1_000_000},
        )
        # Columns added later (calls: price_source, turn, the gateway's; approvals: the window) are new, and empty
        # for old rows: compare the columns the old schema had.
        selects = {
            table: ", ".join(row[1] for row in old.query(f"PRAGMA table_info({table})"))
            for table in ("runs", "call_rollup", "events", "approvals")
        }
        selects["calls"] = old_call_columns
        before = {
            table: [tuple(r) for r in old.query(f"SELECT {cols} FROM {table} ORDER BY rowid")]
            for table, cols in selects.items()
        }

    with Ledger(ledger_path) as upgraded:
        assert upgraded.applied_migrations() == ALL_MIGRATIONS
        assert upgraded.integrity_check() == "ok"
        for table, rows in before.items():
            after = [tuple(r) for r in upgraded.query(f"SELECT {selects[table]} FROM {table} ORDER BY rowid")]
            assert after == rows, table
        assert [(r["price_source"], r["turn"]) for r in upgraded.calls()] == [("", None), ("", None)]
        # m008 adds the gateway's columns: rows from before it are the runtime's own calls
        assert [(r["via"], r["requested_model"], r["auth"]) for r in upgraded.calls()] == [("runtime", None, None)] * 2
        assert [r["id"] for r in upgraded.calls()] == sorted(call_ids, reverse=True)
        assert upgraded.events_after(0)[0].id == event_id
        approval = upgraded.approval(approval_id)
        assert approval is not None
        assert approval.state == "pending"
        plan_id = upgraded.record_plan(
            agent="fixer",
            run_id=run_id,
            tier="cheap",
            model="deepseek:deepseek-flash",
            plan="1. fix",
            valid=True,
            error="",
        )
        assert upgraded.scalar("SELECT plan FROM plans WHERE id = ?", (plan_id,)) == "1. fix"


def test_a_file_that_is_not_a_ledger_is_a_ledger_error(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-db.db"
    bogus.write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(LedgerError, match="cannot open the ledger") as caught:
        Ledger(bogus)
    assert caught.value.hint


def test_opening_waits_out_a_lock_sqlite_reports_at_once(tmp_path: Path) -> None:
    """Another process holds a write lock on a not-yet-WAL file: switching to WAL answers "locked" at once,
    without SQLite's busy handler. Opening retries until the lock goes instead of failing."""
    path = tmp_path / "held.db"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(0.5)\n"
            "c.execute('COMMIT')\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    with Ledger(path) as opened:
        assert opened.scalar("PRAGMA journal_mode") == "wal"
        assert opened.applied_migrations() == ALL_MIGRATIONS
    assert holder.wait(timeout=30) == 0


# ------------------------------------------------------------------------------------------------------------
# Call rows


def test_a_call_row_stores_every_token_component_unit_price_and_cost_component(
    ledger: Ledger, catalog: Catalog
) -> None:
    usage = Usage(
        input_uncached=2_000,
        cache_read=140_000,
        cache_write_5m=3_000,
        cache_write_1h=8_000,
        output=1_500,
        reasoning=700,
    )
    record = priced_call(
        catalog,
        usage=usage,
        run_id=7,
        step="fix",
        attempt=2,
        latency_s=3.25,
        ttft_s=0.5,
        tokens_per_s=88.5,
        finish_reason="stop",
        prompt_tokens_est=150_000,
    )
    row = call_row(ledger, ledger.record_call(record))

    assert (row["input_uncached"], row["cache_read"], row["cache_write_5m"], row["cache_write_1h"]) == (
        2_000,
        140_000,
        3_000,
        8_000,
    )
    assert (row["output"], row["reasoning"]) == (1_500, 700)
    # Unit prices are copied as exact decimal strings (USD per million tokens), so history never changes.
    prices = ("price_input", "price_cache_read", "price_cache_write", "price_cache_write_1h", "price_output")
    assert tuple(row[p] for p in prices) == ("4.00", "0.20", "5.00", "8.00", "20.00")
    types = ledger.query(f"SELECT {', '.join(f'typeof({p})' for p in prices)} FROM calls")[0]
    assert set(types) == {"text"}
    assert (
        row["cost_input_micros"],
        row["cost_cache_read_micros"],
        row["cost_cache_write_5m_micros"],
        row["cost_cache_write_1h_micros"],
        row["cost_output_micros"],
    ) == (8_000, 28_000, 15_000, 64_000, 30_000)
    assert row["cost_micros"] == 145_000 == record.cost.total_micros
    assert row["priced"] == 1
    assert row["unpriced_reason"] == ""
    assert row["price_label"] == "2026-01-01 standard"
    assert (row["agent"], row["provider"], row["model"], row["tier"]) == (
        "fixer",
        "anthropic",
        "claude-opus-5-5",
        "frontier",
    )
    assert (row["run_id"], row["step"], row["attempt"], row["simulated"]) == (7, "fix", 2, 0)
    assert (row["latency_s"], row["ttft_s"], row["tokens_per_s"], row["finish_reason"]) == (
        3.25,
        0.5,
        88.5,
        "stop",
    )
    assert row["prompt_tokens_est"] == 150_000
    assert row["started_at"] == "2026-11-10T12:00:00.000000Z"
    assert row["ended_at"] == "2026-11-10T12:00:03.000000Z"
    assert row["error_class"] is None


def test_the_long_context_band_price_is_what_the_row_keeps(ledger: Ledger, catalog: Catalog) -> None:
    usage = Usage(input_uncached=150_000, cache_read=0, cache_write_5m=0, cache_write_1h=0, output=1_000)
    row = call_row(ledger, ledger.record_call(priced_call(catalog, model="anthropic:claude-haiku-5-5", usage=usage)))
    assert (row["price_input"], row["price_output"]) == ("0.50", "2.50")
    assert row["cost_micros"] == 75_000 + 2_500
    assert "long-context" in row["price_label"]


def test_unpriced_calls_are_stored_with_null_cost_and_reported_as_unpriced_never_zero(
    ledger: Ledger, catalog: Catalog
) -> None:
    priced_id = ledger.record_call(priced_call(catalog, agent="fixer"))
    unpriced_id = ledger.record_call(unpriced_call(agent="fixer", error_class="protocol", error="stream cut off"))
    no_spec = cost_of(Usage(input_uncached=10, output=10), None, T0)
    not_in_catalog_id = ledger.record_call(
        CallRecord("fixer", "openai", "gpt-nope", "frontier", T0, T0, Usage(input_uncached=10, output=10), no_spec)
    )

    row = call_row(ledger, unpriced_id)
    cost_columns = [c for c in row if c.startswith(("cost_", "price_")) and c not in ("price_label", "price_source")]
    assert len(cost_columns) == 11
    assert all(row[c] is None for c in cost_columns)
    assert row["priced"] == 0
    assert row["unpriced_reason"] == "the provider did not report usage"
    assert all(
        row[c] is None
        for c in ("input_uncached", "cache_read", "cache_write_5m", "cache_write_1h", "output", "reasoning")
    )
    other = call_row(ledger, not_in_catalog_id)
    assert (other["priced"], other["cost_micros"], other["input_uncached"]) == (0, None, 10)
    assert other["unpriced_reason"] == "model is not in the catalog"
    assert call_row(ledger, priced_id)["priced"] == 1

    (report,) = ledger.report("agent")
    assert (report.calls, report.unpriced_calls, report.error_calls) == (3, 2, 1)
    assert report.cost_micros == 130_000  # the priced call alone; unpriced ones add nothing, and say so
    models = {r.group: r for r in ledger.report("model")}
    assert models["openai:gpt-unknown"].unpriced_calls == 1
    assert models["openai:gpt-unknown"].cost_micros == 0
    assert models["anthropic:claude-opus-5-5"].unpriced_calls == 0


def test_record_calls_inserts_a_batch_in_one_transaction(ledger: Ledger, catalog: Catalog) -> None:
    batch = [priced_call(catalog, agent=f"a{i % 3}", started_at=T0 + timedelta(minutes=i)) for i in range(50)]
    assert ledger.record_calls(batch) == 50
    assert ledger.scalar("SELECT count(*) FROM calls") == 50
    assert ledger.scalar("SELECT sum(calls) FROM call_rollup") == 50


# ------------------------------------------------------------------------------------------------------------
# The rollup and reports


MODELS = (
    "anthropic:claude-opus-5-5",
    "anthropic:claude-haiku-5-5",
    "deepseek:deepseek-flash",
    "openai:gpt-6.1-terra",
    "ollama:qwen3:4b",
)
AGENTS = ("fixer", "triage", "docs", "nightly")


def random_calls(catalog: Catalog, seed: int, count: int) -> list[CallRecord]:
    """Calls over 30 days: priced or not, simulated or not, errors, unknown components, local compute."""
    rnd = random.Random(seed)
    records = []
    for _ in range(count):
        key = rnd.choice(MODELS)
        provider, model_id = key.split(":", 1)
        spec = catalog.spec_for(
            provider, model_id, ProviderConfig(kind="ollama", local=True) if provider == "ollama" else None
        ).spec
        assert spec is not None, key
        started = datetime(2026, 10, 20, 6, tzinfo=UTC) + timedelta(days=rnd.randrange(30), minutes=rnd.randrange(720))
        shape = rnd.random()
        if shape < 0.1:
            usage = Usage()
        elif shape < 0.2:
            usage = Usage(input_uncached=rnd.randrange(1, 5_000), output=rnd.randrange(1, 2_000))
        else:
            usage = Usage(
                input_uncached=rnd.randrange(0, 20_000),
                cache_read=rnd.randrange(0, 200_000),
                cache_write_5m=rnd.randrange(0, 10_000),
                cache_write_1h=rnd.choice([0, rnd.randrange(0, 10_000)]),
                output=rnd.randrange(0, 8_000),
                reasoning=rnd.choice([None, rnd.randrange(0, 500)]),
            )
        records.append(
            CallRecord(
                agent=rnd.choice(AGENTS),
                provider=provider,
                model=model_id,
                tier=spec.tier,
                started_at=started,
                ended_at=started + timedelta(seconds=rnd.randrange(1, 60)),
                usage=usage,
                cost=cost_of(usage, spec, started),
                run_id=rnd.randrange(1, 40),
                simulated=rnd.random() < 0.15,
                compute_s=round(rnd.uniform(0.1, 30.0), 3) if provider == "ollama" else None,
                error_class=rnd.choice([None] * 9 + ["timeout"]),
            )
        )
    return records


def expected_totals(records: list[CallRecord], key: Any) -> dict[Any, dict[str, Any]]:
    """The oracle: totals computed in Python from the records themselves, not from SQL."""
    totals: dict[Any, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        t = totals[key(r)]
        u = r.usage
        t["calls"] += 1
        t["unpriced_calls"] += 0 if r.cost.priced else 1
        t["error_calls"] += r.error_class is not None
        t["input_uncached"] += u.input_uncached or 0
        t["cache_read"] += u.cache_read or 0
        t["cache_write"] += (u.cache_write_5m or 0) + (u.cache_write_1h or 0)
        t["output"] += u.output or 0
        t["reasoning"] += u.reasoning or 0
        t["cost_micros"] += r.cost.total_micros or 0
        t["compute_s"] += r.compute_s or 0.0
    return {k: dict(v) for k, v in totals.items()}


def local_day(moment: datetime) -> str:
    return moment.astimezone().date().isoformat()


def report_totals(rows: list[Any]) -> dict[Any, dict[str, Any]]:
    fields = (
        "calls",
        "unpriced_calls",
        "error_calls",
        "input_uncached",
        "cache_read",
        "cache_write",
        "output",
    )
    return {
        (r.group, r.simulated): {
            **{f: getattr(r, f) for f in fields},
            "reasoning": r.reasoning,
            "cost_micros": r.cost_micros,
            "compute_s": r.local_compute_s,
        }
        for r in rows
    }


def assert_totals_equal(actual: dict[Any, dict[str, Any]], expected: dict[Any, dict[str, Any]]) -> None:
    assert set(actual) == set(expected)
    for group, totals in expected.items():
        got = dict(actual[group])
        assert got.pop("compute_s") == pytest.approx(totals["compute_s"], abs=1e-3), group
        assert got == {k: v for k, v in totals.items() if k != "compute_s"}, group


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_rollup_always_equals_sums_over_calls(ledger: Ledger, catalog: Catalog, seed: int) -> None:
    records = random_calls(catalog, seed, 300)
    for r in records[:60]:
        ledger.record_call(r)
    for start in range(60, len(records), 80):
        ledger.record_calls(records[start : start + 80])

    rollup = ledger.query(
        """SELECT day, agent, provider, model, tier, simulated, calls, unpriced_calls, error_calls,
                  input_uncached, cache_read, cache_write, output, reasoning, cost_micros, round(compute_s, 6)
           FROM call_rollup ORDER BY 1, 2, 3, 4, 5, 6"""
    )
    direct = ledger.query(
        """SELECT date(started_at, 'localtime') AS day, agent, provider, model, tier, simulated, count(*),
                  sum(1 - priced), sum(error_class IS NOT NULL), sum(coalesce(input_uncached, 0)),
                  sum(coalesce(cache_read, 0)),
                  sum(coalesce(cache_write_5m, 0) + coalesce(cache_write_1h, 0)),
                  sum(coalesce(output, 0)), sum(coalesce(reasoning, 0)), sum(coalesce(cost_micros, 0)),
                  round(sum(coalesce(compute_s, 0)), 6)
           FROM calls GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"""
    )
    assert [tuple(r) for r in rollup] == [tuple(r) for r in direct]
    assert len({r["day"] for r in rollup}) > 20

    def day_key(r: CallRecord) -> tuple[str, bool]:
        return (local_day(r.started_at), r.simulated)

    assert_totals_equal(
        report_totals(ledger.report("agent")), expected_totals(records, lambda r: (r.agent, r.simulated))
    )
    assert_totals_equal(
        report_totals(ledger.report("model")),
        expected_totals(records, lambda r: (f"{r.provider}:{r.model}", r.simulated)),
    )
    assert_totals_equal(report_totals(ledger.report("tier")), expected_totals(records, lambda r: (r.tier, r.simulated)))
    assert_totals_equal(report_totals(ledger.report("day")), expected_totals(records, day_key))
    assert_totals_equal(
        report_totals(ledger.report("run")),
        expected_totals(records, lambda r: (f"run {r.run_id} {r.agent}", r.simulated)),
    )

    since, until = date(2026, 10, 28), date(2026, 11, 5)

    def in_range(r: CallRecord) -> bool:
        return since.isoformat() <= local_day(r.started_at) <= until.isoformat()

    chosen = [r for r in records if in_range(r) and r.agent == "fixer"]
    for by, key in (
        ("day", day_key),
        ("model", lambda r: (f"{r.provider}:{r.model}", r.simulated)),
        ("run", lambda r: (f"run {r.run_id} {r.agent}", r.simulated)),
    ):
        rows = ledger.report(by, since=since, until=until, agent="fixer")  # type: ignore[arg-type]
        assert_totals_equal(report_totals(rows), expected_totals(chosen, key))


def test_reports_by_each_grouping_with_filters(ledger: Ledger, catalog: Catalog) -> None:
    day1, day2, day3 = T0, T0 + timedelta(days=1), T0 + timedelta(days=2)
    ledger.record_call(priced_call(catalog, agent="fixer", started_at=day1, run_id=1))  # 130,000
    ledger.record_call(
        priced_call(catalog, agent="fixer", started_at=day2, run_id=1, model="anthropic:claude-haiku-5-5")
    )
    ledger.record_call(priced_call(catalog, agent="docs", started_at=day2, run_id=2))
    ledger.record_call(unpriced_call(agent="docs", started_at=day3, run_id=2))
    ledger.record_call(
        CallRecord(
            "docs",
            "ollama",
            "qwen3:4b",
            "local",
            day3,
            day3,
            Usage(input_uncached=100, output=50),
            Cost(True, 0, 0, 0, 0, 0, 0),
            run_id=2,
            compute_s=12.5,
        )
    )
    haiku = priced_call(catalog, model="anthropic:claude-haiku-5-5").cost.total_micros
    assert haiku is not None

    by_agent = {r.group: r for r in ledger.report("agent")}
    assert sorted(by_agent) == ["docs", "fixer"]
    assert (by_agent["fixer"].calls, by_agent["fixer"].cost_micros) == (2, 130_000 + haiku)
    assert (by_agent["docs"].calls, by_agent["docs"].unpriced_calls, by_agent["docs"].cost_micros) == (
        3,
        1,
        130_000,
    )
    assert by_agent["docs"].local_compute_s == 12.5

    assert [r.group for r in ledger.report("tier")] == ["cheap", "frontier", "local"]
    assert [r.group for r in ledger.report("day")] == [local_day(d) for d in (day1, day2, day3)]
    by_run = {r.group: r for r in ledger.report("run")}
    assert sorted(by_run) == ["run 1 fixer", "run 2 docs"]
    assert by_run["run 2 docs"].calls == 3

    d2 = day2.astimezone().date()
    assert [r.group for r in ledger.report("day", since=d2)] == [local_day(day2), local_day(day3)]
    assert [r.group for r in ledger.report("day", until=d2)] == [local_day(day1), local_day(day2)]
    only = ledger.report("agent", since=d2, until=d2)
    assert {r.group: r.calls for r in only} == {"docs": 1, "fixer": 1}
    assert [r.group for r in ledger.report("model", agent="fixer")] == [
        "anthropic:claude-haiku-5-5",
        "anthropic:claude-opus-5-5",
    ]
    assert [(r.group, r.calls) for r in ledger.report("run", since=d2, agent="docs")] == [("run 2 docs", 3)]
    assert ledger.report("agent", agent="nobody") == []
    assert ledger.report("day", since=d2 + timedelta(days=5)) == []


def test_simulated_calls_are_reported_in_their_own_groups(ledger: Ledger, catalog: Catalog) -> None:
    ledger.record_call(priced_call(catalog, agent="demo"))
    ledger.record_call(priced_call(catalog, agent="demo", simulated=True))
    ledger.record_call(priced_call(catalog, agent="demo", simulated=True))
    for by in ("agent", "model", "day", "tier", "run"):
        rows = sorted(ledger.report(by), key=lambda r: r.simulated)  # type: ignore[arg-type]
        assert [(r.simulated, r.calls, r.cost_micros) for r in rows] == [
            (False, 1, 130_000),
            (True, 2, 260_000),
        ], by
        assert rows[0].group == rows[1].group


# ------------------------------------------------------------------------------------------------------------
# Reservations and caps


def reserve(ledger: Ledger, amount: int, limits: CapLimits, **kw: Any) -> Reservation | CapHit:
    params: dict[str, Any] = {
        "agent": "fixer",
        "run_id": 1,
        "provider": "anthropic",
        "model": "claude-opus-5-5",
        "amount_micros": amount,
        "tokens": 0,
        "limits": limits,
        "now": T0,
    }
    params.update(kw)
    return ledger.reserve(**params)


def held(ledger: Ledger, amount: int, **kw: Any) -> Reservation:
    result = reserve(ledger, amount, CapLimits(), **kw)
    assert isinstance(result, Reservation)
    return result


def assert_resets_next_day(hit: CapHit) -> None:
    assert hit.resets_at is not None
    local = hit.resets_at.astimezone()
    assert (local.hour, local.minute, local.second) == (0, 0, 0)
    assert local.date() == T0.astimezone().date() + timedelta(days=1)


def assert_resets_next_month(hit: CapHit) -> None:
    assert hit.resets_at is not None
    local = hit.resets_at.astimezone()
    assert (local.day, local.hour, local.minute) == (1, 0, 0)
    assert (local.year, local.month) == (2026, 12)


# Each case: the limits, spend to set up as (amount, tokens, reserve kwargs), and the cap that must refuse.
# Spend that must NOT count (other agent, other run, an earlier day or month) sits next to spend that must.
CAP_CASES = {
    "run_usd": (
        CapLimits(run_micros=1_000),
        [(600, 0, {}), (5_000, 0, {"run_id": 2})],
        None,
    ),
    "agent day_usd": (
        CapLimits(agent_day_micros=1_000),
        [(600, 0, {"run_id": 2}), (5_000, 0, {"agent": "docs"}), (5_000, 0, {"now": T0 - timedelta(days=1)})],
        assert_resets_next_day,
    ),
    "agent month_usd": (
        CapLimits(agent_month_micros=1_000),
        [
            (600, 0, {"now": T0 - timedelta(days=5)}),
            (5_000, 0, {"agent": "docs"}),
            (5_000, 0, {"now": T0 - timedelta(days=30)}),
        ],
        assert_resets_next_month,
    ),
    "global day_usd": (
        CapLimits(global_day_micros=1_000),
        [
            (300, 0, {"agent": "docs"}),
            (300, 0, {"run_id": None}),
            (5_000, 0, {"now": T0 - timedelta(days=1)}),
        ],
        assert_resets_next_day,
    ),
    "global month_usd": (
        CapLimits(global_month_micros=1_000),
        [
            (300, 0, {"agent": "docs", "now": T0 - timedelta(days=8)}),
            (300, 0, {}),
            (5_000, 0, {"now": T0 - timedelta(days=30)}),
        ],
        assert_resets_next_month,
    ),
    "run_tokens": (
        CapLimits(run_tokens=1_000),
        [(0, 600, {}), (0, 5_000, {"run_id": 2})],
        None,
    ),
    "agent day_tokens": (
        CapLimits(agent_day_tokens=1_000),
        [(0, 600, {}), (0, 5_000, {"agent": "docs"}), (0, 5_000, {"now": T0 - timedelta(days=1)})],
        assert_resets_next_day,
    ),
    "agent month_tokens": (
        CapLimits(agent_month_tokens=1_000),
        [
            (0, 600, {"now": T0 - timedelta(days=3)}),
            (0, 5_000, {"agent": "docs"}),
            (0, 5_000, {"now": T0 - timedelta(days=30)}),
        ],
        assert_resets_next_month,
    ),
}


@pytest.mark.parametrize("cap", list(CAP_CASES))
def test_each_cap_refuses_with_what_is_spent_held_needed_and_when_it_resets(ledger: Ledger, cap: str) -> None:
    limits, setup, check_reset = CAP_CASES[cap]
    unit = "tokens" if cap.endswith("tokens") else "micros"
    setup_ids = [held(ledger, amount, tokens=tokens, **kw).id for amount, tokens, kw in setup]
    # The first setup hold counts against the cap: settle it below its hold so "spent" differs from "held".
    if cap.startswith("global"):  # the second setup hold (300) also counts and stays held
        ledger.settle(setup_ids[0], actual_micros=200, actual_tokens=0)
        spent, held_now = 200, 300
    elif unit == "micros":
        ledger.settle(setup_ids[0], actual_micros=450, actual_tokens=0)
        spent, held_now = 450, 0
    else:
        ledger.settle(setup_ids[0], actual_micros=0, actual_tokens=450)
        spent, held_now = 450, 0
    room = 1_000 - spent - held_now

    def attempt(size: int) -> Reservation | CapHit:
        return reserve(ledger, size if unit == "micros" else 0, limits, tokens=size if unit == "tokens" else 0)

    hit = attempt(room + 1)
    assert isinstance(hit, CapHit), hit
    assert (hit.cap, hit.unit, hit.limit) == (cap, unit, 1_000)
    assert (hit.spent, hit.held, hit.needed) == (spent, held_now, room + 1)
    if check_reset is None:
        assert hit.resets_at is None
    else:
        check_reset(hit)
    assert hit.describe().startswith(f"{cap} cap: ")

    fits = attempt(room)  # spending exactly up to the cap is allowed
    assert isinstance(fits, Reservation), fits
    again = attempt(1)
    assert isinstance(again, CapHit)
    assert (again.spent, again.held, again.needed) == (spent, held_now + room, 1)


def test_cap_hit_describes_dollars_and_the_reset(ledger: Ledger) -> None:
    held(ledger, 900_000)
    hit = reserve(ledger, 200_000, CapLimits(agent_day_micros=1_000_000))
    assert isinstance(hit, CapHit)
    text = hit.describe()
    assert text.startswith("agent day_usd cap: $0.900000 of $1.000000 used, this call could need $0.200000; resets ")
    assert (T0.astimezone().date() + timedelta(days=1)).isoformat() in text


def test_the_first_cap_in_order_is_the_one_named(ledger: Ledger) -> None:
    held(ledger, 900)
    hit = reserve(ledger, 200, CapLimits(run_micros=1_000, agent_day_micros=1_000, global_month_micros=1_000))
    assert isinstance(hit, CapHit)
    assert hit.cap == "run_usd"


def test_a_zero_dollar_reservation_is_never_blocked_by_a_dollar_cap(ledger: Ledger) -> None:
    held(ledger, 5_000)  # already far over every cap below
    every_dollar_cap = CapLimits(
        run_micros=1_000,
        agent_day_micros=1_000,
        agent_month_micros=1_000,
        global_day_micros=1_000,
        global_month_micros=1_000,
    )
    assert isinstance(reserve(ledger, 1, every_dollar_cap), CapHit)
    local = reserve(ledger, 0, every_dollar_cap, tokens=4_000, provider="ollama", model="qwen3:4b")
    assert isinstance(local, Reservation)
    assert local.amount_micros == 0
    zero_caps = CapLimits(
        run_micros=0, agent_day_micros=0, agent_month_micros=0, global_day_micros=0, global_month_micros=0
    )
    assert isinstance(reserve(ledger, 0, zero_caps), Reservation)


def test_settle_replaces_the_hold_by_the_actual_cost(ledger: Ledger) -> None:
    res = held(ledger, 10_000, tokens=3_000)
    spend = ledger.spend(agent="fixer")
    assert (spend.micros, spend.held_micros, spend.tokens) == (10_000, 10_000, 3_000)
    ledger.settle(res.id, actual_micros=1_234, actual_tokens=2_100, note="done")
    row = ledger.query("SELECT * FROM reservations WHERE id = ?", (res.id,))[0]
    assert (row["state"], row["actual_micros"], row["actual_tokens"], row["note"]) == (
        "settled",
        1_234,
        2_100,
        "done",
    )
    assert row["settled_at"] is not None
    spend = ledger.spend(agent="fixer")
    assert (spend.micros, spend.held_micros, spend.tokens) == (1_234, 0, 2_100)
    ledger.settle(res.id, actual_micros=1, actual_tokens=1)  # settling twice changes nothing
    assert ledger.spend(agent="fixer").micros == 1_234


def test_settle_with_an_unknown_cost_keeps_the_worst_case(ledger: Ledger) -> None:
    res = held(ledger, 10_000, tokens=3_000)
    ledger.settle(res.id, actual_micros=None, actual_tokens=None)
    row = ledger.query("SELECT * FROM reservations WHERE id = ?", (res.id,))[0]
    assert (row["state"], row["actual_micros"], row["actual_tokens"]) == ("settled_unpriced", 10_000, 3_000)
    spend = ledger.spend(agent="fixer")
    assert (spend.micros, spend.held_micros, spend.tokens) == (10_000, 0, 3_000)
    hit = reserve(ledger, 1, CapLimits(agent_day_micros=10_000))
    assert isinstance(hit, CapHit)
    assert (hit.spent, hit.held) == (10_000, 0)


def test_release_gives_the_hold_back(ledger: Ledger) -> None:
    res = held(ledger, 10_000, tokens=3_000)
    assert isinstance(reserve(ledger, 1, CapLimits(agent_day_micros=10_000)), CapHit)
    ledger.release(res.id, note="never sent")
    row = ledger.query("SELECT * FROM reservations WHERE id = ?", (res.id,))[0]
    assert (row["state"], row["actual_micros"], row["actual_tokens"], row["note"]) == (
        "released",
        0,
        0,
        "never sent",
    )
    spend = ledger.spend(agent="fixer")
    assert (spend.micros, spend.held_micros, spend.tokens) == (0, 0, 0)
    assert isinstance(reserve(ledger, 10_000, CapLimits(agent_day_micros=10_000)), Reservation)
    ledger.settle(res.id, actual_micros=5, actual_tokens=5)  # a released hold cannot be settled afterwards
    assert ledger.query("SELECT state FROM reservations WHERE id = ?", (res.id,))[0][0] == "released"


def test_spend_filters_by_agent_run_and_window(ledger: Ledger) -> None:
    held(ledger, 100, agent="fixer", run_id=1)
    held(ledger, 20, agent="fixer", run_id=2, now=T0 - timedelta(days=2))
    held(ledger, 3, agent="docs", run_id=3)
    assert ledger.spend().micros == 123
    assert ledger.spend(agent="fixer").micros == 120
    assert ledger.spend(run_id=2).micros == 20
    assert ledger.spend(since=T0 - timedelta(hours=1)).micros == 103
    assert [r["amount_micros"] for r in ledger.held_reservations()] == [100, 20, 3]


# ------------------------------------------------------------------------------------------------------------
# Real child processes: crash recovery and cross-process atomicity

CHILD = r"""
import json, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path

from supervisor.cost import Cost
from supervisor.ledger import CallRecord, CapLimits, Ledger
from supervisor.usage import Usage

plan = json.loads(sys.argv[2])
ledger = Ledger(Path(sys.argv[1]))
agent = plan["agent"]
out = {"pid": os.getpid(), "run_id": None, "step_id": None, "reservations": []}
if plan.get("run"):
    out["run_id"] = ledger.start_run(agent, "schedule")
    out["step_id"] = ledger.start_step(out["run_id"], "fix", "task")
    ledger.change_agent_state(agent, "running", run_id=out["run_id"], step="fix", tier="cheap",
                              model="deepseek-flash")
for item in plan.get("reservations", []):
    res = ledger.reserve(agent=agent, run_id=out["run_id"], provider="deepseek", model="deepseek-flash",
                         amount_micros=item["amount"], tokens=item["tokens"], limits=CapLimits())
    if item.get("sent"):
        ledger.mark_sent(res.id)
    if "call_cost" in item:
        now = datetime.now(UTC)
        total = item["call_cost"]
        if total is None:
            cost = Cost(priced=False, reason="no usage")
        else:
            cost = Cost(True, total, 0, 0, 0, 0, total)
        usage = Usage() if total is None else Usage(input_uncached=100, cache_read=0, cache_write_5m=0,
                                                    cache_write_1h=0, output=10)
        ledger.record_call(CallRecord(agent, "deepseek", "deepseek-flash", "cheap", now, now, usage, cost,
                                      run_id=out["run_id"], reservation_id=res.id))
    out["reservations"].append(res.id)
print(json.dumps(out), flush=True)
if plan.get("wait"):
    sys.stdin.readline()
os.kill(os.getpid(), signal.SIGKILL)  # die without settling, closing or cleaning up
"""


def spawn_child(path: Path, plan: dict[str, Any]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), json.dumps(plan)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the child died before reporting"
    return proc, json.loads(line)


def run_child_to_death(path: Path, plan: dict[str, Any]) -> dict[str, Any]:
    proc, out = spawn_child(path, plan)
    assert proc.wait(timeout=CHILD_TIMEOUT_S) == -9
    return out


def reservation(ledger: Ledger, reservation_id: int) -> dict[str, Any]:
    return dict(ledger.query("SELECT * FROM reservations WHERE id = ?", (reservation_id,))[0])


def test_reconcile_settles_each_reservation_of_a_dead_process_by_what_is_known(ledger_path: Path) -> None:
    plan = {
        "agent": "fixer",
        "reservations": [
            {"amount": 50_000, "tokens": 9_000},  # never sent
            {"amount": 70_000, "tokens": 9_000, "sent": True},  # sent, then the process died: maybe billed
            {"amount": 90_000, "tokens": 9_000, "sent": True, "call_cost": 1_234},  # the call row made it
        ],
    }
    out = run_child_to_death(ledger_path, plan)
    never_sent, in_flight, recorded = out["reservations"]
    with Ledger(ledger_path) as ledger:
        mine = held(ledger, 5_000, agent="survivor")  # owned by this (live) process: must be left alone
        assert ledger.spend().micros == 50_000 + 70_000 + 90_000 + 5_000

        report = ledger.reconcile()

        assert (report.released_reservations, report.charged_reservations) == (1, 2)
        assert reservation(ledger, never_sent)["state"] == "released"
        assert reservation(ledger, never_sent)["actual_micros"] == 0
        lost = reservation(ledger, in_flight)
        assert (lost["state"], lost["actual_micros"]) == ("settled_unpriced", 70_000)
        found = reservation(ledger, recorded)
        assert (found["state"], found["actual_micros"]) == ("settled", 1_234)
        assert reservation(ledger, mine.id)["state"] == "held"
        assert [r["id"] for r in ledger.held_reservations()] == [mine.id]
        assert ledger.spend().micros == 70_000 + 1_234 + 5_000

        interrupted = ledger.query("SELECT * FROM calls WHERE reservation_id = ?", (in_flight,))
        assert len(interrupted) == 1
        row = interrupted[0]
        assert (row["error_class"], row["priced"], row["cost_micros"]) == ("interrupted", 0, None)
        assert (row["agent"], row["provider"], row["model"]) == ("fixer", "deepseek", "deepseek-flash")
        assert row["unpriced_reason"]
        assert ledger.scalar("SELECT count(*) FROM calls WHERE reservation_id = ?", (recorded,)) == 1
        (by_agent,) = ledger.report("agent")
        assert (by_agent.calls, by_agent.unpriced_calls, by_agent.error_calls, by_agent.cost_micros) == (
            2,
            1,
            1,
            1_234,
        )

        assert not ledger.reconcile().anything  # idempotent


def test_reconcile_from_an_unpriced_call_row_is_settled_unpriced(ledger_path: Path) -> None:
    plan = {
        "agent": "fixer",
        "reservations": [{"amount": 70_000, "tokens": 9_000, "sent": True, "call_cost": None}],
    }
    (res_id,) = run_child_to_death(ledger_path, plan)["reservations"]
    with Ledger(ledger_path) as ledger:
        ledger.reconcile()
        row = reservation(ledger, res_id)
        assert row["actual_micros"] == 70_000
        assert row["state"] == "settled_unpriced"


def test_reconcile_marks_runs_of_a_dead_process_crashed_and_frees_their_agents(ledger_path: Path) -> None:
    out = run_child_to_death(ledger_path, {"agent": "fixer", "run": True})
    with Ledger(ledger_path) as ledger:
        live_run = ledger.start_run("docs", "manual")
        ledger.change_agent_state("docs", "running", run_id=live_run)
        ledger.pause_agent("triage", "human", "by a human")
        agent = ledger.agent("fixer")
        assert agent is not None
        assert agent["state"] == "running"

        report = ledger.reconcile()

        assert report.crashed_runs == [out["run_id"]]
        assert report.recovered_agents == ["fixer"]
        run = ledger.run(out["run_id"])
        assert run is not None
        assert run["outcome"] == "crashed"
        assert run["ended_at"] is not None
        assert [s["outcome"] for s in ledger.steps(out["run_id"])] == ["crashed"]
        fixer = ledger.agent("fixer")
        assert fixer is not None
        assert (fixer["state"], fixer["current_run_id"], fixer["current_step"]) == ("idle", None, None)
        states = {a["name"]: a["state"] for a in ledger.agents()}
        assert states == {"fixer": "idle", "docs": "running", "triage": "paused"}
        live = ledger.run(live_run)
        assert live is not None
        assert live["outcome"] == "running"
        assert not ledger.reconcile().anything


def test_reconcile_leaves_a_live_process_alone_until_it_dies(ledger_path: Path) -> None:
    plan = {"agent": "fixer", "run": True, "wait": True, "reservations": [{"amount": 10_000, "tokens": 1}]}
    proc, out = spawn_child(ledger_path, plan)
    try:
        with Ledger(ledger_path) as ledger:
            assert not ledger.reconcile().anything
            assert [r["id"] for r in ledger.held_reservations()] == out["reservations"]
            assert proc.stdin is not None
            proc.stdin.write("die\n")
            proc.stdin.flush()
            assert proc.wait(timeout=CHILD_TIMEOUT_S) == -9
            report = ledger.reconcile()
            assert report.released_reservations == 1
            assert report.crashed_runs == [out["run_id"]]
            assert ledger.held_reservations() == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


RACER = r"""
import sys
from pathlib import Path
from supervisor.ledger import CapLimits, Ledger, Reservation

ledger = Ledger(Path(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
won = 0
while True:
    result = ledger.reserve(agent=sys.argv[2], run_id=None, provider="p", model="m", amount_micros=1_000,
                            tokens=0, limits=CapLimits(global_day_micros=150_000))
    if not isinstance(result, Reservation):
        break
    won += 1
print(won, flush=True)
"""


def test_two_processes_racing_for_the_last_dollars_never_cross_the_cap(ledger_path: Path) -> None:
    Ledger(ledger_path).close()
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(ledger_path), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for proc in racers:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in racers:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    wins = [int(proc.communicate(timeout=CHILD_TIMEOUT_S)[0]) for proc in racers]
    assert sum(wins) == 150
    with Ledger(ledger_path) as ledger:
        assert ledger.spend().micros == 150_000
        assert ledger.scalar("SELECT count(*) FROM reservations") == 150


DST_CHILD = r"""
import json, sys
from datetime import datetime
from pathlib import Path
from supervisor.ledger import CapLimits, Ledger

ledger = Ledger(Path(sys.argv[1]))
earlier, later = (datetime.fromisoformat(s) for s in sys.argv[2:4])
limits = CapLimits(**{sys.argv[4]: 1_000_000})
ledger.reserve(agent="a", run_id=None, provider="p", model="m", amount_micros=900_000, tokens=0,
               limits=CapLimits(), now=earlier)
result = ledger.reserve(agent="a", run_id=None, provider="p", model="m", amount_micros=200_000, tokens=0,
                        limits=limits, now=later)
print(json.dumps(getattr(result, "cap", None)))
"""


def cap_hit_in_berlin(ledger_path: Path, monkeypatch: pytest.MonkeyPatch, earlier: str, later: str, limit: str) -> Any:
    """Spend 900,000 at ``earlier``, then ask for 200,000 under a 1,000,000 ``limit`` at ``later``, in Berlin time."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    done = subprocess.run(
        [sys.executable, "-c", DST_CHILD, str(ledger_path), earlier, later, limit],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("earlier", "later", "limit", "cap"),
    [
        ("2026-10-01T08:00:00+00:00", "2026-10-20T11:00:00+00:00", "agent_month_micros", "agent month_usd"),
        ("2026-10-19T22:30:00+00:00", "2026-10-20T11:00:00+00:00", "agent_day_micros", "agent day_usd"),
        ("2026-10-19T21:30:00+00:00", "2026-10-20T11:00:00+00:00", "agent_day_micros", None),  # 23:30 the day before
    ],
)
def test_cap_windows_follow_local_midnight(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch, earlier: str, later: str, limit: str, cap: str | None
) -> None:
    assert cap_hit_in_berlin(ledger_path, monkeypatch, earlier, later, limit) == cap


@pytest.mark.parametrize(
    ("earlier", "later", "limit", "cap"),
    [
        # 00:30 CEST on 1 Oct (October locally), then 12:00 CET on 26 Oct: the same local month.
        ("2026-09-30T22:30:00+00:00", "2026-10-26T11:00:00+00:00", "agent_month_micros", "agent month_usd"),
        # 00:30 CEST on 25 Oct (the fall-back day), then 12:00 CET the same local day.
        ("2026-10-24T22:30:00+00:00", "2026-10-25T11:00:00+00:00", "agent_day_micros", "agent day_usd"),
    ],
)
def test_cap_windows_follow_local_midnight_across_a_dst_change(
    ledger_path: Path, monkeypatch: pytest.MonkeyPatch, earlier: str, later: str, limit: str, cap: str
) -> None:
    assert cap_hit_in_berlin(ledger_path, monkeypatch, earlier, later, limit) == cap


# ------------------------------------------------------------------------------------------------------------
# Approvals, events, commands, agents, daemon


def request(ledger: Ledger, **kw: Any) -> int:
    params: dict[str, Any] = {
        "agent": "fixer",
        "run_id": 3,
        "step": "fix",
        "tier": "frontier",
        "model": "anthropic:claude-opus-5-5",
        "reason": "cheap tier failed verify twice",
        "est_cold_micros": 130_000,
        "est_warm_micros": 40_000,
        "caps_left": {"agent day_usd": 870_000},
    }
    params.update(kw)
    return ledger.request_approval(**params)


def test_an_approval_is_decided_from_another_connection_once_and_consumed_once(ledger_path: Path) -> None:
    with Ledger(ledger_path) as runtime, Ledger(ledger_path) as human:
        approval_id = request(runtime)
        pending = runtime.approvals()
        assert [a.id for a in pending] == [approval_id]
        assert pending[0].caps_left == {"agent day_usd": 870_000}
        assert (pending[0].est_cold_micros, pending[0].est_warm_micros) == (130_000, 40_000)
        open_one = runtime.open_approval_for("fixer", "fix", "frontier")
        assert open_one is not None
        assert open_one.id == approval_id
        assert runtime.consume_approval(approval_id) is False  # pending is not approved

        decided = human.decide_approval(approval_id, approve=True, by="alice")
        assert (decided.state, decided.decided_by) == ("approved", "alice")
        assert decided.decided_at is not None

        seen = runtime.approval(approval_id)
        assert seen is not None
        assert seen.state == "approved"
        with pytest.raises(LedgerError, match="already approved"):
            runtime.decide_approval(approval_id, approve=False, by="bob")
        with pytest.raises(LedgerError, match="already approved"):
            human.decide_approval(approval_id, approve=True, by="alice")

        assert runtime.consume_approval(approval_id) is True
        assert human.consume_approval(approval_id) is False
        assert runtime.consume_approval(approval_id) is False
        consumed = human.approval(approval_id)
        assert consumed is not None
        assert consumed.state == "consumed"
        assert runtime.open_approval_for("fixer", "fix", "frontier") is None
        assert runtime.approvals() == []
        assert [a.id for a in runtime.approvals(states=("consumed",), agent="fixer")] == [approval_id]


def test_a_denied_approval_cannot_be_consumed_and_unknown_ids_are_errors(ledger: Ledger) -> None:
    approval_id = request(ledger, simulated=True)
    denied = ledger.decide_approval(approval_id, approve=False, by="alice")
    assert (denied.state, denied.simulated) == ("denied", True)
    assert ledger.consume_approval(approval_id) is False
    with pytest.raises(LedgerError, match="already denied"):
        ledger.decide_approval(approval_id, approve=True, by="alice")
    with pytest.raises(LedgerError, match="no approval request #999") as caught:
        ledger.decide_approval(999, approve=True, by="alice")
    assert caught.value.hint
    assert ledger.approval(999) is None


def test_events_append_and_read_after_by_kind_and_agent(ledger: Ledger) -> None:
    assert ledger.last_event_id() == 0
    ids = [
        ledger.append_event("run_started", {"trigger": "schedule"}, agent="fixer", run_id=1),
        ledger.append_event("call_recorded", {"cost_micros": 1_290, "at": T0}, agent="fixer", run_id=1),
        ledger.append_event("run_started", {"trigger": "manual"}, agent="docs", run_id=2),
        ledger.append_event("daemon_started", {"pid": 42, "text": "naïve ✓"}),
    ]
    assert ids == sorted(ids)
    assert ledger.last_event_id() == ids[-1]
    every = ledger.events_after(0)
    assert [e.id for e in every] == ids
    assert every[1].data == {"cost_micros": 1_290, "at": str(T0)}
    assert every[3].data == {"pid": 42, "text": "naïve ✓"}
    assert (every[0].agent, every[0].run_id, every[0].kind) == ("fixer", 1, "run_started")
    assert every[3].agent is None
    assert [e.id for e in ledger.events_after(ids[1])] == ids[2:]
    assert [e.id for e in ledger.events_after(ids[-1])] == []
    assert [e.id for e in ledger.events_after(0, kinds=["run_started"])] == [ids[0], ids[2]]
    assert [e.id for e in ledger.events_after(0, kinds=["run_started", "daemon_started"])] == [
        ids[0],
        ids[2],
        ids[3],
    ]
    assert [e.id for e in ledger.events_after(0, agent="fixer")] == ids[:2]
    assert [e.id for e in ledger.events_after(ids[0], agent="fixer", kinds=["run_started"])] == []
    assert [e.id for e in ledger.events_after(0, limit=2)] == ids[:2]


def test_commands_are_taken_exactly_once_across_connections(ledger_path: Path) -> None:
    with Ledger(ledger_path) as cli, Ledger(ledger_path) as daemon, Ledger(ledger_path) as other_daemon:
        assert daemon.take_commands() == []
        first = cli.enqueue_command("fixer", "pause", by="alice")
        second = cli.enqueue_command("docs", "run_now", by="tui")
        taken = daemon.take_commands()
        assert [(c["id"], c["agent"], c["kind"], c["requested_by"]) for c in taken] == [
            (first, "fixer", "pause", "alice"),
            (second, "docs", "run_now", "tui"),
        ]
        assert other_daemon.take_commands() == []
        assert daemon.take_commands() == []
        third = cli.enqueue_command("fixer", "resume", by="alice")
        assert [c["id"] for c in other_daemon.take_commands()] == [third]
        states = cli.query("SELECT state, done_at IS NOT NULL FROM commands ORDER BY id")
        assert [tuple(r) for r in states] == [("done", 1)] * 3


def test_agents_pause_resume_and_state(ledger: Ledger) -> None:
    ledger.ensure_agent("fixer")
    ledger.ensure_agent("fixer")
    agent = ledger.agent("fixer")
    assert agent is not None
    assert agent["state"] == "idle"
    assert ledger.resume_agent("fixer") is False
    ledger.pause_agent("fixer", by="alice", reason="too expensive")
    paused = ledger.agent("fixer")
    assert paused is not None
    assert (paused["state"], paused["paused_by"], paused["state_reason"]) == (
        "paused",
        "alice",
        "too expensive",
    )
    assert ledger.resume_agent("fixer") is True
    resumed = ledger.agent("fixer")
    assert resumed is not None
    assert (resumed["state"], resumed["paused_by"]) == ("idle", None)
    assert ledger.resume_agent("nobody") is False
    assert ledger.agent("nobody") is None


def test_a_run_cannot_write_over_a_pause_and_a_refusal_writes_nothing(ledger: Ledger) -> None:
    run_id = ledger.start_run("fixer", "cli")
    started = ledger.change_agent_state(
        "fixer", "running", "run 1 (cli)", run_id=run_id, event=PendingEvent("agent_state", {"state": "running"})
    )
    assert (started.applied, started.state) == (True, "running")
    # Another process pauses it: the row and its event in one transaction.
    paused = ledger.pause_agent(
        "fixer", "human", "paused from the command line", event=PendingEvent("agent_state", {"state": "paused"})
    )
    assert (paused.applied, paused.state, paused.paused_by) == (True, "paused", "human")
    events_before = ledger.last_event_id()

    # The run's next attempt asks for running again: refused, and it learns who paused the agent and why.
    refused = ledger.change_agent_state(
        "fixer", "running", "fix at cheap", run_id=run_id, event=PendingEvent("agent_state", {"state": "running"})
    )
    assert (refused.applied, refused.state, refused.reason, refused.paused_by) == (
        False,
        "paused",
        "paused from the command line",
        "human",
    )
    ended = ledger.change_agent_state("fixer", "failed", "the run ended")
    assert ended.applied is False
    agent = ledger.agent("fixer")
    assert agent is not None
    assert (agent["state"], agent["state_reason"], agent["paused_by"]) == (
        "paused",
        "paused from the command line",
        "human",
    )
    assert ledger.last_event_id() == events_before  # no event for a change that did not happen
    assert [e.data["state"] for e in ledger.events_after(0, agent="fixer")] == ["running", "paused"]

    # Only a human's resume lifts it; then a run may start again.
    assert ledger.resume_agent("fixer", event=PendingEvent("agent_state", {"state": "idle"})) is True
    assert ledger.change_agent_state("fixer", "running", "run 2 (cli)").applied is True


@pytest.mark.parametrize(
    ("current", "new", "actor", "allowed"),
    [
        ("idle", "running", "run", True),
        ("deferred", "running", "run", True),
        ("failed", "running", "run", True),
        ("waiting_approval", "running", "run", True),
        ("running", "running", "run", True),
        ("running", "waiting_approval", "run", True),
        ("running", "idle", "run", True),
        ("running", "exhausted", "run", True),
        ("running", "deferred", "run", True),
        ("waiting_approval", "denied", "run", True),
        ("idle", "failed", "run", False),  # a run ends only from running (or waiting for an approval)
        ("deferred", "waiting_approval", "run", False),
        ("paused", "running", "run", False),
        ("paused", "idle", "run", False),
        ("running", "paused", "run", False),  # a run never pauses its agent: the breaker or a human does
        ("running", "paused", "breaker", True),
        ("waiting_approval", "paused", "human", True),
        ("paused", "paused", "breaker", True),
        ("paused", "idle", "human", True),
        ("paused", "idle", "breaker", False),
        ("failed", "idle", "human", False),  # resume lifts a pause, nothing else
    ],
)
def test_the_agent_state_diagram(current: str, new: AgentState, actor: StateActor, allowed: bool) -> None:
    assert transition_allowed(current, new, actor) is allowed


def test_the_daemon_row_is_registered_beaten_and_cleared_by_its_own_pid(ledger: Ledger) -> None:
    assert ledger.daemon_info() is None
    ledger.register_daemon(4242, "/etc/supervisor.toml")
    info = ledger.daemon_info()
    assert info is not None
    assert (info["pid"], info["config_path"]) == (4242, "/etc/supervisor.toml")
    ledger.daemon_heartbeat(4242)
    ledger.clear_daemon(1)  # another pid cannot clear it
    assert ledger.daemon_info() is not None
    ledger.register_daemon(5151, "")
    info = ledger.daemon_info()
    assert info is not None
    assert info["pid"] == 5151
    assert ledger.scalar("SELECT count(*) FROM daemon") == 1
    ledger.clear_daemon(5151)
    assert ledger.daemon_info() is None


# ------------------------------------------------------------------------------------------------------------
# Secrets

CANARY = "sk-ant-CANARY-0123456789abcdef"


def test_a_redactor_scrubs_the_key_from_everything_the_ledger_writes(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "ledger.db"
    redactor = Redactor.from_environ({"ANTHROPIC_API_KEY": CANARY, "HOME": "/home/x"})
    with Ledger(path, redactor=redactor) as ledger:
        run_id = ledger.start_run("fixer", "schedule")
        step_id = ledger.start_step(run_id, "fix", "task")
        ledger.append_event("call_failed", {"detail": f"401 for key {CANARY}", CANARY: [CANARY]}, agent="fixer")
        call_id = ledger.record_call(
            priced_call(catalog, run_id=run_id, error_class="auth", error=f"invalid x-api-key {CANARY}")
        )
        ledger.finish_step(step_id, "failed", verify_detail=f"gate printed {CANARY}")
        ledger.finish_run(run_id, "failed", reason=f"auth failed with {CANARY}")
        ledger.change_agent_state("fixer", "running", f"run {run_id}", run_id=run_id)
        ledger.change_agent_state("fixer", "failed", f"key {CANARY} rejected")
        approval_id = request(ledger, reason=f"escalating; the key was {CANARY}")
        plan_id = ledger.record_plan(
            agent="fixer",
            run_id=run_id,
            tier="cheap",
            model="deepseek:deepseek-flash",
            plan=f"1. export ANTHROPIC_API_KEY={CANARY}",
            valid=False,
            error=f"step 1 leaks {CANARY}",
        )

        marker = "[redacted:ANTHROPIC_API_KEY]"
        event = ledger.events_after(0)[0]
        assert event.data == {"detail": f"401 for key {marker}", marker: [marker]}
        assert call_row(ledger, call_id)["error"] == f"invalid x-api-key {marker}"
        run = ledger.run(run_id)
        assert run is not None
        assert run["reason"] == f"auth failed with {marker}"
        assert ledger.steps(run_id)[0]["verify_detail"] == f"gate printed {marker}"
        agent = ledger.agent("fixer")
        assert agent is not None
        assert agent["state_reason"] == f"key {marker} rejected"
        approval = ledger.approval(approval_id)
        assert approval is not None
        assert approval.reason == f"escalating; the key was {marker}"
        plan = ledger.query("SELECT plan, validation_error FROM plans WHERE id = ?", (plan_id,))[0]
        assert tuple(plan) == (f"1. export ANTHROPIC_API_KEY={marker}", f"step 1 leaks {marker}")
        ledger.scalar("PRAGMA wal_checkpoint(TRUNCATE)")

    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("ledger.db"))
    assert CANARY.encode() not in on_disk
    assert b"CANARY" not in on_disk


def test_decimal_prices_round_trip_exactly(ledger: Ledger, catalog: Catalog) -> None:
    usage = Usage(input_uncached=333, cache_read=7, cache_write_5m=0, cache_write_1h=0, output=1)
    record = priced_call(catalog, model="deepseek:deepseek-flash", usage=usage)
    row = call_row(ledger, ledger.record_call(record))
    assert record.cost.rates is not None
    assert Decimal(row["price_cache_read"]) == record.cost.rates.cache_read == Decimal("0.003")
    assert row["cost_micros"] == record.cost.total_micros


def test_checkpoints_run_in_a_thread_while_commits_skip_them(ledger: Ledger, ledger_path: Path) -> None:
    """While the gateway serves, no commit runs SQLite's inline checkpoint: a thread copies the WAL back instead."""
    import time

    start_size = ledger_path.stat().st_size
    stop = ledger.checkpoint_in_background(wal_bytes=16 * 1024, poll_s=0.01)
    try:
        assert ledger.scalar("PRAGMA wal_autocheckpoint") == 0
        for n in range(200):
            ledger.append_event("notice", {"message": f"event {n}", "padding": "x" * 500})
        deadline = time.monotonic() + 30
        while ledger_path.stat().st_size == start_size and time.monotonic() < deadline:
            time.sleep(0.02)  # the pages reach the database file only through a checkpoint
        assert ledger_path.stat().st_size > start_size
    finally:
        stop()
    assert ledger.scalar("PRAGMA wal_autocheckpoint") == 1000
    assert len(ledger.events_after(0, kinds=["notice"])) == 200
