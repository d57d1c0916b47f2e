"""Ledger benchmark: write throughput against raw sqlite3, and report latency at a million calls.

Run as ``python bench/ledger.py [--rows N] [--json PATH]``. Every figure is paired with a baseline measured in
the same run on the same machine, so the ratios mean something across machines:

(a) call rows through ``Ledger.record_calls`` (one transaction per 1,000) vs raw ``executemany`` of the same
    rows into an identical schema (same table, indexes and rollup trigger), one transaction per 1,000;
(b) single-row commits: ``Ledger.record_call`` vs raw ``execute`` + ``COMMIT`` per row, both WAL/NORMAL;
(c) a 1,000,000-call ledger: ``Ledger.report("agent"|"model"|"day"|"run")`` in-process, and the CLI
    ``supervisor ledger report --by agent`` end to end in a subprocess;
(d) ``python -c pass``, the floor under any CLI timing.

The raw baseline gets its parameter tuples prepared outside the timed region, so the Ledger/raw ratio is the
whole cost of the Ledger's own work (timestamps, decimal prices, redaction, locking) on top of SQLite's.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from supervisor import __version__, paths
from supervisor.catalog import Catalog, load_catalog
from supervisor.config import ProviderConfig
from supervisor.cost import Cost, cost_of
from supervisor.ledger import CallRecord, Ledger
from supervisor.usage import Usage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import machine, write_results  # noqa: E402

BATCH = 1_000
BIG_LEDGER_ROWS = 1_000_000
BIG_BATCH = 10_000
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "ledger.json"

AGENTS = ("fixer", "triage", "docs", "nightly-tests", "deps", "release-notes", "inbox", "security-scan")
# (model key, weight): mostly local and cheap tiers, some frontier, as a frugal supervisor would run.
MODELS = (
    ("ollama:qwen3:4b", 30),
    ("mlx:smollm2-135m", 10),
    ("deepseek:deepseek-flash", 20),
    ("anthropic:claude-haiku-5-5", 10),
    ("openai:gpt-6.1-terra", 8),
    ("gemini:gemini-3.5-flash", 7),
    ("anthropic:claude-sonnet-5-5", 8),
    ("anthropic:claude-opus-5-5", 5),
    ("openai:gpt-6.2-sol", 2),
)
MONTH_START = datetime(2026, 10, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Template:
    """A priced (or unpriced) call shape; many rows share one so generating a million rows stays cheap."""

    provider: str
    model: str
    tier: str
    usage: Usage
    cost: Cost
    compute_s: float | None
    error_class: str | None


def make_templates(catalog: Catalog, rnd: random.Random, count: int = 4_000) -> list[Template]:
    keys = [k for k, _ in MODELS]
    weights = [w for _, w in MODELS]
    templates = []
    for _ in range(count):
        key = rnd.choices(keys, weights)[0]
        provider, model_id = key.split(":", 1)
        local = ProviderConfig(kind="ollama", local=True) if provider in ("ollama", "mlx") else None
        spec = catalog.spec_for(provider, model_id, local).spec
        assert spec is not None, key
        at = MONTH_START + timedelta(days=rnd.randrange(30), hours=rnd.randrange(24))
        if rnd.random() < 0.05:  # the provider did not report usage: unpriced, never $0
            usage = Usage()
        else:
            prompt = rnd.randrange(500, 60_000)
            cached = int(prompt * rnd.choice([0.0, 0.5, 0.8, 0.95]))
            written = rnd.randrange(0, prompt - cached + 1) if provider == "anthropic" else 0
            output = rnd.randrange(50, 4_000)
            usage = Usage(
                input_uncached=prompt - cached - written,
                cache_read=cached,
                cache_write_5m=written,
                cache_write_1h=0,
                output=output,
                reasoning=rnd.choice([None, output // 4]),
            )
        local = spec.tier == "local"
        templates.append(
            Template(
                provider=provider,
                model=model_id,
                tier=spec.tier,
                usage=usage,
                cost=cost_of(usage, spec, at),
                compute_s=round(rnd.uniform(0.2, 40.0), 3) if local else None,
                error_class=rnd.choice([None] * 32 + ["timeout"]),
            )
        )
    return templates


def generate(templates: list[Template], rnd: random.Random, count: int, first_run: int = 1) -> Iterator[CallRecord]:
    """``count`` calls over 30 days in the order they happened, several agents and runs, ~3% simulated."""
    run_id = first_run
    step_s = 30 * 86_400 / count
    for index in range(count):
        t = templates[rnd.randrange(len(templates))]
        started = MONTH_START + timedelta(seconds=index * step_s + rnd.uniform(0, step_s))
        if index % 12 == 0:
            run_id += 1
        yield CallRecord(
            agent=AGENTS[rnd.randrange(len(AGENTS))],
            provider=t.provider,
            model=t.model,
            tier=t.tier,
            started_at=started,
            ended_at=started + timedelta(seconds=2),
            usage=t.usage,
            cost=t.cost,
            run_id=run_id,
            step="implement",
            simulated=rnd.random() < 0.03,
            latency_s=2.0,
            compute_s=t.compute_s,
            error_class=t.error_class,
            finish_reason="stop" if t.error_class is None else None,
        )


def raw_connection(path: Path) -> sqlite3.Connection:
    """The raw baseline: same file format, same pragmas the Ledger uses, nothing else."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def fresh_schema(path: Path) -> None:
    """An empty file with the ledger's exact schema (tables, indexes, rollup trigger)."""
    Ledger(path).close()


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def bench_batches(work: Path, records: list[CallRecord]) -> dict[str, float]:
    ledger_path, raw_path = work / "batch-ledger.db", work / "batch-raw.db"
    fresh_schema(ledger_path)
    fresh_schema(raw_path)
    with Ledger(raw_path) as helper:
        raw_params = [helper._call_params(r) for r in records]
        insert_sql = helper._CALL_INSERT

    ledger, conn = Ledger(ledger_path), raw_connection(raw_path)
    ledger_s = raw_s = 0.0
    # Interleaved batch by batch, alternating which goes first, so both files grow alike and machine drift
    # (page cache, checkpoints, other load) hits both sides equally.
    for index, (batch, params) in enumerate(zip(chunks(records, BATCH), chunks(raw_params, BATCH), strict=True)):

        def raw(params: list[Any] = params) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert_sql, params)
            conn.execute("COMMIT")

        def mine(batch: list[CallRecord] = batch) -> None:
            ledger.record_calls(batch)

        if index % 2:
            raw_s += timed(raw)
            ledger_s += timed(mine)
        else:
            ledger_s += timed(mine)
            raw_s += timed(raw)
    assert ledger.scalar("SELECT count(*) FROM calls") == len(records)
    assert conn.execute("SELECT count(*) FROM calls").fetchone()[0] == len(records)
    ledger.close()
    conn.close()
    return {"rows": len(records), "ledger_rows_per_s": len(records) / ledger_s, "raw_rows_per_s": len(records) / raw_s}


