"""Ollama's native API: ``POST /api/chat`` and ``POST /api/generate`` (NDJSON), plus the read-only routes' bodies.

Used by Aider's ``ollama_chat/`` models, Cline's Ollama mode, ``codex --oss``, Goose's model list and the
ollama SDK. Ollama streams unless the request says ``"stream": false``.

- Tool calls carry no id in Ollama's own messages; the codec keeps one when the client sends it
  (``tool_call_id``, newer clients) and otherwise synthesizes a stable one from the call's position
  (``call_<message>_<call>``), matching each ``tool`` message to its call by ``tool_call_id``, then by
  ``tool_name``, then by order.
- ``format`` (JSON mode or a JSON Schema) is passed through unchanged to an Ollama upstream, and becomes
  ``InboundRequest.json_schema`` for a translation (``"json"`` reads as "any JSON object"), which the core must
  honour (a backend that enforces ``Request.json_schema``) or refuse; it is never dropped silently.
- Raw mode, ``template``, ``suffix``, ``context`` and images can only be served by Ollama itself: they are
  listed in ``untranslatable``.
- The final chunk reports what we know: ``prompt_eval_count``/``eval_count`` from the normalized usage (left out
  when unknown, as Ollama's ``omitempty`` does), durations from an Ollama upstream's own metrics, else from the
  call's timing (``total_duration``; ``eval_duration`` after the first token). Nothing is invented.

Usage is read with the Ollama backend's own ``final_metrics`` and ``usage_from_metrics``.
"""

from __future__ import annotations

import time
from typing import Any, Final

from supervisor.backends._http import int_or_none, loads_object
from supervisor.backends.base import Message, Result, ToolCall, ToolSpec
from supervisor.backends.ollama import final_metrics, usage_from_metrics
from supervisor.gateway.codecs._common import (
    NS_PER_S,
    Clock,
    Excerpt,
    LineReader,
    NewId,
    arguments_for_client,
    arguments_text,
    dumps,
    error_headers,
    error_text,
    finish_of,
    now_rfc3339,
    optional_bool,
    optional_number,
    optional_tokens,
    random_id,
    require_dict,
    require_list,
    require_model,
    require_object,
    require_str,
    stop_sequences,
    tool_parameters,
    without_endpoint_fields,
)
from supervisor.gateway.codecs.base import CodecError, ErrorKind, InboundRequest, ProtocolName, TeeResult
from supervisor.usage import Usage

# What /api/version reports: at least 0.13.4, the version from which clients (codex --oss) expect
# /v1/responses, which the gateway serves.
OLLAMA_COMPAT_VERSION: Final = "0.14.0"
EPOCH_RFC3339: Final = "1970-01-01T00:00:00Z"
ARCHITECTURE: Final = "supervisor"  # the model_info key prefix /api/show uses for the context length

_DURATION_FIELDS: Final = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


# ----------------------------------------------------------------------------------------------------------
# Requests


def _options(body: dict[str, Any]) -> tuple[int | None, float | None, tuple[str, ...]]:
    raw = body.get("options")
    if raw is None:
        return None, None, ()
    options = require_dict(raw, "options")
    return (
        optional_tokens(options.get("num_predict"), "options.num_predict", negative_is_none=True),
        optional_number(options.get("temperature"), "options.temperature"),
        stop_sequences(options.get("stop"), "options.stop"),
    )


def _format_schema(value: Any) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "object"}
    if isinstance(value, dict):
        return value
    raise CodecError("format", f'must be "json" or a JSON Schema object, got {value!r}')


def _tool_calls(value: Any, path: str, message_index: int) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for index, raw in enumerate(require_list(value, path, what="tool calls")):
        call_path = f"{path}[{index}]"
        raw = require_dict(raw, call_path)
        function = require_dict(raw.get("function"), f"{call_path}.function")
        call_id = raw.get("id")
        if call_id is not None:
            require_str(call_id, f"{call_path}.id")
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, (dict, str)):
            raise CodecError(f"{call_path}.function.arguments", f"must be an object, got {type(arguments).__name__}")
        calls.append(
            ToolCall(
                id=call_id or f"call_{message_index}_{index}",
                name=require_str(function.get("name"), f"{call_path}.function.name"),
                arguments=arguments_text(arguments if arguments is not None else {}),
            )
        )
    return tuple(calls)


