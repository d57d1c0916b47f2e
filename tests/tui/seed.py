"""A fixed, realistic ledger for snapshot tests and the README screenshot: every timestamp comes from ``NOW``.

Five agents in every state worth seeing (running, waiting approval, idle after a pass, deferred, paused by the
runaway breaker), three weeks of priced calls on simulated tiers, an unpriced call, a pending approval and a
breaker alarm with its evidence.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from supervisor.backends.base import LocalModel
from supervisor.catalog import Catalog, default_catalog_dirs, load_catalog
from supervisor.config import Config, load_config
from supervisor.cost import Cost, cost_of
from supervisor.ledger import CallRecord, CapLimits, Ledger, Reservation
from supervisor.tui.data import BackendHealth, Hardware, ModelsData, ladder
from supervisor.usage import Usage

NOW = datetime(2026, 11, 20, 15, 0, 0, tzinfo=UTC)

CONFIG = """
[providers.sim-local]
kind = "scripted"
local = true
simulated_as = "mlx:smollm2-135m"
script = "scripts/local.toml"

[providers.sim-cheap]
kind = "scripted"
simulated_as = "deepseek:deepseek-flash"
script = "scripts/cheap.toml"

[providers.sim-frontier]
kind = "scripted"
simulated_as = "anthropic:claude-sonnet-5-5"
script = "scripts/frontier.toml"

[tiers]
local = ["sim-local:smollm2"]
cheap = ["sim-cheap:flash"]
frontier = ["sim-frontier:sonnet"]

[caps]
day_usd = 0.50
month_usd = 5.00

[agents.fixer]
goal = "Keep slug.py correct."
workspace = "ws/fixer"
schedule = "every 1h"
caps = { day_usd = 0.02, month_usd = 0.40 }
[[agents.fixer.steps]]
name = "write"
prompt = "Write slug.py."
writes = "slug.py"
verify = ["python3 check_slug.py"]

[agents.triage]
goal = "Label new issues."
workspace = "ws/triage"
schedule = "every 30m"
caps = { day_usd = 0.01, month_usd = 0.20, run_usd = 0.005 }
[[agents.triage.steps]]
name = "label"
prompt = "Label the issues."
output = "labels"
verify = [{ regex = "^label:" }]

[agents.reviewer]
goal = "Keep todo_count.txt right."
workspace = "ws/reviewer"
ladder = ["cheap", "frontier"]
frontier = "ask"
caps = { day_usd = 0.50 }
[[agents.reviewer.steps]]
name = "count"
prompt = "Count the TODO lines."
writes = "todo_count.txt"
verify = ["test -s todo_count.txt"]

[agents.nightly]
goal = "Summarize the day's commits."
workspace = "ws/nightly"
schedule = "daily 02:00"
caps = { day_usd = 0.05, month_usd = 1.00 }
[[agents.nightly.steps]]
name = "summary"
prompt = "Summarize."
output = "summary"

