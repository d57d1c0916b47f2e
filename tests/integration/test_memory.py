"""Fresh sessions and the bounded memory digest: 200 runs of one agent cost what its 2nd run cost.

Every run is a fresh session. What carries over lives in ``$SUPERVISOR_HOME/agents/<name>/``: ``digest.md``
(bounded by ``memory_tokens``, rewritten after each run without a model call), ``runs/<run_id>.md`` (the full
record, never sent to a model) and ``state.json``. Scripted tiers, a real ledger file, the runtime itself.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from supervisor.backends.base import Request
from supervisor.runtime.runtime import RunResult
from tests.helpers import Harness, Tiers, make_harness

RUNS = 200
MEMORY_TOKENS = 300

AGENT = f"""
[agents.mem]
goal = "Summarize notes.md into one line."
workspace = "ws"
ladder = ["local"]
attempts_per_tier = 1
memory_tokens = {MEMORY_TOKENS}

[[agents.mem.steps]]
name = "summarize"
prompt = "Summarize the notes."
context = ["notes.md"]
output = "summary"
verify = [{{ regex = "^ok run-" }}]
"""


def digest_tokens(text: str) -> int:
    """The issue's estimate: ceil(bytes / 3)."""
    return math.ceil(len(text.encode("utf-8")) / 3)


def prompt_tokens(harness: Harness, run_id: int) -> int:
    """Input tokens of the run's calls as the ledger recorded them (every prompt component)."""
    with harness.ledger() as ledger:
        row = ledger.query(
            "SELECT sum(input_uncached + cache_read + cache_write_5m + cache_write_1h), count(*) FROM calls WHERE run_id = ?",
            (run_id,),
        )[0]
    assert row[1] == 1, f"run {run_id} made {row[1]} calls"
    return int(row[0])


def test_two_hundred_runs_cost_what_the_second_run_cost(tmp_path: Path) -> None:
    # Odd runs fail the gate (an open failure the next session must see), even runs pass (the failure is
    # dropped). The 2nd and the 200th runs both start right after a failed run, so their prompts have the
    # same shape; only a growing session would make the 200th bigger.
    answers: list[str] = []

    def local(request: Request) -> str:
        number = len(answers) + 1
        answer = f"ok run-{number}" if number % 2 == 0 else f"nope run-{number}"
        answers.append(answer)
        return answer

    harness = make_harness(
        tmp_path, AGENT, files={"notes.md": "The deploy went fine; the cache was cold.\n"}, tiers=Tiers(local=local)
    )
    runtime, backends = harness.runtime()
    memory = runtime.memory("mem")
    results: list[RunResult] = []
    digests: list[str] = []

    async def scenario() -> None:
        for _ in range(RUNS):
            results.append(await runtime.run_agent("mem"))
            digests.append(memory.digest())

    asyncio.run(scenario())

    assert [r.outcome for r in results[:4]] == ["exhausted", "success", "exhausted", "success"]
    requests = backends["sim-local"].calls
    assert len(requests) == RUNS

    # The bound: the 200th run's input is within 5% of the 2nd run's.
    second, last = prompt_tokens(harness, results[1].run_id), prompt_tokens(harness, results[-1].run_id)
    assert abs(last - second) <= 0.05 * second, (second, last)
    # And it is flat all the way, not only at the two ends.
    after_failure = [prompt_tokens(harness, r.run_id) for r in results[1::2]]
    assert max(after_failure) <= 1.05 * second

    # digest.md stays under memory_tokens after every run.
    for number, text in enumerate(digests, start=1):
        assert text.startswith("# Memory digest for mem"), number
        assert digest_tokens(text) <= MEMORY_TOKENS, (number, digest_tokens(text))

    # Each request is a fresh session: one system and one user message, no earlier answers, no history.
    for number, request in enumerate(requests, start=1):
        assert [m.role for m in request.messages] == ["system", "user"], number
        text = "\n".join(m.content for m in request.messages)
        assert "notes.md" in text
        assert "The deploy went fine" in text
        for earlier in answers[: number - 1]:
            assert earlier not in text, (number, earlier)
        if number > 1:
            assert "Memory from earlier runs" in request.messages[1].content
            assert f"Run {results[number - 2].run_id} (" in request.messages[1].content  # the previous run's line
    assert "Memory from earlier runs" not in requests[0].messages[1].content

    # The full record of each run exists, and no request ever carried any of it.
    agent_dir = harness.home / "agents" / "mem"
    records = {r.run_id: agent_dir / "runs" / f"{r.run_id}.md" for r in results}
    for run_id, path in records.items():
        assert path.is_file(), path
        assert path.read_text().startswith(f"# Run {run_id} of mem")
    markers = ["## Events", "- trigger:", "run_started", "call_recorded"]
    for request in requests:
        text = "\n".join(m.content for m in request.messages)
        for marker in markers:
            assert marker not in text
    event_lines = [
        line
        for path in records.values()
        for line in path.read_text().splitlines()
        if line.startswith("- ") and "{" in line
    ]
    assert event_lines
    all_prompts = "\n".join(m.content for r in requests for m in r.messages)
    assert not [line for line in event_lines if line in all_prompts]

    # state.json holds the structured history (bounded too).
    state = json.loads((agent_dir / "state.json").read_text())
    assert state["runs"][-1]["run_id"] == results[-1].run_id
    assert len(state["runs"]) <= 50


def test_the_digest_carries_an_open_failure_until_the_step_passes(tmp_path: Path) -> None:
    answers = iter(["nope run-1", "nope run-2", "ok run-3", "ok run-4"])
    harness = make_harness(tmp_path, AGENT, files={"notes.md": "n\n"}, tiers=Tiers(local=lambda r: next(answers)))
    runtime, backends = harness.runtime()
    memory = runtime.memory("mem")

    async def scenario() -> list[str]:
        seen = []
        for _ in range(4):
            await runtime.run_agent("mem")
            seen.append(memory.digest())
        return seen

    after = asyncio.run(scenario())
    failing = after[0]
    assert "## Open failures" in failing
    assert "- summarize (run 1, local): regex: ^ok run- the answer does not match /^ok run-/" in failing
    assert "(run 2, local)" in after[1]  # still open, now from the latest failing run
    assert "## Open failures" not in after[2]  # the step passed: the failure is dropped
    assert "## Open failures" not in after[3]
    state = json.loads(memory.state_path.read_text())
    assert state["open_failures"] == {}

    # The next session after a failure is told about it; the session after the pass is not.
    prompts = [r.messages[1].content for r in backends["sim-local"].calls]
    assert "Open failures" in prompts[1]
    assert "Open failures" in prompts[2]
    assert "Open failures" not in prompts[3]


def test_the_digest_is_rewritten_without_a_model_call(tmp_path: Path) -> None:
    harness = make_harness(tmp_path, AGENT, files={"notes.md": "n\n"}, tiers=Tiers(local=lambda r: "ok run-1"))
    runtime, backends = harness.runtime()
    result = asyncio.run(runtime.run_agent("mem"))
    assert result.outcome == "success"
    assert len(backends["sim-local"].calls) == 1  # the step's one call, nothing for the digest
    assert result.calls == 1
    written = runtime.ledger.events_after(0, kinds=["digest_written"])
    assert len(written) == 1
    assert written[0].data["tokens"] == digest_tokens(runtime.memory("mem").digest())
    assert written[0].data["tokens"] <= MEMORY_TOKENS
