"""The local tier end to end: the prompt sized to the model, the answer taken out of what it says, short retry
feedback, a looping model stopped in seconds (real mlx-lm), and a missing local model skipped like an
unreachable provider (real MLX backend, and the loopback Ollama fake)."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from supervisor.backends.scripted import ScriptedBackend
from supervisor.catalog import default_catalog_dirs, load_catalog, local_spec
from supervisor.config import ProviderConfig, StepConfig, parse_config
from supervisor.console import Printer
from supervisor.ledger import Ledger
from supervisor.runtime.prompt import (
    LOCAL_OUTPUT_TOKENS_JSON,
    LOCAL_OUTPUT_TOKENS_NEW_FILE,
    SYSTEM_PREAMBLE,
    output_budget,
    prompt_profile,
)
from supervisor.runtime.runtime import Runtime
from tests.fakes.ollama import OllamaFake
from tests.helpers import Tiers, last_user, make_harness

ADD_REPLY = "```python\ndef add(a, b):\n    return a + b\n```\n\nThis is the complete solution."
WRONG_ADD = "```python\ndef add(a, b):\n    return a - b\n```"
TEST_ADD = "from add import add\n\nassert add(2, 3) == 5, f'add(2, 3) returned {add(2, 3)}'\n"

ADDER = """
[agents.A-sort]
goal = "Keep the arithmetic helpers correct."
workspace = "ws"
ladder = ["local", "cheap"]
attempts_per_tier = 2

