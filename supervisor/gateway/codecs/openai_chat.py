"""OpenAI Chat Completions (``POST /v1/chat/completions``): Aider, Goose, opencode, Cline, the openai SDK.

Streams are SSE ``chat.completion.chunk`` objects: a role delta first, content deltas, ``delta.tool_calls``
(each call whole, with its index), a chunk with the finish reason, then (only when the client asked with
``stream_options.include_usage``) a usage chunk with empty ``choices``, then ``data: [DONE]``.

Usage is read with the OpenAI-compatible backend's own ``normalize_usage``, so every dialect it knows
(OpenAI cached subset, DeepSeek hit/miss, Gemini thinking) is read the same way through the gateway.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from supervisor.backends._http import SSEEvent, loads_object
from supervisor.backends.base import Message, Result, ToolCall, ToolSpec
from supervisor.backends.openai_compat import normalize_usage
from supervisor.gateway.codecs._common import (
    Clock,
    Excerpt,
    NewId,
    SSETee,
    ToolNames,
    arguments_text,
    dumps,
    error_headers,
    error_text,
    finish_of,
    optional_bool,
    optional_number,
    optional_tokens,
    random_id,
    require_dict,
    require_list,
    require_model,
    require_object,
    require_str,
    sse,
    stop_sequences,
    tool_parameters,
    without_endpoint_fields,
)
from supervisor.gateway.codecs.base import CodecError, ErrorKind, InboundRequest, ProtocolName, TeeResult
from supervisor.usage import Usage

OWNED_BY: Final = "frugal-supervisor"
FINISH_REASONS: Final = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})

# Our error kinds as OpenAI's (type, code). Codex and the SDKs read ``insufficient_quota`` as "retrying will
# not help"; the HTTP status (set by the caller) is what the SDKs map to exception classes.
ERROR_TYPES: Final[dict[ErrorKind, tuple[str, str | None]]] = {
    "invalid_request": ("invalid_request_error", None),
    "authentication": ("invalid_request_error", "invalid_api_key"),
    "permission": ("permission_error", None),
    "not_found": ("invalid_request_error", "model_not_found"),
    "request_too_large": ("invalid_request_error", "request_too_large"),
    "cap_reached": ("insufficient_quota", "insufficient_quota"),
    "approval_required": ("insufficient_quota", "approval_required"),
    "offline": ("server_error", "offline"),
    "rate_limit": ("requests", "rate_limit_exceeded"),
    "overloaded": ("server_error", "overloaded"),
    "unavailable": ("server_error", "unavailable"),
    "timeout": ("server_error", "timeout"),
    "api_error": ("server_error", None),
}


# ----------------------------------------------------------------------------------------------------------
# Requests


def content_text(content: Any, path: str, untranslatable: list[str]) -> str:
    """A message's text: a string, null, or a list of content parts (text parts joined with newlines)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = require_list(content, path, what="content parts")
    texts: list[str] = []
    for index, part in enumerate(parts):
        part_path = f"{path}[{index}]"
        part = require_dict(part, part_path)
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            texts.append(require_str(part.get("text"), f"{part_path}.text"))
        elif kind == "refusal":
            texts.append(require_str(part.get("refusal"), f"{part_path}.refusal"))
        elif isinstance(kind, str):
            untranslatable.append(f"{part_path}: a {kind!r} content part")
        else:
            raise CodecError(f"{part_path}.type", 'required: the part\'s type, e.g. "text"')
    return "\n".join(texts)


def parse_tool_calls(value: Any, path: str) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for index, raw in enumerate(require_list(value, path, what="tool calls")):
        call_path = f"{path}[{index}]"
        raw = require_dict(raw, call_path)
        kind = raw.get("type", "function")
        if kind != "function":
            raise CodecError(f"{call_path}.type", f"only function tool calls are supported, got {kind!r}")
        call_id = require_str(raw.get("id"), f"{call_path}.id")
        function = require_dict(raw.get("function"), f"{call_path}.function")
        name = require_str(function.get("name"), f"{call_path}.function.name")
        arguments = function.get("arguments", "")
        calls.append(ToolCall(id=call_id, name=name, arguments=arguments_text(arguments if arguments else "")))
    return tuple(calls)


