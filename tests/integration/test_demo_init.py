"""`supervisor demo --headless` end to end, and `supervisor init` on machines described by fake probe results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.init import EMBEDDED, fake_report, starter_config
from supervisor.ledger import Ledger
from supervisor.models_pull import embedded_model_path

DEMO_TIMEOUT_S = 600  # the demo's own budget (README: under five minutes on a 2-core box, more under xdist)


def demo_env(home: Path) -> dict[str, str]:
    return {**os.environ, "SUPERVISOR_HOME": str(home)}


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.real_model), "scripted"])
def demo_run(
    request: pytest.FixtureRequest, tmp_path: Path, supervisor_home: Path
) -> tuple[str, Path, subprocess.CompletedProcess[str]]:
    mode = request.param
    if mode == "real":
        gguf = request.getfixturevalue("embedded_gguf")  # skips when the model cannot be had (offline), not in CI
        target = embedded_model_path("smollm2-135m", demo_env(supervisor_home))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(gguf)
    root = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "demo", "--headless", "--dir", str(root), "--local", mode],
        capture_output=True,
        text=True,
        env=demo_env(supervisor_home),
        timeout=DEMO_TIMEOUT_S,
    )
    return mode, root, done


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 120)  # above the subprocess's own timeout, which reports its output
def test_demo_headless_shows_every_principle_with_real_parts(
    demo_run: tuple[str, Path, subprocess.CompletedProcess[str]],
) -> None:
    mode, root, done = demo_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "simulated" in out
    assert "frontier-only" in out
    ledger = Ledger(root / "home" / "ledger.db")
    runs = {r["agent"]: r for r in reversed(ledger.recent_runs(limit=100))}
    # Tier 0: no model, no cost.
    assert runs["tidy"]["outcome"] == "success"
    assert not ledger.calls(agent="tidy")
    lines = (root / "workspaces/tidy/data/people.csv").read_text().splitlines()
    assert lines[1:] == sorted(lines[1:])
    # The local model passes a task at $0 with its tokens counted.
    capital_calls = ledger.calls(agent="capital")
    assert runs["capital"]["outcome"] == "success"
    assert all(c["tier"] == "local" and c["cost_micros"] == 0 and c["input_uncached"] > 0 for c in capital_calls)
    assert "Paris" in (root / "workspaces/capital/answer.txt").read_text()
    assert bool(capital_calls[0]["simulated"]) is (mode == "scripted")
    # The local model fails, the workspace is restored, the run escalates to cheap (simulated) and passes.
    fixer_calls = sorted(ledger.calls(agent="fixer"), key=lambda c: c["id"])
    assert [c["tier"] for c in fixer_calls] == ["local", "cheap"]
    assert fixer_calls[1]["simulated"] == 1
    assert fixer_calls[1]["cost_micros"] > 0
    assert ledger.events_after(0, agent="fixer", kinds=["workspace_restored"])
    assert ledger.events_after(0, agent="fixer", kinds=["escalated"])
    assert runs["fixer"]["outcome"] == "success"
    subprocess.run([sys.executable, "check_slug.py"], cwd=root / "workspaces/fixer", check=True, capture_output=True)
    # The frontier escalation waits for approval and was never sent.
    pending = ledger.approvals()
    assert len(pending) == 1
    assert pending[0].agent == "reviewer"
    assert pending[0].simulated
    assert not [c for c in ledger.calls(agent="reviewer") if c["tier"] == "frontier"]
    assert not (root / "workspaces/reviewer/todo_count.txt").exists()
    # The tiny cap defers the spender before anything is sent.
    assert runs["spender"]["outcome"] == "deferred"
    assert not ledger.calls(agent="spender")
    # The growing watcher trips the runaway breaker and stays paused.
    alarms = ledger.events_after(0, agent="watcher", kinds=["breaker_tripped"])
    assert alarms
    assert alarms[0].data["rule"] == "rising_input"
    assert ledger.agent("watcher")["state"] == "paused"  # type: ignore[index]
    # Approving the request lets the next run of the reviewer go straight to the (simulated) frontier tier.
    approve = subprocess.run(
        [sys.executable, "-m", "supervisor", "approve", str(pending[0].id)],
        capture_output=True,
        text=True,
        env=demo_env(root / "home"),
        timeout=60,
    )
    assert approve.returncode == 0, approve.stderr
    rerun = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", "reviewer", "--config", str(root / "supervisor.toml")],
        capture_output=True,
        text=True,
        env=demo_env(root / "home"),
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (root / "workspaces/reviewer/todo_count.txt").read_text().strip() == "3"
    # Nothing is left running or held.
    assert not ledger.held_reservations()
    assert all(a["state"] != "running" for a in ledger.agents())
    assert ledger.integrity_check() == "ok"


def test_demo_refuses_a_non_empty_directory(tmp_path: Path, supervisor_home: Path) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor",
            "demo",
            "--headless",
            "--dir",
            str(tmp_path / "busy"),
            "--local",
            "scripted",
        ],
        capture_output=True,
        text=True,
        env=demo_env(supervisor_home),
        timeout=60,
    )
    assert done.returncode == 2
    assert "not empty" in done.stderr


# ---------------------------------------------------------------------------------------------------------
# init


def tiers_of(text: str) -> dict[str, list[str]]:
    import tomllib

    return dict(tomllib.loads(text)["tiers"])


def test_init_on_a_bare_linux_box_uses_the_embedded_model_and_comments_out_paid_tiers() -> None:
    text, choices = starter_config(fake_report(), {})
    tiers = tiers_of(text)
    assert tiers["local"] == [EMBEDDED]
    assert tiers["cheap"] == []
    assert tiers["frontier"] == []
    assert "needs DEEPSEEK_API_KEY" in text
    assert "needs ANTHROPIC_API_KEY" in text
    assert choices.needs_embedded


def test_init_on_apple_silicon_uses_mlx() -> None:
    report = fake_report(cpu={"apple_silicon": True}, os={"system": "Darwin", "machine": "arm64"})
    tiers = tiers_of(starter_config(report, {})[0])
    assert tiers["local"][0].startswith("mlx:mlx-community/")
    assert EMBEDDED in tiers["local"]


def test_init_with_ollama_lists_pulled_models_that_fit_largest_first() -> None:
    gib = 1024**3
    report = fake_report(
        memory={"available_bytes": 8 * gib},
        ollama={
            "reachable": True,
            "models": [
                {"name": "qwen3:4b", "size_bytes": int(2.6 * gib)},
                {"name": "qwen3:8b", "size_bytes": int(5.2 * gib)},
                {"name": "llama3.1:70b", "size_bytes": 40 * gib},
            ],
        },
    )
    text, choices = starter_config(report, {"ANTHROPIC_API_KEY": "x", "DEEPSEEK_API_KEY": "y"})
    tiers = tiers_of(text)
    assert tiers["local"] == ["ollama:qwen3:8b", "ollama:qwen3:4b"]
    assert tiers["cheap"][0] == "deepseek:deepseek-flash"
    assert tiers["frontier"] == ["anthropic:claude-sonnet-5-5"]
    assert any("llama3.1:70b" in r for r in choices.reasons)
    assert not choices.needs_embedded


def test_init_writes_a_valid_config_and_never_overwrites_without_force(tmp_path: Path, supervisor_home: Path) -> None:
    config = tmp_path / "supervisor.toml"
    env = {**demo_env(supervisor_home), "OLLAMA_HOST": "127.0.0.1:9"}
    first = subprocess.run(
        [sys.executable, "-m", "supervisor", "init", "--no-pull", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert "local tier" in first.stdout
    original = config.read_text()
    check = subprocess.run(
        [sys.executable, "-m", "supervisor", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    config.write_text(original + "\n# my edits\n")
    again = subprocess.run(
        [sys.executable, "-m", "supervisor", "init", "--no-pull", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert config.read_text().endswith("# my edits\n")
    forced = subprocess.run(
        [sys.executable, "-m", "supervisor", "init", "--no-pull", "--force", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert forced.returncode == 0
    assert "# my edits" not in config.read_text()
