"""What every backend takes and returns; backends know wire protocols and nothing about agents or money.

A backend speaks one wire protocol. It takes a ``Request`` (messages, an explicit output budget, sampling
settings, a timeout) and returns a ``Result`` whose ``Usage`` is normalized (see ``supervisor.usage``).
Failures are raised as the ``BackendError`` subclasses in ``supervisor.errors``; nothing else escapes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from supervisor.errors import BadRequest
from supervisor.usage import Usage

Role = Literal["system", "user", "assistant", "tool"]
OnText = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool the model may call: a name, what it does, and a JSON Schema object for its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call the model made. ``arguments`` is the raw JSON text of the arguments object, exactly as
    the model produced it (Ollama and Anthropic send an object: it is serialized; OpenAI sends a string).
    Whoever executes the call parses it strictly; a malformed one is the model's error, not ours."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message. ``cache_breakpoint`` marks the end of the stable prefix (system + digest + context
    files): providers with explicit prompt caching (Anthropic) put their cache marker there.

    An assistant message may carry ``tool_calls`` (its ``content`` is then the text around them, often empty).
    A ``tool`` message is the result of one call: ``tool_call_id`` names it, ``name`` is the tool's name
    (Ollama wants it), ``content`` is the result text, and ``is_error`` marks a refused or failed call.
    Only Anthropic's wire has an error flag (``tool_result.is_error``); elsewhere the content alone must say
    that the call failed, so write it to be read by the model ("error: no such file: a.py")."""

    role: Role
    content: str
    cache_breakpoint: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """One call. ``model`` is the provider's own model id (``qwen3:4b``, ``claude-sonnet-5-5``).

    ``max_output_tokens`` is always explicit: nobody gets a provider default they did not choose.
    ``context_window`` is the window the caller budgets against (Ollama's ``num_ctx``); a prompt that does not
    fit with ``max_output_tokens`` is refused with ``ContextOverflow``, never truncated.
    """

    model: str
    messages: tuple[Message, ...]
    max_output_tokens: int
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    json_schema: dict[str, Any] | None = None
    timeout_s: float = 120.0
    context_window: int | None = None
    cache_ttl: Literal["5m", "1h"] = "5m"
    seed: int | None = None
    tools: tuple[ToolSpec, ...] = ()  # native tool calling; empty: a plain completion


@dataclass(frozen=True, slots=True)
class Result:
    """The normalized outcome of a call.

    ``finish_reason`` is ``"stop"``, ``"length"``, ``"tool_calls"`` (the model called tools: see ``tool_calls``),
    or the provider's own word when it is something else.
    ``usage`` fields are ``None`` where the provider did not report them (e.g. a stream that ended without its
    usage record): such a call is unpriced, never $0.
    """

    text: str
    finish_reason: str | None
    usage: Usage
    ttft_s: float | None
    total_s: float
    tokens_per_s: float | None = None
    compute_s: float | None = None  # local backends: seconds of local compute (load + prompt + generation)
    model_reported: str | None = None
    raw_usage: dict[str, Any] = field(default_factory=dict)  # the provider's usage record, for the ledger
    tool_calls: tuple[ToolCall, ...] = ()  # native tool calls, in the order the model made them


@dataclass(frozen=True, slots=True)
class TokenCount:
    """A prompt's size before the call: ``exact`` when counted with the model's own tokenizer."""

    tokens: int
    exact: bool


@dataclass(frozen=True, slots=True)
class LocalModel:
    """A model a local backend can serve now (pulled, downloaded, or loaded)."""

    provider: str
    name: str
    size_bytes: int | None = None
    loaded: bool = False
    expires_at: str | None = None  # Ollama: when the server will unload it
    context_length: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    """What a provider looks like right now (for the doctor and the TUI's Models screen)."""

    provider: str
    kind: str
    ok: bool
    detail: str
    models: tuple[LocalModel, ...] = ()


