"""The README's SDK recipes (``<!-- recipe: NAME -->`` before a Python block), run verbatim in a child process
against a running gateway, with only the environment variables the README tells the user to set."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from tests.gateway_harness import running_gateway

README = Path(os.environ.get("SUPERVISOR_TEST_README", Path(__file__).resolve().parents[2] / "README.md"))
RECIPE = re.compile(r"<!-- recipe: ([\w-]+) -->\s*```python\n(.*?)```", re.DOTALL)
NAMES = ("openai-sdk", "anthropic-sdk", "ollama-sdk")


def recipes() -> dict[str, str]:
    return dict(RECIPE.findall(README.read_text(encoding="utf-8")))


@pytest.mark.parametrize("name", NAMES)
async def test_the_readme_sdk_recipe_runs_against_the_gateway(name: str, tmp_path: Path) -> None:
    found = recipes()
    if name not in found:
        pytest.skip(
            f"the README has no `<!-- recipe: {name} -->` block yet (the recipes section comes with the codecs)"
        )
    script = tmp_path / f"{name}.py"
    script.write_text(found[name])
    async with running_gateway(tmp_path) as g:
        key = g.key()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "OLLAMA_"))}
        env.update(
            OPENAI_BASE_URL=g.url + "/v1",
            OPENAI_API_KEY=key,
            ANTHROPIC_BASE_URL=g.url,
            ANTHROPIC_API_KEY=key,
            OLLAMA_HOST=g.url,
            OLLAMA_API_KEY=key,
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        assert "ok" in out.decode()  # the fakes' default answer, through the gateway
        rows = g.calls("aider")
        assert rows
        assert all(r["via"] == "gateway" and r["auth"] == "key" for r in rows)
        assert g.ledger.held_reservations() == []
