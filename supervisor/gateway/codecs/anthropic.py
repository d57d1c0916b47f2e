"""Anthropic Messages (``POST /v1/messages``, ``?beta=true`` ignored): Claude Code, the anthropic SDK.

Requests: ``system`` as a string or text blocks (each block becomes its own system message, so Claude Code's
``cache_control`` marks survive as ``cache_breakpoint``), content as a string or blocks (text, ``tool_use``,
``tool_result`` with string or block content and ``is_error``). ``max_tokens`` is required by Anthropic but
not by us: a request without it gets the gateway's ceiling.

Streams follow the API's event sequence, every event named (the SDK skips unnamed ones): ``message_start``,
``content_block_start``/``_delta``/``_stop`` per text or ``tool_use`` block (tool input as one
``input_json_delta``), ``message_delta`` with the stop reason and cumulative usage, ``message_stop``.

Usage is read with the Anthropic backend's own ``stream_usage``/``normalize_usage``: ``message_delta`` usage is
cumulative (the last one wins) and a stream without it has unknown output.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from supervisor.backends._http import SSEEvent, loads_object
from supervisor.backends.anthropic import FINISH_REASONS, stream_usage
from supervisor.backends.base import Message, Result, ToolCall, ToolSpec
from supervisor.gateway.codecs._common import (
    Clock,
    Excerpt,
    NewId,
    SSETee,
    ToolNames,
    arguments_for_client,
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

MODELS_CREATED_AT: Final = "1970-01-01T00:00:00Z"

# Our finish reasons as Anthropic stop reasons; Anthropic's own words pass through.
STOP_REASONS: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
ANTHROPIC_STOP_REASONS: Final = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal", "model_context_window_exceeded"}
)

ERROR_TYPES: Final[dict[ErrorKind, str]] = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "cap_reached": "rate_limit_error",
    "approval_required": "rate_limit_error",
    "offline": "api_error",
    "rate_limit": "rate_limit_error",
    "overloaded": "overloaded_error",
    "unavailable": "api_error",
    "timeout": "timeout_error",
    "api_error": "api_error",
}

_THINKING_BLOCKS: Final = frozenset({"thinking", "redacted_thinking"})


# ----------------------------------------------------------------------------------------------------------
# Requests


def _text_of_blocks(blocks: list[Any], path: str, untranslatable: list[str]) -> tuple[str, bool]:
    """Text blocks joined with newlines, and whether any carried ``cache_control``."""
    texts: list[str] = []
    cached = False
    for index, block in enumerate(blocks):
        block_path = f"{path}[{index}]"
        block = require_dict(block, block_path)
        kind = block.get("type")
        if kind == "text":
            texts.append(require_str(block.get("text"), f"{block_path}.text"))
            cached = cached or block.get("cache_control") is not None
        elif isinstance(kind, str):
            untranslatable.append(f"{block_path}: a {kind!r} block")
        else:
            raise CodecError(f"{block_path}.type", 'required: the block\'s type, e.g. "text"')
    return "\n".join(texts), cached


def parse_system(value: Any, untranslatable: list[str]) -> list[Message]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Message("system", value)] if value else []
    messages: list[Message] = []
    for index, block in enumerate(require_list(value, "system", what="text blocks")):
        path = f"system[{index}]"
        block = require_dict(block, path)
        if block.get("type") != "text":
            raise CodecError(f"{path}.type", f'system blocks must be "text", got {block.get("type")!r}')
        text = require_str(block.get("text"), f"{path}.text")
        messages.append(Message("system", text, cache_breakpoint=block.get("cache_control") is not None))
    return messages


def _tool_result(block: dict[str, Any], path: str, names: ToolNames, untranslatable: list[str]) -> Message:
    call_id = require_str(block.get("tool_use_id"), f"{path}.tool_use_id")
    content = block.get("content")
    cached = block.get("cache_control") is not None
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        text, inner_cached = _text_of_blocks(
            require_list(content, f"{path}.content", what="blocks"), f"{path}.content", untranslatable
        )
        cached = cached or inner_cached
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise CodecError(f"{path}.is_error", f"must be true or false, got {is_error!r}")
    return Message(
        "tool",
        text,
        cache_breakpoint=cached,
        tool_call_id=call_id,
        name=names.name(call_id),
        is_error=bool(is_error),
    )


def _user_message(raw: dict[str, Any], path: str, names: ToolNames, untranslatable: list[str]) -> list[Message]:
    content = raw.get("content")
    if isinstance(content, str):
        return [Message("user", content)]
    blocks = require_list(content, f"{path}.content", what="content blocks")
    messages: list[Message] = []
    texts: list[str] = []
    cached = False

    def flush() -> None:
        nonlocal texts, cached
        if texts:
            messages.append(Message("user", "\n".join(texts), cache_breakpoint=cached))
        texts, cached = [], False

    for index, block in enumerate(blocks):
        block_path = f"{path}.content[{index}]"
        block = require_dict(block, block_path)
        kind = block.get("type")
        if kind == "text":
            texts.append(require_str(block.get("text"), f"{block_path}.text"))
            cached = cached or block.get("cache_control") is not None
        elif kind == "tool_result":
            flush()
            messages.append(_tool_result(block, block_path, names, untranslatable))
        elif isinstance(kind, str):  # image, document, server tool blocks: only Anthropic serves them
            untranslatable.append(f"{block_path}: a {kind!r} block")
        else:
            raise CodecError(f"{block_path}.type", 'required: the block\'s type, e.g. "text"')
    flush()
    if not messages:
        messages.append(Message("user", ""))  # only untranslatable blocks: keep the turn
    return messages


def _assistant_message(raw: dict[str, Any], path: str, names: ToolNames, untranslatable: list[str]) -> Message:
    content = raw.get("content")
    if isinstance(content, str):
        return Message("assistant", content)
    texts: list[str] = []
    calls: list[ToolCall] = []
    cached = False
    for index, block in enumerate(require_list(content, f"{path}.content", what="content blocks")):
        block_path = f"{path}.content[{index}]"
        block = require_dict(block, block_path)
        kind = block.get("type")
        if kind == "text":
            texts.append(require_str(block.get("text"), f"{block_path}.text"))
            cached = cached or block.get("cache_control") is not None
        elif kind == "tool_use":
            call_input = block.get("input", {})
            if not isinstance(call_input, dict):
                raise CodecError(f"{block_path}.input", f"must be a JSON object, got {type(call_input).__name__}")
            calls.append(
                ToolCall(
                    id=require_str(block.get("id"), f"{block_path}.id"),
                    name=require_str(block.get("name"), f"{block_path}.name"),
                    arguments=arguments_text(call_input),
                )
            )
            cached = cached or block.get("cache_control") is not None
        elif kind in _THINKING_BLOCKS:
            continue  # the model's earlier thinking: only Anthropic can use it, and nothing is lost without it
        elif isinstance(kind, str):
            untranslatable.append(f"{block_path}: a {kind!r} block")
        else:
            raise CodecError(f"{block_path}.type", 'required: the block\'s type, e.g. "text"')
    names.add(calls)
    return Message("assistant", "\n".join(texts), cache_breakpoint=cached, tool_calls=tuple(calls))


def parse_messages(value: Any, untranslatable: list[str]) -> list[Message]:
    raw_messages = require_list(value, "messages", what="messages")
    if not raw_messages:
        raise CodecError("messages", "must not be empty", "send at least one user message")
    names = ToolNames()
    messages: list[Message] = []
    for index, raw in enumerate(raw_messages):
        path = f"messages[{index}]"
        raw = require_dict(raw, path)
        role = raw.get("role")
        if role == "user":
            messages.extend(_user_message(raw, path, names, untranslatable))
        elif role == "assistant":
            messages.append(_assistant_message(raw, path, names, untranslatable))
        else:
            hint = 'put the system prompt in the top-level "system" field' if role == "system" else ""
            raise CodecError(f"{path}.role", f'must be "user" or "assistant", got {role!r}', hint)
    return messages


def parse_tools(value: Any, untranslatable: list[str]) -> tuple[ToolSpec, ...]:
    if value is None:
        return ()
    specs: list[ToolSpec] = []
    for index, raw in enumerate(require_list(value, "tools", what="tools")):
        path = f"tools[{index}]"
        raw = require_dict(raw, path)
        kind = raw.get("type")
        if kind not in (None, "custom"):
            untranslatable.append(f"{path}: the {kind!r} tool, which only Anthropic runs")
            continue
        description = raw.get("description") or ""
        specs.append(
            ToolSpec(
                name=require_str(raw.get("name"), f"{path}.name"),
                description=require_str(description, f"{path}.description"),
                parameters=tool_parameters(raw.get("input_schema"), f"{path}.input_schema"),
            )
        )
    return tuple(specs)


# ----------------------------------------------------------------------------------------------------------
# Answers


def usage_fields(usage: Usage) -> dict[str, Any]:
    """``usage`` in Anthropic's fields: ``input_tokens`` excludes cache reads and writes.

    ``input_tokens`` and ``output_tokens`` are required by the protocol; where the upstream reported none they
    are 0 here (the client's view only: the ledger charges such a call its reservation, never $0).
    """
    fields: dict[str, Any] = {"input_tokens": usage.input_uncached or 0}
    if usage.input_uncached is not None:
        fields["cache_creation_input_tokens"] = usage.cache_write or 0
        fields["cache_read_input_tokens"] = usage.cache_read or 0
        fields["cache_creation"] = {
            "ephemeral_5m_input_tokens": usage.cache_write_5m or 0,
            "ephemeral_1h_input_tokens": usage.cache_write_1h or 0,
        }
    fields["output_tokens"] = usage.output or 0
    if usage.reasoning is not None:
        fields["output_tokens_details"] = {"thinking_tokens": usage.reasoning}
    return fields


def stop_reason(result: Result) -> str:
    reason = finish_of(result)
    if reason in ANTHROPIC_STOP_REASONS:
        return reason
    return STOP_REASONS.get(reason, "end_turn")


def tool_input_json(call: ToolCall) -> str:
    """The call's arguments as the text of one JSON object (the model's own text when it already is one)."""
    if loads_object(call.arguments) is not None:
        return call.arguments
    return dumps(arguments_for_client(call.arguments)).decode()


class MessageStreamEncoder:
    """One streamed message."""

    media_type = "text/event-stream"

    def __init__(self, *, model: str, message_id: str) -> None:
        self.model = model
        self.message_id = message_id
        self._started = False
        self._sent_text = False
        self._sent_calls: set[str] = set()
        self._index = -1  # the current content block's index
        self._open: str | None = None  # the open block's type

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Placeholders, as the API sends before generation; message_delta carries the real counts.
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse({"type": "message_start", "message": message}, "message_start")

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse({"type": "content_block_stop", "index": self._index}, "content_block_stop")

    def _open_block(self, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._index += 1
        self._open = block["type"]
        return out + sse(
            {"type": "content_block_start", "index": self._index, "content_block": block}, "content_block_start"
        )

    def _block_delta(self, delta: dict[str, Any]) -> bytes:
        return sse({"type": "content_block_delta", "index": self._index, "delta": delta}, "content_block_delta")

    def text(self, delta: str) -> bytes:
        if not delta:
            return b""
        self._sent_text = True
        out = self.start()
        if self._open != "text":
            out += self._open_block({"type": "text", "text": ""})
        return out + self._block_delta({"type": "text_delta", "text": delta})

    def tool_call(self, call: ToolCall) -> bytes:
        self._sent_calls.add(call.id)
        out = self.start() + self._open_block({"type": "tool_use", "id": call.id, "name": call.name, "input": {}})
        out += self._block_delta({"type": "input_json_delta", "partial_json": tool_input_json(call)})
        return out + self._close_block()

    def finish(self, result: Result) -> bytes:
        out = bytearray(self.start())
        if not self._sent_text and result.text:
            out += self.text(result.text)
        for call in result.tool_calls:
            if call.id not in self._sent_calls:
                out += self.tool_call(call)
        out += self._close_block()
        delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason(result), "stop_sequence": None}}
        out += sse({**delta, "usage": usage_fields(result.usage)}, "message_delta")
        out += sse({"type": "message_stop"}, "message_stop")
        return bytes(out)

    def error(self, kind: ErrorKind, message: str) -> bytes:
        return sse({"type": "error", "error": {"type": ERROR_TYPES[kind], "message": message}}, "error")

    def ping(self) -> bytes:
        return sse({"type": "ping"}, "ping")


# ----------------------------------------------------------------------------------------------------------
# Usage tee


class MessageTee(SSETee):
    """Reads a copy of a Messages response (SSE events, or one JSON message)."""

    def __init__(self, cache_ttl: Literal["5m", "1h"] = "5m") -> None:
        super().__init__()
        self.cache_ttl = cache_ttl  # the request's TTL: the rate of cache writes the 5m/1h split leaves out
        self.excerpt = Excerpt()
        self.start_usage: dict[str, Any] | None = None
        self.final_usage: dict[str, Any] | None = None
        self.stop: str | None = None
        self.model: str | None = None
        self.error: str | None = None
        self.done = False

    def take_event(self, event: SSEEvent) -> None:
        payload = loads_object(event.data)
        if payload is None:
            return
        kind = payload.get("type") or event.event
        if kind == "error":
            self.error = error_text(payload)
        elif kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self._model(message)
                if isinstance(message.get("usage"), dict):
                    self.start_usage = message["usage"]
        elif kind == "content_block_start":
            block = payload.get("content_block")
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                self.excerpt.add(block["text"])
        elif kind == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                self.excerpt.add(delta["text"])
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop = delta["stop_reason"]
            if isinstance(payload.get("usage"), dict):
                self.final_usage = payload["usage"]  # cumulative: replace, never add
        elif kind == "message_stop":
            self.done = True

    def take_body(self, body: bytes) -> None:
        payload = loads_object(body)
        if payload is None:
            self.error = "the upstream's response body is not a JSON object"
            return
        if payload.get("type") == "error" or "error" in payload:
            self.error = error_text(payload)
            return
        self._model(payload)
        for block in payload.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                self.excerpt.add(block["text"])
        if isinstance(payload.get("stop_reason"), str):
            self.stop = payload["stop_reason"]
        if isinstance(payload.get("usage"), dict):
            self.final_usage = payload["usage"]
        self.done = True

    def _model(self, message: dict[str, Any]) -> None:
        if isinstance(message.get("model"), str) and message["model"]:
            self.model = message["model"]

    def close(self) -> TeeResult:
        self.finish_input()
        usage, raw = stream_usage(self.start_usage, self.final_usage, self.cache_ttl)
        return TeeResult(
            usage=usage,
            finish_reason=FINISH_REASONS.get(self.stop, self.stop) if self.stop else None,
            text_excerpt=self.excerpt.text,
            error=self.error,
            complete=self.error is None and (self.done or self.stop is not None),
            raw_usage=raw,
            model_reported=self.model,
        )


# ----------------------------------------------------------------------------------------------------------
# The codec


class AnthropicCodec:
    protocol: ProtocolName = "anthropic"

    def __init__(self, *, new_id: NewId = random_id, clock: Clock | None = None) -> None:
        self.new_id = new_id

    def parse(self, body: Any) -> InboundRequest:
        body = require_object(body)
        untranslatable: list[str] = []
        model = require_model(body)
        messages = parse_system(body.get("system"), untranslatable)
        messages.extend(parse_messages(body.get("messages"), untranslatable))
        return InboundRequest(
            protocol="anthropic",
            model=model,
            stream=optional_bool(body, "stream", False),
            messages=tuple(messages),
            tools=parse_tools(body.get("tools"), untranslatable),
            max_output_tokens=optional_tokens(body.get("max_tokens"), "max_tokens"),
            temperature=optional_number(body.get("temperature"), "temperature"),
            stop=stop_sequences(body.get("stop_sequences"), "stop_sequences"),
            include_usage=True,  # Anthropic streams always carry usage
            needs_server_state=False,
            body=body,
            untranslatable=tuple(untranslatable),
        )

    def error(
        self, status: int, kind: ErrorKind, message: str, *, retry_after_s: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        body = {"type": "error", "error": {"type": ERROR_TYPES[kind], "message": message}}
        return status, error_headers(kind, retry_after_s), dumps(body)

    def response(self, result: Result, *, model: str) -> bytes:
        content: list[dict[str, Any]] = []
        if result.text or not result.tool_calls:
            content.append({"type": "text", "text": result.text})
        for call in result.tool_calls:
            content.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments_for_client(call.arguments)}
            )
        payload = {
            "id": self.new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason(result),
            "stop_sequence": None,
            "usage": usage_fields(result.usage),
        }
        return dumps(payload)

    def stream(self, *, model: str, include_usage: bool = True) -> MessageStreamEncoder:
        return MessageStreamEncoder(model=model, message_id=self.new_id("msg_"))

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
        requested = request.max_output_tokens
        body["max_tokens"] = max_output_tokens if requested is None else min(requested, max_output_tokens)
        return body

    def usage_tee(self, *, streaming: bool, request: InboundRequest | None = None) -> MessageTee:
        return MessageTee(cache_ttl_of(request.body) if request is not None else "5m")


def cache_ttl_of(body: Mapping[str, Any]) -> Literal["5m", "1h"]:
    """The cache TTL a Messages request asked for: "1h" when any ``cache_control`` marker (on a system block, a
    message's content block, a tool, or the request itself) says so, else Anthropic's default "5m". Cache
    writes the usage's 5m/1h split leaves out are billed at this rate, as the Anthropic backend bills them."""

    def one_hour(block: Any) -> bool:
        if not isinstance(block, dict):
            return False
        marker = block.get("cache_control")
        return isinstance(marker, dict) and marker.get("ttl") == "1h"

    if one_hour(body):
        return "1h"
    blocks: list[Any] = []
    for field in ("system", "tools"):
        value = body.get(field)
        if isinstance(value, list):
            blocks.extend(value)
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            blocks.extend(content)
    return "1h" if any(one_hour(block) for block in blocks) else "5m"


def models_list(names: list[str] | tuple[str, ...], *, created_at: str = MODELS_CREATED_AT) -> dict[str, Any]:
    """``GET /v1/models`` in Anthropic's shape (what Claude Code's model discovery reads)."""
    data = [
        {"type": "model", "id": name, "display_name": name, "created_at": created_at, "lifecycle": "active"}
        for name in names
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": names[0] if names else None,
        "last_id": names[-1] if names else None,
    }
