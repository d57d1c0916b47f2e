"""Offline: every API endpoint unreachable (a closed port, a server that never answers, a black hole that drops
connection attempts). Local-only agents still complete, API tiers are reported unavailable quickly (the
health probes give up after 2 s; calls fail as ``BackendUnavailable``), ``--offline`` / ``offline = true`` /
``SUPERVISOR_OFFLINE=1`` never contact an API at all, and nothing hangs (pytest-timeout on every test).

Elapsed times are only checked against generous bounds (they catch a hang, not slowness).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.backends.registry import make_backend
from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.config import ProviderConfig, load_config
from supervisor.ledger import Ledger
from supervisor.runtime.runtime import RunResult, Runtime
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.openai import OpenAIFake
from tests.helpers import tree_digest

pytestmark = pytest.mark.timeout(150)

GENEROUS_S = 30.0  # a hang-catcher, not a speed test: every probe here has a timeout of a few seconds, and
# a probe without one would wait on the silent server forever; a loaded CI machine may take 10 s to start Python
KEYS = {"DEEPSEEK_API_KEY": "sk-offline-0001", "ANTHROPIC_API_KEY": "sk-ant-offline-0001", "OPENAI_API_KEY": "sk-oa-01"}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A port whose accept queue is full: new connection attempts are dropped, as by a firewall."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    address = server.getsockname()
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(address)
        fillers.append(filler)
    time.sleep(0.05)
    try:
        yield f"http://{address[0]}:{address[1]}"
    finally:
        for filler in fillers:
            filler.close()
        server.close()


class SilentServer:
    """Accepts every connection and never reads or answers (until stopped): health probes included."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


LOCAL_SCRIPT = """
[[answer]]
match = "Write the greeting"
text = "hello world"
delay_s = 0.05

[[answer]]
match = "Fix the impossible"
text = "no"
"""

CONFIG = """
{top}
[providers.sim-local]
kind = "scripted"
local = true
simulated_as = "mlx:smollm2-135m"
script = "local.toml"

[providers.deepseek]
kind = "openai_compat"
base_url = "{deepseek}"
api_key_env = "DEEPSEEK_API_KEY"
max_retries = {retries}
connect_timeout_s = 0.5

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key_env = "ANTHROPIC_API_KEY"
max_retries = {retries}
connect_timeout_s = 0.5

[providers.openai]
kind = "openai_compat"
base_url = "{openai}"
api_key_env = "OPENAI_API_KEY"
max_retries = {retries}
connect_timeout_s = 0.5

[providers.ollama]
kind = "ollama"
host = "{ollama}"
local = true
max_retries = {retries}
connect_timeout_s = 0.5

[tiers]
local = ["sim-local:tiny"]
cheap = ["deepseek:deepseek-flash", "openai:gpt-5.6-luna"]
frontier = ["anthropic:claude-sonnet-5-5"]

[agents.greeter]
goal = "Write greeting.txt."
workspace = "ws"
ladder = ["local"]

[[agents.greeter.steps]]
name = "greet"
prompt = "Write the greeting."
writes = "greeting.txt"
verify = ["grep -q 'hello world' greeting.txt"]

[agents.climber]
goal = "Needs more than local."
workspace = "ws"
ladder = ["local", "cheap", "frontier"]
attempts_per_tier = 1
frontier = "allow"

[[agents.climber.steps]]
name = "fix"
prompt = "Fix the impossible thing."
writes = "fix.txt"
verify = ["grep -q yes fix.txt"]
timeout_s = {timeout}
"""


def write_project(
    tmp_path: Path, urls: dict[str, str], *, top: str = "", retries: int = 0, timeout: float = 1.0
) -> Path:
    (tmp_path / "ws").mkdir(exist_ok=True)
    (tmp_path / "ws" / "keep.txt").write_text("keep\n")
    (tmp_path / "local.toml").write_text(LOCAL_SCRIPT)
    config = tmp_path / "supervisor.toml"
    config.write_text(textwrap.dedent(CONFIG).format(top=top, retries=retries, timeout=timeout, **urls))
    return config


