"""``supervisor gateway`` as a real process: it announces itself with one line, serves the official SDK, stops
cleanly on SIGTERM with a request in flight (its hold settled, nothing left reserved), and a SIGKILL mid-stream
leaves a ledger that the next start reconciles (no hold left open, the cut call charged at its worst case)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from supervisor.ledger import Ledger
from tests.fakes.base import Reply
from tests.fakes.openai import OpenAIFake, RawStream
from tests.gateway_harness import PROVIDER_KEYS

pytestmark = pytest.mark.timeout(120)

CONFIG = """
[gateway]
shutdown_grace_s = 1.0

[providers.deepseek]
kind = "openai_compat"
base_url = "{url}"
api_key_env = "DEEPSEEK_API_KEY"
max_retries = 0

[tiers]
cheap = ["deepseek:deepseek-flash"]

[agents.script]
goal = "an SDK script"
ladder = ["cheap"]
"""

CHUNK = (
    b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"deepseek-flash",'
    b'"choices":[{"index":0,"delta":{"content":"tick "},"finish_reason":null}]}\n\n'
)
LINE = re.compile(r"^gateway listening on (http://127\.0\.0\.1:(\d+))$")


def supervisor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args], env=env, capture_output=True, text=True, timeout=60
    )


@contextmanager
def gateway_process(config: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "gateway", "--config", str(config), "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().rstrip("\n")
        match = LINE.match(first)
        assert match, (first, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting")


def held_and_sent(ledger_path: Path) -> bool:
    with Ledger(ledger_path, migrate=False) as ledger:
        return bool(ledger.query("SELECT 1 FROM reservations WHERE state = 'held' AND sent = 1"))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[OpenAIFake, Path, dict[str, str], str]]:
    with OpenAIFake(dialect="deepseek", models=("deepseek-flash",)) as fake:
        config = tmp_path / "supervisor.toml"
        config.write_text(CONFIG.format(url=fake.url))
        env = {**os.environ, **PROVIDER_KEYS}
        created = supervisor("keys", "create", "script", "--json", "--config", str(config), env=env)
        assert created.returncode == 0, created.stderr
        key = json.loads(created.stdout)
        assert key["agent"] == "script"
        assert key["key"].startswith("sk-sup-")
        assert key["id"] == 1
        listed = supervisor("keys", "list", "--config", str(config), env=env)
        assert key["key"] not in listed.stdout
        assert key["key"][:12] in listed.stdout
        yield fake, config, env, key["key"]


def test_sigterm_with_a_request_in_flight_settles_it_and_exits_cleanly(
    setup: tuple[OpenAIFake, Path, dict[str, str], str],
) -> None:
    fake, config, env, key = setup
    ledger_path = Path(env["SUPERVISOR_HOME"]) / "ledger.db"
    with gateway_process(config, env) as (proc, url):
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        fake.enqueue(Reply("served", input_tokens=9, output_tokens=2))
        reply = client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "served"
        fake.enqueue(RawStream((CHUNK,), forever=True, interval_s=0.05))
        errors: list[BaseException] = []

        def stream() -> None:
            try:
                for _ in client.chat.completions.create(
                    model="cheap", messages=[{"role": "user", "content": "go"}], stream=True
                ):
                    pass
            except Exception as exc:
                errors.append(exc)

        thread = threading.Thread(target=stream)
        thread.start()
        wait_for(lambda: held_and_sent(ledger_path))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        thread.join(10)
    with Ledger(ledger_path) as ledger:
        assert ledger.held_reservations() == []
        first, second = reversed(ledger.calls())
        assert first["priced"] == 1
        assert first["output"] == 2
        assert second["priced"] == 0  # cut by the shutdown: the provider may bill it, so its worst case stays
        assert second["unpriced_reason"].endswith("usage unknown")
        states = [r[0] for r in ledger.query("SELECT state FROM reservations ORDER BY id")]
        assert states == ["settled", "settled_unpriced"]


def test_sigkill_mid_stream_leaves_a_ledger_the_next_start_reconciles(
    setup: tuple[OpenAIFake, Path, dict[str, str], str],
) -> None:
    fake, config, env, key = setup
    ledger_path = Path(env["SUPERVISOR_HOME"]) / "ledger.db"
    with gateway_process(config, env) as (proc, url):
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        fake.enqueue(RawStream((CHUNK,), forever=True, interval_s=0.05))
        got: list[str] = []

        def stream() -> None:
            try:
                for chunk in client.chat.completions.create(
                    model="cheap", messages=[{"role": "user", "content": "go"}], stream=True
                ):
                    got.append(chunk.choices[0].delta.content or "")
            except Exception:
                pass

        thread = threading.Thread(target=stream)
        thread.start()
        wait_for(lambda: len(got) >= 3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        thread.join(10)
    with Ledger(ledger_path) as ledger:
        assert ledger.integrity_check() == "ok"
        [held] = ledger.held_reservations()  # the dead process's hold is still there until someone reconciles
        amount = held["amount_micros"]
    with gateway_process(config, env) as (proc, _url):  # its start reconciles
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    with Ledger(ledger_path) as ledger:
        assert ledger.integrity_check() == "ok"
        assert ledger.held_reservations() == []
        [row] = ledger.calls()
        assert row["priced"] == 0
        assert row["error_class"] == "interrupted"
        assert ledger.spend(agent="script").micros == amount  # the cut call is charged its worst case, never $0


def test_approve_a_window_from_the_cli(setup: tuple[OpenAIFake, Path, dict[str, str], str]) -> None:
    _fake, config, env, _key = setup
    with Ledger(Path(env["SUPERVISOR_HOME"]) / "ledger.db") as ledger:
        approval_id = ledger.request_approval(
            agent="script",
            run_id=None,
            step="gateway",
            tier="frontier",
            model="anthropic:claude-sonnet-5-5",
            reason="gateway request",
            est_cold_micros=1000,
            est_warm_micros=1000,
            caps_left={},
        )
    done = supervisor("approve", str(approval_id), "--window", "15m", "--up-to", "2", "--config", str(config), env=env)
    assert done.returncode == 0, done.stderr
    assert "window" in done.stdout
    with Ledger(Path(env["SUPERVISOR_HOME"]) / "ledger.db") as ledger:
        row = ledger.approval(approval_id)
        assert row is not None
        assert row.state == "approved"
        assert row.budget_micros == 2_000_000
        assert row.window_until is not None
    bad = supervisor("approve", str(approval_id), "--up-to", "2", "--config", str(config), env=env)
    assert bad.returncode == 2


def test_the_daemon_serves_the_gateway_when_the_config_has_a_gateway_table(
    setup: tuple[OpenAIFake, Path, dict[str, str], str], tmp_path: Path
) -> None:
    fake, config, env, key = setup
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config.write_text(config.read_text().replace("shutdown_grace_s = 1.0", f"shutdown_grace_s = 1.0\nport = {port}"))
    log = tmp_path / "daemon.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "daemon", "--config", str(config)], env=env, stdout=out, stderr=out
        )
    try:
        wait_for(lambda: f"gateway listening on http://127.0.0.1:{port}" in log.read_text())
        fake.enqueue(Reply("from the daemon's gateway", input_tokens=5, output_tokens=4))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == "from the daemon's gateway"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert "Traceback" not in log.read_text()
    with Ledger(Path(env["SUPERVISOR_HOME"]) / "ledger.db") as ledger:
        [row] = ledger.calls(agent="script")
        assert row["via"] == "gateway"
        assert ledger.held_reservations() == []
