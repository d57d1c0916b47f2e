"""The built-in worker end to end: real runtime, real ledger, real gates, loopback fakes speaking each wire.

A model step with ``tools`` runs as a loop of turns. These tests drive that loop with scripted tool calls over
the real Ollama NDJSON, OpenAI SSE and Anthropic SSE wires and check what the ledger, the events, the workspace
and the request bodies say.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.clock import parse_iso
from supervisor.config import load_config
from supervisor.cost import cost_of
from supervisor.ledger import Ledger
from supervisor.runtime.events import Event, TurnFinished, WorkerFinished
from supervisor.runtime.runtime import RunResult, Runtime
from supervisor.secrets import Redactor
from supervisor.usage import Usage
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import FakeServer, Reply, ToolUse, tool_reply
from tests.fakes.ollama import OllamaFake
from tests.fakes.openai import OpenAIFake
from tests.helpers import tree_digest

KEYS = {"DEEPSEEK_API_KEY": "sk-test-worker-deepseek", "ANTHROPIC_API_KEY": "sk-ant-test-worker"}
TOOLS = ["read_file", "list_files", "write_file", "edit_file", "run_command", "finish"]

CALC = "from util import double\n\n\ndef quadruple(x):\n    return double(x) + double(x) + 1\n"
UTIL = "def double(x):\n    return x * 3\n"
TEST = textwrap.dedent(
    """\
    from calc import quadruple
    from util import double

    assert double(2) == 4, f"double(2) = {double(2)}"
    assert quadruple(3) == 12, f"quadruple(3) = {quadruple(3)}"
    print("ok")
    """
)
FILES = {"calc.py": CALC, "util.py": UTIL, "test_calc.py": TEST}
FIXED_UTIL = "def double(x):\n    return x * 2\n"


@dataclass
class Wire:
    """One provider wire: how to start its fake, configure it, and read tool results out of its bodies."""

    name: str
    make: Callable[[], FakeServer]
    provider_toml: Callable[[str], str]
    model: str
    tier: str

    def tool_names(self, body: dict[str, Any]) -> list[str]:
        if self.name == "anthropic":
            return [t["name"] for t in body["tools"]]
        return [t["function"]["name"] for t in body["tools"]]

    def tool_results(self, body: dict[str, Any]) -> list[str]:
        if self.name == "anthropic":
            out = []
            for message in body["messages"]:
                if message["role"] == "user" and isinstance(message["content"], list):
                    for block in message["content"]:
                        if block.get("type") == "tool_result":
                            content = block["content"]
                            out.append(content if isinstance(content, str) else "".join(b["text"] for b in content))
            return out
        return [m["content"] for m in body["messages"] if m["role"] == "tool"]


WIRES = [
    Wire(
        "ollama",
        lambda: OllamaFake(models=("qwen3:4b",)),
        lambda url: f'[providers.ollama]\nkind = "ollama"\nhost = "{url}"\nlocal = true\n',
        "ollama:qwen3:4b",
        "local",
    ),
    Wire(
        "openai",
        lambda: OpenAIFake(dialect="deepseek", models=("deepseek-flash",)),
        lambda url: (
            f'[providers.deepseek]\nkind = "openai_compat"\nbase_url = "{url}"\napi_key_env = "DEEPSEEK_API_KEY"\n'
        ),
        "deepseek:deepseek-flash",
        "cheap",
    ),
    Wire(
        "anthropic",
        lambda: AnthropicFake(models=("claude-haiku-5-5",)),
        lambda url: (
            f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{url}"\napi_key_env = "ANTHROPIC_API_KEY"\n'
        ),
        "anthropic:claude-haiku-5-5",
        "cheap",
    ),
]


@dataclass
class Project:
    config_path: Path
    workspace: Path
    home: Path
    environ: dict[str, str]

    def runtime(self) -> Runtime:
        config = load_config(self.config_path, self.environ, required=True)
        ledger = Ledger(self.home / "ledger.db", redactor=Redactor.from_environ(self.environ))
        return Runtime(config, load_catalog(default_catalog_dirs()), ledger, environ=self.environ, home=self.home)


def project(tmp_path: Path, providers: str, tiers: str, agent: str, files: dict[str, str] | None = None) -> Project:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    for rel, text in (files if files is not None else FILES).items():
        path = workspace / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config = tmp_path / "supervisor.toml"
    config.write_text(
        textwrap.dedent(providers) + "\n[tiers]\n" + textwrap.dedent(tiers) + "\n" + textwrap.dedent(agent)
    )
    home = Path(os.environ["SUPERVISOR_HOME"])
    return Project(config, workspace, home, {**os.environ, **KEYS})


def fix_agent(ladder: str, *, max_turns: int = 12, extra: str = "") -> str:
    return f"""
    [agents.fixer]
    goal = "Keep the calculator's tests passing."
    workspace = "ws"
    frontier = "never"
    attempts_per_tier = 1
    ladder = {ladder}
    {extra}

    [[agents.fixer.steps]]
    name = "fix"
    prompt = "Make `python3 test_calc.py` pass: the bug is spread over calc.py and util.py."
    tools = ["read_file", "list_files", "write_file", "edit_file", "run_command", "finish"]
    commands = {{ test = "python3 test_calc.py" }}
    max_turns = {max_turns}
    max_output_tokens = 300
    verify = ["python3 test_calc.py"]
    """


async def run(p: Project) -> tuple[RunResult, list[Event], Runtime]:
    runtime = p.runtime()
    events: list[Event] = []
    runtime.bus.subscribe(events.append)
    try:
        result = await runtime.run_agent("fixer")
    finally:
        await runtime.aclose()
    return result, events, runtime


def turn_rows(runtime: Runtime, step: str = "fix") -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in runtime.ledger.query(
            "SELECT agent, run_id, step, attempt, turn, tier, model, input_uncached, cache_read, output, "
            "cost_micros, priced, prompt_tokens_est, started_at FROM calls WHERE step = ? ORDER BY id",
            (step,),
        )
    ]


def script_two_file_fix(fake: FakeServer) -> list[tuple[int, int]]:
    """The six turns of a correct fix; returns the (input, output) tokens each reply reports."""
    usage = [(300, 12), (420, 30), (610, 40), (700, 35), (760, 9), (840, 14)]
    calls = [
        (ToolUse("list_files", {"glob": "*.py"}),),
        (ToolUse("read_file", {"path": "calc.py"}), ToolUse("read_file", {"path": "util.py"})),
        (
            ToolUse(
                "edit_file", {"path": "calc.py", "old": "double(x) + double(x) + 1", "new": "double(x) + double(x)"}
            ),
        ),
        (ToolUse("write_file", {"path": "util.py", "content": FIXED_UTIL}),),
        (ToolUse("run_command", {"name": "test"}),),
        (ToolUse("finish", {"summary": "double doubles; quadruple adds no 1"}),),
    ]
    texts = ["Let me look around.", "", "", "", "", ""]
    for (inp, out), turn_calls, text in zip(usage, calls, texts, strict=True):
        fake.enqueue(tool_reply(*turn_calls, text=text, input_tokens=inp, output_tokens=out))
    return usage


# ==========================================================================================================
# A two-file fix over each wire


@pytest.fixture(params=WIRES, ids=[w.name for w in WIRES])
def wire(request: pytest.FixtureRequest) -> Iterator[tuple[Wire, FakeServer]]:
    spec: Wire = request.param
    with spec.make() as fake:
        yield spec, fake


async def test_a_two_file_fix_over_each_wire_with_exact_usage_per_turn(
    tmp_path: Path, wire: tuple[Wire, FakeServer]
) -> None:
    spec, fake = wire
    p = project(
        tmp_path, spec.provider_toml(fake.url), f'{spec.tier} = ["{spec.model}"]\n', fix_agent(f'["{spec.tier}"]')
    )
    usage = script_two_file_fix(fake)

    result, events, runtime = await run(p)

    assert result.outcome == "success", result.reason
    assert (p.workspace / "util.py").read_text() == FIXED_UTIL
    assert (p.workspace / "calc.py").read_text() == CALC.replace(" + 1", "")
    gate = subprocess.run([sys.executable, "test_calc.py"], cwd=p.workspace, capture_output=True, check=False)
    assert gate.returncode == 0

    # Every turn is one ledger call of this agent, run, step and attempt, with the usage the provider reported.
    rows = turn_rows(runtime)
    assert [r["turn"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {(r["agent"], r["run_id"], r["attempt"], r["tier"]) for r in rows} == {
        ("fixer", result.run_id, 1, spec.tier)
    }
    assert [(r["input_uncached"], r["output"]) for r in rows] == usage
    catalog = load_catalog(default_catalog_dirs())
    model = catalog.get(spec.model)
    assert model is not None
    for row in rows:
        assert row["priced"] == 1
        usage_row = Usage(row["input_uncached"], row["cache_read"] or 0, 0, 0, row["output"], 0)
        expected = cost_of(usage_row, model, parse_iso(row["started_at"]))
        assert row["cost_micros"] == expected.total_micros
    assert result.cost_micros == sum(r["cost_micros"] for r in rows)

    # What went over the wire: the six tools every turn, the results of the previous turn's calls.
    bodies = fake.model_bodies()
    assert len(bodies) == 6
    assert all(spec.tool_names(b) == TOOLS for b in bodies)
    results = spec.tool_results(bodies[2])
    assert CALC in results
    assert UTIL in results
    assert any("[exit 0]" in r and "ok" in r for r in spec.tool_results(bodies[5]))

    turns = [e for e in events if isinstance(e, TurnFinished)]
    assert [t.turn for t in turns] == [1, 2, 3, 4, 5, 6]
    assert [[c["tool"] for c in t.tools] for t in turns] == [
        ["list_files"],
        ["read_file", "read_file"],
        ["edit_file"],
        ["write_file"],
        ["run_command"],
        ["finish"],
    ]
    assert turns[0].protocol == "native"
    assert [(t.input_tokens, t.output_tokens) for t in turns] == usage
    [finished] = [e for e in events if isinstance(e, WorkerFinished)]
    assert finished.end == "finished"
    assert finished.turns == 6
    assert sorted(finished.files_changed) == ["calc.py", "util.py"]


# ==========================================================================================================
# Refusals and bounds


@pytest.fixture
def openai_fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(dialect="deepseek", models=("deepseek-flash",)) as fake:
        yield fake  # type: ignore[misc]


def deepseek(fake: FakeServer) -> str:
    return WIRES[1].provider_toml(fake.url)


async def test_escapes_bad_calls_and_a_model_that_never_finishes_are_refused_bounded_and_recorded(
    tmp_path: Path, openai_fake: OpenAIFake
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("launch codes\n")
    p = project(
        tmp_path, deepseek(openai_fake), 'cheap = ["deepseek:deepseek-flash"]\n', fix_agent('["cheap"]', max_turns=9)
    )
    (p.workspace / "link_out").symlink_to(outside / "secret.txt")
    before_ws, before_out = tree_digest(p.workspace), tree_digest(outside)
    for call in [
        ToolUse("read_file", {"path": "/etc/passwd"}),
        ToolUse("read_file", {"path": "../outside/secret.txt"}),
        ToolUse("write_file", {"path": "link_out", "content": "pwned"}),
        ToolUse("write_file", {"path": "huge.txt", "content": "z" * 200_000}),
        ToolUse("run_command", {"name": "rm -rf ../outside"}),
        ToolUse("edit_file", '{"path": "calc.py", "old": "+ 1", '),  # arguments cut short: not JSON
        ToolUse("delete_file", {"path": "calc.py"}),
        ToolUse("write_file", {"path": "calc.py", "content": "broken = \n"}),  # allowed, but the gate fails
        ToolUse("list_files", {"glob": "**/*"}),  # ... and it never calls finish
    ]:
        openai_fake.enqueue(tool_reply(call, input_tokens=200, output_tokens=20))

    result, events, runtime = await run(p)

    assert result.outcome == "exhausted"
    assert tree_digest(outside) == before_out
    assert tree_digest(p.workspace) == before_ws  # the allowed write was undone when the gate failed
    assert not Path("/etc/passwd-pwned").exists()
    turns = [e for e in events if isinstance(e, TurnFinished)]
    assert len(turns) == 9  # max_turns: the tenth turn is never sent
    assert len(openai_fake.model_bodies()) == 9
    errors = [t.tools[0]["result"] for t in turns[:7]]
    assert all(t.tools[0]["error"] for t in turns[:7])
    expected = [
        "absolute path",
        "'..' is not allowed",
        "through a symlink",
        "over the 128,000-byte write limit",
        "is not an allowed command",
        "not valid JSON",
        "there is no tool 'delete_file'",
    ]
    for text, want in zip(errors, expected, strict=True):
        assert want in text, (want, text)
    assert not turns[7].tools[0]["error"]
    [finished] = [e for e in events if isinstance(e, WorkerFinished)]
    assert finished.end == "max_turns"
    # The malformed call is replayed with arguments "{}" and its error as the result (the next turn's body).
    body = openai_fake.model_bodies()[6]
    [replayed] = [c for m in body["messages"] if m["role"] == "assistant" for c in m.get("tool_calls", [])][-1:]
    assert replayed["function"] == {"name": "edit_file", "arguments": "{}"}
    # Every refusal is in the ledger's events, and the step's failure says how the worker stopped.
    recorded = runtime.ledger.events_after(0, kinds=["turn_finished"])
    assert sum(1 for e in recorded for c in e.data["tools"] if c["error"]) == 7
    assert "max_turns (9) reached without finish" in result.steps[0].failure


async def test_a_cap_reached_in_turn_n_sends_no_turn_n_plus_1_and_defers_naming_it(
    tmp_path: Path, openai_fake: OpenAIFake
) -> None:
    # Each turn reserves its worst case (~$0.00075 for ~1,300 prompt tokens and 300 output at the highest rates)
    # and settles at ~$0.00016: a $0.00105 run cap lets two turns through and stops the third before it is sent.
    p = project(
        tmp_path,
        deepseek(openai_fake),
        'cheap = ["deepseek:deepseek-flash"]\n',
        fix_agent('["cheap"]', extra="caps = { run_usd = 0.00105 }"),
    )
    openai_fake.responder = lambda _req: tool_reply(
        ToolUse("read_file", {"path": "calc.py"}), input_tokens=900, output_tokens=40
    )
    before = tree_digest(p.workspace)

    result, events, runtime = await run(p)

    assert result.outcome == "deferred"
    assert result.exit_code == 3
    assert "run_usd" in result.reason
    sent = len(openai_fake.model_bodies())
    rows = turn_rows(runtime)
    assert sent >= 2
    assert [r["turn"] for r in rows] == list(range(1, sent + 1))  # no call row without a request, none after
    [finished] = [e for e in events if isinstance(e, WorkerFinished)]
    assert finished.end == "deferred"
    assert finished.turns == sent
    assert "run_usd" in finished.summary
    assert runtime.ledger.held_reservations() == []
    assert tree_digest(p.workspace) == before


async def test_input_per_turn_stays_under_the_stated_bound_over_30_turns_of_large_outputs(
    tmp_path: Path, openai_fake: OpenAIFake
) -> None:
    big = {f"mod{i}.py": "".join(f"value_{i}_{k} = {k * i}  # {'x' * 40}\n" for k in range(400)) for i in range(6)}
    p = project(
        tmp_path,
        deepseek(openai_fake),
        'cheap = ["deepseek:deepseek-flash"]\n',
        fix_agent('["cheap"]', max_turns=30).replace(
            '"python3 test_calc.py" }', '"python3 test_calc.py", dump = "cat mod*.py" }'
        ),
        files={**FILES, **big},
    )
    script = []
    for turn in range(30):
        if turn % 3 == 2:
            script.append(ToolUse("run_command", {"name": "dump"}))
        else:
            script.append(ToolUse("read_file", {"path": f"mod{turn % 6}.py"}))
    for call in script:
        openai_fake.enqueue(tool_reply(call, input_tokens=1, output_tokens=20))

    result, events, runtime = await run(p)

    rows = turn_rows(runtime)
    assert [r["turn"] for r in rows] == list(range(1, 31))
    sent = [r["prompt_tokens_est"] for r in rows]
    # What we estimate is what went over the wire: recount the bodies the fake received.
    [finished] = [e for e in events if isinstance(e, WorkerFinished)]
    bound = finished.input_bound_tokens
    assert bound is not None
    assert max(sent) <= bound
    # The naive loop re-sends every turn in full: the head plus each turn's full form, as it went over the wire
    # when it was the newest turn (the assistant call and its result, the last two messages of the next body).
    bodies = openai_fake.model_bodies()
    head = len(json.dumps(bodies[0]["messages"])) // 3
    naive = [head]
    for body in bodies[1:]:
        naive.append(naive[-1] + len(json.dumps(body["messages"][-2:])) // 3)
    # No growth: the last ten turns are no larger on average than turns 5-14, while the naive transcript grows
    # by every ~8,000-token file it read.
    early, late = sent[4:14], sent[20:]
    assert sum(late) / len(late) <= 1.1 * sum(early) / len(early), sent
    assert naive[-1] > 10 * max(sent)
    assert result.outcome == "exhausted"  # never called finish; the gate (the original bug) fails
    assert runtime.ledger.query("SELECT state FROM agents WHERE name = 'fixer'")[0][0] != "paused"
    print(f"\ninput per turn (estimated): {sent}; bound {bound}; naive {naive[::5]}")


async def test_a_native_answer_without_a_tool_call_ends_the_loop_and_the_gates_decide(
    tmp_path: Path, openai_fake: OpenAIFake
) -> None:
    p = project(tmp_path, deepseek(openai_fake), 'cheap = ["deepseek:deepseek-flash"]\n', fix_agent('["cheap"]'))
    openai_fake.enqueue(
        tool_reply(ToolUse("write_file", {"path": "util.py", "content": FIXED_UTIL})),
        tool_reply(ToolUse("edit_file", {"path": "calc.py", "old": " + 1", "new": ""})),
        Reply(text="Both files are fixed.", input_tokens=50, output_tokens=6),
    )

    result, events, _runtime = await run(p)

    assert result.outcome == "success"
    [finished] = [e for e in events if isinstance(e, WorkerFinished)]
    assert finished.end == "answered"
    assert finished.summary == "Both files are fixed."
    assert len(openai_fake.model_bodies()) == 3


async def test_a_tier_that_cannot_use_tools_is_skipped_for_tool_steps(tmp_path: Path, openai_fake: OpenAIFake) -> None:
    with OllamaFake(models=("qwen3:4b",)) as ollama:
        p = project(
            tmp_path,
            WIRES[0].provider_toml(ollama.url) + deepseek(openai_fake),
            'local = ["ollama:qwen3:4b"]\ncheap = ["deepseek:deepseek-flash"]\nno_tools = ["local"]\n',
            fix_agent('["local", "cheap"]'),
        )
        script_two_file_fix(openai_fake)
        result, events, _runtime = await run(p)
        assert not ollama.model_requests()
    assert result.outcome == "success"
    skipped = [e.data() for e in events if e.kind == "tier_skipped"]
    assert skipped == [{"step": "fix", "tier": "local", "reason": "ollama:qwen3:4b: cannot use tools (tiers.no_tools)"}]


async def test_a_local_model_that_cannot_be_loaded_is_skipped_for_a_tool_step(
    tmp_path: Path, openai_fake: OpenAIFake
) -> None:
    """A local GGUF file that is there but cannot be read: nothing is sent to it, the loop is not started, the
    cheap tier serves the step (as for a single-call step), and the run does not crash."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 60)
    p = project(
        tmp_path,
        f'[providers.mlx]\nkind = "mlx"\nlocal = true\nmodels = {{ broken = "{broken}" }}\n' + deepseek(openai_fake),
        'local = ["mlx:broken"]\ncheap = ["deepseek:deepseek-flash"]\n',
        fix_agent('["local", "cheap"]'),
    )
    script_two_file_fix(openai_fake)
    result, events, runtime = await run(p)
    assert result.outcome == "success", result
    assert (p.workspace / "util.py").read_text() == FIXED_UTIL
    local = [e.data() for e in events if e.kind == "worker_finished" and e.data()["tier"] == "local"]
    assert [(d["end"], d["turns"]) for d in local] == [("not_sent", 0)], local
    assert local[0]["summary"].startswith("mlx:broken unavailable: ")
    assert [r["tier"] for r in turn_rows(runtime)] == ["cheap"] * 6


