"""Gateway policy with real sockets: security checks, caps under concurrency, keys bound to an attempt, the
runaway breaker, holding a frontier request open while a human decides."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import openai
import pytest

from supervisor.gateway.keys import mint_key
from supervisor.runtime.program import AttemptGrant
from tests.fakes.base import Reply
from tests.fakes.openai import RawStream
from tests.gateway_harness import running_gateway


def raw_request(port: int, data: bytes, *, pause_s: float = 0.0, rest: bytes = b"") -> bytes:
    """Send ``data`` (then, after ``pause_s``, ``rest``) on a plain socket and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if pause_s:
            import time

            time.sleep(pause_s)
            if rest:
                sock.sendall(rest)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


LIMITS = """
[gateway]
max_body_bytes = 2000
request_timeout_s = 0.5
"""


async def test_security_checks_refuse_before_anything_is_forwarded(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, extra=LIMITS) as g:
        key = g.key()
        auth = {"authorization": f"Bearer {key}"}
        body = {"model": "cheap", "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient(base_url=g.url) as client:
            rebound = await client.post("/v1/chat/completions", json=body, headers={**auth, "host": "evil.example:80"})
            assert rebound.status_code == 403
            assert "loopback" in rebound.json()["error"]["message"]
            site = await client.post(
                "/v1/chat/completions", json=body, headers={**auth, "origin": "https://evil.example"}
            )
            assert site.status_code == 403
            assert not [h for h in site.headers if h.startswith("access-control")]
            csrf = await client.post(
                "/v1/chat/completions", content=json.dumps(body), headers={**auth, "content-type": "text/plain"}
            )
            assert csrf.status_code == 415
            big = await client.post("/v1/chat/completions", json={**body, "pad": "x" * 5000}, headers=auth)
            assert big.status_code == 413
            pull = await client.post("/api/pull", json={"model": "qwen3:4b"}, headers=auth)
            assert pull.status_code == 403
            assert "does not manage models" in pull.json()["error"]
            no_key = await client.get("/api/tags")
            assert no_key.status_code == 401
            g.openai.enqueue(Reply("fine", input_tokens=3, output_tokens=1))
            smuggled = await client.post(
                "/v1/chat/completions",
                json={**body, "api_base": "http://attacker.invalid", "api_key": "sk-stolen"},
                headers=auth,
            )
            assert smuggled.status_code == 200
        forwarded = g.openai.model_requests()
        assert len(forwarded) == 1
        assert "api_base" not in forwarded[0].json
        assert "api_key" not in forwarded[0].json
        assert g.ledger.held_reservations() == []


async def test_a_stalled_client_is_cut_off_and_holds_nothing(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, extra=LIMITS) as g:
        key = g.key()
        port = g.gateway.bound_port
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
            'content-type: application/json\r\ncontent-length: 400\r\n\r\n{"model":'
        ).encode()
        answer = await asyncio.to_thread(raw_request, port, head, pause_s=2.0)
        assert answer.startswith(b"HTTP/1.1 408")
        upgrade = await asyncio.to_thread(
            raw_request,
            port,
            b"GET /v1/responses HTTP/1.1\r\nhost: localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        )
        assert upgrade.startswith(b"HTTP/1.1 426")
        assert g.ledger.query("SELECT count(*) FROM reservations")[0][0] == 0


TIGHT = """
[caps]
day_usd = 0.05

[agents.a1]
goal = "one"
ladder = ["frontier"]
frontier = "allow"
caps = { day_usd = 0.02 }

[agents.a2]
goal = "two"
ladder = ["frontier"]
frontier = "allow"
caps = { day_usd = 0.02 }

[agents.a3]
goal = "three"
ladder = ["frontier"]
frontier = "allow"
caps = { day_usd = 0.03 }
"""


async def test_32_concurrent_requests_never_take_spend_and_holds_past_any_cap(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, TIGHT) as g:
        g.anthropic.responder = lambda req: Reply("ok", input_tokens=200, output_tokens=300, delay_s=0.05)
        keys = {a: g.key(a) for a in ("a1", "a2", "a3")}
        caps = {"a1": 20_000, "a2": 20_000, "a3": 30_000}
        peaks: dict[str, int] = {}
        done = asyncio.Event()

        async def sample() -> None:
            while not done.is_set():
                for agent in (*caps, "*"):
                    where = "" if agent == "*" else f"WHERE agent = '{agent}'"
                    total = g.ledger.scalar(f"SELECT coalesce(sum(micros), 0) FROM spend_days {where}")
                    peaks[agent] = max(peaks.get(agent, 0), int(total))
                await asyncio.sleep(0.002)

        async def one(i: int) -> str:
            agent = ("a1", "a2", "a3")[i % 3]
            client = g.track(openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=keys[agent], max_retries=0))
            try:
                await client.chat.completions.create(
                    model="frontier", max_tokens=1000, messages=[{"role": "user", "content": "x" * 300}]
                )
            except openai.RateLimitError:
                return "capped"
            return "served"

        sampler = asyncio.create_task(sample())
        # The Anthropic fake only speaks /v1/messages: these chat requests are translated through the backend.
        outcomes = await asyncio.gather(*(one(i) for i in range(32)))
        done.set()
        await sampler
        assert "served" in outcomes
        assert "capped" in outcomes
        for agent, cap in caps.items():
            assert peaks[agent] <= cap, (agent, peaks[agent], cap)
        assert peaks["*"] <= 50_000
        assert g.ledger.held_reservations() == []
        served = sum(1 for o in outcomes if o == "served")
        assert len(g.ledger.calls()) == served


