"""Agent steps on the real embedded SmolLM2: a script on an official SDK runs as an `agent` step; at the local
tier its calls go through the gateway to SmolLM2 (in-process MLX, translated from the script's protocol), the
gate fails, the workspace is put back byte for byte, and at the cheap tier (a loopback fake scripted with the
right tool calls) the script's tool loop fixes the bug. The ledger has every call, per attempt, exactly priced.

SmolLM2 runs at a few tokens per second on this CPU: the scripts ask it for 8 tokens, which cannot hold the
fixed file, so its attempt fails the gate whatever it says.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.clock import parse_iso
from supervisor.config import load_config
from supervisor.cost import cost_of
from supervisor.gateway.server import run_gateway
from supervisor.ledger import Ledger
from supervisor.runtime.events import Escalated, Event, ProgramFinished, ProgramStarted, WorkspaceRestored
from supervisor.runtime.runtime import Runtime
from supervisor.secrets import Redactor
from supervisor.usage import Usage
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.base import FakeServer, RecordedRequest, Reply, ToolUse, tool_reply
from tests.fakes.openai import OpenAIFake
from tests.helpers import tree_digest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

AGENTS = Path(__file__).resolve().parents[1] / "agents"
BUGGY = "def add(a, b):\n    return a - b\n"
FIXED = "def add(a, b):\n    return a + b\n"
TEST = "from calc import add\n\nassert add(2, 3) == 5, f'add(2, 3) = {add(2, 3)}'\nprint('ok')\n"
KEYS = {"DEEPSEEK_API_KEY": "sk-deepseek-CANARY-0123456789abcdef", "ANTHROPIC_API_KEY": "sk-ant-CANARY-0123456789ab"}


@dataclass(frozen=True)
class Sdk:
    """One SDK script and the cheap tier's fake that answers it in the same protocol (relayed as is)."""

    name: str
    script: str
    make: Callable[[], FakeServer]
    provider: str
    model: str


SDKS = [
    Sdk(
        "openai",
        "openai_fixer.py",
        lambda: OpenAIFake(dialect="deepseek", models=("deepseek-flash",)),
        '[providers.deepseek]\nkind = "openai_compat"\nbase_url = "{url}"\napi_key_env = "DEEPSEEK_API_KEY"\n',
        "deepseek:deepseek-flash",
    ),
    Sdk(
        "anthropic",
        "anthropic_fixer.py",
        lambda: AnthropicFake(models=("claude-haiku-5-5",)),
        '[providers.anthropic]\nkind = "anthropic"\nbase_url = "{url}"\napi_key_env = "ANTHROPIC_API_KEY"\n',
        "anthropic:claude-haiku-5-5",
    ),
]


@pytest.fixture(params=SDKS, ids=[s.name for s in SDKS])
def sdk(request: pytest.FixtureRequest) -> Iterator[tuple[Sdk, FakeServer]]:
    spec: Sdk = request.param
    with spec.make() as fake:
        yield spec, fake


