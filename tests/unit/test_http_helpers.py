"""The shared httpx helpers: SSE decoding, Retry-After, and the mapping of failures to typed errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Literal

import httpx
import pytest

from supervisor.backends import _http
from supervisor.backends._http import (
    CallSite,
    LineSplitter,
    ProviderError,
    SSEEvent,
    aiter_lines,
    aiter_sse,
    classify,
    error_from_response,
    error_from_transport,
    parse_retry_after,
    provider_error_from_body,
)
from supervisor.backends.anthropic import normalize_usage as anthropic_usage
from supervisor.backends.openai_compat import normalize_usage as openai_usage
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

SECRET = "sk-CANARY-123"
SITE = CallSite("deepseek", "deepseek-flash", "https://api.deepseek.com/chat/completions", "DEEPSEEK_API_KEY", SECRET)
NOW = datetime(2026, 11, 18, 12, 0, 0, tzinfo=UTC)


def iter_sse(lines: list[str]) -> list[SSEEvent]:
    """The backends' ``aiter_sse`` over a list of lines."""

    async def source() -> AsyncIterator[str]:
        for line in lines:
            yield line

    async def collect() -> list[SSEEvent]:
        return [event async for event in aiter_sse(source())]

    return asyncio.run(collect())


# ----------------------------------------------------------------------------------------------------------
# SSE


def test_sse_data_events_and_done() -> None:
    lines = ['data: {"a": 1}', "", "data: [DONE]", ""]

    events = list(iter_sse(lines))

    assert events == [SSEEvent(None, '{"a": 1}'), SSEEvent(None, "[DONE]")]
    assert events[1].is_done
    assert not events[0].is_done


def test_sse_named_events_comments_and_unknown_fields() -> None:
    lines = [
        ": keep-alive",
        "event: message_start",
        "id: 7",
        "retry: 1000",
        'data: {"type": "message_start"}',
        "",
        ":OPENROUTER PROCESSING",
        "",
        "event: ping",
        'data: {"type": "ping"}',
        "",
    ]

    assert list(iter_sse(lines)) == [
        SSEEvent("message_start", '{"type": "message_start"}'),
        SSEEvent("ping", '{"type": "ping"}'),
    ]


def test_sse_multi_line_data_is_joined_with_newlines() -> None:
    assert list(iter_sse(["data: first", "data:second", "data:  third", ""])) == [
        SSEEvent(None, "first\nsecond\n third")  # one optional space after the colon is stripped, no more
    ]


def test_sse_event_name_does_not_leak_into_the_next_event() -> None:
    events = list(iter_sse(["event: error", "data: x", "", "data: y", ""]))

    assert events == [SSEEvent("error", "x"), SSEEvent(None, "y")]


def test_sse_pending_event_is_flushed_at_the_end_and_crlf_is_tolerated() -> None:
    assert list(iter_sse(["data: a\r", "\r", "data: [DONE]"])) == [
        SSEEvent(None, "a"),
        SSEEvent(None, "[DONE]"),
    ]


def test_sse_blank_lines_alone_make_no_events() -> None:
    assert list(iter_sse(["", "", ": comment", ""])) == []


def test_line_splitter_only_splits_at_cr_and_lf() -> None:
    splitter = LineSplitter()

    lines = splitter.feed("a\u2028b\u0085c\r") + splitter.feed("\nd\re\n") + splitter.feed("tail")

    assert lines == ["a\u2028b\u0085c", "d", "e"]
    assert splitter.flush() == ["tail"]


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_aiter_lines_decodes_utf8_split_across_chunks() -> None:
    snowman = "☃".encode()
    parts = (b"\xef\xbb\xbfdata: x", snowman[:1], snowman[1:] + b"\r", b"\ndata: y\n\n")

    lines = [line async for line in aiter_lines(_chunks(*parts))]

    assert lines == ["data: x☃", "data: y", ""]


