"""Ollama's native API (``/api/chat`` NDJSON streaming) through the official ``ollama`` client.

Two Ollama habits shape this module (protocols.md section 1):

- Ollama silently truncates a prompt that does not fit ``num_ctx``, and its default ``num_ctx`` depends on the
  machine. So every call sends ``num_ctx`` explicitly, and a prompt whose estimate plus ``max_output_tokens``
  does not fit is refused with ``ContextOverflow`` before anything is sent.
- Usage arrives only in the final ``done: true`` chunk, and its fields are ``omitempty``. A missing count
  stays ``None`` (unknown), never 0; a stream that ends without that chunk is a ``ProtocolError``.

Tool calling (protocols.md 1.3, "Tools / tool_calls"): ``tools`` go in the OpenAI-style function schema; the
server parses the model's output itself and streams whole calls in ``message.tool_calls`` (arguments as a JSON
*object*, serialized here to JSON text). Current servers give each call an ``id`` (``call_…``); an older one
gives none, and the call is then named ``call_<n>`` by its position in the answer. Past calls go back as
``tool_calls`` on the assistant message (arguments as objects again) and results as ``tool`` messages with
``tool_name`` and ``tool_call_id``. Ollama reports ``done_reason: "stop"`` after a tool call; ``Result`` says
``"tool_calls"``.

The client's own timeout defaults to none at all, so every call here carries one.

A generation that starts to cycle is stopped by the repetition guard (``repetition.py``): we stop reading
and close the stream, which makes the server stop generating, and the result has ``finish_reason =
"looping"``. The final chunk never arrives, so its usage is unknown (``None``), as for any cut stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import Any, Final, TypeVar

import httpx
import pydantic
from ollama import AsyncClient, ChatResponse, Message, ResponseError

from supervisor.backends.base import (
    Health,
    LocalModel,
    OnText,
    Request,
    Result,
    TokenCount,
    ToolCall,
    arguments_object,
    estimate_request_tokens,
    tokens_per_second,
)
from supervisor.backends.repetition import LOOPING, RepetitionGuard
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
from supervisor.usage import Usage

DEFAULT_HOST: Final = "http://127.0.0.1:11434"
DEFAULT_CONTEXT_WINDOW: Final = 4096  # Ollama's own smallest default; used only when nothing else says
HEALTH_TIMEOUT_S: Final = 1.5
NS_PER_S: Final = 1e9

# The final chunk's metric fields, copied verbatim into ``Result.raw_usage`` for the ledger.
METRIC_FIELDS: Final = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
    "prompt_eval_cached_count",  # proposed upstream (ollama PR #16138); read when present, never required
)

# In-stream errors (HTTP 200, then an ``{"error": ...}`` line) whose words say the server itself failed.
_SERVER_DOWN_WORDS: Final = (
    "runner",
    "terminated",
    "unexpectedly stopped",
    "out of memory",
    "connection refused",
    "server busy",
    "unavailable",
)

# What the client raises when a line is not JSON (JSONDecodeError), not the promised shape (ValidationError),
# or not a JSON object at all (it calls ``.get`` on a list: AttributeError; ``cls(**list)``: TypeError).
_MALFORMED: Final = (json.JSONDecodeError, pydantic.ValidationError, AttributeError, TypeError)

T = TypeVar("T")

_START_HINT: Final = (
    "start Ollama with `ollama serve`, or set OLLAMA_HOST (or [providers.ollama] host) to where it listens"
)


class _ToolFunction(pydantic.BaseModel):
    """A streamed call's function. ``arguments`` is an object in the protocol; anything else a server sends
    is kept and passed on as JSON text for the executor to refuse (the client's own type would reject it)."""

    name: str
    arguments: Any = None
    index: int | None = None


class _ToolCall(pydantic.BaseModel):
    """A streamed tool call, keeping the ``id`` current servers send (the client's type drops it)."""

    id: str | None = None
    function: _ToolFunction


class _ChatMessage(Message):
    tool_calls: Sequence[_ToolCall] | None = None  # type: ignore[assignment]  # ours keep id and index


class _ChatChunk(ChatResponse):
    """A ``ChatResponse`` that keeps fields the client does not know (e.g. ``prompt_eval_cached_count``)."""

    model_config = pydantic.ConfigDict(extra="allow")
    message: _ChatMessage


class _Malformed(Exception):
    """The server sent bytes that are not the protocol (raised only around the client's own parsing)."""


class OllamaBackend:
    """One Ollama server, reached through the official async client (created on first use)."""

    kind = "ollama"
    supports_tools = True

    def __init__(self, provider: str, config: ProviderConfig, environ: Mapping[str, str]) -> None:
        self.provider = provider
        self.local = config.local
        self.config = config
        self.host = config.host or environ.get("OLLAMA_HOST") or DEFAULT_HOST
        self._headers = dict(config.headers)
        api_key = environ.get(config.api_key_env or "OLLAMA_API_KEY")
        if api_key and "authorization" not in {k.lower() for k in self._headers}:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._client: AsyncClient | None = None
        self._retry_after: float | None = None  # from the last error response (see _remember_retry_after)
        self._context_lengths: dict[str, int | None] = {}

    # --- lifecycle ---------------------------------------------------------------------------------------

    def _get_client(self) -> AsyncClient:
        if self._client is None:
            # The host is passed explicitly so the client never falls back to os.environ on its own;
            # it accepts the same forms OLLAMA_HOST does ("127.0.0.1:11434", ":11434", "http://host").
            try:
                self._client = AsyncClient(
                    host=self.host,
                    timeout=httpx.Timeout(self.config.timeout_s, connect=self.config.connect_timeout_s),
                    headers=self._headers,
                    # The client's ResponseError drops headers; keep Retry-After from the last error response.
                    event_hooks={"response": [self._remember_retry_after]},
                )
            except ValueError as exc:  # the client's host parsing: a bad port, an unclosed IPv6 bracket
                raise BackendUnavailable(
                    f"{self.provider}: {self.host!r} is not a usable Ollama address ({exc})",
                    f"fix [providers.{self.provider}] host or OLLAMA_HOST, e.g. 127.0.0.1:11434",
                    provider=self.provider,
                ) from None
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connections; models stay loaded for as long as ``keep_alive`` says."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]  # the client leaves close() unannotated

    # --- calls -------------------------------------------------------------------------------------------

    def count_tokens(self, request: Request) -> TokenCount:
        """Ollama has no tokenize endpoint, so this is the conservative estimate."""
        return TokenCount(estimate_request_tokens(request), exact=False)

    async def complete(self, request: Request, on_text: OnText | None = None) -> Result:
        """Stream one ``/api/chat`` call with an explicit ``num_ctx``; refuse a prompt that would not fit."""
        model = request.model
        text_parts: list[str] = []
        tool_calls: list[ToolCall] = []
        messages = self._messages(request)
        try:
            async with asyncio.timeout(request.timeout_s):
                window, source = await self._resolve_window(request)
                self._check_fits(request, window, source)
                started = time.perf_counter()
                # The client's own ``_request`` (what ``chat()`` calls) rather than ``chat()``: it takes a
                # per-call httpx timeout, and parses chunks into ``_ChatChunk``, which keeps metric fields
                # the client does not model yet. The tests against the fake pin this behaviour.
                stream = await self._get_client()._request(
                    _ChatChunk,
                    "POST",
                    "/api/chat",
                    json=self._chat_body(request, window, messages),
                    stream=True,
                    timeout=httpx.Timeout(
                        request.timeout_s, connect=min(self.config.connect_timeout_s, request.timeout_s)
                    ),
                )
                guard = RepetitionGuard()
                try:
                    final, ttft_s = await self._read_stream(stream, started, text_parts, tool_calls, on_text, guard)
                finally:
                    await _close(stream)
                total_s = time.perf_counter() - started
        except ResponseError as exc:
            raise self._response_error(exc, model, "".join(text_parts)) from None
        except _Malformed as exc:
            raise ProtocolError(
                f"{self.provider}:{model}: the server sent something that is not Ollama's NDJSON: {exc}",
                f"check that {self.host} is an Ollama server",
                provider=self.provider,
                model=model,
                partial_text="".join(text_parts),
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise ProtocolError(
                f"{self.provider}:{model}: the stream broke before its final chunk: {exc!r}",
                "the server may have crashed or restarted; check the `ollama serve` log",
                provider=self.provider,
                model=model,
                partial_text="".join(text_parts),
            ) from None
        except (TimeoutError, httpx.HTTPError, ConnectionError) as exc:
            raise self._transport_error(exc, model, request.timeout_s) from None

        if final is None and guard.tripped:
            return Result(
                text="".join(text_parts),
                finish_reason=LOOPING,
                usage=usage_from_metrics({}),  # the final chunk with the counts never came: unknown, not 0
                ttft_s=ttft_s,
                total_s=total_s,
                tool_calls=tuple(tool_calls),
            )
        if final is None:
            raise ProtocolError(
                f"{self.provider}:{model}: the stream ended without its final `done` chunk; usage is unknown",
                "the server may have crashed or restarted; check the `ollama serve` log",
                provider=self.provider,
                model=model,
                partial_text="".join(text_parts),
            )
        raw_usage = _metrics(final)
        eval_duration = final.eval_duration
        finish_reason = final.done_reason
        if tool_calls and finish_reason in (None, "stop"):
            finish_reason = "tool_calls"  # Ollama says "stop" after a call; the caller must run the tools
        return Result(
            text="".join(text_parts),
            finish_reason=finish_reason,
            usage=usage_from_metrics(raw_usage),
            ttft_s=ttft_s,
            total_s=total_s,
            tokens_per_s=tokens_per_second(final.eval_count, eval_duration / NS_PER_S if eval_duration else None),
            compute_s=final.total_duration / NS_PER_S if final.total_duration is not None else None,
            model_reported=final.model,
            raw_usage=raw_usage,
            tool_calls=tuple(tool_calls),
        )

    @staticmethod
    async def _read_stream(
        stream: AsyncIterator[_ChatChunk],
        started: float,
        text_parts: list[str],
        tool_calls: list[ToolCall],
        on_text: OnText | None,
        guard: RepetitionGuard,
    ) -> tuple[_ChatChunk | None, float | None]:
        """Collect text deltas (not ``thinking``) into ``text_parts`` and whole calls into ``tool_calls``;
        return the final chunk and the TTFT. Stops early, with no final chunk, when ``guard`` sees the text
        cycling."""
        ttft_s: float | None = None
        final: _ChatChunk | None = None
        iterator = aiter(stream)
        while True:
            # Only the client's parsing is guarded, so a bug in on_text is not mistaken for a bad server.
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return final, ttft_s
            except _MALFORMED as exc:
                raise _Malformed(f"{type(exc).__name__}: {exc}") from None
            if final is not None:
                continue  # nothing follows the final chunk in the protocol; ignore it if something does
            delta = chunk.message.content or ""
            calls = chunk.message.tool_calls or ()
            if ttft_s is None and (delta or chunk.message.thinking or calls):
                ttft_s = time.perf_counter() - started
            if delta:
                text_parts.append(delta)
                if on_text is not None:
                    on_text(delta)
            for call in calls:
                tool_calls.append(_tool_call(call, len(tool_calls)))
            if chunk.done:
                final = chunk
            elif guard.feed(delta):
                return None, ttft_s

    def _messages(self, request: Request) -> list[dict[str, Any]]:
        """The ``messages`` array: past tool calls carry their arguments as objects, results their tool's name."""
        names: dict[str, str] = {}  # call id -> tool name, from the latest assistant message that made the call
        out: list[dict[str, Any]] = []
        for m in request.messages:
            entry: dict[str, Any] = {"role": m.role, "content": m.content}
            names.update((call.id, call.name) for call in m.tool_calls)
            if m.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": call.id,
                        "function": {
                            "index": index,
                            "name": call.name,
                            "arguments": arguments_object(call, self.provider, request.model, "Ollama"),
                        },
                    }
                    for index, call in enumerate(m.tool_calls)
                ]
            if m.role == "tool":
                # Ollama matches a result to its call by tool name; the name is found from the call when the
                # message does not carry it, as Ollama's own OpenAI layer does. Ids synthesized for an old
                # server (call_0, ...) repeat across turns, so the latest call with the id is the one.
                tool_name = m.name or names.get(m.tool_call_id or "")
                if tool_name:
                    entry["tool_name"] = tool_name
                if m.tool_call_id:
                    entry["tool_call_id"] = m.tool_call_id
            out.append(entry)
        return out

    def _chat_body(self, request: Request, window: int, messages: list[dict[str, Any]]) -> dict[str, Any]:
        options: dict[str, Any] = {
            "num_ctx": window,
            "num_predict": request.max_output_tokens,
            "temperature": request.temperature,
        }
        if request.stop:
            options["stop"] = list(request.stop)
        if request.seed is not None:
            options["seed"] = request.seed
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "stream": True,
            "options": options,
        }
        if request.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if self.config.keep_alive is not None:
            body["keep_alive"] = self.config.keep_alive
        if request.json_schema is not None:
            body["format"] = request.json_schema
        return body

    async def _resolve_window(self, request: Request) -> tuple[int, str]:
        """``num_ctx`` for this call and where it came from (for the overflow message)."""
        if request.context_window is not None:
            return request.context_window, "the request"
        if self.config.context_window is not None:
            return self.config.context_window, f"[providers.{self.provider}] context_window"
        length = await self.context_length(request.model)
        if length is not None:
            return length, "the model's context length (/api/show)"
        return DEFAULT_CONTEXT_WINDOW, "the default"

    def _check_fits(self, request: Request, window: int, source: str) -> None:
        prompt_tokens = estimate_request_tokens(request)
        if prompt_tokens + request.max_output_tokens > window:
            raise ContextOverflow(
                f"{self.provider}:{request.model}: prompt ~{prompt_tokens} tokens + max output "
                f"{request.max_output_tokens} > num_ctx {window} (from {source}); refusing to send, because "
                "Ollama would silently truncate the prompt",
                f"raise context_window (in the model's catalog entry or [providers.{self.provider}]), lower "
                "max_output_tokens, or shorten the step's context files",
                provider=self.provider,
                model=request.model,
            )

    # --- model management --------------------------------------------------------------------------------

    async def list_models(self) -> list[LocalModel]:
        """Models pulled onto the server (``/api/tags``)."""
        try:
            listing = await _guard(self._get_client().list())
        except (ResponseError, _Malformed, httpx.HTTPError, ConnectionError) as exc:
            raise self._endpoint_error(exc, "/api/tags") from None
        return [
            LocalModel(
                provider=self.provider,
                name=m.model or "",
                size_bytes=int(m.size) if m.size is not None else None,
                detail=_details(m.details),
            )
            for m in listing.models
        ]

    async def model_missing(self, name: str) -> str | None:
        """Why ``name`` cannot be served (not pulled on the server), or None; None too when the server cannot be
        asked (an unreachable server is found, and reported, by the call itself)."""
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                pulled = await self.list_models()
        except (TimeoutError, BackendError):
            return None
        wanted = _canonical(name)
        if any(_canonical(m.name) == wanted for m in pulled):
            return None
        return f"{name} is not pulled on the Ollama server at {self.host} (hint: ollama pull {name})"

    async def loaded_models(self) -> list[LocalModel]:
        """Models loaded in memory now (``/api/ps``), with when the server will unload them."""
        try:
            running = await _guard(self._get_client().ps())
        except (ResponseError, _Malformed, httpx.HTTPError, ConnectionError) as exc:
            raise self._endpoint_error(exc, "/api/ps") from None
        return [
            LocalModel(
                provider=self.provider,
                name=m.model or m.name or "",
                size_bytes=int(m.size) if m.size is not None else None,
                loaded=True,
                expires_at=m.expires_at.isoformat() if m.expires_at is not None else None,
                context_length=m.context_length,
                detail=_details(m.details),
            )
            for m in running.models
        ]

    async def context_length(self, model: str) -> int | None:
        """The model's trained context length from ``/api/show`` (cached per model), if it reports one."""
        if model in self._context_lengths:
            return self._context_lengths[model]
        try:
            shown = await _guard(self._get_client().show(model))
        except ResponseError as exc:
            raise self._response_error(exc, model, "") from None
        except (_Malformed, httpx.HTTPError, ConnectionError) as exc:
            raise self._endpoint_error(exc, "/api/show") from None
        info = shown.modelinfo or {}
        arch = info.get("general.architecture")
        length = info.get(f"{arch}.context_length") if isinstance(arch, str) else None
        if length is None:  # an architecture key we did not expect: any "<arch>.context_length" will do
            length = next((v for k, v in info.items() if k.endswith(".context_length")), None)
        result = length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None
        self._context_lengths[model] = result
        return result

    async def health(self) -> Health:
        """Reachable, pulled and loaded models, within ``HEALTH_TIMEOUT_S``; never raises."""
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                pulled = await self.list_models()
                loaded = await self.loaded_models()
        except TimeoutError:
            return Health(
                self.provider,
                self.kind,
                ok=False,
                detail=f"no answer from Ollama at {self.host} within {HEALTH_TIMEOUT_S:g} s ({_START_HINT})",
            )
        except BackendError as exc:
            return Health(self.provider, self.kind, ok=False, detail=str(exc))
        loaded_by_name = {m.name: m for m in loaded}
        models = [loaded_by_name.pop(m.name, m) for m in pulled]
        models.extend(loaded_by_name.values())  # loaded but not listed (e.g. a cloud model)
        return Health(
            self.provider,
            self.kind,
            ok=True,
            detail=f"Ollama at {self.host}: {len(pulled)} pulled, {len(loaded)} loaded",
            models=tuple(models),
        )

    # --- error translation -------------------------------------------------------------------------------

    async def _remember_retry_after(self, response: httpx.Response) -> None:
        from supervisor.backends._http import parse_retry_after

        self._retry_after = parse_retry_after(response.headers) if response.status_code >= 400 else None

    def _response_error(self, exc: ResponseError, model: str, partial_text: str) -> BackendError:
        """An HTTP error status, or (status -1) an ``{"error": ...}`` line inside a 200 stream."""
        status = exc.status_code
        message = f"{self.provider}:{model}: {exc.error}"
        kw: dict[str, Any] = {"provider": self.provider, "model": model}
        if status == -1:
            lowered = str(exc.error).lower()
            if any(word in lowered for word in _SERVER_DOWN_WORDS):
                return BackendUnavailable(
                    f"{message} (reported mid-stream)", "check the `ollama serve` log and free memory", **kw
                )
            return ProtocolError(
                f"{message} (reported mid-stream)",
                "check the `ollama serve` log",
                partial_text=partial_text,
                **kw,
            )
        kw["status"] = status
        if status == 404:
            return ModelNotFound(message, f"pull it with `ollama pull {model}` (or fix the model name)", **kw)
        if status in (503, 529):
            return Overloaded(message, "the server's queue is full (OLLAMA_MAX_QUEUE); retry later", **kw)
        if status == 429:
            return RateLimited(message, "slow down; retry later", retry_after_s=self._retry_after, **kw)
        if status in (401, 402, 403):
            return AuthError(message, "set OLLAMA_API_KEY (or api_key_env) for an authenticated server", **kw)
        if status == 408:  # the server gave up reading the request: nothing ran, so a retry is safe
            return BackendUnavailable(message, "the server could not take the request now; retry", **kw)
        if 400 <= status < 500:
            return BadRequest(message, "this request will not succeed as sent; check the model and options", **kw)
        return BackendUnavailable(message, "check the `ollama serve` log", **kw)

    def _transport_error(self, exc: BaseException, model: str, timeout_s: float) -> BackendError:
        kw: dict[str, Any] = {"provider": self.provider, "model": model}
        where = f"{self.provider}:{model}" if model else self.provider
        if isinstance(exc, (ConnectionError, httpx.ConnectError, httpx.ConnectTimeout)):
            return BackendUnavailable(f"{where}: cannot connect to Ollama at {self.host}", _START_HINT, **kw)
        if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
            return BackendTimeout(
                f"{where}: no answer from Ollama at {self.host} within {timeout_s:g} s",
                "raise the step's timeout_s, or use a smaller model",
                **kw,
            )
        return BackendUnavailable(f"{where}: request to Ollama at {self.host} failed: {exc!r}", _START_HINT, **kw)

    def _endpoint_error(self, exc: Exception, endpoint: str) -> BackendError:
        """Errors from the model-management endpoints, which concern the server rather than one model."""
        kw: dict[str, Any] = {"provider": self.provider}
        if isinstance(exc, ResponseError):
            if exc.status_code == 404:
                return BackendUnavailable(
                    f"{self.provider}: {self.host} has no {endpoint} (404: {exc.error})",
                    "is this an Ollama server? check the host and OLLAMA_HOST",
                    status=404,
                    **kw,
                )
            return self._response_error(exc, "", "")
        if isinstance(exc, _Malformed):
            return ProtocolError(
                f"{self.provider}: {self.host} answered {endpoint} with something not Ollama's JSON: {exc}",
                "is this an Ollama server? check the host and OLLAMA_HOST",
                **kw,
            )
        return self._transport_error(exc, "", self.config.timeout_s)


