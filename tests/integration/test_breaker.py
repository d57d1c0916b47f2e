"""The runaway breaker: each rule trips on a scripted scenario, pauses the agent with its evidence, and only a
human's resume lets it run again.

(a) input tokens per call rise across N consecutive calls while output stays under a share of input;
(b) spend in the last hour exceeds a share of the agent's day cap;
(c) the same gate fails with the same output N times in a row at one tier (escalate instead of looping).

Scripted tiers, a real ledger file, real child processes for ``supervisor resume`` and ``supervisor status``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.backends.base import Request
from supervisor.backends.scripted import ScriptedAnswer
from supervisor.runtime.runtime import RunResult, Runtime
from supervisor.runtime.scheduler import Scheduler
from tests.helpers import Harness, Tiers, make_harness

TIMEOUT_S = 60


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


def runs(runtime: Runtime, agent: str, count: int) -> list[RunResult]:
    async def scenario() -> list[RunResult]:
        return [await runtime.run_agent(agent) for _ in range(count)]

    return asyncio.run(scenario())


def trips(runtime: Runtime, agent: str) -> list[dict[str, object]]:
    return [e.data for e in runtime.ledger.events_after(0, agent=agent, kinds=["breaker_tripped"])]


def run_count(runtime: Runtime, agent: str) -> int:
    return int(runtime.ledger.scalar("SELECT count(*) FROM runs WHERE agent = ?", (agent,)))


def assert_paused_by_breaker(runtime: Runtime, agent: str, rule: str) -> None:
    row = runtime.ledger.agent(agent)
    assert row is not None
    assert row["state"] == "paused"
    assert row["paused_by"] == "breaker"
    assert rule in row["state_reason"]


def assert_stays_paused(runtime: Runtime, agent: str) -> None:
    """A paused agent: run_agent returns "paused" without a model call or a run row; the scheduler leaves it."""
    before = run_count(runtime, agent)
    calls_before = int(runtime.ledger.scalar("SELECT count(*) FROM calls"))
    result = asyncio.run(runtime.run_agent(agent))
    assert result.outcome == "paused"
    assert result.exit_code == 5
    assert result.run_id == 0
    assert "supervisor resume" in result.reason

    async def tick() -> None:
        runtime.ledger.enqueue_command(agent, "run_now", "test")
        scheduler = Scheduler(runtime, register=False)
        await scheduler.tick()
        assert not scheduler.tasks  # neither "run now" nor a due schedule starts a paused agent

    asyncio.run(tick())
    assert run_count(runtime, agent) == before
    assert int(runtime.ledger.scalar("SELECT count(*) FROM calls")) == calls_before


# ------------------------------------------------------------------------------------------------------------
# (a) rising input with lean output

GROWER = """
[agents.grow]
goal = "Summarize the log."
workspace = "ws"
schedule = "every 10m"
ladder = ["local"]
attempts_per_tier = 1

