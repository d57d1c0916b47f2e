"""The embedded SmolLM2 runs a tool step for real, through the JSON-in-text protocol, on the CPU.

It is a 135M-parameter model: it may well fail the gate. Whatever it does is recorded turn by turn; when the
gate fails, the workspace is put back byte for byte and the step escalates to a cheap tier (a loopback fake
speaking the OpenAI wire with native tool calls) that fixes it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from supervisor.runtime.events import Escalated, TurnFinished, WorkerFinished
from tests.fakes.base import RecordedRequest, ToolUse, tool_reply
from tests.fakes.openai import OpenAIFake
from tests.helpers import tree_digest
from tests.integration.test_worker import CALC, FIXED_UTIL, project, run

# About a minute on a quiet 2-core CPU (two short turns of a 135M model); far longer on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

AGENT = """
[agents.fixer]
goal = "Keep the calculator's tests passing."
workspace = "ws"
frontier = "never"
attempts_per_tier = 1
ladder = ["local", "cheap"]

[[agents.fixer.steps]]
name = "fix"
prompt = "Make `python3 test_calc.py` pass: util.py doubles wrong and calc.py adds 1 too many."
tools = ["read_file", "edit_file", "write_file"]  # few tools: a short prompt for a slow CPU
max_turns = 2
max_output_tokens = 32
timeout_s = 600
verify = ["python3 test_calc.py"]
"""


async def test_smollm2_runs_a_tool_step_then_the_step_escalates_from_a_restored_workspace(
    tmp_path: Path, embedded_gguf: Path
) -> None:
    with OpenAIFake(dialect="deepseek", models=("deepseek-flash",)) as cheap:
        providers = (
            f'[providers.mlx]\nkind = "mlx"\nlocal = true\nmodels = {{ "smollm2-135m" = "{embedded_gguf}" }}\n'
            f'[providers.deepseek]\nkind = "openai_compat"\nbase_url = "{cheap.url}"\n'
            'api_key_env = "DEEPSEEK_API_KEY"\n'
        )
        p = project(tmp_path, providers, 'local = ["mlx:smollm2-135m"]\ncheap = ["deepseek:deepseek-flash"]\n', AGENT)
        original = tree_digest(p.workspace)
        seen: list[dict[str, str]] = []  # the workspace as the cheap tier finds it, at its first turn
        replies = [
            tool_reply(ToolUse("write_file", {"path": "util.py", "content": FIXED_UTIL}), input_tokens=500),
            tool_reply(ToolUse("edit_file", {"path": "calc.py", "old": " + 1\n", "new": "\n"}), input_tokens=600),
        ]  # max_turns = 2: the loop ends after these two, and the gate decides

        def respond(_req: RecordedRequest) -> Any:
            seen.append(tree_digest(p.workspace))
            return replies[min(len(seen), len(replies)) - 1]

        cheap.responder = respond

        result, events, runtime = await run(p)

    local_turns = [e for e in events if isinstance(e, TurnFinished) and e.tier == "local"]
    rows = runtime.ledger.query(
        "SELECT turn, provider, input_uncached, output, cost_micros, priced, compute_s FROM calls "
        "WHERE tier = 'local' ORDER BY id"
    )
    # SmolLM2 ran for real: one ledger call per turn, exact usage from its own tokenizer, $0, local compute time.
    assert 1 <= len(rows) <= 2
    assert [r["turn"] for r in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        assert row["provider"] == "mlx"
        assert row["input_uncached"] > 200
        assert 1 <= row["output"] <= 32
        assert (row["cost_micros"], row["priced"]) == (0, 1)
        assert row["compute_s"] > 0
    assert [t.turn for t in local_turns] == [r["turn"] for r in rows]
    assert all(t.protocol == "text" for t in local_turns)
    # Each turn either made a call or was told, strictly, why its reply was not one: nothing is guessed.
    for turn in local_turns:
        assert turn.tools or turn.note.startswith(("Your reply was not a valid tool call", "Your reply hit"))
    [local_end] = [e for e in events if isinstance(e, WorkerFinished) and e.tier == "local"]
    summary = [f"turn {t.turn}: {t.tools or t.note[:120]}" for t in local_turns]
    print(f"\nSmolLM2 worker: {local_end.end} after {local_end.turns} turn(s); {summary}")

    if result.tier_reached == "local":  # SmolLM2 fixed both files: possible, not expected
        assert result.outcome == "success"
        assert not seen
        return
    assert result.outcome == "success", result.reason
    assert result.tier_reached == "cheap"
    assert any(isinstance(e, Escalated) and (e.from_tier, e.to_tier) == ("local", "cheap") for e in events)
    assert seen[0] == original  # SmolLM2's attempt was undone byte for byte before the cheap tier started
    assert (p.workspace / "util.py").read_text() == FIXED_UTIL
    assert (p.workspace / "calc.py").read_text() == CALC.replace(" + 1", "")
    assert os.path.exists(p.workspace / "test_calc.py")
