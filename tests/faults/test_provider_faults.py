"""Provider faults from the loopback fakes, through whole runs against real protocol backends.

Each provider is configured as a real one (``[providers.deepseek] base_url = <fake>``, a dummy key in the
environment) and the fake misbehaves: 429 with Retry-After, 500/503/529, a refused connection, a server that
accepts and never answers, a stream cut mid-way, malformed JSON, usage missing. Every run must end normally
(no exception out of ``run_agent``, no traceback from ``supervisor run``), record what happened (a run
outcome, and call rows with an ``error_class`` or the unpriced flag), and leave the workspace intact.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.config import load_config
from supervisor.ledger import Ledger
from supervisor.runtime.runtime import RunResult, Runtime
from supervisor.secrets import Redactor
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import Behavior, CutStream, FakeServer, Hang, HttpError, Malformed, MidStreamError, NoUsage, Reply
from tests.fakes.ollama import OllamaFake
from tests.fakes.openai import OpenAIFake, RawStream
from tests.helpers import tree_digest

pytestmark = pytest.mark.timeout(90)

KEYS = {"DEEPSEEK_API_KEY": "sk-dummy-deepseek-0001", "ANTHROPIC_API_KEY": "sk-ant-dummy-0001"}
RIGHT = "right answer"
FILES = {"answer.txt": "old answer\n", "notes/keep.md": "keep me\n"}


@dataclass(frozen=True)
class Kind:
    """One protocol: how to start its fake and how to configure it as a provider serving one tier."""

    name: str
    tier: str
    model: str
    fake: Callable[[], FakeServer]
    provider: str  # TOML for [providers.X], with {url} and {retries}


KINDS = {
    "openai": Kind(
        "openai",
        "cheap",
        "deepseek:deepseek-flash",
        lambda: OpenAIFake(dialect="deepseek"),
        """
        [providers.deepseek]
        kind = "openai_compat"
        base_url = "{url}"
        api_key_env = "DEEPSEEK_API_KEY"
        max_retries = {retries}
        connect_timeout_s = 2
        """,
    ),
    "anthropic": Kind(
        "anthropic",
        "frontier",
        "anthropic:claude-sonnet-5-5",
        AnthropicFake,
        """
        [providers.anthropic]
        kind = "anthropic"
        base_url = "{url}"
        api_key_env = "ANTHROPIC_API_KEY"
        max_retries = {retries}
        connect_timeout_s = 2
        """,
    ),
    "ollama": Kind(
        "ollama",
        "local",
        "ollama:qwen3:4b",
        OllamaFake,
        """
        [providers.ollama]
        kind = "ollama"
        host = "{url}"
        local = true
        max_retries = {retries}
        connect_timeout_s = 2
        """,
    ),
}

AGENT = """
[tiers]
{tier} = ["{model}"]

[agents.writer]
goal = "Write the answer."
workspace = "ws"
ladder = ["{tier}"]
attempts_per_tier = {attempts}
frontier = "allow"

[[agents.writer.steps]]
name = "answer"
prompt = "Write the answer."
writes = "answer.txt"
verify = [{{ regex = "^right" }}]
timeout_s = {timeout}
max_output_tokens = 200
"""


@dataclass
class Setup:
    kind: Kind
    url: str
    config: Path
    workspace: Path
    home: Path
    environ: dict[str, str]

    def ledger(self) -> Ledger:
        return Ledger(self.home / "ledger.db", redactor=Redactor.from_environ(self.environ))

    def run(self) -> tuple[RunResult, float]:
        """One whole run in-process; any exception escaping ``run_agent`` fails the test."""
        config = load_config(self.config, self.environ, required=True)
        catalog = load_catalog(default_catalog_dirs(environ=self.environ))
        runtime = Runtime(config, catalog, self.ledger(), environ=self.environ, home=self.home)

        async def go() -> RunResult:
            try:
                return await runtime.run_agent("writer")
            finally:
                await runtime.aclose()

        started = time.monotonic()
        result = asyncio.run(go())
        return result, time.monotonic() - started

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.environ,
            check=False,
        )


def make_setup(
    tmp_path: Path, kind: Kind, url: str, *, retries: int = 1, attempts: int = 1, timeout: float = 20
) -> Setup:
    workspace = tmp_path / "ws"
    for rel, text in FILES.items():
        (workspace / rel).parent.mkdir(parents=True, exist_ok=True)
        (workspace / rel).write_text(text)
    config = tmp_path / "supervisor.toml"
    config.write_text(
        textwrap.dedent(kind.provider).format(url=url, retries=retries)
        + textwrap.dedent(AGENT).format(tier=kind.tier, model=kind.model, attempts=attempts, timeout=timeout)
    )
    environ = {**os.environ, **KEYS}
    return Setup(kind, url, config, workspace, Path(os.environ["SUPERVISOR_HOME"]), environ)


@pytest.fixture
def serve() -> Iterator[Callable[[str], FakeServer]]:
    started: list[FakeServer] = []

    def start(kind: str) -> FakeServer:
        fake = KINDS[kind].fake().start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def script(fake: FakeServer, *behaviors: Any, then: Any = None) -> list[float]:
    """Answer model calls with ``behaviors`` in order, then ``then`` forever; returns each call's arrival time."""
    pending = list(behaviors)
    arrivals: list[float] = []

    def respond(_req: Any) -> Behavior:
        arrivals.append(time.monotonic())
        if pending:
            return pending.pop(0)  # type: ignore[no-any-return]
        return then if then is not None else Reply(RIGHT)  # type: ignore[no-any-return]

    fake.responder = respond
    return arrivals


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def calls_of(setup: Setup, run_id: int) -> list[dict[str, Any]]:
    with setup.ledger() as ledger:
        return list(reversed(ledger.calls(run_id=run_id)))