# ==========================================================================================================
# The run record and --json


def test_run_json_and_the_run_record_include_the_turns(tmp_path: Path, openai_fake: OpenAIFake) -> None:
    p = project(tmp_path, deepseek(openai_fake), 'cheap = ["deepseek:deepseek-flash"]\n', fix_agent('["cheap"]'))
    script_two_file_fix(openai_fake)
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", "fixer", "--json", "--config", str(p.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=p.environ,
        check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    turns = [line for line in lines if line["event"] == "turn_finished"]
    assert [t["turn"] for t in turns] == [1, 2, 3, 4, 5, 6]
    assert turns[1]["tools"][0] == {
        "tool": "read_file",
        "arguments": "path=calc.py",
        "result": CALC,
        "error": False,
    }
    assert turns[0]["input_tokens"] == 300
    assert turns[0]["cost_micros"] is not None
    assert KEYS["DEEPSEEK_API_KEY"] not in done.stdout
    [record] = (p.home / "agents" / "fixer" / "runs").glob("*.md")
    text = record.read_text()
    assert "## Turns" in text
    assert "turn 2/12" in text
    assert "read_file(path=calc.py)" in text
    assert "run_command(name=test)" in text


# ==========================================================================================================
# Planner mode


PLANNER = """
[agents.planner]
goal = "Make python3 test_calc.py pass."
workspace = "ws"
attempts_per_tier = 1
ladder = ["local", "cheap"]
tools = ["python3 test_calc.py"]
commands = { test = "python3 test_calc.py" }
verify = ["python3 test_calc.py"]
"""


