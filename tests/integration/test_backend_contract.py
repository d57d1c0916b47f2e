"""One contract every backend keeps, run against each: Ollama, OpenAI-compatible (OpenAI and DeepSeek dialects),
Anthropic (each against its loopback fake speaking the real protocol) and MLX (real mlx-lm, tiny model).

Then `supervisor ask --json` end to end against each fake: correct usage and cost in its JSON and in
`supervisor ledger report`, and every error case gives its typed error and a one-line message.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from supervisor import paths
from supervisor.backends.base import Backend, Health, Message, Request, ToolCall, ToolSpec
from supervisor.backends.registry import make_backend
from supervisor.catalog import load_catalog
from supervisor.config import ProviderConfig
from supervisor.cost import cost_of
from supervisor.errors import BackendUnavailable, BadRequest, ProtocolError, RateLimited
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import CutStream, CutToolCall, FakeServer, HttpError, NoUsage, Reply, ToolUse, tool_reply
from tests.fakes.ollama import OllamaFake
from tests.fakes.openai import OpenAIFake

NOW = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # a Saturday: DeepSeek off-peak


@dataclass
class Subject:
    """A backend wired to something real, plus how to script its next answer (None for MLX)."""

    name: str
    backend: Backend
    model: str
    fake: FakeServer | None
    catalog_key: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_subject(name: str) -> tuple[FakeServer, Callable[[str], Subject]]:
    env = {
        "DEEPSEEK_API_KEY": "sk-test-deepseek",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "OPENAI_API_KEY": "sk-test-openai",
    }
    if name == "ollama":
        fake: FakeServer = OllamaFake(models=("qwen3:4b",))
        return fake, lambda url: Subject(
            name,
            make_backend("ollama", ProviderConfig(kind="ollama", host=url, local=True), env),
            "qwen3:4b",
            fake,
            "ollama:qwen3:4b",
        )
    if name == "openai":
        fake = OpenAIFake(dialect="openai", models=("gpt-6.1-terra",))
        return fake, lambda url: Subject(
            name,
            make_backend(
                "openai", ProviderConfig(kind="openai_compat", base_url=url + "/v1", api_key_env="OPENAI_API_KEY"), env
            ),
            "gpt-6.1-terra",
            fake,
            "openai:gpt-6.1-terra",
        )
    if name == "deepseek":
        fake = OpenAIFake(dialect="deepseek", models=("deepseek-flash",))
        return fake, lambda url: Subject(
            name,
            make_backend(
                "deepseek", ProviderConfig(kind="openai_compat", base_url=url, api_key_env="DEEPSEEK_API_KEY"), env
            ),
            "deepseek-flash",
            fake,
            "deepseek:deepseek-flash",
        )
    fake = AnthropicFake(models=("claude-sonnet-5-5",))
    return fake, lambda url: Subject(
        name,
        make_backend("anthropic", ProviderConfig(kind="anthropic", base_url=url, api_key_env="ANTHROPIC_API_KEY"), env),
        "claude-sonnet-5-5",
        fake,
        "anthropic:claude-sonnet-5-5",
    )


HTTP_BACKENDS = ["ollama", "openai", "deepseek", "anthropic"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mlx_lm")
    from tests.fakes.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("contract") / "tiny")


@pytest.fixture(params=[*HTTP_BACKENDS, "mlx"])
async def subject(request: pytest.FixtureRequest, tiny_model_dir: Path) -> AsyncIterator[Subject]:
    if request.param == "mlx":
        backend = make_backend("mlx", ProviderConfig(kind="mlx", local=True, models={"tiny": str(tiny_model_dir)}), {})
        yield Subject("mlx", backend, "tiny", None, "mlx:tiny")
        await backend.aclose()
        return
    fake, build = http_subject(request.param)
    fake.start()
    subject = build(fake.url)
    yield subject
    await subject.backend.aclose()
    fake.stop()


def request_for(subject: Subject, max_tokens: int = 16) -> Request:
    return Request(
        model=subject.model,
        messages=(Message("system", "Be brief.", cache_breakpoint=True), Message("user", "Say hello.")),
        max_output_tokens=max_tokens,
        timeout_s=10,
        context_window=4096,
    )


async def test_complete_streams_text_and_reports_known_usage(subject: Subject) -> None:
    if subject.fake is not None:
        subject.fake.enqueue(Reply("Hello there, friend.", input_tokens=21, output_tokens=5, chunks=4))
    deltas: list[str] = []
    result = await subject.backend.complete(request_for(subject), deltas.append)
    assert result.text
    assert "".join(deltas) == result.text
    assert len(deltas) >= 2  # it streamed
    usage = result.usage
    assert usage.known
    assert usage.input_uncached is not None
    assert usage.input_uncached > 0
    assert usage.output is not None
    assert 0 < usage.output <= 16
    assert result.total_s >= 0
    assert result.finish_reason in {"stop", "length"}
    if subject.fake is not None:
        assert usage.output == 5
        assert result.text == "Hello there, friend."


async def test_every_call_sends_an_explicit_output_budget(subject: Subject) -> None:
    await subject.backend.complete(request_for(subject, max_tokens=7))
    if subject.fake is None:
        return  # MLX: max_tokens is passed to stream_generate; the MLX suite checks "length" at the limit
    body = subject.fake.model_requests()[-1].json
    budget = body.get("max_tokens") or body.get("max_completion_tokens") or body.get("options", {}).get("num_predict")
    assert budget == 7


async def test_the_result_prices_through_the_catalog(subject: Subject) -> None:
    if subject.fake is not None:
        subject.fake.enqueue(Reply("ok", input_tokens=1_000, output_tokens=100, cache_read=0))
    result = await subject.backend.complete(request_for(subject))
    catalog = load_catalog([paths.bundled_models_dir()])
    spec = (
        catalog.get(subject.catalog_key)
        or catalog.spec_for("mlx", subject.model, ProviderConfig(kind="mlx", local=True)).spec
    )
    cost = cost_of(result.usage, spec, NOW)
    assert cost.priced
    if subject.name in {"ollama", "mlx"}:
        assert cost.total_micros == 0
    else:
        assert cost.total_micros is not None
        assert cost.total_micros > 0


async def test_count_tokens_is_positive_and_says_whether_exact(subject: Subject) -> None:
    count = subject.backend.count_tokens(request_for(subject))
    assert count.tokens > 0
    assert count.exact is (subject.name == "mlx")


async def test_health_never_raises(subject: Subject) -> None:
    health = await subject.backend.health()
    assert isinstance(health, Health)
    assert health.provider


READ_FILE = ToolSpec(
    "read_file",
    "Read a file in the workspace.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
FINISH = ToolSpec("finish", "Say you are done.", {"type": "object", "properties": {"summary": {"type": "string"}}})


def tool_request(subject: Subject, *history: Message) -> Request:
    return Request(
        model=subject.model,
        messages=(
            Message("system", "You fix failing tests.", cache_breakpoint=True),
            Message("user", "Make `pytest -q` pass."),
            *history,
        ),
        max_output_tokens=64,
        timeout_s=10,
        context_window=4096,
        tools=(READ_FILE, FINISH),
    )


async def test_native_tool_calls_round_trip_or_are_refused(subject: Subject) -> None:
    """Tools in, calls out (ids, names, arguments JSON exact), results back, then a text answer; a backend
    without native tools refuses the request instead of dropping the tools."""
    if not subject.backend.supports_tools:
        assert subject.name == "mlx"
        with pytest.raises(BadRequest, match="no native tool calling"):
            await subject.backend.complete(tool_request(subject))
        return
    assert subject.fake is not None
    subject.fake.enqueue(
        tool_reply(
            ToolUse("read_file", {"path": "src/app.py"}, id="call_A"),
            ToolUse("read_file", {"path": "tests/test_app.py"}, id="call_B", fragments=4),
            input_tokens=120,
            output_tokens=31,
        )
    )
    first = await subject.backend.complete(tool_request(subject))
    assert first.tool_calls == (
        ToolCall("call_A", "read_file", '{"path": "src/app.py"}'),
        ToolCall("call_B", "read_file", '{"path": "tests/test_app.py"}'),
    )
    assert first.finish_reason == "tool_calls"
    assert first.text == ""
    assert (first.usage.input_uncached, first.usage.cache_read, first.usage.output) == (120, 0, 31)
    sent_tools = subject.fake.model_bodies()[-1]["tools"]
    assert [t.get("name") or t["function"]["name"] for t in sent_tools] == ["read_file", "finish"]

    subject.fake.enqueue(Reply("The test expects 2; app.py returns 1.", input_tokens=260, output_tokens=12))
    history = (
        Message("assistant", "", tool_calls=first.tool_calls),
        Message("tool", "def f():\n    return 1\n", tool_call_id="call_A", name="read_file"),
        Message("tool", "assert f() == 2\n", tool_call_id="call_B", name="read_file"),
    )
    second = await subject.backend.complete(tool_request(subject, *history))
    assert second.text == "The test expects 2; app.py returns 1."
    assert second.finish_reason == "stop"
    assert second.tool_calls == ()
    assert (second.usage.input_uncached, second.usage.output) == (260, 12)
    sent = json.dumps(subject.fake.model_bodies()[-1])
    for fragment in ("call_A", "call_B", "def f():", "assert f() == 2"):
        assert fragment in sent  # the exact shapes are pinned per protocol in test_backend_tools.py

    subject.fake.enqueue(CutToolCall(ToolUse("read_file", {"path": "src/app.py"}), after_fragments=1))
    with pytest.raises(ProtocolError):
        await subject.backend.complete(tool_request(subject))


@pytest.mark.parametrize("name", HTTP_BACKENDS)
async def test_http_errors_are_typed_the_same_everywhere(name: str) -> None:
    fake, build = http_subject(name)
    with fake:
        subject = build(fake.url)
        try:
            fake.enqueue(HttpError(429, "slow down", headers={"Retry-After": "7"}))
            with pytest.raises(RateLimited) as info:
                await subject.backend.complete(request_for(subject))
            assert info.value.retry_after_s == 7
            fake.enqueue(NoUsage("no usage here"))
            result = await subject.backend.complete(request_for(subject))
            assert not result.usage.known  # unknown stays unknown: never zero
            fake.enqueue(CutStream("partial answer", after_chunks=1))
            with pytest.raises(ProtocolError):
                await subject.backend.complete(request_for(subject))
        finally:
            await subject.backend.aclose()
    dead = build(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(BackendUnavailable):
            await dead.backend.complete(request_for(dead))
    finally:
        await dead.backend.aclose()


# ---------------------------------------------------------------------------------------------------------
# `supervisor ask` end to end


def ask_config(tmp_path: Path, name: str, url: str) -> Path:
    section = {
        "ollama": f'[providers.ollama]\nkind = "ollama"\nhost = "{url}"\nlocal = true\n',
        "openai": f'[providers.openai]\nkind = "openai_compat"\nbase_url = "{url}/v1"\napi_key_env = "OPENAI_API_KEY"\n',
        "deepseek": f'[providers.deepseek]\nkind = "openai_compat"\nbase_url = "{url}"\napi_key_env = "DEEPSEEK_API_KEY"\n',
        "anthropic": f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{url}"\napi_key_env = "ANTHROPIC_API_KEY"\n',
    }[name]
    path = tmp_path / "supervisor.toml"
    path.write_text(section)
    return path


def ask(config: Path, model: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "DEEPSEEK_API_KEY": "sk-test-deepseek",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "OPENAI_API_KEY": "sk-test-openai",
        **(env or {}),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor",
            "ask",
            model,
            "Say hello.",
            "--config",
            str(config),
            "--max-tokens",
            "32",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


@pytest.fixture(params=HTTP_BACKENDS)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, FakeServer, Subject, Path]]:
    fake, build = http_subject(request.param)
    fake.start()
    subject = build(fake.url)
    yield request.param, fake, subject, ask_config(tmp_path, request.param, fake.url)
    fake.stop()


def test_ask_json_reports_usage_and_cost_and_lands_in_the_ledger(served: tuple[str, FakeServer, Subject, Path]) -> None:
    name, fake, subject, config = served
    fake.enqueue(Reply("Hello!", input_tokens=3_000, output_tokens=800, cache_read=0 if name == "ollama" else 120_000))
    done = ask(config, subject.catalog_key, "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    assert data["model"] == subject.catalog_key
    assert data["text"] == "Hello!"
    assert set(data["usage"]) == {
        "input_uncached",
        "cache_read",
        "cache_write_5m",
        "cache_write_1h",
        "output",
        "reasoning",
    }
    assert data["usage"]["output"] == 800
    assert data["usage"]["input_uncached"] == 3_000
    assert data["cost"]["priced"] is True
    assert set(data["cost"]["components_micros"]) == {
        "input_uncached",
        "cache_read",
        "cache_write_5m",
        "cache_write_1h",
        "output",
    }
    total = data["cost"]["total_micros"]
    assert total == sum(data["cost"]["components_micros"].values())
    if name == "ollama":
        assert total == 0
    else:
        assert total > 0
    assert data["latency_s"] >= 0
    report = subprocess.run(
        [sys.executable, "-m", "supervisor", "ledger", "report", "--by", "model", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
        check=True,
    )
    rows = {r["group"]: r for r in json.loads(report.stdout)}
    row = rows[subject.catalog_key]
    assert row["calls"] == 1
    assert row["output"] == 800
    assert row["cost_micros"] == total
    assert row["unpriced_calls"] == 0


@pytest.mark.parametrize(
    ("behavior", "error_class"),
    [
        (HttpError(401, "invalid key"), "auth"),
        (HttpError(404, "no such model"), "model_not_found"),
        (CutStream("half an ans", after_chunks=1), "protocol"),
    ],
)
def test_ask_errors_are_one_line_and_typed(
    served: tuple[str, FakeServer, Subject, Path], behavior: Any, error_class: str
) -> None:
    _name, fake, subject, config = served
    fake.enqueue(behavior)
    done = ask(config, subject.catalog_key)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    first = done.stderr.strip().splitlines()[0]
    assert first.startswith(f"error: {error_class}:"), done.stderr
    assert "sk-test" not in done.stderr
    assert "sk-ant-test" not in done.stderr


def test_ask_with_a_missing_key_says_which_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "ask", "deepseek:deepseek-flash", "hi"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0
    assert "DEEPSEEK_API_KEY" in done.stderr
    assert "Traceback" not in done.stderr


def test_ask_refuses_an_unpriced_model(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    config.write_text('[providers.mystery]\nkind = "openai_compat"\nbase_url = "http://127.0.0.1:9"\n')
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "ask", "mystery:model-x", "hi", "--config", str(config)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert done.returncode == 2
    assert "unpriced" in done.stderr
    assert "Traceback" not in done.stderr
