"""The OpenAI-compatible backend over real loopback sockets against a fake that speaks the real SSE protocol.

Nothing is mocked: the backend's own httpx client talks to ``OpenAIFake``, which records every request.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest

from supervisor import paths
from supervisor.backends.base import Backend, Message, Request
from supervisor.backends.openai_compat import OpenAICompatBackend, chat_body, max_tokens_field
from supervisor.backends.registry import make_backend as make_registry_backend
from supervisor.backends.retry import complete_with_retry
from supervisor.catalog import ModelSpec, PeakWindow, PriceTable, Rates, load_catalog
from supervisor.config import ProviderConfig, default_providers
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
from supervisor.usage import Usage
from tests.fakes.base import CutStream, Hang, HttpError, Malformed, MidStreamError, NoUsage, Reply
from tests.fakes.openai import THINKING_TEXT, Dialect, OpenAIFake, RawStream
from tests.helpers import ESTIMATED_MESSAGES, ESTIMATED_TOKENS

KEY_ENV = "FAKE_COMPAT_API_KEY"
KEY = "sk-test-key-0001"
CANARY = "sk-CANARY-123"
AT_OFF_PEAK = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # Wednesday 20:00 in Beijing
AT_PEAK = datetime(2026, 11, 18, 2, 0, tzinfo=UTC)  # Wednesday 10:00 in Beijing


def _rates(inp: str, read: str, write: str, out: str) -> Rates:
    return Rates(Decimal(inp), Decimal(read), Decimal(write), Decimal(out))


def _spec(provider: str, model_id: str, rates: Rates, peak: PeakWindow | None = None) -> ModelSpec:
    table = PriceTable(effective_from=datetime(2026, 9, 1, tzinfo=UTC), rates=rates, peak=peak)
    return ModelSpec(provider, model_id, "cheap", 1_000_000, 128_000, (table,))


# Rates from protocols.md §5 (OpenAI), §3.6 (DeepSeek), §3.7 (Gemini), USD per million tokens.
TERRA = _spec("openai", "gpt-6.1-terra", _rates("1", "0.05", "1.25", "5"))
FLASH = _spec(
    "deepseek",
    "deepseek-flash",
    _rates("0.15", "0.003", "0.15", "0.60"),
    PeakWindow(
        utc_offset=timedelta(hours=8),
        weekdays=frozenset({1, 2, 3, 4, 5}),
        hours=((time(9), time(12)), (time(14), time(18))),
        holidays=frozenset(),
        workdays=frozenset(),
        rates=_rates("0.30", "0.006", "0.30", "1.20"),
    ),
)
GEMINI_FLASH = _spec("gemini", "gemini-3.8-flash", _rates("0.75", "0.075", "0.75", "3.75"))

# (dialect, reply, normalized usage, spec, when, micro-dollars): the worked examples of protocols.md §7.
GOLDEN: list[tuple[Dialect, Reply, Usage, str, datetime, int]] = [
    (
        "openai",
        Reply(input_tokens=976, cache_read=8000, cache_write=1024, output_tokens=500, reasoning=300),
        Usage(976, 8000, 1024, 0, 500, 300),
        "openai:gpt-6.1-terra",
        AT_OFF_PEAK,
        5156,
    ),
    (
        # The same call through a gateway that names the writes cache_creation_tokens: still 1,024 x $1.25, not
        # 1,024 more uncached tokens at $1 (4,900 micro-dollars).
        "litellm",
        Reply(input_tokens=976, cache_read=8000, cache_write=1024, output_tokens=500, reasoning=300),
        Usage(976, 8000, 1024, 0, 500, 300),
        "openai:gpt-6.1-terra",
        AT_OFF_PEAK,
        5156,
    ),
    (
        "deepseek",
        Reply(input_tokens=3000, cache_read=120_000, output_tokens=800, reasoning=200),
        Usage(3000, 120_000, 0, 0, 800, 200),
        "deepseek:deepseek-flash",
        AT_OFF_PEAK,
        1290,
    ),
    (
        "deepseek",
        Reply(input_tokens=3000, cache_read=120_000, output_tokens=800, reasoning=200),
        Usage(3000, 120_000, 0, 0, 800, 200),
        "deepseek:deepseek-flash",
        AT_PEAK,
        2580,
    ),
    (
        "gemini",
        Reply(input_tokens=5000, cache_read=15_000, output_tokens=1000, reasoning=400),
        Usage(5000, 15_000, 0, 0, 1000, 400),
        "gemini:gemini-3.8-flash",
        AT_OFF_PEAK,
        8625,
    ),
]
SPECS = {s.key: s for s in (TERRA, FLASH, GEMINI_FLASH)}

MakeBackend = Callable[..., OpenAICompatBackend]


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    server = OpenAIFake()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def make_backend() -> AsyncIterator[MakeBackend]:
    made: list[OpenAICompatBackend] = []

    def make(
        base_url: str,
        *,
        key: str | None = KEY,
        key_env: str | None = KEY_ENV,
        local: bool = False,
        provider: str = "compat",
        **config: Any,
    ) -> OpenAICompatBackend:
        provider_config = ProviderConfig(
            kind="openai_compat", base_url=base_url, api_key_env=key_env, local=local, **config
        )
        environ = {key_env: key} if key_env and key is not None else {}
        backend = OpenAICompatBackend(provider, provider_config, environ)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


def _request(**overrides: Any) -> Request:
    fields: dict[str, Any] = {
        "model": "fake-model",
        "messages": (Message("system", "You are terse."), Message("user", "Say hello.")),
        "max_output_tokens": 64,
        "timeout_s": 10.0,
    }
    fields.update(overrides)
    return Request(**fields)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------------------------------------------------
# Streaming and the request body


async def test_streams_text_deltas_and_reports_timing(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    fake.enqueue(Reply(text="Hello there, friend.", chunks=4, output_tokens=6))
    backend = make_backend(fake.url + "/v1")
    deltas: list[str] = []

    result = await backend.complete(_request(), deltas.append)

    assert isinstance(backend, Backend)
    assert result.text == "Hello there, friend."
    assert len(deltas) == 4
    assert "".join(deltas) == result.text
    assert result.finish_reason == "stop"
    assert result.model_reported == "fake-model-2026-11-01"
    assert result.ttft_s is not None
    assert 0 <= result.ttft_s <= result.total_s
    assert result.tokens_per_s is not None
    assert result.tokens_per_s > 0
    assert result.usage == Usage(10, 0, 0, 0, 6, 0)


async def test_request_body_and_headers(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    backend = make_backend(fake.url + "/v1", headers={"X-Title": "frugal-supervisor"})

    await backend.complete(_request(temperature=0.2, stop=("END",), seed=7, json_schema=schema))

    [sent] = fake.model_requests()
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["x-title"] == "frugal-supervisor"
    assert fake.include_usage == [True]
    body = sent.json
    assert body["model"] == "fake-model"
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello."},
    ]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64
    assert "max_completion_tokens" not in body
    assert body["temperature"] == 0.2
    assert body["stop"] == ["END"]
    assert body["seed"] == 7
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema},
    }


async def test_optional_fields_are_left_out(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    await make_backend(fake.url).complete(_request())

    body = fake.model_requests()[0].json
    assert fake.model_requests()[0].path == "/chat/completions"  # DeepSeek's bare host has no /v1
    assert not {"stop", "seed", "response_format"} & set(body)


def test_max_tokens_field_depends_on_the_host() -> None:
    assert max_tokens_field("https://api.openai.com/v1") == "max_completion_tokens"
    assert max_tokens_field("https://api.deepseek.com") == "max_tokens"
    assert max_tokens_field("https://generativelanguage.googleapis.com/v1beta/openai") == "max_tokens"
    assert max_tokens_field("http://127.0.0.1:1234/v1") == "max_tokens"
    body = chat_body(_request(max_output_tokens=99), max_tokens_key=max_tokens_field("https://api.openai.com/v1"))
    assert body["max_completion_tokens"] == 99
    assert "max_tokens" not in body


async def test_no_authorization_header_without_a_key(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    await make_backend(fake.url, key_env=None, local=True).complete(_request())
    # A local server whose key variable is configured but unset is called without one, too.
    await make_backend(fake.url, key=None, local=True).complete(_request())

    assert [r.headers.get("authorization") for r in fake.model_requests()] == [None, None]


async def test_length_and_other_finish_reasons(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    fake.enqueue(Reply(finish="length"), Reply(finish="content_filter"))
    backend = make_backend(fake.url)

    assert (await backend.complete(_request())).finish_reason == "length"
    assert (await backend.complete(_request())).finish_reason == "content_filter"


async def test_line_separators_inside_text_survive_streaming(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    # The fake writes raw UTF-8 (like DeepSeek); U+2028/U+0085 must not split an SSE line.
    text = "one\u2028two\u0085three\u2029four — 完成"
    fake.enqueue(Reply(text=text, chunks=2))

    result = await make_backend(fake.url).complete(_request())

    assert result.text == text


async def test_a_server_that_ignores_stream_answers_with_json(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    completion = fake._completion(Reply(text="whole answer", input_tokens=7, output_tokens=2))
    fake.enqueue(Malformed(body=json.dumps(completion).encode(), content_type="application/json"))
    deltas: list[str] = []

    result = await make_backend(fake.url).complete(_request(), deltas.append)

    assert result.text == "whole answer"
    assert deltas == ["whole answer"]
    assert result.usage == Usage(7, 0, 0, 0, 2, 0)


def _sse(*payloads: object) -> tuple[bytes, ...]:
    return tuple(b"data: " + (p if isinstance(p, bytes) else json.dumps(p).encode()) + b"\n\n" for p in payloads)


TEXT_CHUNK = {"choices": [{"index": 0, "delta": {"content": "whole"}, "finish_reason": None}], "usage": None}
FINISH_CHUNK = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None}
USAGE_CHUNK = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


async def test_a_cut_after_the_usage_record_still_returns_the_billed_result(
    fake: OpenAIFake, make_backend: MakeBackend
) -> None:
    # The call happened and is billed; raising would make a retry pay for it twice.
    fake.enqueue(RawStream(_sse(TEXT_CHUNK, FINISH_CHUNK, USAGE_CHUNK), cut=True))

    result = await make_backend(fake.url).complete(_request())

    assert result.text == "whole"
    assert result.usage == Usage(5, 0, 0, 0, 1)


async def test_a_finished_stream_without_done_is_accepted(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    # Some local servers end the body after the finish chunk and skip [DONE]; the last line has no blank line.
    fake.enqueue(RawStream((*_sse(TEXT_CHUNK), b"data: " + json.dumps(FINISH_CHUNK).encode())))

    result = await make_backend(fake.url).complete(_request())

    assert result.text == "whole"
    assert result.finish_reason == "stop"
    assert result.usage == Usage()


async def test_a_stream_that_ends_before_finishing_is_cut(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    fake.enqueue(RawStream(_sse(TEXT_CHUNK)))

    with pytest.raises(ProtocolError) as caught:
        await make_backend(fake.url).complete(_request())

    assert caught.value.partial_text == "whole"


async def test_keepalives_forever_hit_the_whole_call_deadline(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    # Bytes keep arriving, so httpx's per-read timeout never fires; the call's own deadline must.
    fake.enqueue(RawStream((*_sse(TEXT_CHUNK), b": keep-alive\n\n"), forever=True, interval_s=0.05))

    with pytest.raises(BackendTimeout) as caught:
        await make_backend(fake.url).complete(_request(timeout_s=0.5))

    assert "5 characters" in str(caught.value)


# ----------------------------------------------------------------------------------------------------------
# Usage normalization and cost


@pytest.mark.parametrize(("dialect", "reply", "expected", "key", "at", "micros"), GOLDEN)
async def test_usage_golden_examples(
    make_backend: MakeBackend,
    dialect: Dialect,
    reply: Reply,
    expected: Usage,
    key: str,
    at: datetime,
    micros: int,
) -> None:
    server = OpenAIFake(dialect=dialect)
    server.start()
    try:
        server.enqueue(reply)
        result = await make_backend(server.url).complete(_request())
    finally:
        server.stop()

    assert result.usage == expected
    assert result.raw_usage == server.usage(reply)
    cost = cost_of(result.usage, SPECS[key], at)
    assert cost.priced
    assert cost.total_micros == micros


@pytest.mark.parametrize(("dialect", "reply", "expected", "key", "at", "micros"), GOLDEN)
def test_bundled_catalog_prices_the_golden_examples(
    dialect: Dialect, reply: Reply, expected: Usage, key: str, at: datetime, micros: int
) -> None:
    catalog = load_catalog([paths.bundled_models_dir()])
    if not catalog.files:
        pytest.skip("no bundled catalog in this checkout")
    assert cost_of(expected, catalog.get(key), at).total_micros == micros


async def test_deepseek_reasoning_content_is_not_answer_text(make_backend: MakeBackend) -> None:
    server = OpenAIFake(dialect="deepseek")
    server.start()
    try:
        server.enqueue(Reply(text="The answer.", reasoning=12, output_tokens=20))
        deltas: list[str] = []
        result = await make_backend(server.url).complete(_request(), deltas.append)
    finally:
        server.stop()

    assert result.text == "The answer."
    assert THINKING_TEXT not in "".join(deltas)
    assert result.usage.output == 20
    assert result.usage.reasoning == 12


async def test_stream_without_usage_is_unknown_not_zero(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    fake.enqueue(NoUsage(text="fine"))

    result = await make_backend(fake.url).complete(_request())

    assert result.text == "fine"
    assert result.usage == Usage()
    assert result.raw_usage == {}
    assert not cost_of(result.usage, TERRA, AT_OFF_PEAK).priced


# ----------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("behavior", "error_type", "not_type"),
    [
        (HttpError(429, "Rate limit reached", headers={"Retry-After": "7"}), RateLimited, Overloaded),
        (HttpError(400, code="context_length_exceeded"), ContextOverflow, None),
        (HttpError(400, "Invalid value for 'temperature'"), BadRequest, ContextOverflow),
        (HttpError(422, "Invalid Parameters"), BadRequest, ContextOverflow),
        (HttpError(401, "Incorrect API key provided"), AuthError, None),
        (HttpError(402, "Insufficient Balance"), AuthError, None),
        (HttpError(403, "Project does not have access"), AuthError, None),
        (HttpError(404, "The model `nope` does not exist", code="model_not_found"), ModelNotFound, None),
        (HttpError(503, "Server Overloaded"), Overloaded, None),
        (HttpError(500, "Server Error"), BackendUnavailable, RateLimited),
    ],
)
async def test_http_errors_become_typed_errors(
    fake: OpenAIFake,
    make_backend: MakeBackend,
    behavior: HttpError,
    error_type: type[BackendError],
    not_type: type[BackendError] | None,
) -> None:
    fake.enqueue(behavior)

    with pytest.raises(error_type) as caught:
        await make_backend(fake.url, provider="deepseek").complete(_request())

    error = caught.value
    if not_type is not None:
        assert not isinstance(error, not_type)
    assert error.status == behavior.status
    assert error.provider == "deepseek"
    assert error.model == "fake-model"
    assert "deepseek" in str(error)
    assert "fake-model" in str(error)
    if isinstance(error, RateLimited) and behavior.status == 429:
        assert error.retry_after_s == 7.0


async def test_retry_after_ms_wins_over_seconds(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    fake.enqueue(HttpError(429, headers={"retry-after-ms": "1500", "Retry-After": "9"}))

    with pytest.raises(RateLimited) as caught:
        await make_backend(fake.url).complete(_request())

    assert caught.value.retry_after_s == 1.5


async def test_insufficient_quota_is_not_retryable(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    fake.enqueue(HttpError(429, code="insufficient_quota"))

    with pytest.raises(AuthError) as caught:
        await make_backend(fake.url).complete(_request())

    assert not caught.value.retryable
    assert caught.value.status == 429
    assert "quota" in str(caught.value)


async def test_retry_honours_retry_after(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    fake.enqueue(HttpError(429, headers={"Retry-After": "3"}), Reply(text="second time lucky"))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = await complete_with_retry(make_backend(fake.url), _request(), sleep=sleep)

    assert result.text == "second time lucky"
    assert slept == [3.0]
    assert len(fake.model_requests()) == 2


async def test_connection_refused_is_unavailable(make_backend: MakeBackend) -> None:
    backend = make_backend(f"http://127.0.0.1:{_closed_port()}/v1")

    with pytest.raises(BackendUnavailable) as caught:
        await backend.complete(_request())

    assert not isinstance(caught.value, BackendTimeout)
    assert "cannot connect" in str(caught.value)


async def test_hang_times_out(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    fake.enqueue(Hang())

    with pytest.raises(BackendTimeout) as caught:
        await make_backend(fake.url).complete(_request(timeout_s=0.5))

    assert "0.5 s" in str(caught.value)


async def test_cut_stream_keeps_partial_text(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    fake.enqueue(CutStream(text="half an ans", after_chunks=2))
    deltas: list[str] = []

    with pytest.raises(ProtocolError) as caught:
        await make_backend(fake.url).complete(_request(), deltas.append)

    assert caught.value.partial_text == "half an ans"
    assert "".join(deltas) == "half an ans"
    assert "unpriced" in str(caught.value)


@pytest.mark.parametrize(
    "behavior",
    [
        Malformed(),
        Malformed(body=b'data: {"choices": [\n\n', content_type="text/event-stream"),
        Malformed(body=b"<html><body>Bad gateway</body></html>", content_type="text/html"),
        Malformed(body=b"", content_type="text/event-stream"),
    ],
)
async def test_malformed_responses_are_protocol_errors(
    fake: OpenAIFake, make_backend: MakeBackend, behavior: Malformed
) -> None:
    fake.enqueue(behavior)

    with pytest.raises(ProtocolError):
        await make_backend(fake.url).complete(_request())


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("server_error", BackendUnavailable),
        ("rate_limit_exceeded", RateLimited),
        ("invalid_request_error", BadRequest),
    ],
)
async def test_mid_stream_error_event_is_typed(
    fake: OpenAIFake, make_backend: MakeBackend, error_type: str, expected: type[BackendError]
) -> None:
    fake.mid_stream_error_type = error_type
    fake.enqueue(MidStreamError(message="the model crashed", text="partial"))

    with pytest.raises(expected) as caught:
        await make_backend(fake.url).complete(_request())

    assert "the model crashed" in str(caught.value)
    assert not isinstance(caught.value, ProtocolError)


async def test_missing_key_fails_before_any_request(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    backend = make_backend(fake.url, key_env="DEEPSEEK_API_KEY", key=None, provider="deepseek")

    with pytest.raises(BackendUnavailable) as caught:
        await backend.complete(_request(model="deepseek-flash"))

    assert "set DEEPSEEK_API_KEY" in str(caught.value)
    assert "deepseek-flash" in str(caught.value)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("provider", "variable"),
    [
        ("openai", "OPENAI_API_KEY"),
        ("deepseek", "DEEPSEEK_API_KEY"),
        ("gemini", "GEMINI_API_KEY"),
        ("anthropic", "ANTHROPIC_API_KEY"),
    ],
)
async def test_default_providers_name_their_missing_key(provider: str, variable: str) -> None:
    backend = make_registry_backend(provider, default_providers()[provider], {})
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await backend.complete(_request())
    finally:
        await backend.aclose()

    assert f"set {variable}" in str(caught.value)


CANARY_BEHAVIORS = [
    HttpError(401, f"Incorrect API key provided: {CANARY}."),
    HttpError(400, f"bad request from key {CANARY}"),
    HttpError(400, code="context_length_exceeded"),
    HttpError(404, "no such model"),
    HttpError(429, f"slow down {CANARY}", headers={"Retry-After": "1"}),
    HttpError(429, code="insufficient_quota"),
    HttpError(503, "overloaded"),
    HttpError(500, f"<{CANARY}>"),
    CutStream(),
    Malformed(),
    MidStreamError(message=f"failed for {CANARY}"),
    Hang(),
]


@pytest.mark.parametrize("behavior", CANARY_BEHAVIORS, ids=lambda b: type(b).__name__)
async def test_the_key_never_appears_in_an_error(fake: OpenAIFake, make_backend: MakeBackend, behavior: Any) -> None:
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
    assert fake.model_requests()[0].headers["authorization"] == f"Bearer {CANARY}"


async def test_the_key_never_appears_when_unreachable(make_backend: MakeBackend) -> None:
    backend = make_backend(f"http://127.0.0.1:{_closed_port()}", key=CANARY)

    with pytest.raises(BackendUnavailable) as caught:
        await backend.complete(_request())

    assert CANARY not in str(caught.value)
    assert CANARY not in repr(caught.value)
    health = await backend.health()
    assert CANARY not in health.detail


# ----------------------------------------------------------------------------------------------------------
# Health and token counts


async def test_health_lists_a_local_servers_models(make_backend: MakeBackend) -> None:
    server = OpenAIFake(models=("qwen3-4b", "llama-3.2-1b"))
    server.start()
    try:
        health = await make_backend(server.url + "/v1", key_env=None, local=True, provider="lmstudio").health()
    finally:
        server.stop()

    assert health.ok
    assert health.kind == "openai_compat"
    assert [m.name for m in health.models] == ["qwen3-4b", "llama-3.2-1b"]
    assert server.requests[0].path == "/v1/models"


async def test_health_reports_the_key_by_name(fake: OpenAIFake, make_backend: MakeBackend) -> None:
    present = await make_backend(fake.url, key_env="DEEPSEEK_API_KEY", key=CANARY).health()
    missing = await make_backend(fake.url, key_env="DEEPSEEK_API_KEY", key=None).health()

    assert present.ok
    assert "DEEPSEEK_API_KEY" in present.detail
    assert CANARY not in present.detail
    assert present.models == ()  # a remote provider's list is not "what is loaded here"
    assert not missing.ok
    assert "DEEPSEEK_API_KEY" in missing.detail
    assert len(fake.requests) == 1  # the missing key was reported without a request


async def test_health_of_a_dead_server_does_not_raise(make_backend: MakeBackend) -> None:
    health = await make_backend(f"http://127.0.0.1:{_closed_port()}").health()

    assert not health.ok
    assert "cannot reach" in health.detail


async def test_count_tokens_is_the_documented_estimate(make_backend: MakeBackend) -> None:
    request = Request(model="fake-model", messages=ESTIMATED_MESSAGES, max_output_tokens=16)

    count = make_backend("http://127.0.0.1:9").count_tokens(request)

    assert (count.tokens, count.exact) == (ESTIMATED_TOKENS, False)
