"""MLXBackend and the GGUF loader against real mlx-lm on the CPU, with tiny random models built in fixtures.

The tiny model (tests/fakes/tiny_model.py) never picks its end-of-turn token under greedy sampling, so every
generation runs to max_output_tokens unless a test makes it stop; and every token it picks is printable ASCII,
so each token streams out as a text delta at once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from supervisor.backends.base import Message, Request
from supervisor.backends.mlx import MLXBackend
from supervisor.config import ProviderConfig
from supervisor.errors import BackendTimeout, BackendUnavailable, ContextOverflow, ModelNotFound
from supervisor.models_pull import EMBEDDED_MODELS, embedded_model_path
from tests.fakes.tiny_model import (
    HEADS,
    HIDDEN,
    MAX_POSITIONS,
    ROPE_THETA,
    build_tiny_gguf,
    build_tiny_llama,
    tiny_reference_weights,
    write_gguf,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Hello there, what is the capital of France?"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models on disk: two MLX directories (different seeds) and the first one as GGUF in four encodings."""
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (pip install 'frugal-supervisor[mlx]')")
    root = tmp_path_factory.mktemp("tiny-models")
    models = {
        "tiny": build_tiny_llama(root / "tiny"),
        "tiny-b": build_tiny_llama(root / "tiny-b", seed=1),
    }
    for quant in ("f32", "q8_0", "q4_0", "q4_1"):
        models[f"tiny-{quant}"] = build_tiny_gguf(root / f"tiny-{quant}.gguf", quant)
    return models


def make_backend(models: Mapping[str, str | Path], **config: Any) -> MLXBackend:
    provider_config = ProviderConfig(kind="mlx", local=True, models={k: str(v) for k, v in models.items()}, **config)
    return MLXBackend("mlx", provider_config, dict(os.environ))


@pytest.fixture
async def backend(tiny_models: dict[str, Path]) -> AsyncIterator[MLXBackend]:
    mlx = make_backend(tiny_models)
    yield mlx
    await mlx.aclose()


def request(model: str = "tiny", text: str = PROMPT, **fields: Any) -> Request:
    fields.setdefault("max_output_tokens", 8)
    return Request(model=model, messages=(Message("user", text),), **fields)


def reference_prompt_ids(model_dir: Path, text: str = PROMPT) -> list[int]:
    """The chat-templated prompt, tokenized by mlx-lm's own tokenizer loader (independently of the backend)."""
    from mlx_lm.utils import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))


# ----------------------------------------------------------------------------------------------------------
# Import hygiene


def test_importing_the_backend_does_not_import_mlx(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "import supervisor.backends.mlx, supervisor.backends.gguf, supervisor.models_pull\n"
        "from supervisor.config import ProviderConfig\n"
        f"backend = supervisor.backends.mlx.MLXBackend('mlx', ProviderConfig(kind='mlx'), "
        f"{{'SUPERVISOR_HOME': {str(tmp_path)!r}}})\n"
        "health = asyncio.run(backend.health())\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'transformers'))\n"
        "assert not heavy, heavy\n"
        "print(health.ok, health.detail)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "smollm2-135m" in done.stdout  # health tells how to get a model


# ----------------------------------------------------------------------------------------------------------
# Generation and exact usage


async def test_complete_returns_text_and_exact_usage(backend: MLXBackend, tiny_models: dict[str, Path]) -> None:
    result = await backend.complete(request(max_output_tokens=8))

    prompt_ids = reference_prompt_ids(tiny_models["tiny"])
    assert result.text
    assert result.finish_reason == "length"
    assert result.usage.input_uncached == len(prompt_ids)
    assert result.usage.cache_read == 0
    assert result.usage.cache_write == 0
    assert result.usage.output == 8
    assert result.raw_usage["generation_tokens"] == 8
    assert result.raw_usage["prompt_tokens"] == len(prompt_ids)
    assert {"prompt_tps", "generation_tps", "peak_memory"} <= result.raw_usage.keys()
    assert result.tokens_per_s == result.raw_usage["generation_tps"]
    assert result.compute_s is not None
    assert result.compute_s > 0
    assert result.ttft_s is not None
    assert result.ttft_s <= result.total_s
    assert result.model_reported == str(tiny_models["tiny"].resolve())


async def test_count_tokens_is_exact(backend: MLXBackend, tiny_models: dict[str, Path]) -> None:
    messages = (Message("system", "Be brief."), Message("user", PROMPT))
    count = backend.count_tokens(Request(model="tiny", messages=messages, max_output_tokens=4))

    from mlx_lm.utils import load_tokenizer

    expected = load_tokenizer(tiny_models["tiny"]).apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages], add_generation_prompt=True
    )
    assert count.exact
    assert count.tokens == len(expected)
    result = await backend.complete(Request(model="tiny", messages=messages, max_output_tokens=4))
    assert result.usage.input_uncached == count.tokens


