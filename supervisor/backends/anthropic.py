"""Anthropic's Messages API over httpx, streamed as Server-Sent Events (protocols.md section 4).

Three facts shape this module:

- ``input_tokens`` excludes cache reads and cache writes, and the writes are split by lifetime in
  ``cache_creation`` (5-minute and 1-hour writes cost different amounts).
- ``message_delta.usage`` is cumulative: the last one is the total, and summing them would over-count.
- Prompt caching is explicit: the message marked ``cache_breakpoint`` ends the stable prefix (system, memory
  digest, context files), and its block carries ``cache_control`` so later calls read it at the cache price.

Tool calling: ``tools`` go as ``{name, description, input_schema}``. A past call is a ``tool_use`` block (id,
name, ``input`` object) after the assistant's text; results are ``tool_result`` blocks (``tool_use_id``,
``content``, ``is_error``) in a user message: the results of one turn share ONE user message, and a user
message that follows them joins it as text after the results, the shape the API documents. A streamed call is
a ``content_block_start`` of type ``tool_use``, then ``input_json_delta`` pieces of ``partial_json`` joined as
they come (never parsed here: a malformed result is the model's, for the executor to refuse), then
``content_block_stop``. ``stop_reason: "tool_use"`` is reported as ``"tool_calls"``.

Two request fields are deliberately not sent: ``temperature`` (newer Claude models reject non-default sampling
parameters, protocols.md 4.1) and ``json_schema`` (the verify gate checks the answer's shape instead).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Final, Literal

from supervisor.backends._http import (
    CallSite,
    HttpBackend,
    SSEEvent,
    Stopwatch,
    classify,
    int_or_none,
    loads_object,
    malformed,
    provider_error,
    stream_cut,
)
from supervisor.backends.base import Health, Message, OnText, Request, Result, ToolCall, arguments_object
from supervisor.usage import Usage

MESSAGES_PATH: Final = "/v1/messages"
MODELS_PATH: Final = "/v1/models"
FINISH_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def messages_body(request: Request, provider: str = "anthropic") -> dict[str, Any]:
    """The JSON body of a streamed Messages call for ``request``.

    System messages become the top-level ``system`` blocks (the API has no system role). Only the last
    message marked ``cache_breakpoint`` gets ``cache_control``, on its last block: one marker at the end of the
    stable prefix caches everything before it (tools included), well inside the API's limit of four.
    """
    marked = [i for i, m in enumerate(request.messages) if m.cache_breakpoint]
    breakpoint_index = marked[-1] if marked else None
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    results_open = False  # the last user message holds this turn's tool results (and maybe text after them)
    for index, message in enumerate(request.messages):
        blocks = _blocks(message, request, provider)
        if index == breakpoint_index and blocks:
            blocks[-1]["cache_control"] = {"type": "ephemeral", "ttl": request.cache_ttl}
        if message.role == "system":
            system.extend(blocks)
            continue
        if message.role == "tool":
            last = messages[-1]["content"] if results_open else []
            if results_open and all(block["type"] == "tool_result" for block in last):
                last.extend(blocks)
            else:  # results after text would break the documented order: they start a new user message
                messages.append({"role": "user", "content": blocks})
            results_open = True
        elif message.role == "user" and results_open:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": message.role, "content": blocks})
            results_open = False
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_output_tokens,
        "messages": messages,
        "stream": True,
    }
    if system:
        body["system"] = system
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
        ]
    return body


def _blocks(message: Message, request: Request, provider: str) -> list[dict[str, Any]]:
    """A message's content blocks: text; an assistant's ``tool_use`` calls after its text; a ``tool_result``."""
    if message.role == "tool":
        result: dict[str, Any] = {"type": "tool_result"}
        if message.tool_call_id is not None:  # required by the API: without it the server says which message
            result["tool_use_id"] = message.tool_call_id
        result["content"] = message.content
        if message.is_error:
            result["is_error"] = True
        return [result]
    blocks: list[dict[str, Any]] = []
    if message.content or not message.tool_calls:  # the API refuses an empty text block next to tool_use
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": arguments_object(call, provider, request.model, "Anthropic's tool_use.input"),
            }
        )
    return blocks


def normalize_usage(raw: Mapping[str, Any], cache_ttl: Literal["5m", "1h"] = "5m") -> Usage:
    """Anthropic usage as our disjoint components (protocols.md §7).

    Cache writes come from the 5m/1h split, and any part of ``cache_creation_input_tokens`` the split does not
    account for is billed at the rate of ``cache_ttl``, the TTL the request asked for. Without the split that is
    all of the total; with it, the remainder: streamed server-tool runs have frozen the split at
    ``message_start`` while the total kept growing (LiteLLM #42663), and dropping the rest would undercount.
    With ``input_tokens`` known, absent cache fields are 0.
    """
    uncached = int_or_none(raw.get("input_tokens"))
    output = int_or_none(raw.get("output_tokens"))
    details = raw.get("output_tokens_details")
    reasoning = int_or_none(details.get("thinking_tokens")) if isinstance(details, dict) else None
    if uncached is None:
        return Usage(output=output, reasoning=reasoning)
    cache_read = int_or_none(raw.get("cache_read_input_tokens")) or 0
    split = raw.get("cache_creation")
    write_5m = (int_or_none(split.get("ephemeral_5m_input_tokens")) or 0) if isinstance(split, dict) else 0
    write_1h = (int_or_none(split.get("ephemeral_1h_input_tokens")) or 0) if isinstance(split, dict) else 0
    total = int_or_none(raw.get("cache_creation_input_tokens")) or 0
    unsplit = max(0, total - write_5m - write_1h)
    if cache_ttl == "1h":
        write_1h += unsplit
    else:
        write_5m += unsplit
    return Usage(uncached, cache_read, write_5m, write_1h, output, reasoning)


def stream_usage(
    start: Mapping[str, Any] | None, final: Mapping[str, Any] | None, cache_ttl: Literal["5m", "1h"] = "5m"
) -> tuple[Usage, dict[str, Any]]:
    """A streamed message's usage and raw record: ``message_start``'s usage overlaid with the last
    ``message_delta``'s (cumulative; some servers report cache fields only there).

    Without a ``message_delta`` usage the output is unknown: ``message_start``'s ``output_tokens`` is a
    placeholder from before generation. ``cache_ttl`` is the request's breakpoint TTL (see ``normalize_usage``).
    """
    raw = {**(start or {}), **(final or {})}
    usage = normalize_usage(raw, cache_ttl) if raw else Usage()
    if final is None:
        usage = dataclasses.replace(usage, output=None, reasoning=None)
    return usage, raw


class _MessageStream:
    """Reads one Messages response: SSE events, or one JSON message from a server that ignored ``stream``."""

    def __init__(self, site: CallSite, on_text: OnText | None, cache_ttl: Literal["5m", "1h"] = "5m") -> None:
        self.site = site
        self.on_text = on_text
        self.cache_ttl = cache_ttl  # the request's breakpoint TTL: the rate for writes the split leaves out
        self.clock = Stopwatch()
        self.parts: list[str] = []
        self.stop_reason: str | None = None
        self.start_usage: dict[str, Any] | None = None
        self.final_usage: dict[str, Any] | None = None  # the latest message_delta usage: cumulative
        self.model_reported: str | None = None
        self.done = False
        self.tool_uses: dict[int, _ToolUse] = {}  # by content block index

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def finished(self) -> bool:
        return self.done or (self.stop_reason is not None and self.final_usage is not None)

    def take_event(self, event: SSEEvent) -> bool:
        payload = loads_object(event.data)
        if payload is None:
            raise malformed(self.site, f"a stream event is not a JSON object: {event.data[:80]!r}", self.text)
        kind = payload.get("type") or event.event
        if kind == "error":
            # e.g. overloaded_error after HTTP 200: the same types as an error response, without a status.
            raise classify(self.site, provider_error(payload))
        if kind == "message_start":
            message = payload.get("message")
            if isinstance(message, dict):
                self._meta(message)
                usage = message.get("usage")
                if isinstance(usage, dict):
                    self.start_usage = usage
        elif kind == "content_block_start":
            block = payload.get("content_block")
            if isinstance(block, dict):
                self._block(block, payload.get("index"))
        elif kind == "content_block_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict):
                self._delta(delta, payload.get("index"))
        elif kind == "message_delta":
            delta = payload.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
            usage = payload.get("usage")
            if isinstance(usage, dict):
                self.final_usage = usage  # replace, never add: each one is the running total
        elif kind == "message_stop":
            self.done = True
            return True
        # "ping", "content_block_stop" and event types added later carry nothing we need.
        return False

    def take_body(self, body: bytes) -> None:
        payload = loads_object(body)
        if payload is None:
            raise malformed(self.site, "the response body is not a JSON object", self.text)
        if payload.get("type") == "error":
            raise classify(self.site, provider_error(payload))
        content = payload.get("content")
        if not isinstance(content, list):
            raise malformed(self.site, "the message has no content list")
        for index, block in enumerate(content):
            if isinstance(block, dict):
                self._block(block, index)
        self._meta(payload)
        if isinstance(payload.get("stop_reason"), str):
            self.stop_reason = payload["stop_reason"]
        usage = payload.get("usage")
        if isinstance(usage, dict):
            self.final_usage = usage
        self.done = True

    def _meta(self, message: dict[str, Any]) -> None:
        model = message.get("model")
        if isinstance(model, str) and model:
            self.model_reported = model

    def _block(self, block: dict[str, Any], index: Any) -> None:
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
            self._text(block["text"])
        elif block.get("type") in ("thinking", "redacted_thinking"):
            self.clock.token()
        elif block.get("type") == "tool_use":
            self.clock.token()
            if not isinstance(index, int) or isinstance(index, bool):
                raise malformed(self.site, f"a tool_use block has no index: {block!r:.80}", self.text)
            self.tool_uses[index] = _ToolUse(block)

    def _delta(self, delta: dict[str, Any], index: Any) -> None:
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(delta.get("text"), str) and delta["text"]:
            self._text(delta["text"])
        elif kind == "thinking_delta":
            self.clock.token()  # thinking is generated output (and billed), but never part of the answer
        elif kind == "input_json_delta":
            tool_use = self.tool_uses.get(index) if isinstance(index, int) else None
            if tool_use is None:
                raise malformed(self.site, f"input_json_delta for block {index!r}, which is no tool_use", self.text)
            partial = delta.get("partial_json")
            if isinstance(partial, str):
                tool_use.parts.append(partial)

    def _text(self, text: str) -> None:
        self.clock.token()
        self.parts.append(text)
        if self.on_text is not None:
            self.on_text(text)

    def result(self) -> Result:
        # Without message_stop, a stop reason still proves the answer is whole; with neither, it was cut.
        if not self.done and self.stop_reason is None:
            raise stream_cut(self.site, self.text)
        self.clock.stop()
        usage, raw = stream_usage(self.start_usage, self.final_usage, self.cache_ttl)
        return Result(
            text=self.text,
            finish_reason=FINISH_REASONS.get(self.stop_reason, self.stop_reason) if self.stop_reason else None,
            usage=usage,
            ttft_s=self.clock.ttft_s,
            total_s=self.clock.total_s,
            tokens_per_s=self.clock.tokens_per_s(usage.output),
            model_reported=self.model_reported,
            raw_usage=raw,
            tool_calls=tuple(self.tool_uses[index].call() for index in sorted(self.tool_uses)),
        )


class _ToolUse:
    """One ``tool_use`` block: id and name from its start, its input from the ``partial_json`` pieces."""

    def __init__(self, block: dict[str, Any]) -> None:
        self.id = block["id"] if isinstance(block.get("id"), str) else ""
        self.name = block["name"] if isinstance(block.get("name"), str) else ""
        self.input = block.get("input")  # {} when streamed; the whole input in a non-streamed message
        self.parts: list[str] = []

    def call(self) -> ToolCall:
        # A call without arguments streams no pieces (or only empty ones): its input is the block's own.
        arguments = "".join(self.parts) or json.dumps(self.input if self.input is not None else {}, ensure_ascii=False)
        return ToolCall(id=self.id, name=self.name, arguments=arguments)


class AnthropicBackend(HttpBackend):
    """Claude through ``POST {base_url}/v1/messages`` (also DeepSeek's Anthropic-format endpoint)."""

    kind = "anthropic"
    supports_tools = True

    def _headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.config.anthropic_version, "content-type": "application/json"}
        if key:
            headers["x-api-key"] = key
        return headers

    async def complete(self, request: Request, on_text: OnText | None = None) -> Result:
        """Stream one message; text deltas go to ``on_text`` as they arrive, thinking never does."""
        headers = self._headers(self.api_key(request.model))
        site = self.site(request.model, f"{self.base_url}{MESSAGES_PATH}")
        stream = _MessageStream(site, on_text, request.cache_ttl)
        await self.stream(site, messages_body(request, self.provider), headers, request.timeout_s, stream)
        return stream.result()

    async def health(self) -> Health:
        """GET ``{base_url}/v1/models`` within 2 s; never raises."""
        return await self.probe(f"{self.base_url}{MODELS_PATH}", self._headers(self._api_key))
