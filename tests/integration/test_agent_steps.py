"""Agent steps end to end: an agent program as a step's worker, its calls served through the gateway by the
attempt's tier, its work judged by the gates. Real child processes (scripts on the official SDKs), a real
gateway on loopback, real ledger, loopback fakes speaking each provider's wire as the upstreams."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.config import ConfigProblems, load_config, parse_config
from supervisor.cost import cost_of, usd_to_micros, worst_case_micros
from supervisor.gateway.server import hosted_gateway, run_gateway
from supervisor.ledger import Ledger
from supervisor.runtime.events import (
    AgentDeferred,
    BreakerTripped,
    Escalated,
    EscalationRequested,
    Event,
    ModelSubstituted,
    Notice,
    ProgramFinished,
    ProgramOutput,
    ProgramStarted,
    WorkspaceRestored,
)
from supervisor.runtime.runtime import RunResult, Runtime
from supervisor.secrets import Redactor
from supervisor.usage import Usage
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import Reply, ToolUse, tool_reply
from tests.fakes.ollama import OllamaFake
from tests.fakes.openai import OpenAIFake
from tests.helpers import tree_digest

AGENTS = Path(__file__).resolve().parents[1] / "agents"
OPENAI_FIXER = f"{sys.executable} {AGENTS / 'openai_fixer.py'}"
PY = sys.executable
KEYS = {
    "DEEPSEEK_API_KEY": "sk-deepseek-CANARY-0123456789abcdef",
    "ANTHROPIC_API_KEY": "sk-ant-CANARY-0123456789abcdef",
    "OPENAI_API_KEY": "sk-openai-CANARY-0123456789abcdef",
}
BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
TEST = "from calc import add\n\nassert add(2, 3) == 5, f'add(2, 3) = {add(2, 3)}'\nprint('ok')\n"
FILES = {"calc.py": BUGGY, "test_calc.py": TEST}


@dataclass
class World:
    """The fakes standing in for each tier's provider, a config that uses them, and the workspace."""

    tmp: Path
    local: OllamaFake
    cheap: OpenAIFake
    frontier: AnthropicFake
    workspace: Path
    config_path: Path
    environ: dict[str, str]
    home: Path
    events: list[Event] = field(default_factory=list)

    def runtime(self) -> Runtime:
        config = load_config(self.config_path, self.environ, required=True)
        ledger = Ledger(self.home / "ledger.db", redactor=Redactor.from_environ(self.environ))
        runtime = Runtime(
            config,
            load_catalog(default_catalog_dirs()),
            ledger,
            environ=self.environ,
            home=self.home,
            gateway_factory=run_gateway,
        )
        runtime.bus.subscribe(self.events.append)
        return runtime

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


PROVIDERS = """
[providers.ollama]
kind = "ollama"
host = "{local}"
max_retries = 0

[providers.deepseek]
kind = "openai_compat"
base_url = "{cheap}"
api_key_env = "DEEPSEEK_API_KEY"
max_retries = 0

[providers.anthropic]
kind = "anthropic"
base_url = "{frontier}"
api_key_env = "ANTHROPIC_API_KEY"
max_retries = 0

[tiers]
local = ["ollama:qwen3:4b"]
cheap = ["deepseek:deepseek-flash"]
frontier = ["anthropic:claude-sonnet-5-5"]
"""


def fix_agent(command: str, *, ladder: str = '["local", "cheap"]', step: str = "", agent: str = "") -> str:
    return f"""
[agents.fixer]
goal = "Keep calc's tests passing."
workspace = "ws"
frontier = "never"
attempts_per_tier = 1
ladder = {ladder}
{textwrap.dedent(agent)}

[[agents.fixer.steps]]
name = "fix"
agent = {json.dumps(command)}
task = "Make `python test_calc.py` pass: add() in calc.py is wrong."
verify = [{json.dumps(f"{PY} test_calc.py")}]
{textwrap.dedent(step)}
"""


@asynccontextmanager
async def world(
    tmp_path: Path, agents: str, *, extra: str = "", files: dict[str, str] | None = None
) -> AsyncIterator[World]:
    with (
        OllamaFake(models=("qwen3:4b",)) as local,
        OpenAIFake(dialect="deepseek", models=("deepseek-flash",)) as cheap,
        AnthropicFake(models=("claude-sonnet-5-5",)) as frontier,
    ):
        workspace = tmp_path / "ws"
        workspace.mkdir()
        for rel, text in (FILES if files is None else files).items():
            (workspace / rel).write_text(text)
        config_path = tmp_path / "supervisor.toml"
        config_path.write_text(
            textwrap.dedent(extra)
            + PROVIDERS.format(local=local.url, cheap=cheap.url, frontier=frontier.url)
            + textwrap.dedent(agents)
        )
        environ = {**os.environ, **KEYS, "MY_DEEPSEEK_ALIAS": KEYS["DEEPSEEK_API_KEY"]}
        yield World(
            tmp_path, local, cheap, frontier, workspace, config_path, environ, Path(os.environ["SUPERVISOR_HOME"])
        )