def bench_single_rows(work: Path, records: list[CallRecord]) -> dict[str, float]:
    ledger_path, raw_path = work / "single-ledger.db", work / "single-raw.db"
    fresh_schema(ledger_path)
    fresh_schema(raw_path)
    with Ledger(raw_path) as helper:
        raw_params = [helper._call_params(r) for r in records]
        insert_sql = helper._CALL_INSERT

    ledger, conn = Ledger(ledger_path), raw_connection(raw_path)
    ledger_s = raw_s = 0.0
    block = 100  # interleaved in blocks of 100 commits, alternating which goes first
    for index, (rows, params_block) in enumerate(zip(chunks(records, block), chunks(raw_params, block), strict=True)):

        def raw(params_block: list[Any] = params_block) -> None:
            for params in params_block:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(insert_sql, params)
                conn.execute("COMMIT")

        def mine(rows: list[CallRecord] = rows) -> None:
            for record in rows:
                ledger.record_call(record)

        if index % 2:
            raw_s += timed(raw)
            ledger_s += timed(mine)
        else:
            ledger_s += timed(mine)
            raw_s += timed(raw)
    ledger.close()
    conn.close()
    return {"rows": len(records), "ledger_rows_per_s": len(records) / ledger_s, "raw_rows_per_s": len(records) / raw_s}


