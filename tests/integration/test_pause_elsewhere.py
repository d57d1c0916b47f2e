"""A pause made in another process holds: a foreground ``supervisor run`` stops at its next attempt boundary.

Two real processes share one data dir: ``supervisor run worker`` (its gate blocks until the test releases it,
through a file the test controls) and ``supervisor pause worker``. The run must not write ``running`` over the
pause: it stops before its second attempt, exits 5 (paused), and the agent stays paused in the ledger and in
``supervisor status``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from supervisor.ledger import Ledger

TIMEOUT_S = 60

# The gate notes each attempt, then holds the attempt open until the test creates the release file, then fails
# (so, left alone, the run would go on to a second and third attempt).
# Each attempt's failure reads differently, so the runaway breaker's repeated-failure rule stays out of it.
GATE = """
import pathlib, sys, time
control = pathlib.Path(sys.argv[1])
with open(control / "attempts", "a") as f:
    f.write("attempt\\n")
n = len((control / "attempts").read_text().splitlines())
deadline = time.monotonic() + 120
while not (control / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.02)
print(f"attempt {n}: the answer is not good enough")
sys.exit(1)
"""


@dataclass
class Setup:
    tmp: Path
    home: Path
    config: Path
    control: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=dict(os.environ),
            check=False,
        )

    def attempts(self) -> int:
        path = self.control / "attempts"
        return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def setup(tmp_path: Path, supervisor_home: Path) -> Setup:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "data.txt").write_text("one\ntwo\n")
    control = tmp_path / "control"
    control.mkdir()
    gate = tmp_path / "gate.py"
    gate.write_text(GATE)
    (tmp_path / "local.toml").write_text('default = "a summary"\n')
    config = tmp_path / "supervisor.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [providers.sim-local]
            kind = "scripted"
            local = true
            simulated_as = "mlx:smollm2-135m"
            script = "local.toml"

            [tiers]
            local = ["sim-local:tiny"]

            [agents.worker]
            goal = "Summarize data.txt."
            workspace = "ws"
            ladder = ["local"]
            attempts_per_tier = 3

            [[agents.worker.steps]]
            name = "summarize"
            prompt = "Summarize data.txt."
            context = ["data.txt"]
            writes = "summary.txt"
            verify = [{{ cmd = {json.dumps(f"{sys.executable} {gate} {control}")} }}]
            """
        )
    )
    return Setup(tmp_path, supervisor_home, config, control)


def wait_for(predicate: Callable[[], Any], what: str, proc: subprocess.Popen[str]) -> None:
    """Poll until ``predicate`` holds (a deadline, not a fixed sleep); fail early if the run exited."""
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_pause_from_another_process_stops_a_foreground_run_at_the_next_attempt(setup: Setup) -> None:
    out = setup.tmp / "run.out"
    with open(out, "w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "worker", "--config", str(setup.config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ),
        )
        try:
            wait_for(lambda: setup.attempts() == 1, "the first attempt's gate to start", run)

            paused = setup.cli("pause", "worker")
            assert paused.returncode == 0, paused.stdout + paused.stderr
            (setup.control / "release").write_text("")  # the first attempt's gate now fails

            exit_code = run.wait(TIMEOUT_S)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait(TIMEOUT_S)
    output = out.read_text()

    assert exit_code == 5, output
    assert setup.attempts() == 1, f"the run went on to another attempt after the pause:\n{output}"
    with Ledger(setup.home / "ledger.db") as ledger:
        agent = ledger.agent("worker")
        assert agent is not None
        assert (agent["state"], agent["paused_by"]) == ("paused", "human")
        runs = ledger.recent_runs("worker")
        assert [r["outcome"] for r in runs] == ["paused"]
        assert len(ledger.calls(run_id=runs[0]["id"])) == 1
        states = [e.data["state"] for e in ledger.events_after(0, agent="worker", kinds=["agent_state"])]
        assert states[-1] == "paused"

    status = setup.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    agents = {a["name"]: a for a in json.loads(status.stdout)["agents"]}
    assert agents["worker"]["state"] == "paused"
