"""Client-protocol codecs: pure code that reads and writes the wire formats the gateway's clients speak.

One module per protocol (``openai_chat``, ``openai_responses``, ``anthropic``, ``ollama``); the shared interface
is in ``base``. Nothing here opens a socket, reads config or touches the ledger.
"""

from __future__ import annotations

from typing import Any, Final

from supervisor.gateway.codecs._common import dumps
from supervisor.gateway.codecs.base import (
    DEFAULT_STATUS,
    RETRYABLE_KINDS,
    Codec,
    CodecError,
    ErrorKind,
    InboundRequest,
    ProtocolName,
    StreamEncoder,
    TeeResult,
    UsageTee,
    check_translatable,
)

__all__ = [
    "DEFAULT_STATUS",
    "PROTOCOLS",
    "RETRYABLE_KINDS",
    "Codec",
    "CodecError",
    "ErrorKind",
    "InboundRequest",
    "ProtocolName",
    "StreamEncoder",
    "TeeResult",
    "UsageTee",
    "check_translatable",
    "codec_for",
    "dumps",
    "models_body",
]

PROTOCOLS: Final[tuple[ProtocolName, ...]] = (
    "openai_chat",
    "openai_responses",
    "anthropic",
    "ollama_chat",
    "ollama_generate",
)


def codec_for(protocol: ProtocolName) -> Codec:
    """The codec of one client protocol (random ids, the wall clock)."""
    from supervisor.gateway.codecs.anthropic import AnthropicCodec
    from supervisor.gateway.codecs.ollama import OllamaCodec
    from supervisor.gateway.codecs.openai_chat import OpenAIChatCodec
    from supervisor.gateway.codecs.openai_responses import OpenAIResponsesCodec

    if protocol == "openai_chat":
        return OpenAIChatCodec()
    if protocol == "openai_responses":
        return OpenAIResponsesCodec()
    if protocol == "anthropic":
        return AnthropicCodec()
    if protocol == "ollama_chat":
        return OllamaCodec()
    if protocol == "ollama_generate":
        return OllamaCodec(generate=True)
    raise ValueError(f"unknown client protocol {protocol!r}")


def models_body(names: list[str] | tuple[str, ...], *, anthropic_shape: bool) -> dict[str, Any]:
    """``GET /v1/models``: Anthropic's list shape when the caller sent ``anthropic-version``, OpenAI's otherwise."""
    from supervisor.gateway.codecs import anthropic, openai_chat

    return anthropic.models_list(names) if anthropic_shape else openai_chat.models_list(names)
