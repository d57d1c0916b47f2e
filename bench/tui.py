"""TUI benchmark: the real ``supervisor tui`` in a pseudo-terminal, over 200 agents and a 1,000,000-call ledger.

Run as ``python bench/tui.py [--work DIR] [--rows N] [--agents N] [--json PATH]``. Everything is measured from
outside, the way a person meets it: bytes on a 120x40 pty, keys written to it, CPU time of the process.

(a) opening: process start to the first frame, and to the first frame that shows agent rows (the status of
    200 agents, read in a worker); baselines: ``python -c pass`` and a bare Textual app (a 200-row DataTable and
    a footer) in the same pty;
(b) keypress to repaint: ``down`` in the agents table (moves the cursor, redraws the detail panel), from the
    key written to the last byte of the frame it causes; baseline: the same key in the bare app;
(c) idle CPU: the app attached to an idle daemon (tailing the ledger, polling for changes), CPU seconds per
    wall second over a quiet period; baseline: the bare app over the same period.

The ledger is built once per work dir with plain SQL (the rollup trigger still runs on every row) and reused.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import random
import select
import signal
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import machine, write_results  # noqa: E402
from supervisor import __version__  # noqa: E402
from supervisor.clock import iso  # noqa: E402
from supervisor.ledger import Ledger  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "tui.json"
COLS, ROWS = 120, 40
DOWN = b"\x1b[B"
QUIET_S = 0.15  # a frame is over when the pty has been silent this long
TIERS = (
    ("local", "sim-local", "tiny", 0.0, 0.0),
    ("cheap", "sim-cheap", "flash", 0.15, 0.60),
    ("frontier", "sim-frontier", "sonnet", 2.0, 10.0),
)

BASELINE_APP = """
import sys
from textual.app import App
from textual.widgets import DataTable, Footer, Static

class Bare(App):
    BINDINGS = [("q", "quit", "Quit")]
    def compose(self):
        yield Static("bench-baseline")
        table = DataTable(cursor_type="row", zebra_stripes=True)
        for column in ("state", "agent", "tier", "today", "month", "tokens", "gate", "next"):
            table.add_column(column, width=12)
        for i in range(200):
            table.add_row("idle", f"agent-{i:03d}", "-", "$0", "$0", "0/0/0", "-", "in 1h")
        yield table
        yield Footer()

