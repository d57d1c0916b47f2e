"""A loopback server speaking Anthropic's Messages API with SSE streaming (protocols.md §4).

A streamed ``Reply`` is ``message_start`` (input and cache usage, placeholder ``output_tokens: 1``), a
``ping``, an optional thinking block (when ``reasoning`` > 0), the text block as ``text_delta``s, then TWO
``message_delta`` events whose cumulative ``output_tokens`` grow to the total (a backend that sums them
over-counts), then ``message_stop``. ``Reply.finish`` "stop"/"length" is sent as ``end_turn``/``max_tokens``;
any other word is sent as is. Errors use the ``{"type": "error", "error": {"type", "message"}}`` body.

A ``Reply`` with ``tool_calls`` streams its text block (none when the text is empty), then per call a
``content_block_start`` with ``{"type": "tool_use", "id": "toolu_…", "name": …, "input": {}}``, an
``input_json_delta`` with ``partial_json: ""`` (the API sends one first), the ``fragments`` pieces of the
arguments text, and ``content_block_stop``; ``stop_reason`` is ``tool_use``. Non-streamed: ``tool_use`` blocks
with the whole ``input`` object.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.base import (
    Behavior,
    CutStream,
    CutToolCall,
    FakeServer,
    Hang,
    HttpError,
    Malformed,
    MidStreamError,
    NoUsage,
    RecordedRequest,
    Reply,
    ToolUse,
)
from tests.fakes.openai import RawStream, write_raw_stream

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# What POST /v1/messages/count_tokens accepts (the Messages request's prompt fields).
COUNT_TOKENS_FIELDS = frozenset({"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"})
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
THINKING_TEXT = "Considering the clause."


class AnthropicFake(FakeServer):
    """``POST /v1/messages`` and ``GET /v1/models`` on loopback."""

    def __init__(self, models: tuple[str, ...] = ("claude-fake-5",), *, split_cache_creation: bool = True) -> None:
        super().__init__()
        # serve_forever polls for shutdown every 0.5 s by default, which every stop() would wait out.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.models = models
        self.split_cache_creation = split_cache_creation  # False: an older API without cache_creation.{5m,1h}
        self.mid_stream_error_type = "overloaded_error"

    def enqueue(self, *behaviors: Behavior | RawStream) -> None:
        super().enqueue(*behaviors)  # type: ignore[arg-type]  # the base queue holds only the shared kinds

    def model_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.split("?")[0].endswith("/v1/messages")]

    def handle(self, req: RecordedRequest, handler: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?")[0].rstrip("/")
        if req.method == "GET" and path.endswith("/v1/models"):
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2026-11-01T00:00:00Z"} for m in self.models
            ]
            first, last = (self.models[0], self.models[-1]) if self.models else (None, None)
            self.send_json(handler, 200, {"data": data, "has_more": False, "first_id": first, "last_id": last})
            return
        if req.method == "POST" and path.endswith("/v1/messages/count_tokens"):
            self._count_tokens(req, handler)
            return
        if req.method != "POST" or not path.endswith("/v1/messages"):
            self.send_json(handler, 404, _error("not_found_error", f"Not found: {req.method} {req.path}"))
            return
        body = req.json or {}
        model = str(body.get("model", "claude-fake"))
        behavior = self.next_behavior(req)
        if isinstance(behavior, RawStream):
            write_raw_stream(self, handler, behavior)
        elif isinstance(behavior, HttpError):
            error_type = behavior.code or _ERROR_TYPES.get(behavior.status, "api_error")
            self.send_json(handler, behavior.status, _error(error_type, behavior.message), behavior.headers)
        elif isinstance(behavior, Hang):
            self.hang(behavior.seconds)
        elif isinstance(behavior, Malformed):
            self.send_raw(handler, 200, behavior.body, behavior.content_type)
        elif isinstance(behavior, (Reply, NoUsage)) and not body.get("stream"):
            reply = behavior if isinstance(behavior, Reply) else Reply(text=behavior.text)
            self.send_json(handler, 200, self._message(model, reply, with_usage=isinstance(behavior, Reply)))
        else:
            self._stream(handler, model, behavior)

    # --- /v1/messages/count_tokens -------------------------------------------------------------------

    def count_of(self, body: dict[str, Any]) -> int:
        """The fake's token count for a request: a fixed rule (4 characters of system, messages and tools per
        token, at least 1), so a test can check the number the gateway returns came from here."""
        counted = {k: body[k] for k in ("system", "messages", "tools") if k in body}
        return max(1, len(json.dumps(counted, sort_keys=True)) // 4)

    def _count_tokens(self, req: RecordedRequest, handler: BaseHTTPRequestHandler) -> None:
        """As the real endpoint: the Messages request's prompt fields only (``max_tokens``, ``stream`` and any
        other field is "Extra inputs are not permitted"), and ``{"input_tokens": N}``."""
        body = req.json or {}
        for name in ("model", "messages"):
            if name not in body:
                self.send_json(handler, 400, _error("invalid_request_error", f"{name}: Field required"))
                return
        extra = sorted(set(body) - COUNT_TOKENS_FIELDS)
        if extra:
            self.send_json(handler, 400, _error("invalid_request_error", f"{extra[0]}: Extra inputs are not permitted"))
            return
        if str(body["model"]) not in self.models:
            self.send_json(handler, 404, _error("not_found_error", f"model: {body['model']}"))
            return
        self.send_json(handler, 200, {"input_tokens": self.count_of(body)})

    # --- rendering -------------------------------------------------------------------------------------

    def _stream(self, handler: BaseHTTPRequestHandler, model: str, behavior: Any) -> None:
        if isinstance(behavior, Reply) and behavior.delay_s:
            self.hang(behavior.delay_s)
        reply = behavior if isinstance(behavior, Reply) else Reply(text=getattr(behavior, "text", ""))
        with_usage = isinstance(behavior, Reply)
        self.start_stream(handler, "text/event-stream")
        start = self._message(model, reply, with_usage=with_usage, streaming=True)
        self._event(handler, "message_start", {"type": "message_start", "message": start})
        self._event(handler, "ping", {"type": "ping"})
        index = 0
        if isinstance(behavior, Reply) and behavior.reasoning:
            self._event(
                handler,
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "thinking", "thinking": ""},
                },
            )
            delta = {"type": "thinking_delta", "thinking": THINKING_TEXT}
            self._event(handler, "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            signature = {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}
            self._event(
                handler,
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": signature},
            )
            self._event(handler, "content_block_stop", {"type": "content_block_stop", "index": 0})
            index = 1
        calls: tuple[ToolUse, ...] = reply.tool_calls
        if isinstance(behavior, CutToolCall):
            calls = (behavior.call,)
        if reply.text or not calls:
            self._event(
                handler,
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            )
            pieces = (
                self.split_text(behavior.text, behavior.after_chunks)
                if isinstance(behavior, CutStream)
                else self.split_text(reply.text, reply.chunks)
            )
            for piece in pieces:
                delta = {"type": "text_delta", "text": piece}
                self._event(
                    handler,
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            if isinstance(behavior, CutStream):
                self.cut(handler)
                return
            if isinstance(behavior, MidStreamError):
                self._event(handler, "error", _error(self.mid_stream_error_type, behavior.message))
                self.end_stream(handler)
                return
            self._event(handler, "content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        for call in calls:
            block = {
                "type": "tool_use",
                "id": call.id or self.next_tool_id("toolu_fake"),
                "name": call.name,
                "input": {},
            }
            self._event(
                handler, "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            )
            pieces = ["", *self.split_text(call.arguments_text, call.fragments)]
            if isinstance(behavior, CutToolCall):
                pieces = pieces[: behavior.after_fragments + 1]
            for piece in pieces:
                delta = {"type": "input_json_delta", "partial_json": piece}
                self._event(
                    handler, "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
                )
            if isinstance(behavior, CutToolCall):
                self.cut(handler)
                return
            self._event(handler, "content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        finish = "tool_use" if calls and reply.finish == "stop" else reply.finish
        stop_reason = _STOP_REASONS.get(finish, finish)
        if with_usage:
            # Cumulative counts: halfway, then the total. The final one also repeats the input side, as the
            # current API does.
            half = {"output_tokens": max(1, reply.output_tokens // 2)}
            self._event(
                handler,
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": None, "stop_sequence": None},
                    "usage": half,
                },
            )
            final = {**self._input_usage(reply), "output_tokens": reply.output_tokens}
            if reply.reasoning:
                final["output_tokens_details"] = {"thinking_tokens": reply.reasoning}
            self._event(
                handler,
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": final,
                },
            )
        else:
            self._event(
                handler,
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}},
            )
        self._event(handler, "message_stop", {"type": "message_stop"})
        self.end_stream(handler)

    def _event(self, handler: BaseHTTPRequestHandler, name: str, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, ensure_ascii=False)
        self.write_chunk(handler, f"event: {name}\ndata: {data}\n\n".encode())

    def _input_usage(self, reply: Reply) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "input_tokens": reply.input_tokens,
            "cache_creation_input_tokens": reply.cache_write + reply.cache_write_1h,
            "cache_read_input_tokens": reply.cache_read,
        }
        if self.split_cache_creation:
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": reply.cache_write,
                "ephemeral_1h_input_tokens": reply.cache_write_1h,
            }
        return usage

    def _content(self, reply: Reply) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reply.text or not reply.tool_calls:
            blocks.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            arguments: Any = call.arguments
            if isinstance(arguments, str):  # scripted as raw text: an object if it is one, else sent as is
                try:
                    arguments = json.loads(arguments)
                except ValueError:
                    pass
            call_id = call.id or self.next_tool_id("toolu_fake")
            blocks.append({"type": "tool_use", "id": call_id, "name": call.name, "input": arguments})
        return blocks

    def _message(self, model: str, reply: Reply, *, with_usage: bool, streaming: bool = False) -> dict[str, Any]:
        finish = "tool_use" if reply.tool_calls and reply.finish == "stop" else reply.finish
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [] if streaming else self._content(reply),
            "stop_reason": None if streaming else _STOP_REASONS.get(finish, finish),
            "stop_sequence": None,
        }
        if with_usage:
            usage = {**self._input_usage(reply), "output_tokens": 1 if streaming else reply.output_tokens}
            usage["service_tier"] = "standard"
            if reply.reasoning and not streaming:
                usage["output_tokens_details"] = {"thinking_tokens": reply.reasoning}
            message["usage"] = usage
        return message


def _error(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}, "request_id": "req_fake"}
