"""The README's SDK recipes run verbatim, in a child process with only the documented variables set, against a
loopback server answering with the codecs' own bytes (the gateway-level tests run them against the gateway)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.backends.base import Result
from supervisor.gateway.codecs.anthropic import AnthropicCodec
from supervisor.gateway.codecs.ollama import OllamaCodec
from supervisor.gateway.codecs.openai_chat import OpenAIChatCodec
from supervisor.usage import Usage
from tests.gateway.canned import Canned, CannedServer

README = Path(__file__).resolve().parents[2] / "README.md"
RECIPE = re.compile(r"<!-- recipe: ([a-z-]+) -->\n```python\n(.+?)\n```", re.DOTALL)
ANSWER = Result(
    text="Hello, supervised world.", finish_reason="stop", usage=Usage(9, 0, 0, 0, 5), ttft_s=0.01, total_s=0.1
)


def recipes() -> dict[str, str]:
    return dict(RECIPE.findall(README.read_text()))


def test_the_section_has_the_three_sdk_recipes() -> None:
    assert sorted(recipes()) == ["anthropic-sdk", "ollama-sdk", "openai-sdk"]
    section = README.read_text().split("## Supervise the agents you already run", 1)[1].split("\n## ", 1)[0]
    for tool in ("Claude Code", "Codex CLI", "Aider", "Goose", "opencode"):
        assert f"**{tool}**" in section
    assert 'wire_api = "responses"' in section


@pytest.fixture
def server() -> Iterator[CannedServer]:
    with CannedServer() as canned:
        yield canned


def stream_of(codec: object, words: list[str]) -> tuple[bytes, ...]:
    encoder = codec.stream(model="auto", include_usage=True)  # type: ignore[attr-defined]
    return (encoder.start(), *(encoder.text(w) for w in words), encoder.finish(ANSWER))


def run(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_"))}
    return subprocess.run(
        [sys.executable, "-c", recipes()[name]],
        env={**clean, **env, "NO_PROXY": "*"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_openai_recipe(server: CannedServer) -> None:
    codec = OpenAIChatCodec()
    server.add(
        Canned(body=codec.response(ANSWER, model="auto")),
        Canned(content_type="text/event-stream", pieces=stream_of(codec, ["Hello, ", "supervised ", "world."])),
    )
    done = run("openai-sdk", {"OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": "sk-gateway-key"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [ANSWER.text, ANSWER.text]
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer sk-gateway-key"] * 2


def test_anthropic_recipe(server: CannedServer) -> None:
    server.add(
        Canned(content_type="text/event-stream", pieces=stream_of(AnthropicCodec(), ["Hello, ", "supervised world."]))
    )
    done = run("anthropic-sdk", {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-gateway-key"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == ANSWER.text
    assert "output_tokens=5" in done.stdout
    headers = server.requests[0].headers
    # Older anthropic SDKs send the key as x-api-key, newer ones as a bearer token: the gateway takes both.
    assert "sk-gateway-key" in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))


def test_ollama_recipe(server: CannedServer) -> None:
    codec = OllamaCodec()
    server.add(
        Canned(body=codec.response(ANSWER, model="auto")),
        Canned(content_type="application/x-ndjson", pieces=stream_of(codec, ["Hello, ", "supervised world."])),
    )
    done = run("ollama-sdk", {"OLLAMA_HOST": server.url, "OLLAMA_API_KEY": "sk-gateway-key"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [ANSWER.text, ANSWER.text]
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer sk-gateway-key"] * 2