async def test_text_deltas_join_to_the_text(backend: MLXBackend) -> None:
    deltas: list[str] = []
    result = await backend.complete(request(max_output_tokens=24), on_text=deltas.append)

    assert len(deltas) > 1
    assert "".join(deltas) == result.text


async def test_max_output_tokens_is_respected(backend: MLXBackend) -> None:
    for budget in (1, 5):
        result = await backend.complete(request(max_output_tokens=budget))
        assert result.finish_reason == "length"
        assert result.usage.output == budget


async def test_stop_string_trims_the_text_and_stops(backend: MLXBackend) -> None:
    full = (await backend.complete(request(max_output_tokens=24))).text
    stop = full[4:8]  # spans several one-token deltas
    expected = full[: full.index(stop)]

    deltas: list[str] = []
    result = await backend.complete(request(max_output_tokens=24, stop=(stop,)), on_text=deltas.append)

    assert result.text == expected
    assert "".join(deltas) == expected
    assert result.finish_reason == "stop"
    assert result.raw_usage["stop"] == stop
    assert result.usage.output is not None
    assert result.usage.output < 24


async def test_eos_ends_generation_and_is_counted(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """mlx-lm's last response counts the EOS token it stopped on (protocols.md 2.3)."""
    from mlx_lm import load, stream_generate

    model, tokenizer = load(str(tiny_models["tiny"]))
    first_token = next(iter(stream_generate(model, tokenizer, reference_prompt_ids(tiny_models["tiny"]), 1))).token
    stops_at_once = build_tiny_llama(tmp_path / "eos", eos_token_ids=[first_token])
    mlx = make_backend({"eos": stops_at_once})
    deltas: list[str] = []
    try:
        result = await mlx.complete(request("eos", max_output_tokens=8), on_text=deltas.append)
    finally:
        await mlx.aclose()

    assert result.finish_reason == "stop"
    assert result.text == ""
    assert deltas == []
    assert result.usage.output == 1


async def test_seeded_sampling_is_reproducible(backend: MLXBackend) -> None:
    first = await backend.complete(request(max_output_tokens=12, temperature=1.0, seed=7))
    second = await backend.complete(request(max_output_tokens=12, temperature=1.0, seed=7))
    assert first.text == second.text


# ----------------------------------------------------------------------------------------------------------
# Refusals and errors


async def test_context_overflow_is_refused_before_generating(backend: MLXBackend) -> None:
    prompt_tokens = backend.count_tokens(request())
    with pytest.raises(ContextOverflow) as overflow:
        await backend.complete(request(max_output_tokens=MAX_POSITIONS - prompt_tokens.tokens + 1))
    assert str(MAX_POSITIONS) in str(overflow.value)
    with pytest.raises(ContextOverflow):  # the caller's window is honoured...
        await backend.complete(request(max_output_tokens=4, context_window=prompt_tokens.tokens + 3))
    with pytest.raises(ContextOverflow):  # ...but never beyond the model's own
        await backend.complete(request(max_output_tokens=MAX_POSITIONS, context_window=100_000))

    assert backend.stats().calls == 0
    assert backend.stats().generated_tokens == 0
    fits = await backend.complete(request(max_output_tokens=MAX_POSITIONS - prompt_tokens.tokens))
    assert fits.raw_usage["context_window"] == MAX_POSITIONS


async def test_unknown_models_are_model_not_found(backend: MLXBackend, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="unknown mlx model"):
        await backend.complete(request("no-such-model"))
    with pytest.raises(ModelNotFound, match="unknown mlx model"):
        backend.count_tokens(request("no-such-model"))
    with pytest.raises(ModelNotFound, match="does not exist"):
        await backend.complete(request(str(tmp_path / "missing-dir")))
    with pytest.raises(ModelNotFound) as not_pulled:
        await backend.complete(request("smollm2-135m"))
    assert not_pulled.value.hint == "supervisor models pull smollm2-135m"


async def test_uncached_hugging_face_repo_is_model_not_found_offline(backend: MLXBackend) -> None:
    with pytest.raises(ModelNotFound) as missing:
        await backend.complete(request("example-org/not-downloaded-4bit"))
    assert "hf download example-org/not-downloaded-4bit" in (missing.value.hint or "")


async def test_a_directory_without_weights_is_model_not_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    mlx = make_backend({"empty": tmp_path / "empty"})
    try:
        with pytest.raises(ModelNotFound, match="not an MLX model directory"):
            await mlx.complete(request("empty"))
    finally:
        await mlx.aclose()


async def test_timeout_stops_generation(backend: MLXBackend) -> None:
    await backend.load("tiny")
    with pytest.raises(BackendTimeout):
        await backend.complete(request(max_output_tokens=400, timeout_s=0.05))
    await backend.load("tiny")  # queued behind the timed-out call: it has stopped when this returns
    assert backend.stats().generated_tokens < 400


# ----------------------------------------------------------------------------------------------------------
# Concurrency: the event loop stays free, cancellation stops the worker


async def test_event_loop_stays_responsive_while_generating(backend: MLXBackend) -> None:
    await backend.load("tiny")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await backend.complete(request(max_output_tokens=64))
    during = ticks - before
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert during >= 1


async def test_cancelling_the_call_stops_generation(backend: MLXBackend) -> None:
    await backend.load("tiny")
    deltas: list[str] = []

    def cancel_on_first_delta(delta: str) -> None:
        deltas.append(delta)
        call.cancel()

    call = asyncio.create_task(backend.complete(request(max_output_tokens=400), on_text=cancel_on_first_delta))
    with pytest.raises(asyncio.CancelledError):
        await call
    await backend.load("tiny")  # runs after the cancelled generation has left the worker thread

    assert deltas
    assert len(deltas) == 1
    assert backend.stats().cancelled_calls == 1
    assert backend.stats().generated_tokens < 400
    after = await backend.complete(request(max_output_tokens=3))  # the backend is still usable
    assert after.usage.output == 3


# ----------------------------------------------------------------------------------------------------------
# Memory budget and model listing


async def test_least_recently_used_model_is_unloaded_beyond_the_budget(tiny_models: dict[str, Path]) -> None:
    mlx = make_backend(tiny_models, memory_budget_mb=1)
    try:
        await mlx.complete(request("tiny", max_output_tokens=2))
        [first] = mlx.loaded_models()
        assert first.name == "tiny"
        assert first.size_bytes is not None
        assert 0.5 * 1024 * 1024 < first.size_bytes <= 1024 * 1024
        await mlx.complete(request("tiny-b", max_output_tokens=2))
        assert [m.name for m in mlx.loaded_models()] == ["tiny-b"]
    finally:
        await mlx.aclose()

    roomy = make_backend(tiny_models, memory_budget_mb=4)
    try:
        await roomy.complete(request("tiny", max_output_tokens=2))
        await roomy.complete(request("tiny-b", max_output_tokens=2))
        await roomy.complete(request("tiny", max_output_tokens=2))
        loaded = roomy.loaded_models()
        assert [m.name for m in loaded] == ["tiny", "tiny-b"]  # most recently used first
        assert roomy.memory_used_bytes() == sum(m.size_bytes or 0 for m in loaded)
        assert await roomy.unload("tiny-b")
        assert [m.name for m in roomy.loaded_models()] == ["tiny"]
    finally:
        await roomy.aclose()
    assert roomy.loaded_models() == []


async def test_available_models_and_health(tiny_models: dict[str, Path], supervisor_home: Path) -> None:
    embedded = embedded_model_path("smollm2-135m", {"SUPERVISOR_HOME": str(supervisor_home)})
    embedded.parent.mkdir(parents=True)
    with embedded.open("wb") as sparse:  # the right size is what "pulled" means; the bytes are never read here
        sparse.truncate(EMBEDDED_MODELS["smollm2-135m"].size_bytes)
    mlx = make_backend({"tiny": tiny_models["tiny"], "gone": "/nonexistent/model.gguf", "q8": tiny_models["tiny-q8_0"]})
    try:
        await mlx.load("tiny")
        available = {m.name: m for m in mlx.available_models()}
        assert set(available) == {"tiny", "q8", "smollm2-135m"}
        assert available["tiny"].loaded
        assert not available["q8"].loaded
        assert available["smollm2-135m"].size_bytes == EMBEDDED_MODELS["smollm2-135m"].size_bytes
        health = await mlx.health()
        assert health.ok
        assert "1 loaded" in health.detail
        assert {m.name for m in health.models} == set(available)
    finally:
        await mlx.aclose()


# ----------------------------------------------------------------------------------------------------------
# GGUF


def _logits(model: Any, prompt: list[int]) -> np.ndarray:
    import mlx.core as mx

    return np.array(model(mx.array([prompt])).astype(mx.float32))


def test_gguf_f32_matches_the_directory_model(tiny_models: dict[str, Path]) -> None:
    """Same weights: GGUF names, Q/K permuted for interleaved RoPE, tokenizer rebuilt from metadata."""
    from mlx_lm import load

    from supervisor.backends.gguf import load_gguf

    model, tokenizer = load(str(tiny_models["tiny"]))
    gguf_model, gguf_tokenizer, config = load_gguf(tiny_models["tiny-f32"])
    prompt = reference_prompt_ids(tiny_models["tiny"])
    text = "Numbers 12345, ünïcödé and <|im_end|> stay the same"

    assert (
        gguf_tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True) == prompt
    )
    assert gguf_tokenizer.encode(text) == tokenizer.encode(text)
    assert gguf_tokenizer.decode(gguf_tokenizer.encode(text)) == text
    assert gguf_tokenizer.eos_token_ids == tokenizer.eos_token_ids
    assert config["context_length"] == MAX_POSITIONS
    assert config["rope_traditional"]
    np.testing.assert_allclose(_logits(gguf_model, prompt), _logits(model, prompt), atol=1e-3)


