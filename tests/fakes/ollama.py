"""A loopback Ollama server: ``/api/chat`` and ``/api/generate`` NDJSON streaming plus the model-management
endpoints.

Wire shapes follow protocols.md section 1: streamed chunks are ``application/x-ndjson`` lines, the final
``done: true`` chunk carries ``done_reason`` and the nanosecond metrics, ``stream: false`` returns one
``application/json`` object, an unknown model is a 404 ``{"error": "model 'x' not found"}``, and an error
after streaming began is an ``{"error": ...}`` line inside an HTTP 200 response.

Durations are deterministic so tests can assert on derived numbers: a prompt token takes
``PROMPT_NS_PER_TOKEN`` and an output token ``EVAL_NS_PER_TOKEN`` (50 tokens/s).

A chat request marks its model loaded (``/api/ps``) until ``keep_alive`` expires, with the ``num_ctx`` it
asked for as ``context_length``, as the real server does; ``keep_alive: 0`` unloads it.

A ``Reply`` with ``tool_calls`` streams its text, then one ``done: false`` chunk per call with
``message.tool_calls = [{"id": "call_…", "function": {"index": n, "name": …, "arguments": {…}}}]`` (arguments
an object, as the server parses them; a ``ToolUse`` with str arguments sends that string instead, as a broken
server might), then the final chunk with ``done_reason: "stop"``, as the current server does
(server/routes.go). ``tool_call_ids=False`` leaves ids out, as servers before they were added did.

``/api/generate`` answers the same behaviors with ``{"response": "<piece>", "done": false}`` lines and a final
``done: true`` line carrying ``done_reason``, ``context`` (token ids) and the same metrics; ``stream: false``
returns that final object with the whole ``response``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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

NDJSON = "application/x-ndjson"
QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"
LOAD_NS = 1_334_875
PROMPT_NS_PER_TOKEN = 1_000_000
EVAL_NS_PER_TOKEN = 20_000_000
FOREVER = datetime(2318, 1, 1, tzinfo=UTC)  # what the real server reports for a negative keep_alive

# Real Ollama messages for an ``HttpError`` left at its default message (protocols.md section 1.8).
DEFAULT_ERRORS = {
    400: "missing request body",
    401: "unauthorized",
    403: "remote model is unavailable",
    429: "too many requests",
    500: "the model failed to generate a response",
    502: "remote model is unavailable",
    503: QUEUE_FULL,
}


@dataclass(frozen=True)
class FakeModel:
    """A model the fake has pulled. ``context_length=None`` leaves it out of ``/api/show``'s model_info."""

    name: str
    size: int = 2_019_393_189
    context_length: int | None = 8192
    architecture: str = "llama"
    parameter_size: str = "3.2B"
    quantization_level: str = "Q4_K_M"
    loaded: bool = False  # already loaded when the server starts


@dataclass(frozen=True)
class RecordedStream:
    """Send these NDJSON lines verbatim (HTTP 200), e.g. a final chunk copied from the Ollama docs."""

    lines: tuple[str, ...]


@dataclass(frozen=True)
class Looping:
    """A model stuck in a loop: stream ``text`` as one chunk after another until the client goes away (or
    ``max_chunks``, then finish normally). ``OllamaFake.loops`` records how each such stream ended."""

    text: str = "A-sort\n"
    max_chunks: int = 20_000
    delay_s: float = 0.001


@dataclass(frozen=True)
class LoopRecord:
    chunks_sent: int
    client_left: bool  # the client closed the connection before the stream's end


OllamaBehavior = Behavior | RecordedStream | Looping