def parse_messages(value: Any, untranslatable: list[str]) -> tuple[Message, ...]:
    raw_messages = require_list(value, "messages", what="messages")
    if not raw_messages:
        raise CodecError("messages", "must not be empty", "send at least one user message")
    names = ToolNames()
    messages: list[Message] = []
    for index, raw in enumerate(raw_messages):
        path = f"messages[{index}]"
        raw = require_dict(raw, path)
        role = raw.get("role")
        if role in ("system", "developer"):
            messages.append(Message("system", content_text(raw.get("content"), f"{path}.content", untranslatable)))
        elif role == "user":
            messages.append(Message("user", content_text(raw.get("content"), f"{path}.content", untranslatable)))
        elif role == "assistant":
            if raw.get("function_call") is not None:
                raise CodecError(
                    f"{path}.function_call", "the legacy function_call is not supported", "send tool_calls instead"
                )
            calls = parse_tool_calls(raw["tool_calls"], f"{path}.tool_calls") if raw.get("tool_calls") else ()
            names.add(calls)
            text = content_text(raw.get("content"), f"{path}.content", untranslatable)
            messages.append(Message("assistant", text, tool_calls=calls))
        elif role == "tool":
            call_id = require_str(raw.get("tool_call_id"), f"{path}.tool_call_id")
            text = content_text(raw.get("content"), f"{path}.content", untranslatable)
            messages.append(Message("tool", text, tool_call_id=call_id, name=names.name(call_id)))
        elif role == "function":
            raise CodecError(f"{path}.role", 'the legacy "function" role is not supported', 'send a "tool" message')
        else:
            raise CodecError(f"{path}.role", f"must be system, developer, user, assistant or tool, got {role!r}")
    return tuple(messages)


def parse_tools(value: Any, untranslatable: list[str]) -> tuple[ToolSpec, ...]:
    if value is None:
        return ()
    specs: list[ToolSpec] = []
    for index, raw in enumerate(require_list(value, "tools", what="tools")):
        path = f"tools[{index}]"
        raw = require_dict(raw, path)
        kind = raw.get("type", "function")
        if kind != "function":
            untranslatable.append(f"{path}: a {kind!r} tool")
            continue
        function = require_dict(raw.get("function"), f"{path}.function")
        name = require_str(function.get("name"), f"{path}.function.name")
        description = function.get("description") or ""
        specs.append(
            ToolSpec(
                name=name,
                description=require_str(description, f"{path}.function.description"),
                parameters=tool_parameters(function.get("parameters"), f"{path}.function.parameters"),
            )
        )
    return tuple(specs)


