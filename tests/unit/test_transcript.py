"""The worker's lean transcript: the newest turn in full, older ones elided to a line, a bound that holds."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from supervisor.backends.base import Message, ToolCall, estimate_tokens
from supervisor.config import TOOL_NAMES, CommandGate
from supervisor.runtime.tools import tool_specs
from supervisor.runtime.transcript import (
    MAX_CALLS_PER_TURN,
    ToolOutput,
    Transcript,
    TranscriptPolicy,
    Turn,
    replayable,
)

SPECS = tool_specs(TOOL_NAMES, {"test": CommandGate(cmd="pytest -q")})
HEAD = (
    Message("system", "You are one step of an unattended agent.\nGoal: fix it.", cache_breakpoint=True),
    Message("user", "Task (fix): make `pytest -q` pass."),
)


def big_turn(number: int, rng: random.Random, calls: int = 1) -> Turn:
    outputs = []
    for k in range(calls):
        size = rng.randint(2_000, 30_000)
        line = f"line {number}.{k} " + "é" * 20 + "\n"  # multi-byte text: bytes, not characters, are what count
        outputs.append(
            ToolOutput(
                ToolCall(f"call_{number}_{k}", "read_file", json.dumps({"path": f"src/m{number}_{k}.py"})),
                (line * (size // len(line.encode())))[: size // 2],
            )
        )
    content = "z" * rng.randint(100, 3_000)
    outputs.append(
        ToolOutput(
            ToolCall(f"w{number}", "write_file", json.dumps({"path": f"out/{number}.py", "content": content})), "ok"
        )
    )
    return Turn(number, "Reading the next module." * rng.randint(0, 4), tuple(outputs))


@pytest.mark.parametrize("protocol", ["native", "text"])
def test_thirty_turns_with_large_outputs_stay_under_the_stated_bound(protocol: str) -> None:
    rng = random.Random(7)
    policy = TranscriptPolicy(budget_tokens=3_000, result_bytes=33_000, said_bytes=4_096)
    lean = Transcript(HEAD, protocol, SPECS, policy)  # type: ignore[arg-type]
    naive = Transcript(HEAD, protocol, SPECS, TranscriptPolicy(budget_tokens=10**12, result_bytes=10**9))  # type: ignore[arg-type]
    tools = SPECS if protocol == "native" else ()
    lean_sizes, naive_sizes = [], []
    for number in range(1, 31):
        lean_sizes.append(estimate_tokens(lean.messages(turns_left=31 - number), tools))
        naive_sizes.append(estimate_tokens(naive.messages(), tools))
        turn = big_turn(number, rng, calls=1 if protocol == "text" else rng.randint(1, 3))
        lean.add(turn)
        naive.add(turn)
    bound = lean.bound()
    assert max(lean_sizes) <= bound, (max(lean_sizes), bound)
    # The bound does not grow with the turns, and the lean input does not either once the budget is in use:
    # from turn 5 on it stays within the bound, while the naive transcript re-sends everything.
    assert lean.bound() == bound
    assert naive_sizes[-1] > 10 * max(lean_sizes[4:])
    assert all(b >= a for a, b in itertools.pairwise(naive_sizes))
    print(f"\n{protocol}: lean {lean_sizes[4]}..{max(lean_sizes)} (bound {bound}); naive at turn 30 {naive_sizes[-1]}")


def test_the_newest_turn_is_full_and_older_ones_are_one_line_each() -> None:
    t = Transcript(HEAD, "native", SPECS, TranscriptPolicy(budget_tokens=0, elided_turns=2))
    for n in range(1, 6):
        call = ToolCall(f"c{n}", "read_file", json.dumps({"path": f"f{n}.py"}))
        t.add(Turn(n, "", (ToolOutput(call, f"first line of f{n}\n" + "body\n" * 500),)))
    messages = t.messages()
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[3].content.startswith("first line of f5\nbody")  # newest: verbatim
    summary = messages[1].content.split("Earlier turns, summarized", 1)[1]
    assert "- turns 1-2: read_file x2" in summary  # folded beyond elided_turns
    assert "- turn 3: read_file(path=f3.py) -> first line of f3" in summary
    assert "- turn 4: read_file(path=f4.py) -> first line of f4" in summary
    assert "body" not in summary


def test_older_turns_are_kept_in_full_within_the_budget() -> None:
    t = Transcript(HEAD, "text", SPECS, TranscriptPolicy(budget_tokens=200))
    for n in range(1, 5):
        call = ToolCall(f"call_{n}", "read_file", json.dumps({"path": f"f{n}.py"}))
        t.add(
            Turn(
                n, json.dumps({"tool": "read_file", "arguments": {"path": f"f{n}.py"}}), (ToolOutput(call, "x" * 150),)
            )
        )
    messages = t.messages()
    # each full turn is ~70 tokens: two older ones fit in 200, with the newest; turn 1 is elided
    assert [m.role for m in messages] == ["system", "user", *["assistant", "user"] * 3]
    assert "- turn 1: read_file(path=f1.py) -> " in messages[1].content
    assert messages[-1].content == "Result of read_file:\n" + "x" * 150


def test_malformed_calls_are_replayed_with_empty_arguments_and_safe_ids() -> None:
    assert replayable(ToolCall("call_ok", "edit_file", '{"path": "a.py", "old": '), 3, 0).arguments == "{}"
    assert replayable(ToolCall("call_ok", "edit_file", "[1, 2]"), 3, 0).arguments == "{}"
    odd = replayable(ToolCall("id with spaces/" + "x" * 100, "n" * 200, "{}"), 3, 1)
    assert odd.id == "call_3_1"
    assert len(odd.name.encode()) == 64


def test_a_huge_reply_is_shown_shortened_and_results_stay() -> None:
    t = Transcript(HEAD, "native", SPECS, TranscriptPolicy(said_bytes=1_000))
    call = ToolCall("c1", "write_file", json.dumps({"path": "a.py", "content": "y" * 50_000}))
    t.add(Turn(1, "Writing it all.", (ToolOutput(call, "created a.py: 50,000 bytes, 1 lines"),)))
    assistant, tool, note = t.messages()[2:]
    assert assistant.tool_calls[0].arguments == "{}"
    assert tool.content.startswith("created a.py")
    assert "shown shortened" in note.content
    assert estimate_tokens(t.messages()) < 1_000


def test_the_nudge_says_how_many_turns_are_left() -> None:
    t = Transcript(HEAD, "native", SPECS)
    t.add(Turn(1, "", (ToolOutput(ToolCall("c1", "read_file", '{"path": "a.py"}'), "x = 1\n"),)))
    assert t.messages(turns_left=1)[-1] == Message("user", "1 turn left: make your last change and call finish.")
    assert t.messages(turns_left=5)[-1].role == "tool"


def test_calls_per_turn_are_bounded_in_the_stated_bound() -> None:
    t = Transcript(HEAD, "native", SPECS, TranscriptPolicy(budget_tokens=0))
    calls = tuple(
        ToolOutput(ToolCall(f"c{k}", "read_file", json.dumps({"path": "a.py"})), "r" * 33_000)
        for k in range(MAX_CALLS_PER_TURN)
    )
    t.add(Turn(1, "t" * 4_000, calls))
    assert estimate_tokens(t.messages(turns_left=1), SPECS) <= t.bound()
