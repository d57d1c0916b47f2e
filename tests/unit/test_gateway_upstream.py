"""The relay's upstream client against real loopback servers: keep-alive, chunked bodies relayed as they arrive,
broken connections as httpx's own exception types, and a proxy from the environment honoured (through httpx)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from supervisor.gateway.upstream import UpstreamPool

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0], headers, body


@asynccontextmanager
async def server(serve: Serve) -> AsyncIterator[tuple[str, list[int]]]:
    """A loopback server running ``serve`` per connection; yields its URL and a list counting connections."""
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        srv.close()


async def test_requests_share_one_keep_alive_connection_and_chunked_bodies_are_decoded() -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"6\r\ndata: \r\n3\r\nhi\n\r\n0\r\n\r\n")
            await writer.drain()

    async with server(serve) as (url, connections):
        pool = UpstreamPool()
        try:
            for n in range(3):
                body = json.dumps({"n": n}).encode()
                async with pool.stream("POST", url + "/v1/x?beta=true", content=body, headers={"x-api-key": "k"}) as r:
                    assert r.status_code == 200
                    assert r.headers["content-type"] == "text/event-stream"
                    assert await r.aread() == b"data: hi\n"
        finally:
            await pool.aclose()
    assert len(connections) == 1
    line, headers, body = seen[-1]
    assert line == "POST /v1/x?beta=true HTTP/1.1"
    assert headers["x-api-key"] == "k"
    assert headers["accept-encoding"] == "identity"  # the relay forwards the bytes as they are
    assert json.loads(body) == {"n": 2}


async def test_each_piece_of_a_stream_is_handed_over_before_the_next_is_sent() -> None:
    release = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()  # the second piece only once the client has the first
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    async with server(serve) as (url, _):
        pool = UpstreamPool()
        try:
            async with pool.stream("POST", url + "/s", content=b"{}", headers={}) as r:
                pieces = []
                async for piece in r.aiter_raw():
                    pieces.append(piece)
                    release.set()
        finally:
            await pool.aclose()
    assert pieces == [b"first", b"second"]


async def test_a_body_cut_short_is_a_remote_protocol_error() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()

    async with server(serve) as (url, _):
        pool = UpstreamPool()
        try:
            async with pool.stream("POST", url + "/cut", content=b"{}", headers={}) as r:
                with pytest.raises(httpx.RemoteProtocolError):
                    await r.aread()
        finally:
            await pool.aclose()


async def test_a_server_that_hangs_up_before_answering_is_a_remote_protocol_error() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with server(serve) as (url, _):
        pool = UpstreamPool()
        try:
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                async with pool.stream("POST", url + "/bye", content=b"{}", headers={}):
                    pass
        finally:
            await pool.aclose()


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with server(read_request) as (url, _):
        pass  # closed: nothing listens on its port any more
    pool = UpstreamPool()
    with pytest.raises(httpx.ConnectError):
        async with pool.stream("POST", url + "/x", content=b"{}", headers={}):
            pass


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()  # then hang up, as a server does with an idle keep-alive connection

    async with server(serve) as (url, connections):
        pool = UpstreamPool()
        try:
            for _ in range(2):
                async with pool.stream("POST", url + "/x", content=b"{}", headers={}) as r:
                    assert await r.aread() == b"ok"
                await asyncio.sleep(0.05)
        finally:
            await pool.aclose()
    assert len(connections) == 2


async def test_a_proxy_named_by_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    lines: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, _, _ = await read_request(reader)
        lines.append(line)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"via": 1}\n')
        await writer.drain()

    async with server(proxy) as (proxy_url, _):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        pool = UpstreamPool()
        try:
            async with pool.stream("POST", "http://127.0.0.2:9/v1/chat", content=b"{}", headers={}) as r:
                assert json.loads(await r.aread()) == {"via": 1}
        finally:
            await pool.aclose()
    assert lines == ["POST http://127.0.0.2:9/v1/chat HTTP/1.1"]
