"""The official openai, anthropic and ollama clients against a running gateway that forwards to the loopback
protocol fakes: every call lands in the ledger under its agent, priced to the micro-dollar, and every refusal is
the SDK's own exception with exactly one request made."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import pytest

from supervisor.cost import cost_of
from supervisor.usage import Usage
from tests.fakes.base import Reply, ToolUse, tool_reply
from tests.gateway_harness import AGENTS, Setup, running_gateway


def expected_micros(g: Setup, key: str, usage: Usage) -> int:
    spec = g.runtime.catalog.get(key)
    assert spec is not None
    return cost_of(usage, spec, datetime.now(UTC)).total_micros


def only_call(g: Setup, agent: str = "aider") -> dict[str, Any]:
    rows = g.calls(agent)
    assert len(rows) == 1, rows
    assert g.ledger.held_reservations() == []
    return rows[0]


def oai(g: Setup, key: str | None = None) -> openai.AsyncOpenAI:
    return g.track(openai.AsyncOpenAI(base_url=g.url + "/v1", api_key=key or g.key()))


def anth(g: Setup, key: str | None = None) -> anthropic.AsyncAnthropic:
    return g.track(anthropic.AsyncAnthropic(base_url=g.url, api_key=key or g.key()))


def oll(g: Setup, key: str | None = None) -> ollama.AsyncClient:
    return g.track(ollama.AsyncClient(host=g.url, headers={"Authorization": f"Bearer {key or g.key()}"}))


# ------------------------------------------------------------------------------------------------------------
# OpenAI Chat Completions (pass-through to the OpenAI-compatible fake, DeepSeek's hit/miss usage)


async def test_openai_chat_json_passes_through_and_prices_the_call(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        g.openai.enqueue(Reply("hello there", input_tokens=100, cache_read=40, output_tokens=7))
        raw = await oai(g).chat.completions.with_raw_response.create(
            model="cheap", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().choices[0].message.content == "hello there"
        assert raw.headers["x-supervisor-served-model"] == "deepseek:deepseek-flash"
        assert "x-supervisor-substituted" not in raw.headers
        row = only_call(g)
        assert (row["input_uncached"], row["cache_read"], row["output"]) == (100, 40, 7)
        assert row["cost_micros"] == expected_micros(g, "deepseek:deepseek-flash", Usage(100, 40, 0, 0, 7, None))
        assert (row["requested_model"], row["via"], row["auth"], row["provider"]) == (
            "cheap",
            "gateway",
            "key",
            "deepseek",
        )
        sent = g.openai.model_requests()[-1]
        headers = {k.lower(): v for k, v in sent.headers.items()}
        assert headers["authorization"] == "Bearer " + g.environ["DEEPSEEK_API_KEY"]
        assert sent.json["model"] == "deepseek-flash"
        assert sent.json["max_tokens"] == 4096


async def test_openai_chat_stream_relays_events_and_drops_the_usage_chunk_nobody_asked_for(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        g.openai.enqueue(Reply("one two three", input_tokens=50, cache_read=10, output_tokens=3, chunks=3))
        stream = await oai(g).chat.completions.create(
            model="cheap", messages=[{"role": "user", "content": "count"}], stream=True, max_tokens=50
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"
        assert all(c.choices for c in chunks), "the usage-only chunk the gateway added reached the client"
        sent = g.openai.model_requests()[-1].json
        assert sent["stream_options"] == {"include_usage": True}
        assert sent["max_tokens"] == 50
        row = only_call(g)
        assert (row["input_uncached"], row["cache_read"], row["output"]) == (50, 10, 3)
        assert row["cost_micros"] == expected_micros(g, "deepseek:deepseek-flash", Usage(50, 10, 0, 0, 3, None))


async def test_openai_chat_stream_keeps_the_usage_chunk_when_the_client_asks(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        g.openai.enqueue(Reply("ok", input_tokens=20, output_tokens=2))
        stream = await oai(g).chat.completions.create(
            model="cheap",
            messages=[{"role": "user", "content": "x"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 2
        assert only_call(g)["output"] == 2


async def test_models_list_names_what_the_key_may_use_in_each_shape(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        key = g.key()
        ids = [m.id async for m in oai(g, key).models.list()]
        assert ids[:4] == ["auto", "local", "cheap", "frontier"]
        assert "claude-sonnet-5-5" in ids
        assert "deepseek:deepseek-flash" in ids
        page = await anth(g, key).models.list()
        assert [m.id for m in page.data] == ids
        tags = await oll(g, key).list()
        assert [m.model for m in tags.models] == ids


# ------------------------------------------------------------------------------------------------------------
# Anthropic Messages (pass-through; cumulative stream usage with cache writes)


async def test_anthropic_messages_json_and_stream_price_cache_writes(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        key = g.key()
        client = anth(g, key)
        g.anthropic.enqueue(Reply("plain", input_tokens=30, cache_write=200, cache_read=5, output_tokens=4))
        message = await client.messages.create(
            model="frontier", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content[0].text == "plain"  # type: ignore[union-attr]
        g.anthropic.enqueue(Reply("streamed reply", input_tokens=12, cache_read=300, output_tokens=9, chunks=4))
        async with client.messages.stream(
            model="anthropic:claude-sonnet-5-5", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
        assert text == "streamed reply"
        first, second = g.calls("aider")
        assert (first["input_uncached"], first["cache_write_5m"], first["cache_read"], first["output"]) == (
            30,
            200,
            5,
            4,
        )
        assert first["cost_micros"] == expected_micros(g, "anthropic:claude-sonnet-5-5", Usage(30, 5, 200, 0, 4, None))
        assert (second["input_uncached"], second["cache_read"], second["output"]) == (12, 300, 9)
        assert second["cost_micros"] == expected_micros(g, "anthropic:claude-sonnet-5-5", Usage(12, 300, 0, 0, 9, None))
        sent = g.anthropic.model_requests()[-1]
        headers = {k.lower(): v for k, v in sent.headers.items()}
        assert headers["x-api-key"] == g.environ["ANTHROPIC_API_KEY"]
        assert key not in str(sent.headers)
        assert g.ledger.held_reservations() == []


async def test_anthropic_cache_writes_without_a_split_bill_at_the_ttl_the_client_asked_for(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        g.anthropic.split_cache_creation = False  # only cache_creation_input_tokens: the TTL decides the rate
        client = anth(g)
        system = [{"type": "text", "text": "You review code.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
        for stream in (False, True):
            g.anthropic.enqueue(Reply("ok", input_tokens=20, cache_write_1h=1000, output_tokens=3))
            if stream:
                async with client.messages.stream(
                    model="frontier", max_tokens=64, system=system, messages=[{"role": "user", "content": "hi"}]
                ) as events:
                    await events.get_final_message()
            else:
                await client.messages.create(
                    model="frontier", max_tokens=64, system=system, messages=[{"role": "user", "content": "hi"}]
                )
        for row in g.calls("aider"):
            assert (row["cache_write_5m"], row["cache_write_1h"]) == (0, 1000)
            assert row["cost_micros"] == expected_micros(
                g, "anthropic:claude-sonnet-5-5", Usage(20, 0, 0, 1000, 3, None)
            )


async def test_count_tokens_is_anthropics_own_count_on_a_claude_route_and_404_where_none_is_exact(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path) as g:
        key = g.key()
        client = anth(g, key)
        tools: list[Any] = [
            {
                "name": "grep",
                "description": "Search the code.",
                "input_schema": {"type": "object", "properties": {"pattern": {"type": "string"}}},
            }
        ]
        messages: list[Any] = [{"role": "user", "content": "Find the bug in parse()."}]
        counted = await client.messages.count_tokens(
            model="frontier", system="You review code.", tools=tools, messages=messages
        )
        sent = g.anthropic.requests[-1]
        assert sent.path == "/v1/messages/count_tokens"
        assert counted.input_tokens == g.anthropic.count_of(sent.json)
        assert sent.json == {
            "model": "claude-sonnet-5-5",
            "system": "You review code.",
            "tools": tools,
            "messages": messages,
        }
        assert sent.headers["x-api-key"] == g.environ["ANTHROPIC_API_KEY"]
        assert key not in str(sent.headers)
        # Counting calls no model: nothing is reserved or recorded.
        assert g.calls() == []
        assert g.ledger.query("SELECT count(*) FROM reservations")[0][0] == 0
        # Claude Code's own model name is mapped to the cheap tier here (DeepSeek): no exact count there.
        seen = g.gateway.requests_seen
        with pytest.raises(anthropic.NotFoundError, match="only where the count is exact"):
            await client.messages.count_tokens(model="claude-sonnet-5-5", messages=messages)
        assert g.gateway.requests_seen == seen + 1
        # auto starts at the local tier (Ollama): no exact count either.
        with pytest.raises(anthropic.NotFoundError, match="ollama:qwen3:4b would serve"):
            await client.messages.count_tokens(model="auto", messages=messages)
        assert len(g.anthropic.requests) == 1


async def test_a_mapped_name_is_a_visible_substitution(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        g.openai.enqueue(Reply("from the cheap tier", input_tokens=10, output_tokens=3))
        raw = await oai(g).chat.completions.with_raw_response.create(
            model="claude-sonnet-5-5", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.headers["x-supervisor-substituted"] == "claude-sonnet-5-5 -> deepseek:deepseek-flash"
        row = only_call(g)
        assert (row["requested_model"], row["provider"], row["model"]) == (
            "claude-sonnet-5-5",
            "deepseek",
            "deepseek-flash",
        )
        events = g.ledger.events_after(0, kinds=["model_substituted"])
        assert [(e.agent, e.data["requested"], e.data["served"]) for e in events] == [
            ("aider", "claude-sonnet-5-5", "deepseek:deepseek-flash")
        ]


# ------------------------------------------------------------------------------------------------------------
# Ollama native (pass-through to the Ollama fake; counts from the final line)


async def test_ollama_chat_stream_and_json(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        client = oll(g)
        g.ollama.enqueue(Reply("local answer", input_tokens=25, output_tokens=6, chunks=3))
        parts = [
            p async for p in await client.chat(model="local", messages=[{"role": "user", "content": "hi"}], stream=True)
        ]
        assert "".join(p.message.content or "" for p in parts) == "local answer"
        assert parts[-1].done
        assert parts[-1].eval_count == 6
        g.ollama.enqueue(Reply("whole", input_tokens=8, output_tokens=2))
        whole = await client.chat(model="qwen3:4b", messages=[{"role": "user", "content": "hi"}])
        assert whole.message.content == "whole"
        first, second = g.calls("aider")
        assert (first["input_uncached"], first["output"], first["cost_micros"]) == (25, 6, 0)
        assert (second["input_uncached"], second["output"], second["requested_model"]) == (8, 2, "qwen3:4b")
        assert g.ollama.chat_bodies()[-1]["options"]["num_predict"] == 4096


CHEAP_ONLY = """
[agents.scripted]
goal = "an Ollama-client script routed to an API model"
ladder = ["cheap"]
"""


async def test_ollama_generate_passes_through_to_ollama_and_is_translated_for_an_api_model(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, AGENTS + CHEAP_ONLY) as g:
        client = oll(g)
        g.ollama.enqueue(Reply("local words here", input_tokens=11, output_tokens=3, chunks=3))
        parts = [
            p async for p in await client.generate(model="local", prompt="Say hi.", system="Be brief.", stream=True)
        ]
        assert "".join(p.response for p in parts) == "local words here"
        assert parts[-1].done
        assert parts[-1].done_reason == "stop"
        assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (11, 3)
        g.ollama.enqueue(Reply("whole", input_tokens=4, output_tokens=1))
        whole = await client.generate(model="qwen3:4b", prompt="Say hi.", options={"num_predict": 20})
        assert (whole.response, whole.eval_count) == ("whole", 1)
        sent = g.ollama.generate_bodies()
        assert [b["model"] for b in sent] == ["qwen3:4b", "qwen3:4b"]
        assert (sent[0]["prompt"], sent[0]["system"]) == ("Say hi.", "Be brief.")
        assert sent[0]["options"]["num_predict"] == 4096  # the gateway's ceiling, injected
        assert sent[1]["options"]["num_predict"] == 20
        first, second = g.calls("aider")
        assert (first["input_uncached"], first["output"], first["cost_micros"], first["priced"]) == (11, 3, 0, 1)
        assert (second["input_uncached"], second["output"], second["requested_model"]) == (4, 1, "qwen3:4b")

        # The same client, for an agent whose only tier is an API model: translated to chat completions.
        scripted = oll(g, g.key("scripted"))
        g.openai.enqueue(Reply("from deepseek", input_tokens=30, cache_read=10, output_tokens=4, chunks=2))
        parts = [
            p async for p in await scripted.generate(model="auto", prompt="Summarize.", system="Be brief.", stream=True)
        ]
        assert "".join(p.response for p in parts) == "from deepseek"
        assert parts[-1].done
        assert parts[-1].eval_count == 4
        g.openai.enqueue(Reply("whole deepseek", input_tokens=7, output_tokens=2))
        whole = await scripted.generate(model="cheap", prompt="Again.")
        assert whole.response == "whole deepseek"
        chat = g.openai.model_bodies()
        assert chat[0]["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Summarize."},
        ]
        rows = g.calls("scripted")
        assert [(r["input_uncached"], r["cache_read"], r["output"]) for r in rows] == [(30, 10, 4), (7, 0, 2)]
        assert rows[0]["cost_micros"] == expected_micros(g, "deepseek:deepseek-flash", Usage(30, 10, 0, 0, 4, None))
        assert g.ledger.held_reservations() == []


async def test_ollama_show_describes_the_model_that_would_serve_the_name(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, AGENTS + CHEAP_ONLY) as g:
        shown = await oll(g).show("local")
        assert g.ollama.requests[-1].path == "/api/show"
        assert g.ollama.requests[-1].json["model"] == "qwen3:4b"  # Ollama's own answer, for the served model
        assert shown.details is not None
        assert shown.details.family == "llama"
        assert shown.modelinfo is not None
        assert shown.modelinfo["llama.context_length"] == 8192
        api = await oll(g, g.key("scripted")).show("cheap")
        spec = g.runtime.catalog.get("deepseek:deepseek-flash")
        assert spec is not None
        assert api.modelinfo is not None
        assert api.modelinfo["deepseek.context_length"] == spec.context_window
        assert api.capabilities is not None
        assert "tools" in api.capabilities
        with pytest.raises(ollama.ResponseError) as missing:
            await oll(g, g.key("scripted")).show("frontier")  # not on this agent's ladder
        assert missing.value.status_code == 403


# ------------------------------------------------------------------------------------------------------------
# Refusals: the SDK's own exception, exactly one request


async def test_a_bad_key_is_a_401_in_each_protocol_with_one_request(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        with pytest.raises(openai.AuthenticationError):
            await oai(g, "sk-sup-wrong").chat.completions.create(
                model="cheap", messages=[{"role": "user", "content": "x"}]
            )
        assert g.gateway.requests_seen == 1
        with pytest.raises(anthropic.AuthenticationError):
            await anth(g, "sk-sup-wrong").messages.create(
                model="cheap", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert g.gateway.requests_seen == 2
        with pytest.raises(ollama.ResponseError) as info:
            await oll(g, "sk-sup-wrong").chat(model="local", messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 401
        assert g.gateway.requests_seen == 3
        revoked = g.key()
        g.ledger.revoke_key(g.ledger.gateway_keys()[-1].id)
        with pytest.raises(openai.AuthenticationError, match="revoked"):
            await oai(g, revoked).chat.completions.create(model="cheap", messages=[{"role": "user", "content": "x"}])
        assert g.calls() == []
        assert g.openai.model_requests() == []


CAPPED = """
[agents.aider]
goal = "pair programming"
ladder = ["cheap", "frontier"]
frontier = "allow"
caps = { day_usd = 0.001 }
"""


async def test_a_cap_is_a_non_retryable_429_naming_the_cap_with_one_request(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, CAPPED) as g:
        key = g.key()
        with pytest.raises(openai.RateLimitError) as info:
            await oai(g, key).chat.completions.create(
                model="frontier", messages=[{"role": "user", "content": "x"}], max_tokens=4000
            )
        assert g.gateway.requests_seen == 1
        response = info.value.response
        assert response.headers["x-should-retry"] == "false"
        assert int(response.headers["retry-after"]) > 60
        assert "agent day_usd cap" in str(info.value)
        assert "resets" in str(info.value)
        with pytest.raises(anthropic.RateLimitError, match="day_usd"):
            await anth(g, key).messages.create(
                model="frontier", max_tokens=4000, messages=[{"role": "user", "content": "x"}]
            )
        assert g.gateway.requests_seen == 2
        assert g.anthropic.model_requests() == []
        assert g.calls() == []
        assert g.ledger.held_reservations() == []
        assert [e.data["status"] for e in g.ledger.events_after(0, kinds=["gateway_refused"])] == [429, 429]


async def test_offline_refuses_api_tiers_at_once_and_local_keeps_serving(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, offline=True) as g:
        key = g.key()
        with pytest.raises(openai.InternalServerError, match="offline"):
            await oai(g, key).chat.completions.create(model="cheap", messages=[{"role": "user", "content": "x"}])
        assert g.gateway.requests_seen == 1
        assert g.openai.model_requests() == []
        g.ollama.enqueue(Reply("still here", input_tokens=3, output_tokens=2))
        reply = await oll(g, key).chat(model="auto", messages=[{"role": "user", "content": "x"}])
        assert reply.message.content == "still here"


ASK = """
[agents.claude]
goal = "claude code"
ladder = ["frontier"]
frontier = "ask"
"""


async def test_frontier_for_an_ask_agent_needs_an_approval_and_a_window_serves_until_it_closes(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, ASK) as g:
        client = anth(g, g.key("claude"))
        with pytest.raises(anthropic.RateLimitError, match="approval #1") as info:
            await client.messages.create(model="frontier", max_tokens=16, messages=[{"role": "user", "content": "x"}])
        assert "supervisor approve 1" in str(info.value)
        assert g.gateway.requests_seen == 1
        [pending] = g.ledger.approvals()
        assert (pending.agent, pending.step, pending.model) == ("claude", "gateway", "anthropic:claude-sonnet-5-5")
        # A second try while pending reuses the same request.
        with pytest.raises(anthropic.RateLimitError, match="approval #1"):
            await client.messages.create(model="frontier", max_tokens=16, messages=[{"role": "user", "content": "x"}])
        window_until = datetime.now(UTC).replace(microsecond=0)
        from datetime import timedelta

        g.ledger.decide_approval(
            1, True, "test", window_until=window_until + timedelta(minutes=15), budget_micros=2_000_000
        )
        for _ in range(2):
            g.anthropic.enqueue(Reply("approved", input_tokens=5, output_tokens=2))
            message = await client.messages.create(
                model="frontier", max_tokens=16, messages=[{"role": "user", "content": "x"}]
            )
            assert message.content[0].text == "approved"  # type: ignore[union-attr]
        rows = g.ledger.query("SELECT approval_id FROM reservations ORDER BY id")
        assert [r[0] for r in rows] == [1, 1]


# ------------------------------------------------------------------------------------------------------------
# Tool calls, round-tripped (passed through on the same wire; translated to Ollama's)

TOOLS_OPENAI = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    }
]
TOOLS_ANTHROPIC = [
    {
        "name": "read_file",
        "description": "Read a file",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    }
]


@pytest.mark.parametrize("model", ["cheap", "local"])
async def test_openai_chat_tool_calls_round_trip(tmp_path: Path, model: str) -> None:
    """``cheap`` passes through to the OpenAI-compatible fake; ``local`` is translated to Ollama's wire."""
    async with running_gateway(tmp_path) as g:
        fake = g.openai if model == "cheap" else g.ollama
        fake.enqueue(tool_reply(ToolUse("read_file", {"path": "README.md"}), input_tokens=30, output_tokens=12))
        client = oai(g)
        first = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "What is in README.md?"}],
            tools=TOOLS_OPENAI,
            stream=True,
        )
        calls: dict[int, dict[str, str]] = {}
        finish = None
        async for chunk in first:
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for call in choice.delta.tool_calls or []:
                    entry = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                    entry["id"] += call.id or ""
                    entry["name"] += (call.function.name or "") if call.function else ""
                    entry["arguments"] += (call.function.arguments or "") if call.function else ""
        assert finish == "tool_calls"
        [call] = calls.values()
        assert call["name"] == "read_file"
        assert json.loads(call["arguments"]) == {"path": "README.md"}
        fake.enqueue(Reply("It is a README.", input_tokens=50, output_tokens=6))
        second = await client.chat.completions.create(
            model=model,
            tools=TOOLS_OPENAI,
            messages=[
                {"role": "user", "content": "What is in README.md?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": "read_file", "arguments": call["arguments"]},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": call["id"], "content": "# Hello"},
            ],
        )
        assert second.choices[0].message.content == "It is a README."
        sent = fake.model_requests()[-1].json
        assert any(m.get("role") == "tool" and "Hello" in str(m.get("content")) for m in sent["messages"])
        rows = g.calls("aider")
        assert [r["output"] for r in rows] == [12, 6]
        assert rows[0]["finish_reason"] in ("tool_calls", "stop")