@runtime_checkable
class Backend(Protocol):
    """One provider speaking one wire protocol.

    ``supports_tools`` says whether the wire protocol has native tool calling (``Request.tools``,
    ``Result.tool_calls``). A backend without it refuses a request with tools (``refuse_tools``) rather than
    silently dropping them; its models can still use tools through the JSON-in-text protocol
    (``supervisor.runtime.toolproto``), which needs nothing from the backend. Whether a given *model* on a
    native backend calls tools well is a property of the model, not of the wire, and is not known here.
    """

    provider: str  # the provider's name in config, e.g. "ollama", "deepseek", "lmstudio"
    kind: str  # the wire protocol: "ollama" | "mlx" | "openai_compat" | "anthropic" | "scripted"
    local: bool  # $0 marginal: its models join the local tier
    supports_tools: bool  # native tool calling over this wire protocol

    async def complete(self, request: Request, on_text: OnText | None = None) -> Result:
        """Send one request; stream internally, call ``on_text`` with each text delta, return the final result."""
        ...

    def count_tokens(self, request: Request) -> TokenCount:
        """The prompt's size: the model's tokenizer where we have it, else ``estimate_tokens``."""
        ...

    async def health(self) -> Health:
        """Probe the provider quickly (short timeout); never raises."""
        ...

    async def aclose(self) -> None:
        """Release connections and loaded models."""
        ...


def arguments_object(call: ToolCall, provider: str, model: str, wire: str) -> dict[str, Any]:
    """A past call's arguments as the JSON object a wire that carries objects (Ollama, Anthropic) needs.

    Raises ``BadRequest`` when the text is not a JSON object: the call cannot be replayed as it was made, and
    replacing it with something else would show the model a call it never made. Whoever keeps the transcript
    records such a call with arguments ``"{}"`` and says what was wrong in its tool result.
    """
    try:
        value = json.loads(call.arguments)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise BadRequest(
            f"{provider} model {model!r}: tool call {call.id!r} ({call.name}) has arguments that are not a JSON "
            f"object ({call.arguments[:60]!r}); {wire} needs an object",
            "record a malformed call in the transcript with arguments '{}' and explain the error in its result",
            provider=provider,
            model=model,
        )
    return value


def refuse_tools(request: Request, provider: str) -> None:
    """Raise ``BadRequest`` when ``request`` carries tools: for backends whose wire has no tool calling."""
    if request.tools:
        raise BadRequest(
            f"{provider} model {request.model!r}: this backend has no native tool calling, and the request "
            f"offers {len(request.tools)} tool(s); they would be silently ignored",
            "use the JSON-in-text tool protocol (supervisor.runtime.toolproto) for this model, or a backend "
            "with native tools (ollama, openai_compat, anthropic)",
            provider=provider,
            model=request.model,
        )


# Conservative token estimate for providers whose tokenizer we do not have.
# BPE tokenizers average ~4 bytes per token on English and ~3 on code; dividing UTF-8 bytes by 3 over-counts
# ordinary text by ~25% so a prompt we accept fits, and reservations err on the expensive side. Each message
# adds a few tokens of chat-template framing.
BYTES_PER_TOKEN_ESTIMATE = 3
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REQUEST = 3
# Offering tools makes the provider add a system preamble of its own: Anthropic documents 346 tokens for
# Claude with tool_choice "auto"; OpenAI and Ollama chat templates add less. The largest is used for all.
TOKENS_PER_TOOLS_PREAMBLE = 350


def _bytes_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN_ESTIMATE)


def estimate_tokens(messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> int:
    """A documented, conservative token count: ceil(UTF-8 bytes / 3) + 4 per message + 3.

    The bytes are the content plus, for tool calls, each call's id, name and arguments text, and for a tool
    result its call id and tool name. Offered ``tools`` add the bytes of their JSON (name, description,
    parameters) and, once, ``TOKENS_PER_TOOLS_PREAMBLE``.
    """
    total = TOKENS_PER_REQUEST
    for message in messages:
        total += TOKENS_PER_MESSAGE + _bytes_tokens(message.content)
        for call in message.tool_calls:
            total += _bytes_tokens(call.id + call.name + call.arguments)
        if message.tool_call_id or message.name:
            total += _bytes_tokens((message.tool_call_id or "") + (message.name or ""))
    if tools:
        total += TOKENS_PER_TOOLS_PREAMBLE
        for tool in tools:
            spec = {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
            total += _bytes_tokens(json.dumps(spec, ensure_ascii=False))
    return total


def estimate_request_tokens(request: Request) -> int:
    """``estimate_tokens`` of a request's messages and tools."""
    return estimate_tokens(request.messages, request.tools)


def tokens_per_second(output_tokens: int | None, seconds: float | None) -> float | None:
    if not output_tokens or not seconds or seconds <= 0:
        return None
    return output_tokens / seconds