async def test_an_sdk_script_fails_on_smollm2_then_passes_at_the_cheap_tier(
    tmp_path: Path, embedded_gguf: Path, sdk: tuple[Sdk, FakeServer]
) -> None:
    spec, cheap = sdk
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "calc.py").write_text(BUGGY)
    (workspace / "test_calc.py").write_text(TEST)
    original = tree_digest(workspace)
    command = f"AGENT_TEXT_TOKENS=8 {sys.executable} {AGENTS / spec.script}"
    config_path = tmp_path / "supervisor.toml"
    config_path.write_text(
        textwrap.dedent(
            f"""
            [providers.mlx]
            kind = "mlx"
            local = true
            models = {{ "smollm2-135m" = "{embedded_gguf}" }}
            """
        )
        + spec.provider.format(url=cheap.url)
        + textwrap.dedent(
            f"""
            [tiers]
            local = ["mlx:smollm2-135m"]
            cheap = ["{spec.model}"]

            [agents.fixer]
            goal = "Keep calc's tests passing."
            workspace = "ws"
            frontier = "never"
            attempts_per_tier = 1
            ladder = ["local", "cheap"]

            [[agents.fixer.steps]]
            name = "fix"
            agent = {json.dumps(command)}
            task = "Make test_calc.py pass: add() is wrong."
            timeout_s = 600
            verify = [{json.dumps(f"{sys.executable} test_calc.py")}]
            """
        )
    )
    seen: list[dict[str, str]] = []
    replies = [
        tool_reply(ToolUse("read_file", {"path": "calc.py"}), input_tokens=150, output_tokens=20),
        tool_reply(ToolUse("write_file", {"path": "calc.py", "content": FIXED}), input_tokens=240, output_tokens=35),
        Reply("Fixed: add() adds.", input_tokens=300, output_tokens=8),
    ]

    def respond(_req: RecordedRequest) -> Any:
        seen.append(tree_digest(workspace))
        return replies[len(seen) - 1]

    cheap.responder = respond
    environ = {**os.environ, **KEYS}
    home = Path(os.environ["SUPERVISOR_HOME"])
    config = load_config(config_path, environ, required=True)
    ledger = Ledger(home / "ledger.db", redactor=Redactor.from_environ(environ))
    catalog = load_catalog(default_catalog_dirs())
    runtime = Runtime(config, catalog, ledger, environ=environ, home=home, gateway_factory=run_gateway)
    events: list[Event] = []
    runtime.bus.subscribe(events.append)
    try:
        result = await runtime.run_agent("fixer")
    finally:
        await runtime.aclose()

    assert result.outcome == "success", result.reason
    assert result.tier_reached == "cheap"
    assert [(e.from_tier, e.to_tier) for e in events if isinstance(e, Escalated)] == [("local", "cheap")]
    assert [e.tier for e in events if isinstance(e, ProgramStarted)] == ["local", "cheap"]
    assert any(isinstance(e, WorkspaceRestored) and e.scope == "attempt" for e in events)
    assert seen[0] == original  # SmolLM2's attempt was undone before the cheap tier's program started
    assert (workspace / "calc.py").read_text() == FIXED

    rows = [
        dict(r)
        for r in ledger.query(
            "SELECT attempt, tier, provider, model, requested_model, input_uncached, cache_read, output, cost_micros, "
            "priced, compute_s, key_id, via, started_at FROM calls ORDER BY id"
        )
    ]
    local, paid = rows[0], rows[1:]
    # SmolLM2 really ran: its own token counts, $0, local compute time, under attempt 1's key.
    assert (local["attempt"], local["tier"], local["provider"], local["model"]) == (1, "local", "mlx", "smollm2-135m")
    assert local["input_uncached"] > 20
    assert 1 <= local["output"] <= 8
    assert (local["cost_micros"], local["priced"]) == (0, 1)
    assert local["compute_s"] > 0
    # The cheap tier's three calls, priced exactly from the usage the upstream reported.
    provider, model_id = spec.model.split(":", 1)
    model = catalog.spec_for(provider, model_id).spec
    assert model is not None
    assert [(r["attempt"], r["tier"], r["provider"]) for r in paid] == [(2, "cheap", provider)] * 3
    for row, (inp, out) in zip(paid, [(150, 20), (240, 35), (300, 8)], strict=True):
        assert (row["input_uncached"], row["output"]) == (inp, out)
        expected = cost_of(Usage(input_uncached=inp, cache_read=0, output=out), model, parse_iso(row["started_at"]))
        assert (row["cost_micros"], row["priced"]) == (expected.total_micros, 1)
    assert {r["via"] for r in rows} == {"gateway"}
    assert local["key_id"] != paid[0]["key_id"]
    finished = [e for e in events if isinstance(e, ProgramFinished)]
    assert [(e.tier, e.calls) for e in finished] == [("local", 1), ("cheap", 3)]
    assert finished[0].refused == 1  # the tool loop's first request: SmolLM2 cannot call tools
    assert finished[1].cost_micros == sum(r["cost_micros"] for r in paid)
    assert ledger.held_reservations() == []
    ledger.close()
