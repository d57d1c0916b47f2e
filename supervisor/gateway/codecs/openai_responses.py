"""OpenAI Responses (``POST /v1/responses``), stateless: Codex CLI's only wire, and the openai SDK.

Requests: ``input`` as a string or items (messages with string or part content, ``function_call``,
``function_call_output``; ``reasoning`` items are dropped: only OpenAI can use them), ``instructions`` as the
system prompt, function ``tools``, ``max_output_tokens``. A request that needs state kept on the server
(``previous_response_id``, ``store: true``, ``item_reference`` items, a ``conversation``) is flagged
``needs_server_state``: only OpenAI itself (a provider speaking the Responses API) can serve it.

Streams are the typed SSE events the openai SDK's ``responses.stream`` accumulator checks, each with a
``sequence_number``: ``response.created``, ``response.in_progress``, then per output item
``output_item.added`` (+ ``content_part.added``, ``output_text.delta``..., ``output_text.done``,
``content_part.done`` for a message; ``function_call_arguments.delta``/``.done`` for a function call),
``output_item.done``, and ``response.completed`` (``response.incomplete`` when cut by the token budget) carrying
the usage. There is no ``[DONE]``.
"""

from __future__ import annotations

import time
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
    tool_parameters,
    without_endpoint_fields,
)
from supervisor.gateway.codecs.base import CodecError, ErrorKind, InboundRequest, ProtocolName, TeeResult
from supervisor.gateway.codecs.openai_chat import ERROR_TYPES, content_text
from supervisor.usage import Usage

# ``response.failed`` carries an error code from a fixed list (openai types/responses/response_error.py).
FAILED_CODES: Final[dict[ErrorKind, str]] = {
    "invalid_request": "invalid_prompt",
    "rate_limit": "rate_limit_exceeded",
    "cap_reached": "rate_limit_exceeded",
    "approval_required": "rate_limit_exceeded",
}
_MESSAGE_ROLES: Final = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


# ----------------------------------------------------------------------------------------------------------
# Requests


def _input_items(value: Any, untranslatable: list[str]) -> tuple[list[Message], bool]:
    """The conversation in ``input``, and whether it refers to items stored on the server."""
    if isinstance(value, str):
        return [Message("user", value)], False
    items = require_list(value, "input", what="input items")
    names = ToolNames()
    messages: list[Message] = []
    server_state = False
    for index, item in enumerate(items):
        path = f"input[{index}]"
        item = require_dict(item, path)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = _MESSAGE_ROLES.get(item.get("role"))  # type: ignore[arg-type]
            if role is None:
                raise CodecError(
                    f"{path}.role", f"must be user, assistant, system or developer, got {item.get('role')!r}"
                )
            text = content_text(item.get("content"), f"{path}.content", untranslatable)
            if role == "assistant":
                messages.append(Message("assistant", text))
            else:
                messages.append(Message(role, text))  # type: ignore[arg-type]
        elif kind == "function_call":
            call = ToolCall(
                id=require_str(item.get("call_id"), f"{path}.call_id"),
                name=require_str(item.get("name"), f"{path}.name"),
                arguments=arguments_text(item.get("arguments") or ""),
            )
            names.add((call,))
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant":
                # An assistant turn is one message item and its calls (or several calls in a row).
                messages[-1] = Message("assistant", last.content, tool_calls=(*last.tool_calls, call))
            else:
                messages.append(Message("assistant", "", tool_calls=(call,)))
        elif kind == "function_call_output":
            call_id = require_str(item.get("call_id"), f"{path}.call_id")
            output = content_text(item.get("output"), f"{path}.output", untranslatable)
            messages.append(Message("tool", output, tool_call_id=call_id, name=names.name(call_id)))
        elif kind == "reasoning":
            continue  # encrypted or summarized reasoning from an earlier turn: only OpenAI can use it
        elif kind == "item_reference":
            server_state = True
        elif isinstance(kind, str):
            untranslatable.append(f"{path}: a {kind!r} item")
        else:
            raise CodecError(f"{path}.type", 'required: the item\'s type, e.g. "message" or "function_call"')
    return messages, server_state


