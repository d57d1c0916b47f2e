"""The Agent screen shows the built-in worker's turns as they happen: tool, arguments, result, tokens, cost."""

from __future__ import annotations

import json
from pathlib import Path

from supervisor.backends.base import Request
from supervisor.tui.screens.agent import AgentScreen
from tests.helpers import Tiers, make_harness
from tests.tui.helpers import hosted_app, log_text, settle, until

AGENT = """
[agents.fixer]
goal = "Keep greeting.txt friendly."
workspace = "ws"
attempts_per_tier = 1
[[agents.fixer.steps]]
name = "fix"
prompt = "Make greeting.txt say hello."
tools = ["read_file", "write_file", "run_command"]
commands = { check = "grep -q hello greeting.txt" }
max_turns = 5
verify = ["grep -q hello greeting.txt"]
"""

REPLIES = [
    {"tool": "read_file", "arguments": {"path": "greeting.txt"}},
    {"tool": "read_file", "arguments": {"path": "../secret.txt"}},
    {"tool": "write_file", "arguments": {"path": "greeting.txt", "content": "hello there\n"}},
    {"tool": "run_command", "arguments": {"name": "check"}},
    {"tool": "finish", "arguments": {"summary": "greeting fixed"}},
]


def scripted_worker(request: Request) -> str:
    """The local tier answers with the JSON-in-text protocol: one call per turn, by how many turns came before
    (the turns are small, so every past turn is still in the transcript in full)."""
    turns = sum(1 for m in request.messages if m.role == "assistant")
    return json.dumps(REPLIES[min(turns, len(REPLIES) - 1)])


async def test_the_agent_screen_shows_each_turn_live(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, AGENT, files={"greeting.txt": "go away\n"}, tiers=Tiers(local=scripted_worker))
    app, runtime, _ = hosted_app(harness)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, AgentScreen) and app.screen._live, what="the agent screen")
        await pilot.press("r")
        await until(pilot, lambda: "run 1 success" in log_text(app), what="the run's end in the log")
        live = log_text(app)
        # Leave and come back: the turns are drawn again from the ledger's events.
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, AgentScreen) and app.screen._live, what="the agent screen")
        await until(pilot, lambda: "turn 5/5" in log_text(app), what="the history")
        history = log_text(app)
    assert (harness.workspace / "greeting.txt").read_text() == "hello there\n"
    for shown in (live, history):
        text = " ".join(shown.split())  # the log pane wraps long lines
        assert "turn 1/5 read_file(path=greeting.txt) -> go away" in text
        assert "turn 2/5 read_file(path=../secret.txt) -> error: '../secret.txt' leads outside" in text
        assert "turn 3/5 write_file(path=greeting.txt, content=hello there) -> overwrote greeting.txt" in text
        assert "turn 4/5 run_command(name=check) -> [exit 0] $ grep -q hello greeting.txt" in text
        assert "turn 5/5 finish(summary=greeting fixed) -> finished: greeting fixed" in text
        assert "worker stopped after 5 turn(s) (finished)" in text
        assert " in / " in text
    await runtime.aclose()