[[agents.grow.steps]]
name = "read"
prompt = "Summarize the log in one word."
context = ["log.txt"]
output = "summary"
verify = [{ regex = "ok" }]
"""


def grow_log(harness: Harness, wake: int) -> None:
    """Each wake the log has grown: the 136M-token pattern, in miniature."""
    with open(harness.workspace / "log.txt", "a") as log:
        log.write(f"wake {wake}: " + "event " * 150 + "\n")


@pytest.mark.parametrize(("rising_calls", "resume_with"), [(5, "cli"), (3, "runtime")])
def test_rising_input_with_lean_output_pauses_the_agent(tmp_path: Path, rising_calls: int, resume_with: str) -> None:
    extra = "" if rising_calls == 5 else f"[breaker]\nrising_calls = {rising_calls}\n"
    harness = make_harness(
        tmp_path, GROWER, files={"log.txt": "start\n"}, extra_toml=extra, tiers=Tiers(local=lambda r: "ok")
    )
    runtime, backends = harness.runtime()
    results: list[RunResult] = []
    for wake in range(1, rising_calls + 1):
        grow_log(harness, wake)
        results += runs(runtime, "grow", 1)

    assert [r.outcome for r in results[:-1]] == ["success"] * (rising_calls - 1)
    assert results[-1].outcome == "paused"
    assert "runaway breaker" in results[-1].reason
    assert_paused_by_breaker(runtime, "grow", "rising_input")

    (trip,) = trips(runtime, "grow")
    assert trip["rule"] == "rising_input"
    evidence = trip["evidence"]
    assert isinstance(evidence, dict)
    calls = runtime.ledger.query("SELECT id, input_uncached + cache_read AS prompt, output FROM calls ORDER BY id")
    assert evidence["call_ids"] == [c["id"] for c in calls]
    assert evidence["input_tokens"] == [c["prompt"] for c in calls]
    assert evidence["output_tokens"] == [c["output"] for c in calls]
    inputs = evidence["input_tokens"]
    assert len(inputs) == rising_calls
    assert all(b > a for a, b in itertools.pairwise(inputs))
    assert all(o < 0.05 * i for i, o in zip(inputs, evidence["output_tokens"], strict=True))
    assert f"{inputs[0]:,} -> {inputs[-1]:,}" in str(trip["message"])

    # `supervisor status` shows the breaker and its evidence.
    status = supervisor("status", "--json", "--config", str(harness.config_path))
    assert status.returncode == 0, status.stderr
    (agent,) = json.loads(status.stdout)["agents"]
    assert agent["state"] == "paused"
    assert agent["breaker"]["rule"] == "rising_input"
    assert agent["breaker"]["evidence"]["input_tokens"] == inputs

    # Paused means paused: no run, no call, no scheduled or manual start.
    calls_before = len(backends["sim-local"].calls)
    assert_stays_paused(runtime, "grow")
    assert len(backends["sim-local"].calls) == calls_before

    # A human looks, trims the log, and resumes; the agent runs again.
    (harness.workspace / "log.txt").write_text("start\n")
    if resume_with == "cli":
        done = supervisor("resume", "grow", "--config", str(harness.config_path))
        assert done.returncode == 0, done.stderr
        assert "grow resumed" in done.stdout
    else:
        assert runtime.resume("grow")
    assert runtime.ledger.agent("grow")["state"] == "idle"  # type: ignore[index]
    after = runs(runtime, "grow", 1)[0]
    assert after.outcome == "success"
    assert len(backends["sim-local"].calls) == calls_before + 1


def test_rising_input_with_substantial_output_is_not_a_runaway(tmp_path: Path) -> None:
    # Same growing prompt, but each answer is a real piece of work (output well over 5% of input).
    def local(request: Request) -> ScriptedAnswer:
        return ScriptedAnswer("ok", output_tokens=2000)

    harness = make_harness(tmp_path, GROWER, files={"log.txt": "start\n"}, tiers=Tiers(local=local))
    runtime, _ = harness.runtime()
    for wake in range(1, 8):
        grow_log(harness, wake)
        assert runs(runtime, "grow", 1)[0].outcome == "success"
    assert not trips(runtime, "grow")
    assert runtime.ledger.agent("grow")["state"] == "idle"  # type: ignore[index]


def test_a_configured_output_ratio_changes_what_counts_as_lean(tmp_path: Path) -> None:
    # 60 output tokens is under 50% of input but over 5%: only the looser threshold trips.
    harness = make_harness(
        tmp_path,
        GROWER,
        files={"log.txt": "start\n"},
        extra_toml="[breaker]\nrising_calls = 3\nmax_output_ratio = 0.5\n",
        tiers=Tiers(local=lambda r: ScriptedAnswer("ok", output_tokens=60)),
    )
    runtime, _ = harness.runtime()
    for wake in range(1, 4):
        grow_log(harness, wake)
        runs(runtime, "grow", 1)
    assert_paused_by_breaker(runtime, "grow", "rising_input")


def test_resume_starts_a_fresh_breaker_window(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, GROWER, files={"log.txt": "start\n"}, tiers=Tiers(local=lambda r: "ok"))
    runtime, _ = harness.runtime()
    for wake in range(1, 6):
        grow_log(harness, wake)
        runs(runtime, "grow", 1)
    assert_paused_by_breaker(runtime, "grow", "rising_input")
    # The human resumes; the log no longer grows.
    assert runtime.resume("grow")
    result = runs(runtime, "grow", 1)[0]
    assert result.outcome == "success", result.reason
    assert runtime.ledger.agent("grow")["state"] == "idle"  # type: ignore[index]


# ------------------------------------------------------------------------------------------------------------
# (b) hourly spend against the day cap

SPENDER = """
[agents.spend]
goal = "Write a report."
workspace = "ws"
ladder = ["cheap"]
attempts_per_tier = 1
caps = {{ day_usd = 0.01 }}