def canonical(name: str) -> str:
    """Ollama's model names default to the ``latest`` tag."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def keep_alive_seconds(value: Any) -> float:
    """``keep_alive`` as seconds: a number of seconds, or a Go duration string ("10m", "1h30m", "-1")."""
    if value is None:
        return 300.0
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    sign = -1.0 if text.startswith("-") else 1.0
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not parts:
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * sum(float(n) * units[u] for n, u in parts)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class OllamaFake(FakeServer):
    """Speaks Ollama's native API. ``models`` are the pulled models (names or ``FakeModel``s)."""

    def __init__(
        self,
        models: Iterable[str | FakeModel] = ("llama3.2:latest", "qwen3:4b"),
        *,
        report_cached_count: bool = False,
        version: str = "0.12.3",
        tool_call_ids: bool = True,
    ) -> None:
        super().__init__()
        self.tool_call_ids = tool_call_ids  # False: calls without ids, as older servers sent them
        self.models: dict[str, FakeModel] = {}
        for m in models:
            model = m if isinstance(m, FakeModel) else FakeModel(name=m)
            self.models[canonical(model.name)] = model
        self.report_cached_count = report_cached_count  # emit upstream's proposed prompt_eval_cached_count
        self.loops: list[LoopRecord] = []
        self.version = version
        self._loaded: dict[str, tuple[datetime, int | None]] = {
            name: (FOREVER, m.context_length) for name, m in self.models.items() if m.loaded
        }
        # serve_forever's default 0.5 s poll makes every stop() wait up to half a second; poll faster.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # --- what tests look at ----------------------------------------------------------------------------

    def model_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path in ("/api/chat", "/api/generate")]

    def chat_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of every ``/api/chat`` request, in order."""
        return [r.json for r in self.requests if r.method == "POST" and r.path == "/api/chat"]

    def enqueue(self, *behaviors: OllamaBehavior) -> None:
        """Queue behaviors, including this fake's own ``RecordedStream``."""
        super().enqueue(*behaviors)  # type: ignore[arg-type]  # the base queue holds only the shared kinds

    # --- routing ---------------------------------------------------------------------------------------

    def handle(self, req: RecordedRequest, handler: BaseHTTPRequestHandler) -> None:
        route = (req.method, req.path.split("?", 1)[0])
        if route == ("POST", "/api/chat"):
            self._chat(req, handler)
        elif route == ("POST", "/api/generate"):
            self._chat(req, handler, generate=True)
        elif route == ("GET", "/api/tags"):
            self.send_json(handler, 200, {"models": [self._tag(m) for m in self.models.values()]})
        elif route == ("GET", "/api/ps"):
            self.send_json(handler, 200, {"models": self._running()})
        elif route == ("POST", "/api/show"):
            self._show(req, handler)
        elif route == ("GET", "/api/version"):
            self.send_json(handler, 200, {"version": self.version})
        elif route == ("GET", "/"):
            self.send_raw(handler, 200, b"Ollama is running", "text/plain; charset=utf-8")
        else:
            self.send_raw(handler, 404, b"404 page not found", "text/plain")

    # --- /api/chat -------------------------------------------------------------------------------------

    def generate_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of every ``/api/generate`` request, in order."""
        return [r.json for r in self.requests if r.method == "POST" and r.path == "/api/generate"]

    def _chat(self, req: RecordedRequest, handler: BaseHTTPRequestHandler, *, generate: bool = False) -> None:
        """``/api/chat``, or with ``generate`` ``/api/generate``: the same NDJSON stream with the text under
        ``response`` instead of ``message.content``, and the final chunk's ``context`` (the conversation's token
        ids, which a client may send back to continue it)."""
        if not req.body:
            self.send_json(handler, 400, {"error": "missing request body"})
            return
        try:
            body = json.loads(req.body)
        except json.JSONDecodeError as exc:
            self.send_json(handler, 400, {"error": f"invalid character: {exc.msg}"})
            return
        name = body.get("model") or ""
        if not name:
            self.send_json(handler, 400, {"error": "model is required"})
            return
        if canonical(name) not in self.models:
            self.send_json(handler, 404, {"error": f"model '{name}' not found"})
            return
        behavior: OllamaBehavior = self.next_behavior(req)
        stream = body.get("stream", True) is not False
        if isinstance(behavior, Reply):
            self._mark_loaded(canonical(name), body)
            self._reply(handler, name, behavior, stream, generate)
        elif isinstance(behavior, HttpError):
            message = behavior.message
            if message == "error":
                message = DEFAULT_ERRORS.get(behavior.status, message)
            self.send_json(handler, behavior.status, {"error": message}, behavior.headers)
        elif isinstance(behavior, CutStream):
            self.start_stream(handler, NDJSON)
            # One more piece than is sent, so what arrives is visibly only part of the answer.
            pieces = self.split_text(behavior.text, behavior.after_chunks + 1)
            for piece in pieces[: behavior.after_chunks]:
                self._line(handler, self._chunk(name, piece, generate=generate))
            self.cut(handler)
        elif isinstance(behavior, CutToolCall):
            self.start_stream(handler, NDJSON)
            if behavior.text:
                self._line(handler, self._chunk(name, behavior.text))
            self._line(handler, self._chunk(name, "", tool_calls=[self._tool_call(behavior.call, 0)]))
            self.cut(handler)
        elif isinstance(behavior, NoUsage):
            self.start_stream(handler, NDJSON)
            for piece in self.split_text(behavior.text, 2):
                self._line(handler, self._chunk(name, piece))
            final = self._final(name, Reply(text=behavior.text))
            for omitted in ("prompt_eval_count", "eval_count"):  # omitempty: gone, not zero
                del final[omitted]
            self._line(handler, final)
            self._finish(handler)
        elif isinstance(behavior, MidStreamError):
            self.start_stream(handler, NDJSON)
            if behavior.text:
                self._line(handler, self._chunk(name, behavior.text, generate=generate))
            self._line(handler, {"error": behavior.message})
            self._finish(handler)
        elif isinstance(behavior, Hang):
            self.hang(behavior.seconds)
            handler.close_connection = True
        elif isinstance(behavior, Malformed):
            self.send_raw(handler, 200, behavior.body, behavior.content_type)
        elif isinstance(behavior, Looping):
            self._loop(handler, name, behavior, generate=generate)
        elif isinstance(behavior, RecordedStream):
            self.start_stream(handler, NDJSON)
            for line in behavior.lines:
                self.write_chunk(handler, line.encode() + b"\n")
            self._finish(handler)
        else:  # pragma: no cover - the Behavior union is closed
            raise TypeError(f"unknown behavior {behavior!r}")

    def _loop(self, handler: BaseHTTPRequestHandler, model: str, loop: Looping, *, generate: bool = False) -> None:
        self.start_stream(handler, NDJSON)
        sent = 0
        try:
            while sent < loop.max_chunks:
                self._line(handler, self._chunk(model, loop.text, generate=generate))
                sent += 1
                time.sleep(loop.delay_s)
            final = Reply(text=loop.text * sent, output_tokens=sent, finish="length")
            self._line(handler, self._final(model, final, generate=generate))
            self._finish(handler)
        except (BrokenPipeError, ConnectionResetError):
            with self._lock:
                self.loops.append(LoopRecord(sent, client_left=True))
            raise
        with self._lock:
            self.loops.append(LoopRecord(sent, client_left=False))

    def _reply(
        self, handler: BaseHTTPRequestHandler, model: str, reply: Reply, stream: bool, generate: bool = False
    ) -> None:
        if reply.delay_s:
            self.hang(reply.delay_s)
        if generate:
            final = self._final(model, reply, generate=True)
            if not stream:
                final["response"] = reply.text
                self.send_json(handler, 200, final)
                return
            self.start_stream(handler, NDJSON)
            for piece in self.split_text(reply.text, reply.chunks):
                self._line(handler, self._chunk(model, piece, generate=True))
            self._line(handler, final)
            self._finish(handler)
            return
        thinking = f"thinking for {reply.reasoning} tokens" if reply.reasoning else ""
        calls = [self._tool_call(call, index) for index, call in enumerate(reply.tool_calls)]
        if not stream:
            final = self._final(model, reply)
            final["message"] = {"role": "assistant", "content": reply.text}
            if thinking:
                final["message"]["thinking"] = thinking
            if calls:
                final["message"]["tool_calls"] = calls
            self.send_json(handler, 200, final)
            return
        self.start_stream(handler, NDJSON)
        if thinking:
            self._line(handler, self._chunk(model, "", thinking=thinking))
        if reply.text or not calls:
            for piece in self.split_text(reply.text, reply.chunks):
                self._line(handler, self._chunk(model, piece))
        for call in calls:
            self._line(handler, self._chunk(model, "", tool_calls=[call]))
        self._line(handler, self._final(model, reply))
        self._finish(handler)

    def _tool_call(self, call: ToolUse, index: int) -> dict[str, Any]:
        rendered: dict[str, Any] = {}
        if self.tool_call_ids:
            rendered["id"] = call.id or self.next_tool_id("call_fake")
        rendered["function"] = {"index": index, "name": call.name, "arguments": call.arguments}
        return rendered

    def _chunk(
        self,
        model: str,
        content: str,
        thinking: str = "",
        tool_calls: list[dict[str, Any]] | None = None,
        *,
        generate: bool = False,
    ) -> dict[str, Any]:
        if generate:
            return {"model": model, "created_at": _now(), "response": content, "done": False}
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            message["thinking"] = thinking
        if tool_calls:
            message["tool_calls"] = tool_calls
        return {"model": model, "created_at": _now(), "message": message, "done": False}

    def _final(self, model: str, reply: Reply, *, generate: bool = False) -> dict[str, Any]:
        # prompt_eval_count is CacheN + PromptN on the real server: KV-cache hits are included.
        prompt_tokens = reply.input_tokens + reply.cache_read
        prompt_ns = prompt_tokens * PROMPT_NS_PER_TOKEN
        eval_ns = reply.output_tokens * EVAL_NS_PER_TOKEN
        final: dict[str, Any] = {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop" if reply.finish == "tool_calls" else reply.finish,  # Ollama has no other word
            "total_duration": LOAD_NS + prompt_ns + eval_ns,
            "load_duration": LOAD_NS,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": prompt_ns,
            "eval_count": reply.output_tokens,
            "eval_duration": eval_ns,
        }
        if self.report_cached_count and reply.cache_read:
            final["prompt_eval_cached_count"] = reply.cache_read
        if generate:
            del final["message"]
            final["response"] = ""
            # The conversation as token ids (the real server's are the model's; any ints do for a client).
            final["context"] = list(range(1, prompt_tokens + reply.output_tokens + 1))
            return {k: final[k] for k in ("model", "created_at", "response", "done", "done_reason", "context")} | {
                k: v for k, v in final.items() if k.endswith(("_duration", "_count"))
            }
        return final

    def _finish(self, handler: BaseHTTPRequestHandler) -> None:
        """End a stream cleanly and keep the connection open, as Go's net/http does after a chunked body.

        (``start_stream`` marks the connection to close without telling the client, so a client that pools
        connections could send its next request down a socket the server is closing.)
        """
        self.end_stream(handler)
        handler.close_connection = False

    def _line(self, handler: BaseHTTPRequestHandler, payload: dict[str, Any]) -> None:
        self.write_chunk(handler, json.dumps(payload).encode() + b"\n")

    def _mark_loaded(self, name: str, body: dict[str, Any]) -> None:
        seconds = keep_alive_seconds(body.get("keep_alive"))
        num_ctx = (body.get("options") or {}).get("num_ctx")
        with self._lock:
            if seconds == 0:
                self._loaded.pop(name, None)
            else:
                expires = FOREVER if seconds < 0 else datetime.now(UTC) + timedelta(seconds=seconds)
                self._loaded[name] = (expires, num_ctx or self.models[name].context_length)

    # --- model management ------------------------------------------------------------------------------

    def _details(self, m: FakeModel) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": m.architecture,
            "families": [m.architecture],
            "parameter_size": m.parameter_size,
            "quantization_level": m.quantization_level,
        }

    def _tag(self, m: FakeModel) -> dict[str, Any]:
        return {
            "name": canonical(m.name),
            "model": canonical(m.name),
            "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            "size": m.size,
            "digest": hashlib.sha256(m.name.encode()).hexdigest(),
            "details": self._details(m),
        }

    def _running(self) -> list[dict[str, Any]]:
        with self._lock:
            loaded = dict(self._loaded)
        now = datetime.now(UTC)
        out = []
        for name, (expires, context_length) in loaded.items():
            if expires <= now:
                continue
            entry = self._tag(self.models[name])
            del entry["modified_at"]
            entry.update(
                expires_at=expires.isoformat(),
                size_vram=self.models[name].size,
                context_length=context_length,
            )
            out.append(entry)
        return out

    def _show(self, req: RecordedRequest, handler: BaseHTTPRequestHandler) -> None:
        try:
            body = json.loads(req.body or b"{}")
        except json.JSONDecodeError as exc:
            self.send_json(handler, 400, {"error": f"invalid character: {exc.msg}"})
            return
        name = body.get("model") or body.get("name") or ""
        model = self.models.get(canonical(name)) if name else None
        if model is None:
            self.send_json(handler, 404, {"error": f"model '{name}' not found"})
            return
        info: dict[str, Any] = {
            "general.architecture": model.architecture,
            "general.parameter_count": 3_212_749_888,
        }
        if model.context_length is not None:
            info[f"{model.architecture}.context_length"] = model.context_length
        self.send_json(
            handler,
            200,
            {
                "modelfile": f"FROM {canonical(name)}\n",
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": self._details(model),
                "model_info": info,
                "capabilities": ["completion"],
                "modified_at": "2025-05-04T17:37:44.706015396-07:00",
            },
        )