def planned(commands: list[str]) -> str:
    step = {
        "kind": "model",
        "name": "fix",
        "prompt": "Fix calc.py and util.py so that the test passes.",
        "tools": ["read_file", "edit_file", "write_file", "run_command", "finish"],
        "commands": commands,
        "max_turns": 6,
        "verify": ["python3 test_calc.py"],
    }
    return json.dumps({"steps": [step]})


WORKER_TURNS = [
    {"tool": "read_file", "arguments": {"path": "calc.py"}},
    {"tool": "write_file", "arguments": {"path": "util.py", "content": FIXED_UTIL}},
    {"tool": "edit_file", "arguments": {"path": "calc.py", "old": " + 1\n", "new": "\n"}},
    {"tool": "run_command", "arguments": {"name": "test"}},
    {"tool": "finish", "arguments": {"summary": "fixed both"}},
]


def test_planner_mode_plans_a_worker_step_with_commands_only_from_the_config(tmp_path: Path) -> None:
    from supervisor.backends.base import Request
    from tests.helpers import Tiers, make_harness

    def planning(request: Request) -> bool:
        return "Plan the steps that reach the goal" in request.messages[1].content

    def local(request: Request) -> str:
        if planning(request):
            return planned(["test", "rm -rf /"])  # a command the config does not name: the plan is rejected
        return json.dumps({"tool": "finish", "arguments": {"summary": "nothing to do"}})  # the gate will say no

    def cheap(request: Request) -> str:
        if planning(request):
            return planned(["test"])
        turns = sum(1 for m in request.messages if m.role == "assistant")
        return json.dumps(WORKER_TURNS[min(turns, len(WORKER_TURNS) - 1)])

    harness = make_harness(tmp_path, PLANNER, files=FILES, tiers=Tiers(local=local, cheap=cheap))
    runtime, backends = harness.runtime()
    import asyncio

    result = asyncio.run(runtime.run_agent("planner"))

    assert result.outcome == "success", result.reason
    assert (harness.workspace / "util.py").read_text() == FIXED_UTIL
    plans = runtime.ledger.query("SELECT tier, valid, validation_error FROM plans ORDER BY id")
    assert [(r["tier"], r["valid"]) for r in plans] == [("local", 0), ("cheap", 1)]
    assert "command 'rm -rf /' is not one of the agent's commands; allowed: test" in plans[0]["validation_error"]
    # The planning prompt offered the worker's tools and the config's named commands.
    prompt = backends["sim-local"].calls[0].messages[1].content
    assert "read_file, list_files, write_file, edit_file, run_command, finish" in prompt
    assert "- test: python3 test_calc.py" in prompt
    # The planned step ran as a worker: local finished at once and failed the gate, cheap fixed it in 5 turns.
    turns = runtime.ledger.events_after(0, kinds=["turn_finished"])
    assert [(t.data["tier"], t.data["turn"]) for t in turns] == [("local", 1)] + [("cheap", n) for n in range(1, 6)]
    assert turns[4].data["tools"][0]["result"].startswith("[exit 0] $ python3 test_calc.py\nok")
    assert [s["outcome"] for s in runtime.ledger.steps(result.run_id)] == ["passed", "passed"]


