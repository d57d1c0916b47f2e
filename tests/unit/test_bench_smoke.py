"""The benchmarks in bench/ run end to end at tiny sizes and write the JSON the README quotes.

No speed is asserted here (figures come from running the benchmarks themselves): these check that the figures
are sane and consistent (counts equal what was asked for, ratios and differences are those of the reported
medians), so the benchmarks cannot rot, or report nonsense, as the code under them changes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run(name: str, args: list[str], tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    assert load(name).main([*args, "--json", str(out)]) == 0
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["benchmark"] == name
    return data


def test_savings_suite_is_well_formed() -> None:
    savings = load("savings")
    tasks = savings.load_tasks()
    assert len(tasks) >= 30
    assert {t.category for t in tasks} == set(savings.CATEGORIES)
    assert {t.difficulty for t in tasks} == set(savings.DIFFICULTIES)


def test_every_reference_passes_and_every_wrong_answer_fails(tmp_path: Path) -> None:
    savings = load("savings")
    from supervisor import paths
    from supervisor.catalog import load_catalog

    catalog = load_catalog([paths.bundled_models_dir()])
    with savings.gate_python_first():
        problems = asyncio.run(savings.check_suite(savings.load_tasks(), catalog, tmp_path))
    assert problems == []


def test_savings(tmp_path: Path) -> None:
    data = run("savings", ["--local", "scripted", "--tasks", "3", "--seeds", "2", "--quiet"], tmp_path)
    for key in ("cost_ratio", "cost_reduction", "correctness_model", "anchors", "target", "per_seed", "drivers"):
        assert key in data
    for side in ("frontier_only", "ladder"):
        assert set(data[side]["calls_per_tier"]) == {"local", "cheap", "frontier"}
        assert 0.0 <= data[side]["pass_rate"] <= 1.0
        assert data[side]["task_runs"] == 6
    assert data["frontier_only"]["calls_per_tier"]["local"] == 0
    assert data["ladder"]["calls_per_tier"]["local"] == 6  # every task starts at the local tier
    assert data["frontier_only"]["cost_micros"] > 0
    assert data["correctness_model"]["p"]["cheap"] == {"easy": 0.95, "medium": 0.8, "hard": 0.4}
    assert len(data["per_seed"]) == 2


def test_tool_tasks_are_multi_file_and_references_pass_while_wrong_fixes_fail(tmp_path: Path) -> None:
    tools = load("savings_tools")
    tasks = tools.load_tool_tasks()
    assert len(tasks) >= 10
    assert all(len(t.changes) >= 2 for t in tasks)
    from supervisor import paths
    from supervisor.catalog import load_catalog

    catalog = load_catalog([paths.bundled_models_dir()])
    savings = load("savings")
    with savings.gate_python_first():
        problems = asyncio.run(tools.check_suite(tasks, catalog, tmp_path))
    assert problems == []


def test_savings_tool_suite(tmp_path: Path) -> None:
    out = tmp_path / "tools.json"
    assert (
        load("savings").main(["--suite", "tools", "--tasks", "2", "--seeds", "1", "--quiet", "--json", str(out)]) == 0
    )
    data = json.loads(out.read_text())
    assert data["benchmark"] == "savings_tools"
    assert set(data["runs"]) == {"tools_frontier", "tools_ladder", "single_frontier", "single_ladder"}
    for run in data["runs"].values():
        assert run["task_runs"] == 2
        assert set(run["cost_by_tier_micros_per_suite"]) == {"local", "cheap", "frontier"}
    assert data["runs"]["tools_frontier"]["calls_by_tier_per_suite"]["frontier"] > 2  # a loop of turns per task
    assert set(data["ratios"]) == {
        "tools_ladder_vs_frontier",
        "single_ladder_vs_frontier",
        "tools_vs_single_ladder",
        "tools_vs_single_frontier",
    }


def test_savings_with_a_local_model_measures_the_plain_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--local ollama against the loopback Ollama fake: the ladder, the plain baseline and the per-task figures run
    (the fake answers "ok", so nothing passes locally; what matters here is that every path runs)."""
    from tests.fakes.ollama import OllamaFake

    with OllamaFake(models=("qwen3:4b",)) as fake:
        monkeypatch.setenv("OLLAMA_HOST", fake.url)
        data = run("savings", ["--local", "ollama", "--tasks", "2", "--seeds", "1", "--quiet"], tmp_path)
        plain_bodies = [b for b in fake.chat_bodies() if len(b["messages"]) == 1 and "Reply with" not in str(b)]
    local = data["local_tier"]
    assert [row["task"] for row in local["tasks"]] == [t["task"] for t in data["tasks"]["first_seed_ladder"]]
    assert local["plain_passes"] == 0
    assert local["product_at_least_plain"] is True
    assert local["product_seconds_per_local_attempt"]["attempts"] == 2
    assert len(local["plain_results"]) == 2
    assert len(plain_bodies) == 2  # each task once as a plain message


