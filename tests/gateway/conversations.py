"""One conversation written in each client protocol, and the follow-up request each client sends after an answer."""

from __future__ import annotations

import json
from typing import Any

from supervisor.backends.base import Message, ToolCall, ToolSpec
from supervisor.gateway.codecs.anthropic import AnthropicCodec
from supervisor.gateway.codecs.ollama import OllamaCodec
from supervisor.gateway.codecs.openai_chat import OpenAIChatCodec
from supervisor.gateway.codecs.openai_responses import OpenAIResponsesCodec

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city"],
}
WEATHER = ToolSpec("get_weather", "Current weather in a city.", WEATHER_SCHEMA)

CONVERSATION = (
    Message("system", "Be terse."),
    Message("user", "weather in Paris?"),
    Message("assistant", "Checking.", tool_calls=(ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)),
    Message("tool", "18 C", tool_call_id="call_1", name="get_weather"),
    Message("user", "and tomorrow?"),
)

SAME_CONVERSATION: dict[str, tuple[Any, dict[str, Any]]] = {
    "openai_chat": (
        OpenAIChatCodec(),
        {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "weather in Paris?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
                {"role": "user", "content": "and tomorrow?"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": WEATHER.description,
                        "parameters": WEATHER_SCHEMA,
                    },
                }
            ],
        },
    ),
    "openai_responses": (
        OpenAIResponsesCodec(),
        {
            "model": "auto",
            "instructions": "Be terse.",
            "input": [
                {"role": "user", "content": "weather in Paris?"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
                {"role": "user", "content": [{"type": "input_text", "text": "and tomorrow?"}]},
            ],
            "tools": [
                {
                    "type": "function",
                    "name": "get_weather",
                    "description": WEATHER.description,
                    "parameters": WEATHER_SCHEMA,
                }
            ],
        },
    ),
    "anthropic": (
        AnthropicCodec(),
        {
            "model": "auto",
            "max_tokens": 1024,
            "system": "Be terse.",
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "18 C"},
                        {"type": "text", "text": "and tomorrow?"},
                    ],
                },
            ],
            "tools": [{"name": "get_weather", "description": WEATHER.description, "input_schema": WEATHER_SCHEMA}],
        },
    ),
    "ollama_chat": (
        OllamaCodec(),
        {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "weather in Paris?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                    ],
                },
                {"role": "tool", "tool_name": "get_weather", "content": "18 C"},
                {"role": "user", "content": "and tomorrow?"},
            ],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": WEATHER.description,
                        "parameters": WEATHER_SCHEMA,
                    },
                }
            ],
        },
    ),
}


def follow_up(protocol: str, answer: bytes) -> dict[str, Any]:
    """The next request a client of ``protocol`` sends after ``answer``: the user turn, the assistant turn
    built from the answer the way the SDKs do it, and the tool's result."""
    reply = json.loads(answer)
    if protocol == "openai_chat":
        message = reply["choices"][0]["message"]
        return {
            "model": "auto",
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                message,
                {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "18 C"},
            ],
        }
    if protocol == "openai_responses":
        call = next(item for item in reply["output"] if item["type"] == "function_call")
        return {
            "model": "auto",
            "input": [
                {"role": "user", "content": "weather in Paris?"},
                *reply["output"],
                {"type": "function_call_output", "call_id": call["call_id"], "output": "18 C"},
            ],
        }
    if protocol == "anthropic":
        call = next(block for block in reply["content"] if block["type"] == "tool_use")
        return {
            "model": "auto",
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": reply["content"]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "18 C"}]},
            ],
        }
    return {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            reply["message"],
            {"role": "tool", "tool_name": reply["message"]["tool_calls"][0]["function"]["name"], "content": "18 C"},
        ],
    }