async def test_a_key_in_a_workspace_file_never_reaches_the_model_the_events_or_the_record(
    tmp_path: Path, openai_fake: OpenAIFake
) -> None:
    key = KEYS["DEEPSEEK_API_KEY"]
    p = project(tmp_path, deepseek(openai_fake), 'cheap = ["deepseek:deepseek-flash"]\n', fix_agent('["cheap"]'))
    (p.workspace / "notes.txt").write_text(f"deploy with DEEPSEEK_API_KEY={key}\n")
    openai_fake.enqueue(
        tool_reply(ToolUse("read_file", {"path": "notes.txt"})),
        tool_reply(ToolUse("run_command", {"name": "test"})),
        tool_reply(ToolUse("finish", {"summary": f"the key is {key}"})),
    )
    (p.workspace / "test_calc.py").write_text(f"print('{key}')\nraise SystemExit(1)\n")

    result, _events, runtime = await run(p)

    assert result.outcome == "exhausted"
    bodies = json.dumps(openai_fake.model_bodies())
    assert key not in bodies  # the tool results were scrubbed before they went back to the model
    assert "[redacted:DEEPSEEK_API_KEY]" in bodies
    events = json.dumps([e.data for e in runtime.ledger.events_after(0)])
    assert key not in events
    for record in (p.home / "agents" / "fixer" / "runs").glob("*.md"):
        assert key not in record.read_text()