[[agents.A-sort.steps]]
name = "add"
prompt = "Write add.py with a function add(a, b) that returns the sum."
context = ["spec.md"]
writes = "add.py"
verify = [{ python_compiles = true }, "python3 test_add.py"]
"""


def run(harness: Any, agent: str = "A-sort") -> tuple[Any, Runtime, dict[str, ScriptedBackend]]:
    runtime, backends = harness.runtime()
    result = asyncio.run(runtime.run_agent(agent))
    return result, runtime, backends


# ------------------------------------------------------------------------------------------------------------
# Prompts sized to the model


def test_a_small_local_model_gets_a_minimal_prompt_and_its_fenced_answer_is_accepted(tmp_path: Path) -> None:
    """The `add` reply from issue 11 (code in a fence, then a sentence) passes; the prompt has nothing to parrot."""
    harness = make_harness(
        tmp_path,
        ADDER,
        files={"spec.md": "Integers only.", "test_add.py": TEST_ADD},
        tiers=Tiers(local=lambda r: ADD_REPLY),
        local_profile="minimal",
    )
    result, _, backends = run(harness)
    assert result.outcome == "success"
    assert result.tier_reached == "local"
    assert (harness.workspace / "add.py").read_text() == "def add(a, b):\n    return a + b\n"
    (request,) = backends["sim-local"].calls
    assert [m.role for m in request.messages] == ["user"]
    prompt = request.messages[0].content
    assert "A-sort" not in prompt  # the agent's name, which a small model once wrote into its answer
    assert "Agent:" not in prompt
    assert SYSTEM_PREAMBLE not in prompt
    assert "Keep the arithmetic helpers correct" not in prompt  # the goal: the step's task is enough
    assert prompt.startswith("Write add.py with a function add(a, b) that returns the sum.")
    assert "spec.md:\n```markdown\nIntegers only.\n```" in prompt
    assert prompt.endswith("Reply with the complete new add.py in one ```python block.")


def test_a_retry_carries_a_short_failure_and_paid_tiers_keep_the_full_prompt(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        ADDER,
        files={"spec.md": "Integers only.", "test_add.py": TEST_ADD},
        tiers=Tiers(local=lambda r: WRONG_ADD, cheap=lambda r: "def add(a, b):\n    return a + b\n"),
        local_profile="minimal",
    )
    result, _, backends = run(harness)
    assert result.outcome == "success"
    assert result.tier_reached == "cheap"
    first, retry = (last_user(r) for r in backends["sim-local"].calls)
    feedback = retry.split("Your last answer was rejected:\n", 1)[1]
    assert feedback.startswith("`python3 test_add.py` failed (exit 1):\nAssertionError: add(2, 3) returned -1\n")
    assert "at test_add.py, line 3, in <module>" in feedback
    assert str(harness.workspace) not in retry
    assert "Traceback" not in retry
    assert retry.count("python3 test_add.py") == 1
    assert len(retry) - len(first) < 250  # the feedback is short, so the retry is not a much bigger prompt
    (paid,) = backends["sim-cheap"].calls
    assert [m.role for m in paid.messages] == ["system", "user"]
    assert paid.messages[0].cache_breakpoint
    assert "Agent: A-sort" in paid.messages[0].content
    assert "rejected by the verify gate:\n`python3 test_add.py` failed (exit 1)" in paid.messages[1].content


def test_the_profile_is_data_not_a_name() -> None:
    catalog = load_catalog(default_catalog_dirs())
    smollm = catalog.get("mlx:smollm2-135m")
    sonnet = catalog.get("anthropic:claude-sonnet-5-5")
    assert smollm is not None
    assert sonnet is not None
    assert smollm.prompt_profile == "minimal"  # models/mlx.toml says so
    mlx, anthropic = ProviderConfig(kind="mlx", local=True), ProviderConfig(kind="anthropic", base_url="x")
    assert prompt_profile(smollm, mlx, local=True) == "minimal"
    assert prompt_profile(sonnet, anthropic, local=False) == "full"
    # A local model the catalog does not list: its tier decides. A provider setting overrides the catalog.
    assert prompt_profile(local_spec("ollama", "some-70b"), ProviderConfig(kind="ollama"), local=True) == "minimal"
    big_box = ProviderConfig(kind="mlx", local=True, prompt_profile="full")
    assert prompt_profile(smollm, big_box, local=True) == "full"


def test_local_output_budget_is_sized_to_the_step(tmp_path: Path) -> None:
    def step(**kw: Any) -> StepConfig:
        return StepConfig.model_validate({"name": "s", "prompt": "p", **kw})

    (tmp_path / "notes.txt").write_text("x" * 600)  # 200 estimated tokens
    assert output_budget(step(writes="notes.txt"), local=True, model_max=2048, workspace=tmp_path) == 364
    assert output_budget(step(writes="new.py"), local=True, model_max=2048, workspace=tmp_path) == (
        LOCAL_OUTPUT_TOKENS_NEW_FILE
    )
    assert output_budget(step(writes="out.json"), local=True, model_max=2048, workspace=tmp_path) == (
        LOCAL_OUTPUT_TOKENS_JSON
    )
    assert output_budget(step(output="answer"), local=True, model_max=2048, workspace=tmp_path) == (
        LOCAL_OUTPUT_TOKENS_JSON
    )
    # The step's own max_output_tokens always wins; paid models keep the step default.
    assert (
        output_budget(step(writes="new.py", max_output_tokens=900), local=True, model_max=2048, workspace=None) == 900
    )
    assert output_budget(step(writes="new.py"), local=False, model_max=8192, workspace=tmp_path) == 1024
    assert output_budget(step(writes="new.py"), local=True, model_max=100, workspace=tmp_path) == 100


# ------------------------------------------------------------------------------------------------------------
# A looping model, for real


def runtime_for(
    tmp_path: Path, providers: Mapping[str, Any], local: list[str], agent: str, cheap_answer: str = "ok\n"
) -> tuple[Runtime, ScriptedBackend, Path]:
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    data = {
        "providers": {
            **providers,
            "sim-cheap": {"kind": "scripted", "simulated_as": "deepseek:deepseek-flash"},
        },
        "tiers": {"local": local, "cheap": ["sim-cheap:flash"]},
        "agents": {
            agent: {
                "goal": "Write the note.",
                "workspace": str(workspace),
                "ladder": ["local", "cheap"],
                "attempts_per_tier": 2,
                "steps": [
                    {
                        "name": "note",
                        "prompt": "Write note.txt saying ok.",
                        "writes": "note.txt",
                        "verify": [{"regex": "^ok$"}],
                        "max_output_tokens": 2000,
                    }
                ],
            }
        },
    }
    environ = dict(os.environ)
    config = parse_config(data, "test", None, environ)
    cheap = ScriptedBackend("sim-cheap", config.providers["sim-cheap"], environ, lambda r: cheap_answer)
    home = Path(environ["SUPERVISOR_HOME"])
    ledger = Ledger(home / "ledger.db")
    catalog = load_catalog(default_catalog_dirs())
    return Runtime(config, catalog, ledger, environ=environ, backends={"sim-cheap": cheap}, home=home), cheap, home


def test_a_looping_local_model_fails_in_seconds_with_reason_looping(tmp_path: Path) -> None:
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed")
    from tests.fakes.tiny_model import build_looping_llama

    model = build_looping_llama(tmp_path / "loop")
    mlx = {"kind": "mlx", "local": True, "models": {"loop": str(model)}}
    runtime, _, home = runtime_for(tmp_path, {"mlx": mlx}, ["mlx:loop"], "looper")
    live: list[Any] = []
    runtime.bus.subscribe(live.append)

    async def go() -> Any:
        try:
            return await runtime.run_agent("looper")
        finally:
            await runtime.aclose()

    result = asyncio.run(go())
    assert result.outcome == "success"
    assert result.tier_reached == "cheap"
    local_calls = [c for c in runtime.ledger.calls(run_id=result.run_id) if c["tier"] == "local"]
    assert len(local_calls) == 2
    for call in local_calls:
        assert call["finish_reason"] == "looping", (call["error_class"], call["error"])  # recorded in the ledger
        assert call["output"] < 250  # stopped after ~200 characters of repeats, not at the 2,000-token budget
    attempts = runtime.ledger.query("SELECT failure FROM attempts WHERE tier = 'local' ORDER BY id")
    assert [row[0][:8] for row in attempts] == ["looping:", "looping:"]
    assert "'A-sort\\n' came out" in attempts[0][0]
    events = runtime.ledger.events_after(0)
    notices = [e.data["message"] for e in events if e.kind == "notice"]
    assert any(m.startswith("mlx:loop: looping: the same 7-character passage") for m in notices)
    recorded = [e for e in events if e.kind == "call_recorded" and e.data["tier"] == "local"]
    assert {e.data["finish_reason"] for e in recorded} == {"looping"}
    # Shown: the `run` output's line for the call, and the TUI step log's (from the same ledger rows).
    from supervisor.tui.messages import from_row
    from supervisor.tui.widgets.cells import DARK
    from supervisor.tui.widgets.steplog import describe as step_log_line

    assert all("stopped: looping" in str(step_log_line(from_row(e), DARK)) for e in recorded)
    printed = io.StringIO()
    printer = Printer(as_json=False, out=printed)
    for event in live:
        printer(event)
    assert "local mlx:loop attempt 1: " in printed.getvalue()
    assert "(stopped: looping)" in printed.getvalue()
    # The retry tells the model what went wrong, briefly; the digest's open failures are gone after the pass.
    assert (home / "agents" / "looper" / "digest.md").is_file()
    runtime.ledger.close()


# ------------------------------------------------------------------------------------------------------------
# A missing local model is skipped


def test_a_missing_mlx_model_is_skipped_and_the_run_goes_on(tmp_path: Path) -> None:
    """The embedded model was never pulled here: a notice, no call, and the cheap tier does the step."""
    runtime, _, home = runtime_for(tmp_path, {}, ["mlx:smollm2-135m"], "noted")

    async def go() -> Any:
        try:
            return await runtime.run_agent("noted")
        finally:
            await runtime.aclose()

    result = asyncio.run(go())
    assert result.outcome == "success"
    assert result.tier_reached == "cheap"
    assert [c["tier"] for c in runtime.ledger.calls(run_id=result.run_id)] == ["cheap"]
    notices = [e.data["message"] for e in runtime.ledger.events_after(0) if e.kind == "notice"]
    assert (
        "mlx:smollm2-135m is not on this machine: the embedded model smollm2-135m is not on this machine yet "
        "(hint: supervisor models pull smollm2-135m)"
    ) in notices
    record = (home / "agents" / "noted" / "runs" / f"{result.run_id}.md").read_text()
    assert "is not on this machine" in record  # the run record keeps the notice
    digest = (home / "agents" / "noted" / "digest.md").read_text()
    assert str(home) not in digest
    runtime.ledger.close()


def test_only_a_missing_local_model_ends_the_step_without_an_error(tmp_path: Path) -> None:
    runtime, _, home = runtime_for(tmp_path, {}, ["mlx:smollm2-135m"], "alone")
    runtime.config.agents["alone"].ladder[:] = ["local"]  # no tier to go on to

    async def go() -> Any:
        try:
            return await runtime.run_agent("alone")
        finally:
            await runtime.aclose()

    result = asyncio.run(go())
    assert result.outcome == "exhausted"
    assert result.calls == 0
    kinds = [e.kind for e in runtime.ledger.events_after(0)]
    assert "tier_skipped" in kinds
    assert "not on this machine" in (home / "agents" / "alone" / "runs" / f"{result.run_id}.md").read_text()
    runtime.ledger.close()


def test_an_ollama_model_that_is_not_pulled_is_skipped(tmp_path: Path) -> None:
    with OllamaFake(models=("qwen3:4b",)) as fake:
        ollama = {"kind": "ollama", "local": True, "host": fake.url}
        runtime, _, _ = runtime_for(tmp_path, {"ollama": ollama}, ["ollama:llama3.2", "ollama:qwen3:4b"], "pulled")

        async def go() -> Any:
            try:
                return await runtime.run_agent("pulled")
            finally:
                await runtime.aclose()

        result = asyncio.run(go())
        chats = fake.chat_bodies()
    assert result.outcome == "success"
    assert result.tier_reached == "local"  # the fake answers "ok"; the pulled model served the step
    assert [body["model"] for body in chats] == ["qwen3:4b"]  # nothing was sent to the missing model
    notices = [e.data["message"] for e in runtime.ledger.events_after(0) if e.kind == "notice"]
    assert any(m.startswith("ollama:llama3.2 is not on this machine: llama3.2 is not pulled") for m in notices)
    runtime.ledger.close()


def test_a_failure_in_the_digest_is_one_short_line_without_machine_paths(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        ADDER.replace('ladder = ["local", "cheap"]', 'ladder = ["local"]'),
        files={"spec.md": "Integers only.", "test_add.py": TEST_ADD},
        tiers=Tiers(local=lambda r: WRONG_ADD),
        local_profile="minimal",
    )
    result, runtime, _ = run(harness)
    assert result.outcome == "exhausted"
    digest = runtime.memory("A-sort").digest()
    failures = digest.split("## Open failures (fix these)\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(failures) == 1
    line = failures[0]
    assert line.startswith(f"- add (run {result.run_id}, local): `python3 test_add.py` failed (exit 1): AssertionError")
    assert len(line) < 260
    assert str(harness.workspace) not in digest
    assert str(harness.home) not in digest
    assert "Traceback" not in digest