async def test_anthropic_tool_use_round_trips(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        client = anth(g)
        g.anthropic.enqueue(tool_reply(ToolUse("read_file", {"path": "a.txt"}), input_tokens=40, output_tokens=9))
        async with client.messages.stream(
            model="frontier",
            max_tokens=256,
            tools=TOOLS_ANTHROPIC,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "Read a.txt"}],
        ) as stream:
            message = await stream.get_final_message()
        assert message.stop_reason == "tool_use"
        [use] = [b for b in message.content if b.type == "tool_use"]
        assert (use.name, use.input) == ("read_file", {"path": "a.txt"})  # type: ignore[union-attr]
        g.anthropic.enqueue(Reply("Done.", input_tokens=60, output_tokens=2))
        reply = await client.messages.create(
            model="frontier",
            max_tokens=256,
            tools=TOOLS_ANTHROPIC,  # type: ignore[arg-type]
            messages=[
                {"role": "user", "content": "Read a.txt"},
                {"role": "assistant", "content": [b.model_dump() for b in message.content]},  # type: ignore[misc]
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "hi"}]},  # type: ignore[union-attr]
            ],
        )
        assert reply.content[0].text == "Done."  # type: ignore[union-attr]
        assert [r["output"] for r in g.calls("aider")] == [9, 2]