@pytest.mark.parametrize(("quant", "bits", "tolerance"), [("q8_0", 8, 0.01), ("q4_0", 4, 0.12), ("q4_1", 4, 0.08)])
def test_gguf_quantized_layers_keep_the_weights(
    tiny_models: dict[str, Path], quant: str, bits: int, tolerance: float
) -> None:
    import mlx.core as mx

    from supervisor.backends.gguf import load_gguf

    model, _, config = load_gguf(tiny_models[f"tiny-{quant}"])
    reference = tiny_reference_weights()
    layers = {
        "model.layers.0.self_attn.q_proj": "blk.0.attn_q.weight",
        "model.layers.1.mlp.down_proj": "blk.1.ffn_down.weight",
        "model.embed_tokens": "token_embd.weight",
        "lm_head": "output.weight",
    }
    modules = dict(model.named_modules())
    for path, gguf_name in layers.items():
        assert config["quantization"][path] == {"bits": bits, "group_size": 32}
        layer = modules[path]
        weight = mx.dequantize(layer.weight, layer.scales, layer.biases, group_size=32, bits=bits)
        np.testing.assert_allclose(np.array(weight), reference[gguf_name], atol=tolerance)


async def test_backend_serves_a_quantized_gguf(tiny_models: dict[str, Path]) -> None:
    mlx = make_backend({"tiny-q4": tiny_models["tiny-q4_0"]})
    deltas: list[str] = []
    try:
        count = mlx.count_tokens(request("tiny-q4"))
        result = await mlx.complete(request("tiny-q4", max_output_tokens=6), on_text=deltas.append)
    finally:
        await mlx.aclose()
    assert count.tokens == len(reference_prompt_ids(tiny_models["tiny"]))
    assert result.usage.input_uncached == count.tokens
    assert result.usage.output == 6
    assert "".join(deltas) == result.text
    assert result.raw_usage["context_window"] == MAX_POSITIONS


