"""Secrets: canary API keys in the environment never appear in anything we write or show.

Real CLI processes (``run``, ``status``, ``approvals``, ``ledger report``, ``ask``, ``doctor``, ``config check``,
``daemon``) run with canary keys in their environment against loopback fakes that misbehave on purpose: error
bodies, mid-stream errors and 429s that echo the ``Authorization`` / ``x-api-key`` header back, and answers that
contain it. Afterwards the canaries must be absent from the ledger (``iterdump`` and the raw files), the event
log, digests, run records, ``state.json``, anything else under the data dir, every command's stdout and stderr,
every request sent to a *different* provider, and the TUI's screens.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.config import load_config
from supervisor.ledger import Ledger
from supervisor.secrets import Redactor
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import FakeServer, HttpError, MidStreamError, RecordedRequest, Reply
from tests.fakes.openai import OpenAIFake

pytestmark = pytest.mark.timeout(180)

CANARIES = {
    "DEEPSEEK_API_KEY": "sk-CANARY-deepseek-7f3a9c21d0",
    "ANTHROPIC_API_KEY": "sk-ant-CANARY-anthropic-5d1e88",
    "OPENAI_API_KEY": "sk-CANARY-openai-2b8c4d77",
    "LLM_GATEWAY_KEY": "gw-CANARY-gateway-91ab03",  # a custom api_key_env: no _API_KEY suffix to spot it by
}
PLAN_ECHO = '{{"steps": [{{"kind": "tool", "name": "t", "tool": "echo {key}"}}]}}'

GATEWAY_CATALOG = """
[meta]
provider = "gateway"
checked = 2026-11-01
sources = ["https://example.invalid/gateway"]

[[model]]
id = "gw-model"
provider = "gateway"
tier = "cheap"
context_window = 100000
max_output_tokens = 8000
input = "0.10"
cache_read = "0.01"
cache_write = "0.10"
output = "0.40"
effective_from = 2026-01-01
"""

CONFIG = """
[providers.deepseek]
kind = "openai_compat"
base_url = "{deepseek}"
api_key_env = "DEEPSEEK_API_KEY"
max_retries = 1

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key_env = "ANTHROPIC_API_KEY"
max_retries = 1

[providers.gateway]
kind = "openai_compat"
base_url = "{gateway}"
api_key_env = "LLM_GATEWAY_KEY"
max_retries = 1

[providers.openai]
kind = "openai_compat"
base_url = "{closed}"
api_key_env = "OPENAI_API_KEY"
max_retries = 0

[tiers]
local = ["gateway:gw-model"]
cheap = ["deepseek:deepseek-flash", "openai:gpt-5.6-luna"]
frontier = ["anthropic:claude-sonnet-5-5"]

[agents.leaky]
goal = "Echo-answer: write answer.txt."
workspace = "ws"
ladder = ["cheap", "frontier"]
attempts_per_tier = 1
frontier = "ask"

[[agents.leaky.steps]]
name = "write"
prompt = "echo-answer please"
writes = "answer.txt"
verify = ["cat answer.txt; echo; false"]

[agents.errors]
goal = "Fail loudly."
workspace = "ws"
ladder = ["local", "cheap"]
attempts_per_tier = 2
frontier = "never"

[[agents.errors.steps]]
name = "call"
prompt = "echo-error please"
output = "call"
verify = [{{ regex = "never" }}]

[agents.streamy]
goal = "Stream."
workspace = "ws"
ladder = ["cheap"]
attempts_per_tier = 2
frontier = "never"

[[agents.streamy.steps]]
name = "call"
prompt = "echo-stream please"
output = "call"
verify = [{{ regex = "never" }}]

[agents.limited]
goal = "Hit the rate limit."
workspace = "ws"
ladder = ["cheap"]
attempts_per_tier = 1
frontier = "never"

[[agents.limited.steps]]
name = "call"
prompt = "echo-429 please"
output = "call"
verify = [{{ regex = "never" }}]

[agents.ticker]
goal = "Run on a timer."
workspace = "ws"
schedule = "every 10s"
ladder = ["local", "cheap"]
attempts_per_tier = 1
frontier = "never"

