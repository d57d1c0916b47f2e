"""Encoders: golden bytes for every stream and JSON body, error envelopes, and the edge cases of each encoder."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest

from supervisor.backends.base import Result, ToolCall
from supervisor.gateway.codecs import DEFAULT_STATUS, RETRYABLE_KINDS, ErrorKind, models_body
from supervisor.gateway.codecs.anthropic import AnthropicCodec
from supervisor.gateway.codecs.ollama import OllamaCodec
from supervisor.gateway.codecs.openai_chat import OpenAIChatCodec
from supervisor.gateway.codecs.openai_responses import OpenAIResponsesCodec
from supervisor.usage import Usage
from tests.gateway import goldens

CALL = ToolCall("call_1", "get_weather", '{"city":"Paris"}')
USAGE = Usage(input_uncached=12, cache_read=100, cache_write_5m=8, cache_write_1h=0, output=20)
ANSWER = Result(text="Hello!", finish_reason="tool_calls", usage=USAGE, ttft_s=0.25, total_s=1.5, tool_calls=(CALL,))
TEXT_ONLY = Result(text="Hello!", finish_reason="stop", usage=USAGE, ttft_s=0.25, total_s=1.5)


def counter_ids() -> Callable[[str], str]:
    count = itertools.count(1)
    return lambda prefix: f"{prefix}{next(count)}"


def clock() -> float:
    return 1767225600.0  # 2026-01-01T00:00:00Z


def codec(protocol: str) -> Any:
    if protocol == "openai_chat":
        return OpenAIChatCodec(new_id=counter_ids(), clock=clock)
    if protocol == "openai_responses":
        return OpenAIResponsesCodec(new_id=counter_ids(), clock=clock)
    if protocol == "anthropic":
        return AnthropicCodec(new_id=counter_ids())
    return OllamaCodec(generate=protocol == "ollama_generate", clock=clock)


@pytest.mark.parametrize(
    ("protocol", "golden"),
    [
        ("openai_chat", goldens.OPENAI_CHAT_STREAM),
        ("openai_responses", goldens.OPENAI_RESPONSES_STREAM),
        ("anthropic", goldens.ANTHROPIC_STREAM),
        ("ollama_chat", goldens.OLLAMA_CHAT_STREAM),
        ("ollama_generate", goldens.OLLAMA_GENERATE_STREAM),
    ],
)
def test_golden_streams(protocol: str, golden: str) -> None:
    encoder = codec(protocol).stream(model="local", include_usage=True)
    out = encoder.start() + encoder.text("Hel") + encoder.text("lo!")
    if protocol == "ollama_generate":
        out += encoder.finish(TEXT_ONLY)
    else:
        out += encoder.tool_call(CALL) + encoder.finish(ANSWER)
    assert out.decode() == golden


@pytest.mark.parametrize(
    ("protocol", "golden"),
    [
        ("openai_chat", goldens.OPENAI_CHAT_JSON),
        ("openai_responses", goldens.OPENAI_RESPONSES_JSON),
        ("anthropic", goldens.ANTHROPIC_JSON),
        ("ollama_chat", goldens.OLLAMA_CHAT_JSON),
    ],
)
def test_golden_json_bodies(protocol: str, golden: str) -> None:
    assert codec(protocol).response(ANSWER, model="local").decode() == golden


@pytest.mark.parametrize("protocol", ["openai_chat", "openai_responses", "anthropic", "ollama_chat"])
def test_finish_sends_what_was_not_streamed_and_nothing_twice(protocol: str) -> None:
    """A caller that streamed nothing gets the whole answer from ``finish``; one that streamed it all gets
    only the closing events: both byte streams end the same way."""
    whole = codec(protocol).stream(model="local", include_usage=True)
    by_finish = whole.finish(ANSWER)
    piecewise = codec(protocol).stream(model="local", include_usage=True)
    streamed = piecewise.start() + piecewise.text("Hello!") + piecewise.tool_call(CALL) + piecewise.finish(ANSWER)
    assert by_finish == streamed
    assert by_finish.count(b"get_weather") == streamed.count(b"get_weather") >= 1


def test_openai_chat_usage_chunk_only_when_asked_and_known() -> None:
    quiet = codec("openai_chat").stream(model="local", include_usage=False).finish(TEXT_ONLY)
    assert b'"usage"' not in quiet
    assert quiet.endswith(b"data: [DONE]\n\n")
    unknown = Result(text="x", finish_reason="stop", usage=Usage(), ttft_s=None, total_s=0.1)
    asked = codec("openai_chat").stream(model="local", include_usage=True).finish(unknown)
    assert b'"choices":[]' not in asked  # no usage chunk with invented numbers
    body = json.loads(codec("openai_chat").response(unknown, model="local"))
    assert body["usage"] is None


def test_unknown_usage_is_never_reported_as_counts() -> None:
    unknown = Result(text="x", finish_reason="stop", usage=Usage(), ttft_s=None, total_s=0.1)
    assert json.loads(codec("openai_responses").response(unknown, model="local"))["usage"] is None
    final = json.loads(codec("ollama_chat").response(unknown, model="local"))
    assert "prompt_eval_count" not in final
    assert "eval_count" not in final
    assert final["total_duration"] == 100_000_000
    assert "eval_duration" not in final  # no first-token time: no generation time to report
    # Anthropic requires the two counts: the client sees 0, and no cache fields are invented.
    usage = json.loads(codec("anthropic").response(unknown, model="local"))["usage"]
    assert usage == {"input_tokens": 0, "output_tokens": 0}


def test_ollama_final_chunk_keeps_an_ollama_upstreams_own_durations() -> None:
    metrics = {"total_duration": 900, "load_duration": 100, "prompt_eval_duration": 300, "eval_duration": 500}
    result = Result(text="x", finish_reason="stop", usage=USAGE, ttft_s=0.2, total_s=3.0, raw_usage=metrics)
    final = json.loads(codec("ollama_chat").response(result, model="local"))
    assert {k: final[k] for k in metrics} == metrics


@pytest.mark.parametrize(
    ("finish", "chat", "anthropic", "responses_event", "ollama"),
    [
        ("stop", "stop", "end_turn", "response.completed", "stop"),
        ("length", "length", "max_tokens", "response.incomplete", "length"),
        ("content_filter", "content_filter", "refusal", "response.completed", "stop"),
        (None, "stop", "end_turn", "response.completed", "stop"),
    ],
)
def test_finish_reasons(finish: str | None, chat: str, anthropic: str, responses_event: str, ollama: str) -> None:
    result = Result(text="x", finish_reason=finish, usage=USAGE, ttft_s=None, total_s=0.1)
    assert json.loads(codec("openai_chat").response(result, model="m"))["choices"][0]["finish_reason"] == chat
    assert json.loads(codec("anthropic").response(result, model="m"))["stop_reason"] == anthropic
    assert json.loads(codec("ollama_chat").response(result, model="m"))["done_reason"] == ollama
    stream = codec("openai_responses").stream(model="m", include_usage=True).finish(result)
    assert stream.split(b"event: ")[-1].startswith(responses_event.encode())


def test_tool_calls_win_over_stop_when_the_upstream_says_stop() -> None:
    ollama_style = Result(text="", finish_reason="stop", usage=USAGE, ttft_s=None, total_s=0.1, tool_calls=(CALL,))
    assert (
        json.loads(codec("openai_chat").response(ollama_style, model="m"))["choices"][0]["finish_reason"]
        == "tool_calls"
    )
    assert json.loads(codec("anthropic").response(ollama_style, model="m"))["stop_reason"] == "tool_use"
    message = json.loads(codec("openai_chat").response(ollama_style, model="m"))["choices"][0]["message"]
    assert message["content"] is None  # a call without text, as OpenAI sends it
    content = json.loads(codec("anthropic").response(ollama_style, model="m"))["content"]
    assert [block["type"] for block in content] == ["tool_use"]


def test_text_after_a_tool_call_opens_a_new_block_or_item() -> None:
    anthropic = codec("anthropic").stream(model="m")
    out = anthropic.text("a") + anthropic.tool_call(CALL) + anthropic.text("b") + anthropic.finish(ANSWER)
    starts = [json.loads(line[6:]) for line in out.decode().splitlines() if '"content_block_start"' in line]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [(0, "text"), (1, "tool_use"), (2, "text")]
    responses = codec("openai_responses").stream(model="m", include_usage=True)
    out = responses.text("a") + responses.tool_call(CALL) + responses.text("b") + responses.finish(ANSWER)
    final = json.loads(out.decode().split("event: response.completed\ndata: ")[1])
    assert [item["type"] for item in final["response"]["output"]] == ["message", "function_call", "message"]
    sequence = [
        json.loads(line[6:])["sequence_number"] for line in out.decode().splitlines() if line.startswith("data: ")
    ]
    assert sequence == list(range(len(sequence)))


def test_malformed_arguments_are_kept_visible_for_object_protocols() -> None:
    broken = ToolCall("call_x", "edit", '{"path": "a.py", "content": ')
    result = Result(text="", finish_reason="tool_calls", usage=USAGE, ttft_s=None, total_s=0.1, tool_calls=(broken,))
    block = json.loads(codec("anthropic").response(result, model="m"))["content"][0]
    assert block["input"] == {"_unparsed_arguments": broken.arguments}
    call = json.loads(codec("ollama_chat").response(result, model="m"))["message"]["tool_calls"][0]
    assert call["function"]["arguments"] == {"_unparsed_arguments": broken.arguments}
    chat = json.loads(codec("openai_chat").response(result, model="m"))["choices"][0]["message"]["tool_calls"][0]
    assert chat["function"]["arguments"] == broken.arguments  # OpenAI carries text: passed as is


def test_generate_has_no_tool_calls() -> None:
    with pytest.raises(ValueError, match="no tool calls"):
        codec("ollama_generate").stream(model="m").tool_call(CALL)


# ----------------------------------------------------------------------------------------------------------
# Errors


ERROR_BODIES: dict[str, tuple[int, str, dict[str, str], str]] = {
    "openai_chat": (
        429,
        "cap_reached",
        {"content-type": "application/json", "retry-after": "3600", "x-should-retry": "false"},
        '{"error":{"message":"day cap reached","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}',
    ),
    "openai_responses": (
        401,
        "authentication",
        {"content-type": "application/json", "x-should-retry": "false"},
        '{"error":{"message":"day cap reached","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}',
    ),
    "anthropic": (
        429,
        "cap_reached",
        {"content-type": "application/json", "retry-after": "3600", "x-should-retry": "false"},
        '{"type":"error","error":{"type":"rate_limit_error","message":"day cap reached"}}',
    ),
    "ollama_chat": (
        400,
        "invalid_request",
        {"content-type": "application/json", "x-should-retry": "false"},
        '{"error":"day cap reached"}',
    ),
}


@pytest.mark.parametrize("protocol", sorted(ERROR_BODIES))
def test_error_envelopes(protocol: str) -> None:
    status, kind, headers, body = ERROR_BODIES[protocol]
    retry = 3600 if status == 429 else None
    assert codec(protocol).error(status, kind, "day cap reached", retry_after_s=retry) == (
        status,
        headers,
        body.encode(),
    )


@pytest.mark.parametrize("kind", sorted(DEFAULT_STATUS))
def test_every_kind_has_a_type_in_every_protocol_and_retry_semantics(kind: ErrorKind) -> None:
    for protocol in ("openai_chat", "openai_responses", "anthropic", "ollama_chat"):
        status, headers, body = codec(protocol).error(DEFAULT_STATUS[kind], kind, "why")
        assert status == DEFAULT_STATUS[kind]
        assert json.loads(body)
        assert (headers.get("x-should-retry") == "false") == (kind not in RETRYABLE_KINDS)


def test_in_band_errors_and_pings() -> None:
    assert codec("openai_chat").stream(model="m", include_usage=False).error("overloaded", "busy") == (
        b'data: {"error":{"message":"busy","type":"server_error","param":null,"code":"overloaded"}}\n\n'
    )
    assert codec("anthropic").stream(model="m").error("overloaded", "busy") == (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"busy"}}\n\n'
    )
    assert codec("ollama_chat").stream(model="m").error("overloaded", "busy") == b'{"error":"busy"}\n'
    responses = codec("openai_responses").stream(model="m", include_usage=True)
    responses.start()
    out = responses.error("overloaded", "busy").decode()
    assert out.startswith(
        'event: error\ndata: {"type":"error","code":"overloaded","message":"busy","param":null,"sequence_number":2}\n\n'
    )
    assert '"status":"failed","error":{"code":"server_error","message":"busy"}' in out
    assert codec("anthropic").stream(model="m").ping() == b'event: ping\ndata: {"type":"ping"}\n\n'
    assert codec("openai_chat").stream(model="m", include_usage=False).ping() == b": ping\n\n"
    assert codec("openai_responses").stream(model="m", include_usage=True).ping() == b": ping\n\n"
    assert codec("ollama_chat").stream(model="m").ping() == b""  # NDJSON has no comment line


def test_models_bodies() -> None:
    assert models_body(["auto", "local"], anthropic_shape=False) == {
        "object": "list",
        "data": [
            {"id": "auto", "object": "model", "created": 0, "owned_by": "frugal-supervisor"},
            {"id": "local", "object": "model", "created": 0, "owned_by": "frugal-supervisor"},
        ],
    }
    assert models_body(["claude-auto"], anthropic_shape=True) == {
        "data": [
            {
                "type": "model",
                "id": "claude-auto",
                "display_name": "claude-auto",
                "created_at": "1970-01-01T00:00:00Z",
                "lifecycle": "active",
            }
        ],
        "has_more": False,
        "first_id": "claude-auto",
        "last_id": "claude-auto",
    }
    assert models_body([], anthropic_shape=True)["first_id"] is None
