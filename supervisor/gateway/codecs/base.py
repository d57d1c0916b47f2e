"""What every client-protocol codec takes and returns (the interface the gateway core programs against).

A codec knows one client protocol and nothing about keys, caps, routing or the ledger:

- ``parse`` turns a request body into an ``InboundRequest`` in the backends' vocabulary (``Message``,
  ``ToolSpec``), refusing what it cannot read with a ``CodecError`` that names the field;
- ``response``/``stream`` encode a backend's ``Result`` (and its streamed text deltas and tool calls) in the
  protocol, for the translated path;
- ``pass_through_body`` prepares the client's own body for an upstream that speaks the same protocol;
- ``usage_tee`` reads usage, finish reason, a text excerpt and errors from a copy of the upstream's bytes;
- ``error`` builds the protocol's own error envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

from supervisor.backends.base import Message, Result, ToolCall, ToolSpec
from supervisor.usage import Usage

ProtocolName = Literal["openai_chat", "openai_responses", "anthropic", "ollama_chat", "ollama_generate"]

# Why a request failed, in one vocabulary; each codec maps it to its protocol's own error type names.
ErrorKind = Literal[
    "invalid_request",  # 400: the body is wrong (CodecError), or asks for something we refuse
    "authentication",  # 401: missing, unknown or revoked gateway key
    "permission",  # 403: the key may not use this model or route
    "not_found",  # 404: no such model or route
    "request_too_large",  # 413: the body is over the size limit
    "cap_reached",  # 429: a spend cap would be crossed (not retryable until the window resets)
    "approval_required",  # 429: the frontier needs a human's approval first (not retryable until then)
    "offline",  # 503: offline mode refuses API tiers (not retryable while offline)
    "rate_limit",  # 429: an upstream rate limit (retryable)
    "overloaded",  # 529/503: an upstream is overloaded (retryable)
    "unavailable",  # 502/503: an upstream cannot be reached (retryable)
    "timeout",  # 504: an upstream did not answer in time (retryable)
    "api_error",  # 500: something else failed
]

# The status each kind is sent with unless the caller has a reason to choose another.
DEFAULT_STATUS: Final[dict[ErrorKind, int]] = {
    "invalid_request": 400,
    "authentication": 401,
    "permission": 403,
    "not_found": 404,
    "request_too_large": 413,
    "cap_reached": 429,
    "approval_required": 429,
    "offline": 503,
    "rate_limit": 429,
    "overloaded": 529,
    "unavailable": 503,
    "timeout": 504,
    "api_error": 500,
}

# Kinds a client may retry (an upstream hiccup). Every other kind carries ``x-should-retry: false``, which the
# openai and anthropic SDKs obey, so exactly one request reaches the gateway.
RETRYABLE_KINDS: Final = frozenset({"rate_limit", "overloaded", "unavailable", "timeout", "api_error"})


class CodecError(Exception):
    """A client request we refuse (HTTP 400): the message names the field and says how to fix it."""

    def __init__(self, field_path: str, problem: str, hint: str = "") -> None:
        self.field_path = field_path
        self.problem = problem
        self.hint = hint
        message = f"{field_path}: {problem}" if field_path else problem
        super().__init__(f"{message}; {hint}" if hint else message)

    @property
    def message(self) -> str:
        return str(self)


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """One client request, normalized.

    ``messages`` holds the system prompt as system messages (one per Anthropic system block, so a block's
    ``cache_control`` survives as ``cache_breakpoint``), assistant tool calls as ``ToolCall``\\s with the
    client's own ids (synthesized, stably, where the protocol has none: Ollama), and tool results as ``tool``
    messages. ``body`` is the parsed JSON, untouched, for pass-through.

    ``untranslatable`` lists what only the protocol's own provider can serve (images, Anthropic server tools,
    Responses built-in tools, Ollama raw mode, ...), each naming its field: such a request may be passed
    through, never translated (``check_translatable``). ``json_schema`` is a structured-output constraint
    (Ollama ``format``, OpenAI ``response_format``/``text.format``) that a translation must honour or refuse.
    """

    protocol: ProtocolName
    model: str
    stream: bool
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...]
    max_output_tokens: int | None
    temperature: float | None
    stop: tuple[str, ...]
    include_usage: bool
    needs_server_state: bool
    body: dict[str, Any] = field(repr=False)
    json_schema: dict[str, Any] | None = None
    untranslatable: tuple[str, ...] = ()


def check_translatable(request: InboundRequest) -> None:
    """Raise ``CodecError`` when ``request`` can only be passed through to its own protocol's provider."""
    if request.untranslatable:
        shown = "; ".join(request.untranslatable[:5])
        more = f" (and {len(request.untranslatable) - 5} more)" if len(request.untranslatable) > 5 else ""
        raise CodecError(
            "",
            f"the request uses features the routed model's protocol cannot express: {shown}{more}",
            "remove them, or route this agent to a model that speaks the client's own protocol",
        )


