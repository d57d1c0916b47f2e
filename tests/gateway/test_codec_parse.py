"""Parsing: real-looking bodies from each client, one conversation in all four protocols, refusals, pass-through."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from supervisor.backends.base import Message, Result, ToolCall, ToolSpec
from supervisor.gateway.codecs import CodecError, InboundRequest, check_translatable, codec_for
from supervisor.gateway.codecs.anthropic import AnthropicCodec
from supervisor.gateway.codecs.ollama import OllamaCodec
from supervisor.gateway.codecs.openai_chat import OpenAIChatCodec
from supervisor.gateway.codecs.openai_responses import OpenAIResponsesCodec
from supervisor.usage import Usage
from tests.gateway.conversations import CONVERSATION, SAME_CONVERSATION, WEATHER, WEATHER_SCHEMA, follow_up

# ----------------------------------------------------------------------------------------------------------
# Real-looking bodies (shapes from the SDKs' types and gateway.md's client notes)

CLAUDE_CODE_BODY: dict[str, Any] = {
    "model": "claude-sonnet-5-5",
    "max_tokens": 32000,
    "stream": True,
    "metadata": {"user_id": "user_abc_account__session_1234"},
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.140; cch=9f3e"},
        {
            "type": "text",
            "text": "You are Claude Code, Anthropic's official CLI for Claude.",
            "cache_control": {"type": "ephemeral"},
        },
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>CLAUDE.md says: run pytest</system-reminder>"},
                {"type": "text", "text": "fix the failing test", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Run the tests first.", "signature": "EqQBCkYIBxgCKkA..."},
                {"type": "text", "text": "I'll run the tests."},
                {"type": "tool_use", "id": "toolu_01A", "name": "Bash", "input": {"command": "pytest -q"}},
                {"type": "tool_use", "id": "toolu_01B", "name": "Read", "input": {"file_path": "/repo/app.py"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "1 failed", "is_error": True},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01B",
                    "content": [
                        {"type": "text", "text": "def add(a, b):"},
                        {"type": "text", "text": "    return a - b"},
                    ],
                },
                {"type": "text", "text": "go on", "cache_control": {"type": "ephemeral"}},
            ],
        },
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Executes a bash command.",
            "input_schema": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        },
        {
            "name": "Read",
            "description": "Reads a file.",
            "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        },
    ],
    "thinking": {"type": "enabled", "budget_tokens": 4000},
}

CODEX_BODY: dict[str, Any] = {
    "model": "gpt-5.5-codex",
    "instructions": "You are Codex, a coding agent.",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "<permissions>ask</permissions>"}],
        },
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list the files"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB..."},
        {"type": "function_call", "name": "shell", "arguments": '{"command":["ls"]}', "call_id": "call_X1"},
        {"type": "function_call_output", "call_id": "call_X1", "output": "README.md\nsrc"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Two entries."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
    ],
    "tools": [
        {
            "type": "function",
            "name": "shell",
            "description": "Runs a shell command and returns its output.",
            "strict": False,
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                "required": ["command"],
                "additionalProperties": False,
            },
        }
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "019a-session",
}

AIDER_BODY: dict[str, Any] = {
    "model": "openai/local",
    "messages": [
        {"role": "system", "content": "Act as an expert software developer."},
        {"role": "user", "content": "Change the greeting to Hello."},
        {"role": "assistant", "content": "Ok."},
        {"role": "user", "content": [{"type": "text", "text": "app.py"}, {"type": "text", "text": "print('hi')"}]},
    ],
    "temperature": 0,
    "stream": True,
    "api_base": "https://evil.example/v1",
    "api_key": "sk-should-never-be-forwarded",
}

GOOSE_BODY: dict[str, Any] = {
    "model": "cheap",
    "messages": [
        {"role": "developer", "content": "You are goose."},
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": [{"type": "text", "text": "18 C"}]},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": WEATHER_SCHEMA,
            },
        }
    ],
    "max_completion_tokens": 4096,
    "stop": "\n\nUser:",
    "stream": True,
    "stream_options": {"include_usage": True},
}


def test_claude_code_body() -> None:
    request = AnthropicCodec().parse(CLAUDE_CODE_BODY)
    assert request.protocol == "anthropic"
    assert (request.model, request.stream, request.max_output_tokens) == ("claude-sonnet-5-5", True, 32000)
    assert request.messages == (
        Message("system", "x-anthropic-billing-header: cc_version=2.1.140; cch=9f3e"),
        Message("system", "You are Claude Code, Anthropic's official CLI for Claude.", cache_breakpoint=True),
        Message(
            "user",
            "<system-reminder>CLAUDE.md says: run pytest</system-reminder>\nfix the failing test",
            cache_breakpoint=True,
        ),
        Message(
            "assistant",
            "I'll run the tests.",
            tool_calls=(
                ToolCall("toolu_01A", "Bash", '{"command": "pytest -q"}'),
                ToolCall("toolu_01B", "Read", '{"file_path": "/repo/app.py"}'),
            ),
        ),
        Message("tool", "1 failed", tool_call_id="toolu_01A", name="Bash", is_error=True),
        Message("tool", "def add(a, b):\n    return a - b", tool_call_id="toolu_01B", name="Read"),
        Message("user", "go on", cache_breakpoint=True),
    )
    assert [tool.name for tool in request.tools] == ["Bash", "Read"]
    assert request.tools[0].parameters == CLAUDE_CODE_BODY["tools"][0]["input_schema"]
    assert request.untranslatable == ()  # thinking blocks are Anthropic-only but dropping them loses nothing
    assert request.body is CLAUDE_CODE_BODY


def test_codex_responses_body() -> None:
    request = OpenAIResponsesCodec().parse(CODEX_BODY)
    assert (request.protocol, request.stream, request.needs_server_state) == ("openai_responses", True, False)
    assert request.max_output_tokens is None
    assert request.messages == (
        Message("system", "You are Codex, a coding agent."),
        Message("system", "<permissions>ask</permissions>"),
        Message("user", "list the files"),
        Message("assistant", "", tool_calls=(ToolCall("call_X1", "shell", '{"command":["ls"]}'),)),
        Message("tool", "README.md\nsrc", tool_call_id="call_X1", name="shell"),
        Message("assistant", "Two entries."),
        Message("user", "thanks"),
    )
    assert request.tools == (
        ToolSpec("shell", "Runs a shell command and returns its output.", CODEX_BODY["tools"][0]["parameters"]),
    )
    assert request.untranslatable == ()


def test_aider_and_goose_chat_bodies() -> None:
    codec = OpenAIChatCodec()
    aider = codec.parse(AIDER_BODY)
    assert aider.messages[-1] == Message("user", "app.py\nprint('hi')")
    assert (aider.temperature, aider.include_usage, aider.max_output_tokens) == (0.0, False, None)
    goose = codec.parse(GOOSE_BODY)
    assert goose.messages == (
        Message("system", "You are goose."),
        Message("user", "weather in Paris?"),
        Message("assistant", "", tool_calls=(ToolCall("call_9", "get_weather", '{"city":"Paris"}'),)),
        Message("tool", "18 C", tool_call_id="call_9", name="get_weather"),
    )
    assert goose.tools == (WEATHER,)
    assert (goose.max_output_tokens, goose.stop, goose.include_usage) == (4096, ("\n\nUser:",), True)
    assert codec.parse({**GOOSE_BODY, "stop": ["a", "b"], "max_tokens": 7}).stop == ("a", "b")


def test_chat_max_tokens_prefers_max_completion_tokens_and_include_usage_needs_stream() -> None:
    codec = OpenAIChatCodec()
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert codec.parse({**base, "max_tokens": 100}).max_output_tokens == 100
    assert codec.parse({**base, "max_tokens": 100, "max_completion_tokens": 50}).max_output_tokens == 50
    assert not codec.parse({**base, "stream_options": {"include_usage": True}}).include_usage
    assert codec.parse({**base, "response_format": {"type": "json_object"}}).json_schema == {"type": "object"}
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    assert codec.parse({**base, "response_format": fmt}).json_schema == schema


def test_ollama_chat_body_from_aider_with_tools_and_options() -> None:
    body = {
        "model": "qwen3:4b",
        "messages": [
            {"role": "system", "content": "Act as an expert."},
            {"role": "user", "content": "weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                    {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
                ],
            },
            {"role": "tool", "tool_name": "get_weather", "content": "18 C"},
            {"role": "tool", "tool_name": "get_weather", "content": "24 C"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "get_weather", "description": WEATHER.description, "parameters": WEATHER_SCHEMA},
            }
        ],
        "options": {"num_ctx": 65536, "temperature": 0.2, "num_predict": 512, "stop": ["</s>"]},
        "keep_alive": "10m",
    }
    request = OllamaCodec().parse(body)
    assert request.stream is True  # Ollama streams unless told otherwise
    assert (request.max_output_tokens, request.temperature, request.stop) == (512, 0.2, ("</s>",))
    assert request.tools == (WEATHER,)
    paris, rome = request.messages[2].tool_calls
    assert (paris.id, paris.arguments, rome.id, rome.arguments) == (
        "call_2_0",
        '{"city": "Paris"}',
        "call_2_1",
        '{"city": "Rome"}',
    )
    # Results are matched to calls by name, in order.
    assert [(m.tool_call_id, m.name, m.content) for m in request.messages[3:]] == [
        ("call_2_0", "get_weather", "18 C"),
        ("call_2_1", "get_weather", "24 C"),
    ]
    assert OllamaCodec().parse({**body, "options": {"num_predict": -1}}).max_output_tokens is None
    assert OllamaCodec().parse({**body, "stream": False}).stream is False


def test_ollama_tool_results_match_by_id_when_the_client_sends_one() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "two lookups"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "call_a", "function": {"name": "lookup", "arguments": {"q": 1}}},
                    {"id": "call_b", "function": {"name": "lookup", "arguments": {"q": 2}}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_b", "content": "two"},
            {"role": "tool", "tool_name": "lookup", "content": "one"},
        ],
    }
    request = OllamaCodec().parse(body)
    assert [(m.tool_call_id, m.content) for m in request.messages[2:]] == [("call_b", "two"), ("call_a", "one")]


def test_ollama_generate_body() -> None:
    body = {
        "model": "qwen3:4b",
        "prompt": "Why is the sky blue?",
        "system": "Be brief.",
        "format": "json",
        "stream": False,
    }
    request = OllamaCodec(generate=True).parse(body)
    assert request.protocol == "ollama_generate"
    assert request.messages == (Message("system", "Be brief."), Message("user", "Why is the sky blue?"))
    assert (request.stream, request.json_schema, request.tools) == (False, {"type": "object"}, ())
    raw = OllamaCodec(generate=True).parse(
        {"model": "m", "prompt": "x", "raw": True, "suffix": "y", "images": ["iVBOR"]}
    )
    assert raw.untranslatable == (
        "suffix: fill-in-the-middle, which only Ollama can apply",
        "raw: raw mode, which only Ollama can apply",
        "images: images",
    )


# ----------------------------------------------------------------------------------------------------------
# One conversation, four protocols: the same messages and tools


@pytest.mark.parametrize("protocol", sorted(SAME_CONVERSATION))
def test_one_conversation_parses_the_same_in_every_protocol(protocol: str) -> None:
    codec, body = SAME_CONVERSATION[protocol]
    request = codec.parse(body)
    assert request.messages == CONVERSATION
    assert request.tools == (WEATHER,)
    check_translatable(request)  # nothing here needs the client's own provider


# ----------------------------------------------------------------------------------------------------------
# Refusals name the field


@pytest.mark.parametrize(
    ("protocol", "body", "words"),
    [
        ("openai_chat", [], "body: must be a JSON object, got list"),
        ("openai_chat", {"messages": [{"role": "user", "content": "hi"}]}, "model: required: a non-empty string"),
        ("openai_chat", {"model": "m", "messages": []}, "messages: must not be empty"),
        (
            "openai_chat",
            {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role: must be system",
        ),
        (
            "openai_chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"},
            "max_tokens: must be an integer",
        ),
        (
            "openai_chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -5},
            "max_completion_tokens: must not be negative",
        ),
        (
            "openai_chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": 5},
            "stop: must be a string or a list of strings",
        ),
        (
            "openai_chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature: must be a number",
        ),
        (
            "openai_chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 3},
            "n: only one choice per request",
        ),
        (
            "openai_chat",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"},
            "stream: must be true or false",
        ),
        (
            "openai_chat",
            {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id: must be a string",
        ),
        (
            "openai_chat",
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {}}],
            },
            "tools[0].function.name: must be a string",
        ),
        (
            "openai_chat",
            {"model": "m", "messages": [{"role": "assistant", "content": "x", "function_call": {"name": "f"}}]},
            "messages[0].function_call: the legacy function_call",
        ),
        (
            "anthropic",
            {"model": "m", "messages": [{"role": "system", "content": "x"}]},
            'messages[0].role: must be "user" or "assistant", got \'system\'; put the system prompt in the top-level "system" field',
        ),
        (
            "anthropic",
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "messages[0].content[0].tool_use_id: must be a string",
        ),
        (
            "anthropic",
            {
                "model": "m",
                "messages": [
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}]}
                ],
            },
            "messages[0].content[0].input: must be a JSON object, got list",
        ),
        (
            "anthropic",
            {"model": "m", "system": [{"type": "image"}], "messages": [{"role": "user", "content": "x"}]},
            'system[0].type: system blocks must be "text"',
        ),
        ("openai_responses", {"model": "m"}, "input: required: a string or a list of input items"),
        (
            "openai_responses",
            {"model": "m", "input": [{"type": "function_call", "name": "f"}]},
            "input[0].call_id: must be a string",
        ),
        (
            "openai_responses",
            {"model": "m", "input": [{"role": "tool", "content": "x"}]},
            "input[0].role: must be user, assistant, system or developer",
        ),
        (
            "ollama_chat",
            {"model": "m", "messages": [{"role": "user", "content": ["x"]}]},
            "messages[0].content: must be a string, got list",
        ),
        (
            "ollama_chat",
            {"model": "m", "messages": [], "options": {"num_predict": "many"}},
            "options.num_predict: must be an integer",
        ),
        ("ollama_chat", {"model": "m", "messages": [], "format": 3}, 'format: must be "json" or a JSON Schema object'),
        ("ollama_generate", {"model": "m", "prompt": 7}, "prompt: must be a string"),
    ],
)
def test_refusals_name_the_field(protocol: Any, body: Any, words: str) -> None:
    with pytest.raises(CodecError) as caught:
        codec_for(protocol).parse(body)
    assert words in str(caught.value)


def test_untranslatable_features_are_listed_and_refused_only_for_translation() -> None:
    anthropic_body = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                    {"type": "text", "text": "what is this?"},
                ],
            }
        ],
        "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
    }
    request = AnthropicCodec().parse(anthropic_body)
    assert request.untranslatable == (
        "messages[0].content[0]: a 'image' block",
        "tools[0]: the 'web_search_20250305' tool, which only Anthropic runs",
    )
    assert request.messages == (Message("user", "what is this?"),)
    with pytest.raises(CodecError, match=r"a 'image' block; tools\[0\]: the 'web_search_20250305' tool"):
        check_translatable(request)

    chat = OpenAIChatCodec().parse(
        {
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:"}}]}],
        }
    )
    assert chat.untranslatable == ("messages[0].content[0]: a 'image_url' content part",)
    responses = OpenAIResponsesCodec().parse({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]})
    assert responses.untranslatable == ("tools[0]: the 'web_search' tool (only function tools can be translated)",)
    ollama = OllamaCodec().parse({"model": "m", "messages": [{"role": "user", "content": "x", "images": ["iVBOR"]}]})
    assert ollama.untranslatable == ("messages[0].images: images",)


@pytest.mark.parametrize(
    "extra",
    [
        {"previous_response_id": "resp_123"},
        {"store": True},
        {"input": [{"type": "item_reference", "id": "msg_123"}]},
        {"conversation": "conv_123"},
    ],
)
def test_responses_that_need_server_state_are_flagged(extra: dict[str, Any]) -> None:
    request = OpenAIResponsesCodec().parse({"model": "m", "input": "hi", **extra})
    assert request.needs_server_state
    assert not OpenAIResponsesCodec().parse({"model": "m", "input": "hi", "store": False}).needs_server_state


# ----------------------------------------------------------------------------------------------------------
# Pass-through bodies


def parsed(protocol: Any, body: dict[str, Any]) -> tuple[Any, InboundRequest]:
    codec = codec_for(protocol)
    return codec, codec.parse(body)


def test_chat_pass_through_clamps_injects_and_forces_usage_on_streams() -> None:
    original = copy.deepcopy(AIDER_BODY)
    codec, request = parsed("openai_chat", AIDER_BODY)
    body = codec.pass_through_body(request, upstream_model="qwen3:4b", max_output_tokens=2048)
    assert body["model"] == "qwen3:4b"
    assert body["max_tokens"] == 2048  # injected: the client sent none
    assert body["stream_options"] == {"include_usage": True}
    assert "api_base" not in body
    assert "api_key" not in body
    assert original == AIDER_BODY  # the client's body is never changed

    _, goose = parsed("openai_chat", GOOSE_BODY)
    clamped = codec.pass_through_body(goose, upstream_model="gpt-6", max_output_tokens=1000)
    assert clamped["max_completion_tokens"] == 1000
    assert "max_tokens" not in clamped
    small = codec.pass_through_body(goose, upstream_model="gpt-6", max_output_tokens=100_000)
    assert small["max_completion_tokens"] == 4096  # under the ceiling: the client's own budget
    renamed = codec.pass_through_body(
        goose, upstream_model="deepseek-chat", max_output_tokens=1000, max_tokens_key="max_tokens"
    )
    assert renamed["max_tokens"] == 1000
    assert "max_completion_tokens" not in renamed

    _, plain = parsed("openai_chat", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert "stream_options" not in codec.pass_through_body(plain, upstream_model="m", max_output_tokens=10)


def test_other_pass_through_bodies() -> None:
    codec, claude = parsed("anthropic", CLAUDE_CODE_BODY)
    body = codec.pass_through_body(claude, upstream_model="claude-sonnet-5-5", max_output_tokens=8000)
    assert body["max_tokens"] == 8000
    assert body["system"] == CLAUDE_CODE_BODY["system"]
    assert body["thinking"] == CLAUDE_CODE_BODY["thinking"]
    no_budget = {k: v for k, v in CLAUDE_CODE_BODY.items() if k != "max_tokens"}
    assert codec.parse(no_budget).max_output_tokens is None  # Anthropic requires it; we accept its absence
    assert (
        codec.pass_through_body(codec.parse(no_budget), upstream_model="c", max_output_tokens=700)["max_tokens"] == 700
    )

    codec, codex = parsed("openai_responses", CODEX_BODY)
    body = codec.pass_through_body(codex, upstream_model="gpt-5.5-codex", max_output_tokens=9000)
    assert body["max_output_tokens"] == 9000
    assert body["input"] == CODEX_BODY["input"]

    ollama_body = {"model": "auto", "messages": [], "options": {"num_ctx": 8192, "num_predict": 99999}, "base_url": "x"}
    codec, request = parsed("ollama_chat", ollama_body)
    body = codec.pass_through_body(request, upstream_model="qwen3:4b", max_output_tokens=1024)
    assert body["options"] == {"num_ctx": 8192, "num_predict": 1024}
    assert "base_url" not in body
    assert ollama_body["options"] == {"num_ctx": 8192, "num_predict": 99999}


def test_arguments_are_kept_as_text_and_objects_serialized_as_the_backends_do() -> None:
    chat = OpenAIChatCodec().parse(GOOSE_BODY)
    assert chat.messages[2].tool_calls[0].arguments == '{"city":"Paris"}'  # the client's own text, verbatim
    spaced = json.loads(json.dumps(GOOSE_BODY))
    spaced["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{ "city" : "Paris" }'
    assert OpenAIChatCodec().parse(spaced).messages[2].tool_calls[0].arguments == '{ "city" : "Paris" }'
    anthropic = AnthropicCodec().parse(SAME_CONVERSATION["anthropic"][1])
    assert anthropic.messages[2].tool_calls[0].arguments == '{"city": "Paris"}'  # json.dumps, like the backends


# ----------------------------------------------------------------------------------------------------------
# Round trips across protocols: a turn parsed from one protocol, answered in another, read back unchanged


@pytest.mark.parametrize("client", sorted(SAME_CONVERSATION))
@pytest.mark.parametrize("source", sorted(SAME_CONVERSATION))
def test_a_turn_survives_every_protocol_pair(source: str, client: str) -> None:
    """The assistant turn parsed from ``source`` (as a translated upstream's answer would arrive), encoded for a
    ``client`` of another protocol, comes back in that client's next request as the same text and calls."""
    parsed_codec, body = SAME_CONVERSATION[source]
    turn = parsed_codec.parse(body).messages[2]
    answer = Result(
        text=turn.content,
        finish_reason="tool_calls",
        usage=Usage(1, 0, 0, 0, 1),
        ttft_s=None,
        total_s=0.1,
        tool_calls=turn.tool_calls,
    )
    client_codec = codec_for(client)  # type: ignore[arg-type]
    again = client_codec.parse(follow_up(client, client_codec.response(answer, model="auto")))
    assistant = next(m for m in again.messages if m.role == "assistant")
    assert assistant.content == turn.content
    assert [(c.id, c.name, json.loads(c.arguments)) for c in assistant.tool_calls] == [
        (c.id, c.name, json.loads(c.arguments)) for c in turn.tool_calls
    ]
    result = next(m for m in again.messages if m.role == "tool")
    assert (result.tool_call_id, result.name, result.content) == (turn.tool_calls[0].id, "get_weather", "18 C")