def usage_from_metrics(metrics: Mapping[str, Any]) -> Usage:
    """Normalize a final chunk's metrics: ``prompt_eval_count`` includes KV-cache hits, and nothing is billed
    for them, so it is all uncached input; a missing count is unknown (``None``), never 0."""
    prompt = metrics.get("prompt_eval_count")
    output = metrics.get("eval_count")
    return Usage(
        input_uncached=prompt if isinstance(prompt, int) else None,
        cache_read=0,
        cache_write_5m=0,
        cache_write_1h=0,
        output=output if isinstance(output, int) else None,
        reasoning=None,
    )


def _tool_call(call: _ToolCall, position: int) -> ToolCall:
    """Our ``ToolCall``: the server's id (or ``call_<position>``) and the arguments object as JSON text."""
    arguments = call.function.arguments
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return ToolCall(id=call.id or f"call_{position}", name=call.function.name, arguments=text)


def final_metrics(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The metric fields of a final (``done: true``) chunk, as sent: absent or null ones are left out."""
    return {name: fields[name] for name in METRIC_FIELDS if fields.get(name) is not None}


def _metrics(final: _ChatChunk) -> dict[str, Any]:
    return final_metrics({**final.model_dump(), **(final.model_extra or {})})


def _canonical(name: str) -> str:
    """Ollama's model names default to the ``latest`` tag: ``llama3.2`` is ``llama3.2:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _details(details: Any) -> str:
    if details is None:
        return ""
    parts = (getattr(details, "parameter_size", None), getattr(details, "quantization_level", None))
    return " ".join(p for p in parts if p)


async def _guard(call: Awaitable[T]) -> T:
    """Await a client call, turning its JSON/pydantic parse failures into ``_Malformed``."""
    try:
        return await call
    except _MALFORMED as exc:
        raise _Malformed(f"{type(exc).__name__}: {exc}") from None


async def _close(stream: AsyncIterator[_ChatChunk]) -> None:
    """Close the client's stream generator now, so its HTTP response is released even on an early exit."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
