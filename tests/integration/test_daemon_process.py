"""``supervisor daemon`` as a real process: one per data dir, a clean stop on SIGTERM, recovery after SIGKILL.

Each test starts ``python -m supervisor daemon --config F`` children with this test's SUPERVISOR_HOME and a
config whose tiers are scripted from TOML files (a ``delay_s`` answer keeps a step in flight). The test watches
the daemon through its own connection to the ledger, as any other process would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from supervisor.clock import parse_iso
from supervisor.ledger import Ledger
from tests.helpers import tree_digest

TIMEOUT_S = 60

PROVIDERS = """
[providers.sim-local]
kind = "scripted"
local = true
simulated_as = "mlx:smollm2-135m"
script = "local.toml"

[providers.sim-cheap]
kind = "scripted"
simulated_as = "deepseek:deepseek-flash"
script = "cheap.toml"

[providers.sim-frontier]
kind = "scripted"
simulated_as = "anthropic:claude-sonnet-5-5"
script = "frontier.toml"

[tiers]
local = ["sim-local:tiny"]
cheap = ["sim-cheap:flash"]
frontier = ["sim-frontier:sonnet"]
"""

# The cheap tier takes a minute over the worker's summary: long enough to be in flight when the signal lands.
CHEAP_SCRIPT = f"""
[[answer]]
match = "Summarize data.txt"
text = "summary ok"
delay_s = {TIMEOUT_S}

[[answer]]
match = "Six times seven"
text = "43"
"""
LOCAL_SCRIPT = """
default = "ok"

[[answer]]
match = "Six times seven"
text = "41"
"""
FRONTIER_SCRIPT = """
default = "42"
"""

WORKER = """
[agents.worker]
goal = "Summarize data.txt."
workspace = "ws"
schedule = "every 10m"
ladder = ["cheap"]
attempts_per_tier = 1

[[agents.worker.steps]]
name = "touch"
run = "echo touched >> data.txt && mkdir -p out && echo new > out/made.txt"

[[agents.worker.steps]]
name = "summarize"
prompt = "Summarize data.txt."
context = ["data.txt"]
writes = "summary.txt"
verify = [{ regex = "ok" }]
"""


@dataclass
class Setup:
    tmp: Path
    home: Path
    config: Path
    workspace: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def ledger(self) -> Ledger:
        return Ledger(self.home / "ledger.db")

    def start(self) -> subprocess.Popen[str]:
        """A daemon child; its output goes to files so a chatty daemon can never block on a full pipe."""
        n = len(self.procs)
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "daemon", "--config", str(self.config)],
            stdout=open(self.tmp / f"daemon{n}.out", "w"),  # noqa: SIM115 - closed when the child exits
            stderr=open(self.tmp / f"daemon{n}.err", "w"),  # noqa: SIM115
            text=True,
            env=dict(os.environ),
        )
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[str]) -> str:
        n = self.procs.index(proc)
        return (self.tmp / f"daemon{n}.out").read_text() + (self.tmp / f"daemon{n}.err").read_text()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=dict(os.environ),
            check=False,
        )


@pytest.fixture
def setup(tmp_path: Path, supervisor_home: Path) -> Iterator[Setup]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "data.txt").write_text("one\ntwo\n")
    (workspace / "keep.txt").write_text("keep")
    (tmp_path / "cheap.toml").write_text(CHEAP_SCRIPT)
    (tmp_path / "local.toml").write_text(LOCAL_SCRIPT)
    (tmp_path / "frontier.toml").write_text(FRONTIER_SCRIPT)
    config = tmp_path / "supervisor.toml"
    config.write_text(PROVIDERS + WORKER)
    state = Setup(tmp_path, supervisor_home, config, workspace)
    yield state
    for proc in state.procs:  # never leave a daemon behind, even when a test fails
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT_S)


def wait_for(predicate: Callable[[], Any], what: str, proc: subprocess.Popen[str] | None = None) -> Any:
    """Poll until ``predicate`` is truthy (a deadline, not a fixed sleep); fail early if the daemon died."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def daemon_row(setup: Setup, pid: int) -> dict[str, Any] | None:
    with setup.ledger() as ledger:
        info = ledger.daemon_info()
    return info if info is not None and info["pid"] == pid else None


def call_in_flight(setup: Setup) -> bool:
    with setup.ledger() as ledger:
        return bool(ledger.events_after(0, kinds=["call_started"]))


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    return proc.wait(TIMEOUT_S)


# ------------------------------------------------------------------------------------------------------------