[[agents.ticker.steps]]
name = "call"
prompt = "echo-error please"
writes = "ticker.txt"
verify = ["cat ticker.txt; false"]
"""


def echo(header: str) -> Any:
    """A responder that sends the request's key back in whatever the prompt asks for."""

    def respond(req: RecordedRequest) -> Any:
        key = req.headers.get(header, "")
        body = req.body.decode(errors="replace")
        if "echo-answer" in body:
            return Reply(f"The key you sent is {key} (headers: {header}: {key})")
        if "echo-stream" in body:
            return MidStreamError(f"invalid credentials {key}", text=f"partial {key}")
        if "echo-429" in body:
            return HttpError(429, f"rate limited for key {key}", headers={"Retry-After": "0.05"})
        if "echo-plan" in body:
            return Reply(PLAN_ECHO.format(key=key))
        if "echo-500" in body:
            return HttpError(500, f"upstream error for {key}")
        if "echo-error" in body:
            return HttpError(401, f"Incorrect API key provided: {key}. You can find your API key at ...")
        return Reply("ok")

    return respond


@dataclass
class World:
    root: Path
    home: Path
    config: Path
    env: dict[str, str]
    fakes: dict[str, FakeServer]
    outputs: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, code: int | None = None, record: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "supervisor", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
            check=False,
        )
        name = " ".join(args)
        assert "Traceback" not in done.stderr, (name, done.stderr)
        if code is not None:
            assert done.returncode == code, (name, done.returncode, done.stdout, done.stderr)
        if record:
            self.outputs[f"{len(self.outputs)}: {name}"] = done.stdout + "\n" + done.stderr
        return done


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def world(tmp_path: Path, supervisor_home: Path) -> Iterator[World]:
    fakes: dict[str, FakeServer] = {
        "deepseek": OpenAIFake(dialect="deepseek"),
        "anthropic": AnthropicFake(),
        "gateway": OpenAIFake(),
    }
    fakes["deepseek"].responder = echo("authorization")
    fakes["anthropic"].responder = echo("x-api-key")
    fakes["gateway"].responder = echo("authorization")
    for fake in fakes.values():
        fake.start()
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "answer.txt").write_text("old\n")
    (supervisor_home / "models").mkdir(exist_ok=True)
    (supervisor_home / "models" / "gateway.toml").write_text(GATEWAY_CATALOG)
    config = tmp_path / "supervisor.toml"
    config.write_text(
        textwrap.dedent(CONFIG).format(
            deepseek=fakes["deepseek"].url,
            anthropic=fakes["anthropic"].url,
            gateway=fakes["gateway"].url,
            closed=closed_port_url(),
        )
    )
    env = {**os.environ, **CANARIES}
    try:
        yield World(tmp_path, supervisor_home, config, env, fakes)
    finally:
        for fake in fakes.values():
            fake.stop()


def leaks_in(text: str) -> list[str]:
    return [name for name, value in CANARIES.items() if value in text] + (["CANARY"] if "CANARY" in text else [])


def scan_data_dir(home: Path) -> dict[str, list[str]]:
    """Every file under the data dir (raw bytes, so the WAL and free pages count too), plus the ledger's dump."""
    found: dict[str, list[str]] = {}
    for path in sorted(home.rglob("*")):
        if path.is_file():
            hits = leaks_in(path.read_bytes().decode("utf-8", errors="replace"))
            if hits:
                found[str(path.relative_to(home))] = hits
    conn = sqlite3.connect(str(home / "ledger.db"))
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    hits = leaks_in(dump)
    if hits:
        found["ledger iterdump"] = hits
    return found


def assert_no_cross_provider_leak(world: World) -> None:
    """Each provider saw only its own key, and only in its auth header: never in a body (a retry prompt) or
    another provider's request."""
    own = {"deepseek": "DEEPSEEK_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gateway": "LLM_GATEWAY_KEY"}
    for name, fake in world.fakes.items():
        for req in fake.requests:
            assert not leaks_in(req.body.decode(errors="replace")), f"a request body to {name} holds a key"
            for header, value in req.headers.items():
                hits = [k for k, v in CANARIES.items() if v in value]
                if header in ("authorization", "x-api-key"):
                    assert hits in ([], [own[name]]), f"{name} received {hits} in {header}"
                else:
                    assert not hits, f"{name} received {hits} in header {header}"