async def test_a_key_bound_to_an_attempt_is_served_by_its_tier_within_its_limits(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        bound = mint_key(g.ledger, "aider", step="fix", attempt=2, tier="local", max_calls=1, max_output_tokens=64)
        client = g.track(openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=bound.token, max_retries=0))
        g.ollama.enqueue(Reply("local says hi", input_tokens=5, output_tokens=3))
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-6.2-sol", messages=[{"role": "user", "content": "hi"}], max_tokens=5000
        )
        assert raw.parse().choices[0].message.content == "local says hi"
        assert raw.headers["x-supervisor-substituted"] == "gpt-6.2-sol -> ollama:qwen3:4b"
        [row] = g.calls()
        assert (row["step"], row["attempt"], row["tier"], row["key_id"]) == ("fix", 2, "local", bound.id)
        assert g.ollama.chat_bodies()[-1]["options"]["num_predict"] == 64  # the key's ceiling, not the client's ask
        with pytest.raises(openai.RateLimitError, match="key calls"):
            await client.chat.completions.create(model="local", messages=[{"role": "user", "content": "again"}])
        expired = mint_key(g.ledger, "aider", expires_at=datetime.now(UTC) - timedelta(seconds=1))
        with pytest.raises(openai.AuthenticationError, match="expired"):
            await g.track(openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=expired.token)).chat.completions.create(
                model="local", messages=[{"role": "user", "content": "x"}]
            )


BREAKER = """
[breaker]
rising_calls = 3
max_output_ratio = 0.05

[agents.loop]
goal = "someone else's agent loop"
ladder = ["cheap"]
"""


async def test_the_breaker_pauses_an_external_agent_whose_input_keeps_rising(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, BREAKER) as g:
        client = g.track(openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key("loop"), max_retries=0))
        for size in (1000, 2000, 4000):
            g.openai.enqueue(Reply("k", input_tokens=size, output_tokens=2))
            await client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "more"}])
        assert g.ledger.agent("loop")["state"] == "paused"
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "more"}])
        assert "rising_input" in str(info.value) or "rose across 3" in str(info.value)
        assert "1000" in str(info.value)
        assert "supervisor resume loop" in str(info.value)
        assert len(g.openai.model_requests()) == 3


HOLD = """
[agents.claude]
goal = "claude code"
ladder = ["frontier"]
frontier = "ask"
hold_open_s = 20
"""


