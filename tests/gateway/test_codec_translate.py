"""Translation end to end without the server: a client request parsed by its codec, sent by each tool-calling
backend to that wire's protocol fake, and the answer encoded back for the client.

Two checks make the mapping exact in every direction: the body a backend sends, read with OUR codec for that
wire, is the client's conversation again (the backend's encoder and the codec's parser are inverses), and the
answer (text and a tool call), encoded for the client and followed up as the client would, comes back intact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.backends.base import Request
from supervisor.backends.registry import make_backend
from supervisor.config import ProviderConfig
from supervisor.gateway.codecs import check_translatable, codec_for
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import FakeServer, ToolUse, tool_reply
from tests.fakes.ollama import OllamaFake
from tests.fakes.openai import OpenAIFake
from tests.gateway.conversations import CONVERSATION, SAME_CONVERSATION, WEATHER, follow_up

ENV = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}
WIRES = {
    # wire: (fake, model, the codec that reads the backend's request body)
    "ollama": (lambda: OllamaFake(models=("qwen3:4b",)), "qwen3:4b", "ollama_chat"),
    "openai_compat": (lambda: OpenAIFake(models=("m",)), "m", "openai_chat"),
    "anthropic": (lambda: AnthropicFake(models=("claude-sonnet-5-5",)), "claude-sonnet-5-5", "anthropic"),
}


def backend_for(wire: str, url: str) -> Any:
    if wire == "ollama":
        return make_backend("ollama", ProviderConfig(kind="ollama", host=url, local=True), ENV)
    if wire == "anthropic":
        config = ProviderConfig(kind="anthropic", base_url=url, api_key_env="ANTHROPIC_API_KEY")
        return make_backend("anthropic", config, ENV)
    config = ProviderConfig(kind="openai_compat", base_url=url + "/v1", api_key_env="OPENAI_API_KEY")
    return make_backend("openai", config, ENV)


@pytest.fixture(params=sorted(WIRES))
def wire(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeServer]]:
    with WIRES[request.param][0]() as fake:
        yield request.param, fake


@pytest.mark.parametrize("client", sorted(SAME_CONVERSATION))
async def test_translated_round_trip(client: str, wire: tuple[str, FakeServer]) -> None:
    wire_name, fake = wire
    _, model, wire_protocol = WIRES[wire_name]
    client_codec, client_body = SAME_CONVERSATION[client]
    inbound = client_codec.parse(client_body)
    check_translatable(inbound)
    fake.enqueue(tool_reply(ToolUse("get_weather", {"city": "Paris", "unit": "c"}, id="call_7"), text="Again."))
    backend = backend_for(wire_name, fake.url)
    try:
        result = await backend.complete(
            Request(
                model=model,
                messages=inbound.messages,
                max_output_tokens=256,
                tools=inbound.tools,
                context_window=8192,
            )
        )
    finally:
        await backend.aclose()

    # What the backend sent, read back with our own parser for that wire: the same conversation and tools.
    sent = codec_for(wire_protocol).parse(fake.model_requests()[-1].json)  # type: ignore[arg-type]
    assert sent.messages == CONVERSATION
    assert sent.tools == (WEATHER,)

    # The answer, encoded for the client and followed up as the client would: the same text and call.
    assert result.text == "Again."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in result.tool_calls] == [
        ("call_7", "get_weather", {"city": "Paris", "unit": "c"})
    ]
    answer = client_codec.response(result, model=inbound.model)
    again = client_codec.parse(follow_up(client, answer))
    assistant = next(m for m in again.messages if m.role == "assistant")
    assert assistant.content == "Again."
    assert assistant.tool_calls == result.tool_calls
    tool = next(m for m in again.messages if m.role == "tool")
    assert (tool.tool_call_id, tool.name) == ("call_7", "get_weather")
