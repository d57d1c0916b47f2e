"""The official SDKs (openai, anthropic, ollama) parse what the codecs encode, and follow up on it.

A loopback server answers with the exact bytes a codec produced for a fixed ``Result``; each SDK must read
the text, the tool calls (ids, names, arguments) and the usage, through its plain and its streaming API.
Each SDK's follow-up request (the assistant turn it built from our answer, plus a tool result) is parsed back
with the same codec: the tool-call ids must survive the round trip. Errors: the codecs' envelopes must raise
the SDK's own exception class, and a cap refusal must reach the server exactly once (no retries).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from supervisor.backends.base import Result, ToolCall
from supervisor.gateway.codecs import models_body
from supervisor.gateway.codecs.anthropic import AnthropicCodec
from supervisor.gateway.codecs.ollama import OllamaCodec, ps_body, show_body, tags_body, version_body
from supervisor.gateway.codecs.openai_chat import OpenAIChatCodec
from supervisor.gateway.codecs.openai_responses import OpenAIResponsesCodec
from supervisor.usage import Usage
from tests.gateway.canned import Canned, CannedServer

USAGE = Usage(input_uncached=40, cache_read=900, cache_write_5m=60, cache_write_1h=0, output=25, reasoning=None)
CALL = ToolCall(id="call_w1", name="get_weather", arguments='{"city":"Paris","unit":"c"}')
TEXT_RESULT = Result(text="Hello from the gateway.", finish_reason="stop", usage=USAGE, ttft_s=0.05, total_s=0.4)
TOOL_RESULT = Result(
    text="Let me check.", finish_reason="tool_calls", usage=USAGE, ttft_s=0.05, total_s=0.4, tool_calls=(CALL,)
)
CAP_MESSAGE = "agent 'aider' day cap $2.00 reached (spent $2.00); resets at 00:00 (in 3h12m)"


@pytest.fixture
def server() -> Iterator[CannedServer]:
    with CannedServer() as canned:
        yield canned


def streamed(codec: Any, result: Result, *, include_usage: bool = True, pieces: int = 4) -> tuple[bytes, ...]:
    """The answer as a codec streams it: start, text deltas, tool calls, finish (one HTTP chunk each)."""
    encoder = codec.stream(model="auto", include_usage=include_usage)
    out = [encoder.start()]
    size = max(1, -(-len(result.text) // pieces))
    out.extend(encoder.text(result.text[i : i + size]) for i in range(0, len(result.text), size))
    out.extend(encoder.tool_call(call) for call in result.tool_calls)
    out.append(encoder.finish(result))
    return tuple(p for p in out if p)


def json_answer(codec: Any, result: Result) -> Canned:
    return Canned(body=codec.response(result, model="auto"))


def sse_answer(codec: Any, result: Result, *, include_usage: bool = True) -> Canned:
    return Canned(content_type="text/event-stream", pieces=streamed(codec, result, include_usage=include_usage))


def error_answer(codec: Any, status: int, kind: Any, message: str, *, retry_after_s: int | None = None) -> Canned:
    status, headers, body = codec.error(status, kind, message, retry_after_s=retry_after_s)
    return Canned(status=status, body=body, headers={k: v for k, v in headers.items() if k != "content-type"})


# ----------------------------------------------------------------------------------------------------------
# openai: chat completions


def openai_client(server: CannedServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-gateway-test", **kwargs)


def test_openai_chat_json_text_and_usage(server: CannedServer) -> None:
    codec = OpenAIChatCodec()
    server.add(json_answer(codec, TEXT_RESULT))
    completion = openai_client(server).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == "Hello from the gateway."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (1000, 25)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 900
    assert completion.usage.prompt_tokens_details.cache_write_tokens == 60


def test_openai_chat_json_tool_call_and_follow_up(server: CannedServer) -> None:
    codec = OpenAIChatCodec()
    server.add(json_answer(codec, TOOL_RESULT))
    completion = openai_client(server).chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    call = message.tool_calls[0]
    assert call.type == "function"
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_w1",
        "get_weather",
        {"city": "Paris", "unit": "c"},
    )
    follow_up = codec.parse(
        {
            "model": "auto",
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "18 C, cloudy"},
            ],
        }
    )
    assistant, tool = follow_up.messages[1], follow_up.messages[2]
    assert assistant.tool_calls == (CALL,)
    assert (tool.tool_call_id, tool.name, tool.content) == ("call_w1", "get_weather", "18 C, cloudy")


def test_openai_chat_stream_text_with_usage_chunk(server: CannedServer) -> None:
    codec = OpenAIChatCodec()
    server.add(sse_answer(codec, TEXT_RESULT))
    chunks = list(
        openai_client(server).chat.completions.create(
            model="auto",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the gateway."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 1025


def test_openai_chat_stream_without_include_usage_has_no_usage_chunk(server: CannedServer) -> None:
    codec = OpenAIChatCodec()
    server.add(sse_answer(codec, TEXT_RESULT, include_usage=False))
    chunks = list(
        openai_client(server).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_openai_chat_stream_helper_accumulates_tool_calls(server: CannedServer) -> None:
    codec = OpenAIChatCodec()
    server.add(sse_answer(codec, TOOL_RESULT))
    with openai_client(server).chat.completions.stream(
        model="auto",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        stream_options={"include_usage": True},
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "content.delta" in events
    assert "tool_calls.function.arguments.done" in events
    message = final.choices[0].message
    assert message.content == "Let me check."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_w1", "get_weather", CALL.arguments)
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None
    assert final.usage.completion_tokens == 25


def test_openai_chat_in_band_error_raises_api_error(server: CannedServer) -> None:
    codec = OpenAIChatCodec()
    encoder = codec.stream(model="auto", include_usage=False)
    pieces = (encoder.start(), encoder.text("partial"), encoder.error("unavailable", "the upstream dropped"))
    server.add(Canned(content_type="text/event-stream", pieces=pieces))
    stream = openai_client(server).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match="the upstream dropped"):
        list(stream)


@pytest.mark.parametrize(
    ("status", "kind", "exception"),
    [
        (401, "authentication", openai.AuthenticationError),
        (400, "invalid_request", openai.BadRequestError),
        (429, "cap_reached", openai.RateLimitError),
        (429, "approval_required", openai.RateLimitError),
        (403, "permission", openai.PermissionDeniedError),
        (404, "not_found", openai.NotFoundError),
    ],
)
def test_openai_sdk_raises_its_exception_after_exactly_one_request(
    server: CannedServer, status: int, kind: Any, exception: type[Exception]
) -> None:
    for codec in (OpenAIChatCodec(), OpenAIResponsesCodec()):
        server.requests.clear()
        retry = 3600 if status == 429 else None
        server.add(*(error_answer(codec, status, kind, CAP_MESSAGE, retry_after_s=retry) for _ in range(3)))
        client = openai_client(server)
        call: Any = (
            partial(client.chat.completions.create, messages=[{"role": "user", "content": "hi"}])
            if isinstance(codec, OpenAIChatCodec)
            else partial(client.responses.create, input="hi")
        )
        with pytest.raises(exception) as caught:
            call(model="auto")
        assert len(server.requests) == 1, f"{codec.protocol}: the SDK retried a {kind} refusal"
        assert CAP_MESSAGE in str(caught.value)
        server.answers.clear()


def test_openai_sdk_retries_a_retryable_kind_so_the_header_is_what_stops_it(server: CannedServer) -> None:
    codec = OpenAIChatCodec()
    server.add(error_answer(codec, 429, "rate_limit", "upstream busy"), json_answer(codec, TEXT_RESULT))
    completion = openai_client(server, max_retries=1).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == TEXT_RESULT.text
    assert len(server.requests) == 2


def test_openai_models_list(server: CannedServer) -> None:
    server.add(
        Canned(body=json.dumps(models_body(["auto", "local", "ollama:qwen3:4b"], anthropic_shape=False)).encode())
    )
    models = list(openai_client(server).models.list())
    assert [m.id for m in models] == ["auto", "local", "ollama:qwen3:4b"]
    assert all(m.object == "model" and m.owned_by == "frugal-supervisor" for m in models)


# ----------------------------------------------------------------------------------------------------------
# openai: responses


def test_openai_responses_json_text_and_function_call(server: CannedServer) -> None:
    codec = OpenAIResponsesCodec()
    server.add(json_answer(codec, TOOL_RESULT))
    response = openai_client(server).responses.create(model="auto", input="weather in Paris?")
    assert response.status == "completed"
    assert response.output_text == "Let me check."
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [("call_w1", "get_weather", CALL.arguments)]
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1000, 25)
    assert response.usage.input_tokens_details.cached_tokens == 900


def test_openai_responses_stream_helper_and_follow_up(server: CannedServer) -> None:
    codec = OpenAIResponsesCodec()
    server.add(sse_answer(codec, TOOL_RESULT))
    client = openai_client(server)
    with client.responses.stream(
        model="auto",
        input=[{"role": "user", "content": "weather in Paris?"}],
        instructions="You are terse.",
        tools=[{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": False}],
    ) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    assert events[:2] == ["response.created", "response.in_progress"]
    assert events[-1] == "response.completed"
    assert "response.output_text.delta" in events
    assert "response.function_call_arguments.done" in events
    assert final.output_text == "Let me check."
    call = next(item for item in final.output if item.type == "function_call")
    assert (call.call_id, call.name, call.arguments) == ("call_w1", "get_weather", CALL.arguments)
    assert final.usage is not None
    assert final.usage.total_tokens == 1025

    # What Codex sends next: the output items as input, then the function's output.
    items: list[dict[str, Any]] = [{"role": "user", "content": "weather in Paris?"}]
    items.extend(item.model_dump(exclude_none=True) for item in final.output)
    items.append({"type": "function_call_output", "call_id": call.call_id, "output": "18 C"})
    follow_up = codec.parse({"model": "auto", "instructions": "You are terse.", "input": items, "store": False})
    assert [m.role for m in follow_up.messages] == ["system", "user", "assistant", "tool"]
    assert follow_up.messages[2].content == "Let me check."
    assert follow_up.messages[2].tool_calls == (CALL,)
    assert (follow_up.messages[3].tool_call_id, follow_up.messages[3].name) == ("call_w1", "get_weather")
    assert not follow_up.needs_server_state


def test_openai_responses_incomplete_when_cut_by_the_budget(server: CannedServer) -> None:
    codec = OpenAIResponsesCodec()
    cut = Result(text="Half an ans", finish_reason="length", usage=USAGE, ttft_s=None, total_s=0.1)
    server.add(sse_answer(codec, cut))
    events = list(openai_client(server).responses.create(model="auto", input="hi", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_openai_responses_stream_error_event_and_failed_response(server: CannedServer) -> None:
    codec = OpenAIResponsesCodec()
    encoder = codec.stream(model="auto", include_usage=True)
    pieces = (encoder.start(), encoder.text("part"), encoder.error("unavailable", "the upstream dropped"))
    server.add(Canned(content_type="text/event-stream", pieces=pieces))
    events = list(openai_client(server).responses.create(model="auto", input="hi", stream=True))
    error = next(e for e in events if e.type == "error")
    assert error.message == "the upstream dropped"
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None
    assert events[-1].response.error.code == "server_error"


# ----------------------------------------------------------------------------------------------------------
# anthropic: messages


def anthropic_client(server: CannedServer, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-gateway-test", **kwargs)


def test_anthropic_json_text_tool_use_and_usage(server: CannedServer) -> None:
    codec = AnthropicCodec()
    server.add(json_answer(codec, TOOL_RESULT))
    message = anthropic_client(server).messages.create(
        model="auto", max_tokens=512, messages=[{"role": "user", "content": "weather in Paris?"}]
    )
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    text, tool = message.content
    assert text.type == "text"
    assert text.text == "Let me check."
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("call_w1", "get_weather", {"city": "Paris", "unit": "c"})
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (40, 900, 60)
    assert usage.output_tokens == 25
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 60


def test_anthropic_stream_helper_final_message_and_follow_up(server: CannedServer) -> None:
    codec = AnthropicCodec()
    answer = sse_answer(codec, TOOL_RESULT)
    ping = codec.stream(model="auto").ping()
    server.add(
        Canned(content_type="text/event-stream", pieces=(*(answer.pieces or ())[:1], ping, *(answer.pieces or ())[1:]))
    )
    with anthropic_client(server).messages.stream(
        model="auto",
        max_tokens=512,
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Let me check."
    assert final.stop_reason == "tool_use"
    tool = final.content[1]
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("call_w1", "get_weather", {"city": "Paris", "unit": "c"})
    # message_start carries placeholders; the cumulative message_delta usage replaces them.
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (40, 900, 25)

    follow_up = codec.parse(
        {
            "model": "auto",
            "max_tokens": 512,
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in final.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool.id, "content": "18 C"}]},
            ],
        }
    )
    assert follow_up.messages[1].tool_calls == (ToolCall("call_w1", "get_weather", '{"city": "Paris", "unit": "c"}'),)
    assert (follow_up.messages[2].role, follow_up.messages[2].tool_call_id, follow_up.messages[2].name) == (
        "tool",
        "call_w1",
        "get_weather",
    )


def test_anthropic_in_band_error_raises(server: CannedServer) -> None:
    codec = AnthropicCodec()
    encoder = codec.stream(model="auto")
    pieces = (encoder.start(), encoder.text("part"), encoder.error("overloaded", "the upstream is overloaded"))
    server.add(Canned(content_type="text/event-stream", pieces=pieces))
    stream = anthropic_client(server).messages.stream(
        model="auto", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    with stream as events, pytest.raises(anthropic.APIStatusError, match="overloaded_error"):
        list(events.text_stream)


@pytest.mark.parametrize(
    ("status", "kind", "exception"),
    [
        (401, "authentication", anthropic.AuthenticationError),
        (400, "invalid_request", anthropic.BadRequestError),
        (429, "cap_reached", anthropic.RateLimitError),
        (429, "approval_required", anthropic.RateLimitError),
        (403, "permission", anthropic.PermissionDeniedError),
        (503, "offline", anthropic.InternalServerError),
    ],
)
def test_anthropic_sdk_raises_its_exception_after_exactly_one_request(
    server: CannedServer, status: int, kind: Any, exception: type[Exception]
) -> None:
    codec = AnthropicCodec()
    retry = 3600 if status == 429 else None
    server.add(*(error_answer(codec, status, kind, CAP_MESSAGE, retry_after_s=retry) for _ in range(3)))
    with pytest.raises(exception) as caught:
        anthropic_client(server).messages.create(
            model="auto", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert len(server.requests) == 1
    assert CAP_MESSAGE in str(caught.value)
    assert isinstance(caught.value, anthropic.APIStatusError)
    assert caught.value.body["error"]["message"] == CAP_MESSAGE  # type: ignore[index]


def test_anthropic_models_list_in_anthropic_shape(server: CannedServer) -> None:
    server.add(Canned(body=json.dumps(models_body(["claude-auto", "local"], anthropic_shape=True)).encode()))
    page = anthropic_client(server).models.list()
    assert [m.id for m in page.data] == ["claude-auto", "local"]
    assert all(m.type == "model" and m.display_name == m.id for m in page.data)
    assert (page.first_id, page.last_id, page.has_more) == ("claude-auto", "local", False)


# ----------------------------------------------------------------------------------------------------------
# ollama: chat, generate and the read-only routes


def ollama_client(server: CannedServer) -> ollama.Client:
    return ollama.Client(host=server.url)


def ndjson_answer(codec: OllamaCodec, result: Result) -> Canned:
    return Canned(content_type="application/x-ndjson", pieces=streamed(codec, result))


def test_ollama_chat_json_text_tool_calls_and_counts(server: CannedServer) -> None:
    codec = OllamaCodec()
    server.add(Canned(body=codec.response(TOOL_RESULT, model="auto")))
    response = ollama_client(server).chat(model="auto", messages=[{"role": "user", "content": "weather?"}])
    assert response.done
    assert response.done_reason == "stop"
    assert response.message.content == "Let me check."
    assert response.message.tool_calls is not None
    function = response.message.tool_calls[0].function
    assert (function.name, dict(function.arguments)) == ("get_weather", {"city": "Paris", "unit": "c"})
    assert (response.prompt_eval_count, response.eval_count) == (1000, 25)
    assert response.total_duration == 400_000_000


def test_ollama_chat_stream_and_follow_up(server: CannedServer) -> None:
    codec = OllamaCodec()
    server.add(ndjson_answer(codec, TOOL_RESULT))
    chunks = list(
        ollama_client(server).chat(model="auto", messages=[{"role": "user", "content": "weather?"}], stream=True)
    )
    assert "".join(c.message.content or "" for c in chunks) == "Let me check."
    calls = [call for c in chunks for call in (c.message.tool_calls or ())]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "c"})
    ]
    assert chunks[-1].done
    assert (chunks[-1].prompt_eval_count, chunks[-1].eval_count) == (1000, 25)
    assert not any(c.done for c in chunks[:-1])

    # The ollama SDK drops ids: the follow-up matches the tool result to its call by name, with a stable id.
    assistant = {"role": "assistant", "content": "Let me check.", "tool_calls": [c.model_dump() for c in calls]}
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "weather?"},
            assistant,
            {"role": "tool", "tool_name": "get_weather", "content": "18 C"},
        ],
    }
    first, again = codec.parse(body), codec.parse(body)
    call = first.messages[1].tool_calls[0]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Paris", "unit": "c"})
    assert first.messages[2].tool_call_id == call.id
    assert first.messages[2].name == "get_weather"
    assert again.messages == first.messages  # stable: the same conversation gets the same ids


def test_ollama_generate_json_and_stream(server: CannedServer) -> None:
    codec = OllamaCodec(generate=True)
    server.add(Canned(body=codec.response(TEXT_RESULT, model="auto")), ndjson_answer(codec, TEXT_RESULT))
    client = ollama_client(server)
    whole = client.generate(model="auto", prompt="hi")
    assert whole.response == TEXT_RESULT.text
    assert whole.done
    assert whole.eval_count == 25
    parts = list(client.generate(model="auto", prompt="hi", stream=True))
    assert "".join(p.response or "" for p in parts) == TEXT_RESULT.text
    assert parts[-1].done
    assert parts[-1].prompt_eval_count == 1000


def test_ollama_errors_and_in_band_error(server: CannedServer) -> None:
    codec = OllamaCodec()
    encoder = codec.stream(model="auto")
    server.add(
        error_answer(codec, 401, "authentication", "missing gateway key"),
        error_answer(codec, 429, "cap_reached", CAP_MESSAGE, retry_after_s=3600),
        error_answer(codec, 400, "invalid_request", "messages[0].role: must be system, user, assistant or tool"),
        Canned(
            content_type="application/x-ndjson",
            pieces=(encoder.text("part"), encoder.error("unavailable", "upstream dropped")),
        ),
    )
    client = ollama_client(server)
    expected = [(401, "missing gateway key"), (429, CAP_MESSAGE), (400, "messages[0].role")]
    for status, words in expected:
        with pytest.raises(ollama.ResponseError) as caught:
            client.chat(model="auto", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == status
        assert words in caught.value.error
    with pytest.raises(ollama.ResponseError) as caught:
        list(client.chat(model="auto", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert caught.value.status_code == -1
    assert caught.value.error == "upstream dropped"
    assert len(server.requests) == 4


def test_ollama_read_only_routes(server: CannedServer) -> None:
    names = ["auto", "qwen3:4b"]
    server.add(
        Canned(body=json.dumps(tags_body(names)).encode()),
        Canned(body=json.dumps(show_body("qwen3:4b", context_length=32768)).encode()),
        Canned(body=json.dumps(ps_body(["qwen3:4b"])).encode()),
        Canned(body=json.dumps(version_body()).encode()),
    )
    client = ollama_client(server)
    assert [m.model for m in client.list().models] == names
    shown = client.show("qwen3:4b")
    assert shown.modelinfo is not None
    assert shown.modelinfo["supervisor.context_length"] == 32768
    assert shown.capabilities == ["completion", "tools"]
    assert [m.model for m in client.ps().models] == ["qwen3:4b"]
    assert httpx.get(f"{server.url}/api/version").json() == {"version": "0.14.0"}  # no SDK method for it
