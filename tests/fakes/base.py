"""Loopback servers that speak real provider protocols, for tests and benchmarks.

Each fake is a real HTTP server on 127.0.0.1, port 0, in a background thread, with ``TCP_NODELAY`` set (without
it httpx waits ~44 ms per keep-alive request on loopback). It records every request it receives, so tests can
assert on request bodies, and answers from a script of ``Behavior`` objects:

- ``server.enqueue(b1, b2, ...)`` queues behaviors answered in order (FIFO), one per model call;
- when the queue is empty, ``server.responder(request)`` decides (default: ``Reply("ok")``), so a test can
  script answers by prompt, e.g. wrong answers for the local tier and right ones for the cheap tier.

The protocol modules (``ollama.py``, ``openai.py``, ``anthropic.py``) turn each behavior into that protocol's
exact bytes.

Tool calls are scripted the same way for every fake: a ``Reply`` whose ``tool_calls`` holds ``ToolUse``s,
most simply built with ``tool_reply``::

    fake.enqueue(tool_reply(ToolUse("read_file", {"path": "a.py"}), input_tokens=120, output_tokens=18))
    fake.enqueue(tool_reply(ToolUse("edit_file", '{"path": "a.py", "old": '), text="Let me fix it."))  # bad JSON
    fake.enqueue(CutToolCall(ToolUse("write_file", {"path": "b.py", "content": "x"}), after_fragments=1))

Each fake renders a call in its own wire format (Ollama: whole calls in ``message.tool_calls`` of a
``done: false`` chunk, then the usual final chunk; OpenAI: ``delta.tool_calls`` fragments, ``finish_reason``
``tool_calls``, usage in the last chunk; Anthropic: a ``tool_use`` block streamed as ``input_json_delta``
pieces, ``stop_reason`` ``tool_use``, cumulative ``message_delta.usage``). ``server.model_bodies()`` gives
the JSON bodies of the model requests received, to assert on the tools and tool messages sent.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class ToolUse:
    """One tool call in a scripted reply.

    ``arguments``: a dict is the arguments object (Ollama sends it as an object; the SSE fakes stream its
    ``json.dumps`` text); a str is the exact arguments text to stream, e.g. JSON cut short. ``id``: ``None``
    gives the fake's own next id (``call_fake<k>`` for Ollama and OpenAI, ``toolu_fake<k>`` for Anthropic,
    ``k`` counting every call the server has made, from 0). ``fragments``: how many pieces the SSE fakes
    split the arguments text into.
    """

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None
    fragments: int = 3

    @property
    def arguments_text(self) -> str:
        """What the SSE fakes stream: the exact text, or the object's ``json.dumps``."""
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    """A successful answer. Token counts use our normalized meaning: ``input_tokens`` is *uncached* input.

    Each fake renders them in its provider's own fields (e.g. OpenAI ``prompt_tokens`` = input + cache read +
    cache write; Anthropic ``input_tokens`` excludes cache tokens).

    With ``tool_calls``, the calls follow the text (no text block or delta when ``text`` is empty), and a
    ``finish`` left at "stop" is sent as the provider's own word for a tool call (OpenAI ``tool_calls``,
    Anthropic ``tool_use``, Ollama ``stop``).
    """

    text: str = "ok"
    input_tokens: int = 10
    output_tokens: int = 5
    cache_read: int = 0
    cache_write: int = 0  # 5-minute / short cache writes
    cache_write_1h: int = 0
    reasoning: int = 0
    finish: str = "stop"  # normalized: "stop" | "length"
    chunks: int = 3  # how many pieces the text is streamed in
    delay_s: float = 0.0  # pause before the first byte of the answer
    tool_calls: tuple[ToolUse, ...] = ()


def tool_reply(*calls: ToolUse, text: str = "", **fields: Any) -> Reply:
    """A reply that calls tools (no text unless given); ``fields`` are the other ``Reply`` fields."""
    return Reply(text=text, tool_calls=calls, **fields)


@dataclass(frozen=True)
class HttpError:
    """An HTTP error response with the provider's error body."""

    status: int
    message: str = "error"
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None  # e.g. "context_length_exceeded" (OpenAI), "overloaded_error" (Anthropic)