def assert_recorded(setup: Setup, result: RunResult, *, outcome: str) -> list[dict[str, Any]]:
    """The run ended with ``outcome``, every call row says what happened, no reservation is left held."""
    assert result.outcome == outcome, (result.outcome, result.reason)
    with setup.ledger() as ledger:
        run = ledger.run(result.run_id)
        assert run is not None
        assert run["outcome"] == outcome
        assert ledger.held_reservations() == []
        assert ledger.integrity_check() == "ok"
    calls = calls_of(setup, result.run_id)
    assert calls, "no call was recorded"
    for call in calls:
        assert call["error_class"] or not call["priced"] or call["cost_micros"] is not None, call
    return calls


def assert_workspace_intact(setup: Setup, before: dict[str, str]) -> None:
    assert tree_digest(setup.workspace) == before
    assert not list(setup.workspace.parent.glob("outside*"))


def assert_unpriced_worst_case(setup: Setup, call: dict[str, Any]) -> None:
    """An unpriced call: NULL cost (never $0), its reservation kept at the worst case for paid models."""
    assert call["priced"] == 0
    assert call["cost_micros"] is None
    with setup.ledger() as ledger:
        res = ledger.query("SELECT * FROM reservations WHERE id = ?", (call["reservation_id"],))[0]
    assert res["state"] == "settled_unpriced"
    assert res["actual_micros"] == res["amount_micros"]
    if setup.kind.name != "ollama":
        assert res["amount_micros"] > 0


# ------------------------------------------------------------------------------------------------------------
# 429


@pytest.mark.parametrize(
    "kind",
    [
        "openai",
        "anthropic",
        pytest.param(
            "ollama",
        ),
    ],
)
def test_429_with_retry_after_is_honoured_then_succeeds(tmp_path: Path, serve: Any, kind: str) -> None:
    fake = serve(kind)
    arrivals = script(fake, HttpError(429, "slow down", headers={"Retry-After": "1"}), Reply(RIGHT))
    setup = make_setup(tmp_path, KINDS[kind], fake.url, retries=2)
    before = tree_digest(setup.workspace)
    result, _ = setup.run()
    calls = assert_recorded(setup, result, outcome="success")
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 0.9, "Retry-After: 1 was not honoured"
    assert [c["error_class"] for c in calls] == ["rate_limited", None]
    assert calls[0]["priced"] == 1
    assert calls[0]["cost_micros"] == 0
    assert calls[1]["priced"] == 1
    expected = dict(before)
    expected["answer.txt"] = tree_digest_of_text(RIGHT + "\n")
    assert tree_digest(setup.workspace) == expected


def tree_digest_of_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(("kind", "retry_after"), [("openai", "0.1"), ("anthropic", "0.1"), ("openai", "86400")])
def test_a_429_storm_ends_after_max_retries(tmp_path: Path, serve: Any, kind: str, retry_after: str) -> None:
    """Bounded: max_retries + 1 requests, never forever; an absurd Retry-After (a day) is not waited out."""
    fake = serve(kind)
    script(fake, then=HttpError(429, "slow down", headers={"Retry-After": retry_after}))
    setup = make_setup(tmp_path, KINDS[kind], fake.url, retries=2)
    before = tree_digest(setup.workspace)
    result, elapsed = setup.run()
    calls = assert_recorded(setup, result, outcome="exhausted")
    assert len(fake.model_requests()) == 3
    assert [c["error_class"] for c in calls] == ["rate_limited"] * 3
    assert all(c["cost_micros"] == 0 for c in calls)
    assert elapsed < 30, f"the storm took {elapsed:.1f} s"  # generous: catches a literal 24 h wait, not speed
    assert_workspace_intact(setup, before)