MLX_FIRST = """
[agents.aider]
goal = "pair programming"
ladder = ["local", "cheap"]

[agents.mlxonly]
goal = "a local-only script"
ladder = ["local"]
"""


async def test_tools_never_go_to_a_model_that_cannot_call_them(tmp_path: Path) -> None:
    """The in-process MLX model has no native tool calling: a request with tools climbs to the next tier that
    can, or is refused when no allowed tier can; its tools are never silently dropped."""
    async with running_gateway(tmp_path, MLX_FIRST, local_models='["mlx:smollm2-135m"]') as g:
        g.openai.enqueue(tool_reply(ToolUse("read_file", {"path": "x"}), input_tokens=5, output_tokens=4))
        raw = await oai(g).chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "x"}], tools=TOOLS_OPENAI
        )
        assert raw.headers["x-supervisor-served-model"] == "deepseek:deepseek-flash"
        assert raw.parse().choices[0].message.tool_calls[0].function.name == "read_file"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError, match="cannot call tools"):
            await oai(g, g.key("mlxonly")).chat.completions.create(
                model="local", messages=[{"role": "user", "content": "x"}], tools=TOOLS_OPENAI
            )


# ------------------------------------------------------------------------------------------------------------
# OpenAI Responses: translated for other upstreams; passed through (stateful requests too) to one speaking it


