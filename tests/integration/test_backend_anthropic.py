"""The Anthropic backend over real loopback sockets against a fake that speaks the Messages SSE protocol.

Nothing is mocked: the backend's own httpx client talks to ``AnthropicFake``, which records every request.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from supervisor import paths
from supervisor.backends.anthropic import AnthropicBackend, messages_body
from supervisor.backends.base import Backend, Message, Request
from supervisor.backends.retry import complete_with_retry
from supervisor.catalog import ModelSpec, PriceTable, Rates, load_catalog
from supervisor.config import ProviderConfig
from supervisor.cost import cost_of
from supervisor.errors import (
    AuthError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    ContextOverflow,
    ModelNotFound,
    Overloaded,
    ProtocolError,
    RateLimited,
)
from supervisor.ledger import Ledger
from supervisor.usage import Usage
from tests.fakes.anthropic import THINKING_TEXT, AnthropicFake
from tests.fakes.base import CutStream, Hang, HttpError, Malformed, MidStreamError, NoUsage, Reply
from tests.fakes.openai import RawStream
from tests.helpers import ESTIMATED_MESSAGES, ESTIMATED_TOKENS

KEY = "sk-ant-test-0001"
CANARY = "sk-CANARY-123"
AT = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)

# Claude Opus 5.5 from protocols.md §4.5, USD per million tokens.
OPUS = ModelSpec(
    "anthropic",
    "claude-opus-5-5",
    "frontier",
    1_000_000,
    128_000,
    (
        PriceTable(
            effective_from=datetime(2026, 1, 1, tzinfo=UTC),
            rates=Rates(Decimal("4"), Decimal("0.20"), Decimal("5"), Decimal("20"), Decimal("8")),
        ),
    ),
)
# protocols.md §7: input 2,000 + 1h write 8,000 + read 140,000 + output 1,500 = $0.130.
GOLDEN_REPLY = Reply(
    text="Clause 7 says...", input_tokens=2000, cache_write_1h=8000, cache_read=140_000, output_tokens=1500
)
GOLDEN_USAGE = Usage(2000, 140_000, 0, 8000, 1500)
GOLDEN_MICROS = 130_000

MakeBackend = Callable[..., AnthropicBackend]


@pytest.fixture
def fake() -> Iterator[AnthropicFake]:
    server = AnthropicFake()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def make_backend() -> AsyncIterator[MakeBackend]:
    made: list[AnthropicBackend] = []

    def make(
        base_url: str,
        *,
        key: str | None = KEY,
        key_env: str | None = "ANTHROPIC_API_KEY",
        local: bool = False,
        provider: str = "anthropic",
        **config: Any,
    ) -> AnthropicBackend:
        provider_config = ProviderConfig(
            kind="anthropic", base_url=base_url, api_key_env=key_env, local=local, **config
        )
        environ = {key_env: key} if key_env and key is not None else {}
        backend = AnthropicBackend(provider, provider_config, environ)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


PREFIX = (
    Message("system", "You are a contracts analyst."),
    Message("system", "<memory digest>"),
    Message("user", "<context files>", cache_breakpoint=True),
)


def _request(**overrides: Any) -> Request:
    fields: dict[str, Any] = {
        "model": "claude-opus-5-5",
        "messages": (*PREFIX, Message("user", "Summarise clause 7.")),
        "max_output_tokens": 256,
        "timeout_s": 10.0,
    }
    fields.update(overrides)
    return Request(**fields)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cache_controls(value: Any) -> list[Any]:
    """Every ``cache_control`` anywhere in a JSON value."""
    if isinstance(value, dict):
        found = [value["cache_control"]] if "cache_control" in value else []
        return found + [c for v in value.values() for c in _cache_controls(v)]
    if isinstance(value, list):
        return [c for v in value for c in _cache_controls(v)]
    return []


# ----------------------------------------------------------------------------------------------------------
# Streaming and the request body


async def test_streams_text_deltas(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(Reply(text="Clause 7 covers termination.", chunks=3, output_tokens=9))
    backend = make_backend(fake.url)
    deltas: list[str] = []

    result = await backend.complete(_request(), deltas.append)

    assert isinstance(backend, Backend)
    assert result.text == "Clause 7 covers termination."
    assert len(deltas) == 3
    assert "".join(deltas) == result.text
    assert result.finish_reason == "stop"
    assert result.model_reported == "claude-opus-5-5"
    assert result.ttft_s is not None
    assert 0 <= result.ttft_s <= result.total_s
    assert result.usage.output == 9


async def test_request_body_and_headers(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    backend = make_backend(fake.url, anthropic_version="2023-06-01", headers={"anthropic-beta": "fake-beta"})

    await backend.complete(_request(stop=("END",), cache_ttl="1h"))

    [sent] = fake.model_requests()
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["anthropic-beta"] == "fake-beta"
    assert "authorization" not in sent.headers
    body = sent.json
    assert body["model"] == "claude-opus-5-5"
    assert body["max_tokens"] == 256
    assert body["stream"] is True
    assert body["stop_sequences"] == ["END"]
    assert "temperature" not in body
    assert body["system"] == [
        {"type": "text", "text": "You are a contracts analyst."},
        {"type": "text", "text": "<memory digest>"},
    ]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "<context files>",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
        },
        {"role": "user", "content": [{"type": "text", "text": "Summarise clause 7."}]},
    ]
    assert _cache_controls(body) == [{"type": "ephemeral", "ttl": "1h"}]


def test_only_the_last_breakpoint_is_marked() -> None:
    messages = (
        Message("system", "rules", cache_breakpoint=True),
        Message("user", "digest", cache_breakpoint=True),
        Message("assistant", "noted"),
        Message("user", "question"),
    )
    body = messages_body(_request(messages=messages))

    assert _cache_controls(body) == [{"type": "ephemeral", "ttl": "5m"}]
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    assert body["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "noted"}]}


def test_a_system_breakpoint_marks_the_system_block() -> None:
    body = messages_body(_request(messages=(Message("system", "stable", cache_breakpoint=True), Message("user", "q"))))

    assert body["system"] == [
        {"type": "text", "text": "stable", "cache_control": {"type": "ephemeral", "ttl": "5m"}},
    ]


def test_no_breakpoint_no_cache_control_and_no_empty_system() -> None:
    body = messages_body(_request(messages=(Message("user", "q"),)))

    assert _cache_controls(body) == []
    assert "system" not in body


async def test_max_tokens_finish_is_length(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(Reply(finish="length"), Reply(finish="refusal"))
    backend = make_backend(fake.url)

    assert (await backend.complete(_request())).finish_reason == "length"
    assert (await backend.complete(_request())).finish_reason == "refusal"


async def test_thinking_is_not_answer_text(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(Reply(text="Answer.", reasoning=40, output_tokens=50))
    deltas: list[str] = []

    result = await make_backend(fake.url).complete(_request(), deltas.append)

    assert result.text == "Answer."
    assert THINKING_TEXT not in "".join(deltas)
    assert result.usage.output == 50
    assert result.usage.reasoning == 40


async def test_a_server_that_ignores_stream_answers_with_json(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    message = fake._message("claude-opus-5-5", GOLDEN_REPLY, with_usage=True)
    fake.enqueue(Malformed(body=json.dumps(message).encode(), content_type="application/json"))

    result = await make_backend(fake.url).complete(_request())

    assert result.text == GOLDEN_REPLY.text
    assert result.usage == GOLDEN_USAGE


# ----------------------------------------------------------------------------------------------------------
# Usage and cost


async def test_usage_golden_example(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(GOLDEN_REPLY)

    result = await make_backend(fake.url).complete(_request())

    # Two cumulative message_delta events (750, then 1,500 output tokens): the last one, never the sum.
    assert result.usage == GOLDEN_USAGE
    assert result.raw_usage["output_tokens"] == 1500
    assert result.raw_usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 0,
        "ephemeral_1h_input_tokens": 8000,
    }
    cost = cost_of(result.usage, OPUS, AT)
    assert cost.priced
    assert cost.total_micros == GOLDEN_MICROS


def test_bundled_catalog_prices_the_golden_example() -> None:
    catalog = load_catalog([paths.bundled_models_dir()])
    if not catalog.files:
        pytest.skip("no bundled catalog in this checkout")
    assert cost_of(GOLDEN_USAGE, catalog.get("anthropic:claude-opus-5-5"), AT).total_micros == GOLDEN_MICROS


async def test_cache_writes_without_the_ttl_split_count_as_5m(make_backend: MakeBackend) -> None:
    server = AnthropicFake(split_cache_creation=False)
    server.start()
    try:
        server.enqueue(Reply(input_tokens=100, cache_write=3000, cache_write_1h=1000, cache_read=50, output_tokens=7))
        result = await make_backend(server.url).complete(_request())
    finally:
        server.stop()

    assert result.usage == Usage(100, 50, 4000, 0, 7)


async def test_5m_writes_are_kept_apart_from_1h_writes(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(Reply(input_tokens=100, cache_write=3000, cache_write_1h=1000, cache_read=50, output_tokens=7))

    result = await make_backend(fake.url).complete(_request())

    assert result.usage == Usage(100, 50, 3000, 1000, 7)


# LiteLLM #42663: a streamed server-tool run whose 5m/1h split froze at message_start (31,490 written) while
# cache_creation_input_tokens grew to 184,457 in the final message_delta: 152,967 written tokens outside the split.
FROZEN_SPLIT, GROWN_TOTAL = 31_490, 184_457


def _frozen_split_stream(ttl: str) -> RawStream:
    split = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    split[f"ephemeral_{ttl}_input_tokens"] = FROZEN_SPLIT
    start_usage = {
        "input_tokens": 12,
        "cache_creation_input_tokens": FROZEN_SPLIT,
        "cache_read_input_tokens": 0,
        "cache_creation": split,
        "output_tokens": 1,
    }
    final_usage = {
        "input_tokens": 12,
        "cache_creation_input_tokens": GROWN_TOTAL,
        "cache_read_input_tokens": 0,
        "output_tokens": 400,
    }
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-opus-5-5", "content": []}
    return RawStream(
        _events(
            ("message_start", {"type": "message_start", "message": {**message, "usage": start_usage}}),
            ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
            TEXT,
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": final_usage}),
            ("message_stop", {"type": "message_stop"}),
        )
    )


@pytest.mark.parametrize(
    ("ttl", "written_5m", "written_1h", "micros"),
    [
        # 12 x $4 + 184,457 x $5 + 400 x $20 per million: 48 + 922,285 + 8,000
        ("5m", GROWN_TOTAL, 0, 930_333),
        # 12 x $4 + 184,457 x $8 + 400 x $20 per million: 48 + 1,475,656 + 8,000
        ("1h", 0, GROWN_TOTAL, 1_483_704),
    ],
)
def test_cache_writes_beyond_a_frozen_split_reach_the_ledger(
    tmp_path: Path, supervisor_home: Path, ttl: str, written_5m: int, written_1h: int, micros: int
) -> None:
    with AnthropicFake() as server:
        server.enqueue(_frozen_split_stream(ttl))
        config = tmp_path / "supervisor.toml"
        config.write_text(
            f'[providers.anthropic]\nkind = "anthropic"\nbase_url = "{server.url}"\n'
            f'api_key_env = "ANTHROPIC_API_KEY"\ncache_ttl = "{ttl}"\n'
        )
        ask = ["ask", "anthropic:claude-opus-5-5", "Summarise clause 7.", "--system", "You are an analyst.", "--json"]
        done = subprocess.run(
            [sys.executable, "-m", "supervisor", "--config", str(config), *ask],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "ANTHROPIC_API_KEY": KEY},
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert _cache_controls(server.model_requests()[0].json) == [{"type": "ephemeral", "ttl": ttl}]

    answer = json.loads(done.stdout)
    assert answer["cost"]["total_micros"] == micros
    with Ledger(supervisor_home / "ledger.db") as ledger:
        (row,) = ledger.calls()
    assert row["id"] == answer["call_id"]
    assert (row["cache_write_5m"], row["cache_write_1h"]) == (written_5m, written_1h)
    assert row["cost_micros"] == micros
    assert row["cost_cache_write_5m_micros"] + row["cost_cache_write_1h_micros"] == GROWN_TOTAL * (
        5 if ttl == "5m" else 8
    )


async def test_stream_without_usage_is_unknown_not_zero(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(NoUsage(text="fine"))

    result = await make_backend(fake.url).complete(_request())

    assert result.text == "fine"
    assert result.usage == Usage()
    assert not cost_of(result.usage, OPUS, AT).priced


# ----------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("behavior", "error_type", "not_type"),
    [
        (HttpError(529, "Overloaded"), Overloaded, None),
        (HttpError(503, "Service unavailable"), Overloaded, None),
        (
            HttpError(429, "Number of request tokens has exceeded your rate limit", headers={"retry-after": "12"}),
            RateLimited,
            Overloaded,
        ),
        (HttpError(400, "prompt is too long: 1000210 tokens > 1000000 maximum"), ContextOverflow, None),
        (HttpError(413, "Request exceeds the maximum allowed number of bytes."), ContextOverflow, None),
        (HttpError(400, "max_tokens: Field required"), BadRequest, ContextOverflow),
        (HttpError(401, "invalid x-api-key"), AuthError, None),
        (HttpError(402, "Your credit balance is too low"), AuthError, None),
        (HttpError(403, "Your API key does not have permission"), AuthError, None),
        (HttpError(404, "model: claude-nope"), ModelNotFound, None),
        (HttpError(500, "Internal server error"), BackendUnavailable, RateLimited),
    ],
)
async def test_http_errors_become_typed_errors(
    fake: AnthropicFake,
    make_backend: MakeBackend,
    behavior: HttpError,
    error_type: type[BackendError],
    not_type: type[BackendError] | None,
) -> None:
    fake.enqueue(behavior)

    with pytest.raises(error_type) as caught:
        await make_backend(fake.url).complete(_request())

    error = caught.value
    if not_type is not None:
        assert not isinstance(error, not_type)
    assert error.status == behavior.status
    assert error.provider == "anthropic"
    assert error.model == "claude-opus-5-5"
    assert "anthropic" in str(error)
    assert "claude-opus-5-5" in str(error)
    assert behavior.message in str(error)
    if behavior.status == 429:
        assert isinstance(error, RateLimited)
        assert error.retry_after_s == 12.0


async def test_retry_honours_retry_after_on_overload(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(HttpError(529, headers={"retry-after": "2"}), Reply(text="back again"))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = await complete_with_retry(make_backend(fake.url), _request(), sleep=sleep)

    assert result.text == "back again"
    assert slept == [2.0]
    assert len(fake.model_requests()) == 2


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("overloaded_error", Overloaded),
        ("rate_limit_error", RateLimited),
        ("api_error", BackendUnavailable),
    ],
)
async def test_mid_stream_error_event_is_typed(
    fake: AnthropicFake, make_backend: MakeBackend, error_type: str, expected: type[BackendError]
) -> None:
    fake.mid_stream_error_type = error_type
    fake.enqueue(MidStreamError(message="Overloaded", text="partial"))

    with pytest.raises(expected) as caught:
        await make_backend(fake.url).complete(_request())

    assert caught.value.status is None
    assert "Overloaded" in str(caught.value)
    if expected is BackendUnavailable:
        assert not isinstance(caught.value, RateLimited)


async def test_cut_stream_keeps_partial_text(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(CutStream(text="Clause 7 is", after_chunks=2))
    deltas: list[str] = []

    with pytest.raises(ProtocolError) as caught:
        await make_backend(fake.url).complete(_request(), deltas.append)

    assert caught.value.partial_text == "Clause 7 is"
    assert "".join(deltas) == "Clause 7 is"


@pytest.mark.parametrize(
    "behavior",
    [
        Malformed(),
        Malformed(
            body=b'event: message_start\ndata: {"type": "message_start", "mess\n\n',
            content_type="text/event-stream",
        ),
        Malformed(body=b"<html>502 Bad Gateway</html>", content_type="text/html"),
    ],
)
async def test_malformed_responses_are_protocol_errors(
    fake: AnthropicFake, make_backend: MakeBackend, behavior: Malformed
) -> None:
    fake.enqueue(behavior)

    with pytest.raises(ProtocolError):
        await make_backend(fake.url).complete(_request())


def _events(*events: tuple[str, dict[str, Any]]) -> tuple[bytes, ...]:
    return tuple(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


START = (
    "message_start",
    {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 5, "output_tokens": 1}}},
)
TEXT = (
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "whole"}},
)
DELTA = (
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
)
FUTURE = ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta"}})


async def test_a_cut_after_the_final_usage_still_returns_the_billed_result(
    fake: AnthropicFake, make_backend: MakeBackend
) -> None:
    fake.enqueue(
        RawStream(_events(START, TEXT, FUTURE, ("brand_new_event", {"type": "brand_new_event"}), DELTA), cut=True)
    )

    result = await make_backend(fake.url).complete(_request())

    assert result.text == "whole"
    assert result.finish_reason == "stop"
    assert result.usage == Usage(5, 0, 0, 0, 3)


async def test_usage_only_from_message_start_leaves_output_unknown(
    fake: AnthropicFake, make_backend: MakeBackend
) -> None:
    # message_start's output_tokens (1) is a placeholder; without a message_delta usage the output is unknown.
    stop_without_usage = ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}})
    fake.enqueue(RawStream(_events(START, TEXT, stop_without_usage, ("message_stop", {"type": "message_stop"}))))

    result = await make_backend(fake.url).complete(_request())

    assert result.usage.input_uncached == 5
    assert result.usage.output is None
    assert not cost_of(result.usage, OPUS, AT).priced


async def test_a_stream_without_a_stop_is_cut(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(RawStream(_events(START, TEXT)))

    with pytest.raises(ProtocolError) as caught:
        await make_backend(fake.url).complete(_request())

    assert caught.value.partial_text == "whole"


async def test_pings_forever_hit_the_whole_call_deadline(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    ping = ("ping", {"type": "ping"})
    fake.enqueue(RawStream(_events(START, ping), forever=True, interval_s=0.05))

    with pytest.raises(BackendTimeout):
        await make_backend(fake.url).complete(_request(timeout_s=0.5))


async def test_connection_refused_is_unavailable(make_backend: MakeBackend) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        await make_backend(f"http://127.0.0.1:{_closed_port()}").complete(_request())

    assert not isinstance(caught.value, BackendTimeout)


async def test_hang_times_out(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    fake.enqueue(Hang())

    with pytest.raises(BackendTimeout):
        await make_backend(fake.url).complete(_request(timeout_s=0.5))


async def test_missing_key_fails_before_any_request(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        await make_backend(fake.url, key=None).complete(_request())

    assert "set ANTHROPIC_API_KEY" in str(caught.value)
    assert "claude-opus-5-5" in str(caught.value)
    assert fake.requests == []


CANARY_BEHAVIORS = [
    HttpError(401, f"invalid x-api-key {CANARY}"),
    HttpError(400, f"prompt is too long for {CANARY}"),
    HttpError(404, "not found"),
    HttpError(413, "too large"),
    HttpError(429, f"{CANARY} rate limited", headers={"retry-after": "1"}),
    HttpError(529, "Overloaded"),
    HttpError(500, CANARY),
    CutStream(),
    Malformed(),
    MidStreamError(message=f"overloaded {CANARY}"),
    Hang(),
]


@pytest.mark.parametrize("behavior", CANARY_BEHAVIORS, ids=lambda b: type(b).__name__)
async def test_the_key_never_appears_in_an_error(fake: AnthropicFake, make_backend: MakeBackend, behavior: Any) -> None:
    fake.enqueue(behavior)
    backend = make_backend(fake.url, key=CANARY)
    # Only the hang needs a short deadline; a short one for the rest can expire on a loaded machine before the
    # request reaches the fake, and then the last assertion has no request to look at.
    timeout_s = 0.5 if isinstance(behavior, Hang) else 10.0

    with pytest.raises(BackendError) as caught:
        await backend.complete(_request(timeout_s=timeout_s))

    error = caught.value
    for text in (str(error), repr(error), error.message, error.hint or "", repr(backend)):
        assert CANARY not in text
    assert fake.model_requests()[0].headers["x-api-key"] == CANARY


# ----------------------------------------------------------------------------------------------------------
# Health and token counts


async def test_health(fake: AnthropicFake, make_backend: MakeBackend) -> None:
    ok = await make_backend(fake.url, key=CANARY).health()
    missing = await make_backend(fake.url, key=None).health()
    dead = await make_backend(f"http://127.0.0.1:{_closed_port()}").health()

    assert ok.ok
    assert ok.kind == "anthropic"
    assert "ANTHROPIC_API_KEY" in ok.detail
    assert CANARY not in ok.detail
    assert fake.requests[0].path == "/v1/models"
    assert fake.requests[0].headers["anthropic-version"] == "2023-06-01"
    assert not missing.ok
    assert "ANTHROPIC_API_KEY" in missing.detail
    assert len(fake.requests) == 1
    assert not dead.ok


async def test_count_tokens_is_the_documented_estimate(make_backend: MakeBackend) -> None:
    request = Request(model="claude-opus-5-5", messages=ESTIMATED_MESSAGES, max_output_tokens=16)

    count = make_backend("http://127.0.0.1:9").count_tokens(request)

    assert (count.tokens, count.exact) == (ESTIMATED_TOKENS, False)