def test_local_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fakes.ollama import OllamaFake

    with OllamaFake(models=("qwen3:4b",)) as fake:
        monkeypatch.setenv("OLLAMA_HOST", fake.url)
        data = run("local_prompt", ["--local", "ollama", "--tasks", "3"], tmp_path)
        bodies = fake.chat_bodies()
    assert set(data["summary"]) == {"minimal", "full", "plain"}
    assert all(f["attempts"] == 3 for f in data["summary"].values())
    assert len(bodies) == 9
    full = [b for b in bodies if b["messages"][0]["role"] == "system"]
    assert len(full) == 3
    assert all("Agent: t-" in b["messages"][0]["content"] for b in full)


def test_context(tmp_path: Path) -> None:
    data = run("context", ["--wakes", "5", "--turns", "6"], tmp_path)
    assert data["worker"]["turns"] == 6
    assert data["worker"]["within_bound"] is True
    assert data["worker"]["naive_total"] > data["worker"]["ours_total"] > 0
    assert data["failed_wakes"] == []
    assert set(data["input_tokens_at"]) == {"1", "5"}
    assert data["naive_total"] > data["ours_total"] > 0
    assert {"flat_met", "total_ratio_met"} <= set(data["targets"])
    assert len(data["per_wake"]) == 5


def assert_sane_summary(summary: dict[str, Any], n: int) -> None:
    """A timing summary of exactly ``n`` samples whose statistics are ordered as statistics must be."""
    assert summary["n"] == n
    assert 0 < summary["min_ms"] <= summary["median_ms"] <= summary["p95_ms"]
    assert summary["min_ms"] <= summary["mean_ms"]
    assert summary["p95_ms"] < 60_000  # a loopback call; a minute means the units or the clock are wrong


def assert_consistent_comparison(comparison: dict[str, Any], n: int) -> None:
    """Both sides hold ``n`` samples, and every derived figure is computed from the reported ones."""
    ours, bare = comparison["supervisor"], comparison["bare_httpx"]
    assert_sane_summary(ours, n)
    assert_sane_summary(bare, n)
    assert comparison["ratio_median"] == pytest.approx(ours["median_ms"] / bare["median_ms"], rel=1e-9)
    assert comparison["added_median_ms"] == pytest.approx(ours["median_ms"] - bare["median_ms"], rel=1e-9)
    assert comparison["added_p95_ms"] == pytest.approx(ours["p95_ms"] - bare["p95_ms"], rel=1e-9)


def test_overhead(tmp_path: Path) -> None:
    data = run("overhead", ["--iterations", "5", "--warmup", "1", "--run-iterations", "2"], tmp_path)
    assert (data["iterations"], data["warmup"]) == (5, 1)
    assert_consistent_comparison(data["call"], 5)  # the warm-up call is discarded
    assert_sane_summary(data["bare_httpx_new_connection"], 5)
    # A one-step run makes one call; the runs are measured after min(10, runs) warm-up runs.
    assert_consistent_comparison(data["run_agent"], 2)
    # Every call through the supervisor is one ledger row: (5 + 1 warm-up) calls, then (2 + 2 warm-up) runs.
    assert data["ledger_call_rows"] == (5 + 1) + (2 + 2)
    assert data["target"] == {"added_median_ms_max": 2.0, "met": data["call"]["added_median_ms"] < 2.0}


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_startup(tmp_path: Path) -> None:
    data = run("startup", ["--runs", "1", "--warmup", "0", "--tui-runs", "1"], tmp_path)
    help_ = data["help"]
    ours, bare = help_["supervisor_help"], help_["python_pass"]
    for summary in (ours, bare):
        assert summary["n"] == 1
        assert 0 < summary["min_ms"] <= summary["median_ms"] <= summary["p95_ms"] < 60_000
    assert help_["added_median_ms"] == pytest.approx(ours["median_ms"] - bare["median_ms"], rel=1e-9)
    assert help_["added_p95_ms"] == pytest.approx(ours["p95_ms"] - bare["p95_ms"], rel=1e-9)
    assert "available" in data["tui_first_paint"]


def test_gateway(tmp_path: Path) -> None:
    data = run("gateway", ["--requests", "24", "--warmup", "2"], tmp_path)
    results = data["results"]
    assert results["json_sequential"]["gateway"]["n"] == 24
    assert results["json_sequential"]["floor"]["gateway"]["n"] == 24  # the bare relay, measured in the same run
    assert results["buffering"]["buffered_gateway"] == 0
    assert set(results["concurrency"]) == {"1", "8", "32"}
    calls, priced = (int(x) for x in data["gateway_ledger"].strip("()").split(","))
    assert calls == priced > 0  # every request through the gateway is a priced ledger row
