"""The real embedded SmolLM2 behind the gateway: the in-process MLX backend serves OpenAI, Anthropic and Ollama
clients through the translators (tiny prompts, a few tokens: it runs at a few tokens per second here)."""

from __future__ import annotations

import os
from pathlib import Path

import anthropic
import ollama
import openai
import pytest

from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.config import load_config
from supervisor.gateway.keys import mint_key
from supervisor.gateway.server import Gateway
from supervisor.ledger import Ledger
from supervisor.runtime.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CONFIG = """
[providers.mlx]
kind = "mlx"
local = true
models = {{ "smollm2-135m" = "{gguf}" }}

[tiers]
local = ["mlx:smollm2-135m"]

[agents.script]
goal = "an SDK script on the embedded model"
ladder = ["local"]
"""


async def test_smollm2_serves_each_protocol_through_the_gateway(
    tmp_path: Path, embedded_gguf: Path, supervisor_home: Path
) -> None:
    path = tmp_path / "supervisor.toml"
    path.write_text(CONFIG.format(gguf=embedded_gguf))
    config = load_config(path, dict(os.environ), required=True)
    ledger = Ledger(supervisor_home / "ledger.db")
    runtime = Runtime(config, load_catalog(default_catalog_dirs()), ledger, home=supervisor_home)
    key = mint_key(ledger, "script").token
    ask = [{"role": "user", "content": "Say hi."}]
    try:
        async with Gateway(runtime, port=0) as gw:
            client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
            whole = await client.chat.completions.create(model="local", messages=ask, max_tokens=3)
            assert whole.choices[0].message.content
            assert whole.usage is not None
            assert whole.usage.completion_tokens <= 3
            stream = await client.chat.completions.create(
                model="smollm2", messages=ask, max_tokens=3, stream=True, stream_options={"include_usage": True}
            )
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            await client.close()
            anth = anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0)
            message = await anth.messages.create(model="auto", max_tokens=3, messages=ask)
            assert message.content[0].text  # type: ignore[union-attr]
            await anth.close()
            parts = [
                p
                async for p in await ollama.AsyncClient(host=gw.url, headers={"x-api-key": key}).chat(
                    model="local", messages=ask, stream=True, options={"num_predict": 3}
                )
            ]
            assert parts[-1].done
            assert parts[-1].eval_count is not None
            assert parts[-1].eval_count <= 3
        rows = list(reversed(ledger.calls(agent="script")))
        assert [r["requested_model"] for r in rows] == ["local", "smollm2", "auto", "local"]
        assert all(r["provider"] == "mlx" and r["cost_micros"] == 0 and r["priced"] == 1 for r in rows)
        assert rows[0]["input_uncached"] == whole.usage.prompt_tokens
        assert rows[0]["output"] == whole.usage.completion_tokens
        assert rows[1]["output"] == chunks[-1].usage.completion_tokens  # type: ignore[union-attr]
        assert ledger.held_reservations() == []
    finally:
        await runtime.aclose()
        ledger.close()