async def run(w: World, **kwargs: Any) -> tuple[RunResult, Runtime]:
    runtime = w.runtime()
    try:
        result = await runtime.run_agent("fixer", **kwargs)
    finally:
        await runtime.aclose()
    return result, runtime


def calls(runtime: Runtime) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in runtime.ledger.query(
            "SELECT agent, run_id, step, attempt, tier, provider, model, requested_model, input_uncached, cache_read, "
            "output, cost_micros, priced, key_id, auth, via, started_at FROM calls ORDER BY id"
        )
    ]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def group_gone(pgid: int, wait_s: float = 5.0) -> bool:
    """No live process is left in the group (a SIGKILLed one may take a moment to go)."""
    deadline = time.monotonic() + wait_s
    while group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ==========================================================================================================
# The ladder, through the CLI: local fails the gate, the workspace is restored, cheap passes


def test_an_sdk_agent_climbs_the_ladder_and_every_call_is_attributed_per_attempt(tmp_path: Path) -> None:
    """`supervisor run` (the composition root starts a gateway for the run): the openai-SDK script's calls at
    the local tier write a wrong fix, the gate fails, the workspace is put back byte for byte and the task file
    gets the failure; at the cheap tier the script's tool loop fixes calc.py. Every call is in the ledger under
    the agent, run, step and attempt, priced exactly, and `ledger report --by run` breaks the run down per
    attempt."""

    with (
        OllamaFake(models=("qwen3:4b",)) as local,
        OpenAIFake(dialect="deepseek", models=("deepseek-flash",)) as cheap,
        AnthropicFake(models=("claude-sonnet-5-5",)) as frontier,
    ):
        workspace = tmp_path / "ws"
        workspace.mkdir()
        for rel, text in FILES.items():
            (workspace / rel).write_text(text)
        original = tree_digest(workspace)
        config_path = tmp_path / "supervisor.toml"
        config_path.write_text(
            PROVIDERS.format(local=local.url, cheap=cheap.url, frontier=frontier.url) + fix_agent(OPENAI_FIXER)
        )
        local.enqueue(
            tool_reply(ToolUse("write_file", {"path": "calc.py", "content": "def add(a, b):\n    return 0\n"})),
            Reply("Done.", input_tokens=80, output_tokens=3),
        )
        seen: list[dict[str, str]] = []

        def cheap_replies(_req: Any) -> Any:
            seen.append(tree_digest(workspace))
            script = [
                tool_reply(ToolUse("read_file", {"path": "calc.py"}, id="call_A"), input_tokens=120, output_tokens=18),
                tool_reply(
                    ToolUse("write_file", {"path": "calc.py", "content": FIXED}, id="call_B"),
                    input_tokens=200,
                    output_tokens=30,
                    cache_read=64,
                ),
                Reply("Fixed: add() adds.", input_tokens=260, output_tokens=6),
            ]
            return script[len(seen) - 1]

        cheap.responder = cheap_replies
        env = {**os.environ, **KEYS}
        done = subprocess.run(
            [sys.executable, "-m", "supervisor", "run", "fixer", "--config", str(config_path), "--json"],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        report = subprocess.run(
            [sys.executable, "-m", "supervisor", "ledger", "report", "--by", "run", "--config", str(config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        report_json = subprocess.run(
            [
                sys.executable,
                "-m",
                "supervisor",
                "ledger",
                "report",
                "--by",
                "run",
                "--json",
                "--config",
                str(config_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        cheap_bodies = cheap.model_bodies()

    events = {kind: [e for e in lines if e["event"] == kind] for kind in {e["event"] for e in lines}}
    # The local attempt's edit was undone before the cheap attempt began, and the cheap tier's fix stayed.
    assert seen[0] == original
    assert (workspace / "calc.py").read_text() == FIXED
    assert [(e["from_tier"], e["to_tier"]) for e in events["escalated"]] == [("local", "cheap")]
    assert [e["scope"] for e in events["workspace_restored"]] == ["attempt"]
    started = events["program_started"]
    assert [(e["tier"], e["attempt"], e["model"]) for e in started] == [("local", 1, "local"), ("cheap", 2, "cheap")]
    assert all(e["key_prefix"].startswith("sk-sup-") and len(e["key_prefix"]) == 12 for e in started)
    # The retry's task file carries the gate's failure (the script sends the task as its first message).
    first_user = cheap_bodies[0]["messages"][1]["content"]
    assert first_user.startswith("Make `python test_calc.py` pass")
    assert "did not pass the step's checks" in first_user
    assert "add(2, 3) = 0" in first_user
    # The program's own output reached the step log while it ran.
    output = "".join(e["text"] for e in events["program_output"])
    assert "agent: turn 1: 1 tool call(s)" in output
    assert "agent: done: Fixed: add() adds." in output

    ledger = Ledger(Path(os.environ["SUPERVISOR_HOME"]) / "ledger.db")
    rows = [
        dict(r)
        for r in ledger.query(
            "SELECT agent, run_id, step, attempt, tier, provider, model, requested_model, input_uncached, cache_read, "
            "output, cost_micros, priced, key_id, auth, via, started_at FROM calls ORDER BY id"
        )
    ]
    assert [(r["attempt"], r["tier"], r["provider"]) for r in rows] == [
        (1, "local", "ollama"),
        (1, "local", "ollama"),
        (2, "cheap", "deepseek"),
        (2, "cheap", "deepseek"),
        (2, "cheap", "deepseek"),
    ]
    assert {(r["agent"], r["run_id"], r["step"], r["via"], r["auth"]) for r in rows} == {
        ("fixer", 1, "fix", "gateway", "key")
    }
    assert rows[0]["key_id"] != rows[2]["key_id"]  # one key per attempt
    assert [r["requested_model"] for r in rows] == ["local", "local", "cheap", "cheap", "cheap"]  # no substitution
    catalog = load_catalog(default_catalog_dirs())
    spec = catalog.spec_for("deepseek", "deepseek-flash").spec
    assert spec is not None
    from supervisor.clock import parse_iso

    for row, (inp, read, out) in zip(rows[2:], [(120, 0, 18), (200, 64, 30), (260, 0, 6)], strict=True):
        assert (row["input_uncached"], row["cache_read"], row["output"]) == (inp, read, out)
        expected = cost_of(Usage(input_uncached=inp, cache_read=read, output=out), spec, parse_iso(row["started_at"]))
        assert (row["cost_micros"], row["priced"]) == (expected.total_micros, 1)
    assert all((r["cost_micros"], r["priced"]) == (0, 1) for r in rows[:2])
    finished = events["program_finished"]
    assert [(e["attempt"], e["calls"], e["exit_code"]) for e in finished] == [(1, 2, 0), (2, 3, 0)]
    assert finished[1]["cost_micros"] == sum(r["cost_micros"] for r in rows[2:])
    assert finished[1]["input_tokens"] == 120 + 200 + 64 + 260
    assert finished[1]["served"] == ["deepseek:deepseek-flash"]
    # Both keys are dead now.
    assert all(k.revoked_at is not None for k in ledger.gateway_keys("fixer"))
    assert ledger.held_reservations() == []
    ledger.close()

    # `ledger report --by run`: the run, then its calls per attempt.
    assert report.returncode == 0, report.stderr
    table = report.stdout
    assert "run 1 fixer" in table
    assert "  fix attempt 1 local (agent program)" in table
    assert "  fix attempt 2 cheap (agent program)" in table
    [run_row] = json.loads(report_json.stdout)
    assert [(a["group"], a["calls"], a["cost_micros"]) for a in run_row["attempts"]] == [
        ("fix attempt 1 local (agent program)", 2, 0),
        ("fix attempt 2 cheap (agent program)", 3, finished[1]["cost_micros"]),
    ]
    assert run_row["calls"] == 5


# ==========================================================================================================
# The child's environment


PROBE = textwrap.dedent(
    """
    import json, os, sys, urllib.request

    import anthropic, ollama, openai

    out = {"env": dict(os.environ)}
    ask = [{"role": "user", "content": "Say hi."}]
    raw = openai.OpenAI().chat.completions.with_raw_response.create(model="gpt-4o", messages=ask, max_tokens=5)
    out["openai"] = [raw.headers.get("x-supervisor-served-model"), raw.headers.get("x-supervisor-substituted")]
    raw = anthropic.Anthropic().messages.with_raw_response.create(model="claude-opus-4-1", max_tokens=5, messages=ask)
    out["anthropic"] = [raw.headers.get("x-supervisor-served-model"), raw.headers.get("x-supervisor-substituted")]
    out["ollama_sdk"] = ollama.Client().chat(model="llama3", messages=ask).message.content
    # An Ollama client that sends no key: OLLAMA_HOST is a port bound to this attempt.
    body = json.dumps({"model": "llama3", "messages": ask, "stream": False}).encode()
    request = urllib.request.Request(os.environ["OLLAMA_HOST"] + "/api/chat", data=body,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        out["ollama_port"] = [response.status, response.headers.get("x-supervisor-served-model")]
    json.dump(out, open(sys.argv[1], "w"))
    print("probe done")
    """
)


async def test_the_program_sees_the_gateway_for_every_protocol_and_no_provider_key(tmp_path: Path) -> None:
    """The official SDKs built with no arguments, and an Ollama client, all reach the gateway with the attempt's
    key (or its port); every name asked for is served by the attempt's tier, visibly; no provider key (by name
    or by value) reaches the program; and the attempt's key is nowhere in the ledger, its events or the run
    record."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = tmp_path / "seen.json"
    command = f"{PY} {probe} {out}"
    async with world(tmp_path, fix_agent(command, ladder='["cheap"]')) as w:
        (w.tmp / "supervisor.toml").write_text(
            w.config_path.read_text().replace(json.dumps(f"{PY} test_calc.py"), json.dumps(f"test -s {out}"))
        )
        result, runtime = await run(w)
    assert result.outcome == "success", result.reason
    seen = json.loads(out.read_text())
    env = seen["env"]
    gateway = env["SUPERVISOR_GATEWAY_URL"]
    key = env["SUPERVISOR_GATEWAY_KEY"]
    assert gateway.startswith("http://127.0.0.1:")
    assert key.startswith("sk-sup-")
    assert env["OPENAI_BASE_URL"] == env["OPENAI_API_BASE"] == gateway + "/v1"
    assert env["ANTHROPIC_BASE_URL"] == env["OPENAI_HOST"] == gateway
    assert env["OLLAMA_HOST"].startswith("http://127.0.0.1:")
    assert env["OLLAMA_HOST"] != gateway
    assert (
        env["OPENAI_API_KEY"] == env["ANTHROPIC_API_KEY"] == env["ANTHROPIC_AUTH_TOKEN"] == env["OLLAMA_API_KEY"] == key
    )
    assert (env["SUPERVISOR_MODEL"], env["SUPERVISOR_TIER"], env["SUPERVISOR_ATTEMPT"]) == ("cheap", "cheap", "1")
    assert (env["SUPERVISOR_AGENT"], env["SUPERVISOR_STEP"], env["SUPERVISOR_RUN_ID"]) == ("fixer", "fix", "1")
    assert env["SUPERVISOR_TASK_FILE"].endswith(".md")
    assert not env["SUPERVISOR_TASK_FILE"].startswith(str(w.workspace))
    assert "127.0.0.1" in env["NO_PROXY"].split(",")
    assert "localhost" in env["no_proxy"].split(",")
    assert "DEEPSEEK_API_KEY" not in env
    assert "MY_DEEPSEEK_ALIAS" not in env
    for secret in KEYS.values():
        assert all(secret not in value for value in env.values())
    # Every protocol reached the gateway and was served by the cheap tier, with the substitution visible.
    assert seen["openai"] == ["deepseek:deepseek-flash", "gpt-4o -> deepseek:deepseek-flash"]
    assert seen["anthropic"] == ["deepseek:deepseek-flash", "claude-opus-4-1 -> deepseek:deepseek-flash"]
    assert seen["ollama_sdk"] == "ok"
    assert seen["ollama_port"] == [200, "deepseek:deepseek-flash"]
    rows = calls(runtime)
    assert [(r["requested_model"], r["auth"], r["tier"], r["attempt"]) for r in rows] == [
        ("gpt-4o", "key", "cheap", 1),
        ("claude-opus-4-1", "key", "cheap", 1),
        ("llama3", "key", "cheap", 1),
        ("llama3", "port", "cheap", 1),
    ]
    assert len({r["key_id"] for r in rows}) == 1
    assert {(e.requested, e.served) for e in w.of(ModelSubstituted)} == {
        (name, "deepseek:deepseek-flash") for name in ("gpt-4o", "claude-opus-4-1", "llama3")
    }
    # The upstream got the provider's key, never the gateway key; the gateway key is recorded nowhere.
    assert all(r.headers.get("authorization") == f"Bearer {KEYS['DEEPSEEK_API_KEY']}" for r in w.cheap.model_requests())
    runtime.ledger.close()
    home = w.home
    stored = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    for secret in (key, *KEYS.values()):
        assert secret.encode() not in stored
    record = next((home / "agents" / "fixer" / "runs").glob("*.md")).read_text()
    assert "probe done" in record  # the program's output is in the run record (secrets scrubbed)


# ==========================================================================================================
# Caps through the key


async def test_an_attempt_cap_reached_mid_loop_stops_the_program_restores_and_defers(tmp_path: Path) -> None:
    """The script's tool loop has made two calls (the first wrote calc.py, the second read a 30 KB file) when the
    third, carrying that file, could cross attempt_usd: it is refused before anything is sent, the program
    (which would wait out the error) is stopped, the workspace is put back byte for byte, and the run defers
    naming the cap."""
    command = f"AGENT_ON_ERROR=wait {OPENAI_FIXER}"
    files = {**FILES, "notes.txt": "a long note\n" * 2500}
    async with world(tmp_path, fix_agent(command, ladder='["cheap"]', step="attempt_usd = 0.002"), files=files) as w:
        original = tree_digest(w.workspace)
        w.cheap.enqueue(
            tool_reply(ToolUse("write_file", {"path": "calc.py", "content": "half a fix\n"}), input_tokens=150),
            tool_reply(ToolUse("read_file", {"path": "notes.txt"}), input_tokens=220),
            Reply("never sent"),
        )
        started = time.monotonic()
        result, runtime = await run(w)
        elapsed = time.monotonic() - started
        requests = len(w.cheap.model_requests())
    assert result.outcome == "deferred", result.reason
    assert "attempt_usd" in result.reason
    [deferred] = w.of(AgentDeferred)
    assert deferred.cap is not None
    assert deferred.cap.startswith("attempt_usd")
    # No call past the cap: the upstream saw two requests, the ledger has two calls, nothing is held.
    assert requests == 2
    rows = calls(runtime)
    assert len(rows) == 2
    cap = usd_to_micros(0.002)
    spent = sum(r["cost_micros"] for r in rows)
    assert spent <= cap
    assert runtime.ledger.held_reservations() == []
    # The program was stopped (it would have waited 120 s), its group is gone, the workspace is as it was.
    [finished] = w.of(ProgramFinished)
    assert finished.stopped.startswith("a cap was reached: attempt_usd") or "key usd" in finished.stopped
    assert elapsed < 60
    [program] = w.of(ProgramStarted)
    assert group_gone(program.pid)
    assert tree_digest(w.workspace) == original
    assert w.of(WorkspaceRestored)


async def test_max_calls_is_the_attempts_call_budget(tmp_path: Path) -> None:
    """max_calls = 1: the program's second call is refused (429, not retried), it fails, and the step defers
    with the cap named; the one call made is in the ledger."""
    async with world(tmp_path, fix_agent(OPENAI_FIXER, ladder='["local"]', step="max_calls = 1")) as w:
        w.local.enqueue(tool_reply(ToolUse("read_file", {"path": "calc.py"})), Reply("never sent"))
        result, runtime = await run(w)
        requests = len(w.local.model_requests())
    assert result.outcome == "deferred"
    assert "max_calls" in result.reason
    assert requests == 1
    assert len(calls(runtime)) == 1


# ==========================================================================================================
# The key dies with the attempt


STRAGGLER_PARENT = textwrap.dedent(
    """
    import json, os, subprocess, sys

    import openai

    openai.OpenAI().chat.completions.create(model=os.environ["SUPERVISOR_MODEL"],
                                            messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    out = sys.argv[1]
    # A child in the program's own process group: it goes when the attempt ends.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    # A grandchild that leaves the group (setsid) and calls the gateway after the attempt has ended.
    straggler = subprocess.Popen([sys.executable, sys.argv[2], out], start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    json.dump({"sleeper": sleeper.pid, "straggler": straggler.pid}, open(out + ".pids", "w"))
    open("done.txt", "w").write("done")
    print("parent exits")
    """
)

STRAGGLER = textwrap.dedent(
    """
    import json, os, sys, time, urllib.error, urllib.request

    out = sys.argv[1]
    deadline = time.time() + 60
    while not os.path.exists(out + ".go") and time.time() < deadline:
        time.sleep(0.05)
    results = {}
    body = json.dumps({"model": "cheap", "messages": [{"role": "user", "content": "still here"}]}).encode()
    for name, url, headers in (
        ("key", os.environ["OPENAI_BASE_URL"] + "/chat/completions",
         {"authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}),
        ("port", os.environ["OLLAMA_HOST"] + "/api/chat", {}),
    ):
        request = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                results[name] = [response.status, response.read().decode()]
        except urllib.error.HTTPError as exc:
            results[name] = [exc.code, exc.read().decode()]
        except OSError as exc:
            results[name] = ["refused", str(exc)]
    json.dump(results, open(out, "w"))
    """
)


async def test_a_grandchild_that_outlives_the_attempt_gets_401_and_the_group_is_gone(tmp_path: Path) -> None:
    """With the gateway hosted in the process (as the daemon and the TUI do), the step uses it; when the attempt
    ends the program's process group is killed, and a grandchild that escaped it with setsid finds its key
    revoked (401) and the attempt's port closed: nothing it sends reaches a model or the ledger."""
    parent, straggler = tmp_path / "parent.py", tmp_path / "straggler.py"
    parent.write_text(STRAGGLER_PARENT)
    straggler.write_text(STRAGGLER)
    out = tmp_path / "straggler.json"
    command = f"{PY} {parent} {out} {straggler}"
    agents = fix_agent(command, ladder='["local"]').replace(
        json.dumps(f"{PY} test_calc.py"), json.dumps("test -f done.txt")
    )
    pids: dict[str, int] = {}
    async with world(tmp_path, agents, extra="[gateway]\nport = 0\n") as w:
        runtime = w.runtime()
        try:
            async with hosted_gateway(runtime) as gateway:
                assert gateway is not None
                assert runtime.gateway is gateway
                result = await runtime.run_agent("fixer")
                assert result.outcome == "success", result.reason
                pids = json.loads(Path(str(out) + ".pids").read_text())
                [program] = w.of(ProgramStarted)
                assert group_gone(program.pid)
                assert not _alive(pids["sleeper"])  # the group was killed at the end of the attempt
                assert _alive(pids["straggler"])  # it escaped the group...
                requests_before = len(w.local.model_requests())
                Path(str(out) + ".go").write_text("go")
                for _ in range(300):
                    if out.exists() and out.stat().st_size:
                        break
                    await asyncio.sleep(0.05)
                seen = json.loads(out.read_text())
                requests_after = len(w.local.model_requests())
        finally:
            if pids.get("straggler") and _alive(pids["straggler"]):
                os.kill(pids["straggler"], signal.SIGKILL)
            await runtime.aclose()
    # ...but its key is dead: 401, and the attempt's port no longer listens.
    assert seen["key"][0] == 401, seen
    assert "revoked" in seen["key"][1]
    assert seen["port"][0] == "refused", seen
    assert requests_after == requests_before == 1
    assert len(calls(runtime)) == 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ==========================================================================================================
# Frontier: the approval comes before the program starts, with an estimate


async def test_the_frontier_attempt_is_approved_before_the_program_starts_with_an_estimate(tmp_path: Path) -> None:
    agents = fix_agent(OPENAI_FIXER, ladder='["cheap", "frontier"]', step="max_calls = 8\nattempt_usd = 0.50").replace(
        'frontier = "never"', 'frontier = "ask"'
    )
    async with world(tmp_path, agents) as w:
        w.cheap.enqueue(tool_reply(ToolUse("write_file", {"path": "calc.py", "content": "wrong\n"})), Reply("done"))
        result, runtime = await run(w, approval_timeout_s=0.0)
        assert result.outcome == "waiting_approval"
        assert [e.tier for e in w.of(ProgramStarted)] == ["cheap"]  # no frontier program yet
        [request] = w.of(EscalationRequested)
        catalog = load_catalog(default_catalog_dirs())
        spec = catalog.spec_for("anthropic", "claude-sonnet-5-5").spec
        assert spec is not None
        per_call = worst_case_micros(spec, spec.context_window - 4096, 4096, request.at)
        assert per_call * 8 > usd_to_micros(0.50)  # the attempt cap bounds the estimate
        assert request.est_cold_micros == request.est_warm_micros == usd_to_micros(0.50)
        assert "up to 8 call(s)" in request.reason
        assert "attempt cap $0.5000" in request.reason
        runtime.approve(request.approval_id)
        w.frontier.enqueue(tool_reply(ToolUse("write_file", {"path": "calc.py", "content": FIXED})), Reply("Fixed."))
        result, runtime = await run(w)
    assert result.outcome == "success", result.reason
    assert [e.tier for e in w.of(ProgramStarted)] == ["cheap", "frontier"]
    assert (w.workspace / "calc.py").read_text() == FIXED
    frontier_rows = [r for r in calls(runtime) if r["tier"] == "frontier"]
    assert len(frontier_rows) == 2  # served without a per-call approval: the attempt was approved
    assert all(r["provider"] == "anthropic" and r["priced"] == 1 for r in frontier_rows)


# ==========================================================================================================
# The runaway breaker within one attempt


async def test_the_breaker_stops_an_attempt_whose_input_keeps_rising(tmp_path: Path) -> None:
    extra = "[breaker]\nrising_calls = 3\n"
    command = f"AGENT_ON_ERROR=wait AGENT_MAX_TURNS=10 {OPENAI_FIXER}"
    async with world(tmp_path, fix_agent(command, ladder='["local"]'), extra=extra) as w:
        w.local.enqueue(
            *(
                tool_reply(ToolUse("read_file", {"path": "calc.py"}), input_tokens=1000 * n, output_tokens=5)
                for n in range(1, 8)
            )
        )
        (w.workspace / "scratch.txt").write_text("keep me\n")
        original = tree_digest(w.workspace)
        started = time.monotonic()
        result, runtime = await run(w)
        elapsed = time.monotonic() - started
        requests = len(w.local.model_requests())
    assert result.outcome == "paused", result.reason
    assert "runaway breaker" in result.reason or "rising" in result.reason
    [trip] = w.of(BreakerTripped)
    assert trip.rule == "rising_input"
    assert trip.run_id == result.run_id
    assert trip.evidence["input_tokens"] == [1000, 2000, 3000]
    assert requests == 3  # the next call was refused: the agent is paused
    [finished] = w.of(ProgramFinished)
    assert "paused" in finished.stopped
    assert elapsed < 60
    assert tree_digest(w.workspace) == original
    assert runtime.ledger.agent("fixer")["state"] == "paused"


# ==========================================================================================================
# Bad input: a clear message, the workspace restored, no escalation


BAD_PROGRAMS = {
    "not found": ("no-such-agent-program --task {task_file}", "could not be started"),
    "exits at once": (f"{PY} -c 'import sys; sys.exit(3)'", "exited 3 without calling the gateway"),
    "never calls": (
        f"{PY} -c \"open('calc.py', 'w').write('junk')\"",
        "without calling the gateway",
    ),
    "refused protocol": (
        f"{PY} -c \"import os, openai; openai.OpenAI(max_retries=0).embeddings.create(model='x', input='y')\"",
        "the gateway refused every request",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PROGRAMS), ids=list(BAD_PROGRAMS))
async def test_a_program_that_cannot_work_fails_the_step_clearly_without_escalating(tmp_path: Path, case: str) -> None:
    command, message = BAD_PROGRAMS[case]
    async with world(tmp_path, fix_agent(command)) as w:
        original = tree_digest(w.workspace)
        result, runtime = await run(w)
    assert result.outcome == "failed"
    assert message in result.reason, result.reason
    assert not w.of(Escalated)  # another tier cannot fix it
    assert [e.tier for e in w.of(ProgramStarted)] == ["local"]
    assert any(message in n.message for n in w.of(Notice) if n.level == "error")
    assert tree_digest(w.workspace) == original
    record = next((w.home / "agents" / "fixer" / "runs").glob("*.md")).read_text()
    assert message in record
    assert calls(runtime) == []


def test_an_agent_step_with_a_model_steps_keys_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.toml"
    for step, expected in (
        ('agent = "aider"\nprompt = "x"', "exactly one of `run` (a command), `prompt` (a model call) or `agent`"),
        ('agent = "aider"\ntools = ["finish"]', "an `agent` step takes no tools"),
        ('prompt = "x"\ntask = "y"', "`task`: only for a step with `agent`"),
        ('agent = { cmd = "aider", timeout = 5 }', "agent.timeout: unknown key"),
        ('agent = "   "', "agents.a.steps[0].agent: give the agent program's command line"),
    ):
        path.write_text(f'[agents.a]\ngoal = "g"\nworkspace = "."\n[[agents.a.steps]]\nname = "s"\n{step}\n')
        with pytest.raises(ConfigProblems) as info:
            load_config(path, {}, required=True)
        assert str(path) in info.value.message
        assert "agent 'a'" in info.value.message
        assert expected in info.value.message, info.value.message


# ==========================================================================================================
# Planner mode


async def test_a_planner_may_use_an_agent_program_from_its_allowlist(tmp_path: Path) -> None:
    agents = f"""
    [agents.fixer]
    goal = "Keep calc's tests passing."
    workspace = "ws"
    frontier = "never"
    attempts_per_tier = 1
    ladder = ["local"]
    tools = [{json.dumps(f"{PY} test_calc.py")}]
    programs = {{ fixer = {json.dumps(OPENAI_FIXER)} }}
    verify = [{json.dumps(f"{PY} test_calc.py")}]
    """
    plan = {
        "steps": [
            {
                "kind": "agent",
                "name": "fix",
                "program": "fixer",
                "task": "Fix add() in calc.py.",
                "verify": [f"{PY} test_calc.py"],
            }
        ]
    }
    async with world(tmp_path, agents) as w:
        w.local.enqueue(
            Reply(json.dumps(plan)),
            tool_reply(ToolUse("write_file", {"path": "calc.py", "content": FIXED})),
            Reply("Fixed."),
        )
        result, _runtime = await run(w)
        bodies = w.local.model_bodies()
    assert result.outcome == "success", result.reason
    [program] = w.of(ProgramStarted)
    assert program.command == OPENAI_FIXER  # the command line came from the config, the task from the plan
    assert "Fix add() in calc.py." in json.dumps(bodies[1])
    assert (w.workspace / "calc.py").read_text() == FIXED


async def test_a_plan_naming_a_program_outside_the_allowlist_is_refused(tmp_path: Path) -> None:
    from supervisor.config import AgentConfig
    from supervisor.runtime.planner import validate_plan

    agent = AgentConfig(goal="g", workspace="ws", programs={"aider": "aider {task_file}"}, verify=["true"])
    bad = {"steps": [{"kind": "agent", "name": "x", "program": "rm -rf /", "task": "t"}]}
    result = validate_plan(json.dumps(bad), agent)
    assert not result.passed
    assert "'rm -rf /' is not one of the agent's programs; allowed: aider" in result.output
    good = {"steps": [{"kind": "agent", "name": "x", "program": "aider", "task": "t"}]}
    assert validate_plan(json.dumps(good), agent).passed


async def test_output_is_streamed_while_the_program_runs(tmp_path: Path) -> None:
    """The step log gets the program's lines while it is still running, not only when it ends."""
    script = tmp_path / "slow.py"
    script.write_text(
        "import os, sys, time, openai\n"
        "print('first line', flush=True)\n"
        "time.sleep(1.5)\n"
        "openai.OpenAI().chat.completions.create(model='local', messages=[{'role': 'user', 'content': 'hi'}])\n"
        "print('last line', flush=True)\n"
    )
    agents = fix_agent(f"{PY} {script}", ladder='["local"]').replace(
        json.dumps(f"{PY} test_calc.py"), json.dumps("true")
    )
    async with world(tmp_path, agents) as w:
        result, _ = await run(w)
    assert result.outcome == "success", result.reason
    outputs = w.of(ProgramOutput)
    first = next(e for e in outputs if "first line" in e.text)
    last = next(e for e in outputs if "last line" in e.text)
    [finished] = w.of(ProgramFinished)
    assert (last.at - first.at).total_seconds() >= 1.0
    assert first.at < finished.at


def test_the_readme_agent_step_config_and_recipes_are_valid_config(tmp_path: Path) -> None:
    """The "Agent steps" section's example config loads, and so does every recipe's `agent` line as a step."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Agent steps", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    example = blocks[0].replace('"~/src/app"', json.dumps(str(tmp_path)))
    config = parse_config(tomllib.loads(example), "README", None, {})
    step = config.agent("fixer").steps[0]
    assert step.is_agent_step
    assert step.agent is not None
    assert "{task_file}" in step.agent.cmd
    recipes = [line for block in blocks[1:] for line in block.splitlines() if line.startswith("agent = ")]
    assert len(recipes) == 5  # Aider, Claude Code, Codex, Goose, opencode
    for line in recipes:
        text = f'[agents.a]\ngoal = "g"\nworkspace = "."\n[[agents.a.steps]]\nname = "s"\nverify = ["true"]\n{line}\n'
        loaded = parse_config(tomllib.loads(text), "README recipe", None, {}).agent("a").steps[0]
        assert loaded.agent is not None
        assert loaded.agent.timeout_s == 900


def test_the_command_line_quotes_the_task_file_and_the_task_carries_the_last_failure() -> None:
    from supervisor.config import StepConfig
    from supervisor.runtime.program import command_line, task_text

    path = Path("/Users/me/Library/Application Support/frugal-supervisor/tasks/1-fix.md")
    line = command_line("aider --model openai/{model} --message-file {task_file} && echo '{kept}'", path, "cheap")
    assert line == (
        "aider --model openai/cheap --message-file "
        "'/Users/me/Library/Application Support/frugal-supervisor/tasks/1-fix.md' && echo '{kept}'"
    )
    step = StepConfig(name="fix", agent="aider", task="Fix add().")
    assert task_text(step, None, previous="attempt 1") == "Fix add().\n"
    retry = task_text(step, "cmd: pytest -q\nassert 1 == 2", previous="attempt 1")
    assert retry.startswith("Fix add().\n\n---\nThe previous attempt (attempt 1) did not pass")
    assert retry.endswith("cmd: pytest -q\nassert 1 == 2\n")


def test_recovery_revokes_the_keys_of_runs_a_crash_left_behind(tmp_path: Path) -> None:
    """A supervisor killed mid-attempt never revoked its key: the next start does (besides its expiry)."""
    from supervisor.gateway.keys import lookup_key, mint_key
    from supervisor.runtime.run import recover

    home = Path(os.environ["SUPERVISOR_HOME"])
    config_path = tmp_path / "supervisor.toml"
    config_path.write_text(fix_agent("true", ladder='["local"]'))
    (tmp_path / "ws").mkdir()
    ledger = Ledger(home / "ledger.db")
    run_id = ledger.start_run("fixer", "cli")
    with ledger.immediate() as conn:  # the run's owner is gone (a pid that cannot exist)
        conn.execute("UPDATE runs SET owner_pid = 999999999, owner_started = 1 WHERE id = ?", (run_id,))
    token = mint_key(ledger, "fixer", run_id=run_id, step="fix", attempt=1, tier="local").token
    user_key = mint_key(ledger, "fixer").token  # a key a human made: not touched
    runtime = Runtime(
        load_config(config_path, dict(os.environ), required=True),
        load_catalog(default_catalog_dirs()),
        ledger,
        home=home,
    )
    recover(runtime)
    attempt_key, human_key = lookup_key(ledger, token), lookup_key(ledger, user_key)
    assert attempt_key is not None
    assert attempt_key.revoked_at is not None
    assert human_key is not None
    assert human_key.revoked_at is None
    ledger.close()


async def test_the_output_pump_scrubs_a_key_split_across_reads_and_keeps_lines_whole() -> None:
    from supervisor.runtime.program import OutputPump
    from supervisor.secrets import StreamScrubber

    key = "sk-sup-" + "x" * 43
    published: list[str] = []
    pump = OutputPump(published.append, StreamScrubber(Redactor((("SUPERVISOR_GATEWAY_KEY_1", key),))), 10_000)
    pump.feed(b"line one\nthe key is " + key[:20].encode())
    await asyncio.sleep(1.5)  # several flushes while the key's second half has not arrived
    pump.feed(key[20:].encode() + b" done\npart")
    await asyncio.sleep(0.4)
    pump.feed("ial \u00e9".encode()[:-1])  # a character cut in two
    pump.feed("ial \u00e9".encode()[-1:] + b"\n")
    pump.close()
    text = "".join(published)
    assert key not in text
    assert key[:20] not in text
    assert text == "line one\nthe key is [redacted:SUPERVISOR_GATEWAY_KEY_1] done\npartial \u00e9\n"
    assert published[0] == "line one\n"  # whole lines as they come; a partial one only after a second
    assert "the key is " in published[1]
    assert "sk-sup" not in published[1]