def run_daemon_for_a_while(world: World) -> str:
    """``supervisor daemon`` until the scheduled agent has run once, then SIGTERM; its whole output."""
    out = world.root / "daemon.out"
    with open(out, "w") as stdout:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "daemon", "--config", str(world.config)],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env=world.env,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, out.read_text()
            with Ledger(world.home / "ledger.db") as ledger:
                done = ledger.scalar(
                    "SELECT count(*) FROM runs WHERE agent = 'ticker' AND trigger = 'schedule' AND outcome != 'running'"
                )
            if done:
                break
            assert time.monotonic() < deadline, "the scheduled run never finished"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = out.read_text()
    assert "Traceback" not in text, text
    return text


def test_canary_keys_never_appear_in_anything_we_write_or_show(world: World) -> None:
    world.cli("config", "check")
    world.cli("doctor")
    world.cli("doctor", "--json", code=0)
    # cheap's answer echoes the key and fails its gate (whose output shows the answer); frontier waits. What
    # `run` prints about that gate is test_run_log_never_prints_a_key_from_a_gate_output's business.
    world.cli("run", "leaky", code=4, record=False)
    world.cli("run", "errors", code=1)  # 500 then 401 bodies echoing the key
    world.cli("run", "streamy", code=1)  # in-band stream errors echoing the key
    world.cli("run", "limited", "--json", code=1)  # 429s echoing the key
    world.cli("ask", "deepseek:deepseek-flash", "echo-error now", code=1)
    world.cli("ask", "anthropic:claude-sonnet-5-5", "echo-500 now", "--json", code=1)
    world.cli("ask", "gateway:gw-model", "echo-stream now", code=1)
    world.cli("ask", "openai:gpt-5.6-luna", "hello", code=1)  # connection refused
    approvals = world.cli("approvals", "--json", code=0)
    assert '"id"' in approvals.stdout
    world.cli("approve", "1", code=0)
    world.cli("run", "leaky", code=1, record=False)  # the approved frontier answer echoes Anthropic's key
    world.outputs["daemon"] = run_daemon_for_a_while(world)
    world.cli("status")
    world.cli("status", "--json", code=0)
    world.cli("approvals", "--all")
    world.cli("approvals", "--all", "--json", code=0)
    world.cli("ledger", "report", "--by", "run", code=0)
    world.cli("ledger", "report", "--by", "model", "--json", code=0)

    # The scenario did what it claims: every fake was called and sent the key back.
    for name in ("deepseek", "anthropic", "gateway"):
        assert world.fakes[name].model_requests(), f"{name} was never called"
    with Ledger(world.home / "ledger.db") as ledger:
        errors = {r["error_class"] for r in ledger.query("SELECT error_class FROM calls")}
        assert {"auth", "unavailable", "rate_limited"} <= errors, errors
        assert ledger.scalar("SELECT count(*) FROM events WHERE kind = 'gate_checked'") >= 2
        assert ledger.scalar("SELECT count(*) FROM approvals") >= 1
    assert list((world.home / "agents").glob("*/digest.md"))
    assert list((world.home / "agents").glob("*/runs/*.md"))
    assert list((world.home / "agents").glob("*/state.json"))
    assert "[redacted" in "".join(world.outputs.values()) + scan_text(world.home)  # redaction really happened

    leaked = {name: leaks_in(text) for name, text in world.outputs.items() if leaks_in(text)}
    assert not leaked, f"CLI output leaked: {leaked}"
    assert scan_data_dir(world.home) == {}
    assert_no_cross_provider_leak(world)


def scan_text(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in home.rglob("*.md"))


def test_run_log_never_prints_a_key_from_a_gate_output(world: World) -> None:
    plain = world.cli("run", "leaky", code=4)
    as_json = world.cli("run", "leaky", "--json", code=4)
    assert scan_data_dir(world.home) == {}  # the ledger's copy of the same events is clean
    assert not leaks_in(plain.stdout + plain.stderr)
    assert not leaks_in(as_json.stdout + as_json.stderr)


def test_ask_never_prints_a_key_echoed_in_the_answer(world: World) -> None:
    plain = world.cli("ask", "deepseek:deepseek-flash", "echo-answer now", code=0)
    as_json = world.cli("ask", "anthropic:claude-sonnet-5-5", "echo-answer now", "--json", code=0)
    assert scan_data_dir(world.home) == {}
    assert not leaks_in(plain.stdout + plain.stderr)
    assert not leaks_in(as_json.stdout + as_json.stderr)