# ==========================================================================================================
# The breaker and a pause, within the loop


async def test_the_rising_input_breaker_applies_within_the_loop_past_the_lean_transcripts_size(
    tmp_path: Path, openai_fake: OpenAIFake
) -> None:
    p = project(
        tmp_path,
        deepseek(openai_fake),
        'cheap = ["deepseek:deepseek-flash"]\n',
        "[breaker]\nrising_calls = 3\n" + fix_agent('["cheap"]'),
    )
    # Reported input far above what the lean transcript settles at, rising every turn, with tiny outputs: the
    # signature of a session re-sending a growing thread.
    for tokens in (20_000, 24_000, 28_000, 32_000):
        openai_fake.enqueue(tool_reply(ToolUse("list_files", {"glob": "*"}), input_tokens=tokens, output_tokens=12))

    result, _events, runtime = await run(p)

    assert result.outcome == "paused"
    assert "rose across 3 consecutive calls" in result.reason
    assert len(openai_fake.model_bodies()) == 3  # tripped after the third turn: no fourth is sent
    [trip] = runtime.ledger.events_after(0, kinds=["breaker_tripped"])
    assert trip.data["rule"] == "rising_input"
    assert trip.data["evidence"]["input_tokens"] == [20_000, 24_000, 28_000]


async def test_growth_within_the_lean_transcript_does_not_trip_the_breaker(
    tmp_path: Path, openai_fake: OpenAIFake
) -> None:
    p = project(
        tmp_path,
        deepseek(openai_fake),
        'cheap = ["deepseek:deepseek-flash"]\n',
        "[breaker]\nrising_calls = 3\n" + fix_agent('["cheap"]'),
    )
    # Inputs rising every turn with tiny outputs, but under the size the lean transcript settles at (the head
    # and the transcript budget): the budget filling up, by design.
    calls = [
        ToolUse("list_files", {"glob": "*.py"}),
        ToolUse("write_file", {"path": "util.py", "content": FIXED_UTIL}),
        ToolUse("edit_file", {"path": "calc.py", "old": " + 1\n", "new": "\n"}),
        ToolUse("run_command", {"name": "test"}),
        ToolUse("finish", {"summary": "done"}),
    ]
    for call, tokens in zip(calls, [900, 1_260, 1_830, 2_100, 2_280], strict=True):
        openai_fake.enqueue(tool_reply(call, input_tokens=tokens, output_tokens=5))

    result, _events, runtime = await run(p)

    assert result.outcome == "success"
    assert runtime.ledger.events_after(0, kinds=["breaker_tripped"]) == []


