"""A loopback server speaking OpenAI-compatible Chat Completions (and OpenAI's Responses API), in four usage
dialects.

Streams exactly as protocols.md §3.3 shows: chunks carry ``"usage": null``, then (only when the request asked
for ``stream_options.include_usage``) a final chunk with ``"choices": []`` and the usage, then
``data: [DONE]``. ``stream: false`` gets one ``chat.completion`` JSON for ``Reply`` and ``NoUsage``; other
behaviors render as for a streamed request (the backends always stream). A ``Reply``'s ``finish`` is sent as
is: "stop" and "length" are OpenAI's own words.

Dialects (how a ``Reply``'s normalized counts are written):

- ``"openai"``: ``prompt_tokens`` = uncached + cache read + cache write, with ``prompt_tokens_details``
  {``cached_tokens``, ``cache_write_tokens``} and ``completion_tokens_details.reasoning_tokens``.
- ``"deepseek"``: adds ``prompt_cache_hit_tokens`` / ``prompt_cache_miss_tokens``, streams
  ``reasoning_content`` deltas before the answer, and sends ``: keep-alive`` comments.
- ``"gemini"``: ``completion_tokens`` leaves out the thinking that ``total_tokens`` includes.
- ``"litellm"``: as ``"openai"``, but cache writes under ``prompt_tokens_details.cache_creation_tokens`` (the name
  LiteLLM's proxy and other OpenAI-compatible gateways use) instead of ``cache_write_tokens``.

A ``Reply`` with ``tool_calls`` streams as OpenAI does: when there is no text, the first chunk is
``{"role": "assistant", "content": null, "tool_calls": [<header of call 0>]}``; each call's header fragment
``{"index": n, "id": …, "type": "function", "function": {"name": …, "arguments": ""}}`` is followed by
``fragments`` pieces ``{"index": n, "function": {"arguments": "<piece>"}}``; then ``finish_reason:
"tool_calls"``, the usage chunk and ``[DONE]``. Non-streamed: ``message.tool_calls`` with whole argument
strings and ``content: null`` when there is no text.

``POST …/responses`` speaks OpenAI's Responses API: ``store`` defaults to true and a stored response can be
continued with ``previous_response_id`` (an unknown id is a 400 ``previous_response_not_found``); a stream is
``response.created``, ``response.in_progress``, the message item's ``output_item.added`` /
``content_part.added`` / ``output_text.delta``... / ``output_text.done`` / ``content_part.done`` /
``output_item.done``, each function call's item events, then ``response.completed`` carrying the usage
(``input_tokens`` with ``input_tokens_details.cached_tokens`` inside it), each event with its
``sequence_number`` and no ``[DONE]``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

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

Dialect = Literal["openai", "deepseek", "gemini", "litellm"]

# The real context-overflow payload quoted in protocols.md §3.4.
CONTEXT_LENGTH_EXCEEDED = {
    "error": {
        "message": (
            "This model's maximum context length is 4097 tokens. However, you requested 4120 tokens "
            "(3120 in the messages, 1000 in the completion). Please reduce the length of the messages or "
            "completion."
        ),
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
INSUFFICIENT_QUOTA_MESSAGE = "You exceeded your current quota, please check your plan and billing details."
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    422: "invalid_request_error",
    429: "requests",
    500: "server_error",
    503: "server_error",
}
THINKING_TEXT = "Let me think this through."


@dataclass(frozen=True)
class RawStream:
    """Exact event-stream bytes, for edge cases no ``Behavior`` covers (both SSE fakes accept it).

    Each chunk is written ``interval_s`` apart; then the stream ends cleanly, is ``cut`` (connection dropped
    mid-body), or with ``forever`` the last chunk repeats until the client or the server gives up.
    """

    chunks: tuple[bytes, ...]
    cut: bool = False
    forever: bool = False
    interval_s: float = 0.0
    # (k, event): chunk k is written only once the test sets ``event`` (a split the test controls exactly).
    hold_before: tuple[int, threading.Event] | None = None


def write_raw_stream(server: FakeServer, handler: BaseHTTPRequestHandler, raw: RawStream) -> None:
    """Render a ``RawStream`` on a chunked ``text/event-stream`` response."""
    server.start_stream(handler, "text/event-stream")
    for index, chunk in enumerate(raw.chunks):
        if raw.hold_before is not None and raw.hold_before[0] == index:
            raw.hold_before[1].wait(30)
        server.write_chunk(handler, chunk)
        if raw.interval_s:
            server.hang(raw.interval_s)
    while raw.forever and raw.chunks and not server._stop.is_set():
        server.write_chunk(handler, raw.chunks[-1])
        server.hang(raw.interval_s or 0.05)
    if raw.cut:
        server.cut(handler)
    else:
        server.end_stream(handler)


class OpenAIFake(FakeServer):
    """``POST …/chat/completions`` and ``GET …/models`` on loopback; the path prefix (``/v1``) is free."""

    def __init__(self, dialect: Dialect = "openai", models: tuple[str, ...] = ("fake-model",)) -> None:
        super().__init__()
        # serve_forever polls for shutdown every 0.5 s by default, which every stop() would wait out.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.dialect: Dialect = dialect
        self.models = models
        self.model_name = "fake-model-2026-11-01"
        self.mid_stream_error_type = "server_error"
        self.include_usage: list[bool] = []  # per chat request: did it ask for stream_options.include_usage?
        self.stored_responses: dict[str, dict[str, Any]] = {}  # Responses API: what store kept, by id
        self._response_ids = 0

    def model_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/chat/completions")]

    def responses_requests(self) -> list[RecordedRequest]:
        """The Responses API requests received (``POST …/responses``)."""
        return [r for r in self.requests if r.method == "POST" and r.path.split("?")[0].endswith("/responses")]

    def enqueue(self, *behaviors: Behavior | RawStream) -> None:
        super().enqueue(*behaviors)  # type: ignore[arg-type]  # the base queue holds only the shared kinds

    # --- dispatch --------------------------------------------------------------------------------------

    def handle(self, req: RecordedRequest, handler: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?")[0].rstrip("/")
        if req.method == "GET" and path.endswith("/models"):
            data = [{"id": m, "object": "model", "created": 1762000000, "owned_by": "fake"} for m in self.models]
            self.send_json(handler, 200, {"object": "list", "data": data})
            return
        if req.method == "POST" and path.endswith("/responses"):
            self._responses(req, handler)
            return
        if req.method != "POST" or not path.endswith("/chat/completions"):
            self.send_json(handler, 404, _error(f"Unknown request URL: {req.method} {req.path}", 404, None))
            return
        body = req.json or {}
        streaming = bool(body.get("stream"))
        options = body.get("stream_options") or {}
        include_usage = streaming and bool(options.get("include_usage"))
        with self._lock:
            self.include_usage.append(include_usage)
        behavior = self.next_behavior(req)
        if isinstance(behavior, RawStream):
            write_raw_stream(self, handler, behavior)
        elif isinstance(behavior, HttpError):
            self._http_error(handler, behavior)
        elif isinstance(behavior, Hang):
            self.hang(behavior.seconds)
        elif isinstance(behavior, Malformed):
            self.send_raw(handler, 200, behavior.body, behavior.content_type)
        elif isinstance(behavior, Reply) and not streaming:
            if behavior.delay_s:
                self.hang(behavior.delay_s)
            self.send_json(handler, 200, self._completion(behavior))
        elif isinstance(behavior, NoUsage) and not streaming:
            self.send_json(handler, 200, self._completion(Reply(text=behavior.text), with_usage=False))
        else:
            self._stream(handler, behavior, include_usage)

    # --- the Responses API (POST …/responses) -------------------------------------------------------------

    def _responses(self, req: RecordedRequest, handler: BaseHTTPRequestHandler) -> None:
        """As OpenAI's Responses API: ``store`` defaults to true and a stored response can be continued with
        ``previous_response_id`` (an unknown id is a 400 ``previous_response_not_found``); ``stream: true`` gets
        the typed SSE events with ``sequence_number``s and the usage in ``response.completed``."""
        body = req.json or {}
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored_responses:
            error = {
                "message": f"Previous response with id '{previous}' not found.",
                "type": "invalid_request_error",
                "param": "previous_response_id",
                "code": "previous_response_not_found",
            }
            self.send_json(handler, 400, {"error": error})
            return
        behavior = self.next_behavior(req)
        if isinstance(behavior, HttpError):
            self._http_error(handler, behavior)
            return
        reply = behavior if isinstance(behavior, Reply) else Reply(text=getattr(behavior, "text", "ok"))
        with self._lock:
            self._response_ids += 1
            response_id = f"resp_fake{self._response_ids}"
        output = [
            {
                "id": f"msg_{response_id}",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}],
            }
        ]
        output += [
            {
                "id": f"fc_{response_id}_{index}",
                "type": "function_call",
                "status": "completed",
                "arguments": call.arguments_text,
                "call_id": call.id or self.next_tool_id("call_fake"),
                "name": call.name,
            }
            for index, call in enumerate(reply.tool_calls)
        ]
        final = self._response(body, response_id, "completed", output, self._responses_usage(reply))
        if body.get("store", True):
            with self._lock:
                self.stored_responses[response_id] = final
        if not body.get("stream"):
            self.send_json(handler, 200, final)
            return
        self.start_stream(handler, "text/event-stream")
        sequence = iter(range(1_000_000))

        def event(kind: str, **fields: Any) -> None:
            payload = {"type": kind, **fields, "sequence_number": next(sequence)}
            data = json.dumps(payload, ensure_ascii=False)
            self.write_chunk(handler, f"event: {kind}\ndata: {data}\n\n".encode())

        started = self._response(body, response_id, "in_progress", [], None)
        event("response.created", response=started)
        event("response.in_progress", response=started)
        message = output[0]
        event("response.output_item.added", output_index=0, item={**message, "status": "in_progress", "content": []})
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        event("response.content_part.added", item_id=message["id"], output_index=0, content_index=0, part=part)
        for piece in self.split_text(reply.text, reply.chunks):
            event(
                "response.output_text.delta",
                item_id=message["id"],
                output_index=0,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        done_part = {**part, "text": reply.text}
        event(
            "response.output_text.done",
            item_id=message["id"],
            output_index=0,
            content_index=0,
            text=reply.text,
            logprobs=[],
        )
        event("response.content_part.done", item_id=message["id"], output_index=0, content_index=0, part=done_part)
        event("response.output_item.done", output_index=0, item=message)
        for index, item in enumerate(output[1:], start=1):
            event(
                "response.output_item.added",
                output_index=index,
                item={**item, "status": "in_progress", "arguments": ""},
            )
            event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=item["arguments"],
            )
            event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
            event("response.output_item.done", output_index=index, item=item)
        event("response.completed", response=final)
        self.end_stream(handler)

    def _response(
        self,
        body: dict[str, Any],
        response_id: str,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model_name,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store", True),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "metadata": {},
        }

    @staticmethod
    def _responses_usage(reply: Reply) -> dict[str, Any]:
        """The Responses API's usage: ``input_tokens`` includes the cached ones, as ``prompt_tokens`` does."""
        prompt = reply.input_tokens + reply.cache_read + reply.cache_write + reply.cache_write_1h
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": reply.cache_read},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": reply.reasoning},
            "total_tokens": prompt + reply.output_tokens,
        }

    # --- rendering -------------------------------------------------------------------------------------

    def _http_error(self, handler: BaseHTTPRequestHandler, error: HttpError) -> None:
        if error.code == "context_length_exceeded" and error.message == "error":
            payload: dict[str, Any] = CONTEXT_LENGTH_EXCEEDED
        elif error.code == "insufficient_quota":
            message = INSUFFICIENT_QUOTA_MESSAGE if error.message == "error" else error.message
            payload = {
                "error": {
                    "message": message,
                    "type": "insufficient_quota",
                    "param": None,
                    "code": "insufficient_quota",
                }
            }
        else:
            payload = _error(error.message, error.status, error.code)
        self.send_json(handler, error.status, payload, error.headers)

    def _stream(self, handler: BaseHTTPRequestHandler, behavior: Any, include_usage: bool) -> None:
        if isinstance(behavior, Reply) and behavior.delay_s:
            self.hang(behavior.delay_s)
        self.start_stream(handler, "text/event-stream")
        if self.dialect == "deepseek":
            self.write_chunk(handler, b": keep-alive\n\n")
        calls: tuple[ToolUse, ...] = ()
        text = getattr(behavior, "text", "")
        if isinstance(behavior, Reply):
            calls = behavior.tool_calls
        elif isinstance(behavior, CutToolCall):
            calls = (behavior.call,)
        ids = [call.id or self.next_tool_id("call_fake") for call in calls]
        if calls and not text:
            # What OpenAI sends for a reply that only calls tools: the role and the first call's header at once.
            first = {"role": "assistant", "content": None, "tool_calls": [_header(calls[0], 0, ids[0])]}
            self._event(handler, self._chunk(first))
        else:
            self._event(handler, self._chunk({"role": "assistant", "content": ""}))
        if isinstance(behavior, Reply) and self.dialect == "deepseek":
            for piece in self.split_text(THINKING_TEXT, 2):
                self._event(handler, self._chunk({"content": None, "reasoning_content": piece}))
        if isinstance(behavior, CutToolCall):
            if text:
                self._event(handler, self._chunk({"content": text}))
                self._event(handler, self._chunk({"tool_calls": [_header(behavior.call, 0, ids[0])]}))
            for piece in _fragments(behavior.call)[: behavior.after_fragments]:
                self._event(handler, self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            self.cut(handler)
            return
        if isinstance(behavior, CutStream):
            for piece in self.split_text(behavior.text, behavior.after_chunks):
                self._event(handler, self._chunk({"content": piece}))
            self.cut(handler)
            return
        if isinstance(behavior, MidStreamError):
            self._event(handler, self._chunk({"content": behavior.text}))
            error = {
                "message": behavior.message,
                "type": self.mid_stream_error_type,
                "param": None,
                "code": None,
            }
            self._event(handler, {"error": error})
            self.end_stream(handler)
            return
        reply = behavior if isinstance(behavior, Reply) else Reply(text=behavior.text)
        if reply.text or not calls:
            for piece in self.split_text(reply.text, reply.chunks):
                self._event(handler, self._chunk({"content": piece}))
        for index, call in enumerate(calls):
            if index or text:  # the first header went out with the role when there was no text
                self._event(handler, self._chunk({"tool_calls": [_header(call, index, ids[index])]}))
            for piece in _fragments(call):
                fragment = {"index": index, "function": {"arguments": piece}}
                self._event(handler, self._chunk({"tool_calls": [fragment]}))
        finish = "tool_calls" if calls and reply.finish == "stop" else reply.finish
        self._event(handler, self._chunk({}, finish_reason=finish))
        if include_usage and isinstance(behavior, Reply):
            usage_chunk = self._chunk(None, finish_reason=None)
            usage_chunk["choices"] = []
            usage_chunk["usage"] = self.usage(reply)
            self._event(handler, usage_chunk)
        self.write_chunk(handler, b"data: [DONE]\n\n")
        self.end_stream(handler)

    def _event(self, handler: BaseHTTPRequestHandler, payload: dict[str, Any]) -> None:
        self.write_chunk(handler, b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n")

    def _chunk(self, delta: dict[str, Any] | None, finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}],
            "usage": None,
        }

    def _completion(self, reply: Reply, with_usage: bool = True) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text}
        if self.dialect == "deepseek":
            message["reasoning_content"] = THINKING_TEXT
        finish = reply.finish
        if reply.tool_calls:
            message["content"] = reply.text or None
            message["tool_calls"] = [
                {
                    "id": call.id or self.next_tool_id("call_fake"),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_text},
                }
                for call in reply.tool_calls
            ]
            finish = "tool_calls" if finish == "stop" else finish
        payload: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        }
        if with_usage:
            payload["usage"] = self.usage(reply)
        return payload

    def usage(self, reply: Reply) -> dict[str, Any]:
        """The usage record this dialect reports for ``reply``."""
        if self.dialect == "deepseek":
            # No cache-write fee: tokens written to the cache are billed (and reported) as misses.
            miss = reply.input_tokens + reply.cache_write + reply.cache_write_1h
            prompt = miss + reply.cache_read
            return {
                "prompt_tokens": prompt,
                "completion_tokens": reply.output_tokens,
                "total_tokens": prompt + reply.output_tokens,
                "prompt_tokens_details": {"cached_tokens": reply.cache_read},
                "completion_tokens_details": {"reasoning_tokens": reply.reasoning},
                "prompt_cache_hit_tokens": reply.cache_read,
                "prompt_cache_miss_tokens": miss,
            }
        prompt = reply.input_tokens + reply.cache_read + reply.cache_write + reply.cache_write_1h
        if self.dialect == "gemini":
            usage: dict[str, Any] = {
                "prompt_tokens": prompt,
                "completion_tokens": reply.output_tokens - reply.reasoning,  # thoughts left out...
                "total_tokens": prompt + reply.output_tokens,  # ...but counted here, and billed
            }
            if reply.cache_read:
                usage["prompt_tokens_details"] = {"cached_tokens": reply.cache_read}
            return usage
        written_key = "cache_creation_tokens" if self.dialect == "litellm" else "cache_write_tokens"
        return {
            "prompt_tokens": prompt,
            "completion_tokens": reply.output_tokens,
            "total_tokens": prompt + reply.output_tokens,
            "prompt_tokens_details": {
                "cached_tokens": reply.cache_read,
                written_key: reply.cache_write + reply.cache_write_1h,
                "audio_tokens": 0,
            },
            "completion_tokens_details": {"reasoning_tokens": reply.reasoning, "audio_tokens": 0},
        }


def _header(call: ToolUse, index: int, call_id: str) -> dict[str, Any]:
    """A streamed call's first fragment: index, id, type and name, with empty arguments."""
    return {"index": index, "id": call_id, "type": "function", "function": {"name": call.name, "arguments": ""}}


def _fragments(call: ToolUse) -> list[str]:
    return FakeServer.split_text(call.arguments_text, call.fragments)


def _error(message: str, status: int, code: str | None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(status, "api_error"),
            "param": None,
            "code": code,
        }
    }