async def test_openai_responses_json_and_stream_are_translated_and_priced(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as g:
        client = oai(g)
        g.openai.enqueue(Reply("a response", input_tokens=21, cache_read=4, output_tokens=3))
        whole = await client.responses.create(model="cheap", input="hi", max_output_tokens=32)
        assert whole.output_text == "a response"
        g.openai.enqueue(Reply("streamed response", input_tokens=11, output_tokens=2, chunks=3))
        stream = await client.responses.create(model="cheap", input="hi", stream=True)
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        assert "".join(deltas) == "streamed response"
        first, second = g.calls("aider")
        assert (first["input_uncached"], first["cache_read"], first["output"]) == (21, 4, 3)
        assert first["cost_micros"] == expected_micros(g, "deepseek:deepseek-flash", Usage(21, 4, 0, 0, 3, None))
        assert (second["input_uncached"], second["output"]) == (11, 2)
        seen = g.gateway.requests_seen
        with pytest.raises(openai.BadRequestError, match="speaks OpenAI's Responses API"):
            await client.responses.create(model="deepseek:deepseek-flash", input="more", previous_response_id="resp_1")
        assert g.gateway.requests_seen == seen + 1
        assert g.ledger.held_reservations() == []


async def test_openai_responses_pass_through_to_a_responses_upstream_stateful_requests_included(
    tmp_path: Path,
) -> None:
    async with running_gateway(tmp_path) as g:
        assert g.openai_plain is not None
        client = oai(g)
        g.openai_plain.enqueue(Reply("first answer", input_tokens=70, cache_read=930, output_tokens=12, reasoning=4))
        first = await client.responses.create(model="openai:gpt-5.4-mini", input="Plan the fix.")
        assert first.output_text == "first answer"
        g.openai_plain.enqueue(Reply("second answer", input_tokens=40, cache_read=1000, output_tokens=6, chunks=3))
        stream = await client.responses.create(
            model="openai:gpt-5.4-mini", input="And then?", previous_response_id=first.id, stream=True
        )
        events = [e async for e in stream]
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "second answer"
        assert events[-1].type == "response.completed"
        assert events[-1].response.usage is not None
        assert events[-1].response.usage.input_tokens == 1040  # the upstream's own usage reached the client
        sent = g.openai_plain.responses_requests()
        assert [r.json["model"] for r in sent] == ["gpt-5.4-mini", "gpt-5.4-mini"]
        assert sent[1].json["previous_response_id"] == first.id
        assert sent[0].json["max_output_tokens"] == 4096  # the gateway's ceiling, injected
        assert sent[0].headers["authorization"] == "Bearer " + g.environ["OPENAI_API_KEY"]
        rows = g.calls("aider")
        assert [(r["input_uncached"], r["cache_read"], r["output"]) for r in rows] == [(70, 930, 12), (40, 1000, 6)]
        assert rows[0]["cost_micros"] == expected_micros(g, "openai:gpt-5.4-mini", Usage(70, 930, 0, 0, 12, 4))
        assert rows[1]["cost_micros"] == expected_micros(g, "openai:gpt-5.4-mini", Usage(40, 1000, 0, 0, 6, None))
        # The continued request's prompt lives on the server: it was reserved at a full context window.
        spec = g.runtime.catalog.get("openai:gpt-5.4-mini")
        assert spec is not None
        held = g.ledger.query("SELECT tokens FROM reservations ORDER BY id")
        assert held[1][0] == spec.context_window
        # An unknown previous response is OpenAI's own 400, relayed (nothing was billed, nothing is held).
        with pytest.raises(openai.BadRequestError, match="resp_nope' not found") as unknown:
            await client.responses.create(model="openai:gpt-5.4-mini", input="x", previous_response_id="resp_nope")
        assert unknown.value.code == "previous_response_not_found"
        assert g.ledger.held_reservations() == []


async def test_openai_usage_with_cached_tokens_inside_the_prompt_is_priced_exactly(tmp_path: Path) -> None:
    """OpenAI's own dialect: ``prompt_tokens`` includes ``cached_tokens``; the row splits them, as the backend does."""
    async with running_gateway(tmp_path) as g:
        assert g.openai_plain is not None
        g.openai_plain.enqueue(Reply("cached", input_tokens=70, cache_read=930, output_tokens=12, reasoning=4))
        stream = await oai(g).chat.completions.create(
            model="openai:gpt-5.4-mini", messages=[{"role": "user", "content": "x"}], stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "cached"
        row = only_call(g)
        assert (row["input_uncached"], row["cache_read"], row["output"], row["reasoning"]) == (70, 930, 12, 4)
        assert row["cost_micros"] == expected_micros(g, "openai:gpt-5.4-mini", Usage(70, 930, 0, 0, 12, 4))
