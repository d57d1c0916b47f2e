"""OpenAI-compatible Chat Completions over httpx: OpenAI, DeepSeek, Gemini, OpenRouter and local servers.

One protocol, several dialects of usage (protocols.md sections 3 and 7), all normalized here:

- OpenAI: ``prompt_tokens`` includes cache reads (``cached_tokens``) and writes (``cache_write_tokens``).
- DeepSeek: ``prompt_cache_hit_tokens`` + ``prompt_cache_miss_tokens`` split the prompt exactly; its thinking
  arrives as ``reasoning_content`` deltas, which are never part of the answer text.
- Gemini: ``completion_tokens`` may leave out the thinking that ``total_tokens`` includes and that is billed.

Every call streams with ``stream_options.include_usage``, because usage arrives only in the stream's last
chunk; a stream that ends cleanly without it gives an unknown ``Usage()`` (unpriced), never zeros.

Tool calling: ``tools`` go as ``{"type": "function", "function": {name, description, parameters}}``; past calls
as the assistant message's ``tool_calls`` (``content`` null when it had no text) and results as ``tool``
messages with ``tool_call_id``. A streamed call arrives in ``delta.tool_calls`` fragments keyed by ``index``:
the first carries ``id`` and ``function.name``, the rest pieces of ``function.arguments``, which are joined
as they come and never parsed here (a malformed result is the model's, for the executor to refuse). A server
that leaves out ``index`` gets one new call per fragment that carries an ``id``. ``finish_reason`` is
``"tool_calls"``; a server that says ``"stop"`` after calling tools is reported as ``"tool_calls"`` too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import httpx

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
from supervisor.backends.base import Health, Message, OnText, Request, Result, ToolCall
from supervisor.config import ProviderConfig
from supervisor.usage import Usage

OPENAI_HOST: Final = "api.openai.com"
JSON_SCHEMA_NAME: Final = "answer"


def max_tokens_field(base_url: str) -> str:
    """Which name the output budget goes under for this server.

    api.openai.com gets ``max_completion_tokens`` (its reasoning models reject ``max_tokens``); every other
    server gets ``max_tokens``, the one name DeepSeek, Gemini's compatibility layer, vLLM, LM Studio,
    llama-server and mlx_lm.server all understand.
    """
    try:
        host = httpx.URL(base_url).host
    except httpx.InvalidURL:
        return "max_tokens"
    return "max_completion_tokens" if host == OPENAI_HOST else "max_tokens"


def chat_body(request: Request, *, max_tokens_key: str = "max_tokens") -> dict[str, Any]:
    """The JSON body of a streamed chat completion for ``request``."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [chat_message(m) for m in request.messages],
        max_tokens_key: request.max_output_tokens,
        "temperature": request.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.stop:
        body["stop"] = list(request.stop)
    if request.seed is not None:
        body["seed"] = request.seed
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools
        ]
    if request.json_schema is not None:
        # Not "strict": strict mode rejects schemas without additionalProperties=false everywhere, and the
        # verify gate checks the answer against the schema anyway.
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": JSON_SCHEMA_NAME, "schema": request.json_schema},
        }
    return body