# ------------------------------------------------------------------------------------------------------------
# 5xx


@pytest.mark.parametrize(
    ("kind", "status", "error_class"),
    [
        ("openai", 500, "unavailable"),
        ("openai", 503, "overloaded"),
        ("anthropic", 500, "unavailable"),
        ("anthropic", 529, "overloaded"),
        ("ollama", 500, "unavailable"),
        ("ollama", 503, "overloaded"),
    ],
)
def test_server_errors_are_recorded_and_the_workspace_kept(
    tmp_path: Path, serve: Any, kind: str, status: int, error_class: str
) -> None:
    fake = serve(kind)
    script(fake, then=HttpError(status, "the server is unwell"))
    setup = make_setup(tmp_path, KINDS[kind], fake.url, retries=1)
    before = tree_digest(setup.workspace)
    result, _ = setup.run()
    calls = assert_recorded(setup, result, outcome="exhausted")
    assert {c["error_class"] for c in calls} == {error_class}
    assert all(c["priced"] == 1 and c["cost_micros"] == 0 for c in calls)  # the provider did no billable work
    assert_workspace_intact(setup, before)


@pytest.mark.parametrize(("kind", "status"), [("openai", 503), ("anthropic", 529)])
def test_an_overload_then_an_answer_succeeds(tmp_path: Path, serve: Any, kind: str, status: int) -> None:
    fake = serve(kind)
    script(fake, HttpError(status, "busy", headers={"Retry-After": "0.2"}), Reply(RIGHT))
    setup = make_setup(tmp_path, KINDS[kind], fake.url, retries=2)
    result, _ = setup.run()
    calls = assert_recorded(setup, result, outcome="success")
    assert [c["error_class"] for c in calls] == ["overloaded", None]
    assert (setup.workspace / "answer.txt").read_text() == RIGHT + "\n"


# ------------------------------------------------------------------------------------------------------------
# Connection refused, accept-and-never-answer


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
def test_connection_refused_is_recorded_as_unavailable(tmp_path: Path, kind: str) -> None:
    setup = make_setup(tmp_path, KINDS[kind], closed_port_url(), retries=1)
    before = tree_digest(setup.workspace)
    result, elapsed = setup.run()
    calls = assert_recorded(setup, result, outcome="exhausted")
    assert {c["error_class"] for c in calls} == {"unavailable"}
    assert all(c["cost_micros"] == 0 for c in calls)
    assert elapsed < 30
    assert_workspace_intact(setup, before)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
def test_a_server_that_never_answers_times_out_unpriced(tmp_path: Path, serve: Any, kind: str) -> None:
    fake = serve(kind)
    script(fake, then=Hang())
    setup = make_setup(tmp_path, KINDS[kind], fake.url, retries=2, timeout=1)
    before = tree_digest(setup.workspace)
    result, elapsed = setup.run()
    calls = assert_recorded(setup, result, outcome="exhausted")
    assert [c["error_class"] for c in calls] == ["timeout"]  # maybe billed: never retried
    assert len(fake.model_requests()) == 1
    assert_unpriced_worst_case(setup, calls[0])
    assert elapsed < 30
    assert_workspace_intact(setup, before)


# ------------------------------------------------------------------------------------------------------------
# Cut streams, malformed bodies, missing usage


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
def test_a_stream_cut_midway_is_unpriced_not_zero(tmp_path: Path, serve: Any, kind: str) -> None:
    fake = serve(kind)
    script(fake, then=CutStream(text="right but cut short", after_chunks=2))
    setup = make_setup(tmp_path, KINDS[kind], fake.url, retries=2, attempts=2)
    before = tree_digest(setup.workspace)
    result, _ = setup.run()
    calls = assert_recorded(setup, result, outcome="exhausted")
    attempts = 1 if KINDS[kind].tier == "frontier" else 2  # the frontier tier gets one attempt per run
    assert [c["error_class"] for c in calls] == ["protocol"] * attempts  # one per attempt, never retried inside
    for call in calls:
        assert_unpriced_worst_case(setup, call)
    assert result.unpriced_calls == attempts
    assert result.cost_micros == 0  # the run's priced total; the unpriced worst case is held in reservations
    with setup.ledger() as ledger:
        spent = ledger.spend(run_id=result.run_id)
    if kind != "ollama":
        assert spent.micros > 0  # the caps count the cut calls at their worst case, not $0
    assert_workspace_intact(setup, before)  # the partial text "right but..." was never written