async def test_aiter_sse_over_bytes() -> None:
    parts = (b'event: message_delta\ndata: {"usage": ', b'{"output_tokens": 5}}\n\n', b"data: [DONE]\n\n")

    events = [event async for event in aiter_sse(aiter_lines(_chunks(*parts)))]

    assert events == [SSEEvent("message_delta", '{"usage": {"output_tokens": 5}}'), SSEEvent(None, "[DONE]")]


# ----------------------------------------------------------------------------------------------------------
# Retry-After


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"Retry-After": "Wed, 18 Nov 2026 12:00:30 GMT"}, 30.0),
        ({"Retry-After": "Wed, 18 Nov 2026 11:00:00 GMT"}, 0.0),
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "whenever"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_parse_retry_after_reads_httpx_headers() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After-Ms": "1200"})) == 1.2


# ----------------------------------------------------------------------------------------------------------
# Error bodies and classification


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {
                "error": {
                    "message": "m",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "context_length_exceeded",
                }
            },
            ProviderError("invalid_request_error", "context_length_exceeded", "m"),
        ),
        (
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
                "request_id": "r",
            },
            ProviderError("overloaded_error", "", "Overloaded"),
        ),
        (
            [{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}],
            ProviderError("INVALID_ARGUMENT", "400", "bad"),
        ),
        ({"error": "model not loaded"}, ProviderError("", "", "model not loaded")),
        ({"detail": "Not Found"}, ProviderError("", "", "Not Found")),
        ({"message": "nope"}, ProviderError("", "", "nope")),
    ],
)
def test_provider_error_shapes(body: object, expected: ProviderError) -> None:
    assert provider_error_from_body(json.dumps(body).encode()) == expected


def test_provider_error_from_non_json_bodies() -> None:
    assert provider_error_from_body(b"upstream connect error") == ProviderError(message="upstream connect error")
    assert provider_error_from_body(b"<html><h1>502 Bad Gateway</h1></html>") == ProviderError()


def _openai_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            _openai_body("This model's maximum context length is 4097 tokens.", code="context_length_exceeded"),
            ContextOverflow,
        ),
        (400, _openai_body("prompt is too long: 210000 tokens > 200000 maximum"), ContextOverflow),
        (
            400,
            _openai_body("the request exceeds the available context size", "exceed_context_size_error"),
            ContextOverflow,
        ),
        (
            400,
            _openai_body("The input token count (1200000) exceeds the maximum number of tokens allowed"),
            ContextOverflow,
        ),
        (400, _openai_body("Invalid value for 'stop'"), BadRequest),
        (422, _openai_body("Invalid Parameters"), BadRequest),
        (
            413,
            b'{"type":"error","error":{"type":"request_too_large","message":"Request too large"}}',
            ContextOverflow,
        ),
        (401, _openai_body("Incorrect API key provided"), AuthError),
        (402, _openai_body("Insufficient Balance"), AuthError),
        (403, _openai_body("denied", "permission_error"), AuthError),
        (404, _openai_body("The model `x` does not exist", code="model_not_found"), ModelNotFound),
        (408, b"", BackendUnavailable),
        (409, b"", BackendUnavailable),
        (418, b"", BadRequest),
        (429, _openai_body("Rate limit reached", "requests", "rate_limit_exceeded"), RateLimited),
        (
            429,
            _openai_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
            AuthError,
        ),
        (500, _openai_body("Server Error", "server_error"), BackendUnavailable),
        (502, b"<html>Bad Gateway</html>", BackendUnavailable),
        (503, _openai_body("Server Overloaded", "server_error"), Overloaded),
        (
            504,
            b'{"type":"error","error":{"type":"timeout_error","message":"Request timed out"}}',
            BackendUnavailable,
        ),
        (529, b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', Overloaded),
    ],
)
def test_status_and_body_map_to_typed_errors(status: int, body: bytes, expected: type[BackendError]) -> None:
    error = error_from_response(SITE, status, {"retry-after": "4"}, body, now=NOW)

    assert type(error) is expected
    assert error.status == status
    assert error.provider == "deepseek"
    assert error.model == "deepseek-flash"
    assert str(error).startswith("deepseek model 'deepseek-flash': ")
    assert f"HTTP {status}" in str(error)
    if isinstance(error, RateLimited):
        assert error.retry_after_s == 4.0


