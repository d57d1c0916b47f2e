"""What the codecs share: compact JSON, SSE framing, request-field validation, ids, and the tees' byte readers."""

from __future__ import annotations

import codecs
import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from supervisor.backends._http import LineSplitter, SSEDecoder, SSEEvent, loads_object
from supervisor.backends.base import Result, ToolCall
from supervisor.gateway.codecs.base import RETRYABLE_KINDS, CodecError, ErrorKind

TEXT_EXCERPT_CHARS: Final = 2000  # how much answer text a tee keeps (for the TUI and the breaker)
NS_PER_S: Final = 1_000_000_000

NewId = Callable[[str], str]  # prefix -> a fresh id starting with it
Clock = Callable[[], float]  # seconds since the epoch

# Fields some clients put in bodies to redirect a proxy or carry a provider key (LiteLLM-style); a body that is
# forwarded must never carry them (gateway.md 6.7: client api_base exfiltrating provider keys).
CLIENT_ENDPOINT_FIELDS: Final = frozenset(
    {
        "api_base",
        "base_url",
        "baseURL",
        "api_key",
        "apiKey",
        "api_version",
        "api_type",
        "organization",
        "custom_llm_provider",
        "extra_headers",
        "extra_query",
        "extra_body",
        "aws_access_key_id",
        "aws_secret_access_key",
        "vertex_credentials",
    }
)


def random_id(prefix: str) -> str:
    """A fresh opaque id (``prefix`` + 24 hex digits), like the providers' own."""
    return f"{prefix}{secrets.token_hex(12)}"


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as providers send it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def sse(data: Any, event: str | None = None) -> bytes:
    """One Server-Sent Event carrying ``data`` as JSON (or as is, for a str)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def without_endpoint_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``body`` without client-supplied endpoint and key fields."""
    return {k: v for k, v in body.items() if k not in CLIENT_ENDPOINT_FIELDS}


def error_headers(kind: ErrorKind, retry_after_s: int | None) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if retry_after_s is not None:
        headers["retry-after"] = str(max(0, int(retry_after_s)))
    if kind not in RETRYABLE_KINDS:
        headers["x-should-retry"] = "false"
    return headers


# ----------------------------------------------------------------------------------------------------------
# Tool-call arguments


