"""The official openai, anthropic and ollama clients against a running gateway that forwards to the loopback
protocol fakes: every call lands in the ledger under its agent, priced to the micro-dollar."""

from __future__ import annotations

from pathlib import Path

import anthropic
import ollama
import openai
import pytest

from supervisor.cost import cost_of
from supervisor.usage import Usage
from tests.fakes.base import Reply
from tests.gateway_harness import running_gateway


async def test_openai_chat_passes_through_and_prices_the_call(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        g.openai.enqueue(Reply("hello there", input_tokens=100, cache_read=40, output_tokens=7))
        client = openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=g.key(), max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            model="cheap", messages=[{"role": "user", "content": "hi"}]
        )
        reply = raw.parse()
        assert reply.choices[0].message.content == "hello there"
        assert raw.headers["x-supervisor-served-model"] == "deepseek:deepseek-flash"
        [row] = g.calls("aider")
        spec = g.runtime.catalog.get("deepseek:deepseek-flash")
        expected = cost_of(Usage(100, 40, 0, 0, 7, None), spec, __import__("datetime").datetime.now(__import__("datetime").UTC))
        assert (row["input_uncached"], row["cache_read"], row["output"]) == (100, 40, 7)
        assert row["cost_micros"] == expected.total_micros
        assert row["requested_model"] == "cheap" and row["via"] == "gateway" and row["auth"] == "key"
        assert g.ledger.held_reservations() == []
