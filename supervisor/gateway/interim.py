"""Interim client-protocol codecs: the minimum the gateway core needs until ``supervisor/gateway/codecs`` lands.

Same shape as the codec interface (``parse``, ``error``, ``response``, ``stream``, ``pass_through_body``,
``usage_tee``), so switching is an import. Usage is read with the backends' own normalization
(``normalize_usage`` of the OpenAI-compatible and Anthropic backends, ``usage_from_metrics`` of Ollama's), never
a copy of it, and a response without usage gives an unknown ``Usage()`` (the reservation stays charged).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from supervisor.backends.base import Message, Result, ToolCall, ToolSpec
from supervisor.usage import Usage

ProtocolName = Literal["openai_chat", "openai_responses", "anthropic", "ollama_chat", "ollama_generate"]
TEXT_EXCERPT_CHARS: Final = 2000
RETRYABLE_KINDS: Final = frozenset({"rate_limit", "overloaded", "unavailable", "timeout", "api_error"})
CLIENT_ENDPOINT_FIELDS: Final = frozenset(
    {"api_base", "base_url", "baseURL", "api_key", "apiKey", "api_version", "api_type", "organization",
     "custom_llm_provider", "extra_headers", "extra_query", "extra_body"}
)  # fmt: skip


class CodecError(Exception):
    """A client request we refuse (HTTP 400), naming the field."""

    def __init__(self, field_path: str, problem: str, hint: str = "") -> None:
        message = f"{field_path}: {problem}" if field_path else problem
        super().__init__(f"{message}; {hint}" if hint else message)

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True, slots=True)
class InboundRequest:
    protocol: ProtocolName
    model: str
    stream: bool
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]
    max_output_tokens: int | None
    temperature: float | None
    stop: tuple[str, ...]
    include_usage: bool
    needs_server_state: bool
    body: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class TeeResult:
    usage: Usage
    finish_reason: str | None
    text_excerpt: str
    error: str | None
    complete: bool
    raw_usage: dict[str, Any] = field(default_factory=dict)


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {payload}\n\n".encode()


def _error_headers(kind: str, retry_after_s: int | None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if retry_after_s is not None:
        headers["retry-after"] = str(max(0, int(retry_after_s)))
    if kind not in RETRYABLE_KINDS:
        headers["x-should-retry"] = "false"
    return headers


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise CodecError("", "the request body must be a JSON object")
    return body


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise CodecError("model", "required: the model name (a tier alias, a catalog key or any name)")
    return model


def _text_of(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in ("text", "input_text", "output_text"):
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("tool_use", "tool_result"):
                continue
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                parts.append(f"[{kind}]")
                del i
        return "".join(parts)
    raise CodecError(where, "must be a string or a list of content parts")


def _int(body: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CodecError(key, "must be a positive whole number")
        return value
    return None


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    raise CodecError("stop", "must be a string or a list of strings")


def _args_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value if value is not None else {})


def _args_object(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}


def _drop_endpoint_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in CLIENT_ENDPOINT_FIELDS}


# ----------------------------------------------------------------------------------------------------------
# Byte readers for the tees


class _Lines:
    def __init__(self) -> None:
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._rest + chunk
        lines = data.split(b"\n")
        self._rest = lines.pop()
        return [line.rstrip(b"\r") for line in lines]

    def flush(self) -> list[bytes]:
        rest, self._rest = self._rest, b""
        return [rest.rstrip(b"\r")] if rest.strip() else []


def _sse_data(lines: list[bytes]) -> list[tuple[str | None, bytes]]:
    """(event, data) for each ``data:`` line; the event name from the preceding ``event:`` line."""
    out: list[tuple[str | None, bytes]] = []
    event: str | None = None
    for line in lines:
        if line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
        elif line.startswith(b"data:"):
            out.append((event, line[5:].strip()))
        elif not line:
            event = None
    return out


def _loads(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _error_text(payload: dict[str, Any]) -> str:
    err = payload.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or "error")
    return str(err)


# ----------------------------------------------------------------------------------------------------------
# OpenAI Chat Completions


class _OpenAIChatTee:
    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.lines = _Lines()
        self.body = bytearray()
        self.raw: dict[str, Any] = {}
        self.finish: str | None = None
        self.text: list[str] = []
        self.size = 0
        self.error: str | None = None
        self.done = False

    def feed(self, chunk: bytes) -> None:
        if not self.streaming:
            self.body += chunk
            return
        for _event, data in _sse_data(self.lines.feed(chunk)):
            self._take(data)

    def _take(self, data: bytes) -> None:
        if data == b"[DONE]":
            self.done = True
            return
        payload = _loads(data)
        if payload is None:
            return
        if "error" in payload:
            self.error = _error_text(payload)
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.raw = usage
        for choice in payload.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and self.size < TEXT_EXCERPT_CHARS:
                self.text.append(content)
                self.size += len(content)
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])

    def close(self) -> TeeResult:
        from supervisor.backends.openai_compat import normalize_usage

        if self.streaming:
            for _event, data in _sse_data([*self.lines.flush(), b""]):
                self._take(data)
        else:
            self._take(bytes(self.body))
            self.done = self.finish is not None
        usage = normalize_usage(self.raw) if self.raw else Usage()
        complete = self.done or (self.finish is not None and bool(self.raw))
        return TeeResult(usage, self.finish, "".join(self.text)[:TEXT_EXCERPT_CHARS], self.error, complete, self.raw)


class _OpenAIChatStream:
    media_type = "text/event-stream"

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.sent_text = False
        self.started = False
        self.calls = 0

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        )

    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        return self._chunk({"role": "assistant", "content": ""})

    def text(self, delta: str) -> bytes:
        self.sent_text = True
        return self.start() + self._chunk({"content": delta})

    def tool_call(self, call: ToolCall) -> bytes:
        index = self.calls
        self.calls += 1
        return self.start() + self._chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                ]
            }
        )

    def finish(self, result: Result) -> bytes:
        out = self.start()
        if result.text and not self.sent_text:
            out += self._chunk({"content": result.text})
        for call in result.tool_calls[self.calls :]:
            out += self.tool_call(call)
        out += self._chunk({}, _openai_finish(result))
        if self.include_usage:
            out += _sse(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": _openai_usage(result.usage),
                }
            )
        return out + b"data: [DONE]\n\n"

    def error(self, kind: str, message: str) -> bytes:
        return _sse({"error": {"message": message, "type": kind, "code": kind}})

    def ping(self) -> bytes:
        return b": ping\n\n"


def _openai_finish(result: Result) -> str:
    if result.tool_calls:
        return "tool_calls"
    return result.finish_reason if result.finish_reason in ("stop", "length") else "stop"


def _openai_usage(usage: Usage) -> dict[str, Any]:
    prompt = usage.prompt_tokens or 0
    output = usage.output or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read or 0},
    }


class OpenAIChatCodec:
    protocol: ProtocolName = "openai_chat"

    def parse(self, body: Any) -> InboundRequest:
        body = _object(body)
        model = _model(body)
        raw_messages = body.get("messages")
        if not isinstance(raw_messages, list) or not raw_messages:
            raise CodecError("messages", "required: a non-empty list of messages")
        messages: list[Message] = []
        for i, m in enumerate(raw_messages):
            if not isinstance(m, dict):
                raise CodecError(f"messages[{i}]", "must be an object")
            role = m.get("role")
            if role == "developer":
                role = "system"
            if role not in ("system", "user", "assistant", "tool"):
                raise CodecError(f"messages[{i}].role", f"{role!r} is not system, user, assistant or tool")
            calls = tuple(
                ToolCall(str(c.get("id", "")), str(c["function"]["name"]), _args_text(c["function"].get("arguments")))
                for c in m.get("tool_calls") or []
                if isinstance(c, dict) and isinstance(c.get("function"), dict) and "name" in c["function"]
            )
            messages.append(
                Message(
                    role=role,
                    content=_text_of(m.get("content"), f"messages[{i}].content"),
                    tool_calls=calls,
                    tool_call_id=m.get("tool_call_id") if role == "tool" else None,
                    name=m.get("name") if role == "tool" else None,
                )
            )
        tools = tuple(
            ToolSpec(
                str(t["function"]["name"]),
                str(t["function"].get("description") or ""),
                t["function"].get("parameters") or {"type": "object", "properties": {}},
            )
            for t in body.get("tools") or []
            if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
        )
        options = body.get("stream_options")
        temperature = body.get("temperature")
        return InboundRequest(
            protocol="openai_chat",
            model=model,
            stream=bool(body.get("stream")),
            messages=tuple(messages),
            tools=tools,
            max_output_tokens=_int(body, "max_completion_tokens", "max_tokens"),
            temperature=float(temperature) if isinstance(temperature, (int, float)) else None,
            stop=_stop(body.get("stop")),
            include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
            needs_server_state=False,
            body=body,
        )

    def error(
        self, status: int, kind: str, message: str, *, retry_after_s: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
        return status, _error_headers(kind, retry_after_s), dumps(body)

    def response(self, result: Result, *, model: str) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": result.text or None}
        if result.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in result.tool_calls
            ]
        return dumps(
            {
                "id": f"chatcmpl-{secrets.token_hex(12)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": _openai_finish(result)}],
                "usage": _openai_usage(result.usage),
            }
        )

    def stream(self, *, model: str, include_usage: bool) -> _OpenAIChatStream:
        return _OpenAIChatStream(model, include_usage)

    def pass_through_body(
        self,
        request: InboundRequest,
        *,
        upstream_model: str,
        max_output_tokens: int,
        max_tokens_key: str | None = None,
    ) -> dict[str, Any]:
        body = _drop_endpoint_fields(request.body)
        body["model"] = upstream_model
        present = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
        key = max_tokens_key or (present[0] if present else "max_tokens")
        for k in present:
            body.pop(k)
        body[key] = max_output_tokens
        if request.stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return body

    def usage_tee(self, *, streaming: bool) -> _OpenAIChatTee:
        return _OpenAIChatTee(streaming)


# ----------------------------------------------------------------------------------------------------------
# Anthropic Messages


class _AnthropicTee:
    def __init__(self, streaming: bool) -> None:
        self.streaming = streaming
        self.lines = _Lines()
        self.body = bytearray()
        self.raw: dict[str, Any] = {}
        self.finish: str | None = None
        self.text: list[str] = []
        self.size = 0
        self.error: str | None = None
        self.done = False

    def feed(self, chunk: bytes) -> None:
        if not self.streaming:
            self.body += chunk
            return
        for _event, data in _sse_data(self.lines.feed(chunk)):
            self._take(data)

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            # message_delta usage is cumulative: later fields replace earlier ones, never add to them.
            self.raw = {**self.raw, **{k: v for k, v in usage.items() if v is not None}}

    def _take(self, data: bytes) -> None:
        payload = _loads(data)
        if payload is None:
            return
        kind = payload.get("type")
        if kind == "error" or ("error" in payload and kind != "message"):
            self.error = _error_text(payload)
        elif kind == "message_start":
            self._usage((payload.get("message") or {}).get("usage"))
        elif kind == "message_delta":
            self._usage(payload.get("usage"))
            delta = payload.get("delta") or {}
            if delta.get("stop_reason"):
                self.finish = str(delta["stop_reason"])
        elif kind == "content_block_delta":
            text = (payload.get("delta") or {}).get("text")
            if isinstance(text, str) and self.size < TEXT_EXCERPT_CHARS:
                self.text.append(text)
                self.size += len(text)
        elif kind == "message_stop":
            self.done = True
        elif kind == "message":  # a whole (non-streamed) answer
            self._usage(payload.get("usage"))
            self.finish = payload.get("stop_reason")
            self.text = [str(b.get("text", "")) for b in payload.get("content") or [] if isinstance(b, dict)]
            self.done = True

    def close(self) -> TeeResult:
        from supervisor.backends.anthropic import normalize_usage

        if self.streaming:
            for _event, data in _sse_data([*self.lines.flush(), b""]):
                self._take(data)
        else:
            self._take(bytes(self.body))
        usage = normalize_usage(self.raw) if self.raw else Usage()
        complete = self.done and "output_tokens" in self.raw
        finish = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}.get(
            self.finish or "", self.finish
        )
        return TeeResult(usage, finish, "".join(self.text)[:TEXT_EXCERPT_CHARS], self.error, complete, self.raw)


class _AnthropicStream:
    media_type = "text/event-stream"

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.block = -1
        self.text_open = False
        self.sent_text = False
        self.calls = 0

    def start(self) -> bytes:
        if self.started:
            return b""
        self.started = True
        message: dict[str, Any] = {
            "id": f"msg_{secrets.token_hex(12)}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _sse({"type": "message_start", "message": message}, "message_start")

    def _close_text(self) -> bytes:
        if not self.text_open:
            return b""
        self.text_open = False
        return _sse({"type": "content_block_stop", "index": self.block}, "content_block_stop")

    def text(self, delta: str) -> bytes:
        out = self.start()
        if not self.text_open:
            self.block += 1
            self.text_open = True
            out += _sse(
                {"type": "content_block_start", "index": self.block, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            )
        self.sent_text = True
        return out + _sse(
            {"type": "content_block_delta", "index": self.block, "delta": {"type": "text_delta", "text": delta}},
            "content_block_delta",
        )

    def tool_call(self, call: ToolCall) -> bytes:
        out = self.start() + self._close_text()
        self.block += 1
        self.calls += 1
        out += _sse(
            {
                "type": "content_block_start",
                "index": self.block,
                "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}},
            },
            "content_block_start",
        )
        out += _sse(
            {
                "type": "content_block_delta",
                "index": self.block,
                "delta": {"type": "input_json_delta", "partial_json": call.arguments or "{}"},
            },
            "content_block_delta",
        )
        return out + _sse({"type": "content_block_stop", "index": self.block}, "content_block_stop")

    def finish(self, result: Result) -> bytes:
        out = self.start()
        if result.text and not self.sent_text:
            out += self.text(result.text)
        for call in result.tool_calls[self.calls :]:
            out += self.tool_call(call)
        out += self._close_text()
        usage = _anthropic_usage(result.usage)
        out += _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _anthropic_stop(result), "stop_sequence": None},
                "usage": usage,
            },
            "message_delta",
        )
        return out + _sse({"type": "message_stop"}, "message_stop")

    def error(self, kind: str, message: str) -> bytes:
        return _sse({"type": "error", "error": {"type": kind, "message": message}}, "error")

    def ping(self) -> bytes:
        return _sse({"type": "ping"}, "ping")


def _anthropic_stop(result: Result) -> str:
    if result.tool_calls:
        return "tool_use"
    return "max_tokens" if result.finish_reason == "length" else "end_turn"


def _anthropic_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_uncached or 0,
        "cache_read_input_tokens": usage.cache_read or 0,
        "cache_creation_input_tokens": usage.cache_write or 0,
        "output_tokens": usage.output or 0,
    }


class AnthropicCodec:
    protocol: ProtocolName = "anthropic"

    def parse(self, body: Any) -> InboundRequest:
        body = _object(body)
        model = _model(body)
        messages: list[Message] = []
        system = body.get("system")
        if system is not None:
            messages.append(Message("system", _text_of(system, "system")))
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise CodecError("messages", "required: a non-empty list of messages")
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                raise CodecError(f"messages[{i}].role", "must be user or assistant")
            content = m.get("content")
            blocks = content if isinstance(content, list) else []
            for b in blocks:
                if isinstance(b, dict) and b.get("type") == "tool_result":
                    messages.append(
                        Message(
                            "tool",
                            _text_of(b.get("content"), f"messages[{i}].content"),
                            tool_call_id=str(b.get("tool_use_id", "")),
                            is_error=bool(b.get("is_error")),
                        )
                    )
            calls = tuple(
                ToolCall(str(b.get("id", "")), str(b.get("name", "")), _args_text(b.get("input")))
                for b in blocks
                if isinstance(b, dict) and b.get("type") == "tool_use"
            )
            text = _text_of(content, f"messages[{i}].content")
            if text or calls or not blocks:
                messages.append(Message(m["role"], text, tool_calls=calls))
        tools = tuple(
            ToolSpec(str(t["name"]), str(t.get("description") or ""), t.get("input_schema") or {"type": "object"})
            for t in body.get("tools") or []
            if isinstance(t, dict) and "name" in t
        )
        temperature = body.get("temperature")
        return InboundRequest(
            protocol="anthropic",
            model=model,
            stream=bool(body.get("stream")),
            messages=tuple(messages),
            tools=tools,
            max_output_tokens=_int(body, "max_tokens"),
            temperature=float(temperature) if isinstance(temperature, (int, float)) else None,
            stop=_stop(body.get("stop_sequences")),
            include_usage=True,
            needs_server_state=False,
            body=body,
        )

    def error(
        self, status: int, kind: str, message: str, *, retry_after_s: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        names = {
            "invalid_request": "invalid_request_error",
            "authentication": "authentication_error",
            "permission": "permission_error",
            "not_found": "not_found_error",
            "request_too_large": "request_too_large",
            "cap_reached": "rate_limit_error",
            "approval_required": "permission_error",
            "rate_limit": "rate_limit_error",
            "overloaded": "overloaded_error",
        }
        body = {"type": "error", "error": {"type": names.get(kind, "api_error"), "message": message}}
        return status, _error_headers(kind, retry_after_s), dumps(body)

    def response(self, result: Result, *, model: str) -> bytes:
        content: list[dict[str, Any]] = []
        if result.text:
            content.append({"type": "text", "text": result.text})
        for c in result.tool_calls:
            content.append({"type": "tool_use", "id": c.id, "name": c.name, "input": _args_object(c.arguments)})
        return dumps(
            {
                "id": f"msg_{secrets.token_hex(12)}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": _anthropic_stop(result),
                "stop_sequence": None,
                "usage": _anthropic_usage(result.usage),
            }
        )

    def stream(self, *, model: str, include_usage: bool) -> _AnthropicStream:
        return _AnthropicStream(model)

    def pass_through_body(
        self,
        request: InboundRequest,
        *,
        upstream_model: str,
        max_output_tokens: int,
        max_tokens_key: str | None = None,
    ) -> dict[str, Any]:
        body = _drop_endpoint_fields(request.body)
        body["model"] = upstream_model
        body["max_tokens"] = max_output_tokens
        return body

    def usage_tee(self, *, streaming: bool) -> _AnthropicTee:
        return _AnthropicTee(streaming)


# ----------------------------------------------------------------------------------------------------------
# Ollama native (/api/chat and /api/generate)


class _OllamaTee:
    def __init__(self, streaming: bool, key: str) -> None:
        self.lines = _Lines()
        self.key = key  # "message" (chat) or "response" (generate)
        self.final: dict[str, Any] | None = None
        self.text: list[str] = []
        self.size = 0
        self.error: str | None = None

    def feed(self, chunk: bytes) -> None:
        for line in self.lines.feed(chunk):
            self._take(line)

    def _take(self, line: bytes) -> None:
        payload = _loads(line) if line.strip() else None
        if payload is None:
            return
        if "error" in payload:
            self.error = _error_text(payload)
            return
        piece = payload.get(self.key)
        text = piece.get("content") if isinstance(piece, dict) else piece
        if isinstance(text, str) and self.size < TEXT_EXCERPT_CHARS:
            self.text.append(text)
            self.size += len(text)
        if payload.get("done"):
            self.final = payload

    def close(self) -> TeeResult:
        from supervisor.backends.ollama import usage_from_metrics

        for line in self.lines.flush():
            self._take(line)
        final = self.final or {}
        usage = usage_from_metrics(final) if self.final is not None else Usage()
        finish = final.get("done_reason")
        raw: dict[str, Any] = {k: final[k] for k in ("prompt_eval_count", "eval_count") if k in final}
        return TeeResult(
            usage,
            "stop" if finish == "stop" else finish,
            "".join(self.text)[:TEXT_EXCERPT_CHARS],
            self.error,
            self.final is not None and usage.output is not None,
            raw,
        )


class _OllamaStream:
    media_type = "application/x-ndjson"

    def __init__(self, model: str, key: str) -> None:
        self.model = model
        self.key = key
        self.calls: list[ToolCall] = []
        self.sent_text = False

    def _line(self, payload: dict[str, Any]) -> bytes:
        return dumps(payload) + b"\n"

    def _piece(self, text: str, calls: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
        if self.key == "response":
            return {"response": text}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = [
                {"function": {"name": c.name, "arguments": _args_object(c.arguments)}} for c in calls
            ]
        return {"message": message}

    def start(self) -> bytes:
        return b""

    def text(self, delta: str) -> bytes:
        self.sent_text = True
        return self._line({"model": self.model, "created_at": _now(), **self._piece(delta), "done": False})

    def tool_call(self, call: ToolCall) -> bytes:
        self.calls.append(call)
        return self._line({"model": self.model, "created_at": _now(), **self._piece("", (call,)), "done": False})

    def finish(self, result: Result) -> bytes:
        out = b""
        if result.text and not self.sent_text:
            out += self.text(result.text)
        rest = tuple(result.tool_calls[len(self.calls) :])
        if rest:
            out += self._line({"model": self.model, "created_at": _now(), **self._piece("", rest), "done": False})
        final = {"model": self.model, "created_at": _now(), **self._piece(""), "done": True}
        return out + self._line({**final, **_ollama_metrics(result)})

    def error(self, kind: str, message: str) -> bytes:
        return self._line({"error": message})

    def ping(self) -> bytes:
        return b""  # NDJSON has no comment line; a held request sends nothing until it is decided


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


def _ollama_metrics(result: Result) -> dict[str, Any]:
    usage = result.usage
    metrics: dict[str, Any] = {"done_reason": "length" if result.finish_reason == "length" else "stop"}
    if usage.prompt_tokens is not None:
        metrics["prompt_eval_count"] = usage.prompt_tokens
    if usage.output is not None:
        metrics["eval_count"] = usage.output
    metrics["total_duration"] = int(result.total_s * 1e9)
    return metrics


class OllamaCodec:
    def __init__(self, protocol: ProtocolName) -> None:
        self.protocol: ProtocolName = protocol
        self.key = "message" if protocol == "ollama_chat" else "response"

    def parse(self, body: Any) -> InboundRequest:
        body = _object(body)
        model = _model(body)
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        messages: list[Message] = []
        if self.protocol == "ollama_chat":
            raw = body.get("messages")
            if not isinstance(raw, list) or not raw:
                raise CodecError("messages", "required: a non-empty list of messages")
            for i, m in enumerate(raw):
                if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
                    raise CodecError(f"messages[{i}].role", "must be system, user, assistant or tool")
                calls = tuple(
                    ToolCall(f"call_{i}_{j}", str(c["function"]["name"]), _args_text(c["function"].get("arguments")))
                    for j, c in enumerate(m.get("tool_calls") or [])
                    if isinstance(c, dict) and isinstance(c.get("function"), dict)
                )
                messages.append(
                    Message(m["role"], _text_of(m.get("content"), f"messages[{i}].content"), tool_calls=calls)
                )
        else:
            if isinstance(body.get("system"), str):
                messages.append(Message("system", body["system"]))
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise CodecError("prompt", "required: the prompt text")
            messages.append(Message("user", prompt))
        tools = tuple(
            ToolSpec(
                str(t["function"]["name"]),
                str(t["function"].get("description") or ""),
                t["function"].get("parameters") or {"type": "object"},
            )
            for t in body.get("tools") or []
            if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]
        )
        temperature = options.get("temperature")
        return InboundRequest(
            protocol=self.protocol,
            model=model,
            stream=body.get("stream", True) is not False,
            messages=tuple(messages),
            tools=tools,
            max_output_tokens=_int(options, "num_predict") if options.get("num_predict", 0) != -1 else None,
            temperature=float(temperature) if isinstance(temperature, (int, float)) else None,
            stop=_stop(options.get("stop")),
            include_usage=True,
            needs_server_state=False,
            body=body,
        )

    def error(
        self, status: int, kind: str, message: str, *, retry_after_s: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return status, _error_headers(kind, retry_after_s), dumps({"error": message})

    def response(self, result: Result, *, model: str) -> bytes:
        stream = _OllamaStream(model, self.key)
        piece = stream._piece(result.text, result.tool_calls)
        return dumps({"model": model, "created_at": _now(), **piece, "done": True, **_ollama_metrics(result)})

    def stream(self, *, model: str, include_usage: bool) -> _OllamaStream:
        return _OllamaStream(model, self.key)

    def pass_through_body(
        self,
        request: InboundRequest,
        *,
        upstream_model: str,
        max_output_tokens: int,
        max_tokens_key: str | None = None,
    ) -> dict[str, Any]:
        body = _drop_endpoint_fields(request.body)
        body["model"] = upstream_model
        options = dict(body.get("options") or {})
        options["num_predict"] = max_output_tokens
        body["options"] = options
        return body

    def usage_tee(self, *, streaming: bool) -> _OllamaTee:
        return _OllamaTee(streaming, self.key)


Codec = OpenAIChatCodec | AnthropicCodec | OllamaCodec

CODECS: dict[str, Codec] = {
    "openai_chat": OpenAIChatCodec(),
    "anthropic": AnthropicCodec(),
    "ollama_chat": OllamaCodec("ollama_chat"),
    "ollama_generate": OllamaCodec("ollama_generate"),
}


def get_codec(protocol: str) -> Codec:
    return CODECS[protocol]