async def test_gguf_with_tied_embeddings(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    from supervisor.backends.gguf import load_gguf

    path = build_tiny_gguf(tmp_path / "tied.gguf", "q8_0", tie_embeddings=True)
    model, _, config = load_gguf(path)
    assert config["tie_word_embeddings"]
    assert "lm_head" not in dict(model.named_modules())
    mlx = make_backend({"tied": path})
    try:
        result = await mlx.complete(request("tied", max_output_tokens=4))
    finally:
        await mlx.aclose()
    assert result.usage.output is not None
    assert 1 <= result.usage.output <= 4


def test_gguf_llama3_rope_frequency_factors(tmp_path: Path) -> None:
    """A Llama 3 file's rope_freqs tensor gives the same rotary angles as mlx-lm's llama3 rope_scaling."""
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.rope_utils import Llama3RoPE

    from supervisor.backends.gguf import load_gguf

    head_dim = HIDDEN // HEADS
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    llama3 = Llama3RoPE(head_dim, MAX_POSITIONS, base=ROPE_THETA, scaling_config=scaling)
    base_periods = ROPE_THETA ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim)
    factors = np.array(llama3._freqs / base_periods, dtype=np.float32)
    assert factors.min() == 1.0
    assert factors.max() == 8.0

    model, _ = load(str(build_tiny_llama(tmp_path / "llama3", config_overrides={"rope_scaling": scaling})))
    path = build_tiny_gguf(tmp_path / "llama3.gguf", extra_tensors={"rope_freqs.weight": factors})
    gguf_model, _, config = load_gguf(path)
    prompt = list(range(3, 60))
    assert config["rope_frequency_factors"]
    np.testing.assert_allclose(_logits(gguf_model, prompt), _logits(model, prompt), atol=1e-3)


