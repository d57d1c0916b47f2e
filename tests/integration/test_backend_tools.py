"""Native tool calling over each real wire format, against the loopback fakes (nothing mocked).

For each of Ollama, OpenAI-compatible and Anthropic: the exact request body (tools, past calls, results) the
provider documents, the calls parsed from its stream, and what happens when the stream is not well formed.
The bodies are also checked against the official SDKs' own request types, and the fakes' tool-call streams
are read by the official SDKs, so the fakes the gateway and worker tests use speak the real thing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pydantic
import pytest

from supervisor.backends.anthropic import AnthropicBackend
from supervisor.backends.base import Message, Request, ToolCall, ToolSpec
from supervisor.backends.ollama import OllamaBackend
from supervisor.backends.openai_compat import OpenAICompatBackend
from supervisor.backends.scripted import ScriptedBackend
from supervisor.config import ProviderConfig
from supervisor.errors import BadRequest, ProtocolError
from supervisor.usage import Usage
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import CutToolCall, Malformed, Reply, ToolUse, tool_reply
from tests.fakes.ollama import OllamaFake
from tests.fakes.openai import OpenAIFake, RawStream

KEY = "sk-test-tools"

READ_FILE = ToolSpec(
    "read_file",
    "Read a file in the workspace.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
EDIT_FILE = ToolSpec(
    "edit_file",
    "Replace one unique span of a file.",
    {
        "type": "object",
        "properties": {"path": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}},
        "required": ["path", "old", "new"],
        "additionalProperties": False,
    },
)
TOOLS = (READ_FILE, EDIT_FILE)

CALL_A = ToolCall("call_A", "read_file", '{"path": "src/app.py"}')
CALL_B = ToolCall("call_B", "edit_file", '{"path": "src/app.py", "old": "return 1", "new": "return 2"}')
SOURCE = "def f():\n    return 1\n"
NOT_FOUND = "error: the old text was not found in src/app.py"

# A worker loop's transcript after two turns: a call with text around it, its result, a call alone, its failed
# result, and a nudge from the loop.
HISTORY = (
    Message("system", "You fix failing tests.", cache_breakpoint=True),
    Message("user", "Make `pytest -q` pass."),
    Message("assistant", "I will read it first.", tool_calls=(CALL_A,)),
    Message("tool", SOURCE, tool_call_id="call_A", name="read_file"),
    Message("assistant", "", tool_calls=(CALL_B,)),
    Message("tool", NOT_FOUND, tool_call_id="call_B", name="edit_file", is_error=True),
    Message("user", "2 turns left."),
)


def request(model: str, messages: tuple[Message, ...] = HISTORY[:2], **overrides: Any) -> Request:
    fields: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_output_tokens": 256,
        "timeout_s": 10.0,
        "context_window": 8192,
        "tools": TOOLS,
    }
    fields.update(overrides)
    return Request(**fields)


def sdk_validated(param_type: Any, body: Any) -> Any:
    """``body`` validated against an official SDK's request TypedDict, its lazily checked iterables consumed.

    Keys the type does not know are dropped by the validation, so comparing the result with ``body`` also
    catches a misspelled or invented field.
    """

    def consume(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: consume(item) for key, item in value.items()}
        if isinstance(value, (list, tuple, Iterator)):
            return [consume(item) for item in value]
        return value

    adapter = pydantic.TypeAdapter(param_type)  # kept alive: the lazy iterators validate through it
    return consume(adapter.validate_python(body))


# ==========================================================================================================
# Ollama


@pytest.fixture
def ollama_fake() -> Iterator[OllamaFake]:
    with OllamaFake(models=("qwen3:4b",)) as server:
        yield server  # type: ignore[misc]  # __enter__ returns the FakeServer base type


@pytest.fixture
async def ollama() -> AsyncIterator[Callable[[OllamaFake], OllamaBackend]]:
    made: list[OllamaBackend] = []

    def make(fake: OllamaFake) -> OllamaBackend:
        backend = OllamaBackend("ollama", ProviderConfig(kind="ollama", host=fake.url, local=True), {})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


OLLAMA_TOOLS = [
    {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
    for t in TOOLS
]
OLLAMA_HISTORY = [
    {"role": "system", "content": "You fix failing tests."},
    {"role": "user", "content": "Make `pytest -q` pass."},
    {
        "role": "assistant",
        "content": "I will read it first.",
        "tool_calls": [
            {"id": "call_A", "function": {"index": 0, "name": "read_file", "arguments": {"path": "src/app.py"}}}
        ],
    },
    {"role": "tool", "content": SOURCE, "tool_name": "read_file", "tool_call_id": "call_A"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_B",
                "function": {
                    "index": 0,
                    "name": "edit_file",
                    "arguments": {"path": "src/app.py", "old": "return 1", "new": "return 2"},
                },
            }
        ],
    },
    {"role": "tool", "content": NOT_FOUND, "tool_name": "edit_file", "tool_call_id": "call_B"},
    {"role": "user", "content": "2 turns left."},
]


async def test_ollama_sends_tools_and_reads_whole_calls_from_the_ndjson_stream(
    ollama_fake: OllamaFake, ollama: Callable[[OllamaFake], OllamaBackend]
) -> None:
    ollama_fake.enqueue(
        tool_reply(
            ToolUse("read_file", {"path": "src/app.py"}, id="call_x1"),
            ToolUse("edit_file", {"path": "src/app.py", "old": "return 1", "new": "return 2"}),
            text="Let me look.",
            input_tokens=180,
            output_tokens=40,
        )
    )
    deltas: list[str] = []

    result = await ollama(ollama_fake).complete(request("qwen3:4b"), deltas.append)

    assert result.tool_calls == (
        ToolCall("call_x1", "read_file", '{"path": "src/app.py"}'),
        ToolCall("call_fake0", "edit_file", '{"path": "src/app.py", "old": "return 1", "new": "return 2"}'),
    )
    assert result.text == "Let me look."
    assert "".join(deltas) == "Let me look."  # only text reaches on_text
    assert result.finish_reason == "tool_calls"  # the server said "stop"
    assert result.usage == Usage(180, 0, 0, 0, 40, None)
    [body] = ollama_fake.chat_bodies()
    assert body["tools"] == OLLAMA_TOOLS
    assert body["messages"] == OLLAMA_HISTORY[:2]


async def test_ollama_replays_calls_as_objects_and_results_with_tool_name(
    ollama_fake: OllamaFake, ollama: Callable[[OllamaFake], OllamaBackend]
) -> None:
    ollama_fake.enqueue(Reply("Fixed: f returns 2.", input_tokens=400, output_tokens=9))

    result = await ollama(ollama_fake).complete(request("qwen3:4b", HISTORY))

    assert (result.text, result.finish_reason, result.tool_calls) == ("Fixed: f returns 2.", "stop", ())
    [body] = ollama_fake.chat_bodies()
    assert body["messages"] == OLLAMA_HISTORY
    # The official client's own types accept every message and tool we send (it does not know tool_call_id,
    # call ids or indexes yet, which the current server reads: api/types.go).
    from ollama import Message as OllamaMessage
    from ollama import Tool

    for sent in body["messages"]:
        known = OllamaMessage.model_validate(sent).model_dump(exclude_none=True)
        assert known["role"] == sent["role"]
        assert known["content"] == sent["content"]
        assert known.get("tool_name") == sent.get("tool_name")
        for ours, theirs in zip(sent.get("tool_calls", []), known.get("tool_calls", []), strict=True):
            assert theirs["function"] == {"name": ours["function"]["name"], "arguments": ours["function"]["arguments"]}
    for tool in body["tools"]:
        assert Tool.model_validate(tool).function.name in ("read_file", "edit_file")  # type: ignore[union-attr]


async def test_ollama_without_call_ids_names_calls_by_position_and_finds_result_names(
    ollama: Callable[[OllamaFake], OllamaBackend],
) -> None:
    with OllamaFake(models=("qwen3:4b",), tool_call_ids=False) as fake:
        fake.enqueue(tool_reply(ToolUse("read_file", {"path": "a.py"}), ToolUse("read_file", {"path": "b.py"})))
        backend = ollama(fake)  # type: ignore[arg-type]

        result = await backend.complete(request("qwen3:4b"))

        assert [(c.id, c.arguments) for c in result.tool_calls] == [
            ("call_0", '{"path": "a.py"}'),
            ("call_1", '{"path": "b.py"}'),
        ]
        # Next turn the synthesized ids repeat (call_0 again); a result without a name takes the name of the
        # latest call with its id.
        history = (
            *HISTORY[:2],
            Message("assistant", "", tool_calls=(ToolCall("call_0", "edit_file", "{}"),)),
            Message("tool", "done", tool_call_id="call_0"),
            Message("assistant", "", tool_calls=result.tool_calls),
            Message("tool", "A", tool_call_id="call_0"),
            Message("tool", "B", tool_call_id="call_1"),
        )
        await backend.complete(request("qwen3:4b", history))
        sent = fake.chat_bodies()[-1]["messages"]  # type: ignore[attr-defined]
        assert [(m.get("tool_name"), m.get("tool_call_id")) for m in sent if m["role"] == "tool"] == [
            ("edit_file", "call_0"),
            ("read_file", "call_0"),
            ("read_file", "call_1"),
        ]


async def test_ollama_passes_non_object_arguments_through_as_text(
    ollama_fake: OllamaFake, ollama: Callable[[OllamaFake], OllamaBackend]
) -> None:
    # A server that breaks the protocol and sends the arguments as a string: the executor decides.
    ollama_fake.enqueue(tool_reply(ToolUse("read_file", '{"path": "a.py"', id="call_s")))

    result = await ollama(ollama_fake).complete(request("qwen3:4b"))

    assert result.tool_calls == (ToolCall("call_s", "read_file", '{"path": "a.py"'),)


async def test_ollama_stream_cut_after_a_call_is_a_protocol_error(
    ollama_fake: OllamaFake, ollama: Callable[[OllamaFake], OllamaBackend]
) -> None:
    ollama_fake.enqueue(CutToolCall(ToolUse("read_file", {"path": "a.py"}), text="Reading."))

    with pytest.raises(ProtocolError) as info:
        await ollama(ollama_fake).complete(request("qwen3:4b"))

    assert info.value.partial_text == "Reading."
    assert "final chunk" in info.value.message


async def test_a_call_whose_arguments_are_not_an_object_cannot_be_replayed(
    ollama_fake: OllamaFake, ollama: Callable[[OllamaFake], OllamaBackend]
) -> None:
    broken = ToolCall("call_q", "edit_file", '{"path": "a.py", "old": ')
    history = (
        *HISTORY[:2],
        Message("assistant", "", tool_calls=(broken,)),
        Message("tool", "x", tool_call_id="call_q"),
    )

    with pytest.raises(BadRequest, match=r"call_q.*not a JSON object") as info:
        await ollama(ollama_fake).complete(request("qwen3:4b", history))

    assert info.value.hint is not None
    assert "'{}'" in info.value.hint
    assert ollama_fake.chat_bodies() == []  # refused before anything was sent


async def test_offered_tools_count_in_the_fit_check(
    ollama_fake: OllamaFake, ollama: Callable[[OllamaFake], OllamaBackend]
) -> None:
    backend = ollama(ollama_fake)
    without = backend.count_tokens(request("qwen3:4b", tools=())).tokens
    with_tools = backend.count_tokens(request("qwen3:4b")).tokens
    spec_bytes = sum(
        len(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters}).encode())
        for t in TOOLS
    )
    assert with_tools - without >= 350 + spec_bytes // 3
    history = backend.count_tokens(request("qwen3:4b", HISTORY, tools=())).tokens
    contents = backend.count_tokens(
        request("qwen3:4b", tuple(Message(m.role, m.content) for m in HISTORY), tools=())
    ).tokens
    assert history > contents  # call ids, names and arguments count too


# ==========================================================================================================
# OpenAI-compatible


@pytest.fixture
def openai_fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(models=("gpt-6.1-terra",)) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
async def openai_backend(openai_fake: OpenAIFake) -> AsyncIterator[OpenAICompatBackend]:
    backend = OpenAICompatBackend(
        "openai",
        ProviderConfig(kind="openai_compat", base_url=openai_fake.url + "/v1", api_key_env="OPENAI_API_KEY"),
        {"OPENAI_API_KEY": KEY},
    )
    yield backend
    await backend.aclose()


OPENAI_TOOLS = [
    {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
    for t in TOOLS
]
OPENAI_HISTORY = [
    {"role": "system", "content": "You fix failing tests."},
    {"role": "user", "content": "Make `pytest -q` pass."},
    {
        "role": "assistant",
        "content": "I will read it first.",
        "tool_calls": [
            {"id": "call_A", "type": "function", "function": {"name": "read_file", "arguments": CALL_A.arguments}}
        ],
    },
    {"role": "tool", "content": SOURCE, "tool_call_id": "call_A"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_B", "type": "function", "function": {"name": "edit_file", "arguments": CALL_B.arguments}}
        ],
    },
    {"role": "tool", "content": NOT_FOUND, "tool_call_id": "call_B"},
    {"role": "user", "content": "2 turns left."},
]


async def test_openai_joins_argument_fragments_across_chunks(
    openai_fake: OpenAIFake, openai_backend: OpenAICompatBackend
) -> None:
    openai_fake.enqueue(
        tool_reply(
            ToolUse("read_file", {"path": "src/app.py"}, id="call_1", fragments=5),
            ToolUse("edit_file", {"path": "src/app.py", "old": "return 1", "new": "return 2"}, fragments=7),
            input_tokens=976,
            cache_read=8000,
            output_tokens=52,
        )
    )

    result = await openai_backend.complete(request("gpt-6.1-terra"))

    assert result.tool_calls == (
        ToolCall("call_1", "read_file", '{"path": "src/app.py"}'),
        ToolCall("call_fake0", "edit_file", '{"path": "src/app.py", "old": "return 1", "new": "return 2"}'),
    )
    assert result.text == ""
    assert result.finish_reason == "tool_calls"
    assert result.usage == Usage(976, 8000, 0, 0, 52, 0)  # from the final chunk, after the calls
    [body] = openai_fake.model_bodies()
    assert body["tools"] == OPENAI_TOOLS
    assert body["messages"] == OPENAI_HISTORY[:2]


async def test_openai_replays_calls_and_results_in_the_documented_shape(
    openai_fake: OpenAIFake, openai_backend: OpenAICompatBackend
) -> None:
    openai_fake.enqueue(Reply("Fixed.", input_tokens=300, output_tokens=3))

    result = await openai_backend.complete(request("gpt-6.1-terra", HISTORY))

    assert (result.text, result.finish_reason, result.tool_calls) == ("Fixed.", "stop", ())
    [body] = openai_fake.model_bodies()
    assert body["messages"] == OPENAI_HISTORY
    from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming

    assert sdk_validated(CompletionCreateParamsStreaming, body) == body


async def test_openai_text_and_a_call_in_one_answer(
    openai_fake: OpenAIFake, openai_backend: OpenAICompatBackend
) -> None:
    openai_fake.enqueue(tool_reply(ToolUse("read_file", {"path": "a.py"}, id="call_t"), text="Checking a.py."))
    deltas: list[str] = []

    result = await openai_backend.complete(request("gpt-6.1-terra"), deltas.append)

    assert deltas == ["Check", "ing a", ".py."]
    assert result.text == "Checking a.py."
    assert result.tool_calls == (ToolCall("call_t", "read_file", '{"path": "a.py"}'),)


async def test_openai_arguments_that_are_not_json_pass_through_as_text(
    openai_fake: OpenAIFake, openai_backend: OpenAICompatBackend
) -> None:
    broken = '{"path": "src/app.py", "old": "return 1", "new": "return'  # the model hit its own limit
    openai_fake.enqueue(tool_reply(ToolUse("edit_file", broken, id="call_b", fragments=4), finish="length"))

    result = await openai_backend.complete(request("gpt-6.1-terra"))

    assert result.tool_calls == (ToolCall("call_b", "edit_file", broken),)
    assert result.finish_reason == "length"


async def test_openai_stream_cut_mid_call_is_a_protocol_error(
    openai_fake: OpenAIFake, openai_backend: OpenAICompatBackend
) -> None:
    openai_fake.enqueue(CutToolCall(ToolUse("read_file", {"path": "src/app.py"}, fragments=4), after_fragments=2))

    with pytest.raises(ProtocolError, match="ended before the answer was complete"):
        await openai_backend.complete(request("gpt-6.1-terra"))


async def test_openai_non_streamed_answer_with_tool_calls(
    openai_fake: OpenAIFake, openai_backend: OpenAICompatBackend
) -> None:
    completion = openai_fake._completion(
        tool_reply(ToolUse("read_file", {"path": "a.py"}, id="call_n"), input_tokens=20, output_tokens=8)
    )
    assert completion["choices"][0]["message"]["content"] is None
    openai_fake.enqueue(Malformed(body=json.dumps(completion).encode(), content_type="application/json"))

    result = await openai_backend.complete(request("gpt-6.1-terra"))

    assert result.tool_calls == (ToolCall("call_n", "read_file", '{"path": "a.py"}'),)
    assert result.finish_reason == "tool_calls"
    assert result.usage == Usage(20, 0, 0, 0, 8, 0)


def _sse(*payloads: dict[str, Any]) -> tuple[bytes, ...]:
    return (*(b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads), b"data: [DONE]\n\n")


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}


async def test_openai_servers_without_index_or_that_repeat_names_and_say_stop(
    openai_fake: OpenAIFake, openai_backend: OpenAICompatBackend
) -> None:
    # What some local servers send: no index, the name repeated in every fragment, finish "stop".
    fragment = lambda **f: _delta({"tool_calls": [f]})  # noqa: E731
    openai_fake.enqueue(
        RawStream(
            _sse(
                _delta({"role": "assistant", "content": None}),
                fragment(id="c1", type="function", function={"name": "read_file", "arguments": '{"pa'}),
                fragment(function={"name": "read_file", "arguments": 'th": "a.py"}'}),
                fragment(id="c2", type="function", function={"name": "read_file", "arguments": ""}),
                fragment(id="c2", function={"arguments": '{"path": "b.py"}'}),
                _delta({}, "stop"),
                {"choices": [], "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}},
            )
        )
    )

    result = await openai_backend.complete(request("gpt-6.1-terra"))

    assert result.tool_calls == (
        ToolCall("c1", "read_file", '{"path": "a.py"}'),
        ToolCall("c2", "read_file", '{"path": "b.py"}'),
    )
    assert result.finish_reason == "tool_calls"
    assert result.usage == Usage(50, 0, 0, 0, 20, None)


async def test_the_official_openai_sdk_reads_the_fakes_tool_call_stream(openai_fake: OpenAIFake) -> None:
    from openai import AsyncOpenAI

    openai_fake.enqueue(
        tool_reply(ToolUse("read_file", {"path": "src/app.py"}, id="call_s1", fragments=4), output_tokens=17)
    )
    client = AsyncOpenAI(api_key=KEY, base_url=openai_fake.url + "/v1", max_retries=0)
    async with (
        client,
        client.chat.completions.stream(
            model="gpt-6.1-terra",
            messages=[{"role": "user", "content": "Read src/app.py."}],
            tools=OPENAI_TOOLS,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        ) as stream,
    ):
        final = await stream.get_final_completion()

    [choice] = final.choices
    assert choice.finish_reason == "tool_calls"
    [sdk_call] = choice.message.tool_calls or []
    assert (sdk_call.id, sdk_call.function.name, sdk_call.function.arguments) == (  # type: ignore[union-attr]
        "call_s1",
        "read_file",
        '{"path": "src/app.py"}',
    )
    assert final.usage is not None
    assert final.usage.completion_tokens == 17


# ==========================================================================================================
# Anthropic


@pytest.fixture
def anthropic_fake() -> Iterator[AnthropicFake]:
    with AnthropicFake(models=("claude-sonnet-5-5",)) as server:
        yield server  # type: ignore[misc]


@pytest.fixture
async def anthropic_backend(anthropic_fake: AnthropicFake) -> AsyncIterator[AnthropicBackend]:
    backend = AnthropicBackend(
        "anthropic",
        ProviderConfig(kind="anthropic", base_url=anthropic_fake.url, api_key_env="ANTHROPIC_API_KEY"),
        {"ANTHROPIC_API_KEY": KEY},
    )
    yield backend
    await backend.aclose()


ANTHROPIC_TOOLS = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in TOOLS]
CACHED_SYSTEM = [
    {"type": "text", "text": "You fix failing tests.", "cache_control": {"type": "ephemeral", "ttl": "5m"}}
]
ANTHROPIC_HISTORY = [
    {"role": "user", "content": [{"type": "text", "text": "Make `pytest -q` pass."}]},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "I will read it first."},
            {"type": "tool_use", "id": "call_A", "name": "read_file", "input": {"path": "src/app.py"}},
        ],
    },
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_A", "content": SOURCE}]},
    {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "call_B",
                "name": "edit_file",
                "input": {"path": "src/app.py", "old": "return 1", "new": "return 2"},
            }
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_B", "content": NOT_FOUND, "is_error": True},
            {"type": "text", "text": "2 turns left."},  # after the results, in the same message, as documented
        ],
    },
]


async def test_anthropic_reads_tool_use_blocks_from_input_json_deltas(
    anthropic_fake: AnthropicFake, anthropic_backend: AnthropicBackend
) -> None:
    anthropic_fake.enqueue(
        tool_reply(
            ToolUse("read_file", {"path": "src/app.py"}, id="toolu_01", fragments=3),
            ToolUse("edit_file", {"path": "src/app.py", "old": "return 1", "new": "return 2"}, fragments=6),
            text="I'll read the file, then fix it.",
            input_tokens=40,
            cache_write=1200,
            output_tokens=88,
        )
    )
    deltas: list[str] = []

    result = await anthropic_backend.complete(request("claude-sonnet-5-5"), deltas.append)

    assert result.tool_calls == (
        ToolCall("toolu_01", "read_file", '{"path": "src/app.py"}'),
        ToolCall("toolu_fake0", "edit_file", '{"path": "src/app.py", "old": "return 1", "new": "return 2"}'),
    )
    assert result.text == "I'll read the file, then fix it."
    assert "".join(deltas) == result.text
    assert result.finish_reason == "tool_calls"
    assert result.usage == Usage(40, 0, 1200, 0, 88, None)  # the last cumulative message_delta, not a sum
    [body] = anthropic_fake.model_bodies()
    assert body["tools"] == ANTHROPIC_TOOLS
    assert body["system"] == CACHED_SYSTEM
    assert body["messages"] == ANTHROPIC_HISTORY[:1]


async def test_anthropic_replays_calls_and_results_in_the_documented_shape(
    anthropic_fake: AnthropicFake, anthropic_backend: AnthropicBackend
) -> None:
    anthropic_fake.enqueue(Reply("Fixed.", input_tokens=30, cache_read=1200, output_tokens=3))

    result = await anthropic_backend.complete(request("claude-sonnet-5-5", HISTORY))

    assert (result.text, result.finish_reason, result.tool_calls) == ("Fixed.", "stop", ())
    [body] = anthropic_fake.model_bodies()
    assert body["system"] == CACHED_SYSTEM
    assert body["messages"] == ANTHROPIC_HISTORY
    from anthropic.types.message_create_params import MessageCreateParamsStreaming

    assert sdk_validated(MessageCreateParamsStreaming, body) == body


async def test_anthropic_results_of_one_turn_share_one_user_message_and_can_end_the_cached_prefix(
    anthropic_fake: AnthropicFake, anthropic_backend: AnthropicBackend
) -> None:
    history = (
        Message("system", "You fix failing tests."),
        Message("user", "Make `pytest -q` pass."),
        Message("assistant", "", tool_calls=(CALL_A, CALL_B)),
        Message("tool", SOURCE, tool_call_id="call_A", name="read_file"),
        Message("tool", "edited", tool_call_id="call_B", name="edit_file", cache_breakpoint=True),
    )

    await anthropic_backend.complete(request("claude-sonnet-5-5", history))

    [body] = anthropic_fake.model_bodies()
    assert body["system"] == [{"type": "text", "text": "You fix failing tests."}]
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_A", "name": "read_file", "input": {"path": "src/app.py"}},
                {
                    "type": "tool_use",
                    "id": "call_B",
                    "name": "edit_file",
                    "input": {"path": "src/app.py", "old": "return 1", "new": "return 2"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_A", "content": SOURCE},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_B",
                    "content": "edited",
                    "cache_control": {"type": "ephemeral", "ttl": "5m"},
                },
            ],
        },
    ]


async def test_anthropic_partial_json_that_is_not_json_passes_through_as_text(
    anthropic_fake: AnthropicFake, anthropic_backend: AnthropicBackend
) -> None:
    anthropic_fake.enqueue(tool_reply(ToolUse("edit_file", '{"path": "a.py", "old": ', id="toolu_x", fragments=3)))

    result = await anthropic_backend.complete(request("claude-sonnet-5-5"))

    assert result.tool_calls == (ToolCall("toolu_x", "edit_file", '{"path": "a.py", "old": '),)


async def test_anthropic_a_call_without_arguments_is_an_empty_object(
    anthropic_fake: AnthropicFake, anthropic_backend: AnthropicBackend
) -> None:
    # A tool without parameters: the block starts with input {} and no partial_json follows.
    def event(name: str, payload: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **payload})}\n\n".encode()

    usage = {"input_tokens": 12, "output_tokens": 1}
    block = {"type": "tool_use", "id": "toolu_e", "name": "finish", "input": {}}
    anthropic_fake.enqueue(
        RawStream(
            (
                event("message_start", {"message": {"id": "m", "model": "claude-sonnet-5-5", "usage": usage}}),
                event("content_block_start", {"index": 0, "content_block": block}),
                event("content_block_stop", {"index": 0}),
                event("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
                event("message_stop", {}),
            )
        )
    )

    result = await anthropic_backend.complete(request("claude-sonnet-5-5"))

    assert result.tool_calls == (ToolCall("toolu_e", "finish", "{}"),)
    assert result.finish_reason == "tool_calls"
    assert result.usage == Usage(12, 0, 0, 0, 9, None)


async def test_anthropic_stream_cut_mid_call_is_a_protocol_error(
    anthropic_fake: AnthropicFake, anthropic_backend: AnthropicBackend
) -> None:
    anthropic_fake.enqueue(CutToolCall(ToolUse("read_file", {"path": "src/app.py"}), after_fragments=1, text="Hm."))

    with pytest.raises(ProtocolError) as info:
        await anthropic_backend.complete(request("claude-sonnet-5-5"))

    assert info.value.partial_text == "Hm."


async def test_anthropic_non_streamed_message_with_tool_use(
    anthropic_fake: AnthropicFake, anthropic_backend: AnthropicBackend
) -> None:
    message = anthropic_fake._message(
        "claude-sonnet-5-5",
        tool_reply(ToolUse("read_file", {"path": "a.py"}, id="toolu_n"), input_tokens=9, output_tokens=4),
        with_usage=True,
    )
    anthropic_fake.enqueue(Malformed(body=json.dumps(message).encode(), content_type="application/json"))

    result = await anthropic_backend.complete(request("claude-sonnet-5-5"))

    assert result.tool_calls == (ToolCall("toolu_n", "read_file", '{"path": "a.py"}'),)
    assert result.finish_reason == "tool_calls"


async def test_the_official_anthropic_sdk_reads_the_fakes_tool_use_stream(anthropic_fake: AnthropicFake) -> None:
    from anthropic import AsyncAnthropic

    anthropic_fake.enqueue(
        tool_reply(ToolUse("read_file", {"path": "src/app.py"}, id="toolu_s"), text="Reading.", output_tokens=21)
    )
    client = AsyncAnthropic(api_key=KEY, base_url=anthropic_fake.url, max_retries=0)
    async with (
        client,
        client.messages.stream(
            model="claude-sonnet-5-5",
            max_tokens=100,
            messages=[{"role": "user", "content": "Read src/app.py."}],
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
        ) as stream,
    ):
        final = await stream.get_final_message()

    assert final.stop_reason == "tool_use"
    assert [block.type for block in final.content] == ["text", "tool_use"]
    tool_use = final.content[1]
    assert (tool_use.id, tool_use.name, tool_use.input) == ("toolu_s", "read_file", {"path": "src/app.py"})  # type: ignore[union-attr]
    assert final.usage.output_tokens == 21


async def test_the_official_ollama_client_reads_the_fakes_tool_calls(ollama_fake: OllamaFake) -> None:
    from ollama import AsyncClient

    ollama_fake.enqueue(tool_reply(ToolUse("read_file", {"path": "src/app.py"}), output_tokens=11))
    client = AsyncClient(host=ollama_fake.url)
    calls = []
    final = None
    async for part in await client.chat(
        model="qwen3:4b",
        messages=[{"role": "user", "content": "Read src/app.py."}],
        tools=OLLAMA_TOOLS,
        stream=True,
    ):
        calls.extend(part.message.tool_calls or [])
        final = part
    await client.close()  # type: ignore[no-untyped-call]

    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("read_file", {"path": "src/app.py"})]
    assert final is not None
    assert final.done
    assert final.eval_count == 11


async def test_the_scripted_backend_refuses_tools_instead_of_dropping_them() -> None:
    backend = ScriptedBackend("sim", ProviderConfig(kind="scripted"), {}, responder=lambda _request: "ok")

    assert backend.supports_tools is False
    with pytest.raises(BadRequest, match="no native tool calling") as info:
        await backend.complete(request("sim-model"))
    assert info.value.hint is not None
    assert "JSON-in-text" in info.value.hint
    assert backend.calls == []
    assert (await backend.complete(request("sim-model", tools=()))).text == "ok"