@dataclass(frozen=True, slots=True)
class TeeResult:
    """What a copy of an upstream's response said.

    ``usage`` fields are ``None`` where the upstream did not report them: a stream that ended without its usage
    record gives an unknown ``Usage()`` (the core charges the reservation), never zeros. ``complete`` is True
    once the protocol's end marker (or a finish reason with usage) arrived. ``error`` is an upstream error
    message (an error body, or an in-band error event), if any.
    """

    usage: Usage
    finish_reason: str | None
    text_excerpt: str
    error: str | None
    complete: bool
    raw_usage: dict[str, Any] = field(default_factory=dict)
    model_reported: str | None = None


class UsageTee(Protocol):
    """Reads a copy of an upstream response as it is relayed; never changes what the client gets."""

    def feed(self, chunk: bytes) -> None:
        """Take the next raw bytes, split anywhere."""
        ...

    def close(self) -> TeeResult:
        """The response ended (or was cut): what it said."""
        ...


class StreamEncoder(Protocol):
    """Encodes one streamed answer in a client protocol, piece by piece.

    ``start`` is sent before anything else (``text`` and ``tool_call`` start the stream themselves if it was
    not), ``finish`` closes it. ``finish`` also emits what the caller did not stream: ``result.text`` when no
    text delta was sent, and any of ``result.tool_calls`` not sent with ``tool_call``.
    """

    media_type: str

    def start(self) -> bytes: ...

    def text(self, delta: str) -> bytes: ...

    def tool_call(self, call: ToolCall) -> bytes: ...

    def finish(self, result: Result) -> bytes: ...

    def error(self, kind: ErrorKind, message: str) -> bytes: ...

    def ping(self) -> bytes: ...


class Codec(Protocol):
    """One client protocol."""

    protocol: ProtocolName

    def parse(self, body: Any) -> InboundRequest:
        """Read a request body (already parsed from JSON); raise ``CodecError`` naming the field."""
        ...

    def error(
        self, status: int, kind: ErrorKind, message: str, *, retry_after_s: int | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """The protocol's own error envelope: (status, headers, body)."""
        ...

    def response(self, result: Result, *, model: str) -> bytes:
        """A complete non-streaming JSON body for ``result``."""
        ...

    def stream(self, *, model: str, include_usage: bool) -> StreamEncoder:
        """An encoder for one streamed answer."""
        ...

    def pass_through_body(
        self,
        request: InboundRequest,
        *,
        upstream_model: str,
        max_output_tokens: int,
        max_tokens_key: str | None = None,
    ) -> dict[str, Any]:
        """The body to forward to an upstream speaking this protocol: the model replaced, the output budget
        injected or clamped to ``max_output_tokens``, usage requested on streams, and client-supplied
        endpoint/key fields dropped. ``max_tokens_key`` (OpenAI chat only) names the budget field the upstream
        wants (``max_completion_tokens`` for api.openai.com); ``None`` keeps the client's own choice."""
        ...

    def usage_tee(self, *, streaming: bool, request: InboundRequest | None = None) -> UsageTee:
        """A reader for a copy of the upstream's response to ``request`` (whose fields may change how usage is
        read: Anthropic's cache writes the 5m/1h split leaves out are billed at the TTL the request asked for)."""
        ...