def _chat_messages(value: Any, untranslatable: list[str]) -> list[Message]:
    if value is None:
        return []
    messages: list[Message] = []
    pending: list[ToolCall] = []  # the latest assistant calls not yet answered
    known: dict[str, ToolCall] = {}
    for index, raw in enumerate(require_list(value, "messages", what="messages")):
        path = f"messages[{index}]"
        raw = require_dict(raw, path)
        role = raw.get("role")
        content = raw.get("content")
        text = "" if content is None else require_str(content, f"{path}.content")
        if raw.get("images"):
            untranslatable.append(f"{path}.images: images")
        if role in ("system", "user"):
            messages.append(Message(role, text))
        elif role == "assistant":
            calls = _tool_calls(raw["tool_calls"], f"{path}.tool_calls", index) if raw.get("tool_calls") else ()
            pending = list(calls)
            known.update((call.id, call) for call in calls)
            messages.append(Message("assistant", text, tool_calls=calls))
        elif role == "tool":
            call = _answered_call(raw, path, pending, known)
            name = raw.get("tool_name") or raw.get("name")
            if call is not None:
                pending = [c for c in pending if c is not call]
            call_id = call.id if call is not None else f"call_{index}_result"
            tool_name = call.name if call is not None else (name if isinstance(name, str) else None)
            messages.append(Message("tool", text, tool_call_id=call_id, name=tool_name))
        else:
            raise CodecError(f"{path}.role", f"must be system, user, assistant or tool, got {role!r}")
    return messages


def _answered_call(
    raw: dict[str, Any], path: str, pending: list[ToolCall], known: dict[str, ToolCall]
) -> ToolCall | None:
    """Which call a tool message answers: its ``tool_call_id``, else the first pending call of its
    ``tool_name``, else the first pending call."""
    call_id = raw.get("tool_call_id")
    if call_id is not None:
        call_id = require_str(call_id, f"{path}.tool_call_id")
        if call_id in known:
            return known[call_id]
    name = raw.get("tool_name") or raw.get("name")
    if isinstance(name, str):
        for call in pending:
            if call.name == name:
                return call
    return pending[0] if pending else None


def _tools(value: Any, untranslatable: list[str]) -> tuple[ToolSpec, ...]:
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
        description = function.get("description") or ""
        specs.append(
            ToolSpec(
                name=require_str(function.get("name"), f"{path}.function.name"),
                description=require_str(description, f"{path}.function.description"),
                parameters=tool_parameters(function.get("parameters"), f"{path}.function.parameters"),
            )
        )
    return tuple(specs)


def _generate_messages(body: dict[str, Any], untranslatable: list[str]) -> list[Message]:
    messages: list[Message] = []
    system = body.get("system")
    if system:
        messages.append(Message("system", require_str(system, "system")))
    prompt = body.get("prompt")
    if prompt is not None:
        prompt = require_str(prompt, "prompt")
        if prompt:
            messages.append(Message("user", prompt))
    for name, what in (("suffix", "fill-in-the-middle"), ("template", "a custom template"), ("context", "a context")):
        if body.get(name):
            untranslatable.append(f"{name}: {what}, which only Ollama can apply")
    if body.get("raw"):
        untranslatable.append("raw: raw mode, which only Ollama can apply")
    if body.get("images"):
        untranslatable.append("images: images")
    return messages


# ----------------------------------------------------------------------------------------------------------
# Answers


def done_reason(result: Result) -> str:
    reason = finish_of(result)
    return reason if reason in ("length", "load", "unload") else "stop"


def final_fields(result: Result) -> dict[str, Any]:
    """The final chunk's ``done_reason`` and metrics: the counts we know, the durations we have."""
    fields: dict[str, Any] = {"done": True, "done_reason": done_reason(result)}
    durations = {
        name: result.raw_usage[name] for name in _DURATION_FIELDS if int_or_none(result.raw_usage.get(name)) is not None
    }
    if not durations:
        durations["total_duration"] = int(result.total_s * NS_PER_S)
        if result.ttft_s is not None and result.total_s >= result.ttft_s:
            durations["eval_duration"] = int((result.total_s - result.ttft_s) * NS_PER_S)
    fields.update(durations)
    if result.usage.input_uncached is not None:
        fields["prompt_eval_count"] = result.usage.prompt_tokens
    if result.usage.output is not None:
        fields["eval_count"] = result.usage.output
    return fields