def response_format_schema(value: Any) -> dict[str, Any] | None:
    """``response_format`` as a JSON Schema: ``json_schema`` -> its schema, ``json_object`` -> any object."""
    if value is None:
        return None
    fmt = require_dict(value, "response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = require_dict(fmt.get("json_schema"), "response_format.json_schema")
        return require_dict(spec.get("schema", {"type": "object"}), "response_format.json_schema.schema")
    raise CodecError("response_format.type", f"must be text, json_object or json_schema, got {kind!r}")


# ----------------------------------------------------------------------------------------------------------
# Answers


def usage_fields(usage: Usage) -> dict[str, Any] | None:
    """``usage`` as a Chat Completions usage object; ``None`` when unknown (we never report invented zeros)."""
    if usage.input_uncached is None or usage.output is None:
        return None
    prompt = usage.prompt_tokens or 0
    details: dict[str, Any] = {"cached_tokens": usage.cache_read or 0}
    if usage.cache_write:
        details["cache_write_tokens"] = usage.cache_write
    fields: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output,
        "total_tokens": prompt + usage.output,
        "prompt_tokens_details": details,
    }
    if usage.reasoning is not None:
        fields["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    return fields


def finish_reason(result: Result) -> str:
    reason = finish_of(result)
    return reason if reason in FINISH_REASONS else "stop"


def tool_call_fields(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


class ChatStreamEncoder:
    """One streamed chat completion."""

    media_type = "text/event-stream"

    def __init__(self, *, model: str, include_usage: bool, completion_id: str, created: int) -> None:
        self.model = model
        self.include_usage = include_usage
        self.completion_id = completion_id
        self.created = created
        self._started = False
        self._sent_text = False
        self._sent_calls: set[str] = set()
        self._tool_index = 0

    def _chunk(self, choices: list[dict[str, Any]], *, usage: Any = None, with_usage: bool = False) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage or with_usage:
            chunk["usage"] = usage  # OpenAI puts "usage": null on every chunk when usage was asked for
        return sse(chunk)

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}])

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._delta({"role": "assistant", "content": ""})

    def text(self, delta: str) -> bytes:
        if not delta:
            return b""
        self._sent_text = True
        return self.start() + self._delta({"content": delta})

    def tool_call(self, call: ToolCall) -> bytes:
        self._sent_calls.add(call.id)
        entry = {"index": self._tool_index, **tool_call_fields(call)}
        self._tool_index += 1
        return self.start() + self._delta({"tool_calls": [entry]})

    def finish(self, result: Result) -> bytes:
        out = bytearray(self.start())
        if not self._sent_text and result.text:
            out += self.text(result.text)
        for call in result.tool_calls:
            if call.id not in self._sent_calls:
                out += self.tool_call(call)
        out += self._delta({}, finish_reason(result))
        usage = usage_fields(result.usage)
        if self.include_usage and usage is not None:
            out += self._chunk([], usage=usage)
        out += b"data: [DONE]\n\n"
        return bytes(out)

    def error(self, kind: ErrorKind, message: str) -> bytes:
        kind_type, code = ERROR_TYPES[kind]
        return sse({"error": {"message": message, "type": kind_type, "param": None, "code": code}})

    def ping(self) -> bytes:
        return b": ping\n\n"


# ----------------------------------------------------------------------------------------------------------
# Usage tee


class ChatTee(SSETee):
    """Reads a copy of a chat completion (SSE chunks, or one JSON body)."""

    def __init__(self) -> None:
        super().__init__()
        self.excerpt = Excerpt()
        self.finish: str | None = None
        self.raw_usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.error: str | None = None
        self.done = False

    def take_event(self, event: SSEEvent) -> None:
        if event.is_done:
            self.done = True
            return
        chunk = loads_object(event.data)
        if chunk is None:
            return  # not JSON: the client sees it; nothing here to account
        if chunk.get("error"):
            self.error = error_text(chunk)
            return
        self._meta(chunk)
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                self.excerpt.add(delta["content"])
            self._finish(choice)

    def take_body(self, body: bytes) -> None:
        payload = loads_object(body)
        if payload is None:
            self.error = "the upstream's response body is not a JSON object"
            return
        if payload.get("error"):
            self.error = error_text(payload)
            return
        self._meta(payload)
        choices = payload.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                self.excerpt.add(message["content"])
            self._finish(choices[0])
            self.done = True

    def _meta(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("model"), str) and chunk["model"]:
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.raw_usage = chunk["usage"]  # the final chunk's; some servers send it with non-empty choices

    def _finish(self, choice: dict[str, Any]) -> None:
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish = reason

    def close(self) -> TeeResult:
        self.finish_input()
        return TeeResult(
            usage=normalize_usage(self.raw_usage) if self.raw_usage is not None else Usage(),
            finish_reason=self.finish,
            text_excerpt=self.excerpt.text,
            error=self.error,
            complete=self.error is None and (self.done or (self.finish is not None and self.raw_usage is not None)),
            raw_usage=dict(self.raw_usage or {}),
            model_reported=self.model,
        )