@dataclass(frozen=True)
class CutStream:
    """Start streaming, send ``after_chunks`` text chunks, then drop the connection (no final record)."""

    text: str = "partial answer"
    after_chunks: int = 1


@dataclass(frozen=True)
class CutToolCall:
    """Stream ``text``, then ``call`` until ``after_fragments`` pieces of its arguments, then drop the connection.

    Ollama sends calls whole: its fake sends the whole call, then drops the connection before the final chunk.
    """

    call: ToolUse
    after_fragments: int = 1
    text: str = ""


@dataclass(frozen=True)
class NoUsage:
    """Stream the whole answer and end cleanly, but never send the usage record."""

    text: str = "ok"


@dataclass(frozen=True)
class MidStreamError:
    """HTTP 200, some text, then an in-band error record (Ollama's ``{"error": ...}`` line, an SSE error event)."""

    message: str = "the model failed to generate a response"
    text: str = "partial"


@dataclass(frozen=True)
class Hang:
    """Accept the request and never answer (until the server stops)."""

    seconds: float = 3600.0


@dataclass(frozen=True)
class Malformed:
    """HTTP 200 with a body that is not what the protocol promises."""

    body: bytes = b"{not json"
    content_type: str = "application/json"


Behavior = Reply | HttpError | CutStream | CutToolCall | NoUsage | MidStreamError | Hang | Malformed


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's default backlog of 5 resets connections under 32 concurrent clients

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


class FakeServer:
    """Base class: subclasses implement ``handle(req, handler)`` for their protocol."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Behavior] = deque()
        self._lock = threading.Lock()
        self._tool_ids = 0
        self.responder: Callable[[RecordedRequest], Behavior] = lambda _req: Reply()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence stderr
                return

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _do(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                with fake._lock:
                    fake.requests.append(req)
                try:
                    fake.handle(req, self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = _do
            do_POST = _do
            do_DELETE = _do

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- scripting -------------------------------------------------------------------------------------

    def enqueue(self, *behaviors: Behavior) -> None:
        with self._lock:
            self._queue.extend(behaviors)

    def next_behavior(self, req: RecordedRequest) -> Behavior:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.responder(req)

    def model_requests(self) -> list[RecordedRequest]:
        """Requests that asked a model for an answer (subclasses narrow this to their chat endpoint)."""
        return [r for r in self.requests if r.method == "POST"]

    def model_bodies(self) -> list[Any]:
        """The JSON bodies of ``model_requests()``, in the order received."""
        return [r.json for r in self.model_requests()]

    def next_tool_id(self, prefix: str) -> str:
        """A fresh id for a scripted call without one: ``<prefix><k>``, ``k`` counting from 0 per server."""
        with self._lock:
            k = self._tool_ids
            self._tool_ids += 1
        return f"{prefix}{k}"

    def hang(self, seconds: float) -> None:
        """Block the handler thread until the server stops or ``seconds`` pass."""
        self._stop.wait(seconds)

    # --- helpers for subclasses ------------------------------------------------------------------------

    @staticmethod
    def send_json(
        handler: BaseHTTPRequestHandler, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    @staticmethod
    def send_raw(handler: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()

    @staticmethod
    def start_stream(handler: BaseHTTPRequestHandler, content_type: str) -> None:
        """Begin a chunked streaming response (the connection closes at the end)."""
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Cache-Control", "no-cache")
        # Say so: a pooling client must not send its next request down a socket we are about to close.
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.close_connection = True

    @staticmethod
    def write_chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()

    @staticmethod
    def end_stream(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    @staticmethod
    def cut(handler: BaseHTTPRequestHandler) -> None:
        """Drop the connection without finishing the chunked body (a truncated stream)."""
        handler.wfile.flush()
        handler.close_connection = True
        try:
            handler.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @staticmethod
    def split_text(text: str, chunks: int) -> list[str]:
        if chunks <= 1 or len(text) <= 1:
            return [text]
        size = max(1, -(-len(text) // chunks))
        return [text[i : i + size] for i in range(0, len(text), size)]

    def handle(self, req: RecordedRequest, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError
