"""The in-process MLX backend behind the gateway, with a tiny random Llama on the CPU: what only a local model
in this process can answer exactly (count_tokens from its own tokenizer, /api/show from its own files) and the
Ollama generate route translated to it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anthropic
import ollama
import pytest

from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.config import load_config
from supervisor.gateway.keys import mint_key
from supervisor.gateway.server import Gateway
from supervisor.ledger import Ledger
from supervisor.runtime.runtime import Runtime

CONFIG = """
[providers.mlx]
kind = "mlx"
local = true
models = {{ "tiny" = "{tiny}" }}

[tiers]
local = ["mlx:tiny"]

[agents.script]
goal = "an SDK script on a local model"
ladder = ["local"]
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (pip install 'frugal-supervisor[mlx]')")
    from tests.fakes.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("gateway-mlx") / "tiny")


@asynccontextmanager
async def gateway(tmp_path: Path, tiny: Path, home: Path) -> AsyncIterator[tuple[Gateway, Runtime, str]]:
    path = tmp_path / "supervisor.toml"
    path.write_text(CONFIG.format(tiny=tiny))
    config = load_config(path, dict(os.environ), required=True)
    ledger = Ledger(home / "ledger.db")
    runtime = Runtime(config, load_catalog(default_catalog_dirs()), ledger, home=home)
    try:
        async with Gateway(runtime, port=0) as gw:
            yield gw, runtime, mint_key(ledger, "script").token
    finally:
        await runtime.aclose()
        ledger.close()


async def test_count_tokens_on_an_mlx_route_is_the_prompt_size_the_call_records(
    tmp_path: Path, tiny_dir: Path, supervisor_home: Path
) -> None:
    async with gateway(tmp_path, tiny_dir, supervisor_home) as (gw, runtime, key):
        client = anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0)
        ask: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Hello there, what is 2 + 2?"}]
        counted = await client.messages.count_tokens(model="local", system="Answer briefly.", messages=ask)
        await client.messages.create(model="local", system="Answer briefly.", messages=ask, max_tokens=2)
        await client.close()
        (row,) = runtime.ledger.calls(agent="script")
        assert counted.input_tokens == row["input_uncached"] > 0


async def test_ollama_show_reads_the_mlx_models_own_files(
    tmp_path: Path, tiny_dir: Path, supervisor_home: Path
) -> None:
    from tests.fakes.tiny_model import MAX_POSITIONS

    async with gateway(tmp_path, tiny_dir, supervisor_home) as (gw, runtime, key):
        shown = await ollama.AsyncClient(host=gw.url, headers={"x-api-key": key}).show("local")
        spec = runtime.catalog.get("mlx:tiny") or runtime.router.candidates("local")[0][0].spec
        assert shown.details is not None
        assert (shown.details.format, shown.details.family) == ("mlx", "llama")
        assert shown.modelinfo is not None
        assert shown.modelinfo["llama.context_length"] == min(MAX_POSITIONS, spec.context_window)
        backend = runtime.pool.get("mlx")
        assert shown.modelinfo["general.parameter_count"] == backend.model_facts("tiny").parameter_count  # type: ignore[attr-defined]
        assert shown.capabilities == ["completion"]  # text only: tools go to a model that can call them
        assert backend.loaded_models() == []  # read from the files: nothing was loaded to answer


async def test_ollama_generate_is_translated_to_the_mlx_model(
    tmp_path: Path, tiny_dir: Path, supervisor_home: Path
) -> None:
    async with gateway(tmp_path, tiny_dir, supervisor_home) as (gw, runtime, key):
        client = ollama.AsyncClient(host=gw.url, headers={"x-api-key": key})
        parts = [
            p
            async for p in await client.generate(
                model="local", prompt="Say hi.", stream=True, options={"num_predict": 3}
            )
        ]
        assert "".join(p.response for p in parts)
        assert parts[-1].done
        assert parts[-1].eval_count == 3
        whole = await client.generate(model="tiny", prompt="Say hi.", options={"num_predict": 2})
        assert whole.response
        assert whole.eval_count == 2
        rows = list(reversed(runtime.ledger.calls(agent="script")))
        assert [(r["output"], r["provider"], r["cost_micros"]) for r in rows] == [(3, "mlx", 0), (2, "mlx", 0)]
        assert rows[0]["input_uncached"] == parts[-1].prompt_eval_count
        assert runtime.ledger.held_reservations() == []