@pytest.mark.parametrize(
    ("metadata", "tensors", "match"),
    [
        ({"general.architecture": "qwen2"}, {}, "architecture 'qwen2' is not supported"),
        ({"tokenizer.ggml.model": "bert"}, {}, "tokenizer 'bert' is not supported"),
        ({}, {"blk.0.attn_rot_embd.weight": np.zeros(4, dtype=np.float32)}, "unexpected tensor"),
        ({"llama.rope.scaling.type": "yarn"}, {}, "RoPE scaling 'yarn'"),
        ({"tokenizer.ggml.merges": ["h e", "no such-token"]}, {}, "merges entry 'no such-token'"),
    ],
)
async def test_unsupported_gguf_is_a_clear_error(
    tmp_path: Path, metadata: dict[str, Any], tensors: dict[str, np.ndarray], match: str
) -> None:
    path = build_tiny_gguf(tmp_path / "odd.gguf", metadata_overrides=metadata, extra_tensors=tensors)
    mlx = make_backend({"odd": path})
    try:
        with pytest.raises(ModelNotFound, match=match) as error:
            await mlx.complete(request("odd"))
    finally:
        await mlx.aclose()
    assert str(path) in error.value.message
    assert error.value.hint


async def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"this is not a GGUF file")
    truncated = write_gguf(tmp_path / "empty.gguf", {"general.architecture": "llama"}, {})
    mlx = make_backend({"broken": path, "empty": truncated})
    try:
        with pytest.raises(ModelNotFound, match="cannot read this GGUF"):
            await mlx.complete(request("broken"))
        with pytest.raises(ModelNotFound, match=r"llama\.\w+ is missing|no tokenizer"):
            await mlx.complete(request("empty"))
    finally:
        await mlx.aclose()


def _sentencepiece_metadata() -> dict[str, Any]:
    """A tiny Llama-style (SentencePiece) vocabulary: specials, 256 byte tokens, and a few merged pieces."""
    pieces = ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "ll", "▁he", "llo", "▁hello", "▁w", "or", "▁wor", "ld"]
    pieces.append("▁world")
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *pieces]
    token_types = [2, 3, 3, *([6] * 256), *([1] * len(pieces))]
    scores = [0.0, 0.0, 0.0, *([0.0] * 256), *(-float(i) for i in range(len(pieces)))]
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": token_types,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }


def test_sentencepiece_gguf_tokenizer() -> None:
    from mlx_lm.tokenizer_utils import SPMStreamingDetokenizer

    from supervisor.backends.gguf import tokenizer_from_metadata

    tokenizer = tokenizer_from_metadata(_sentencepiece_metadata())
    ids = tokenizer.encode("hello world")
    assert tokenizer.convert_ids_to_tokens(ids) == ["<s>", "▁hello", "▁world"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "hello world"
    accented = tokenizer.encode("hé", add_special_tokens=False)
    assert "<0xC3>" in tokenizer.convert_ids_to_tokens(accented)  # byte fallback for what the vocab lacks
    assert tokenizer.decode(accented) == "hé"
    assert tokenizer.eos_token_ids == {2}
    assert isinstance(tokenizer.detokenizer, SPMStreamingDetokenizer)


def test_weight_names_map_onto_mlx_lm_llama() -> None:
    from supervisor.backends.gguf import translate_weight_name

    cases: dict[str, str | None] = {
        "token_embd.weight": "model.embed_tokens.weight",
        "token_embd.scales": "model.embed_tokens.scales",
        "output_norm.weight": "model.norm.weight",
        "output.biases": "lm_head.biases",
        "blk.12.attn_output.weight": "model.layers.12.self_attn.o_proj.weight",
        "blk.0.attn_q.scales": "model.layers.0.self_attn.q_proj.scales",
        "blk.3.ffn_norm.weight": "model.layers.3.post_attention_layernorm.weight",
        "blk.3.ffn_gate.weight": "model.layers.3.mlp.gate_proj.weight",
        "blk.0.attn_rot_embd.weight": None,
        "rope_freqs.weight": None,
    }
    translate: Callable[[str], str | None] = translate_weight_name
    assert {name: translate(name) for name in cases} == cases


async def test_closing_the_backend_stops_a_running_generation(tiny_models: dict[str, Path]) -> None:
    mlx = make_backend(tiny_models)
    await mlx.load("tiny")
    started = asyncio.Event()
    call = asyncio.create_task(mlx.complete(request(max_output_tokens=400), on_text=lambda _: started.set()))
    await started.wait()
    await mlx.aclose()
    with pytest.raises(BackendUnavailable, match="closed while tiny was generating"):
        await call
    assert mlx.loaded_models() == []
    assert mlx.stats().generated_tokens < 400


# ----------------------------------------------------------------------------------------------------------
# Runaway generation and a clean exit


async def test_a_looping_generation_is_stopped_with_exact_usage(tmp_path: Path) -> None:
    """A model stuck in a loop (built to cycle "A-sort\\n") stops after ~200 characters, not at its budget."""
    from tests.fakes.tiny_model import build_looping_llama

    mlx = make_backend({"loop": build_looping_llama(tmp_path / "loop")})
    deltas: list[str] = []
    try:
        result = await mlx.complete(request("loop", max_output_tokens=3000), deltas.append)
    finally:
        await mlx.aclose()
    assert result.finish_reason == "looping"
    assert result.text.startswith("A-sort\nA-sort\n")
    assert "".join(deltas) == result.text
    assert result.usage.output is not None
    assert 200 <= result.usage.output < 260  # exact: one token per character for this tokenizer
    assert mlx.stats().generated_tokens == result.usage.output


@pytest.mark.slow
def test_supervisor_ask_exits_cleanly_every_time(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """20 runs in a row of a real `supervisor ask` against the tiny model: exit 0 each time, never the abort
    ("terminate called without an active exception", 134) that mlx's thread teardown used to cause."""
    config = tmp_path / "supervisor.toml"
    config.write_text(f'[providers.mlx]\nkind = "mlx"\nlocal = true\nmodels = {{ tiny = "{tiny_models["tiny"]}" }}\n')
    for number in range(1, 21):
        done = subprocess.run(
            [sys.executable, "-m", "supervisor", "ask", "--config", str(config), "mlx:tiny", "hi", "--max-tokens", "4"],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ,
            check=False,
            cwd=REPO_ROOT,
        )
        assert done.returncode == 0, (number, done.returncode, done.stderr[-500:])
        assert "terminate called" not in done.stderr
        assert "[mlx:tiny:" in done.stderr  # the answer's usage line: the call really ran