async def test_a_pause_from_another_process_stops_the_loop_at_the_next_turn(
    tmp_path: Path, openai_fake: OpenAIFake
) -> None:
    p = project(tmp_path, deepseek(openai_fake), 'cheap = ["deepseek:deepseek-flash"]\n', fix_agent('["cheap"]'))
    before = tree_digest(p.workspace)
    replies = [
        tool_reply(ToolUse("write_file", {"path": "util.py", "content": FIXED_UTIL})),
        tool_reply(ToolUse("read_file", {"path": "calc.py"})),
        tool_reply(ToolUse("finish", {"summary": "never reached"})),
    ]

    def respond(_req: Any) -> Any:
        sent = len(openai_fake.model_bodies())
        if sent == 2:  # while turn 2 is answered, someone runs `supervisor pause fixer` elsewhere
            with Ledger(p.home / "ledger.db") as other:
                other.pause_agent("fixer", "human", "paused from another terminal")
        return replies[sent - 1]

    openai_fake.responder = respond

    result, events, _runtime = await run(p)

    assert result.outcome == "paused"
    assert "another terminal" in result.reason
    assert len(openai_fake.model_bodies()) == 2
    [finished] = [e for e in events if isinstance(e, WorkerFinished)]
    assert (finished.end, finished.turns) == ("paused", 2)
    assert tree_digest(p.workspace) == before  # the write of turn 1 was undone