def test_a_second_daemon_for_the_same_data_dir_refuses(setup: Setup) -> None:
    setup.config.write_text(PROVIDERS + WORKER.replace('schedule = "every 10m"\n', ""))  # idle: nothing scheduled
    first = setup.start()
    wait_for(lambda: daemon_row(setup, first.pid), "the first daemon to register", first)

    second = subprocess.run(
        [sys.executable, "-m", "supervisor", "daemon", "--config", str(setup.config)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=dict(os.environ),
        check=False,
    )
    assert second.returncode == 2
    assert "Traceback" not in second.stderr
    lines = second.stderr.strip().splitlines()
    assert lines[0] == f"error: a supervisor daemon is already running for {setup.home} (pid {first.pid})"
    assert lines[1].startswith("hint: stop it first")
    assert first.poll() is None  # the first one is unharmed
    assert daemon_row(setup, first.pid)

    assert stop(first) == 0
    with setup.ledger() as ledger:
        assert ledger.daemon_info() is None
    # The lock went with it: a new daemon starts.
    third = setup.start()
    wait_for(lambda: daemon_row(setup, third.pid), "a new daemon to register", third)
    assert stop(third) == 0


def test_a_refused_daemon_does_not_announce_that_it_started(setup: Setup) -> None:
    setup.config.write_text(PROVIDERS + WORKER.replace('schedule = "every 10m"\n', ""))
    first = setup.start()
    wait_for(lambda: daemon_row(setup, first.pid), "the first daemon to register", first)
    second = subprocess.run(
        [sys.executable, "-m", "supervisor", "daemon", "--config", str(setup.config)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env=dict(os.environ),
        check=False,
    )
    assert second.returncode == 2
    assert "stop with Ctrl-C" not in second.stdout
    assert stop(first) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_step_stops_cleanly(setup: Setup, sig: int) -> None:
    before = tree_digest(setup.workspace)
    daemon = setup.start()
    wait_for(lambda: call_in_flight(setup), "the scheduled run's model call to be in flight", daemon)
    assert (setup.workspace / "out" / "made.txt").exists()  # the run has changed the workspace
    with setup.ledger() as ledger:
        assert [r["state"] for r in ledger.query("SELECT state FROM reservations")] == ["held"]

    assert stop(daemon, sig) == 0, setup.output(daemon)
    assert "Traceback" not in setup.output(daemon)
    assert tree_digest(setup.workspace) == before
    with setup.ledger() as ledger:
        assert ledger.held_reservations() == []
        (reservation,) = ledger.query("SELECT state, note, actual_micros, amount_micros FROM reservations")
        # Cancelled in flight: the provider may bill it, so it stays charged at its worst case.
        assert reservation["state"] == "settled_unpriced"
        assert reservation["actual_micros"] == reservation["amount_micros"] > 0
        assert [a["state"] for a in ledger.agents()] != ["running"]
        assert ledger.agent("worker")["state"] == "idle"  # type: ignore[index]
        (run,) = ledger.recent_runs("worker")
        assert run["outcome"] == "cancelled"
        assert run["trigger"] == "schedule"
        assert ledger.daemon_info() is None
        assert ledger.integrity_check() == "ok"
    assert not list((setup.home / "snapshots").glob("*"))


def test_sigkill_mid_step_then_a_restart_recovers(setup: Setup) -> None:
    before = tree_digest(setup.workspace)
    daemon = setup.start()
    wait_for(lambda: call_in_flight(setup), "the scheduled run's model call to be in flight", daemon)
    assert stop(daemon, signal.SIGKILL) == -signal.SIGKILL

    # What the crash left behind.
    with setup.ledger() as ledger:
        (run,) = ledger.recent_runs("worker")
        assert run["outcome"] == "running"
        assert ledger.agent("worker")["state"] == "running"  # type: ignore[index]
        (held,) = ledger.held_reservations()
        assert held["owner_pid"] == daemon.pid
    assert tree_digest(setup.workspace) != before

    restarted = setup.start()
    wait_for(lambda: daemon_row(setup, restarted.pid), "the restarted daemon to register", restarted)

    def recovered() -> bool:
        with setup.ledger() as ledger:
            row = ledger.run(run["id"])
            return row is not None and row["outcome"] == "crashed"

    wait_for(recovered, "the crashed run to be reconciled", restarted)
    wait_for(lambda: tree_digest(setup.workspace) == before, "the workspace to be restored", restarted)
    assert stop(restarted) == 0, setup.output(restarted)

    with setup.ledger() as ledger:
        assert ledger.integrity_check() == "ok"
        assert not [a for a in ledger.agents() if a["state"] == "running"]
        assert ledger.held_reservations() == []
        reservation = ledger.query("SELECT * FROM reservations WHERE id = ?", (held["id"],))[0]
        # Sent, then the owner died: maybe billed, so charged at its worst case, with an unpriced call row.
        assert reservation["state"] == "settled_unpriced"
        assert reservation["actual_micros"] == reservation["amount_micros"] > 0
        (call,) = ledger.query("SELECT * FROM calls WHERE reservation_id = ?", (held["id"],))
        assert call["error_class"] == "interrupted"
        assert call["priced"] == 0
        crashed = ledger.run(run["id"])
        assert crashed is not None
        assert crashed["outcome"] == "crashed"
        assert [r["id"] for r in ledger.recent_runs("worker")] == [run["id"]]  # no new run: not due for 10m
        notices = [e.data["message"] for e in ledger.events_after(0, kinds=["notice"])]
        assert any(f"run {run['id']} (worker) was interrupted: workspace restored" in m for m in notices)
    assert tree_digest(setup.workspace) == before
    assert not list((setup.home / "snapshots").glob("*"))


STATUS_AGENTS = """
[agents.nightly]
goal = "Summarize data.txt every morning."
workspace = "ws"
schedule = "daily 09:30"
ladder = ["local"]
[[agents.nightly.steps]]
name = "summarize"
prompt = "Summarize data.txt."
output = "summary"
verify = [{ regex = "ok" }]

[agents.looper]
goal = "Answer 42."
workspace = "ws"
schedule = "every 10m"
ladder = ["local"]
attempts_per_tier = 3
[[agents.looper.steps]]
name = "answer"
prompt = "Six times seven?"
output = "answer"
verify = [{ regex = "^42$" }]
"""


def test_status_shows_the_next_run_and_the_breaker(setup: Setup) -> None:
    setup.config.write_text(PROVIDERS + textwrap.dedent(STATUS_AGENTS))
    daemon = setup.start()

    def looper_paused() -> bool:
        with setup.ledger() as ledger:
            row = ledger.agent("looper")
            nightly = ledger.agent("nightly")
            if row is None or nightly is None:
                return False
            # The tick after the trip clears the paused agent's next run.
            return row["state"] == "paused" and row["next_run_at"] is None and bool(nightly["next_run_at"])

    wait_for(looper_paused, "the looper to trip the breaker (and the next tick)", daemon)

    done = setup.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["daemon"]["pid"] == daemon.pid
    agents = {a["name"]: a for a in data["agents"]}
    nightly, looper = agents["nightly"], agents["looper"]
    assert nightly["schedule"] == "daily 09:30"
    next_run = parse_iso(nightly["next_run_at"])
    assert next_run.astimezone().strftime("%H:%M") == "09:30"
    now = datetime.now().astimezone()
    assert now - timedelta(minutes=1) < next_run <= now + timedelta(days=1)
    assert nightly["breaker"] is None
    assert looper["state"] == "paused"
    assert looper["paused_by"] == "breaker"
    assert looper["next_run_at"] is None
    assert looper["breaker"]["rule"] == "repeated_failure"
    assert looper["breaker"]["evidence"]["step"] == "answer"
    assert looper["breaker"]["evidence"]["tier"] == "local"

    text = setup.cli("status")
    assert text.returncode == 0, text.stderr
    assert f"daemon pid {daemon.pid} is running" in text.stdout
    assert "daily 09:30" in text.stdout
    assert nightly["next_run_at"][:16].replace("T", " ") in text.stdout  # the "next run (UTC)" column
    assert "looper: breaker (repeated_failure)" in text.stdout

    # `supervisor resume` and "run now" from other processes reach the daemon through the ledger.
    resumed = setup.cli("resume", "looper")
    assert resumed.returncode == 0
    assert "looper resumed" in resumed.stdout
    with setup.ledger() as ledger:
        ledger.enqueue_command("looper", "run_now", "test")

    def looper_ran_again() -> bool:
        with setup.ledger() as ledger:
            return len(ledger.recent_runs("looper")) == 2 and ledger.recent_runs("looper")[0]["outcome"] != "running"

    wait_for(looper_ran_again, "the resumed looper to run again", daemon)
    assert stop(daemon) == 0, setup.output(daemon)


def test_recovery_leaves_the_snapshots_of_live_runs_alone(tmp_path: Path) -> None:
    import asyncio

    from supervisor.backends.scripted import ScriptedAnswer
    from supervisor.runtime.runtime import recover
    from tests.helpers import Tiers, make_harness

    harness = make_harness(
        tmp_path,
        """
        [agents.gone]
        goal = "Crashed long ago."
        workspace = "ws"
        [[agents.gone.steps]]
        name = "noop"
        run = "true"

        [agents.live]
        goal = "Answer 42."
        workspace = "ws"
        ladder = ["local"]
        attempts_per_tier = 1
        [[agents.live.steps]]
        name = "touch"
        run = "echo changed >> data.txt"
        [[agents.live.steps]]
        name = "answer"
        prompt = "Six times seven?"
        output = "answer"
        verify = [{ regex = "^42$" }]
        """,
        files={"data.txt": "original\n"},
        tiers=Tiers(local=lambda r: ScriptedAnswer("41", delay_s=0.5)),
    )
    runtime, _ = harness.runtime()
    # Run 1 was started by a process that has since died (a real child process that exits).
    code = "import sys; from pathlib import Path; from supervisor.ledger import Ledger; Ledger(Path(sys.argv[1])).start_run('gone', 'cli')"
    subprocess.run(
        [sys.executable, "-c", code, str(harness.home / "ledger.db")],
        check=True,
        timeout=TIMEOUT_S,
        env=dict(os.environ),
    )
    for _ in range(10):  # runs 2-11 came and went
        runtime.ledger.finish_run(runtime.ledger.start_run("gone", "cli"), "success")
    before = tree_digest(harness.workspace)

    async def scenario() -> str:
        task = asyncio.create_task(runtime.run_agent("live"))  # run 12, in flight
        while not runtime.ledger.events_after(0, kinds=["call_started"]):
            await asyncio.sleep(0.01)
        recover(runtime)  # what `supervisor run` / a daemon start does first
        result = await task
        return result.outcome

    assert asyncio.run(scenario()) == "exhausted"
    assert tree_digest(harness.workspace) == before
    assert runtime.ledger.run(1)["outcome"] == "crashed"  # type: ignore[index]


def test_an_approval_from_the_command_line_reaches_a_waiting_scheduled_run(setup: Setup) -> None:
    setup.config.write_text(
        PROVIDERS
        + textwrap.dedent(
            """
            [agents.nightly]
            goal = "Answer 42."
            workspace = "ws"
            schedule = "every 10m"
            attempts_per_tier = 1
            [[agents.nightly.steps]]
            name = "solve"
            prompt = "Six times seven?"
            writes = "answer.txt"
            verify = [{ regex = "^42$" }]
            """
        )
    )
    daemon = setup.start()

    def pending() -> list[Any]:
        with setup.ledger() as ledger:
            return ledger.approvals(agent="nightly")

    (approval,) = wait_for(pending, "the scheduled run to ask for the frontier", daemon)
    with setup.ledger() as ledger:
        assert ledger.agent("nightly")["state"] == "waiting_approval"  # type: ignore[index]
        assert [c["tier"] for c in ledger.calls()] == ["cheap", "local"]  # newest first; no frontier call
    listed = setup.cli("approvals")
    assert f"#{approval.id} [pending] nightly step 'solve' -> sim-frontier:sonnet" in listed.stdout

    done = setup.cli("approve", str(approval.id))
    assert done.returncode == 0, done.stderr

    def finished() -> dict[str, Any] | None:
        with setup.ledger() as ledger:
            runs = ledger.recent_runs("nightly")
            return runs[0] if runs and runs[0]["outcome"] != "running" else None

    run = wait_for(finished, "the waiting run to finish", daemon)
    assert run["outcome"] == "success"
    assert run["trigger"] == "schedule"
    with setup.ledger() as ledger:
        assert [c["tier"] for c in ledger.calls()] == ["frontier", "cheap", "local"]
        assert ledger.approval(approval.id).state == "consumed"  # type: ignore[union-attr]
    assert (setup.workspace / "answer.txt").read_text() == "42\n"
    assert stop(daemon) == 0, setup.output(daemon)


def test_the_documented_script_example_has_a_default(tmp_path: Path) -> None:
    from supervisor.backends import scripted
    from supervisor.backends.base import Message, Request

    doc = scripted.__doc__ or ""
    example = textwrap.dedent(doc.split("::", 1)[1])
    path = tmp_path / "script.toml"
    path.write_text(example)
    respond = scripted.load_script(path)
    request = Request(model="m", messages=(Message("user", "something else entirely"),), max_output_tokens=10)
    assert respond(request) == "I don't know."
