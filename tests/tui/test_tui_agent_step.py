"""The Agent screen shows an agent step's program as it runs: its start, its output line by line, and how it
ended with its calls, tokens and cost, live and again from the ledger's events."""

from __future__ import annotations

import sys
from pathlib import Path

from supervisor.gateway.server import run_gateway
from supervisor.tui.screens.agent import AgentScreen
from tests.helpers import Tiers, make_harness
from tests.tui.helpers import hosted_app, log_text, settle, until

PROGRAM = """
import os, pathlib, openai
print("reading greeting.txt", flush=True)
reply = openai.OpenAI().chat.completions.create(
    model=os.environ["SUPERVISOR_MODEL"], messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
)
pathlib.Path("greeting.txt").write_text(reply.choices[0].message.content + "\\n")
print("wrote greeting.txt", flush=True)
"""


async def test_the_agent_screen_shows_the_program_live(tmp_path: Path) -> None:
    script = tmp_path / "greeter.py"
    script.write_text(PROGRAM)
    agent = f"""
    [agents.greeter]
    goal = "Keep greeting.txt friendly."
    workspace = "ws"
    attempts_per_tier = 1
    ladder = ["local"]
    [[agents.greeter.steps]]
    name = "greet"
    agent = "{sys.executable} {script}"
    verify = ["grep -q hello greeting.txt"]
    """
    harness = make_harness(
        tmp_path, agent, files={"greeting.txt": "go away\n"}, tiers=Tiers(local=lambda r: "hello there")
    )
    app, runtime, _ = hosted_app(harness, gateway_factory=run_gateway)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, AgentScreen) and app.screen._live, what="the agent screen")
        await pilot.press("r")
        await until(pilot, lambda: "run 1 success" in log_text(app), timeout=60, what="the run's end in the log")
        live = log_text(app)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, AgentScreen) and app.screen._live, what="the agent screen")
        await until(pilot, lambda: "agent program exited 0" in log_text(app), what="the history")
        history = log_text(app)
    assert (harness.workspace / "greeting.txt").read_text() == "hello there\n"
    for shown in (live, history):
        text = " ".join(shown.split())
        assert "agent program at local, attempt 1 (pid" in text
        assert "│ reading greeting.txt" in text
        assert "│ wrote greeting.txt" in text
        assert "agent program exited 0 after" in text
        assert "1 call(s)" in text
        assert " in / " in text
        assert "gate cmd: grep -q hello greeting.txt passed" in text, text
    await runtime.aclose()