Bare().run()
"""


# ------------------------------------------------------------------------------------------------------------
# The ledger and config: 200 agents, a million calls over 60 days


def build(work: Path, agents: int, rows: int) -> tuple[Path, Path]:
    """Write ``work/supervisor.toml`` and ``work/home/ledger.db`` (skipped when a matching one is there)."""
    home = work / "home"
    config_path = work / "supervisor.toml"
    marker = work / f"built-{agents}-{rows}"
    if marker.exists():
        return config_path, home
    for leftover in (home / "ledger.db", home / "ledger.db-wal", home / "ledger.db-shm"):
        leftover.unlink(missing_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    (work / "scripts").mkdir(exist_ok=True)
    lines = []
    for tier, provider, _model, _, _ in TIERS:
        script = work / "scripts" / f"{tier}.toml"
        script.write_text('default = "42"\n')
        simulated = {
            "local": "mlx:smollm2-135m",
            "cheap": "deepseek:deepseek-flash",
            "frontier": "anthropic:claude-sonnet-5-5",
        }[tier]
        lines += [
            f"[providers.{provider}]",
            'kind = "scripted"',
            f'simulated_as = "{simulated}"',
            f'script = "{script}"',
        ]
        if tier == "local":
            lines.append("local = true")
        lines.append("")
    lines += [
        "[tiers]",
        'local = ["sim-local:tiny"]',
        'cheap = ["sim-cheap:flash"]',
        'frontier = ["sim-frontier:sonnet"]',
        "",
    ]
    lines += ["[caps]", "day_usd = 50.0", "month_usd = 500.0", ""]
    for i in range(agents):
        name = f"agent-{i:03d}"
        (work / "ws" / name).mkdir(parents=True, exist_ok=True)
        lines += [
            f"[agents.{name}]",
            f'goal = "Benchmark agent {i}."',
            f'workspace = "ws/{name}"',
            'schedule = "every 1h"',
            "caps = { day_usd = 1.0, month_usd = 10.0 }",
            f"[[agents.{name}.steps]]",
            'name = "work"',
            'prompt = "Do the work."',
            'output = "result"',
            'verify = [{ regex = "^42$" }]',
            "",
        ]
    config_path.write_text("\n".join(lines))

    ledger = Ledger(home / "ledger.db")  # creates and migrates
    ledger.close()
    conn = sqlite3.connect(home / "ledger.db", isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    rnd = random.Random(7)
    now = datetime.now(UTC)
    start = now - timedelta(days=60)
    names = [f"agent-{i:03d}" for i in range(agents)]
    stamp = iso(now)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO agents (name, state, state_since, updated_at, next_run_at) VALUES (?, 'idle', ?, ?, ?)",
        [(n, stamp, stamp, iso(now + timedelta(minutes=rnd.randint(1, 60)))) for n in names],
    )
    runs_per_agent = max(1, rows // agents // 50)
    run_rows, step_rows = [], []
    run_id = 0
    for name in names:
        for _ in range(runs_per_agent):
            run_id += 1
            at = start + timedelta(seconds=rnd.randint(0, 60 * 86400))
            run_rows.append((run_id, name, "schedule", iso(at), iso(at + timedelta(seconds=30)), "success", 1))
            step_rows.append(
                (
                    run_id,
                    "work",
                    "model",
                    iso(at),
                    iso(at + timedelta(seconds=30)),
                    "passed",
                    "cheap",
                    "sim-cheap:flash",
                    1,
                    "pass",
                )
            )
    conn.executemany(
        "INSERT INTO runs (id, agent, trigger, started_at, ended_at, outcome, simulated) VALUES (?, ?, ?, ?, ?, ?, ?)",
        run_rows,
    )
    conn.executemany(
        "INSERT INTO steps (run_id, name, kind, started_at, ended_at, outcome, tier_reached, model, attempts, verify_result) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        step_rows,
    )
    conn.execute("COMMIT")
    batch = 20_000
    written = 0
    while written < rows:
        calls, holds = [], []
        for _ in range(min(batch, rows - written)):
            index = rnd.randrange(agents)
            tier, provider, model, price_in, price_out = TIERS[rnd.choices((0, 1, 2), (50, 45, 5))[0]]
            at = start + timedelta(seconds=rnd.randint(0, 60 * 86400))
            tokens_in, tokens_out = rnd.randint(500, 20_000), rnd.randint(20, 2_000)
            cost = int(tokens_in * price_in + tokens_out * price_out)
            run = 1 + index * runs_per_agent + rnd.randrange(runs_per_agent)
            calls.append(
                (
                    names[index],
                    run,
                    "work",
                    provider,
                    model,
                    tier,
                    iso(at),
                    iso(at),
                    tokens_in,
                    0,
                    0,
                    0,
                    tokens_out,
                    0,
                    cost,
                    1.0,
                )
            )
            holds.append(
                (
                    names[index],
                    run,
                    provider,
                    model,
                    iso(at),
                    cost,
                    tokens_in + tokens_out,
                    cost,
                    tokens_in + tokens_out,
                    os.getpid(),
                )
            )
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO calls (agent, run_id, step, provider, model, tier, simulated, started_at, ended_at, "
            "input_uncached, cache_read, cache_write_5m, cache_write_1h, output, reasoning, cost_micros, priced, latency_s) "
            "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)",
            calls,
        )
        conn.executemany(
            "INSERT INTO reservations (agent, run_id, provider, model, created_at, amount_micros, tokens, state, "
            "actual_micros, actual_tokens, owner_pid, owner_started) VALUES (?, ?, ?, ?, ?, ?, ?, 'settled', ?, ?, ?, 0)",
            holds,
        )
        conn.execute("COMMIT")
        written += len(calls)
    events = [
        (
            iso(start + timedelta(seconds=rnd.randint(0, 60 * 86400))),
            names[rnd.randrange(agents)],
            "run_finished",
            json.dumps({"outcome": "success", "calls": 1, "cost_micros": 100}),
        )
        for _ in range(100_000)
    ]
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO events (at, agent, kind, data) VALUES (?, ?, ?, ?)", events)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    marker.write_text("ok\n")
    return config_path, home


class FakeDaemon:
    """A daemon row with a live pid and a fresh heartbeat, so ``supervisor tui`` attaches (as to an idle daemon)."""

    def __init__(self, home: Path) -> None:
        self.ledger = Ledger(home / "ledger.db")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> FakeDaemon:
        self.ledger.register_daemon(os.getpid(), "bench")
        self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stop.wait(2.0):
            self.ledger.daemon_heartbeat(os.getpid())

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.ledger.clear_daemon(os.getpid())
        self.ledger.close()


# ------------------------------------------------------------------------------------------------------------
# A process on a pty


class Terminal:
    """A child process on a 120x40 pseudo-terminal whose output is read (and timed) as it arrives."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.fd = master
        self.screen = b""

    def read(self, timeout: float) -> tuple[bytes, float | None]:
        """Bytes that arrive within ``timeout`` (and the time the first of them came)."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b"", None
        at = time.perf_counter()
        try:
            data = os.read(self.fd, 1 << 20)
        except OSError:
            return b"", None
        self._answer_queries(data)
        self.screen = (self.screen + data)[-(1 << 21) :]
        return data, at

    def _answer_queries(self, data: bytes) -> None:
        """Textual asks the terminal a few things at start-up; answer like a plain xterm so it does not wait."""
        if b"\x1b[6n" in data:
            os.write(self.fd, b"\x1b[1;1R")

    def wait_for(self, needle: bytes, timeout: float) -> float:
        """Seconds from process start until ``needle`` has been written to the terminal."""
        deadline = time.perf_counter() + timeout
        seen = b""
        while time.perf_counter() < deadline:
            data, at = self.read(0.05)
            if data:
                seen = (seen + data)[-65536:]
                if needle in seen:
                    assert at is not None
                    return at - self.started
        raise TimeoutError(f"{needle!r} never appeared; last output: {self.screen[-400:]!r}")

    def quiet(self, seconds: float = QUIET_S, limit: float = 10.0) -> float | None:
        """Drain output until the terminal has been silent for ``seconds``; the time of the last byte."""
        last = None
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            data, _ = self.read(seconds)
            if not data:
                return last
            last = time.perf_counter()
        return last

    def key_to_repaint(self, key: bytes) -> tuple[float, float]:
        """(first byte, last byte) of the frame a key causes, in seconds after the key is written."""
        self.quiet()
        sent = time.perf_counter()
        os.write(self.fd, key)
        _, first = self.read(5.0)
        if first is None:
            raise TimeoutError("no repaint after a key")
        last = self.quiet() or first
        return first - sent, last - sent

    def cpu_seconds(self) -> float:
        import psutil

        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)

    def idle_cpu(self, seconds: float) -> float:
        """CPU seconds per wall second while nothing happens (output keeps being drained)."""
        self.quiet(0.5)
        before, wall = self.cpu_seconds(), time.perf_counter()
        deadline = wall + seconds
        while time.perf_counter() < deadline:
            self.read(0.2)
        return (self.cpu_seconds() - before) / (time.perf_counter() - wall)

    def close(self, quit_key: bytes = b"q") -> None:
        try:
            os.write(self.fd, quit_key)
            deadline = time.perf_counter() + 15
            while self.proc.poll() is None and time.perf_counter() < deadline:
                self.read(0.1)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            os.close(self.fd)


def python_startup(repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def median_of(repeat: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeat))


# ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="where to build (and keep) the big ledger (default: a temp dir)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="calls in the ledger (default 1,000,000)")
    parser.add_argument("--agents", type=int, default=200, help="agents in the config (default 200)")
    parser.add_argument("--keys", type=int, default=40, help="key presses to time (default 40)")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle to measure (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="openings to time (median; default 3)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"write results here (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="supervisor-bench-tui-"))
    work.mkdir(parents=True, exist_ok=True)

    print(f"building {args.agents} agents and a {args.rows:,}-call ledger in {work} (reused next time)...", flush=True)
    built = time.perf_counter()
    config_path, home = build(work, args.agents, args.rows)
    print(f"  ready in {time.perf_counter() - built:.1f}s", flush=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TEXTUAL")},
        "SUPERVISOR_HOME": str(home),
        "TERM": "xterm-256color",
        "COLUMNS": str(COLS),
        "LINES": str(ROWS),
    }
    results: dict[str, Any] = {
        "benchmark": "tui",
        "version": __version__,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "cpus": os.cpu_count()},
        "agents": args.agents,
        "ledger_rows": args.rows,
        "terminal": f"{COLS}x{ROWS} pty",
    }
    baseline_argv = [sys.executable, "-c", BASELINE_APP]
    app_argv = [sys.executable, "-m", "supervisor", "tui", "--config", str(config_path)]

    results["python_startup_s"] = python_startup(5)

    # (a) opening
    def open_baseline() -> float:
        term = Terminal(baseline_argv, env)
        try:
            return term.wait_for(b"bench-baseline", 30)
        finally:
            term.close()

    openings: list[tuple[float, float, float]] = []
    with FakeDaemon(home):
        for _ in range(args.repeat):
            term = Terminal(app_argv, env)
            try:
                first = term.wait_for(b"frugal-supervisor", 30)
                rows = term.wait_for(b"agent-000", 60)
                figures = term.wait_for(b"today $", 120)  # the header's total: every agent's figures are in
                openings.append((first, rows, figures))
            finally:
                term.close()
        bare_first = median_of(args.repeat, open_baseline)
        results["opening"] = {
            "first_frame_s": statistics.median(o[0] for o in openings),
            "agents_shown_s": statistics.median(o[1] for o in openings),
            "all_figures_loaded_s": statistics.median(o[2] for o in openings),
            "baseline_bare_textual_first_frame_s": bare_first,
            "ratio_first_frame_vs_bare": statistics.median(o[0] for o in openings) / bare_first,
            "ratio_agents_shown_vs_bare": statistics.median(o[1] for o in openings) / bare_first,
        }
        print(json.dumps(results["opening"], indent=2), flush=True)

        # (b) keypress to repaint, (c) idle CPU
        term = Terminal(app_argv, env)
        try:
            term.wait_for(b"today $", 120)
            term.quiet(1.0)
            keys = [term.key_to_repaint(DOWN) for _ in range(args.keys)]
            idle = term.idle_cpu(args.idle)
        finally:
            term.close()
        bare = Terminal(baseline_argv, env)
        try:
            bare.wait_for(b"bench-baseline", 30)
            bare.quiet(1.0)
            bare_keys = [bare.key_to_repaint(DOWN) for _ in range(args.keys)]
            bare_idle = bare.idle_cpu(args.idle)
        finally:
            bare.close()

    def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
        done = sorted(s[1] for s in samples)
        return {
            "first_byte_median_ms": statistics.median(s[0] for s in samples) * 1000,
            "repaint_done_median_ms": statistics.median(done) * 1000,
            "repaint_done_p90_ms": done[int(len(done) * 0.9) - 1] * 1000,
        }

    app_keys, base_keys = summary(keys), summary(bare_keys)
    results["keypress_to_repaint"] = {
        "key": "down (agents table: cursor and detail panel)",
        "app": app_keys,
        "baseline_bare_textual": base_keys,
        "ratio_median": app_keys["repaint_done_median_ms"] / base_keys["repaint_done_median_ms"],
    }
    results["idle_cpu"] = {
        "seconds": args.idle,
        "app_percent_of_one_core": idle * 100,
        "baseline_bare_textual_percent": bare_idle * 100,
        "extra_percent_points": (idle - bare_idle) * 100,
    }
    print(json.dumps({k: results[k] for k in ("keypress_to_repaint", "idle_cpu")}, indent=2))
    print(f"python -c pass: {results['python_startup_s'] * 1000:.0f} ms")
    write_results(args.json, results, announce="wrote")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