def test_a_frontier_approval_for_a_tool_step_estimates_the_whole_loop(tmp_path: Path) -> None:
    import asyncio

    from tests.helpers import make_harness

    step = """
    [[agents.{name}.steps]]
    name = "fix"
    prompt = "Make `python3 test_calc.py` pass."
    {extra}
    verify = ["python3 test_calc.py"]
    """
    agents = ""
    for name, extra in (
        ("single", 'writes = "util.py"'),
        ("looped", 'tools = ["read_file", "edit_file"]\nmax_turns = 5'),
    ):
        agents += f'\n[agents.{name}]\ngoal = "Fix it."\nworkspace = "ws"\nladder = ["frontier"]\n'
        agents += textwrap.dedent(step.format(name=name, extra=extra))
    harness = make_harness(tmp_path, agents, files=FILES)
    runtime, _backends = harness.runtime()

    async def both() -> list[RunResult]:
        return [await runtime.run_agent(name) for name in ("single", "looped")]

    results = asyncio.run(both())

    assert [r.outcome for r in results] == ["waiting_approval", "waiting_approval"]
    single, looped = (runtime.ledger.approval(r.approval_id or 0) for r in results)
    assert single is not None
    assert looped is not None
    assert looped.est_warm_micros is not None
    assert single.est_warm_micros is not None
    # Five turns, each with the tools and a transcript at its budget: well over five single calls.
    assert looped.est_warm_micros % 5 == 0
    assert looped.est_warm_micros > 5 * single.est_warm_micros
    assert looped.est_cold_micros is not None
    assert looped.est_cold_micros > looped.est_warm_micros