def chat_message(message: Message) -> dict[str, Any]:
    """One message in Chat Completions' shape (assistant tool calls, ``tool`` results by ``tool_call_id``)."""
    if message.role == "tool":
        entry: dict[str, Any] = {"role": "tool", "content": message.content}
        if message.tool_call_id is not None:  # required by the API: without it the server says which message
            entry["tool_call_id"] = message.tool_call_id
        return entry
    if message.tool_calls:
        return {
            "role": message.role,
            "content": message.content or None,  # the API's own shape for a reply that only called tools
            "tool_calls": [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def normalize_usage(raw: Mapping[str, Any]) -> Usage:
    """A usage record in any OpenAI-compatible dialect, as our disjoint components (protocols.md §7).

    When ``prompt_tokens`` is known, an absent cache field is 0: the components must add up to the prompt.
    """
    prompt = int_or_none(raw.get("prompt_tokens"))
    completion = int_or_none(raw.get("completion_tokens"))
    total = int_or_none(raw.get("total_tokens"))
    prompt_details = raw.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    completion_details = raw.get("completion_tokens_details")
    completion_details = completion_details if isinstance(completion_details, dict) else {}
    reasoning = int_or_none(completion_details.get("reasoning_tokens"))

    output = completion
    if prompt is not None and total is not None and total >= prompt:
        generated = total - prompt
        if completion is None or generated > completion:
            # Gemini's compatibility layer can leave the (billed) thinking out of completion_tokens.
            if reasoning is None and completion is not None:
                reasoning = generated - completion
            output = generated

    hit = int_or_none(raw.get("prompt_cache_hit_tokens"))
    miss = int_or_none(raw.get("prompt_cache_miss_tokens"))
    if hit is not None and miss is not None:
        # DeepSeek: hit + miss is the whole prompt; it has no cache-write fee (writes bill as misses).
        return Usage(miss, hit, 0, 0, output, reasoning)
    if prompt is None:
        return Usage(output=output, reasoning=reasoning)
    cached = int_or_none(prompt_details.get("cached_tokens")) or 0
    # OpenAI names cache writes cache_write_tokens; LiteLLM's proxy and other gateways cache_creation_tokens.
    # Both are the same tokens: take the larger, never the sum, and never miss one (an undercount).
    written = max(
        int_or_none(prompt_details.get("cache_write_tokens")) or 0,
        int_or_none(prompt_details.get("cache_creation_tokens")) or 0,
    )
    uncached = prompt - cached - written
    if uncached < 0:
        # Writes reported outside prompt_tokens (protocols.md says to verify the subset reading on a real
        # response): then only the reads are inside it. Never let a component go negative.
        uncached = max(prompt - cached, 0)
    return Usage(uncached, cached, written, 0, output, reasoning)


class _CallParts:
    """One tool call being streamed: id and name from its first fragment, arguments joined from all."""

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []

    def take(self, fragment: dict[str, Any]) -> None:
        call_id = fragment.get("id")
        if isinstance(call_id, str) and call_id and not self.id:
            self.id = call_id
        function = fragment.get("function")
        if not isinstance(function, dict):
            return
        name = function.get("name")
        if isinstance(name, str) and name and not self.name:
            self.name = name  # some servers repeat the name in every fragment: it is not a piece of it
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            self.arguments.append(arguments)
        elif isinstance(arguments, dict):
            self.arguments.append(json.dumps(arguments, ensure_ascii=False))  # a server that sends an object

    def call(self, position: int) -> ToolCall:
        return ToolCall(id=self.id or f"call_{position}", name=self.name, arguments="".join(self.arguments))


class _ChatStream:
    """Reads one chat completion: SSE chunks, or one JSON body from a server that ignored ``stream``."""

    def __init__(self, site: CallSite, on_text: OnText | None) -> None:
        self.site = site
        self.on_text = on_text
        self.clock = Stopwatch()
        self.parts: list[str] = []
        self.calls: dict[int, _CallParts] = {}  # by the fragments' index, in order of first appearance
        self.finish_reason: str | None = None
        self.raw_usage: dict[str, Any] | None = None
        self.model_reported: str | None = None
        self.done = False

    @property
    def text(self) -> str:
        return "".join(self.parts)

    @property
    def finished(self) -> bool:
        return self.done or (self.finish_reason is not None and self.raw_usage is not None)

    def take_event(self, event: SSEEvent) -> bool:
        if event.is_done:
            self.done = True
            return True
        chunk = loads_object(event.data)
        if chunk is None:
            raise malformed(self.site, f"a stream event is not a JSON object: {event.data[:80]!r}", self.text)
        self._take_chunk(chunk)
        return False

    def take_body(self, body: bytes) -> None:
        payload = loads_object(body)
        if payload is None:
            raise malformed(self.site, "the response body is not a JSON object", self.text)
        if payload.get("error"):
            raise classify(self.site, provider_error(payload))
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise malformed(self.site, "the completion has no choices")
        message = choices[0].get("message")
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and content:
            self._text(content)
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, dict):
                    self._fragment({**call, "index": position})
        self._meta(payload)
        self._finish(choices[0])
        self.done = True

    def _take_chunk(self, chunk: dict[str, Any]) -> None:
        if chunk.get("error"):
            # In-band failure after HTTP 200 (vLLM, OpenRouter, DeepSeek): typed like an HTTP error.
            raise classify(self.site, provider_error(chunk))
        self._meta(chunk)
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                # DeepSeek's reasoning_content (OpenRouter and vLLM say "reasoning") is thinking, not answer:
                # it starts the clock but never reaches the text.
                thought = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(thought, str) and thought:
                    self.clock.token()
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._text(content)
                fragments = delta.get("tool_calls")
                if isinstance(fragments, list):
                    for fragment in fragments:
                        if isinstance(fragment, dict):
                            self._fragment(fragment)
            self._finish(choice)

    def _text(self, content: str) -> None:
        self.clock.token()
        self.parts.append(content)
        if self.on_text is not None:
            self.on_text(content)

    def _fragment(self, fragment: dict[str, Any]) -> None:
        self.clock.token()
        index = fragment.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # No index (some servers): a fragment with a new id starts a call, any other continues the last.
            call_id = fragment.get("id")
            known = next((i for i, parts in self.calls.items() if call_id and parts.id == call_id), None)
            last = max(self.calls, default=-1)
            index = known if known is not None else (last + 1 if call_id or last < 0 else last)
        self.calls.setdefault(index, _CallParts()).take(fragment)

    def _meta(self, chunk: dict[str, Any]) -> None:
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self.model_reported = model
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.raw_usage = usage

    def _finish(self, choice: dict[str, Any]) -> None:
        reason = choice.get("finish_reason")
        if isinstance(reason, str) and reason:
            self.finish_reason = reason

    def result(self) -> Result:
        # Without [DONE] a finish reason still proves the answer is whole (some servers skip the sentinel);
        # with neither, the stream was cut.
        if not self.done and self.finish_reason is None:
            raise stream_cut(self.site, self.text)
        self.clock.stop()
        usage = normalize_usage(self.raw_usage) if self.raw_usage is not None else Usage()
        tool_calls = tuple(parts.call(position) for position, (_, parts) in enumerate(sorted(self.calls.items())))
        finish_reason = self.finish_reason  # "stop", "length" and "tool_calls" are already our words
        if tool_calls and finish_reason == "stop":
            finish_reason = "tool_calls"  # some local servers say "stop" after a call
        return Result(
            text=self.text,
            finish_reason=finish_reason,
            usage=usage,
            ttft_s=self.clock.ttft_s,
            total_s=self.clock.total_s,
            tokens_per_s=self.clock.tokens_per_s(usage.output),
            model_reported=self.model_reported,
            raw_usage=dict(self.raw_usage or {}),
            tool_calls=tool_calls,
        )


class OpenAICompatBackend(HttpBackend):
    """Any server that speaks ``POST {base_url}/chat/completions`` with SSE streaming.

    A key is sent as ``Authorization: Bearer`` only when one is configured and set; a ``local`` provider
    whose key variable is unset is called without one, as local servers expect.
    """

    kind = "openai_compat"
    supports_tools = True

    def __init__(self, provider: str, config: ProviderConfig, environ: Mapping[str, str]) -> None:
        super().__init__(provider, config, environ)
        self.max_tokens_key = max_tokens_field(self.base_url)

    async def complete(self, request: Request, on_text: OnText | None = None) -> Result:
        """Stream one chat completion; text deltas go to ``on_text`` as they arrive."""
        headers = auth_headers(self.api_key(request.model))
        site = self.site(request.model, f"{self.base_url}/chat/completions")
        stream = _ChatStream(site, on_text)
        body = chat_body(request, max_tokens_key=self.max_tokens_key)
        await self.stream(site, body, headers, request.timeout_s, stream)
        return stream.result()

    async def health(self) -> Health:
        """GET ``{base_url}/models`` within 2 s; never raises."""
        return await self.probe(f"{self.base_url}/models", auth_headers(self._api_key))


def auth_headers(key: str | None) -> dict[str, str]:
    """Bearer auth when there is a key; local servers take requests without any."""
    return {"Authorization": f"Bearer {key}"} if key else {}