def tool_call_fields(call: ToolCall, index: int) -> dict[str, Any]:
    return {
        "id": call.id,
        "function": {"index": index, "name": call.name, "arguments": arguments_for_client(call.arguments)},
    }


class NDJSONStreamEncoder:
    """One streamed ``/api/chat`` or ``/api/generate`` answer."""

    media_type = "application/x-ndjson"

    def __init__(self, *, model: str, generate: bool, clock: Clock) -> None:
        self.model = model
        self.generate = generate
        self.clock = clock
        self._sent_text = False
        self._sent_calls: set[str] = set()
        self._tool_index = 0

    def _line(self, fields: dict[str, Any]) -> bytes:
        return dumps({"model": self.model, "created_at": now_rfc3339(self.clock), **fields}) + b"\n"

    def _piece(self, text: str, **extra: Any) -> dict[str, Any]:
        if self.generate:
            return {"response": text}
        return {"message": {"role": "assistant", "content": text, **extra}}

    def start(self) -> bytes:
        return b""  # NDJSON has no preamble: the first line is the first piece of the answer

    def text(self, delta: str) -> bytes:
        if not delta:
            return b""
        self._sent_text = True
        return self._line({**self._piece(delta), "done": False})

    def tool_call(self, call: ToolCall) -> bytes:
        if self.generate:
            raise ValueError("/api/generate has no tool calls; a generate request carries no tools")
        self._sent_calls.add(call.id)
        entry = tool_call_fields(call, self._tool_index)
        self._tool_index += 1
        return self._line({**self._piece("", tool_calls=[entry]), "done": False})

    def finish(self, result: Result) -> bytes:
        out = bytearray()
        if not self._sent_text and result.text:
            out += self.text(result.text)
        for call in result.tool_calls:
            if call.id not in self._sent_calls:
                out += self.tool_call(call)
        out += self._line({**self._piece(""), **final_fields(result)})
        return bytes(out)

    def error(self, kind: ErrorKind, message: str) -> bytes:
        return dumps({"error": message}) + b"\n"

    def ping(self) -> bytes:
        return b""  # NDJSON has no comment line; the ollama clients parse every line as JSON


# ----------------------------------------------------------------------------------------------------------
# Usage tee


class NDJSONTee:
    """Reads a copy of an ``/api/chat`` or ``/api/generate`` answer: NDJSON lines, or one JSON object."""

    def __init__(self) -> None:
        self._lines = LineReader()
        self.excerpt = Excerpt()
        self.metrics: dict[str, Any] | None = None
        self.reason: str | None = None
        self.called = False
        self.model: str | None = None
        self.error: str | None = None

    def feed(self, chunk: bytes) -> None:
        for line in self._lines.feed(chunk):
            self._take(line)

    def _take(self, line: str) -> None:
        if not line.strip():
            return
        payload = loads_object(line)
        if payload is None:
            return
        if payload.get("error"):
            self.error = error_text(payload)
            return
        if self.metrics is not None:
            return  # nothing follows the final chunk in the protocol
        if isinstance(payload.get("model"), str) and payload["model"]:
            self.model = payload["model"]
        message = payload.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                self.excerpt.add(message["content"])
            if message.get("tool_calls"):
                self.called = True
        elif isinstance(payload.get("response"), str):
            self.excerpt.add(payload["response"])
        if payload.get("done") is True:
            self.metrics = final_metrics(payload)
            if isinstance(payload.get("done_reason"), str):
                self.reason = payload["done_reason"]

    def close(self) -> TeeResult:
        for line in self._lines.close():
            self._take(line)
        done = self.metrics is not None
        reason = self.reason
        if done and self.called and reason in (None, "stop"):
            reason = "tool_calls"
        return TeeResult(
            usage=usage_from_metrics(self.metrics) if self.metrics is not None else Usage(),
            finish_reason=reason if done else None,
            text_excerpt=self.excerpt.text,
            error=self.error,
            complete=done and self.error is None,
            raw_usage=dict(self.metrics or {}),
            model_reported=self.model,
        )