[agents.watcher]
goal = "Watch the log."
workspace = "ws/watcher"
schedule = "every 10m"
caps = { day_usd = 0.03 }
[[agents.watcher.steps]]
name = "check"
prompt = "Anything wrong in the log?"
context = ["log.txt"]
output = "verdict"
"""

SCRIPTS = {
    "local.toml": 'default = "wrong"\n',
    "cheap.toml": 'default = "wrong"\n',
    "frontier.toml": 'default = "42"\n',
}

MODELS = {
    "local": ("sim-local", "smollm2", "mlx:smollm2-135m"),
    "cheap": ("sim-cheap", "flash", "deepseek:deepseek-flash"),
    "frontier": ("sim-frontier", "sonnet", "anthropic:claude-sonnet-5-5"),
}


@dataclass
class Seeded:
    config: Config
    catalog: Catalog
    ledger: Ledger
    home: Path


def at(days: float = 0, hours: float = 0, minutes: float = 0) -> datetime:
    """A moment before ``NOW``."""
    return NOW - timedelta(days=days, hours=hours, minutes=minutes)


def seed(root: Path, home: Path) -> Seeded:
    """Write the config, workspaces and a ledger full of fixed rows under ``root`` and ``home``."""
    (root / "scripts").mkdir(parents=True, exist_ok=True)
    for name, text in SCRIPTS.items():
        (root / "scripts" / name).write_text(text)
    for agent in ("fixer", "triage", "reviewer", "nightly", "watcher"):
        (root / "ws" / agent).mkdir(parents=True, exist_ok=True)
    (root / "ws" / "watcher" / "log.txt").write_text("all quiet\n" * 40)
    config_path = root / "supervisor.toml"
    config_path.write_text(textwrap.dedent(CONFIG))
    environ = {"SUPERVISOR_HOME": str(home)}
    config = load_config(config_path, environ, required=True)
    catalog = load_catalog(default_catalog_dirs())
    ledger = Ledger(home / "ledger.db")
    _fill(ledger, catalog, home)
    return Seeded(config, catalog, ledger, home)


def _call(
    catalog: Catalog, agent: str, tier: str, when: datetime, tokens_in: int, out: int, cache_read: int = 0, **kw: Any
) -> CallRecord:
    provider, model_id, priced_as = MODELS[tier]
    usage = Usage(
        input_uncached=tokens_in, cache_read=cache_read, cache_write_5m=0, cache_write_1h=0, output=out, reasoning=0
    )
    cost = cost_of(usage, catalog.get(priced_as), when)
    return CallRecord(
        agent=agent,
        provider=provider,
        model=model_id,
        tier=tier,
        started_at=when,
        ended_at=when + timedelta(seconds=2),
        usage=usage,
        cost=cost,
        simulated=True,
        latency_s=2.0,
        compute_s=1.5 if tier == "local" else None,
        **kw,
    )


def _fill(ledger: Ledger, catalog: Catalog, home: Path) -> None:
    for agent in ("fixer", "triage", "reviewer", "nightly", "watcher"):
        ledger.ensure_agent(agent, now=at(days=30))
    # Three weeks of history: mostly local and cheap, a little frontier, rising towards today.
    history: list[CallRecord] = []
    for day in range(20, 0, -1):
        for agent, tier, tokens_in, out in (
            ("fixer", "local", 9000, 1200),
            ("fixer", "cheap", 30000 - day * 600, 2000),
            ("triage", "cheap", 20000, 1000),
            ("nightly", "cheap", 60000, 4000),
        ):
            history.append(_call(catalog, agent, tier, at(days=day, hours=3), tokens_in, out, cache_read=300))
        if day % 4 == 0:
            history.append(_call(catalog, "reviewer", "frontier", at(days=day, hours=5), 12000, 1000))
    ledger.record_calls(history)
    for record in history:  # caps are measured on reservations: hold and settle each past call
        held = ledger.reserve(
            agent=record.agent,
            run_id=None,
            provider=record.provider,
            model=record.model,
            amount_micros=record.cost.total_micros or 0,
            tokens=0,
            limits=CapLimits(),
            now=record.started_at,
        )
        assert isinstance(held, Reservation)
        ledger.settle(held.id, record.cost.total_micros, 0)
    # Today: runs with steps (the last gate), calls, and the reservations that caps are measured against.
    limits = CapLimits()
    runs = (
        ("fixer", "schedule", 2.0, "success", "write", "pass", "cheap", (("local", 9000, 900), ("cheap", 40000, 2000))),
        ("triage", "schedule", 1.2, "success", "label", "pass", "cheap", (("cheap", 22000, 1000),)),
        ("nightly", "schedule", 13.0, "deferred", "summary", None, None, (("frontier", 12000, 2400),)),
        (
            "watcher",
            "schedule",
            0.5,
            "paused",
            "check",
            "fail",
            "cheap",
            (("cheap", 14000, 60), ("cheap", 40000, 60), ("cheap", 66000, 60)),
        ),
    )
    for agent, trigger, hours_ago, outcome, step, verdict, tier_reached, calls in runs:
        started = at(hours=hours_ago)
        run_id = ledger.start_run(agent, trigger, simulated=True, now=started)
        step_id = ledger.start_step(run_id, step, "model", now=started)
        for index, (tier, tokens_in, out) in enumerate(calls):
            when = started + timedelta(seconds=5 + index * 20)
            record = _call(catalog, agent, tier, when, tokens_in, out, run_id=run_id, step=step, step_id=step_id)
            reservation = ledger.reserve(
                agent=agent,
                run_id=run_id,
                provider=record.provider,
                model=record.model,
                amount_micros=(record.cost.total_micros or 0) * 2,
                tokens=tokens_in + out,
                limits=limits,
                now=when,
            )
            assert isinstance(reservation, Reservation)
            ledger.record_call(record)
            ledger.settle(reservation.id, record.cost.total_micros, tokens_in + out)
        ledger.finish_step(
            step_id,
            "passed" if verdict == "pass" else "failed",
            tier_reached=tier_reached,
            verify_result=verdict,
            now=started + timedelta(minutes=1),
        )
        ledger.finish_run(run_id, outcome, "" if outcome == "success" else outcome, now=started + timedelta(minutes=1))
    # An unpriced call: the provider never reported usage.
    ledger.record_call(
        CallRecord(
            agent="triage",
            provider="sim-cheap",
            model="flash",
            tier="cheap",
            started_at=at(hours=6),
            ended_at=at(hours=6),
            usage=Usage(),
            cost=Cost(priced=False, reason="usage unknown"),
            simulated=True,
            error_class="interrupted",
        )
    )
    # The reviewer is waiting for a human: its run is open and an approval is pending.
    review_run = ledger.start_run("reviewer", "manual", simulated=True, now=at(minutes=4))
    ledger.change_agent_state("reviewer", "running", "run (manual)", run_id=review_run, now=at(minutes=4))
    ledger.change_agent_state(
        "reviewer",
        "waiting_approval",
        "approval #1: count -> sim-frontier:sonnet",
        run_id=review_run,
        step="count",
        tier="frontier",
        model="sim-frontier:sonnet",
        now=at(minutes=3),
    )
    approval = ledger.request_approval(
        agent="reviewer",
        run_id=review_run,
        step="count",
        tier="frontier",
        model="sim-frontier:sonnet",
        reason="cmd: test -s todo_count.txt\n$ test -s todo_count.txt\n[exit 1]\n[bold]not markup[/bold] \x1b[2Jno escapes",
        est_cold_micros=14_650,
        est_warm_micros=3_310,
        caps_left={
            "agent day": {"limit_micros": 500_000, "spent_micros": 0, "left_micros": 500_000},
            "global day": {"limit_micros": 500_000, "spent_micros": 86_100, "left_micros": 413_900},
        },
        simulated=True,
    )
    with ledger.immediate() as conn:
        conn.execute("UPDATE approvals SET requested_at = ? WHERE id = ?", (_iso(at(minutes=3)), approval))
    # The triage agent is mid-call; nightly is deferred by its cap; the watcher was paused by the breaker.
    ledger.change_agent_state(
        "triage", "running", "run (schedule)", step="label", tier="cheap", model="sim-cheap:flash", now=at(minutes=1)
    )
    ledger.change_agent_state("nightly", "running", "run (schedule)", now=at(hours=13))
    ledger.change_agent_state(
        "nightly", "deferred", "agent day_usd cap: $0.048 of $0.05 used, this call could need $0.0242", now=at(hours=13)
    )
    ledger.pause_agent(
        "watcher",
        "breaker",
        "runaway breaker (rising_input): input tokens rose across 3 consecutive calls (14,000 -> 66,000)",
        now=at(minutes=29),
    )
    for agent, minutes in (("fixer", 58), ("triage", 14), ("nightly", 660)):
        ledger.set_next_run(agent, NOW + timedelta(minutes=minutes))
    # Events for the reviewer's step log and the watcher's alarm.
    events: list[tuple[str, dict[str, Any], str, int | None, datetime]] = [
        (
            "run_started",
            {"trigger": "manual", "steps": ["count"], "simulated": True},
            "reviewer",
            review_run,
            at(minutes=4),
        ),
        ("step_started", {"step": "count", "step_kind": "model"}, "reviewer", review_run, at(minutes=4)),
        (
            "call_started",
            {
                "step": "count",
                "tier": "cheap",
                "model": "sim-cheap:flash",
                "attempt": 1,
                "prompt_tokens": 240,
                "max_output_tokens": 24,
                "reserved_micros": 82,
                "simulated": True,
            },
            "reviewer",
            review_run,
            at(minutes=4),
        ),
        (
            "call_recorded",
            {
                "call_id": 9,
                "step": "count",
                "tier": "cheap",
                "model": "sim-cheap:flash",
                "attempt": 1,
                "input_uncached": 240,
                "cache_read": 0,
                "cache_write": 0,
                "output": 1,
                "cost_micros": 37,
                "priced": True,
                "latency_s": 0.41,
                "simulated": True,
            },
            "reviewer",
            review_run,
            at(minutes=4),
        ),
        (
            "gate_checked",
            {
                "step": "count",
                "gate": "cmd: test -s todo_count.txt",
                "passed": False,
                "output": "$ test -s todo_count.txt\n[exit 1]",
                "tier": "cheap",
                "attempt": 1,
            },
            "reviewer",
            review_run,
            at(minutes=3),
        ),
        (
            "workspace_restored",
            {"step": "count", "files_restored": 0, "files_removed": 1, "scope": "attempt"},
            "reviewer",
            review_run,
            at(minutes=3),
        ),
        (
            "escalation_requested",
            {
                "approval_id": approval,
                "step": "count",
                "model": "sim-frontier:sonnet",
                "reason": "gate failed",
                "est_cold_micros": 14_650,
                "est_warm_micros": 3_310,
                "caps_left": {},
                "simulated": True,
            },
            "reviewer",
            review_run,
            at(minutes=3),
        ),
        (
            "breaker_tripped",
            {
                "rule": "rising_input",
                "message": "input tokens rose across 3 consecutive calls (14,000 -> 66,000) while output stayed under 5% of input",
                "evidence": {
                    "call_ids": [91, 92, 93],
                    "input_tokens": [14000, 40000, 66000],
                    "output_tokens": [60, 60, 60],
                },
            },
            "watcher",
            None,
            at(minutes=29),
        ),
    ]
    for kind, data, agent, run_id, when in events:
        ledger.append_event(kind, data, agent=agent, run_id=run_id, at=when)
    digest = home / "agents" / "reviewer" / "digest.md"
    digest.parent.mkdir(parents=True, exist_ok=True)
    digest.write_text(
        "# reviewer\n\n- 2026-11-19: todo_count.txt was 7; the cheap tier counted 6 (missed a `TODO:`).\n"
    )


def _iso(moment: datetime) -> str:
    from supervisor.clock import iso

    return iso(moment)


def fake_models_probe(config: Config, catalog: Catalog, environ: Any, runtime: Any) -> ModelsData:
    """The Models screen's probes, fixed (no network, no hardware differences between machines)."""
    return ModelsData(
        ladder=ladder(config, catalog, {}),
        backends=[
            BackendHealth(
                "ollama",
                "ollama",
                True,
                "Ollama at http://127.0.0.1:11434: 2 pulled, 1 loaded",
                models=[
                    LocalModel(
                        "ollama", "qwen3:4b", 2_600_000_000, loaded=True, expires_at="2026-11-20T15:04:00+00:00"
                    ),
                    LocalModel("ollama", "gemma3:1b", 815_000_000),
                ],
            ),
            BackendHealth(
                "mlx",
                "mlx",
                True,
                "mlx-lm ready; 1 model(s) on disk, 0 loaded (0 of 4096 MB budget)",
                models=[LocalModel("mlx", "smollm2-135m", 270_000_000)],
            ),
            BackendHealth("sim-local", "scripted", True, "simulated (scripted answers)"),
            BackendHealth("sim-cheap", "scripted", True, "simulated (scripted answers)"),
            BackendHealth("sim-frontier", "scripted", True, "simulated (scripted answers)"),
        ],
        api_keys={
            "ANTHROPIC_API_KEY": False,
            "OPENAI_API_KEY": False,
            "DEEPSEEK_API_KEY": True,
            "GEMINI_API_KEY": False,
        },
        hardware=Hardware("AMD EPYC 7B13", 8, 32 * 1024**3, 21 * 1024**3, [], "nvidia-smi not found"),
    )
