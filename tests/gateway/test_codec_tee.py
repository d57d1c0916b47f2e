"""Usage tees: fed a copy of an upstream's bytes in any split, they read what the backends read.

Three sources of bytes: the codecs' own encoders (a round trip), the project's protocol fakes (the same
bytes the backends are tested against, compared with each backend's own reading of the same answer), and
cut or failing streams (usage unknown, never zero).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from supervisor.backends.base import Message, Request, Result, ToolCall
from supervisor.backends.registry import make_backend
from supervisor.config import ProviderConfig
from supervisor.errors import BackendError
from supervisor.gateway.codecs import TeeResult, codec_for
from supervisor.usage import Usage
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import CutStream, FakeServer, HttpError, MidStreamError, NoUsage, Reply, ToolUse, tool_reply
from tests.fakes.ollama import OllamaFake
from tests.fakes.openai import OpenAIFake
from tests.gateway.conversations import WEATHER

USAGE = Usage(input_uncached=12, cache_read=100, cache_write_5m=8, cache_write_1h=0, output=20, reasoning=5)
CALL = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
ANSWER = Result(
    text="Hello, world! " * 3, finish_reason="tool_calls", usage=USAGE, ttft_s=0.1, total_s=1.0, tool_calls=(CALL,)
)
TEXT = Result(text="Hello, world! " * 3, finish_reason="stop", usage=USAGE, ttft_s=0.1, total_s=1.0)

# What each protocol can say about USAGE: Ollama has one prompt count (no cache split) and no reasoning count.
READ_BACK: dict[str, Usage] = {
    "openai_chat": USAGE,
    "openai_responses": USAGE,
    "anthropic": USAGE,
    "ollama_chat": Usage(120, 0, 0, 0, 20, None),
    "ollama_generate": Usage(120, 0, 0, 0, 20, None),
}
PROTOCOLS = sorted(READ_BACK)


def tee_bytes(protocol: str, data: bytes, *, splits: list[int] | None = None, streaming: bool = True) -> TeeResult:
    """Feed ``data`` to a fresh tee, one byte at a time (or at ``splits``)."""
    tee = codec_for(protocol).usage_tee(streaming=streaming)  # type: ignore[arg-type]
    bounds = [0, *(splits if splits is not None else range(1, len(data))), len(data)]
    for start, end in itertools.pairwise(bounds):
        tee.feed(data[start:end])
    return tee.close()


def encoded_stream(protocol: str, result: Result) -> bytes:
    encoder = codec_for(protocol).stream(model="local", include_usage=True)  # type: ignore[arg-type]
    out = encoder.start()
    for word in result.text.split(" "):
        out += encoder.text(word + " ")
    for call in result.tool_calls:
        out += encoder.tool_call(call)
    return out + encoder.finish(result)


def answer_for(protocol: str) -> Result:
    return TEXT if protocol == "ollama_generate" else ANSWER


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_round_trip_stream_byte_by_byte(protocol: str) -> None:
    result = answer_for(protocol)
    data = encoded_stream(protocol, result)
    read = tee_bytes(protocol, data)
    assert read.usage == READ_BACK[protocol]
    assert read.complete
    assert read.error is None
    assert read.finish_reason == ("stop" if protocol == "ollama_generate" else "tool_calls")
    assert read.text_excerpt == "".join(word + " " for word in result.text.split(" "))
    assert read.model_reported == "local"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_round_trip_json_body_in_random_splits(protocol: str) -> None:
    result = answer_for(protocol)
    data = codec_for(protocol).response(result, model="local")  # type: ignore[arg-type]
    rng = random.Random(7)
    for _ in range(5):
        splits = sorted(rng.sample(range(1, len(data)), 6))
        read = tee_bytes(protocol, data, splits=splits, streaming=False)
        assert read.usage == READ_BACK[protocol]
        assert read.complete
        assert read.text_excerpt == result.text
        assert read.finish_reason == ("stop" if protocol == "ollama_generate" else "tool_calls")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_stream_cut_anywhere_never_reports_invented_usage(protocol: str) -> None:
    """At every cut point the tee reports the exact usage (the record arrived) or an unknown output: never
    zeros, never a partial count."""
    data = encoded_stream(protocol, answer_for(protocol))
    full = READ_BACK[protocol]
    for cut in range(len(data)):
        read = tee_bytes(protocol, data[:cut], splits=[])
        assert read.usage == full or read.usage.output is None, (cut, read.usage)
        if read.usage.output is None:
            assert not read.usage.known
            assert not read.complete


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_stream_cut_after_the_text_is_incomplete_with_unknown_usage(protocol: str) -> None:
    encoder = codec_for(protocol).stream(model="local", include_usage=True)  # type: ignore[arg-type]
    data = encoder.start() + encoder.text("partial answer")
    read = tee_bytes(protocol, data)
    assert not read.complete
    assert read.usage.output is None
    assert read.finish_reason is None
    assert read.text_excerpt == "partial answer"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_in_band_errors_are_reported(protocol: str) -> None:
    encoder = codec_for(protocol).stream(model="local", include_usage=True)  # type: ignore[arg-type]
    read = tee_bytes(
        protocol, encoder.start() + encoder.text("par") + encoder.error("overloaded", "the model fell over")
    )
    assert read.error == "the model fell over"
    assert not read.complete
    assert read.usage.output is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_error_bodies_are_reported(protocol: str) -> None:
    _, _, body = codec_for(protocol).error(429, "cap_reached", "no more today")  # type: ignore[arg-type]
    for streaming in (True, False):
        read = tee_bytes(protocol, body, streaming=streaming)
        assert read.error == "no more today"
        assert not read.complete
        assert read.usage == Usage()


def test_excerpt_is_bounded() -> None:
    long = Result(text="x" * 10_000, finish_reason="stop", usage=USAGE, ttft_s=None, total_s=1.0)
    read = tee_bytes("anthropic", encoded_stream("anthropic", long), splits=[])
    assert read.text_excerpt == "x" * 2000


# ----------------------------------------------------------------------------------------------------------
# The protocol fakes' own bytes, against each backend's own reading


ENV = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test", "DEEPSEEK_API_KEY": "sk-test"}
PROMPT = (Message("system", "Be brief.", cache_breakpoint=True), Message("user", "Say hello."))


def upstream(name: str) -> tuple[FakeServer, str, str]:
    """A fake, the tee protocol for its bytes, and its chat path."""
    if name == "ollama":
        return OllamaFake(models=("qwen3:4b",)), "ollama_chat", "/api/chat"
    if name == "anthropic":
        return AnthropicFake(models=("claude-sonnet-5-5",)), "anthropic", "/v1/messages"
    if name == "anthropic-unsplit":
        return AnthropicFake(models=("claude-sonnet-5-5",), split_cache_creation=False), "anthropic", "/v1/messages"
    return OpenAIFake(dialect=name, models=("m",)), "openai_chat", "/v1/chat/completions"  # type: ignore[arg-type]


def backend_for(name: str, url: str) -> Any:
    if name == "ollama":
        return make_backend("ollama", ProviderConfig(kind="ollama", host=url, local=True), ENV)
    if name.startswith("anthropic"):
        return make_backend(
            "anthropic", ProviderConfig(kind="anthropic", base_url=url, api_key_env="ANTHROPIC_API_KEY"), ENV
        )
    return make_backend(
        name, ProviderConfig(kind="openai_compat", base_url=url + "/v1", api_key_env="OPENAI_API_KEY"), ENV
    )


def raw_body(name: str, *, stream: bool) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    if name == "ollama":
        return {
            "model": "qwen3:4b",
            "messages": messages,
            "stream": stream,
            "options": {"num_ctx": 4096, "num_predict": 64},
        }
    if name.startswith("anthropic"):
        return {
            "model": "claude-sonnet-5-5",
            "max_tokens": 64,
            "system": "Be brief.",
            "messages": messages[1:],
            "stream": stream,
        }
    body: dict[str, Any] = {"model": "m", "messages": messages, "max_tokens": 64, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def relayed_bytes(fake: FakeServer, path: str, body: dict[str, Any]) -> bytes:
    """The upstream's body exactly as it arrives at a relay (raw, in the chunks the socket gave); a stream
    that is cut gives what arrived before the cut."""
    pieces: list[bytes] = []
    with httpx.Client(timeout=10) as client, client.stream("POST", fake.url + path, json=body) as response:
        try:
            pieces.extend(response.iter_raw())
        except httpx.RemoteProtocolError:
            pass  # the connection dropped mid-body
    return b"".join(pieces)


UPSTREAMS = ["openai", "deepseek", "gemini", "anthropic", "anthropic-unsplit", "ollama"]
REPLY = Reply(
    "Hello there, friend.",
    input_tokens=21,
    output_tokens=9,
    cache_read=300,
    cache_write=40,
    cache_write_1h=7,
    reasoning=3,
    chunks=4,
)


@pytest.fixture(params=UPSTREAMS)
def fake(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeServer, str, str]]:
    server, protocol, path = upstream(request.param)
    with server:
        yield request.param, server, protocol, path


@pytest.mark.parametrize("stream", [True, False])
async def test_tee_reads_the_fakes_bytes_as_the_backend_reads_the_same_answer(
    fake: tuple[str, FakeServer, str, str], stream: bool
) -> None:
    name, server, protocol, path = fake
    reply = (
        REPLY
        if not name.startswith("ollama")
        else Reply("Hello there, friend.", input_tokens=21, output_tokens=9, cache_read=300)
    )
    server.enqueue(reply, reply)
    backend = backend_for(name, server.url)
    try:
        expected = await backend.complete(
            Request(
                model=raw_body(name, stream=True)["model"], messages=PROMPT, max_output_tokens=64, context_window=4096
            )
        )
    finally:
        await backend.aclose()
    data = relayed_bytes(server, path, raw_body(name, stream=stream))
    read = tee_bytes(protocol, data, streaming=stream)
    assert expected.usage.known
    assert read.usage == expected.usage
    assert read.raw_usage == expected.raw_usage
    assert read.finish_reason == expected.finish_reason
    assert read.text_excerpt == expected.text
    assert read.complete
    assert read.model_reported == expected.model_reported


@pytest.mark.parametrize("behavior", [CutStream("partial answer", after_chunks=1), NoUsage("all of it")])
async def test_fakes_cut_or_usage_free_streams_give_unknown_usage(
    fake: tuple[str, FakeServer, str, str], behavior: Any
) -> None:
    name, server, protocol, path = fake
    server.enqueue(behavior, behavior)
    backend = backend_for(name, server.url)
    try:
        backend_usage: Usage | None = (
            await backend.complete(
                Request(
                    model=raw_body(name, stream=True)["model"],
                    messages=PROMPT,
                    max_output_tokens=64,
                    context_window=4096,
                )
            )
        ).usage
    except BackendError:
        backend_usage = None  # the backend refuses a cut stream outright; usage is unknown either way
    finally:
        await backend.aclose()
    read = tee_bytes(protocol, relayed_bytes(server, path, raw_body(name, stream=True)))
    assert read.usage.output is None
    assert not read.usage.known
    if backend_usage is not None:
        assert read.usage == backend_usage
    if isinstance(behavior, CutStream):
        assert not read.complete


async def test_fakes_errors_are_reported(fake: tuple[str, FakeServer, str, str]) -> None:
    name, server, protocol, path = fake
    server.enqueue(MidStreamError("the model failed to generate a response", text="part"), HttpError(429, "slow down"))
    mid = tee_bytes(protocol, relayed_bytes(server, path, raw_body(name, stream=True)))
    assert mid.error is not None
    assert not mid.complete
    status_error = tee_bytes(protocol, relayed_bytes(server, path, raw_body(name, stream=True)))
    assert status_error.error is not None
    assert "slow down" in status_error.error


async def test_tee_reads_a_tool_call_answer_as_the_backend_does(fake: tuple[str, FakeServer, str, str]) -> None:
    name, server, protocol, path = fake
    reply = tool_reply(ToolUse("get_weather", {"city": "Paris"}), text="Checking.", input_tokens=30, output_tokens=12)
    server.enqueue(reply, reply)
    backend = backend_for(name, server.url)
    try:
        model = raw_body(name, stream=True)["model"]
        expected = await backend.complete(
            Request(model=model, messages=PROMPT, max_output_tokens=64, context_window=4096, tools=(WEATHER,))
        )
    finally:
        await backend.aclose()
    read = tee_bytes(protocol, relayed_bytes(server, path, raw_body(name, stream=True)))
    assert expected.finish_reason == "tool_calls"
    assert (read.finish_reason, read.usage, read.text_excerpt) == ("tool_calls", expected.usage, "Checking.")
    assert read.complete


# A streamed server-tool run: the 5m/1h split froze at message_start (200 tokens, all 1h) while the cumulative
# cache_creation_input_tokens kept growing to 500 (LiteLLM #42663). The 300 the split leaves out are billed at
# the TTL the request asked for.
FROZEN_SPLIT_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],'
    b'"model":"claude-sonnet-5-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,'
    b'"cache_creation_input_tokens":200,"cache_read_input_tokens":100,"cache_creation":'
    b'{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":200},"output_tokens":1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Done."}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":'
    b'{"input_tokens":12,"cache_creation_input_tokens":500,"cache_read_input_tokens":100,"output_tokens":20}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)


def messages_request(ttl: str | None, where: str) -> dict[str, Any]:
    marker: dict[str, Any] = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    system: Any = "You review code."
    tools: list[dict[str, Any]] = [{"name": "grep", "input_schema": {"type": "object"}}]
    content: Any = "Review this."
    if where == "system":
        system = [{"type": "text", "text": "You review code.", "cache_control": marker}]
    elif where == "tools":
        tools[0]["cache_control"] = marker
    else:
        content = [{"type": "text", "text": "Review this.", "cache_control": marker}]
    return {
        "model": "claude-sonnet-5-5",
        "max_tokens": 100,
        "system": system,
        "tools": tools,
        "messages": [{"role": "user", "content": content}],
        "stream": True,
    }


@pytest.mark.parametrize("where", ["system", "tools", "messages"])
@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        ("1h", Usage(12, 100, 0, 500, 20, None)),  # the unsplit 300 at the 1h rate the request asked for
        ("5m", Usage(12, 100, 300, 200, 20, None)),
        (None, Usage(12, 100, 300, 200, 20, None)),  # no ttl: Anthropic's default, 5 minutes
    ],
)
def test_anthropic_cache_writes_beyond_the_split_bill_at_the_requests_ttl(
    where: str, ttl: str | None, expected: Usage
) -> None:
    codec = codec_for("anthropic")
    inbound = codec.parse(messages_request(ttl, where))
    for splits in (None, [], [57, 300, 301, 640]):
        tee = codec.usage_tee(streaming=True, request=inbound)
        bounds = [0, *(splits if splits is not None else range(1, len(FROZEN_SPLIT_STREAM))), len(FROZEN_SPLIT_STREAM)]
        for start, end in itertools.pairwise(bounds):
            tee.feed(FROZEN_SPLIT_STREAM[start:end])
        read = tee.close()
        assert read.usage == expected
        assert read.complete