# ----------------------------------------------------------------------------------------------------------
# The codec


class OpenAIChatCodec:
    protocol: ProtocolName = "openai_chat"

    def __init__(self, *, new_id: NewId = random_id, clock: Clock | None = None) -> None:
        import time

        self.new_id = new_id
        self.clock: Clock = clock or time.time

    def parse(self, body: Any) -> InboundRequest:
        body = require_object(body)
        untranslatable: list[str] = []
        model = require_model(body)
        n = body.get("n")
        if n is not None and n != 1:
            raise CodecError("n", f"only one choice per request is supported, got {n!r}", "drop n or set it to 1")
        messages = parse_messages(body.get("messages"), untranslatable)
        tools = parse_tools(body.get("tools"), untranslatable)
        max_tokens = optional_tokens(body.get("max_completion_tokens"), "max_completion_tokens")
        if max_tokens is None:
            max_tokens = optional_tokens(body.get("max_tokens"), "max_tokens")
        stream = optional_bool(body, "stream", False)
        options = body.get("stream_options")
        include_usage = False
        if options is not None:
            options = require_dict(options, "stream_options")
            include_usage = optional_bool(options, "include_usage", False)
        return InboundRequest(
            protocol="openai_chat",
            model=model,
            stream=stream,
            messages=messages,
            tools=tools,
            max_output_tokens=max_tokens,
            temperature=optional_number(body.get("temperature"), "temperature"),
            stop=stop_sequences(body.get("stop"), "stop"),
            include_usage=stream and include_usage,
            needs_server_state=False,
            body=body,
            json_schema=response_format_schema(body.get("response_format")),
            untranslatable=tuple(untranslatable),
        )

    def error(
        self, status: int, kind: ErrorKind, message: str, *, retry_after_s: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        kind_type, code = ERROR_TYPES[kind]
        body = {"error": {"message": message, "type": kind_type, "param": None, "code": code}}
        return status, error_headers(kind, retry_after_s), dumps(body)

    def response(self, result: Result, *, model: str) -> bytes:
        content = result.text if result.text or not result.tool_calls else None
        message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
        if result.tool_calls:
            message["tool_calls"] = [tool_call_fields(call) for call in result.tool_calls]
        payload: dict[str, Any] = {
            "id": self.new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(self.clock()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(result)}],
            "usage": usage_fields(result.usage),
        }
        return dumps(payload)

    def stream(self, *, model: str, include_usage: bool) -> ChatStreamEncoder:
        return ChatStreamEncoder(
            model=model,
            include_usage=include_usage,
            completion_id=self.new_id("chatcmpl-"),
            created=int(self.clock()),
        )

    def pass_through_body(
        self,
        request: InboundRequest,
        *,
        upstream_model: str,
        max_output_tokens: int,
        max_tokens_key: str | None = None,
    ) -> dict[str, Any]:
        body = without_endpoint_fields(request.body)
        body["model"] = upstream_model
        budget = max_output_tokens
        if request.max_output_tokens is not None:
            budget = min(request.max_output_tokens, max_output_tokens)
        client_key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        body.pop("max_completion_tokens", None)
        body.pop("max_tokens", None)
        body[max_tokens_key or client_key] = budget
        if request.stream:
            client_options = body.get("stream_options")
            options: dict[str, Any] = copy.deepcopy(client_options) if isinstance(client_options, dict) else {}
            options["include_usage"] = True  # the core hides the usage chunk from a client that did not ask
            body["stream_options"] = options
        return body

    def usage_tee(self, *, streaming: bool, request: InboundRequest | None = None) -> ChatTee:
        return ChatTee()


def models_list(names: list[str] | tuple[str, ...], *, created: int = 0) -> dict[str, Any]:
    """``GET /v1/models`` in OpenAI's shape."""
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": created, "owned_by": OWNED_BY} for name in names],
    }
