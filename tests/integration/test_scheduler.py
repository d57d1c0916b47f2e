"""The scheduler and the rules from the 136M-token fire, driven tick by tick with a real runtime and ledger.

``next_wake`` is a pure function (times injected). Everything else runs the real ``Scheduler.tick()`` over a
``Runtime`` with scripted tiers; other processes are stood in for by second ``Ledger`` connections to the same
file (that is the only way they reach a running scheduler), or by real ``python -m supervisor`` children.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from supervisor.backends.base import Request
from supervisor.backends.scripted import ScriptedAnswer
from supervisor.config import ConfigProblems, load_config, parse_schedule
from supervisor.ledger import Ledger
from supervisor.runtime.runtime import RunResult, Runtime
from supervisor.runtime.scheduler import Scheduler, next_wake
from tests.fakes.base import Reply
from tests.fakes.openai import OpenAIFake
from tests.helpers import Harness, Tiers, make_harness, tree_digest

TIMEOUT_S = 60
POLL_S = 0.02


def supervisor(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m supervisor ARGS`` in a child process with this test's SUPERVISOR_HOME."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=dict(os.environ),
        check=False,
    )


async def until(predicate: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """Poll ``predicate`` until it returns something truthy (a deadline, not a fixed sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_S)


def other_process_ledger(harness: Harness) -> Ledger:
    """A second connection to the ledger file: what `supervisor approve/pause/resume` in another process uses."""
    return Ledger(harness.home / "ledger.db")


# ------------------------------------------------------------------------------------------------------------
# next_wake: a pure function of the schedule, the last scheduled start and now


