"""A lean HTTP/1.1 server on asyncio and httptools: the least Python between a socket and the gateway's handler.

Why not an ASGI stack: the gateway's whole budget is ~1.5 ms per request on a 2-core machine, and most of it is
already spent by the upstream leg (httpx) and the reservation (SQLite). An ASGI server adds a scope dict, a
receive/send message per body chunk and a layer of framework dispatch to every request and every streamed
event; this server parses with httptools (the C parser uvicorn uses), hands the handler one ``HttpRequest``
with the whole body, and writes each streamed piece straight to the transport. ``bench/gateway.py`` measures
it against the same requests sent directly to the upstream.

What it does, and no more: keep-alive, ``Content-Length`` and chunked request bodies (a size limit checked
before the body is read), fixed-length and chunked responses, backpressure (``drain``), a deadline for
receiving a whole request (a slow or stalled client is cut off and never holds anything), an idle timeout
between requests, TCP_NODELAY, and cancellation of the handler when the client goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httptools

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    421: "Misdirected Request",
    426: "Upgrade Required",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ClientGone(Exception):
    """The client closed the connection while we were answering."""


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    local_port: int
    peer: str


Handler = Callable[[HttpRequest, "HttpResponse"], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    max_body_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 30.0
    idle_timeout_s: float = 75.0


class HttpResponse:
    """One response: ``send`` (a whole body) or ``start`` + ``write``... + ``end`` (chunked, streamed)."""

    __slots__ = ("_chunked", "_conn", "_keep_alive", "ended", "media_type", "started", "status")

    def __init__(self, conn: _Connection, keep_alive: bool) -> None:
        self._conn = conn
        self._keep_alive = keep_alive
        self._chunked = False
        self.started = False
        self.ended = False
        self.status = 0
        self.media_type = ""  # the content type a started (streamed) response promised

    @property
    def disconnected(self) -> bool:
        return self._conn.closed

    def _head(self, status: int, headers: list[tuple[str, str]], extra: str) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        lines.append(extra)
        lines.append("connection: keep-alive\r\n\r\n" if self._keep_alive else "connection: close\r\n\r\n")
        return "".join(lines).encode("latin-1")

    def send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """The whole response at once (``Content-Length``)."""
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = self.ended = True
        self.status = status
        self._conn.write(self._head(status, headers, f"content-length: {len(body)}\r\n") + body)

    def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the status and headers of a streamed (chunked) response."""
        if self.started:
            raise RuntimeError("the response has already started")
        self.started = True
        self._chunked = True
        self.status = status
        self.media_type = next((v.split(";")[0].strip() for k, v in headers if k.lower() == "content-type"), "")
        self._conn.write(self._head(status, headers, "transfer-encoding: chunked\r\n"))

    def complete(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """The whole body: at once, or, when the response already started (keep-alive whitespace sent before a
        JSON body while a request was held), as its last piece under the status already sent."""
        if self.started:
            self.write(body)
            self.end()
        else:
            self.send(status, headers, body)

    def write(self, data: bytes) -> None:
        """One piece of a streamed body, sent at once (never buffered here)."""
        if not data:
            return
        if self._conn.closed:
            raise ClientGone
        self._conn.write(b"%x\r\n%b\r\n" % (len(data), data))

    async def drain(self) -> None:
        """Wait while the client reads slower than we write."""
        await self._conn.drain()

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._chunked and not self._conn.closed:
            self._conn.write(b"0\r\n\r\n")


class _Connection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler for each in turn, enforces the deadlines."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.local_port = 0
        self.peer = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._queue: list[HttpRequest] = []
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._writable: asyncio.Future[None] | None = None
        self._keep_alive = True
        self._refused: tuple[int, str] | None = None

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = transport.get_extra_info("sockname")
        peer = transport.get_extra_info("peername")
        self.local_port = int(local[1]) if local else 0
        self.peer = str(peer[0]) if peer else ""
        self.server.connections.add(self)
        self._arm(self.server.limits.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._disarm()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client went away: stop the upstream call, settle what it cost

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(426, "upgrades (WebSocket) are not served; use plain HTTP requests")
        except httptools.HttpParserError:
            self._reject(400, "malformed HTTP request")

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        self._arm(self.server.limits.request_timeout_s)  # a request starts: all of it must arrive in time
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0
        self._refused = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.server.limits.max_body_bytes:
            self._refused = (413, f"the request body is larger than {self.server.limits.max_body_bytes} bytes")

    def on_body(self, body: bytes) -> None:
        if self._refused is not None:
            return
        self._body_size += len(body)
        if self._body_size > self.server.limits.max_body_bytes:
            self._refused = (413, f"the request body is larger than {self.server.limits.max_body_bytes} bytes")
            self._body = []
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._refused is not None:
            status, message = self._refused
            self._reject(status, message)
            return
        url = httptools.parse_url(self._url)
        request = HttpRequest(
            method=self.parser.get_method().decode("latin-1"),
            path=url.path.decode("latin-1") if url.path else "/",
            query=url.query.decode("latin-1") if url.query else "",
            headers=self._headers,
            body=b"".join(self._body),
            local_port=self.local_port,
            peer=self.peer,
        )
        self._url = b""
        self._body = []
        self._body_size = 0
        self._keep_alive = self.parser.should_keep_alive()
        self._queue.append(request)
        self._disarm()
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._serve())

    # --- serving

    async def _serve(self) -> None:
        while self._queue and not self.closed:
            request = self._queue.pop(0)
            keep_alive = self._keep_alive and not self.server.stopping
            response = HttpResponse(self, keep_alive)
            try:
                await self.server.handler(request, response)
            except (ClientGone, asyncio.CancelledError):
                self.close()
                return
            except Exception as exc:  # noqa: BLE001 - the last line of defence: answer 500, never crash the server
                self.server.on_error(exc)
                if not response.started:
                    response.send(500, [("content-type", "text/plain")], b"internal error\n")
                keep_alive = False
            if not response.ended:
                response.end()
            if not keep_alive:
                self.close()
                return
        if not self.closed:
            self._arm(self.server.limits.idle_timeout_s)

    def _reject(self, status: int, message: str) -> None:
        body = f'{{"error": {{"type": "invalid_request_error", "message": "{message}"}}}}'.encode()
        response = HttpResponse(self, keep_alive=False)
        response.send(status, [("content-type", "application/json")], body)
        self.close()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        if self._writable is not None and not self._writable.done():
            try:
                # A client that stops reading is cut off after the request deadline: it never holds the upstream
                # call (and its reservation) open.
                await asyncio.wait_for(asyncio.shield(self._writable), self.server.limits.request_timeout_s)
            except TimeoutError:
                self.close()
        if self.closed:
            raise ClientGone

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            return  # a request is being answered: its own deadlines apply
        if self._url or self._body_size or self._headers:
            self._reject(408, "the request did not arrive in time")
        else:
            self.close()  # idle keep-alive connection


@dataclass
class HttpServer:
    """Listens on one or more (host, port) pairs and serves every connection with ``handler``."""

    handler: Handler
    limits: ServerLimits = field(default_factory=ServerLimits)
    on_error: Callable[[BaseException], None] = lambda exc: None
    connections: set[_Connection] = field(default_factory=set)
    stopping: bool = False
    _servers: list[asyncio.Server] = field(default_factory=list)

    async def listen(self, host: str, port: int) -> int:
        """Start listening; returns the port (the one chosen when ``port`` is 0)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True, backlog=512)
        self._servers.append(server)
        sock: Any = server.sockets[0]
        return int(sock.getsockname()[1])

    def unlisten(self, port: int) -> None:
        """Stop listening on ``port`` and close the connections made to it (an agent step's attempt port)."""
        for server in [s for s in self._servers if any(_port_of(sock) == port for sock in s.sockets)]:
            server.close()
            self._servers.remove(server)
        for conn in [c for c in self.connections if c.local_port == port]:
            conn.close()

    def stop_listening(self) -> None:
        self.stopping = True
        for server in self._servers:
            server.close()

    async def busy(self) -> bool:
        return any(c._task is not None and not c._task.done() for c in self.connections)

    async def close(self, grace_s: float) -> None:
        """Stop accepting, let requests in flight finish for ``grace_s``, then cancel them and close everything."""
        self.stop_listening()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline and await self.busy():
            await asyncio.sleep(0.02)
        tasks = [c._task for c in self.connections if c._task is not None and not c._task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for conn in list(self.connections):
            conn.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()


def _port_of(sock: Any) -> int:
    try:
        return int(sock.getsockname()[1])
    except (OSError, IndexError, TypeError):
        return 0