[[agents.spend.steps]]
name = "report"
prompt = "Write the report."
output = "report"
max_output_tokens = 6000
verify = [{{ regex = "{gate}" }}]
"""


def spending_tiers(output_tokens: list[int], text: str = "ok") -> Tiers:
    """The cheap tier answers with these output sizes in turn (~0.6-1.2 USD per million output tokens)."""
    sizes = iter(output_tokens)
    return Tiers(cheap=lambda r: ScriptedAnswer(text, output_tokens=next(sizes)))


def test_hourly_spend_over_the_configured_share_pauses_the_agent(tmp_path: Path) -> None:
    # Day cap $0.01, share 0.2: the breaker trips past $0.002 in an hour. Run 1 spends ~$0.0001 (even at
    # peak prices), run 2 at least $0.003 (even off-peak): the second run trips it.
    harness = make_harness(
        tmp_path,
        SPENDER.format(gate="ok"),
        extra_toml="[breaker]\nhour_share_of_day_cap = 0.2\n",
        tiers=spending_tiers([100, 5000]),
    )
    runtime, backends = harness.runtime()
    first = runs(runtime, "spend", 1)[0]
    assert first.outcome == "success"
    assert not trips(runtime, "spend")
    assert runtime.ledger.agent("spend")["state"] == "idle"  # type: ignore[index]

    second = runs(runtime, "spend", 1)[0]
    assert second.outcome == "success"  # the work itself passed; the agent is paused after it
    assert_paused_by_breaker(runtime, "spend", "hourly_spend")
    (trip,) = trips(runtime, "spend")
    assert trip["rule"] == "hourly_spend"
    evidence = trip["evidence"]
    assert isinstance(evidence, dict)
    spent = runtime.ledger.spend(agent="spend").micros
    assert evidence["spent_last_hour_micros"] == spent
    assert evidence["day_cap_micros"] == 10_000
    assert evidence["threshold_micros"] == 2_000
    assert spent > 2_000
    assert spent < 10_000  # the day cap was never the thing that stopped it
    run_row = runtime.ledger.run(second.run_id)
    assert run_row is not None
    assert "paused by the runaway breaker" in run_row["reason"]

    calls_before = len(backends["sim-cheap"].calls)
    assert_stays_paused(runtime, "spend")
    assert len(backends["sim-cheap"].calls) == calls_before


def test_hourly_spend_under_a_higher_configured_share_does_not_trip(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        SPENDER.format(gate="ok"),
        extra_toml="[breaker]\nhour_share_of_day_cap = 0.9\n",
        tiers=spending_tiers([100, 5000]),
    )
    runtime, _ = harness.runtime()
    assert [r.outcome for r in runs(runtime, "spend", 2)] == ["success", "success"]
    assert not trips(runtime, "spend")
    assert runtime.ledger.agent("spend")["state"] == "idle"  # type: ignore[index]


def test_the_run_result_says_the_breaker_paused_the_agent(tmp_path: Path) -> None:
    # The second run fails its gate after spending: the ledger records it as paused by the breaker.
    harness = make_harness(
        tmp_path,
        SPENDER.format(gate="^never$"),
        extra_toml="[breaker]\nhour_share_of_day_cap = 0.2\n",
        tiers=spending_tiers([100, 5000]),
    )
    runtime, _ = harness.runtime()
    results = runs(runtime, "spend", 2)
    assert_paused_by_breaker(runtime, "spend", "hourly_spend")
    row = runtime.ledger.run(results[1].run_id)
    assert row is not None
    assert row["outcome"] == "paused"
    assert results[1].outcome == row["outcome"]
    assert results[1].reason == row["reason"]
    assert results[1].exit_code == 5


# ------------------------------------------------------------------------------------------------------------
# (c) the same gate failing with the same output, again and again, at one tier

LOOPER = """
[agents.loop]
goal = "Answer 42."
workspace = "ws"
ladder = {ladder}
attempts_per_tier = {attempts}