def test_artifacts_and_plans_never_keep_an_echoed_key(world: World) -> None:
    config = world.config.read_text() + textwrap.dedent(
        """
        [agents.keeper]
        goal = "Keep the answer."
        workspace = "ws"
        ladder = ["cheap"]
        attempts_per_tier = 1
        frontier = "never"

        [[agents.keeper.steps]]
        name = "keep"
        prompt = "echo-answer please"
        output = "kept"
        verify = [{ regex = "key" }]

        [agents.planner]
        goal = "echo-plan"
        workspace = "ws"
        ladder = ["cheap"]
        attempts_per_tier = 1
        frontier = "never"
        tools = ["true"]
        verify = ["true"]
        """
    )
    world.config.write_text(config)
    world.cli("run", "keeper", code=0)
    world.cli("run", "planner", code=1)
    assert scan_data_dir(world.home) == {}


# ------------------------------------------------------------------------------------------------------------
# The TUI


# What each screen shows once its data has loaded (where a leak would be, if there were one).
LOADED = {
    "agents": ("waiting for approval #1", "streamy"),
    "approvals": ("why     cmd: cat answer.txt", "[redacted:DEEPSEEK_API_KEY]"),
    "costs": ("real spend", "By agent"),
    "models": ("anthropic (anthropic)", "API keys (names only)"),
    "alarms": ("no breaker alarms",),
}
RUN_OF = {"leaky": 1, "errors": 2, "streamy": 3}  # the order test_tui_screens_never_show_a_canary runs them in


def test_tui_screens_never_show_a_canary(world: World) -> None:
    from supervisor.tui.app import SupervisorApp

    world.cli("run", "leaky", code=4)
    world.cli("run", "errors", code=1)
    world.cli("run", "streamy", code=1)
    env = {**world.env}
    config = load_config(world.config, env, required=True)
    catalog = load_catalog(default_catalog_dirs(config.catalog_dirs(), env))
    names = [p.api_key_env for p in config.providers.values() if p.api_key_env]
    ledger = Ledger(world.home / "ledger.db", redactor=Redactor.from_environ(env, names))
    screens: dict[str, str] = {}

    async def go() -> None:
        app = SupervisorApp(config, catalog, ledger, None, environ=env)
        async with app.run_test(size=(160, 50)) as pilot:
            await _until(pilot, lambda: app.snapshot is not None)
            await _until(pilot, lambda: "leaky" in _screen_text(app))
            for mode, shown in LOADED.items():
                app.switch_mode(mode)
                await _until_shown(pilot, app, shown, f"the {mode} screen")
                screens[mode] = _screen_text(app)
            app.switch_mode("agents")
            for agent, run_id in RUN_OF.items():
                app.open_agent(agent)
                # The step log down to the run's last event, and the run in the runs table.
                shown = (f"Agent {agent}", f"■ run {run_id} ", f"#{run_id} ")
                await _until_shown(pilot, app, shown, f"agent {agent}")
                screens[f"agent {agent}"] = _screen_text(app)

    asyncio.run(go())
    ledger.close()
    assert "leaky" in screens["agents"]  # the screens show the ledger, or this proves nothing
    assert any("redacted" in text for text in screens.values())
    leaked = {name: leaks_in(text) for name, text in screens.items() if leaks_in(text)}
    assert not leaked, f"TUI screens leaked: {leaked}"


async def _until(pilot: Any, condition: Any, timeout: float = 20.0, what: str = "the TUI") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"{what} never showed what it should"
        await pilot.pause(0.05)


async def _until_shown(pilot: Any, app: Any, shown: tuple[str, ...], what: str) -> None:
    """Until the screen shows every one of ``shown`` (its data has loaded), instead of sleeping a fixed time."""

    def showing() -> bool:
        text = _screen_text(app)
        return all(part in text for part in shown)

    try:
        await _until(pilot, showing, timeout=30.0, what=what)
    except AssertionError:
        raise AssertionError(f"{what} never showed {shown}; it shows:\n{_screen_text(app)[-4000:]}") from None


def _screen_text(app: Any) -> str:
    """What the screen shows, as text: the exported SVG without its markup."""
    svg = app.export_screenshot()
    text = re.sub(r"<[^>]+>", "", svg)
    return html.unescape(text).replace("\xa0", " ")