# ----------------------------------------------------------------------------------------------------------
# The codecs


class OllamaCodec:
    """``/api/chat`` (``generate=False``) or ``/api/generate``."""

    def __init__(self, *, generate: bool = False, new_id: NewId = random_id, clock: Clock | None = None) -> None:
        self.generate = generate
        self.protocol: ProtocolName = "ollama_generate" if generate else "ollama_chat"
        self.clock: Clock = clock or time.time

    def parse(self, body: Any) -> InboundRequest:
        body = require_object(body)
        untranslatable: list[str] = []
        model = require_model(body)
        if self.generate:
            messages = _generate_messages(body, untranslatable)
            tools: tuple[ToolSpec, ...] = ()
        else:
            messages = _chat_messages(body.get("messages"), untranslatable)
            tools = _tools(body.get("tools"), untranslatable)
        max_tokens, temperature, stop = _options(body)
        return InboundRequest(
            protocol=self.protocol,
            model=model,
            stream=optional_bool(body, "stream", True),  # Ollama streams unless told not to
            messages=tuple(messages),
            tools=tools,
            max_output_tokens=max_tokens,
            temperature=temperature,
            stop=stop,
            include_usage=True,  # the final chunk always carries the counts
            needs_server_state=False,
            body=body,
            json_schema=_format_schema(body.get("format")),
            untranslatable=tuple(untranslatable),
        )

    def error(
        self, status: int, kind: ErrorKind, message: str, *, retry_after_s: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        return status, error_headers(kind, retry_after_s), dumps({"error": message})

    def response(self, result: Result, *, model: str) -> bytes:
        fields: dict[str, Any] = {"model": model, "created_at": now_rfc3339(self.clock)}
        if self.generate:
            fields["response"] = result.text
        else:
            message: dict[str, Any] = {"role": "assistant", "content": result.text}
            if result.tool_calls:
                message["tool_calls"] = [tool_call_fields(call, i) for i, call in enumerate(result.tool_calls)]
            fields["message"] = message
        return dumps({**fields, **final_fields(result)})

    def stream(self, *, model: str, include_usage: bool = True) -> NDJSONStreamEncoder:
        return NDJSONStreamEncoder(model=model, generate=self.generate, clock=self.clock)

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
        options = dict(body["options"]) if isinstance(body.get("options"), dict) else {}
        requested = request.max_output_tokens
        options["num_predict"] = max_output_tokens if requested is None else min(requested, max_output_tokens)
        body["options"] = options
        return body

    def usage_tee(self, *, streaming: bool, request: InboundRequest | None = None) -> NDJSONTee:
        return NDJSONTee()


# ----------------------------------------------------------------------------------------------------------
# The read-only routes the gateway answers itself, from the names an agent may use


def tags_body(names: list[str] | tuple[str, ...], *, modified_at: str = EPOCH_RFC3339) -> dict[str, Any]:
    """``GET /api/tags``. Sizes and digests are left out: the gateway does not know them."""
    return {"models": [{"name": name, "model": name, "modified_at": modified_at} for name in names]}


def ps_body(names: list[str] | tuple[str, ...], *, expires_at: str = EPOCH_RFC3339) -> dict[str, Any]:
    """``GET /api/ps``: the names currently served (by a loaded local model or an API)."""
    return {"models": [{"name": name, "model": name, "expires_at": expires_at} for name in names]}


def show_body(
    name: str,
    *,
    context_length: int | None = None,
    capabilities: tuple[str, ...] = ("completion", "tools"),
    modified_at: str = EPOCH_RFC3339,
) -> dict[str, Any]:
    """``POST /api/show`` for one name. ``model_info`` carries the context length when known (LiteLLM, and so
    Aider, reads ``<architecture>.context_length`` from it)."""
    info: dict[str, Any] = {"general.architecture": ARCHITECTURE}
    if context_length is not None:
        info[f"{ARCHITECTURE}.context_length"] = context_length
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": {"parent_model": "", "format": "", "family": ARCHITECTURE, "families": [ARCHITECTURE]},
        "model_info": info,
        "capabilities": list(capabilities),
        "modified_at": modified_at,
    }


def version_body(version: str = OLLAMA_COMPAT_VERSION) -> dict[str, Any]:
    """``GET /api/version``."""
    return {"version": version}