def local_time(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A local wall-clock time, timezone-aware (the daemon compares aware datetimes)."""
    return datetime(year, month, day, hour, minute).astimezone()


def test_next_wake_every_interval() -> None:
    schedule = parse_schedule("every 15m")
    now = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
    assert next_wake(schedule, None, now) == now  # never ran: due at once
    last = now - timedelta(minutes=5)
    assert next_wake(schedule, last, now) == last + timedelta(minutes=15)
    long_ago = now - timedelta(hours=7)
    assert next_wake(schedule, long_ago, now) == long_ago + timedelta(minutes=15)  # overdue: due now, once
    assert next_wake(schedule, long_ago, now) <= now
    assert next_wake(parse_schedule("every 2h"), last, now) == last + timedelta(hours=2)
    assert next_wake(parse_schedule("every 1d"), last, now) == last + timedelta(days=1)


@pytest.mark.parametrize(
    ("last", "now", "expected"),
    [
        (None, local_time(2026, 11, 10, 8, 0), local_time(2026, 11, 10, 9, 30)),  # never ran, time still ahead today
        (
            None,
            local_time(2026, 11, 10, 10, 0),
            local_time(2026, 11, 11, 9, 30),
        ),  # never ran, time passed: no surprise run
        (
            local_time(2026, 11, 10, 9, 30),
            local_time(2026, 11, 10, 9, 31),
            local_time(2026, 11, 11, 9, 30),
        ),  # ran today
        (
            local_time(2026, 11, 9, 9, 30),
            local_time(2026, 11, 10, 8, 0),
            local_time(2026, 11, 10, 9, 30),
        ),  # ran yesterday
        (
            local_time(2026, 11, 9, 9, 30),
            local_time(2026, 11, 10, 11, 0),
            local_time(2026, 11, 10, 9, 30),
        ),  # missed today: due
        (
            local_time(2026, 11, 1, 9, 30),
            local_time(2026, 11, 10, 11, 0),
            local_time(2026, 11, 10, 9, 30),
        ),  # down for days: once
    ],
)
def test_next_wake_daily(last: datetime | None, now: datetime, expected: datetime) -> None:
    wake = next_wake(parse_schedule("daily 09:30"), last, now)
    assert wake == expected
    assert wake.astimezone().strftime("%H:%M") == "09:30"


def test_next_wake_accepts_utc_times_from_the_ledger() -> None:
    # The ledger stores UTC; the daily time is local wall-clock. Both are aware, so the comparison is exact.
    last = local_time(2026, 11, 10, 9, 30).astimezone(UTC)
    now = local_time(2026, 11, 10, 12, 0).astimezone(UTC)
    assert next_wake(parse_schedule("daily 09:30"), last, now) == local_time(2026, 11, 11, 9, 30)


@pytest.mark.parametrize("text", ["every 5s", "daily 24:00", "daily 9", "hourly", "every m"])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(text)


# ------------------------------------------------------------------------------------------------------------
# A scheduled run never calls the frontier without a human's approval

NIGHTLY = """
[agents.nightly]
goal = "Answer 42."
workspace = "ws"
schedule = "every 10m"
frontier = "{policy}"
attempts_per_tier = 1
caps = {{ day_usd = 5.0 }}

[[agents.nightly.steps]]
name = "solve"
prompt = "Six times seven?"
writes = "answer.txt"
verify = [{{ regex = "^42$" }}]
"""


def frontier_tiers() -> Tiers:
    return Tiers(local=lambda r: "41", cheap=lambda r: "43", frontier=lambda r: "42")


def test_a_scheduled_run_waits_for_approval_before_the_frontier(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, NIGHTLY.format(policy="ask"), tiers=frontier_tiers())
    runtime, backends = harness.runtime()
    scheduler = Scheduler(runtime, register=False)
    other = other_process_ledger(harness)

    async def scenario() -> RunResult:
        await scheduler.tick()
        assert set(scheduler.tasks) == {"nightly"}
        pending = await until(lambda: runtime.ledger.approvals(agent="nightly"), "an approval request")
        assert runtime.ledger.agent("nightly")["state"] == "waiting_approval"  # type: ignore[index]
        assert not backends["sim-frontier"].calls
        # More ticks while it waits: no second run, still no frontier call.
        task = scheduler.tasks["nightly"]
        for _ in range(3):
            await scheduler.tick()
        assert scheduler.tasks["nightly"] is task
        assert not task.done()
        assert not backends["sim-frontier"].calls
        # A human approves from another process; the waiting run picks it up through the ledger.
        other.decide_approval(pending[0].id, True, "phone")
        return await asyncio.wait_for(task, TIMEOUT_S)

    result = asyncio.run(scenario())
    assert result.outcome == "success"
    assert result.tier_reached == "frontier"
    assert len(backends["sim-frontier"].calls) == 1
    # The scheduled run started at the bottom of its ladder, and the frontier call came after the approval.
    assert len(backends["sim-local"].calls) == 1
    assert len(backends["sim-cheap"].calls) == 1
    (approval,) = runtime.ledger.approvals(states=("consumed",))
    assert approval.run_id == result.run_id
    assert runtime.ledger.run(result.run_id)["trigger"] == "schedule"  # type: ignore[index]
    assert (harness.workspace / "answer.txt").read_text() == "42\n"
    frontier_calls = runtime.ledger.query("SELECT started_at FROM calls WHERE tier = 'frontier'")
    decided = other.approval(approval.id)
    assert decided is not None
    assert decided.decided_at is not None
    assert frontier_calls[0]["started_at"] >= decided.decided_at


def test_a_denied_scheduled_frontier_call_is_never_made(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, NIGHTLY.format(policy="ask"), tiers=frontier_tiers())
    runtime, backends = harness.runtime()
    scheduler = Scheduler(runtime, register=False)

    async def scenario() -> RunResult:
        await scheduler.tick()
        pending = await until(lambda: runtime.ledger.approvals(agent="nightly"), "an approval request")
        other_process_ledger(harness).decide_approval(pending[0].id, False, "phone")
        return await asyncio.wait_for(scheduler.tasks["nightly"], TIMEOUT_S)

    result = asyncio.run(scenario())
    assert result.outcome == "denied"
    assert not backends["sim-frontier"].calls
    assert not (harness.workspace / "answer.txt").exists()


def test_an_approval_for_a_run_that_stopped_waiting_starts_a_run_at_the_next_tick(tmp_path: Path) -> None:
    # A CLI run left its request pending; approving it from another process lets the scheduler finish the job.
    harness = make_harness(
        tmp_path, NIGHTLY.format(policy="ask").replace('schedule = "every 10m"\n', ""), tiers=frontier_tiers()
    )
    runtime, backends = harness.runtime()
    first = asyncio.run(runtime.run_agent("nightly", approval_timeout_s=0))
    assert first.outcome == "waiting_approval"
    assert first.approval_id is not None
    other_process_ledger(harness).decide_approval(first.approval_id, True, "phone")
    scheduler = Scheduler(runtime, register=False)

    async def scenario() -> RunResult:
        await scheduler.tick()
        return await asyncio.wait_for(scheduler.tasks["nightly"], TIMEOUT_S)

    second = asyncio.run(scenario())
    assert second.outcome == "success"
    assert runtime.ledger.run(second.run_id)["trigger"] == "approval"  # type: ignore[index]
    assert len(backends["sim-frontier"].calls) == 1
    assert len(backends["sim-local"].calls) == 1  # only the first run's: the approved run went straight up


def test_frontier_allow_with_a_schedule_is_a_config_error(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, NIGHTLY.format(policy="allow"))
    path = str(harness.config_path)
    with pytest.raises(ConfigProblems) as caught:
        load_config(harness.config_path, {}, required=True)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: agent 'nightly': ")
    assert 'frontier = "allow"' in problem
    assert "schedule" in problem

    done = supervisor("config", "check", "--config", path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    first = done.stderr.splitlines()[0]
    assert first.startswith(f"error: {path}: agent 'nightly'")
    assert 'frontier = "allow"' in first

    refused = supervisor("daemon", "--config", path)
    assert refused.returncode == 2
    assert "agent 'nightly'" in refused.stderr
    assert "frontier" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_frontier_allow_without_a_schedule_is_fine(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, NIGHTLY.format(policy="allow").replace('schedule = "every 10m"\n', ""))
    assert harness.config().agent("nightly").frontier == "allow"


# ------------------------------------------------------------------------------------------------------------
# Learned starting tier

LEARNER = """
[router]
skip_after_failed_runs = {k}
reprobe_every = {n}

[agents.learn]
goal = "Answer 42."
workspace = "ws"
ladder = ["local", "cheap"]
attempts_per_tier = 1

[[agents.learn.steps]]
name = "solve"
prompt = "Six times seven?"
output = "answer"
verify = [{{ regex = "^42$" }}]
"""


class LocalModel:
    """A local tier that fails until it is told it has improved."""

    def __init__(self) -> None:
        self.good = False
        self.calls = 0

    def __call__(self, request: Request) -> str:
        self.calls += 1
        return "42" if self.good else "41"


def learner(tmp_path: Path, k: int, n: int) -> tuple[Harness, LocalModel]:
    model = LocalModel()
    text = LEARNER.format(k=k, n=n)
    router, agent = text.split("\n[agents", 1)
    harness = make_harness(
        tmp_path, "[agents" + agent, extra_toml=router, tiers=Tiers(local=model, cheap=lambda r: "42")
    )
    return harness, model


def local_tried(runtime: Runtime, model: LocalModel, count: int) -> list[bool]:
    """Run the agent ``count`` times; for each run, whether the local tier was called."""
    tried = []

    async def scenario() -> None:
        for _ in range(count):
            before = model.calls
            result = await runtime.run_agent("learn")
            assert result.outcome == "success"
            tried.append(model.calls > before)

    asyncio.run(scenario())
    return tried


def test_a_tier_that_keeps_failing_is_skipped_reprobed_and_restored(tmp_path: Path) -> None:
    harness, model = learner(tmp_path, k=2, n=3)
    runtime, _ = harness.runtime()
    assert local_tried(runtime, model, 2) == [True, True]

    # `supervisor status` shows the skip and its evidence before the next run.
    status = supervisor("status", "--json", "--config", str(harness.config_path))
    assert status.returncode == 0, status.stderr
    (agent,) = json.loads(status.stdout)["agents"]
    (skip,) = agent["learned_skips"]
    assert skip["step"] == "solve"
    assert skip["tier"] == "local"
    assert skip["failed_runs"] == [2, 1]
    assert "each of the last 2 runs" in skip["reason"]

    assert local_tried(runtime, model, 1) == [False]  # run 3: skipped
    skipped = runtime.ledger.events_after(0, kinds=["tier_skipped"])
    assert [e.run_id for e in skipped] == [3]
    assert skipped[0].data["tier"] == "local"
    assert skipped[0].data["reason"].startswith("learned: the gate failed at local on each of the last 2 runs (2, 1)")

    # Within the next few runs local is tried again (a re-probe), and skipped in between.
    tried = local_tried(runtime, model, 6)
    assert tried.count(True) >= 2
    assert tried.count(False) >= 2
    # The local tier improves: the next probe passes and the tier is restored for good.
    model.good = True
    tried = local_tried(runtime, model, 6)
    first_probe = tried.index(True)
    assert tried[first_probe:] == [True] * (len(tried) - first_probe)
    last = runtime.ledger.recent_runs("learn", limit=1)[0]
    assert runtime.ledger.query("SELECT tier FROM calls WHERE run_id = ?", (last["id"],))[0]["tier"] == "local"
    status = supervisor("status", "--json", "--config", str(harness.config_path))
    assert json.loads(status.stdout)["agents"][0]["learned_skips"] == []


@pytest.mark.parametrize("n", [2, 3, 5])
def test_the_reprobe_comes_every_nth_run(tmp_path: Path, n: int) -> None:
    harness, model = learner(tmp_path, k=2, n=n)
    runtime, _ = harness.runtime()
    tried = local_tried(runtime, model, 2 + 3 * n)
    # Runs 1-2 fail at local; from then on N-1 skipped runs, then a probe, N runs apart.
    assert tried == [True, True] + ([False] * (n - 1) + [True]) * 3


def test_status_reports_what_the_next_run_will_do(tmp_path: Path) -> None:
    # status and the runtime must agree: if status says "skipping local", the next run skips it.
    harness, model = learner(tmp_path, k=2, n=3)
    runtime, _ = harness.runtime()
    for _ in range(8):
        status = supervisor("status", "--json", "--config", str(harness.config_path))
        shows_skip = bool(json.loads(status.stdout)["agents"][0]["learned_skips"])
        (tried,) = local_tried(runtime, model, 1)
        assert shows_skip == (not tried)


# ------------------------------------------------------------------------------------------------------------
# Cache-aware cost per wake

WAKERS = """
[agents.hourly2]
goal = "Summarize the notes."
workspace = "ws"
schedule = "every 2h"
ladder = ["local", "cheap"]
[[agents.hourly2.steps]]
name = "sum"
prompt = "Summarize."
context = ["notes.md"]
output = "summary"
verify = [{ regex = "." }]

[agents.halfhrs]
goal = "Summarize the notes."
workspace = "ws"
schedule = "every 30m"
ladder = ["local", "cheap"]
[[agents.halfhrs.steps]]
name = "sum"
prompt = "Summarize."
context = ["notes.md"]
output = "summary"
verify = [{ regex = "." }]

[agents.fronty]
goal = "Summarize the notes."
workspace = "ws"
schedule = "every 10m"
ladder = ["frontier"]
[[agents.fronty.steps]]
name = "sum"
prompt = "Summarize."
context = ["notes.md"]
output = "summary"
verify = [{ regex = "." }]

[agents.locally]
goal = "Summarize the notes."
workspace = "ws"
schedule = "every 10m"
ladder = ["local"]
[[agents.locally.steps]]
name = "sum"
prompt = "Summarize."
context = ["notes.md"]
output = "summary"
verify = [{ regex = "." }]
"""


def wake_estimates(harness: Harness) -> dict[str, Any]:
    done = supervisor("status", "--json", "--config", str(harness.config_path))
    assert done.returncode == 0, done.stderr
    return {a["name"]: a["wake_estimate"] for a in json.loads(done.stdout)["agents"]}


def test_status_shows_the_cost_per_wake_warm_and_cold(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, WAKERS, files={"notes.md": "note " * 6000})
    estimates = wake_estimates(harness)

    slow = estimates["hourly2"]  # every 2h > DeepSeek Flash's 1h TTL: cold at every wake
    assert slow["models"] == ["sim-cheap:flash"]
    assert 0 < slow["warm_micros"] < slow["cold_micros"]
    assert slow["expected"] == "cold"
    assert slow["expected_micros"] == slow["cold_micros"]
    assert "TTL" in slow["why"]
    assert "60m" in slow["why"]
    assert "2h" in slow["why"]

    quick = estimates["halfhrs"]  # every 30m < 1h: the cache is still warm
    assert quick["expected"] == "warm"
    assert quick["expected_micros"] == quick["warm_micros"] < quick["cold_micros"]
    assert (quick["warm_micros"], quick["cold_micros"]) == (slow["warm_micros"], slow["cold_micros"])

    frontier = estimates["fronty"]  # every 10m > Sonnet's 5m TTL
    assert frontier["models"] == ["sim-frontier:sonnet"]
    assert frontier["expected"] == "cold"
    assert "5m" in frontier["why"]
    assert frontier["cold_micros"] > slow["cold_micros"]

    assert estimates["locally"] is None  # no API tier: nothing to estimate

    text = supervisor("status", "--config", str(harness.config_path))
    assert text.returncode == 0, text.stderr
    assert "cost per wake" in text.stdout
    assert "expected cold" in text.stdout
    assert "expected warm" in text.stdout


def test_a_mixed_agent_prices_each_step_at_its_own_cache_state(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        """
        [agents.mixed]
        goal = "Summarize the notes."
        workspace = "ws"
        schedule = "every 30m"
        [[agents.mixed.steps]]
        name = "cheap-step"
        prompt = "Summarize."
        context = ["notes.md"]
        ladder = ["local", "cheap"]
        output = "a"
        verify = [{ regex = "." }]
        [[agents.mixed.steps]]
        name = "hard-step"
        prompt = "Summarize."
        context = ["notes.md"]
        ladder = ["frontier"]
        output = "b"
        verify = [{ regex = "." }]
        """,
        files={"notes.md": "note " * 6000},
    )
    estimate = wake_estimates(harness)["mixed"]
    assert "5m" in estimate["why"]  # it knows the frontier step wakes cold...
    assert estimate["expected_micros"] > estimate["warm_micros"]  # ...so the expected cost is not all-warm


# ------------------------------------------------------------------------------------------------------------
# Offline mode

OFFLINE_AGENT = """
[agents.off]
goal = "Answer 42."
workspace = "ws"
attempts_per_tier = 1

[[agents.off.steps]]
name = "solve"
prompt = "Six times seven?"
writes = "answer.txt"
verify = [{ regex = "^42$" }]
"""


@pytest.fixture
def remote() -> Iterator[OpenAIFake]:
    """A loopback DeepSeek stand-in that records every request; in offline mode it must receive none."""
    with OpenAIFake("deepseek") as fake:
        fake.responder = lambda req: Reply(text="42")
        yield fake  # type: ignore[misc]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def offline_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: OpenAIFake, *, offline: bool, schedule: str = ""
) -> Harness:
    """Cheap = DeepSeek Flash at the fake; frontier = Anthropic at a closed port; local = scripted (fails)."""
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test-deepseek")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-anthropic")
    providers = f"""
    offline = {str(offline).lower()}
    [providers.deepseek]
    kind = "openai_compat"
    base_url = "{fake.url}/v1"
    api_key_env = "DEEPSEEK_API_KEY"
    max_retries = 0
    [providers.anthropic]
    kind = "anthropic"
    base_url = "http://127.0.0.1:{closed_port()}"
    api_key_env = "ANTHROPIC_API_KEY"
    max_retries = 0
    """
    agent = OFFLINE_AGENT.replace("attempts_per_tier = 1\n", f"attempts_per_tier = 1\n{schedule}\n")
    harness = make_harness(tmp_path, agent, extra_toml=providers, tiers=Tiers(local=lambda r: "41"))
    text = harness.config_path.read_text()
    text = text.replace('cheap = ["sim-cheap:flash"]', 'cheap = ["deepseek:deepseek-flash"]')
    text = text.replace('frontier = ["sim-frontier:sonnet"]', 'frontier = ["anthropic:claude-sonnet-5-5"]')
    harness.config_path.write_text(text)
    # The scripted providers' script file, for the child processes (`supervisor run` builds its own backends).
    (tmp_path / "unused.toml").write_text('[[answer]]\nmatch = "."\ntext = "41"\n')
    return harness


def set_offline(harness: Harness, offline: bool) -> None:
    text = harness.config_path.read_text()
    text = text.replace(f"offline = {str(not offline).lower()}", f"offline = {str(offline).lower()}", 1)
    harness.config_path.write_text(text)
    stat = harness.config_path.stat()
    os.utime(harness.config_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))  # a visible change


def test_offline_defers_past_local_and_contacts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: OpenAIFake
) -> None:
    harness = offline_harness(tmp_path, monkeypatch, remote, offline=True)
    runtime, backends = harness.runtime()
    before = tree_digest(harness.workspace)
    result = asyncio.run(runtime.run_agent("off"))
    assert result.outcome == "deferred"
    assert result.exit_code == 3
    assert "offline" in result.reason
    assert len(backends["sim-local"].calls) == 1  # the local tier is still used
    assert remote.requests == []  # not one connection, not even a health check
    assert tree_digest(harness.workspace) == before
    row = runtime.ledger.agent("off")
    assert row is not None
    assert row["state"] == "deferred"
    assert "offline" in row["state_reason"]
    (deferred,) = runtime.ledger.events_after(0, kinds=["agent_deferred"])
    assert "offline" in deferred.data["reason"]
    notices = [e.data["message"] for e in runtime.ledger.events_after(0, kinds=["notice"])]
    assert not [m for m in notices if "unavailable" in m]  # the closed-port frontier was never tried either
    assert not runtime.ledger.approvals()

    # Offline lifted: the same agent runs, and the cheap tier is reached over the (loopback) network.
    set_offline(harness, False)
    online, _ = harness.runtime()
    result = asyncio.run(online.run_agent("off"))
    assert result.outcome == "success"
    assert result.tier_reached == "cheap"
    assert len(remote.model_requests()) == 1
    assert (harness.workspace / "answer.txt").read_text() == "42\n"


def test_the_offline_flag_on_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: OpenAIFake
) -> None:
    harness = offline_harness(tmp_path, monkeypatch, remote, offline=False)
    config = str(harness.config_path)
    done = supervisor("run", "off", "--config", config, "--offline")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "offline" in done.stdout + done.stderr
    assert remote.requests == []
    status = supervisor("status", "--json", "--config", config, "--offline")
    assert json.loads(status.stdout)["offline"] is True
    assert json.loads(status.stdout)["agents"][0]["state"] == "deferred"
    asked = supervisor("ask", "deepseek:deepseek-flash", "Six times seven?", "--config", config, "--offline")
    assert asked.returncode != 0
    assert "offline" in asked.stderr
    assert remote.requests == []

    done = supervisor("run", "off", "--config", config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(remote.model_requests()) == 1
    assert (harness.workspace / "answer.txt").read_text() == "42\n"


def test_a_daemon_started_offline_stays_offline_when_the_config_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: OpenAIFake
) -> None:
    # `supervisor daemon --offline` builds its runtime from config.with_offline(True), as here.
    harness = offline_harness(tmp_path, monkeypatch, remote, offline=False)
    config = harness.config().with_offline(True)
    backends = harness.tiers.backends(config, harness.environ)
    runtime = Runtime(
        config, harness.catalog, harness.ledger(), environ=harness.environ, backends=backends, home=harness.home
    )
    scheduler = Scheduler(runtime, harness.config_path, register=False)

    async def scenario() -> None:
        await scheduler.tick()
        # Someone edits the file (a comment, a raised cap...): the daemon reloads it.
        harness.config_path.write_text(harness.config_path.read_text() + "\n# edited\n")
        stat = harness.config_path.stat()
        os.utime(harness.config_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
        await scheduler.tick()

    asyncio.run(scenario())
    notices = [e.data["message"] for e in runtime.ledger.events_after(0, kinds=["notice"])]
    assert any(m.startswith("reloaded ") for m in notices)
    assert runtime.config.offline
    result = asyncio.run(runtime.run_agent("off"))
    assert result.outcome == "deferred"
    assert remote.requests == []


def test_a_deferred_offline_agent_resumes_when_offline_is_lifted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote: OpenAIFake
) -> None:
    harness = offline_harness(tmp_path, monkeypatch, remote, offline=True, schedule='schedule = "every 6h"')
    runtime, _ = harness.runtime()
    scheduler = Scheduler(runtime, harness.config_path, register=False)

    async def scenario() -> RunResult | None:
        await scheduler.tick()
        first = await asyncio.wait_for(scheduler.tasks["off"], TIMEOUT_S)
        assert first.outcome == "deferred"
        set_offline(harness, False)
        await scheduler.tick()  # picks up the change
        await scheduler.tick()
        task = scheduler.tasks["off"]
        if task.done():
            return None
        return await asyncio.wait_for(task, TIMEOUT_S)

    second = asyncio.run(scenario())
    assert second is not None
    assert second.outcome == "success"
    assert len(remote.model_requests()) == 1


# ------------------------------------------------------------------------------------------------------------
# Pause, resume and "run now" from another process, through the ledger

WORKER = """
[agents.worker]
goal = "Process data.txt."
workspace = "ws"
schedule = "every 10m"
ladder = ["local"]
attempts_per_tier = 1

[[agents.worker.steps]]
name = "touch"
run = "echo touched >> data.txt && mkdir -p out && echo new > out/made.txt"

[[agents.worker.steps]]
name = "answer"
prompt = "Summarize data.txt."
context = ["data.txt"]
writes = "summary.txt"
verify = [{ regex = "ok" }]
"""


class SlowOnce:
    """The first call takes (cancellably) long; later ones answer at once."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: Request) -> ScriptedAnswer:
        self.calls += 1
        return ScriptedAnswer("ok", delay_s=TIMEOUT_S if self.calls == 1 else 0.0)


def test_a_pause_from_another_process_stops_a_running_scheduled_run(tmp_path: Path) -> None:
    model = SlowOnce()
    harness = make_harness(tmp_path, WORKER, files={"data.txt": "one\n"}, tiers=Tiers(local=model))
    runtime, _ = harness.runtime()
    scheduler = Scheduler(runtime, register=False)
    other = other_process_ledger(harness)
    before = tree_digest(harness.workspace)

    async def scenario() -> None:
        await scheduler.tick()
        task = scheduler.tasks["worker"]
        await until(lambda: runtime.ledger.events_after(0, kinds=["call_started"]), "the model call to start")
        assert (harness.workspace / "out" / "made.txt").exists()  # the run has changed the workspace
        other.pause_agent("worker", "human", "paused from another process")
        await scheduler.tick()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, TIMEOUT_S)

    asyncio.run(scenario())
    assert tree_digest(harness.workspace) == before
    row = runtime.ledger.agent("worker")
    assert row is not None
    assert row["state"] == "paused"
    assert row["paused_by"] == "human"
    assert row["next_run_at"] is None
    (run,) = runtime.ledger.recent_runs("worker")
    assert run["outcome"] == "paused"
    assert runtime.ledger.held_reservations() == []
    (call,) = runtime.ledger.calls(run_id=run["id"])
    assert call["priced"] == 0
    assert call["cost_micros"] is None

    # Ticks while paused start nothing, schedule or not.
    async def paused_ticks() -> None:
        other.enqueue_command("worker", "run_now", "phone")
        for _ in range(3):
            await scheduler.tick()

    asyncio.run(paused_ticks())
    assert scheduler.tasks["worker"].done()
    assert len(runtime.ledger.recent_runs("worker")) == 1

    # Resume from the other process, then "run now": it runs to completion.
    assert other.resume_agent("worker")
    other.enqueue_command("worker", "run_now", "phone")

    async def resumed() -> RunResult:
        await scheduler.tick()
        return await asyncio.wait_for(scheduler.tasks["worker"], TIMEOUT_S)

    result = asyncio.run(resumed())
    assert result.outcome == "success"
    assert runtime.ledger.run(result.run_id)["trigger"] == "manual"  # type: ignore[index]
    assert (harness.workspace / "summary.txt").read_text() == "ok\n"