def best_and_median(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    times = [timed(fn) for _ in range(repeat)]
    return min(times), statistics.median(times)


def run_quiet(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")


def bench_big_ledger(work: Path, templates: list[Template], rnd: random.Random, rows: int) -> dict[str, Any]:
    home = work / "home"
    home.mkdir()
    path = home / "ledger.db"
    with Ledger(path) as ledger:
        generated = generate(templates, rnd, rows)
        start = time.perf_counter()
        written = 0
        while written < rows:
            batch = [next(generated) for _ in range(min(BIG_BATCH, rows - written))]
            ledger.record_calls(batch)
            written += len(batch)
        build_s = time.perf_counter() - start
        ledger.scalar("PRAGMA wal_checkpoint(TRUNCATE)")
        assert ledger.scalar("SELECT count(*) FROM calls") == rows
        rollup_rows = int(ledger.scalar("SELECT count(*) FROM call_rollup"))

    reports: dict[str, dict[str, float]] = {}
    with Ledger(path) as ledger:
        for by in ("agent", "model", "day", "run"):
            best, median = best_and_median(lambda by=by: ledger.report(by), repeat=3 if by == "run" else 5)
            reports[by] = {"best_s": best, "median_s": median}

    env = {**os.environ, "SUPERVISOR_HOME": str(home)}
    for key in ("SUPERVISOR_CONFIG", "OLLAMA_HOST"):
        env.pop(key, None)
    cli_args = [sys.executable, "-m", "supervisor", "ledger", "report", "--by", "agent"]
    baseline_args = [sys.executable, "-c", "pass"]
    run_quiet(cli_args, env)  # warm the page cache and the .pyc files once
    cli_times, baseline_times = [], []
    for _ in range(7):  # interleaved, so drift on the machine hits both alike
        cli_times.append(timed(lambda: run_quiet(cli_args, env)))
        baseline_times.append(timed(lambda: run_quiet(baseline_args, env)))
    return {
        "rows": rows,
        "build_s": build_s,
        "build_rows_per_s": rows / build_s,
        "file_bytes": path.stat().st_size,
        "rollup_rows": rollup_rows,
        "report_s": reports,
        "cli_report_agent_s": {"best_s": min(cli_times), "median_s": statistics.median(cli_times)},
        "python_pass_s": {"best_s": min(baseline_times), "median_s": statistics.median(baseline_times)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the batch comparison (default 100,000)")
    parser.add_argument("--single-rows", type=int, default=5_000, help="rows for single-row commits (default 5,000)")
    parser.add_argument(
        "--big-rows", type=int, default=BIG_LEDGER_ROWS, help="calls in the report ledger (default 1,000,000)"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write the results")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    rnd = random.Random(args.seed)
    catalog = load_catalog([paths.bundled_models_dir()])
    templates = make_templates(catalog, rnd)
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        work = Path(tmp)
        print(f"(a) {args.rows:,} rows in batches of {BATCH:,} ...", flush=True)
        batch = bench_batches(work, list(generate(templates, rnd, args.rows)))
        print(f"(b) {args.single_rows:,} single-row commits ...", flush=True)
        single = bench_single_rows(work, list(generate(templates, rnd, args.single_rows)))
        print(f"(c) building a {args.big_rows:,}-call ledger and timing reports ...", flush=True)
        big = bench_big_ledger(work, templates, rnd, args.big_rows)

    batch["ratio"] = batch["ledger_rows_per_s"] / batch["raw_rows_per_s"]
    single["ratio"] = single["ledger_rows_per_s"] / single["raw_rows_per_s"]
    cli, floor = big["cli_report_agent_s"]["median_s"], big["python_pass_s"]["median_s"]
    big["cli_over_python_pass"] = cli / floor
    results = {
        "benchmark": "ledger",
        "version": __version__,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "sqlite": sqlite3.sqlite_version, "cpus": os.cpu_count()},
        "targets": {"batch_ratio_min": 0.5, "cli_report_max_s": 1.0},
        "batch_inserts": batch,
        "single_row_commits": single,
        "million_call_ledger": big,
    }

    big_label = f"{big['rows'] // 1_000_000}M" if big["rows"] % 1_000_000 == 0 else f"{big['rows']:,}"
    lines = [
        "",
        f"{'measure':<48} {'ledger':>14} {'baseline':>14} {'ratio':>8}",
        "-" * 87,
        f"{'(a) rows/s, batches of 1,000 (vs raw executemany)':<48} {batch['ledger_rows_per_s']:>14,.0f} "
        f"{batch['raw_rows_per_s']:>14,.0f} {batch['ratio']:>8.2f}",
        f"{'(b) rows/s, one commit per row (vs raw execute)':<48} {single['ledger_rows_per_s']:>14,.0f} "
        f"{single['raw_rows_per_s']:>14,.0f} {single['ratio']:>8.2f}",
        f"{f'(c) build {big_label}-call ledger, rows/s (incl. generation)':<48} {big['build_rows_per_s']:>14,.0f}",
    ]
    for by, t in big["report_s"].items():
        lines.append(f"{f'(c) Ledger.report({by!r}), median ms':<48} {t['median_s'] * 1000:>14.1f}")
    lines += [
        f"{'(c) CLI `ledger report --by agent`, median ms':<48} {cli * 1000:>14.1f} {floor * 1000:>14.1f} "
        f"{cli / floor:>8.2f}",
        f"{'(d) python -c pass, median ms':<48} {floor * 1000:>14.1f}",
        "",
        f"ledger file {big['file_bytes'] / 1e6:,.0f} MB for {big['rows']:,} calls; {big['rollup_rows']:,} rollup rows",
        f"targets: (a) ratio >= 0.5: {'met' if batch['ratio'] >= 0.5 else 'MISSED'}; "
        f"(c) CLI < 1 s: {'met' if cli < 1.0 else 'MISSED'}",
    ]
    print("\n".join(lines))
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