def run_in_process(config_path: Path, agent: str, environ: dict[str, str]) -> tuple[RunResult, Runtime]:
    config = load_config(config_path, environ, required=True)
    catalog = load_catalog(default_catalog_dirs(environ=environ))
    home = Path(environ["SUPERVISOR_HOME"])
    runtime = Runtime(config, catalog, Ledger(home / "ledger.db"), environ=environ, home=home)

    async def go() -> RunResult:
        try:
            return await runtime.run_agent(agent)
        finally:
            await runtime.aclose()

    return asyncio.run(go()), runtime


def supervisor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def unreachable_urls(silent: SilentServer, hole: str) -> dict[str, str]:
    return {"deepseek": closed_port_url(), "openai": hole, "anthropic": silent.url, "ollama": silent.url}


# ------------------------------------------------------------------------------------------------------------
# Local-only agents complete


def test_local_only_agents_complete_with_every_api_unreachable(tmp_path: Path, silent: SilentServer) -> None:
    with black_hole() as hole:
        config = write_project(tmp_path, unreachable_urls(silent, hole))
        env = {**os.environ, **KEYS}
        started = time.monotonic()
        done = supervisor("run", "greeter", "--config", str(config), env=env)
        elapsed = time.monotonic() - started
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert (tmp_path / "ws" / "greeting.txt").read_text() == "hello world\n"
    assert elapsed < GENEROUS_S * 2
    assert not silent.accepted  # nothing tried to reach an API
    with Ledger(Path(env["SUPERVISOR_HOME"]) / "ledger.db") as ledger:
        calls = ledger.calls()
    assert [c["tier"] for c in calls] == ["local"]


@pytest.fixture(scope="module")
def tiny_mlx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (pip install 'frugal-supervisor[mlx]')")
    from tests.fakes.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny")


def test_a_real_local_model_completes_with_every_api_unreachable(
    tmp_path: Path, silent: SilentServer, tiny_mlx_model: Path
) -> None:
    """The real (tiny, random) MLX model as the local tier: it needs no network either."""
    with black_hole() as hole:
        config = write_project(tmp_path, unreachable_urls(silent, hole))
        text = config.read_text().replace('local = ["sim-local:tiny"]', 'local = ["mlx:tiny"]')
        text += textwrap.dedent(
            f"""
            [providers.mlx]
            kind = "mlx"
            local = true
            context_window = 512
            models = {{ tiny = "{tiny_mlx_model}" }}

            [agents.babbler]
            goal = "Say anything."
            workspace = "ws"
            ladder = ["local"]
            memory_tokens = 100

            [[agents.babbler.steps]]
            name = "say"
            prompt = "Say."
            writes = "said.txt"
            max_output_tokens = 8
            verify = ["test -s said.txt"]
            """
        )
        config.write_text(text)
        done = supervisor("run", "babbler", "--config", str(config), env={**os.environ, **KEYS})
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert (tmp_path / "ws" / "said.txt").read_text().strip()
    assert not silent.accepted


# ------------------------------------------------------------------------------------------------------------
# API tiers are reported unavailable, quickly


@pytest.mark.parametrize("kind", ["openai_compat", "anthropic", "ollama"])
@pytest.mark.parametrize("endpoint", ["closed", "silent", "black-hole"])
def test_health_probes_report_unreachable_apis_quickly(silent: SilentServer, kind: str, endpoint: str) -> None:
    with black_hole() as hole:
        url = {"closed": closed_port_url(), "silent": silent.url, "black-hole": hole}[endpoint]
        if kind == "ollama":
            pcfg = ProviderConfig(kind="ollama", host=url, local=True)
        else:
            pcfg = ProviderConfig(kind=kind, base_url=url, api_key_env="ANTHROPIC_API_KEY")  # type: ignore[arg-type]
        backend = make_backend("probe", pcfg, KEYS)

        async def probe() -> Any:
            try:
                return await backend.health()
            finally:
                await backend.aclose()

        started = time.monotonic()
        health = asyncio.run(probe())
        elapsed = time.monotonic() - started
    assert health.ok is False, health
    assert health.detail
    assert elapsed < GENEROUS_S, f"the health probe took {elapsed:.1f} s"