def test_context_overflow_needs_a_client_error_status() -> None:
    body = _openai_body("context length exceeded somewhere upstream", "server_error")

    assert type(error_from_response(SITE, 500, {}, body)) is BackendUnavailable


def test_insufficient_quota_is_final_and_says_how_to_fix() -> None:
    error = error_from_response(
        SITE, 429, {"retry-after": "1"}, _openai_body("quota", "insufficient_quota", "insufficient_quota")
    )

    assert isinstance(error, AuthError)
    assert not error.retryable
    assert error.hint is not None
    assert "retrying will not help" in error.hint


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (("overloaded_error", ""), Overloaded),
        (("rate_limit_error", ""), RateLimited),
        (("", "rate_limit_exceeded"), RateLimited),
        (("authentication_error", ""), AuthError),
        (("not_found_error", ""), ModelNotFound),
        (("invalid_request_error", "context_length_exceeded"), ContextOverflow),
        (("invalid_request_error", ""), BadRequest),
        (("api_error", ""), BackendUnavailable),
        (("", ""), BackendUnavailable),
    ],
)
def test_in_band_errors_map_by_type(names: tuple[str, str], expected: type[BackendError]) -> None:
    error = classify(SITE, ProviderError(names[0], names[1], "went wrong"))

    assert type(error) is expected
    assert error.status is None
    assert "went wrong" in str(error)


def test_messages_redact_the_key_and_stay_short() -> None:
    body = _openai_body(f"Incorrect API key provided: {SECRET}. " + "x" * 1000)

    error = error_from_response(SITE, 401, {}, body)

    assert SECRET not in str(error)
    assert _http.REDACTED in str(error)
    assert "DEEPSEEK_API_KEY" in (error.hint or "")
    assert len(error.message) < 450
    assert SECRET not in repr(SITE)


# ----------------------------------------------------------------------------------------------------------
# Transport errors


@pytest.mark.parametrize(
    ("exc", "started", "expected"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), False, BackendUnavailable),
        (httpx.ConnectTimeout("timed out"), False, BackendUnavailable),
        (httpx.PoolTimeout("pool"), False, BackendUnavailable),
        (httpx.ReadTimeout("timed out"), True, BackendTimeout),
        (httpx.WriteTimeout("timed out"), False, BackendTimeout),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            False,
            BackendUnavailable,
        ),
        (httpx.RemoteProtocolError("incomplete chunked read"), True, ProtocolError),
        (httpx.ReadError("connection reset"), True, ProtocolError),
        (
            httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."),
            False,
            BackendUnavailable,
        ),
        (httpx.InvalidURL("Invalid port"), False, BackendUnavailable),
    ],
)
def test_transport_errors(exc: httpx.HTTPError, started: bool, expected: type[BackendError]) -> None:
    error = error_from_transport(SITE, exc, response_started=started, partial_text="so far", timeout_s=30)

    assert type(error) is expected
    assert error.provider == "deepseek"
    assert "deepseek-flash" in str(error)
    if isinstance(error, ProtocolError):
        assert error.partial_text == "so far"
    if isinstance(error, BackendTimeout):
        assert "30 s" in str(error)


