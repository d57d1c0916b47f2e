"""Shared plumbing for the two httpx backends: SSE decoding, Retry-After, and error translation.

The OpenAI-compatible and Anthropic protocols both stream Server-Sent Events and both report failures as a
JSON error body on an HTTP status. Translating those here, once, means both backends fail the same way for
the same reason, and the router only ever sees the ``BackendError`` subclasses in ``supervisor.errors``.

Every message built here names the provider and the model and never contains the API key: a provider that
echoes the key back in its error text has it replaced by ``[redacted]`` before we keep a copy.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import math
import re
import time
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Protocol

import httpx

from supervisor.backends.base import (
    Health,
    LocalModel,
    Request,
    TokenCount,
    estimate_request_tokens,
    tokens_per_second,
)
from supervisor.config import ProviderConfig
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

HEALTH_TIMEOUT_S: Final = 2.0
_LINE_END: Final = re.compile(r"\r\n|\r|\n")
MAX_PROVIDER_MESSAGE_CHARS: Final = 300
REDACTED: Final = "[redacted]"

# How providers word "your prompt does not fit": OpenAI/vLLM/DeepSeek ("maximum context length"), Anthropic
# ("prompt is too long"), Gemini ("exceeds the maximum number of tokens"), llama-server ("context size").
_CONTEXT_OVERFLOW_WORDS: Final = re.compile(
    r"maximum context length|context window|context length|context size|prompt is too long|"
    r"too many tokens|exceeds the maximum number of tokens|input token count",
    re.IGNORECASE,
)
_CONTEXT_OVERFLOW_CODES: Final = frozenset(
    {"context_length_exceeded", "exceed_context_size_error", "request_too_large", "string_above_max_length"}
)
_AUTH_TYPES: Final = frozenset(
    {"authentication_error", "permission_error", "billing_error", "insufficient_quota", "invalid_api_key"}
)


# ----------------------------------------------------------------------------------------------------------
# Server-Sent Events


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One Server-Sent Event: its ``event:`` name (``None`` if unnamed) and its data lines, newline-joined."""

    event: str | None
    data: str

    @property
    def is_done(self) -> bool:
        """OpenAI's end-of-stream sentinel ``data: [DONE]``, which is not JSON."""
        return self.data.strip() == "[DONE]"


class SSEDecoder:
    """Turns lines into events following the WHATWG event-stream rules; a blank line ends an event."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> SSEEvent | None:
        """Take one line (line ending optional); return the event it completes, if any."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: DeepSeek's ": keep-alive", OpenRouter's ": OPENROUTER PROCESSING"
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value or None
        # "id" and "retry" only matter to a browser reconnecting; the spec says to ignore unknown fields.
        return None

    def flush(self) -> SSEEvent | None:
        """The event still pending when the stream ends: some servers omit the last blank line."""
        return self._dispatch()

    def _dispatch(self) -> SSEEvent | None:
        event = SSEEvent(self._event, "\n".join(self._data)) if self._data else None
        self._event = None
        self._data = []
        return event


class LineSplitter:
    """Splits decoded text into lines at CRLF, LF or CR only, as the event-stream format defines them.

    ``httpx.Response.aiter_lines`` uses ``str.splitlines``, which also breaks at U+2028, U+2029 and U+0085;
    JSON may carry those unescaped inside a string, so a model that emits one would tear a chunk in two.
    """

    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, text: str) -> list[str]:
        buffer = self._buffer + text
        # A CR at the very end may be the first half of a CRLF split across reads: decide when more arrives.
        held = ""
        if buffer.endswith("\r"):
            buffer, held = buffer[:-1], "\r"
        *lines, rest = _LINE_END.split(buffer)
        self._buffer = rest + held
        return lines

    def flush(self) -> list[str]:
        """The last line, when the stream ended without a line end after it."""
        *lines, rest = _LINE_END.split(self._buffer)
        self._buffer = ""
        return [*lines, rest] if rest else lines