@pytest.mark.parametrize("endpoint", ["closed", "silent"])
def test_doctor_reports_an_unreachable_ollama(silent: SilentServer, endpoint: str) -> None:
    host = closed_port_url() if endpoint == "closed" else silent.url
    env = {**os.environ, **KEYS, "OLLAMA_HOST": host}
    started = time.monotonic()
    done = supervisor("doctor", "--json", env=env)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ollama"]["reachable"] is False
    assert report["ollama"]["host"] == host
    assert elapsed < GENEROUS_S


def test_an_agent_that_needs_an_api_fails_fast_and_records_why(tmp_path: Path, silent: SilentServer) -> None:
    """Local fails its gate; cheap is a closed port and a black hole, frontier never answers: every call is
    recorded as unavailable or timed out, the run ends, the workspace is intact."""
    with black_hole() as hole:
        config = write_project(tmp_path, unreachable_urls(silent, hole), timeout=2.0)
        before = tree_digest(tmp_path / "ws")
        env = {**os.environ, **KEYS}
        started = time.monotonic()
        result, runtime = run_in_process(config, "climber", env)
        elapsed = time.monotonic() - started
    assert result.outcome == "exhausted", result
    calls = list(reversed(runtime.ledger.calls(run_id=result.run_id)))
    classes = [(c["provider"], c["error_class"]) for c in calls]
    assert classes == [
        ("sim-local", None),
        ("deepseek", "unavailable"),
        ("openai", "unavailable"),
        ("anthropic", "timeout"),
    ], classes
    assert tree_digest(tmp_path / "ws") == before
    assert runtime.ledger.held_reservations() == []
    assert elapsed < GENEROUS_S * 2


# ------------------------------------------------------------------------------------------------------------
# Offline mode never contacts an API


@pytest.fixture
def answering_fakes() -> Iterator[dict[str, Any]]:
    """API fakes that would answer: any request they receive is a failure of offline mode."""
    fakes = {"deepseek": OpenAIFake(dialect="deepseek"), "openai": OpenAIFake(), "anthropic": AnthropicFake()}
    for fake in fakes.values():
        fake.start()
    yield fakes
    for fake in fakes.values():
        fake.stop()


@pytest.mark.parametrize("way", ["config", "flag", "env"])
def test_offline_never_contacts_the_api_fakes(tmp_path: Path, answering_fakes: dict[str, Any], way: str) -> None:
    urls = {
        "deepseek": answering_fakes["deepseek"].url,
        "openai": answering_fakes["openai"].url,
        "anthropic": answering_fakes["anthropic"].url,
        "ollama": closed_port_url(),
    }
    config = write_project(tmp_path, urls, top="offline = true" if way == "config" else "")
    env = {**os.environ, **KEYS, **({"SUPERVISOR_OFFLINE": "1"} if way == "env" else {})}
    flags = ("--offline",) if way == "flag" else ()
    greet = supervisor("run", "greeter", "--config", str(config), *flags, env=env)
    assert greet.returncode == 0, (greet.stdout, greet.stderr)
    climb = supervisor("run", "climber", "--config", str(config), *flags, env=env)
    assert climb.returncode == 3, (climb.stdout, climb.stderr)  # deferred: the step needs a tier above local
    assert "offline" in climb.stdout
    ask = supervisor("ask", "deepseek:deepseek-flash", "hello", "--config", str(config), *flags, env=env)
    assert ask.returncode != 0, (ask.stdout, ask.stderr)
    assert "offline" in ask.stderr, (ask.stdout, ask.stderr)
    status = supervisor("status", "--config", str(config), *flags, env=env)
    assert status.returncode == 0
    assert "offline" in status.stdout
    for name, fake in answering_fakes.items():
        assert not fake.requests, f"offline mode sent {len(fake.requests)} request(s) to {name}"
