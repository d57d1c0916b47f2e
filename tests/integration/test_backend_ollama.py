"""The real ``OllamaBackend`` (official ``ollama`` client, real httpx) against the loopback Ollama fake."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import ollama
import pytest

from supervisor.backends.base import Message, Request
from supervisor.backends.ollama import DEFAULT_CONTEXT_WINDOW, OllamaBackend, usage_from_metrics
from supervisor.backends.registry import make_backend
from supervisor.catalog import local_spec
from supervisor.config import ProviderConfig, parse_config
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
from tests.fakes.ollama import (
    EVAL_NS_PER_TOKEN,
    LOAD_NS,
    NDJSON,
    PROMPT_NS_PER_TOKEN,
    QUEUE_FULL,
    FakeModel,
    Looping,
    OllamaFake,
    RecordedStream,
)
from tests.helpers import ESTIMATED_MESSAGES, ESTIMATED_TOKENS

# protocols.md section 1.3: a streamed chunk and the final chunk of /api/chat, verbatim from the Ollama docs.
DOCS_CHUNK = (
    '{"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00",'
    '"message":{"role":"assistant","content":"The","images":null},"done":false}'
)
DOCS_FINAL = """{
  "model": "llama3.2",
  "created_at": "2023-08-04T19:22:45.499127Z",
  "message": {"role": "assistant", "content": ""},
  "done": true,
  "total_duration": 4883583458,
  "load_duration": 1334875,
  "prompt_eval_count": 26,
  "prompt_eval_duration": 342546000,
  "eval_count": 282,
  "eval_duration": 4535599000
}"""

MakeBackend = Callable[..., OllamaBackend]


@pytest.fixture
def fake() -> Iterator[OllamaFake]:
    server = OllamaFake(
        models=(
            "llama3.2:latest",
            FakeModel("qwen3:4b", context_length=40960, size=2_500_000_000),
            FakeModel("tiny:1b", context_length=None, size=700_000_000),
        )
    )
    with server:
        yield server


@pytest.fixture
async def make(fake: OllamaFake) -> AsyncIterator[MakeBackend]:
    """Build backends against the fake (or another host); every one is closed after the test."""
    made: list[OllamaBackend] = []

    def build(host: str | None = None, environ: dict[str, str] | None = None, **fields: Any) -> OllamaBackend:
        config = ProviderConfig(kind="ollama", host=host if host is not None else fake.url, local=True, **fields)
        backend = OllamaBackend("ollama", config, environ or {})
        made.append(backend)
        return backend

    yield build
    for backend in made:
        await backend.aclose()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(text: str = "Say hi.", *, model: str = "llama3.2", **fields: Any) -> Request:
    fields.setdefault("max_output_tokens", 64)
    return Request(model=model, messages=(Message("user", text),), **fields)


# --- streaming and usage ---------------------------------------------------------------------------------


async def test_streams_text_and_reports_each_delta(fake: OllamaFake, make: MakeBackend) -> None:
    fake.enqueue(Reply("Hello from a local model!", chunks=3))
    deltas: list[str] = []

    result = await make().complete(ask(), deltas.append)

    assert deltas == OllamaFake.split_text("Hello from a local model!", 3)
    assert len(deltas) == 3
    assert result.text == "Hello from a local model!"
    assert result.finish_reason == "stop"
    assert result.model_reported == "llama3.2"
    assert result.ttft_s is not None
    assert fake.chat_bodies()[0]["stream"] is True
    assert fake.chat_bodies()[0]["messages"] == [{"role": "user", "content": "Say hi."}]


async def test_a_looping_stream_is_stopped_and_closed(fake: OllamaFake, make: MakeBackend) -> None:
    """The repetition guard stops reading a stream that cycles and closes it, so the server stops generating."""
    fake.enqueue(Looping("A-sort\n", max_chunks=20_000))
    deltas: list[str] = []

    result = await make().complete(ask(max_output_tokens=8_000), deltas.append)

    assert result.finish_reason == "looping"
    assert result.text == "A-sort\n" * len(deltas)
    assert 29 <= len(deltas) <= 40  # 200 characters of repeats, checked every 16 characters
    assert result.usage.output is None
    assert result.usage.input_uncached is None
    assert cost_of(result.usage, local_spec("ollama", "llama3.2"), datetime.now(UTC)).total_micros == 0
    for _ in range(200):  # the fake notices the closed connection at its next write
        if fake.loops:
            break
        await asyncio.sleep(0.01)
    assert fake.loops[0].client_left
    assert fake.loops[0].chunks_sent < 1_000


async def test_repetition_that_is_not_a_loop_is_left_alone(fake: OllamaFake, make: MakeBackend) -> None:
    rows = "".join(f"row {i},{i * i}\n" for i in range(200))
    fake.enqueue(Reply(rows, chunks=100))
    result = await make().complete(ask(max_output_tokens=4_000))
    assert result.finish_reason == "stop"
    assert result.text == rows


async def test_usage_and_timing_come_from_the_final_chunk(fake: OllamaFake, make: MakeBackend) -> None:
    fake.enqueue(Reply("ok", input_tokens=40, cache_read=60, output_tokens=25))

    result = await make().complete(ask())

    # prompt_eval_count (100) includes the 60 KV-cache hits; nothing is billed for them, so all is uncached.
    assert result.usage == Usage(input_uncached=100, cache_read=0, cache_write_5m=0, cache_write_1h=0, output=25)
    assert result.usage.reasoning is None
    prompt_ns, eval_ns = 100 * PROMPT_NS_PER_TOKEN, 25 * EVAL_NS_PER_TOKEN
    assert result.raw_usage == {
        "total_duration": LOAD_NS + prompt_ns + eval_ns,
        "load_duration": LOAD_NS,
        "prompt_eval_count": 100,
        "prompt_eval_duration": prompt_ns,
        "eval_count": 25,
        "eval_duration": eval_ns,
    }
    assert result.compute_s == pytest.approx((LOAD_NS + prompt_ns + eval_ns) / 1e9)
    assert result.tokens_per_s == pytest.approx(50.0)


async def test_prompt_eval_cached_count_is_kept_in_raw_usage_only(fake: OllamaFake, make: MakeBackend) -> None:
    fake.report_cached_count = True
    fake.enqueue(Reply("ok", input_tokens=10, cache_read=90, output_tokens=5))

    result = await make().complete(ask())

    assert result.raw_usage["prompt_eval_cached_count"] == 90
    assert result.usage == Usage(100, 0, 0, 0, 5)


async def test_length_finish_reason(fake: OllamaFake, make: MakeBackend) -> None:
    fake.enqueue(Reply("cut short", finish="length"))
    assert (await make().complete(ask())).finish_reason == "length"


async def test_thinking_is_not_part_of_the_text(fake: OllamaFake, make: MakeBackend) -> None:
    fake.enqueue(Reply("42", reasoning=12, output_tokens=20))
    deltas: list[str] = []

    result = await make().complete(ask(), deltas.append)

    assert result.text == "42"
    assert "".join(deltas) == "42"
    assert result.usage.output == 20  # eval_count counts thinking tokens too
    assert result.usage.reasoning is None  # Ollama does not split them out


async def test_golden_final_chunk_from_the_docs(fake: OllamaFake, make: MakeBackend) -> None:
    fake.enqueue(RecordedStream((DOCS_CHUNK, json.dumps(json.loads(DOCS_FINAL)))))

    result = await make().complete(ask())

    assert result.usage == Usage(26, 0, 0, 0, 282)
    assert usage_from_metrics(json.loads(DOCS_FINAL)) == Usage(26, 0, 0, 0, 282)
    assert result.text == "The"
    assert result.finish_reason is None  # this older example has no done_reason
    assert result.compute_s == pytest.approx(4.883583458)
    assert result.tokens_per_s == pytest.approx(282 / 4.535599)
    assert result.raw_usage["load_duration"] == 1334875


# --- what is sent ----------------------------------------------------------------------------------------


async def test_options_are_explicit(fake: OllamaFake, make: MakeBackend) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    request = ask(
        context_window=2048,
        max_output_tokens=100,
        temperature=0.3,
        stop=("\n\n",),
        seed=7,
        json_schema=schema,
    )

    await make().complete(request)

    body = fake.chat_bodies()[0]
    assert body["options"] == {
        "num_ctx": 2048,
        "num_predict": 100,
        "temperature": 0.3,
        "stop": ["\n\n"],
        "seed": 7,
    }
    assert body["format"] == schema
    assert "keep_alive" not in body  # the server's own default applies unless the config sets one


@pytest.mark.parametrize(
    ("model", "request_window", "config_window", "expected"),
    [
        pytest.param("llama3.2", 2048, 16384, 2048, id="request"),
        pytest.param("llama3.2", None, 16384, 16384, id="config"),
        pytest.param("qwen3:4b", None, None, 40960, id="api-show"),
        pytest.param("tiny:1b", None, None, DEFAULT_CONTEXT_WINDOW, id="default"),
    ],
)
async def test_num_ctx_is_always_sent(
    fake: OllamaFake,
    make: MakeBackend,
    model: str,
    request_window: int | None,
    config_window: int | None,
    expected: int,
) -> None:
    backend = make(context_window=config_window)

    await backend.complete(ask(model=model, context_window=request_window, max_output_tokens=77))
    await backend.complete(ask(model=model, context_window=request_window, max_output_tokens=77))

    for body in fake.chat_bodies():
        assert body["options"]["num_ctx"] == expected
        assert body["options"]["num_predict"] == 77
    shows = [r for r in fake.requests if r.path == "/api/show"]
    assert len(shows) == (1 if request_window is None and config_window is None else 0)  # cached per model


@pytest.mark.parametrize("keep_alive", ["10m", 0, -1])
async def test_keep_alive_is_forwarded(fake: OllamaFake, make: MakeBackend, keep_alive: str | int) -> None:
    backend = make(keep_alive=keep_alive)

    await backend.complete(ask(context_window=3000))

    assert fake.chat_bodies()[0]["keep_alive"] == keep_alive
    loaded = await backend.loaded_models()
    if keep_alive == 0:
        assert loaded == []  # keep_alive 0 unloads right after the answer
    else:
        assert [(m.name, m.context_length) for m in loaded] == [("llama3.2:latest", 3000)]


# --- refusing instead of truncating ----------------------------------------------------------------------


async def test_a_prompt_that_does_not_fit_is_refused_before_sending(fake: OllamaFake, make: MakeBackend) -> None:
    request = ask("x" * 300, context_window=128, max_output_tokens=32)
    prompt_estimate = 300 // 3 + 4 + 3  # the documented estimate: one 300-byte message

    with pytest.raises(ContextOverflow) as caught:
        await make().complete(request)

    message = str(caught.value)
    assert f"prompt ~{prompt_estimate} tokens + max output 32 > num_ctx 128" in message
    assert "ollama:llama3.2" in message
    assert caught.value.hint is not None
    assert "context_window" in caught.value.hint
    assert fake.model_requests() == []


async def test_overflow_against_the_models_own_window(fake: OllamaFake, make: MakeBackend) -> None:
    # tiny:1b reports no context length, so the window is the 4096 default; the prompt needs more.
    with pytest.raises(ContextOverflow, match="num_ctx 4096"):
        await make().complete(ask("y" * 13_000, model="tiny:1b"))
    assert fake.model_requests() == []
    assert [r.path for r in fake.requests] == ["/api/show"]


# --- errors ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("context_window", [2048, None], ids=["chat-404", "show-404"])
async def test_unknown_model_is_model_not_found(
    fake: OllamaFake, make: MakeBackend, context_window: int | None
) -> None:
    with pytest.raises(ModelNotFound) as caught:
        await make().complete(ask(model="nope:7b", context_window=context_window))

    error = caught.value
    assert "model 'nope:7b' not found" in error.message
    assert error.hint is not None
    assert "ollama pull nope:7b" in error.hint
    assert (error.provider, error.model, error.status) == ("ollama", "nope:7b", 404)


@pytest.mark.parametrize(
    ("status", "error_type", "words"),
    [
        (503, Overloaded, QUEUE_FULL),
        (429, RateLimited, "too many requests"),
        (400, BadRequest, "missing request body"),
        (401, AuthError, "unauthorized"),
        (403, AuthError, ""),
        (500, BackendUnavailable, "failed to generate"),
    ],
)
async def test_http_errors_are_typed(
    fake: OllamaFake, make: MakeBackend, status: int, error_type: type[BackendError], words: str
) -> None:
    fake.enqueue(HttpError(status))

    with pytest.raises(BackendError) as caught:
        await make().complete(ask())

    assert type(caught.value) is error_type
    assert caught.value.status == status
    assert words in caught.value.message
    assert caught.value.message.startswith("ollama:llama3.2: ")


@pytest.mark.parametrize(
    ("message", "error_type"),
    [
        ("the model failed to generate a response", ProtocolError),
        ("llama runner process has terminated: signal: killed", BackendUnavailable),
    ],
)
async def test_an_error_line_inside_a_200_stream_is_typed(
    fake: OllamaFake, make: MakeBackend, message: str, error_type: type[BackendError]
) -> None:
    fake.enqueue(MidStreamError(message=message, text="partial"))
    deltas: list[str] = []

    with pytest.raises(BackendError) as caught:
        await make().complete(ask(), deltas.append)

    assert type(caught.value) is error_type
    assert message in caught.value.message
    assert deltas == ["partial"]
    if isinstance(caught.value, ProtocolError):
        assert caught.value.partial_text == "partial"


async def test_a_cut_stream_is_a_protocol_error_with_the_partial_text(fake: OllamaFake, make: MakeBackend) -> None:
    fake.enqueue(CutStream(text="partial answer", after_chunks=1))

    with pytest.raises(ProtocolError) as caught:
        await make().complete(ask())

    assert caught.value.partial_text == "partial"


async def test_a_stream_without_usage_gives_unknown_usage_priced_at_zero_locally(
    fake: OllamaFake, make: MakeBackend
) -> None:
    fake.enqueue(NoUsage(text="all here"))

    result = await make().complete(ask())

    assert result.text == "all here"
    assert result.usage.input_uncached is None
    assert result.usage.output is None
    assert not result.usage.known
    assert result.tokens_per_s is None
    assert "prompt_eval_count" not in result.raw_usage
    assert "eval_count" not in result.raw_usage
    cost = cost_of(result.usage, local_spec("ollama", "llama3.2"), datetime.now(UTC))
    assert cost.priced
    assert cost.total_micros == 0
    assert result.usage.input_uncached is None  # ... but the usage itself stays unknown


@pytest.mark.parametrize(
    "malformed",
    [
        Malformed(),
        Malformed(body=b'{"unexpected": true}\n', content_type=NDJSON),
        Malformed(b"[1, 2]\n", NDJSON),
    ],
    ids=["not-json", "wrong-shape", "not-an-object"],
)
async def test_malformed_bodies_are_protocol_errors(fake: OllamaFake, make: MakeBackend, malformed: Malformed) -> None:
    fake.enqueue(malformed)
    with pytest.raises(ProtocolError):
        await make().complete(ask())


async def test_connection_refused_is_unavailable(make: MakeBackend, closed_port: int) -> None:
    with pytest.raises(BackendUnavailable) as caught:
        await make(host=f"127.0.0.1:{closed_port}").complete(ask(context_window=2048))

    assert type(caught.value) is BackendUnavailable
    assert caught.value.hint is not None
    assert "ollama serve" in caught.value.hint
    assert "OLLAMA_HOST" in caught.value.hint


async def test_a_hung_server_times_out(fake: OllamaFake, make: MakeBackend) -> None:
    fake.enqueue(Hang())

    with pytest.raises(BackendTimeout) as caught:
        await make().complete(ask(timeout_s=0.5))

    assert "0.5 s" in caught.value.message


# --- model management and health -------------------------------------------------------------------------


async def test_list_and_loaded_models(fake: OllamaFake, make: MakeBackend) -> None:
    backend = make()

    pulled = await backend.list_models()
    assert [(m.name, m.size_bytes, m.loaded) for m in pulled] == [
        ("llama3.2:latest", 2_019_393_189, False),
        ("qwen3:4b", 2_500_000_000, False),
        ("tiny:1b", 700_000_000, False),
    ]
    assert await backend.loaded_models() == []
    assert await backend.context_length("qwen3:4b") == 40960
    assert await backend.context_length("tiny:1b") is None

    await backend.complete(ask(model="qwen3:4b", context_window=8192))

    (loaded,) = await backend.loaded_models()
    assert (loaded.name, loaded.loaded, loaded.context_length) == ("qwen3:4b", True, 8192)
    assert loaded.expires_at is not None


async def test_health_lists_pulled_and_loaded_models(make: MakeBackend) -> None:
    with OllamaFake(models=("llama3.2", FakeModel("qwen3:4b", loaded=True))) as server:
        health = await make(host=server.url).health()

    assert health.ok
    assert (health.provider, health.kind) == ("ollama", "ollama")
    assert "2 pulled, 1 loaded" in health.detail
    assert {m.name: m.loaded for m in health.models} == {"llama3.2:latest": False, "qwen3:4b": True}


async def test_health_of_a_closed_port_is_not_ok_and_does_not_raise(make: MakeBackend, closed_port: int) -> None:
    health = await make(host=f"127.0.0.1:{closed_port}").health()

    assert not health.ok
    assert "ollama serve" in health.detail
    assert health.models == ()


async def test_model_management_errors_are_typed(make: MakeBackend, closed_port: int) -> None:
    backend = make(host=f"127.0.0.1:{closed_port}")
    with pytest.raises(BackendUnavailable):
        await backend.list_models()
    with pytest.raises(BackendUnavailable):
        await backend.context_length("llama3.2")


# --- hosts -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "http://127.0.0.1:{port}", ":{port}", "127.0.0.1:{port}/"])
async def test_ollama_host_forms(fake: OllamaFake, make: MakeBackend, form: str) -> None:
    result = await make(host=form.format(port=fake.port)).complete(ask())
    assert result.text == "ok"


async def test_ollama_host_from_the_environment(fake: OllamaFake) -> None:
    environ = {"OLLAMA_HOST": f"127.0.0.1:{fake.port}"}
    config = parse_config({}, "test", None, environ)
    backend = make_backend("ollama", config.providers["ollama"], environ)
    try:
        assert isinstance(backend, OllamaBackend)
        assert (await backend.complete(ask())).text == "ok"
    finally:
        await backend.aclose()

    # With no host in the config at all, the backend reads OLLAMA_HOST from the environ it was given.
    unset = OllamaBackend("ollama", ProviderConfig(kind="ollama"), environ)
    try:
        assert (await unset.health()).ok
    finally:
        await unset.aclose()


async def test_an_unusable_host_is_unavailable_not_a_crash(make: MakeBackend) -> None:
    backend = make(host="127.0.0.1:notaport")
    with pytest.raises(BackendUnavailable, match="not a usable Ollama address"):
        await backend.complete(ask(context_window=2048))
    health = await backend.health()
    assert not health.ok
    assert "127.0.0.1:notaport" in health.detail


def test_count_tokens_is_the_documented_estimate(make: MakeBackend) -> None:
    request = Request(model="llama3.2", messages=ESTIMATED_MESSAGES, max_output_tokens=16)
    count = make().count_tokens(request)
    assert (count.tokens, count.exact) == (ESTIMATED_TOKENS, False)


# --- the fake itself, through the official client --------------------------------------------------------


async def test_fake_answers_non_streaming_chat_and_version(fake: OllamaFake) -> None:
    fake.enqueue(Reply('{"age": 22}', input_tokens=34, output_tokens=12))
    client = ollama.AsyncClient(host=fake.url, timeout=5)
    try:
        response = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "age?"}], stream=False)
    finally:
        await client.close()  # type: ignore[no-untyped-call]
    assert response.message.content == '{"age": 22}'
    assert (response.done, response.done_reason, response.prompt_eval_count, response.eval_count) == (
        True,
        "stop",
        34,
        12,
    )
    async with httpx.AsyncClient(base_url=fake.url, timeout=5) as http:
        assert (await http.get("/api/version")).json() == {"version": fake.version}
        chat = await http.post("/api/chat", json={"model": "llama3.2", "messages": []})
        assert chat.headers["content-type"] == NDJSON
        missing = await http.post("/api/chat", json={"model": "ghost", "messages": []})
        assert (missing.status_code, missing.json()) == (404, {"error": "model 'ghost' not found"})