# ----------------------------------------------------------------------------------------------------------
# Usage normalization (the pure functions; the integration tests run them over real streams)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # protocols.md §7, OpenAI: writes are a subset of prompt_tokens.
        (
            {
                "prompt_tokens": 10_000,
                "completion_tokens": 500,
                "total_tokens": 10_500,
                "prompt_tokens_details": {"cached_tokens": 8000, "cache_write_tokens": 1024},
                "completion_tokens_details": {"reasoning_tokens": 300},
            },
            Usage(976, 8000, 1024, 0, 500, 300),
        ),
        # A local server: no details at all; the whole prompt is uncached, reasoning unknown.
        ({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}, Usage(12, 0, 0, 0, 3, None)),
        # DeepSeek's real V4 response (protocols.md §3.6).
        (
            {
                "prompt_tokens": 12,
                "completion_tokens": 45,
                "total_tokens": 57,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 35},
                "prompt_cache_hit_tokens": 0,
                "prompt_cache_miss_tokens": 12,
            },
            Usage(12, 0, 0, 0, 45, 35),
        ),
        # Gemini: thoughts missing from completion_tokens but inside total_tokens.
        (
            {
                "prompt_tokens": 20_000,
                "completion_tokens": 600,
                "total_tokens": 21_000,
                "prompt_tokens_details": {"cached_tokens": 15_000},
            },
            Usage(5000, 15_000, 0, 0, 1000, 400),
        ),
        # Writes reported outside prompt_tokens: never a negative component.
        (
            {
                "prompt_tokens": 100,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 90},
            },
            Usage(40, 60, 90, 0, 1, None),
        ),
        # A gateway that names the writes cache_creation_tokens (LiteLLM's proxy): the same 1,024 writes.
        (
            {
                "prompt_tokens": 10_000,
                "completion_tokens": 500,
                "prompt_tokens_details": {"cached_tokens": 8000, "cache_creation_tokens": 1024},
            },
            Usage(976, 8000, 1024, 0, 500, None),
        ),
        # Both names for the same writes: counted once, and the larger, never the sum.
        (
            {
                "prompt_tokens": 10_000,
                "completion_tokens": 500,
                "prompt_tokens_details": {
                    "cached_tokens": 8000,
                    "cache_write_tokens": 0,
                    "cache_creation_tokens": 1024,
                },
            },
            Usage(976, 8000, 1024, 0, 500, None),
        ),
        # Only the output side reported: the prompt is unknown, so the call is unpriced.
        ({"completion_tokens": 9}, Usage(output=9)),
    ],
)
def test_openai_usage_normalization(raw: dict[str, object], expected: Usage) -> None:
    assert openai_usage(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {
                "input_tokens": 2000,
                "cache_creation_input_tokens": 8000,
                "cache_read_input_tokens": 140_000,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 8000},
                "output_tokens": 1500,
            },
            Usage(2000, 140_000, 0, 8000, 1500),
        ),
        (
            {
                "input_tokens": 10,
                "cache_creation_input_tokens": 300,
                "cache_read_input_tokens": None,
                "output_tokens": 4,
            },
            Usage(10, 0, 300, 0, 4),
        ),
        (
            {"input_tokens": 10, "output_tokens": 40, "output_tokens_details": {"thinking_tokens": 30}},
            Usage(10, 0, 0, 0, 40, 30),
        ),
        ({"output_tokens": 3}, Usage(output=3)),
    ],
)
def test_anthropic_usage_normalization(raw: dict[str, object], expected: Usage) -> None:
    assert anthropic_usage(raw) == expected


FROZEN = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 184_457,
    "cache_creation": {"ephemeral_5m_input_tokens": 31_490, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 400,
}


@pytest.mark.parametrize(
    ("raw", "ttl", "expected"),
    [
        # The split froze below the total: the remainder is billed at the request's TTL, never dropped.
        (FROZEN, "5m", Usage(12, 0, 184_457, 0, 400)),
        (FROZEN, "1h", Usage(12, 0, 31_490, 152_967, 400)),
        # No split at all: the whole total goes at the request's TTL.
        ({"input_tokens": 1, "cache_creation_input_tokens": 900, "output_tokens": 2}, "1h", Usage(1, 0, 0, 900, 2)),
        # A split that covers the total is taken as is, whatever the TTL.
        (
            {
                "input_tokens": 1,
                "cache_creation_input_tokens": 900,
                "cache_creation": {"ephemeral_5m_input_tokens": 600, "ephemeral_1h_input_tokens": 300},
                "output_tokens": 2,
            },
            "1h",
            Usage(1, 0, 600, 300, 2),
        ),
    ],
)
def test_anthropic_cache_writes_beyond_the_split_are_billed(
    raw: dict[str, object], ttl: Literal["5m", "1h"], expected: Usage
) -> None:
    assert anthropic_usage(raw, ttl) == expected