async def test_an_agent_can_hold_a_frontier_request_open_until_a_human_approves(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, HOLD + "\n[gateway]\nping_interval_s = 0.2\n") as g:
        import anthropic

        client = g.track(anthropic.AsyncAnthropic(base_url=g.url, api_key=g.key("claude"), max_retries=0))
        g.anthropic.enqueue(Reply("worth the wait", input_tokens=4, output_tokens=3))

        async def approve_soon() -> None:
            while not g.ledger.approvals():
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.6)  # long enough for a few keep-alive pings
            g.runtime.approve(g.ledger.approvals()[0].id, "test")

        approver = asyncio.create_task(approve_soon())
        async with client.messages.stream(
            model="frontier", max_tokens=16, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
        await approver
        assert text == "worth the wait"
        assert g.ledger.approval(1).state == "consumed"
        assert len(g.calls()) == 1


async def test_a_held_non_streaming_request_gets_keep_alive_whitespace_and_succeeds_after_approval(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path, HOLD + "\n[gateway]\nping_interval_s = 0.2\n") as g:
        import anthropic

        client = g.track(anthropic.AsyncAnthropic(base_url=g.url, api_key=g.key("claude"), max_retries=0))
        g.anthropic.enqueue(Reply("worth the wait", input_tokens=4, output_tokens=3))

        async def decide_soon(approve: bool) -> None:
            while not [a for a in g.ledger.approvals() if a.state == "pending"]:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.7)  # long enough for a few keep-alive spaces
            pending = next(a for a in g.ledger.approvals() if a.state == "pending")
            if approve:
                g.runtime.approve(pending.id, "test")
            else:
                g.runtime.deny(pending.id, "test")

        approver = asyncio.create_task(decide_soon(True))
        raw = await client.messages.with_raw_response.create(
            model="frontier", max_tokens=16, messages=[{"role": "user", "content": "x"}]
        )
        await approver
        body = await raw.http_response.aread()
        assert body.startswith(b" ")  # kept alive with whitespace while the human decided
        message = await raw.parse()
        assert message.content[0].text == "worth the wait"  # type: ignore[union-attr]
        assert len(g.calls()) == 1

        # Denied after the status went out: the refusal arrives in-band, as Anthropic's error body.
        denier = asyncio.create_task(decide_soon(False))
        async with httpx.AsyncClient(base_url=g.url, timeout=30) as plain:
            refused = await plain.post(
                "/v1/messages",
                json={"model": "frontier", "max_tokens": 16, "messages": [{"role": "user", "content": "y"}]},
                headers={"x-api-key": g.key("claude"), "anthropic-version": "2023-06-01"},
            )
        await denier
        assert refused.status_code == 200
        assert refused.content.startswith(b" ")
        assert refused.json()["type"] == "error"
        assert "denied" in refused.json()["error"]["message"]
        assert len(g.calls()) == 1
        assert g.ledger.held_reservations() == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_per_agent_port_serves_a_client_that_sends_no_key(tmp_path: Path) -> None:
    import ollama

    port = free_port()
    agents = f"""
[agents.goose]
goal = "goose in ollama mode (sends no key)"
ladder = ["local"]
gateway_port = {port}
"""
    async with running_gateway(tmp_path, agents) as g:
        assert g.gateway.port_agents == {port: "goose"}
        g.ollama.enqueue(Reply("no key needed", input_tokens=4, output_tokens=3))
        client = g.track(ollama.AsyncClient(host=f"http://127.0.0.1:{port}"))
        reply = await client.chat(model="qwen3:4b", messages=[{"role": "user", "content": "hi"}])
        assert reply.message.content == "no key needed"
        [row] = g.calls("goose")
        assert (row["auth"], row["key_id"]) == ("port", None)
        with pytest.raises(ollama.ResponseError) as info:  # the main port still wants a key
            await g.track(ollama.AsyncClient(host=g.url)).chat(
                model="local", messages=[{"role": "user", "content": "x"}]
            )
        assert info.value.status_code == 401


async def test_listening_beyond_loopback_needs_an_explicit_setting_and_keys(tmp_path: Path) -> None:
    from supervisor.config import GatewayConfig
    from supervisor.errors import SupervisorError
    from supervisor.gateway.server import Gateway

    async with running_gateway(tmp_path) as g:
        with pytest.raises(SupervisorError, match="not a loopback address"):
            await Gateway(g.runtime, host="0.0.0.0", port=0).start()
        with pytest.raises(SupervisorError, match="no gateway keys"):
            await Gateway(g.runtime, GatewayConfig(allow_non_loopback=True), host="0.0.0.0", port=0).start()