@pytest.mark.parametrize(
    ("kind", "behavior"),
    [
        ("openai", Malformed(b"{not json")),
        ("openai", RawStream((b"data: {not json\n\n",))),
        ("anthropic", Malformed(b"{not json")),
        ("anthropic", RawStream((b"event: message_start\ndata: {broken\n\n",))),
        ("ollama", Malformed(b"{not json", content_type="application/x-ndjson")),
    ],
    ids=["openai-body", "openai-sse", "anthropic-body", "anthropic-sse", "ollama-ndjson"],
)
def test_malformed_json_is_recorded_and_unpriced(tmp_path: Path, serve: Any, kind: str, behavior: Any) -> None:
    fake = serve(kind)
    script(fake, then=behavior)
    setup = make_setup(tmp_path, KINDS[kind], fake.url, retries=2)
    before = tree_digest(setup.workspace)
    result, _ = setup.run()
    calls = assert_recorded(setup, result, outcome="exhausted")
    assert [c["error_class"] for c in calls] == ["protocol"]
    assert_unpriced_worst_case(setup, calls[0])
    assert_workspace_intact(setup, before)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_missing_usage_succeeds_but_is_unpriced(tmp_path: Path, serve: Any, kind: str) -> None:
    fake = serve(kind)
    script(fake, then=NoUsage(RIGHT))
    setup = make_setup(tmp_path, KINDS[kind], fake.url)
    result, _ = setup.run()
    calls = assert_recorded(setup, result, outcome="success")
    assert len(calls) == 1
    assert calls[0]["error_class"] is None
    assert_unpriced_worst_case(setup, calls[0])
    assert result.unpriced_calls == 1
    assert (setup.workspace / "answer.txt").read_text() == RIGHT + "\n"


def test_missing_usage_from_a_local_model_is_still_free(tmp_path: Path, serve: Any) -> None:
    """A local model's unknown usage costs nothing: $0 is the truth there, not a guess."""
    fake = serve("ollama")
    script(fake, then=NoUsage(RIGHT))
    setup = make_setup(tmp_path, KINDS["ollama"], fake.url)
    result, _ = setup.run()
    calls = assert_recorded(setup, result, outcome="success")
    assert calls[0]["error_class"] is None
    assert calls[0]["cost_micros"] == 0


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
def test_an_error_in_the_middle_of_the_stream_is_recorded(tmp_path: Path, serve: Any, kind: str) -> None:
    fake = serve(kind)
    script(fake, then=MidStreamError("the model crashed", text="right but"))
    setup = make_setup(tmp_path, KINDS[kind], fake.url, retries=1)
    before = tree_digest(setup.workspace)
    result, _ = setup.run()
    calls = assert_recorded(setup, result, outcome="exhausted")
    assert all(c["error_class"] for c in calls)
    assert_workspace_intact(setup, before)


# ------------------------------------------------------------------------------------------------------------
# The same through `supervisor run` in a child process


@pytest.mark.parametrize(
    ("kind", "behaviors", "then", "code", "error_class"),
    [
        ("openai", [HttpError(429, "slow", headers={"Retry-After": "1"})], Reply(RIGHT), 0, "rate_limited"),
        ("openai", [], CutStream(text="right but cut", after_chunks=1), 1, "protocol"),
        ("anthropic", [], Hang(), 1, "timeout"),
        ("anthropic", [], Malformed(b"<html>502 Bad Gateway</html>", content_type="text/html"), 1, "protocol"),
        ("ollama", [], HttpError(503, "queue full"), 1, "overloaded"),
    ],
    ids=["openai-429-then-ok", "openai-cut", "anthropic-hang", "anthropic-html", "ollama-503"],
)
def test_supervisor_run_in_a_child_process(
    tmp_path: Path, serve: Any, kind: str, behaviors: list[Any], then: Any, code: int, error_class: str | None
) -> None:
    fake = serve(kind)
    script(fake, *behaviors, then=then)
    setup = make_setup(tmp_path, KINDS[kind], fake.url, retries=1, timeout=1.5)
    before = tree_digest(setup.workspace)
    proc = setup.cli("run", "writer")
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    with setup.ledger() as ledger:
        runs = ledger.recent_runs("writer")
        assert len(runs) == 1
        assert runs[0]["outcome"] == ("success" if code == 0 else "exhausted")
        calls = list(reversed(ledger.calls(run_id=runs[0]["id"])))
        assert ledger.held_reservations() == []
    assert calls
    if error_class is not None:
        assert calls[0]["error_class"] == error_class
    assert all(c["error_class"] or c["priced"] is not None for c in calls)
    assert "run 1 " in proc.stdout  # the readable log says how the run ended
    if code != 0:
        assert_workspace_intact(setup, before)