def test_run_now_from_another_process_starts_a_run_at_the_next_tick(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        textwrap.dedent(WORKER).replace('schedule = "every 10m"\n', ""),
        files={"data.txt": "one\n"},
        tiers=Tiers(local=lambda r: "ok"),
    )
    runtime, backends = harness.runtime()
    scheduler = Scheduler(runtime, register=False)

    async def scenario() -> RunResult:
        # Nothing is due: ticks call no model (no keep-alive pings, ever).
        for _ in range(5):
            await scheduler.tick()
        assert not scheduler.tasks
        assert not backends["sim-local"].calls
        other_process_ledger(harness).enqueue_command("worker", "run_now", "test")
        await scheduler.tick()
        return await asyncio.wait_for(scheduler.tasks["worker"], TIMEOUT_S)

    result = asyncio.run(scenario())
    assert result.outcome == "success"
    assert runtime.ledger.run(result.run_id)["trigger"] == "manual"  # type: ignore[index]
    assert len(backends["sim-local"].calls) == 1
    assert runtime.ledger.query("SELECT state FROM commands")[0]["state"] == "done"


def test_a_scheduled_agent_is_not_woken_again_before_its_interval(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, WORKER, files={"data.txt": "one\n"}, tiers=Tiers(local=lambda r: "ok"))
    runtime, backends = harness.runtime()
    now = [datetime.now(UTC)]
    scheduler = Scheduler(runtime, register=False, clock=lambda: now[0])

    async def scenario() -> None:
        await scheduler.tick()
        await asyncio.wait_for(scheduler.tasks["worker"], TIMEOUT_S)
        started = now[0]
        for minutes in (1, 5, 9):
            now[0] = started + timedelta(minutes=minutes)
            await scheduler.tick()
        assert scheduler.tasks["worker"].done()
        next_run = runtime.ledger.agent("worker")["next_run_at"]  # type: ignore[index]
        assert next_run is not None
        now[0] = datetime.fromisoformat(next_run.replace("Z", "+00:00")) + timedelta(seconds=1)
        await scheduler.tick()
        await asyncio.wait_for(scheduler.tasks["worker"], TIMEOUT_S)

    asyncio.run(scenario())
    assert len(backends["sim-local"].calls) == 2
    assert [r["trigger"] for r in runtime.ledger.recent_runs("worker")] == ["schedule", "schedule"]


