"""Crash safety: writers SIGKILLed at random moments never lose a committed row or corrupt the ledger.

Two writer processes at a time record calls, batches, reservations and settlements into the same file while
the test kills each of them at a random (seeded) moment, round after round. Every row a writer reported as
committed must survive, batches are all-or-nothing, the trigger-maintained rollup still equals the sums over
``calls``, and ``reconcile()`` leaves no reservation held by a dead process.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.ledger import Ledger

ROUNDS = 12
WRITERS_PER_ROUND = 2
SEED = 20261129

WRITER = r"""
import random, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from supervisor.cost import Cost
from supervisor.ledger import CallRecord, CapLimits, Ledger, Reservation
from supervisor.usage import Usage

path, name, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
ledger = Ledger(path)
ledger.reconcile()  # what a restarted supervisor does first; may itself be killed midway
print("ready", flush=True)
AGENTS = ("fixer", "docs", "triage")
BASE = datetime(2026, 11, 1, 12, tzinfo=UTC)
LIMITS = CapLimits(global_day_micros=10**15, agent_month_micros=10**15, agent_day_tokens=10**12)


def call(agent, step, reservation_id=None):
    started = BASE + timedelta(days=rnd.randrange(28), seconds=rnd.randrange(40_000))
    if rnd.random() < 0.2:
        usage, cost = Usage(), Cost(priced=False, reason="no usage")
    else:
        i, r, w, o = (rnd.randrange(5_000) for _ in range(4))
        usage = Usage(input_uncached=i, cache_read=r, cache_write_5m=w, cache_write_1h=0, output=o, reasoning=o // 3)
        cost = Cost(True, i * 3, r // 10, w * 4, 0, o * 15, i * 3 + r // 10 + w * 4 + o * 15)
    model = rnd.choice(("claude-opus-5-5", "claude-haiku-5-5"))
    return CallRecord(agent, "anthropic", model, "frontier", started, started + timedelta(seconds=2), usage, cost,
                      step=step, reservation_id=reservation_id, compute_s=rnd.choice([None, 0.25, 1.5]),
                      error_class=rnd.choice([None] * 9 + ["timeout"]), simulated=rnd.random() < 0.1)


n = 0
while True:
    n += 1
    agent = rnd.choice(AGENTS)
    roll = rnd.random()
    if roll < 0.55:
        print("call", ledger.record_call(call(agent, name)), flush=True)
    elif roll < 0.65:
        size = rnd.randrange(2, 60)
        tag = f"{name}-batch-{n}-of-{size}"
        ledger.record_calls([call(agent, tag) for _ in range(size)])
        print("batch", tag, flush=True)
    else:
        res = ledger.reserve(agent=agent, run_id=None, provider="anthropic", model="claude-opus-5-5",
                             amount_micros=rnd.randrange(1, 50_000), tokens=1_000, limits=LIMITS)
        assert isinstance(res, Reservation), res
        print("reserved", res.id, flush=True)
        if rnd.random() < 0.3:
            ledger.release(res.id)
            print("released", res.id, flush=True)
            continue
        ledger.mark_sent(res.id)
        if rnd.random() < 0.8:
            print("call", ledger.record_call(call(agent, name, reservation_id=res.id)), flush=True)
            if rnd.random() < 0.8:
                ledger.settle(res.id, rnd.randrange(0, res.amount_micros + 1), 900)
                print("settled", res.id, flush=True)
"""


@dataclass
class Writer:
    """One writer process and every complete line it printed (a line is printed right after its commit)."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    @classmethod
    def start(cls, path: Path, name: str, seed: int) -> Writer:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        writer = cls(proc)
        writer.reader = threading.Thread(target=writer._read, daemon=True)
        writer.reader.start()
        return writer

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                break  # killed mid-line: that row's report is incomplete, not the row
            if line == "ready\n":
                self.ready.set()
            else:
                self.lines.append(line.rstrip("\n"))

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        assert self.reader is not None
        self.reader.join(timeout=30)
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        assert self.proc.returncode == -signal.SIGKILL, f"the writer died on its own:\n{stderr}"


def test_sigkilled_writers_never_lose_committed_rows(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    rnd = random.Random(SEED)
    reported: list[str] = []
    kills = writes_seen_before_kill = 0
    for round_no in range(ROUNDS):
        writers = [
            Writer.start(path, f"w{round_no}.{index}", rnd.randrange(1 << 30)) for index in range(WRITERS_PER_ROUND)
        ]
        try:
            # A writer killed "early" may die while importing, opening, migrating or reconciling; the rest die
            # in the middle of their write loop, at a random moment after they announced they were ready.
            plan = []
            for writer in writers:
                early = rnd.random() < 0.25
                plan.append((writer, early, rnd.uniform(0.0, 0.4) if early else rnd.uniform(0.02, 0.5)))
            started = time.monotonic()
            for writer, early, delay in sorted(plan, key=lambda p: p[2]):
                if early:
                    time.sleep(max(0.0, started + delay - time.monotonic()))
                else:
                    assert writer.ready.wait(timeout=30), "the writer never became ready"
                    time.sleep(delay)
                before = len(writer.lines)
                writer.kill()
                kills += 1
                writes_seen_before_kill += before > 0
        finally:
            for writer in writers:
                if writer.proc.poll() is None:
                    writer.proc.kill()
                    writer.proc.wait()
        for writer in writers:
            reported.extend(writer.lines)

    assert kills >= 20
    assert writes_seen_before_kill >= ROUNDS // 2  # many kills landed mid-write, not before the first row
    call_ids = {int(line.split()[1]) for line in reported if line.startswith("call ")}
    batch_tags = {line.split()[1] for line in reported if line.startswith("batch ")}
    reserved = {int(line.split()[1]) for line in reported if line.startswith("reserved ")}
    released = {int(line.split()[1]) for line in reported if line.startswith("released ")}
    settled = {int(line.split()[1]) for line in reported if line.startswith("settled ")}
    assert len(call_ids) > 100
    assert batch_tags
    assert settled

    with Ledger(path) as ledger:
        assert ledger.integrity_check() == "ok"
        assert ledger.scalar("PRAGMA foreign_key_check") is None

        stored_calls = {r[0] for r in ledger.query("SELECT id FROM calls")}
        assert call_ids <= stored_calls, f"lost committed calls: {sorted(call_ids - stored_calls)[:10]}"
        # Batches are all-or-nothing, whether or not the writer lived to report them.
        batches = ledger.query(
            "SELECT step, count(*) FROM calls WHERE step LIKE '%-batch-%' GROUP BY step ORDER BY step"
        )
        for tag, count in batches:
            assert count == int(tag.rsplit("-of-", 1)[1]), tag
        assert batch_tags <= {tag for tag, _ in batches}

        states = {r["id"]: r["state"] for r in ledger.query("SELECT id, state FROM reservations")}
        assert reserved <= set(states)
        assert all(states[i] == "released" for i in released)
        assert all(states[i] == "settled" for i in settled)

        assert_rollup_equals_sums_over_calls(ledger)

        ledger.reconcile()
        assert ledger.held_reservations() == [], "a dead writer's reservation is still held"
        assert not ledger.reconcile().anything
        # Every reservation that was sent has a call row: the real one, or an "interrupted" one from reconcile.
        orphans = ledger.scalar(
            "SELECT count(*) FROM reservations r WHERE r.sent = 1 "
            "AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.reservation_id = r.id)"
        )
        assert orphans == 0
        assert ledger.scalar("SELECT count(*) FROM reservations WHERE state = 'released' AND sent = 1") == 0
        interrupted = ledger.query("SELECT priced, cost_micros FROM calls WHERE error_class = 'interrupted'")
        assert all(tuple(r) == (0, None) for r in interrupted)
        assert_rollup_equals_sums_over_calls(ledger)  # reconcile's own call rows went through the trigger too
        assert ledger.integrity_check() == "ok"


def assert_rollup_equals_sums_over_calls(ledger: Ledger) -> None:
    rollup = ledger.query(
        """SELECT day, agent, provider, model, tier, simulated, calls, unpriced_calls, error_calls,
                  input_uncached, cache_read, cache_write, output, reasoning, cost_micros, round(compute_s, 6)
           FROM call_rollup ORDER BY 1, 2, 3, 4, 5, 6"""
    )
    direct = ledger.query(
        """SELECT date(started_at, 'localtime'), agent, provider, model, tier, simulated, count(*),
                  sum(1 - priced), sum(error_class IS NOT NULL), sum(coalesce(input_uncached, 0)),
                  sum(coalesce(cache_read, 0)),
                  sum(coalesce(cache_write_5m, 0) + coalesce(cache_write_1h, 0)),
                  sum(coalesce(output, 0)), sum(coalesce(reasoning, 0)), sum(coalesce(cost_micros, 0)),
                  round(sum(coalesce(compute_s, 0)), 6)
           FROM calls GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"""
    )
    assert [tuple(r) for r in rollup] == [tuple(r) for r in direct]