[[agents.loop.steps]]
name = "answer"
prompt = "What is six times seven?"
output = "answer"
verify = [{{ regex = "^42$" }}]
"""


def test_repeated_identical_failure_escalates_instead_of_looping_and_pauses(tmp_path: Path) -> None:
    # Five attempts are allowed at local, but the third identical failure stops the loop: escalate now.
    harness = make_harness(
        tmp_path,
        LOOPER.format(ladder='["local", "cheap"]', attempts=5),
        tiers=Tiers(local=lambda r: "41", cheap=lambda r: "42"),
    )
    runtime, backends = harness.runtime()
    result = runs(runtime, "loop", 1)[0]
    assert len(backends["sim-local"].calls) == 3
    assert len(backends["sim-cheap"].calls) == 1
    assert result.outcome == "success"
    assert result.tier_reached == "cheap"
    escalated = runtime.ledger.events_after(0, kinds=["escalated"])
    assert [(e.data["from_tier"], e.data["to_tier"]) for e in escalated] == [("local", "cheap")]
    assert_paused_by_breaker(runtime, "loop", "repeated_failure")
    (trip,) = trips(runtime, "loop")
    assert trip["rule"] == "repeated_failure"
    assert trip["evidence"] == {
        "step": "answer",
        "tier": "local",
        "runs": [result.run_id],
        "failure": "regex: ^42$\nthe answer does not match /^42$/",
    }
    alarm = [e for e in runtime.ledger.events_after(0, kinds=["notice"]) if "runaway breaker" in e.data["message"]]
    assert alarm
    assert "escalating" in alarm[0].data["message"]

    assert_stays_paused(runtime, "loop")
    assert runtime.resume("loop")
    assert runs(runtime, "loop", 1)[0].outcome == "success"


def test_repeated_identical_failure_across_runs_at_the_top_tier_pauses(tmp_path: Path) -> None:
    # Two attempts per run at the only tier: run 1 fails twice, run 2's first failure is the third in a row.
    harness = make_harness(tmp_path, LOOPER.format(ladder='["local"]', attempts=2), tiers=Tiers(local=lambda r: "41"))
    runtime, backends = harness.runtime()
    first = runs(runtime, "loop", 1)[0]
    assert first.outcome == "exhausted"
    assert not trips(runtime, "loop")
    second = runs(runtime, "loop", 1)[0]
    assert len(backends["sim-local"].calls) == 3  # not 4: the loop was cut short
    (trip,) = trips(runtime, "loop")
    assert trip["evidence"]["runs"] == [first.run_id, second.run_id]  # type: ignore[index]
    assert_paused_by_breaker(runtime, "loop", "repeated_failure")
    assert runtime.ledger.run(second.run_id)["outcome"] == "paused"  # type: ignore[index]
    assert_stays_paused(runtime, "loop")


def test_the_repeat_threshold_is_configurable(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        LOOPER.format(ladder='["local", "cheap"]', attempts=5),
        extra_toml="[breaker]\nsame_failure_repeats = 2\n",
        tiers=Tiers(local=lambda r: "41", cheap=lambda r: "42"),
    )
    runtime, backends = harness.runtime()
    runs(runtime, "loop", 1)
    assert len(backends["sim-local"].calls) == 2
    assert_paused_by_breaker(runtime, "loop", "repeated_failure")


def test_failures_with_different_output_are_not_a_loop(tmp_path: Path) -> None:
    # Each answer fails differently (a real attempt at progress): all five attempts are used, no alarm.
    counter = iter(range(100))

    def local(request: Request) -> str:
        return f'"attempt {next(counter)}"'  # JSON, but not an object: the gate quotes it, so each failure differs

    agent = LOOPER.format(ladder='["local", "cheap"]', attempts=5).replace(
        '{ regex = "^42$" }', '{ json_schema = "s.json" }'
    )
    harness = make_harness(
        tmp_path, agent, files={"s.json": '{"type": "object"}'}, tiers=Tiers(local=local, cheap=lambda r: "{}")
    )
    runtime, backends = harness.runtime()
    result = runs(runtime, "loop", 1)[0]
    assert result.outcome == "success"
    assert len(backends["sim-local"].calls) == 5
    assert not trips(runtime, "loop")
    assert runtime.ledger.agent("loop")["state"] == "idle"  # type: ignore[index]