async def test_a_client_that_stops_reading_a_stream_is_cut_off_and_its_hold_settled(tmp_path: Path) -> None:
    from tests.fakes.openai import RawStream

    big = (
        b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"deepseek-flash","choices":[{"index":0,'
        b'"delta":{"content":"' + b"x" * 16000 + b'"},"finish_reason":null}]}\n\n'
    )
    async with running_gateway(tmp_path, extra=LIMITS) as g:
        key = g.key()
        g.openai.enqueue(RawStream((big,), forever=True, interval_s=0.001))
        body = json.dumps({"model": "cheap", "stream": True, "messages": [{"role": "user", "content": "go"}]})
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}"
        ).encode()
        sock = socket.create_connection(("127.0.0.1", g.gateway.bound_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            sock.sendall(request)  # ... and never read the answer
            for _ in range(400):
                await asyncio.sleep(0.05)
                if g.calls() and not g.ledger.held_reservations():
                    break
            [row] = g.calls()
            assert row["priced"] == 0  # cut off mid-stream: the worst case stays charged, never $0
            assert g.ledger.held_reservations() == []
        finally:
            sock.close()


def sse_chunk(content: str | None, usage: dict[str, int] | None = None) -> bytes:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    payload = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices}
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


async def test_a_key_split_across_two_upstream_reads_is_still_scrubbed(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        secret = g.environ["DEEPSEEK_API_KEY"].encode()
        half = len(secret) // 2
        # An upstream echoing the provider key in an answer, torn in the middle of the key: the fake sends the
        # first half, then waits until the client has everything before it, then sends the rest.
        torn = sse_chunk("the key is " + "\x00")
        head, _, tail = torn.partition(b"\\u0000")
        release = threading.Event()
        usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
        g.openai.enqueue(
            RawStream(
                (sse_chunk("hello ") + head + secret[:half], secret[half:] + tail, sse_chunk(None, usage)),
                hold_before=(1, release),
            )
        )
        received = b""
        body = {
            "model": "cheap",
            "messages": [{"role": "user", "content": "echo"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with (
            httpx.AsyncClient() as client,
            client.stream(
                "POST", g.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {g.key()}"}
            ) as response,
        ):
            async for piece in response.aiter_raw():
                received += piece
                if b"the key is " in received:
                    release.set()
        assert release.is_set()
        assert secret not in received
        assert secret[:half] not in received
        assert b"the key is [redacted:DEEPSEEK_API_KEY]" in received
        row = g.calls()[-1]
        assert (row["input_uncached"], row["output"]) == (9, 4)
        assert secret.decode() not in json.dumps(g.calls())


async def test_an_attempt_key_is_scrubbed_from_relayed_bytes_too_and_dies_with_the_attempt(tmp_path: Path) -> None:
    """An agent step attempt's key through the pass-through relay: whatever name the program asks for is served by
    the attempt's tier (a visible substitution), the row is the attempt's, an upstream echoing the key (torn across
    two reads) reaches the program scrubbed, and once the attempt is closed the same key gets 401."""
    async with running_gateway(tmp_path) as g:
        run_id = g.ledger.start_run("aider", "manual")
        expires = datetime.now(UTC) + timedelta(minutes=5)
        door = await g.gateway.open_attempt(AttemptGrant("aider", run_id, "fix", 2, "cheap", expires, max_calls=5))
        secret = door.token.encode()
        half = len(secret) // 2
        torn = sse_chunk("the key is " + "\x00")
        head, _, tail = torn.partition(b"\\u0000")
        release = threading.Event()
        usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
        g.openai.enqueue(
            RawStream(
                (sse_chunk("hello ") + head + secret[:half], secret[half:] + tail, sse_chunk(None, usage)),
                hold_before=(1, release),
            )
        )
        body = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "echo"}],
            "stream": True,
            "stream_options": {"include_usage": True},  # (else a partial event waits to be whole, and so the fake)
        }
        received = b""
        async with (
            httpx.AsyncClient() as client,
            client.stream(
                "POST", door.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {door.token}"}
            ) as response,
        ):
            assert response.headers["x-supervisor-served-model"] == "deepseek:deepseek-flash"
            assert response.headers["x-supervisor-substituted"] == "gpt-4o -> deepseek:deepseek-flash"
            async for piece in response.aiter_raw():
                received += piece
                if b"the key is " in received:
                    release.set()
        assert release.is_set()
        assert secret not in received
        assert secret[:half] not in received
        assert b"the key is [redacted:SUPERVISOR_GATEWAY_KEY" in received  # (mint_key names the newest key too)
        row = g.calls()[-1]
        assert (row["run_id"], row["step"], row["attempt"], row["tier"], row["key_id"]) == (
            run_id,
            "fix",
            2,
            "cheap",
            door.key_id,
        )
        assert (row["requested_model"], row["input_uncached"], row["output"]) == ("gpt-4o", 9, 4)
        assert door.watch.requests == 1
        assert door.token not in json.dumps(g.calls())

        await g.gateway.close_attempt(door)
        async with httpx.AsyncClient() as client:
            late = await client.post(
                door.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {door.token}"}
            )
        assert late.status_code == 401
        assert len(g.calls()) == 1  # nothing was sent for the straggler