def test_tui_hosting_a_run_never_shows_a_canary(world: World) -> None:
    from supervisor.control import HostedController
    from supervisor.runtime.runtime import Runtime
    from supervisor.runtime.scheduler import Scheduler
    from supervisor.tui.app import SupervisorApp

    env = {**world.env}
    config = load_config(world.config, env, required=True)
    catalog = load_catalog(default_catalog_dirs(config.catalog_dirs(), env))
    names = [p.api_key_env for p in config.providers.values() if p.api_key_env]
    ledger = Ledger(world.home / "ledger.db", redactor=Redactor.from_environ(env, names))
    runtime = Runtime(config, catalog, ledger, environ=env, home=world.home)
    scheduler = Scheduler(runtime, world.config, register=True, tick_s=0.2)
    screens: dict[str, str] = {}

    def gated() -> bool:
        return bool(ledger.scalar("SELECT count(*) FROM events WHERE kind = 'gate_checked' AND agent = 'leaky'"))

    async def go() -> None:
        app = SupervisorApp(config, catalog, ledger, HostedController(runtime), runtime, scheduler, environ=env)
        async with app.run_test(size=(200, 60)) as pilot:
            await _until(pilot, lambda: app.snapshot is not None)
            app.open_agent("leaky")
            await _until_shown(pilot, app, ("Agent leaky",), "the agent screen")
            app.run_now("leaky")
            await _until(pilot, gated)
            # Until the step log shows the failed gate (the answer it printed) and the run has come to ask for the
            # frontier (the modal repeats the gate's output), so a pass means "not leaked", not "not shown yet".
            shown = ("cat answer.txt", "[redacted:DEEPSEEK_API_KEY]", "Frontier escalation · approval #1")
            await _until_shown(pilot, app, shown, "the hosted run")
            screens["agent leaky"] = _screen_text(app)
            await app.action_quit()

    asyncio.run(go())
    ledger.close()
    assert "leaky" in screens["agent leaky"]
    leaked = {name: leaks_in(text) for name, text in screens.items() if leaks_in(text)}
    assert not leaked, f"TUI screens leaked: {leaked}"


async def test_the_gateway_never_shows_a_provider_or_gateway_key(tmp_path: Path, supervisor_home: Path) -> None:
    """Upstream error bodies, in-band stream errors and 429s that echo the provider key back go through the
    gateway to an official SDK: neither the provider keys nor the caller's gateway key appear in what the client
    gets, the ledger, its events, or any request sent upstream."""
    import anthropic
    import openai

    from tests.gateway_harness import PROVIDER_KEYS, running_gateway

    canaries = dict(PROVIDER_KEYS)

    def echo(header: str, status: int) -> Any:
        return lambda req: HttpError(status, f"invalid key {req.headers.get(header)}")

    async with running_gateway(tmp_path) as g:
        gateway_key = g.key()
        canaries["GATEWAY_KEY"] = gateway_key
        seen: list[str] = []
        g.openai.responder = echo("authorization", 401)
        oai = g.track(openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=gateway_key, max_retries=0))
        with pytest.raises(openai.APIStatusError) as first:
            await oai.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "x"}])
        seen.append(first.value.response.text)
        g.openai.responder = echo("authorization", 429)
        with pytest.raises(openai.APIStatusError) as second:
            await oai.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "x"}], stream=True)
        seen.append(second.value.response.text)
        g.anthropic.enqueue(MidStreamError(message=f"overloaded; key {PROVIDER_KEYS['ANTHROPIC_API_KEY']}"))
        anth = g.track(anthropic.AsyncAnthropic(base_url=g.url, api_key=gateway_key, max_retries=0))

        async def read_stream() -> None:
            async with anth.messages.stream(
                model="frontier", max_tokens=8, messages=[{"role": "user", "content": "x"}]
            ) as stream:
                async for _ in stream:
                    pass

        with pytest.raises(anthropic.APIStatusError) as third:
            await read_stream()
        seen.append(str(third.value))
        assert len(g.calls()) == 3
        for text in seen:
            assert not [n for n, v in canaries.items() if v in text], text
        dump = "\n".join(g.ledger.conn.iterdump())
        assert not [n for n, v in canaries.items() if v in dump]
        for fake in (g.openai, g.anthropic, g.ollama):
            for req in fake.requests:
                assert gateway_key not in req.body.decode(errors="replace")
                assert gateway_key not in str(req.headers)
