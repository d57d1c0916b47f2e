"""A real agent program that nobody here wrote: Aider, installed from PyPI into its own virtualenv, runs as an
`agent` step against the gateway.

The local tier (a loopback Ollama fake) answers in Aider's "whole" edit format with a wrong fix: the gate fails,
the workspace is put back byte for byte, and the cheap tier (a loopback OpenAI-compatible fake) answers with the
right one, which Aider applies and the gate accepts. Aider reaches both through the gateway with the attempt's
key (LiteLLM reads ``OPENAI_API_BASE`` and ``OPENAI_API_KEY``); the ledger has its calls per attempt.

The virtualenv is cached under ``.pytest_cache`` (keyed by the pinned version) so local runs install once; CI
installs it fresh. A failure to install fails the test, everywhere: it never skips. Aider runs with a network
guard (a ``sitecustomize`` that refuses and records any non-loopback connection or name lookup), and the test
checks that Aider tried none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.config import load_config
from supervisor.gateway.server import run_gateway
from supervisor.ledger import Ledger
from supervisor.runtime.events import Escalated, Event, ProgramFinished, ProgramOutput, WorkspaceRestored
from supervisor.runtime.runtime import Runtime
from supervisor.secrets import Redactor
from tests.conftest import REPO
from tests.fakes.base import RecordedRequest, Reply
from tests.fakes.ollama import OllamaFake
from tests.fakes.openai import OpenAIFake
from tests.helpers import tree_digest

AIDER_VERSION = "0.86.2"
INSTALL_TIMEOUT_S = 900
pytestmark = [pytest.mark.slow, pytest.mark.timeout(INSTALL_TIMEOUT_S + 300)]

BUGGY = "def add(a, b):\n    return a - b\n"
WRONG = "def add(a, b):\n    return a * b\n"
FIXED = "def add(a, b):\n    return a + b\n"
TEST = "from calc import add\n\nassert add(2, 3) == 5, f'add(2, 3) = {add(2, 3)}'\nprint('ok')\n"
KEYS = {"DEEPSEEK_API_KEY": "sk-deepseek-CANARY-0123456789abcdef"}


# Aider's "whole" edit format (aider/coders/wholefile_prompts.py): the file's path alone on a line, then the whole
# new content in a fence.
def whole(path: str, content: str) -> str:
    return f"I will fix add().\n\n{path}\n```\n{content}```\n"


NETWORK_GUARD = textwrap.dedent(
    '''
    """Refuse and record any connection (or name lookup) past loopback: the test reads the record."""
    import ipaddress
    import os
    import socket

    _LOG = os.environ.get("NETWORK_GUARD_LOG", "")
    _connect = socket.socket.connect
    _connect_ex = socket.socket.connect_ex
    _getaddrinfo = socket.getaddrinfo


    def _note(what):
        if _LOG:
            with open(_LOG, "a") as log:
                log.write(what + "\\n")


    def _loopback(host):
        if host in (None, "", "localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


    def connect(self, address):
        if isinstance(address, tuple) and not _loopback(address[0]):
            _note(f"connect {address!r}")
            raise OSError(f"network guard: {address!r} is not loopback")
        return _connect(self, address)


    def connect_ex(self, address):
        if isinstance(address, tuple) and not _loopback(address[0]):
            _note(f"connect {address!r}")
            raise OSError(f"network guard: {address!r} is not loopback")
        return _connect_ex(self, address)


    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if not _loopback(name):
            _note(f"lookup {name!r}")
            raise socket.gaierror(f"network guard: {name!r} is not loopback")
        return _getaddrinfo(host, *args, **kwargs)


    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    '''
)


@pytest.fixture(scope="session")
def aider_bin() -> Path:
    """Aider from PyPI in its own virtualenv, installed once per version and kept under .pytest_cache."""
    venv = REPO / ".pytest_cache" / f"aider-venv-{AIDER_VERSION}"
    done = venv / ".installed"
    aider = venv / "bin" / "aider"
    if done.exists() and aider.exists():
        return aider
    shutil.rmtree(venv, ignore_errors=True)
    started = time.monotonic()
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", f"aider-chat=={AIDER_VERSION}"],
    ]
    for step in steps:
        try:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"installing aider-chat=={AIDER_VERSION} took over {INSTALL_TIMEOUT_S} s", pytrace=False)
        if proc.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            pytest.fail(
                f"could not install aider-chat=={AIDER_VERSION} (`{' '.join(step)}` exited {proc.returncode}): "
                f"{(proc.stdout + proc.stderr)[-3000:]}",
                pytrace=False,
            )
    if not aider.exists():
        pytest.fail(f"aider-chat=={AIDER_VERSION} installed no `aider` program in {venv}", pytrace=False)
    done.write_text(f"aider-chat=={AIDER_VERSION} installed in {time.monotonic() - started:.0f} s\n")
    print(f"\ninstalled aider-chat=={AIDER_VERSION} in {time.monotonic() - started:.0f} s")
    return aider


async def test_aider_from_pypi_runs_as_an_agent_step_and_its_edit_passes_the_gate(
    tmp_path: Path, aider_bin: Path
) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "calc.py").write_text(BUGGY)
    (workspace / "test_calc.py").write_text(TEST)
    original = tree_digest(workspace)
    outside = tmp_path / "aider"  # Aider's home, histories, model metadata and network guard: not the workspace
    (outside / "home").mkdir(parents=True)
    (outside / "guard").mkdir()
    (outside / "guard" / "sitecustomize.py").write_text(NETWORK_GUARD)
    net_log = outside / "network.log"
    metadata = outside / "models.json"
    metadata.write_text(
        json.dumps(
            {
                f"openai/{tier}": {
                    "max_input_tokens": 32768,
                    "max_output_tokens": 4096,
                    "input_cost_per_token": 0,
                    "output_cost_per_token": 0,
                    "litellm_provider": "openai",
                    "mode": "chat",
                }
                for tier in ("local", "cheap", "frontier")
            }
        )
    )
    # The Aider recipe from the README ("Agent steps"), plus what a test needs: a home of its own, no update
    # check or analytics, the model metadata it would otherwise fetch, and the network guard.
    command = (
        f"HOME={outside / 'home'} PYTHONPATH={outside / 'guard'} NETWORK_GUARD_LOG={net_log} "
        f"LITELLM_LOCAL_MODEL_COST_MAP=True {aider_bin} --model openai/{{model}} --edit-format whole "
        "--yes-always --no-git --message-file {task_file} --no-check-update --no-show-release-notes "
        "--analytics-disable --no-detect-urls --map-tokens 0 --no-auto-lint --no-pretty --no-show-model-warnings "
        f"--model-metadata-file {metadata} --chat-history-file {outside / 'chat.md'} "
        f"--input-history-file {outside / 'input.txt'} calc.py"
    )
    with (
        OllamaFake(models=("qwen3:4b",)) as local,
        OpenAIFake(dialect="deepseek", models=("deepseek-flash",)) as cheap,
    ):
        local.responder = lambda _req: Reply(whole("calc.py", WRONG), input_tokens=900, output_tokens=40)
        seen: list[dict[str, str]] = []

        def cheap_reply(_req: RecordedRequest) -> Any:
            seen.append(tree_digest(workspace))
            return Reply(whole("calc.py", FIXED), input_tokens=1100, output_tokens=42)

        cheap.responder = cheap_reply
        config_path = tmp_path / "supervisor.toml"
        config_path.write_text(
            textwrap.dedent(
                f"""
                [providers.ollama]
                kind = "ollama"
                host = "{local.url}"
                max_retries = 0

                [providers.deepseek]
                kind = "openai_compat"
                base_url = "{cheap.url}"
                api_key_env = "DEEPSEEK_API_KEY"
                max_retries = 0

                [tiers]
                local = ["ollama:qwen3:4b"]
                cheap = ["deepseek:deepseek-flash"]

                [agents.fixer]
                goal = "Keep calc's tests passing."
                workspace = "ws"
                frontier = "never"
                attempts_per_tier = 1
                ladder = ["local", "cheap"]

                [[agents.fixer.steps]]
                name = "fix"
                agent = {{ cmd = {json.dumps(command)}, timeout_s = 300 }}
                task = "Fix add() in calc.py so that `python test_calc.py` passes."
                verify = [{json.dumps(f"{sys.executable} test_calc.py")}]
                """
            )
        )
        environ = {**os.environ, **KEYS}
        home = Path(os.environ["SUPERVISOR_HOME"])
        ledger = Ledger(home / "ledger.db", redactor=Redactor.from_environ(environ))
        config = load_config(config_path, environ, required=True)
        runtime = Runtime(
            config,
            load_catalog(default_catalog_dirs()),
            ledger,
            environ=environ,
            home=home,
            gateway_factory=run_gateway,
        )
        events: list[Event] = []
        runtime.bus.subscribe(events.append)
        try:
            result = await runtime.run_agent("fixer")
        finally:
            await runtime.aclose()
        local_bodies, cheap_bodies = local.model_bodies(), cheap.model_bodies()

    output = "".join(e.text for e in events if isinstance(e, ProgramOutput))
    assert result.outcome == "success", f"{result.reason}\n{output[-3000:]}"
    assert result.tier_reached == "cheap"
    assert [(e.from_tier, e.to_tier) for e in events if isinstance(e, Escalated)] == [("local", "cheap")]
    assert any(isinstance(e, WorkspaceRestored) and e.scope == "attempt" for e in events)
    assert seen
    assert seen[0] == original
    assert (workspace / "calc.py").read_text() == FIXED
    assert sorted(p.name for p in workspace.iterdir() if p.name != "__pycache__") == ["calc.py", "test_calc.py"]
    # It was Aider: its own whole-file system prompt, our task (and on the retry, the failure) as the message.
    system = cheap_bodies[0]["messages"][0]["content"]
    assert "file listing" in system
    asked = json.dumps(cheap_bodies[0]["messages"])
    assert "Fix add() in calc.py" in asked
    assert "add(2, 3) = 6" in asked
    assert "Fix add() in calc.py" in json.dumps(local_bodies[0])
    assert "Applied edit to calc.py" in output
    # Every call through the gateway, per attempt, with the attempt's tier as the model asked for.
    rows = [
        dict(r)
        for r in ledger.query(
            "SELECT attempt, tier, provider, requested_model, input_uncached, output, cost_micros, priced, via, auth "
            "FROM calls ORDER BY id"
        )
    ]
    assert [(r["attempt"], r["tier"], r["provider"], r["requested_model"]) for r in rows] == [
        (1, "local", "ollama", "local"),
        (2, "cheap", "deepseek", "cheap"),
    ]
    assert all((r["via"], r["auth"], r["priced"]) == ("gateway", "key", 1) for r in rows)
    assert (rows[1]["input_uncached"], rows[1]["output"]) == (1100, 42)
    assert rows[1]["cost_micros"] > 0
    finished = [e for e in events if isinstance(e, ProgramFinished)]
    assert [(e.tier, e.exit_code, e.calls) for e in finished] == [("local", 0, 1), ("cheap", 0, 1)]
    # Aider tried no connection past loopback (update checks, analytics, model metadata).
    assert not net_log.exists(), net_log.read_text()
    ledger.close()