TWO_STEPS = """
[agents.two]
goal = "Answer 42 once the input is ready."
workspace = "ws"
attempts_per_tier = 1

[[agents.two.steps]]
name = "check"
run = "test -f ready.txt"

[[agents.two.steps]]
name = "solve"
prompt = "Six times seven?"
ladder = ["frontier"]
output = "answer"
verify = [{ regex = "^42$" }]
"""


def test_an_approval_starts_one_run_not_one_per_tick(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, TWO_STEPS, files={"ready.txt": "yes"}, tiers=Tiers(frontier=lambda r: "42"))
    runtime, _ = harness.runtime()
    first = asyncio.run(runtime.run_agent("two", approval_timeout_s=0))
    assert first.outcome == "waiting_approval"
    assert first.approval_id is not None
    (harness.workspace / "ready.txt").unlink()  # the input goes away before the approval comes in
    other_process_ledger(harness).decide_approval(first.approval_id, True, "phone")
    scheduler = Scheduler(runtime, register=False)

    async def ticks() -> None:
        for _ in range(5):
            await scheduler.tick()
            task = scheduler.tasks.get("two")
            if task is not None:
                await asyncio.wait_for(task, TIMEOUT_S)

    asyncio.run(ticks())
    approval_runs = [r for r in runtime.ledger.recent_runs("two") if r["trigger"] == "approval"]
    assert len(approval_runs) == 1


def test_a_run_in_another_process_is_left_alone(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, WORKER, files={"data.txt": "one\n"}, tiers=Tiers(local=lambda r: "ok"))
    runtime, backends = harness.runtime()
    # Another live process (this test's own pid owns the row) is running the agent right now.
    other = other_process_ledger(harness)
    run_id = other.start_run("worker", "cli")
    other.change_agent_state("worker", "running", f"run {run_id} (cli)", run_id=run_id)
    scheduler = Scheduler(runtime, register=False)

    async def ticks() -> None:
        for _ in range(5):
            await scheduler.tick()
            task = scheduler.tasks.get("worker")
            if task is not None:
                with contextlib.suppress(Exception):
                    await task

    asyncio.run(ticks())
    assert not backends["sim-local"].calls
    failures = [e for e in runtime.ledger.events_after(0, kinds=["notice"]) if "failed to start" in e.data["message"]]
    assert len(failures) <= 1