def _tools(value: Any, untranslatable: list[str]) -> tuple[ToolSpec, ...]:
    if value is None:
        return ()
    specs: list[ToolSpec] = []
    for index, raw in enumerate(require_list(value, "tools", what="tools")):
        path = f"tools[{index}]"
        raw = require_dict(raw, path)
        kind = raw.get("type")
        if kind != "function":
            untranslatable.append(f"{path}: the {kind!r} tool (only function tools can be translated)")
            continue
        description = raw.get("description") or ""
        specs.append(
            ToolSpec(
                name=require_str(raw.get("name"), f"{path}.name"),
                description=require_str(description, f"{path}.description"),
                parameters=tool_parameters(raw.get("parameters"), f"{path}.parameters"),
            )
        )
    return tuple(specs)


def _text_format_schema(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    fmt = require_dict(require_dict(value, "text").get("format") or {"type": "text"}, "text.format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        return require_dict(fmt.get("schema", {"type": "object"}), "text.format.schema")
    raise CodecError("text.format.type", f"must be text, json_object or json_schema, got {kind!r}")


# ----------------------------------------------------------------------------------------------------------
# Answers


def usage_fields(usage: Usage) -> dict[str, Any] | None:
    """``usage`` as a Responses usage object (``input_tokens`` includes cached); ``None`` when unknown."""
    if usage.input_uncached is None or usage.output is None:
        return None
    prompt = usage.prompt_tokens or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": usage.cache_read or 0, "cache_write_tokens": usage.cache_write or 0},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning or 0},
        "total_tokens": prompt + usage.output,
    }


def usage_from_fields(raw: dict[str, Any]) -> Usage:
    """A Responses usage object, read with the chat backend's ``normalize_usage`` (same subset semantics)."""
    return normalize_usage(
        {
            "prompt_tokens": raw.get("input_tokens"),
            "completion_tokens": raw.get("output_tokens"),
            "total_tokens": raw.get("total_tokens"),
            "prompt_tokens_details": raw.get("input_tokens_details"),
            "completion_tokens_details": raw.get("output_tokens_details"),
        }
    )


class _ResponseBuilder:
    """The response object at each stage; the same id, model and timestamp throughout."""

    def __init__(self, *, response_id: str, model: str, created_at: int) -> None:
        self.response_id = response_id
        self.model = model
        self.created_at = created_at

    def build(
        self,
        status: str,
        output: list[dict[str, Any]],
        *,
        usage: dict[str, Any] | None = None,
        incomplete: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": None,
            "max_output_tokens": None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "temperature": None,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": None,
            "usage": usage,
            "metadata": {},
        }

    def final(self, result: Result, output: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        """The closing event's type and its response."""
        usage = usage_fields(result.usage)
        if finish_of(result) == "length":
            incomplete = {"reason": "max_output_tokens"}
            return "response.incomplete", self.build("incomplete", output, usage=usage, incomplete=incomplete)
        return "response.completed", self.build("completed", output, usage=usage)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    content = [] if text is None else [_text_part(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(item_id: str, call: ToolCall, status: str, arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call.id,
        "name": call.name,
    }


class ResponseStreamEncoder:
    """One streamed response."""

    media_type = "text/event-stream"

    def __init__(self, *, builder: _ResponseBuilder, new_id: NewId) -> None:
        self.builder = builder
        self.new_id = new_id
        self._sequence = 0
        self._started = False
        self._sent_text = False
        self._sent_calls: set[str] = set()
        self._output: list[dict[str, Any]] = []  # finished items
        self._message_id: str | None = None  # the open message item
        self._message_text: list[str] = []

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return sse(data, kind)

    def start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        out = self._event("response.created", {"response": self.builder.build("in_progress", [])})
        return out + self._event("response.in_progress", {"response": self.builder.build("in_progress", [])})

    def text(self, delta: str) -> bytes:
        if not delta:
            return b""
        self._sent_text = True
        out = self.start()
        index = len(self._output)
        if self._message_id is None:
            self._message_id = self.new_id("msg_")
            self._message_text = []
            item = _message_item(self._message_id, None, "in_progress")
            out += self._event("response.output_item.added", {"output_index": index, "item": item})
            out += self._event(
                "response.content_part.added",
                {"item_id": self._message_id, "output_index": index, "content_index": 0, "part": _text_part("")},
            )
        self._message_text.append(delta)
        fields = {"item_id": self._message_id, "output_index": index, "content_index": 0, "delta": delta}
        return out + self._event("response.output_text.delta", {**fields, "logprobs": []})

    def _close_message(self) -> bytes:
        if self._message_id is None:
            return b""
        item_id, text, index = self._message_id, "".join(self._message_text), len(self._output)
        self._message_id = None
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        out = self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
        out += self._event("response.content_part.done", {**where, "part": _text_part(text)})
        item = _message_item(item_id, text, "completed")
        self._output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def tool_call(self, call: ToolCall) -> bytes:
        self._sent_calls.add(call.id)
        out = self.start() + self._close_message()
        index, item_id = len(self._output), self.new_id("fc_")
        out += self._event(
            "response.output_item.added", {"output_index": index, "item": _call_item(item_id, call, "in_progress", "")}
        )
        where = {"item_id": item_id, "output_index": index}
        out += self._event("response.function_call_arguments.delta", {**where, "delta": call.arguments})
        out += self._event("response.function_call_arguments.done", {**where, "arguments": call.arguments})
        item = _call_item(item_id, call, "completed", call.arguments)
        self._output.append(item)
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def finish(self, result: Result) -> bytes:
        out = bytearray(self.start())
        if not self._sent_text and result.text:
            out += self.text(result.text)
        for call in result.tool_calls:
            if call.id not in self._sent_calls:
                out += self.tool_call(call)
        out += self._close_message()
        kind, response = self.builder.final(result, list(self._output))
        out += self._event(kind, {"response": response})
        return bytes(out)

    def error(self, kind: ErrorKind, message: str) -> bytes:
        code = ERROR_TYPES[kind][1] or ERROR_TYPES[kind][0]
        out = self.start() + self._event("error", {"code": code, "message": message, "param": None})
        failed = {"code": FAILED_CODES.get(kind, "server_error"), "message": message}
        return out + self._event(
            "response.failed", {"response": self.builder.build("failed", list(self._output), error=failed)}
        )

    def ping(self) -> bytes:
        return b": ping\n\n"


# ----------------------------------------------------------------------------------------------------------
# Usage tee


class ResponseTee(SSETee):
    """Reads a copy of a Responses answer (SSE events, or one JSON response)."""

    def __init__(self) -> None:
        super().__init__()
        self.excerpt = Excerpt()
        self.raw_usage: dict[str, Any] | None = None
        self.finish: str | None = None
        self.model: str | None = None
        self.error: str | None = None
        self.done = False

    def take_event(self, event: SSEEvent) -> None:
        payload = loads_object(event.data)
        if payload is None:
            return
        kind = payload.get("type") or event.event
        if kind == "response.output_text.delta" and isinstance(payload.get("delta"), str):
            self.excerpt.add(payload["delta"])
        elif kind == "error":
            self.error = error_text(payload)
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = payload.get("response")
            if isinstance(response, dict):
                self._final(response)

    def take_body(self, body: bytes) -> None:
        payload = loads_object(body)
        if payload is None:
            self.error = "the upstream's response body is not a JSON object"
            return
        if isinstance(payload.get("error"), (dict, str)) and payload.get("object") != "response":
            self.error = error_text(payload)
            return
        for item in payload.get("output") or ():
            if isinstance(item, dict) and item.get("type") == "message":
                for part in item.get("content") or ():
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        self.excerpt.add(part["text"])
        self._final(payload)

    def _final(self, response: dict[str, Any]) -> None:
        self.done = True
        if isinstance(response.get("model"), str) and response["model"]:
            self.model = response["model"]
        if isinstance(response.get("usage"), dict):
            self.raw_usage = response["usage"]
        status = response.get("status")
        if status == "failed" or isinstance(response.get("error"), dict):
            self.error = self.error or error_text({"error": response.get("error")})
        output = response["output"] if isinstance(response.get("output"), list) else []
        calls = any(isinstance(item, dict) and item.get("type") == "function_call" for item in output)
        details = response.get("incomplete_details")
        if status == "incomplete":
            reason = details.get("reason") if isinstance(details, dict) else None
            self.finish = "length" if reason == "max_output_tokens" else (reason or "incomplete")
        elif status == "completed":
            self.finish = "tool_calls" if calls else "stop"

    def close(self) -> TeeResult:
        self.finish_input()
        return TeeResult(
            usage=usage_from_fields(self.raw_usage) if self.raw_usage is not None else Usage(),
            finish_reason=self.finish,
            text_excerpt=self.excerpt.text,
            error=self.error,
            complete=self.error is None and self.done,
            raw_usage=dict(self.raw_usage or {}),
            model_reported=self.model,
        )


# ----------------------------------------------------------------------------------------------------------
# The codec


class OpenAIResponsesCodec:
    protocol: ProtocolName = "openai_responses"

    def __init__(self, *, new_id: NewId = random_id, clock: Clock | None = None) -> None:
        self.new_id = new_id
        self.clock: Clock = clock or time.time

    def parse(self, body: Any) -> InboundRequest:
        body = require_object(body)
        untranslatable: list[str] = []
        model = require_model(body)
        messages: list[Message] = []
        instructions = body.get("instructions")
        if instructions is not None:
            text = content_text(instructions, "instructions", untranslatable)
            if text:
                messages.append(Message("system", text))
        previous = body.get("previous_response_id")
        if previous is not None:
            require_str(previous, "previous_response_id")
        if body.get("input") is None and previous is None:
            raise CodecError("input", "required: a string or a list of input items", 'e.g. "input": "Hello"')
        items, references = _input_items(body.get("input") if body.get("input") is not None else [], untranslatable)
        messages.extend(items)
        store = optional_bool(body, "store", False)
        conversation = body.get("conversation")  # a Conversations API object: its items live on the server
        return InboundRequest(
            protocol="openai_responses",
            model=model,
            stream=optional_bool(body, "stream", False),
            messages=tuple(messages),
            tools=_tools(body.get("tools"), untranslatable),
            max_output_tokens=optional_tokens(body.get("max_output_tokens"), "max_output_tokens"),
            temperature=optional_number(body.get("temperature"), "temperature"),
            stop=(),
            include_usage=True,  # response.completed always carries usage
            needs_server_state=previous is not None or store or references or conversation is not None,
            body=body,
            json_schema=_text_format_schema(body.get("text")),
            untranslatable=tuple(untranslatable),
        )

    def error(
        self, status: int, kind: ErrorKind, message: str, *, retry_after_s: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        kind_type, code = ERROR_TYPES[kind]
        body = {"error": {"message": message, "type": kind_type, "param": None, "code": code}}
        return status, error_headers(kind, retry_after_s), dumps(body)

    def _builder(self, model: str) -> _ResponseBuilder:
        return _ResponseBuilder(response_id=self.new_id("resp_"), model=model, created_at=int(self.clock()))

    def response(self, result: Result, *, model: str) -> bytes:
        builder = self._builder(model)
        output: list[dict[str, Any]] = []
        if result.text or not result.tool_calls:
            output.append(_message_item(self.new_id("msg_"), result.text, "completed"))
        for call in result.tool_calls:
            output.append(_call_item(self.new_id("fc_"), call, "completed", call.arguments))
        return dumps(builder.final(result, output)[1])

    def stream(self, *, model: str, include_usage: bool = True) -> ResponseStreamEncoder:
        return ResponseStreamEncoder(builder=self._builder(model), new_id=self.new_id)

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
        body["max_output_tokens"] = max_output_tokens if requested is None else min(requested, max_output_tokens)
        return body

    def usage_tee(self, *, streaming: bool, request: InboundRequest | None = None) -> ResponseTee:
        return ResponseTee()