def arguments_text(value: Any) -> str:
    """Arguments as raw JSON text: text (OpenAI) is kept as is; objects (Anthropic, Ollama) are serialized as the
    backends serialize them, so a call reads the same from a client's request and from an upstream's answer."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def arguments_for_client(raw: str) -> dict[str, Any]:
    """Arguments as an object for protocols that send one (Anthropic ``input``, Ollama ``arguments``).

    Empty text is ``{}``. Text that is not a JSON object (a model's malformed call) is kept, not dropped or
    "repaired": it arrives as ``{"_unparsed_arguments": text}`` so the agent sees what the model produced.
    """
    if not raw.strip():
        return {}
    value = loads_object(raw)
    return value if value is not None else {"_unparsed_arguments": raw}


def finish_of(result: Result) -> str:
    """The normalized finish reason, with tool calls winning over "stop" (Ollama says "stop" when it calls)."""
    reason = result.finish_reason or "stop"
    if result.tool_calls and reason == "stop":
        return "tool_calls"
    return reason


# ----------------------------------------------------------------------------------------------------------
# Request-field validation: every failure names the field path and the fix.


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise CodecError("body", f"must be a JSON object, got {type(body).__name__}", "send a JSON object")
    return body


def require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise CodecError(
            "model",
            "required: a non-empty string",
            'name a model, a catalog key such as "ollama:qwen3:4b", or a tier such as "auto"',
        )
    return model


def optional_bool(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CodecError(name, f"must be true or false, got {value!r}")
    return value


def optional_tokens(value: Any, path: str, *, negative_is_none: bool = False) -> int | None:
    """A token budget: a non-negative integer, or absent."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(path, f"must be an integer number of tokens, got {value!r}")
    if value < 0:
        if negative_is_none:
            return None  # Ollama: -1 is "no limit", -2 "fill the context": the gateway sets its own
        raise CodecError(path, f"must not be negative, got {value}")
    return value


def optional_number(value: Any, path: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CodecError(path, f"must be a number, got {value!r}")
    return float(value)


def stop_sequences(value: Any, path: str) -> tuple[str, ...]:
    """A stop string or a list of them."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise CodecError(path, f"must be a string or a list of strings, got {value!r}")


def require_list(value: Any, path: str, *, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise CodecError(path, f"must be a list of {what}, got {type(value).__name__}")
    return value


def require_dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(path, f"must be a JSON object, got {type(value).__name__}")
    return value


def require_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise CodecError(path, f"must be a string, got {type(value).__name__}")
    return value


def tool_parameters(value: Any, path: str) -> dict[str, Any]:
    """A tool's JSON Schema; absent means "no arguments"."""
    if value is None:
        return {"type": "object", "properties": {}}
    return require_dict(value, path)


class ToolNames:
    """Remembers each tool call's name by id, so a tool result (which names only the id) gets its tool's name."""

    def __init__(self) -> None:
        self._by_id: dict[str, str] = {}

    def add(self, calls: Iterable[ToolCall]) -> None:
        for call in calls:
            self._by_id[call.id] = call.name

    def name(self, call_id: str | None) -> str | None:
        return self._by_id.get(call_id) if call_id is not None else None


# ----------------------------------------------------------------------------------------------------------
# Tees: bytes in any split -> lines -> events


class Excerpt:
    """The first ``TEXT_EXCERPT_CHARS`` characters of an answer."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0

    def add(self, text: str) -> None:
        if self._size < TEXT_EXCERPT_CHARS and text:
            piece = text[: TEXT_EXCERPT_CHARS - self._size]
            self._parts.append(piece)
            self._size += len(piece)

    @property
    def text(self) -> str:
        return "".join(self._parts)


class LineReader:
    """UTF-8 bytes split anywhere -> whole lines (CRLF, LF or CR), as the backends read streams."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._splitter = LineSplitter()
        self._first = True

    def feed(self, chunk: bytes) -> list[str]:
        text = self._decoder.decode(chunk)
        if self._first and text:
            text = text.removeprefix("\ufeff")
            self._first = False
        return self._splitter.feed(text)

    def close(self) -> list[str]:
        return self._splitter.feed(self._decoder.decode(b"", final=True)) + self._splitter.flush()


class SSETee:
    """Base of the SSE tees: feeds events to ``take_event``, or, when the upstream answered with a JSON body
    instead of a stream (an error response, or a server that ignored ``stream: true``), the whole body to
    ``take_body`` at the end."""

    def __init__(self) -> None:
        self._lines = LineReader()
        self._events = SSEDecoder()
        self._mode: str | None = None  # "sse" or "json", decided by the first non-blank byte
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self._mode is None:
            stripped = chunk.lstrip().removeprefix(b"\xef\xbb\xbf").lstrip()
            if not stripped:
                self._body += chunk
                return
            self._mode = "json" if stripped[:1] in (b"{", b"[") else "sse"
            if self._mode == "sse" and self._body:
                chunk, self._body = bytes(self._body) + chunk, bytearray()
        if self._mode == "json":
            self._body += chunk
            return
        for line in self._lines.feed(chunk):
            self._line(line)

    def _line(self, line: str) -> None:
        event = self._events.feed(line)
        if event is not None:
            self.take_event(event)

    def finish_input(self) -> None:
        """Flush what is pending at the end of the bytes."""
        if self._mode == "json":
            self.take_body(bytes(self._body))
            return
        for line in self._lines.close():
            self._line(line)
        # An event still pending without its blank line is incomplete: a cut stream may have torn it.

    def take_event(self, event: SSEEvent) -> None:
        raise NotImplementedError

    def take_body(self, body: bytes) -> None:
        raise NotImplementedError


def error_text(payload: Any) -> str:
    """The message of an error payload in any of the providers' shapes."""
    from supervisor.backends._http import provider_error

    err = provider_error(payload)
    return err.message or err.type or err.code or "error"


def now_rfc3339(clock: Clock) -> str:
    """An RFC 3339 UTC timestamp with nanoseconds, as Ollama writes ``created_at``."""
    seconds = clock()
    whole = int(seconds)
    nanos = round((seconds - whole) * NS_PER_S)
    if nanos >= NS_PER_S:
        whole, nanos = whole + 1, nanos - NS_PER_S
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{nanos:09d}Z"
