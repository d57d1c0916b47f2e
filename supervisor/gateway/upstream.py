"""The relay's upstream leg: a lean HTTP/1.1 client on asyncio and httptools, with a keep-alive pool.

Why not httpx here: on the relay's hot path httpx (with httpcore, h11 and anyio under it) cost more CPU per
request than the whole rest of the gateway, key lookup, reservation and ledger row included (``bench/gateway.py``
and the README's performance section have the profile). A relayed request needs little of what it offers: one
POST with a JSON body, the status and headers, then the body as it arrives. This client writes the request in one
``write`` (TCP_NODELAY set, so it leaves at once), parses the response with httptools (the C parser the gateway's
server side uses too), hands each read's body bytes to the relay as they come (chunked encoding removed, never
buffered), pauses reading while the relay's client is slower than the upstream, and keeps connections alive for
the next request.

It keeps httpx's behaviour where it matters: the same TLS context (``httpx.create_ssl_context``: certifi, or
``SSL_CERT_FILE``/``SSL_CERT_DIR``), the same exception types (so ``error_from_transport`` classifies failures as
it does for the backends), a connect timeout, and idle connections dropped after 5 s as httpcore does. An
upstream that an ``HTTP(S)_PROXY``/``ALL_PROXY`` variable routes through a proxy is sent with httpx, which speaks
proxies; ``NO_PROXY`` is honoured. Responses are asked for with ``accept-encoding: identity``: the relay forwards
the bytes as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import urllib.request
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools
import httpx

KEEPALIVE_S = 5.0  # as httpcore: an idle connection older than this may already be closed by the server
MAX_IDLE_PER_ORIGIN = 64
HIGH_WATER = 1 << 20  # stop reading the upstream while this much is waiting for the client
USER_AGENT = "frugal-supervisor-gateway"

Origin = tuple[str, str, int]  # (scheme, host, port)


class _Connection(asyncio.Protocol):
    """One connection to an upstream; answers one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._header_name = ""
        self.chunks: deque[bytes] = deque()
        self._pending: list[bytes] = []
        self.buffered = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: httpx.TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = httpx.RemoteProtocolError(f"malformed HTTP response from the upstream: {exc}")
            self.close()
        if self._pending:
            chunk = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
            self._pending.clear()
            self.chunks.append(chunk)
            self.buffered += len(chunk)
            if self.buffered > HIGH_WATER and self.transport is not None and not self._reading_paused:
                self._reading_paused = True
                self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.headers_done and "content-length" not in self.headers and not self._chunked:
                self.complete = True  # a body delimited by the end of the connection
            elif self.headers_done:
                self.error = httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body" + (f" ({exc})" if exc else "")
                )
            else:
                self.error = httpx.RemoteProtocolError(
                    "Server disconnected without sending a response." + (f" ({exc})" if exc else "")
                )
        self._wake()

    # --- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self._pending.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # (only valid inside the callbacks)

    @property
    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    # --- the request

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until something happens: headers, body bytes, the end, or an error."""
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def send(self, head: bytes, body: bytes) -> None:
        self._reset()
        assert self.transport is not None
        self.transport.write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.transport.write(body)

    def take(self) -> bytes:
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self._reading_paused and self.buffered <= HIGH_WATER // 4 and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class UpstreamResponse:
    """A response being received: ``status_code``, lower-case ``headers``, then the body (``aiter_raw`` or
    ``aread``)."""

    def __init__(self, pool: UpstreamPool, origin: Origin, conn: _Connection) -> None:
        self._pool = pool
        self._origin = origin
        self._conn = conn
        self.status_code = conn.status
        self.headers = conn.headers
        self._done = False

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            while conn.chunks:
                yield conn.take()
            if conn.complete:
                return
            if conn.error is not None:
                raise conn.error
            await conn.wait()

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    def aclose(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn.reusable() and not conn.chunks:
            self._pool._release(self._origin, conn)
        else:
            conn.close()


class UpstreamPool:
    """Keep-alive connections to the upstreams, one request per connection at a time."""

    def __init__(self, *, connect_timeout_s: float = 5.0, timeout_s: float = 600.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self._idle: dict[Origin, list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._proxies = urllib.request.getproxies_environment()
        self._via_proxy: dict[Origin, bool] = {}
        self._httpx: httpx.AsyncClient | None = None
        self._targets: dict[str, tuple[Origin, str, str]] = {}

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
            self._ssl.set_alpn_protocols(["http/1.1"])
        return self._ssl

    def proxied(self, origin: Origin) -> bool:
        """Whether the environment routes ``origin`` through a proxy (then httpx sends it)."""
        known = self._via_proxy.get(origin)
        if known is None:
            scheme, host, _port = origin
            wants = bool(self._proxies.get(scheme) or self._proxies.get("all"))
            bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # (not in the stubs)
            known = wants and not bypass(host, self._proxies)
            self._via_proxy[origin] = known
        return known

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls = self._ssl_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(
                f"connecting to {host}:{port} took longer than {self.connect_timeout_s:g} s"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
        return conn

    def _release(self, origin: Origin, conn: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= MAX_IDLE_PER_ORIGIN:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        idle.append(conn)

    def _reuse(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < KEEPALIVE_S:
                return conn
            conn.close()
        return None

    def _target(self, url: str) -> tuple[Origin, str, str]:
        """(origin, request target, Host header) of ``url``; the upstreams are a handful of URLs: parsed once."""
        known = self._targets.get(url)
        if known is not None:
            return known
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise httpx.UnsupportedProtocol(f"{url!r} is not an http(s) URL")
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # an IPv6 literal
        host = name if parts.port is None else f"{name}:{parts.port}"
        known = ((scheme, parts.hostname, port), target, host)
        if len(self._targets) < 1024:
            self._targets[url] = known
        return known

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, url: str, *, content: bytes, headers: dict[str, str]
    ) -> AsyncIterator[UpstreamResponse | _HttpxResponse]:
        """Send one request; yields once the status and headers have arrived."""
        origin, target, host = self._target(url)
        if self.proxied(origin):
            async with self._via_httpx(method, url, content, headers) as proxied:
                yield proxied
            return
        lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append(f"content-length: {len(content)}\r\naccept-encoding: identity\r\nuser-agent: {USER_AGENT}\r\n\r\n")
        head = "".join(lines).encode("latin-1")
        conn = self._reuse(origin) or await self._connect(origin)
        response: UpstreamResponse | None = None
        try:
            conn.send(head, content)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                await conn.wait()
            response = UpstreamResponse(self, origin, conn)
            yield response
        finally:
            if response is None:
                conn.close()
            else:
                response.aclose()

    @contextlib.asynccontextmanager
    async def _via_httpx(
        self, method: str, url: str, content: bytes, headers: dict[str, str]
    ) -> AsyncIterator[_HttpxResponse]:
        if self._httpx is None:
            self._httpx = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
        sent = {**headers, "accept-encoding": "identity"}
        async with self._httpx.stream(method, url, content=content, headers=sent) as response:
            yield _HttpxResponse(response)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        if self._httpx is not None:
            client, self._httpx = self._httpx, None
            await client.aclose()


class _HttpxResponse:
    """An httpx response with ``UpstreamResponse``'s interface (the proxied path)."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers: dict[str, str] = {k.lower(): v for k, v in response.headers.items()}

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._response.aiter_raw()

    async def aread(self) -> bytes:
        return await self._response.aread()