async def aiter_lines(chunks: AsyncIterable[bytes]) -> AsyncGenerator[str, None]:
    """Lines of a UTF-8 event stream (the format is always UTF-8, whatever the headers say)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    splitter = LineSplitter()
    first = True
    async for chunk in chunks:
        text = decoder.decode(chunk)
        if first and text:
            text = text.removeprefix("\ufeff")
            first = False
        for line in splitter.feed(text):
            yield line
    for line in splitter.feed(decoder.decode(b"", final=True)) + splitter.flush():
        yield line


async def aiter_sse(lines: AsyncIterable[str]) -> AsyncGenerator[SSEEvent, None]:
    """Events from an async iterable of lines (``aiter_lines`` over a response's bytes).

    A transport error while reading propagates and the half-received event is dropped, never dispatched.
    """
    decoder = SSEDecoder()
    async for line in lines:
        event = decoder.feed(line)
        if event is not None:
            yield event
    last = decoder.flush()
    if last is not None:
        yield last


# ----------------------------------------------------------------------------------------------------------
# Retry-After


def _finite_float(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait, read as the official SDKs do.

    ``retry-after-ms`` first, then ``retry-after`` as (float) seconds, then as an HTTP date; ``None`` when
    absent, negative or unreadable.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    millis = _finite_float(lowered.get("retry-after-ms"))
    if millis is not None and millis >= 0:
        return millis / 1000
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_float(raw)
    if seconds is not None:
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# ----------------------------------------------------------------------------------------------------------
# Error translation


@dataclass(frozen=True, slots=True)
class CallSite:
    """Who was being called, so that every error names the provider, model and URL.

    ``secret`` is the API key, kept only to scrub it from provider messages; it is excluded from ``repr``.
    """

    provider: str
    model: str
    url: str
    key_env: str | None = None
    secret: str | None = field(default=None, repr=False)

    @property
    def who(self) -> str:
        return f"{self.provider} model {self.model!r}" if self.model else self.provider

    def scrub(self, text: str) -> str:
        """``text`` with the key replaced, whitespace collapsed, and cut to a readable length."""
        if self.secret:
            text = text.replace(self.secret, REDACTED)
        text = " ".join(text.split())
        if len(text) > MAX_PROVIDER_MESSAGE_CHARS:
            text = text[: MAX_PROVIDER_MESSAGE_CHARS - 1] + "…"
        return text


@dataclass(frozen=True, slots=True)
class ProviderError:
    """What a provider's error body said; any part may be empty."""

    type: str = ""
    code: str = ""
    message: str = ""

    @property
    def is_context_overflow(self) -> bool:
        if self.code.lower() in _CONTEXT_OVERFLOW_CODES or self.type.lower() in _CONTEXT_OVERFLOW_CODES:
            return True
        return bool(_CONTEXT_OVERFLOW_WORDS.search(self.message))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(n.lower() for n in (self.type, self.code) if n)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def provider_error(payload: Any) -> ProviderError:
    """Read an error payload in any of the shapes servers use.

    OpenAI/DeepSeek/vLLM ``{"error": {"message", "type", "code"}}``; Anthropic ``{"type": "error", "error":
    {"type", "message"}}``; Gemini's list ``[{"error": {"code", "message", "status"}}]``; LM Studio and older
    llama-server ``{"error": "text"}``; FastAPI ``{"detail": ...}``; or a bare ``{"message": ...}``.
    """
    if isinstance(payload, list) and payload:
        payload = payload[0]
    if not isinstance(payload, dict):
        return ProviderError(message=_text(payload))
    inner = payload.get("error")
    if isinstance(inner, dict):
        return ProviderError(
            type=_text(inner.get("type") or inner.get("status")),
            code=_text(inner.get("code")),
            message=_text(inner.get("message")),
        )
    if isinstance(inner, str):
        return ProviderError(type=_text(payload.get("type")), message=inner)
    if "detail" in payload:
        return ProviderError(message=_text(payload["detail"]))
    return ProviderError(type=_text(payload.get("type")), message=_text(payload.get("message")))


def provider_error_from_body(body: bytes) -> ProviderError:
    """Parse an error response body; a body that is not JSON keeps a short snippet unless it is HTML."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        return provider_error(json.loads(text))
    except ValueError:
        return ProviderError(message="" if text.startswith("<") else text)


def error_from_response(
    site: CallSite,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | None = None,
) -> BackendError:
    """The typed error for an HTTP error response."""
    return classify(site, provider_error_from_body(body), status=status, retry_after_s=parse_retry_after(headers, now))


def classify(
    site: CallSite,
    err: ProviderError,
    *,
    status: int | None = None,
    retry_after_s: float | None = None,
) -> BackendError:
    """Map a provider error (HTTP status, or an in-band stream error if ``status`` is ``None``) to our type.

    OpenAI's 429 ``insufficient_quota`` becomes ``AuthError``: the account is out of credit, retrying cannot
    help, and ``AuthError`` is the type that already means "missing, wrong or out of credit".
    """
    said = site.scrub(err.message)
    names = err.names

    def msg(what: str) -> str:
        where = f" (HTTP {status})" if status is not None else ""
        return f"{site.who}: {what}{where}" + (f": {said}" if said else "")

    common: dict[str, Any] = {"provider": site.provider, "model": site.model, "status": status}
    key_hint = f"check the key in {site.key_env}" if site.key_env else "check the provider's credentials"

    if names & {"insufficient_quota", "billing_error"} or status == 402:
        return AuthError(
            msg("the account is out of credit or quota"),
            "add credit or raise the spending limit with the provider; retrying will not help",
            **common,
        )
    if "overloaded_error" in names or "overloaded" in names or status in (503, 529):
        return Overloaded(msg("the provider is overloaded"), retry_after_s=retry_after_s, **common)
    if status == 429 or names & {"rate_limit_error", "rate_limit_exceeded", "rate_limited"}:
        return RateLimited(msg("rate limited"), retry_after_s=retry_after_s, **common)
    if status in (401, 403) or names & _AUTH_TYPES:
        return AuthError(msg("the API key was rejected"), key_hint, **common)
    if status == 404 or names & {"not_found_error", "model_not_found"}:
        return ModelNotFound(
            msg("model or endpoint not found"),
            f"check the model id, and that base_url points at the API ({site.url})",
            **common,
        )
    if status == 413 or (err.is_context_overflow and (status is None or 400 <= status < 500)):
        return ContextOverflow(
            msg("the prompt does not fit the model's context window"),
            "shorten the prompt or its context files, lower max_output_tokens, or use a model with a larger window",
            **common,
        )
    if status in (408, 409):
        # The SDKs retry these: the server timed out reading the request, or hit a transient conflict.
        return BackendUnavailable(msg("the provider could not take the request now"), **common)
    if status is not None and 400 <= status < 500:
        return BadRequest(msg("the provider rejected the request"), **common)
    if "invalid_request_error" in names:
        return BadRequest(msg("the provider rejected the request"), **common)
    if status is None:
        return BackendUnavailable(msg("the provider reported an error mid-stream"), **common)
    return BackendUnavailable(msg("the provider failed"), **common)


def error_from_transport(
    site: CallSite,
    exc: httpx.HTTPError | httpx.InvalidURL,
    *,
    response_started: bool,
    partial_text: str = "",
    timeout_s: float | None = None,
) -> BackendError:
    """The typed error for an httpx exception raised while connecting, sending or reading.

    A connect timeout is ``BackendUnavailable`` (nothing was sent, so a retry is safe); a read timeout is
    ``BackendTimeout`` (the server has the request and may bill it). A connection dropped after the response
    began is a truncated stream: ``ProtocolError`` with the text received so far.
    """
    common: dict[str, Any] = {"provider": site.provider, "model": site.model}
    detail = site.scrub(str(exc)) or type(exc).__name__
    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
        return BackendUnavailable(
            f"{site.who}: could not connect to {site.url} in time ({detail})",
            "is the server up and reachable?",
            **common,
        )
    if isinstance(exc, httpx.TimeoutException):
        limit = f" within {timeout_s:g} s" if timeout_s is not None else ""
        return BackendTimeout(f"{site.who}: no answer{limit} from {site.url}", **common)
    if isinstance(exc, httpx.ConnectError):
        return BackendUnavailable(
            f"{site.who}: cannot connect to {site.url} ({detail})",
            "is the server running at that address?",
            **common,
        )
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return BackendUnavailable(
            f"{site.who}: {site.url} is not a usable http(s) URL ({detail})",
            "fix base_url in the provider's config",
            **common,
        )
    if response_started and isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.DecodingError)):
        return stream_cut(site, partial_text, detail)
    return BackendUnavailable(f"{site.who}: the request to {site.url} failed ({detail})", **common)


def stream_cut(site: CallSite, partial_text: str, detail: str = "") -> ProtocolError:
    """The stream ended before the provider said it was finished; usage is unknown."""
    why = f" ({detail})" if detail else ""
    return ProtocolError(
        f"{site.who}: the response stream ended before the answer was complete{why}; "
        f"{len(partial_text)} characters arrived and the call is unpriced",
        provider=site.provider,
        model=site.model,
        partial_text=partial_text,
    )


def malformed(site: CallSite, what: str, partial_text: str = "") -> ProtocolError:
    """The provider sent something its protocol does not allow."""
    return ProtocolError(
        f"{site.who}: malformed response: {site.scrub(what)}",
        provider=site.provider,
        model=site.model,
        partial_text=partial_text,
    )


def deadline_passed(site: CallSite, timeout_s: float, partial_text: str) -> BackendTimeout:
    """The whole call took longer than the request allows (a server can trickle bytes past a read timeout)."""
    got = f" ({len(partial_text)} characters had arrived)" if partial_text else ""
    return BackendTimeout(
        f"{site.who}: no complete answer within {timeout_s:g} s{got}",
        provider=site.provider,
        model=site.model,
    )


def missing_key(provider: str, model: str, key_env: str) -> BackendUnavailable:
    """Raised before any network I/O when a provider needs a key and its variable is unset."""
    return BackendUnavailable(
        f"{provider} model {model!r}: no API key; set {key_env} in the environment",
        f"export {key_env}=... or change api_key_env under [providers.{provider}]",
        provider=provider,
        model=model,
    )


def read_key(environ: Mapping[str, str], key_env: str | None) -> str | None:
    """The key in ``key_env``, stripped (keys pasted from files often end in a newline); ``None`` if unset."""
    if not key_env:
        return None
    return environ.get(key_env, "").strip() or None


def is_json_response(response: httpx.Response) -> bool:
    """True for ``application/json`` bodies (an error, or a server that ignored ``stream: true``)."""
    content_type = str(response.headers.get("content-type", ""))
    return content_type.split(";")[0].strip().lower() == "application/json"


def loads_object(data: str | bytes) -> dict[str, Any] | None:
    """A JSON object, or ``None`` when ``data`` is not one."""
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def int_or_none(value: Any) -> int | None:
    """A token count; booleans, negatives and non-numbers are not counts."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


# ----------------------------------------------------------------------------------------------------------
# Timing


class Stopwatch:
    """Times one call: time to first token, total time, and output speed after the first token."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_token: float | None = None
        self.ended: float | None = None

    def token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def stop(self) -> None:
        self.ended = time.perf_counter()

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def total_s(self) -> float:
        return (self.ended if self.ended is not None else time.perf_counter()) - self.started

    def tokens_per_s(self, output_tokens: int | None) -> float | None:
        if self.first_token is None:
            return None
        end = self.ended if self.ended is not None else time.perf_counter()
        return tokens_per_second(output_tokens, end - self.first_token)


# ----------------------------------------------------------------------------------------------------------
# The shared backend skeleton


class StreamConsumer(Protocol):
    """One protocol's reading of one response: fed SSE events (or a whole JSON body) until it is finished."""

    @property
    def text(self) -> str:
        """The answer text received so far."""
        ...

    @property
    def finished(self) -> bool:
        """True once everything the call needs (answer, finish reason, usage) has arrived."""
        ...

    def take_event(self, event: SSEEvent) -> bool:
        """Consume one event; True when it is the protocol's last one."""
        ...

    def take_body(self, body: bytes) -> None:
        """Consume a whole non-streamed JSON answer (a server that ignored ``stream: true``)."""
        ...


class HttpBackend:
    """What the httpx backends share: the API key, one lazy client, the streaming call and the health probe.

    The key is read once from the ``environ`` the registry passes in and is only ever sent in a request
    header; ``repr`` leaves it out.
    """

    kind: str = "http"
    supports_tools: bool = False  # the protocol subclasses say True

    def __init__(self, provider: str, config: ProviderConfig, environ: Mapping[str, str]) -> None:
        self.provider = provider
        self.local = config.local
        self.config = config
        self.base_url = (config.base_url or "").rstrip("/")
        self.key_env = config.api_key_env
        self._api_key = read_key(environ, config.api_key_env)
        self._client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, base_url={self.base_url!r})"

    def needs_missing_key(self) -> bool:
        """True when a key is configured, unset, and required: a local server is called without one."""
        return self._api_key is None and bool(self.key_env) and not self.local

    def api_key(self, model: str) -> str | None:
        """The key to send (``None``: none configured, or a local server without one).

        Raises ``BackendUnavailable`` naming the variable when a required key is unset, before any I/O.
        """
        if self._api_key is None and self.key_env and not self.local:
            raise missing_key(self.provider, model, self.key_env)
        return self._api_key

    def site(self, model: str, url: str) -> CallSite:
        return CallSite(self.provider, model, url, self.key_env, self._api_key)

    def client(self) -> httpx.AsyncClient:
        """The one client of this backend, created on first use so that construction does no I/O."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s),
                headers=dict(self.config.headers),
            )
        return self._client

    async def stream(
        self,
        site: CallSite,
        body: dict[str, Any],
        headers: Mapping[str, str],
        timeout_s: float,
        consumer: StreamConsumer,
    ) -> None:
        """POST ``body`` and feed the response to ``consumer``; every failure leaves as a ``BackendError``.

        ``timeout_s`` bounds the whole call, not just each read: a server that trickles keep-alives forever
        would never trip httpx's read timeout.
        """
        response_started = False
        timeout = httpx.Timeout(timeout_s, connect=self.config.connect_timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                async with self.client().stream(
                    "POST", site.url, json=body, headers=headers, timeout=timeout
                ) as response:
                    response_started = True
                    if not response.is_success:
                        raise error_from_response(site, response.status_code, response.headers, await response.aread())
                    if is_json_response(response):
                        consumer.take_body(await response.aread())
                        return
                    async with contextlib.aclosing(aiter_sse(aiter_lines(response.aiter_bytes()))) as events:
                        # Once the final record is in, read the (tiny) rest of the body instead of walking
                        # away: an unfinished body closes the connection, and the next call would pay a new
                        # TCP (and TLS) handshake. A server that keeps talking gets DRAIN_S, no more.
                        drain = asyncio.timeout(None)
                        draining = False
                        with contextlib.suppress(TimeoutError):
                            async with drain:
                                async for event in events:
                                    if draining:
                                        continue
                                    if consumer.take_event(event):
                                        draining = True
                                        drain.reschedule(asyncio.get_running_loop().time() + DRAIN_S)
                        return
        except TimeoutError:
            if not consumer.finished:
                raise deadline_passed(site, timeout_s, consumer.text) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # A connection dropped after the usage record arrived loses nothing we need; the call happened and
            # is billed, so raising would only make a retry pay for it twice.
            if not consumer.finished:
                raise error_from_transport(
                    site,
                    exc,
                    response_started=response_started,
                    partial_text=consumer.text,
                    timeout_s=timeout_s,
                ) from exc

    async def probe(self, url: str, headers: Mapping[str, str]) -> Health:
        """GET a model list with a short timeout and describe what came back; never raises."""
        if self.needs_missing_key():
            return Health(self.provider, self.kind, False, f"{self.key_env} is not set; the API needs a key")
        key_note = (
            f"key from {self.key_env}"
            if self._api_key
            else ("no key configured" if not self.key_env else f"{self.key_env} not set (local: none needed)")
        )
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                response = await self.client().get(url, headers=headers, timeout=httpx.Timeout(HEALTH_TIMEOUT_S))
        except TimeoutError:
            return Health(self.provider, self.kind, False, f"{url} did not answer within {HEALTH_TIMEOUT_S:g} s")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return Health(self.provider, self.kind, False, f"cannot reach {url} ({type(exc).__name__}); {key_note}")
        if response.status_code in (401, 403):
            return Health(
                self.provider,
                self.kind,
                False,
                f"{url} refused the credentials (HTTP {response.status_code}); {key_note}",
            )
        if not response.is_success:
            return Health(self.provider, self.kind, False, f"{url} answered HTTP {response.status_code}; {key_note}")
        names = model_ids(response.content)
        # A remote catalogue (OpenRouter's) lists hundreds of models; only a local server's list means
        # "what is loaded here".
        models = tuple(LocalModel(provider=self.provider, name=name) for name in names) if self.local else ()
        return Health(self.provider, self.kind, True, f"{url} answered: {len(names)} models; {key_note}", models)

    def count_tokens(self, request: Request) -> TokenCount:
        """An estimate: the provider's tokenizer is not available locally."""
        return TokenCount(estimate_request_tokens(request), exact=False)

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


DRAIN_S = 0.5


def model_ids(body: bytes) -> tuple[str, ...]:
    """Model ids from an OpenAI- or Anthropic-style list ``{"data": [{"id": ...}]}``; empty if unreadable."""
    payload = loads_object(body)
    entries = payload.get("data") if payload is not None else None
    if not isinstance(entries, list):
        return ()
    return tuple(e["id"] for e in entries if isinstance(e, dict) and isinstance(e.get("id"), str))
