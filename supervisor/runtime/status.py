"""What ``supervisor status`` and the TUI's Agents screen show: state, spend against caps, next run, the
breaker, learned tier skips, and the cache-aware cost per wake. Read-only: it never changes anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from supervisor.backends.base import Message, estimate_tokens
from supervisor.catalog import Catalog, Tier, split_model_key
from supervisor.clock import local_day_start, local_month_start
from supervisor.config import AgentConfig, Config
from supervisor.errors import PromptTooLarge
from supervisor.ledger import Ledger
from supervisor.runtime.budget import cap_limits, estimate_call
from supervisor.runtime.events import BreakerTripped
from supervisor.runtime.memory import AgentMemory
from supervisor.runtime.pool import BackendPool
from supervisor.runtime.prompt import build_messages, read_context
from supervisor.runtime.router import Router
from supervisor.runtime.workspace import WorkspaceError


@dataclass(frozen=True, slots=True)
class WakeEstimate:
    """Expected cost of one wake at the first paid tier of each model step."""

    warm_micros: int
    cold_micros: int
    expected_micros: int
    expected: str  # "warm" | "cold" | "mixed" (per step, cold where the wake interval outlives the cache TTL)
    why: str
    models: list[str]


@dataclass
class AgentStatus:
    name: str
    state: str
    state_reason: str
    state_since: str
    paused_by: str | None
    schedule: str | None
    next_run_at: str | None
    current_step: str | None
    current_tier: str | None
    current_model: str | None
    spend_day_micros: int
    spend_month_micros: int
    cap_day_micros: int | None
    cap_month_micros: int | None
    cap_run_micros: int | None
    tokens_today: dict[str, int]
    local_compute_s_today: float
    last_run: dict[str, Any] | None
    last_gate: str | None
    pending_approvals: int
    learned_skips: list[dict[str, Any]] = field(default_factory=list)
    breaker: dict[str, Any] | None = None
    wake_estimate: WakeEstimate | None = None
    simulated: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return data


def agent_statuses(
    config: Config,
    catalog: Catalog,
    ledger: Ledger,
    now: datetime,
    environ: dict[str, str] | None = None,
    names: list[str] | None = None,
) -> list[AgentStatus]:
    """Status of every agent (or only ``names``), computed from the ledger; read-only."""
    pool = BackendPool(config, environ if environ is not None else dict(config.environ))
    router = Router(config, catalog, pool, ledger)
    rows = {r["name"]: r for r in ledger.agents()}
    day, month = local_day_start(now), local_month_start(now)
    today = day.date().isoformat()
    out = []
    for name, agent in config.agents.items():
        if names is not None and name not in names:
            continue
        row = rows.get(name) or {}
        limits = cap_limits(config, agent)
        tokens = ledger.query(
            "SELECT coalesce(sum(input_uncached), 0), coalesce(sum(cache_read), 0), coalesce(sum(cache_write), 0), "
            "coalesce(sum(output), 0), coalesce(sum(compute_s), 0) FROM call_rollup WHERE agent = ? AND day >= ?",
            (name, today),
        )[0]
        runs = ledger.recent_runs(name, limit=1)
        last_gate = ledger.query(
            "SELECT s.name, s.verify_result, s.tier_reached FROM steps s JOIN runs r ON r.id = s.run_id "
            "WHERE r.agent = ? AND s.verify_result IS NOT NULL ORDER BY s.id DESC LIMIT 1",
            (name,),
        )
        breaker = None
        if row.get("state") == "paused" and row.get("paused_by") == "breaker":
            trips = ledger.events_after(0, agent=name, kinds=[BreakerTripped.kind])
            if trips:
                breaker = {"at": trips[-1].at, **trips[-1].data}
        skips = []
        for step in agent.steps:
            if step.prompt is None:
                continue
            for tier in step.ladder or agent.ladder:
                if tier == "frontier":
                    continue
                learned = router.learned_skip(name, step.name, tier)
                if learned is not None:
                    skips.append(
                        {"step": step.name, "tier": tier, "reason": learned.reason, "failed_runs": learned.failed_runs}
                    )
        out.append(
            AgentStatus(
                name=name,
                state=row.get("state", "idle"),
                state_reason=row.get("state_reason", ""),
                state_since=row.get("state_since", ""),
                paused_by=row.get("paused_by"),
                schedule=agent.schedule,
                next_run_at=row.get("next_run_at"),
                current_step=row.get("current_step"),
                current_tier=row.get("current_tier"),
                current_model=row.get("current_model"),
                spend_day_micros=ledger.spend(agent=name, since=day).micros,
                spend_month_micros=ledger.spend(agent=name, since=month).micros,
                cap_day_micros=limits.agent_day_micros,
                cap_month_micros=limits.agent_month_micros,
                cap_run_micros=limits.run_micros,
                tokens_today={
                    "input_uncached": int(tokens[0]),
                    "cache_read": int(tokens[1]),
                    "cache_write": int(tokens[2]),
                    "output": int(tokens[3]),
                },
                local_compute_s_today=round(float(tokens[4]), 2),
                last_run=runs[0] if runs else None,
                last_gate=(
                    f"{last_gate[0]['name']}: {last_gate[0]['verify_result']} at {last_gate[0]['tier_reached']}"
                    if last_gate
                    else None
                ),
                pending_approvals=len(ledger.approvals(agent=name)),
                learned_skips=skips,
                breaker=breaker,
                wake_estimate=wake_estimate(config, catalog, router, ledger, name, agent, now),
            )
        )
    return out


def wake_estimate(
    config: Config, catalog: Catalog, router: Router, ledger: Ledger, name: str, agent: AgentConfig, now: datetime
) -> WakeEstimate | None:
    """Cost of one wake at each model step's first API tier, with a warm and a cold prompt cache.

    The prompt size is the step's last real call at that tier when there is one, else today's prompt built
    from the workspace. When the schedule's interval is longer than the model's cache TTL, the cache will be
    cold at every wake, so the expected figure is the cold one; keeping the cache warm with pings would cost
    more than a lean fresh session.
    """
    warm = cold = expected_total = 0
    models: list[str] = []
    ttl_reasons: list[str] = []
    kinds: set[str] = set()
    schedule = agent.schedule_spec
    memory = AgentMemory(name, ledger.path.parent / "agents", agent.memory_tokens)
    for step in agent.steps:
        if step.prompt is None:
            continue
        paid_tiers: list[Tier] = [t for t in (step.ladder or agent.ladder) if t != "local"]
        if not paid_tiers:
            continue
        tier = paid_tiers[0]
        candidates, _ = router.candidates(tier)
        if not candidates:
            # Unavailable now (no key, offline): estimate with the first configured model that is priced.
            for key in config.tiers.models(tier):
                provider, model_id = split_model_key(key)
                priced = catalog.spec_for(provider, model_id, config.providers.get(provider), tier=tier).spec
                if priced is not None:
                    spec = priced
                    break
            else:
                continue
        else:
            spec = candidates[0].spec
        prefix, other = _prompt_size(config, ledger, name, agent, step, tier, memory)
        output = _last_output(ledger, name, step.name, tier) or step.max_output_tokens
        estimate = estimate_call(spec, prefix, other, output, now)
        step_warm, step_cold_micros = estimate.warm_micros, estimate.cold_micros
        if step.uses_tools:
            # A worker's loop makes one call per turn (as many as its last attempt at this tier, else up to
            # max_turns); within a wake, the first turn's cache write is read by the next turns.
            turns = _last_turns(ledger, name, step.name, tier) or step.turn_limit
            step_warm = turns * estimate.warm_micros
            step_cold_micros = estimate.cold_micros + (turns - 1) * estimate.warm_micros
        warm += step_warm
        cold += step_cold_micros
        models.append(spec.key)
        ttl = spec.cache_ttl_seconds
        step_cold = schedule is not None and (ttl is None or schedule.nominal_interval_s > ttl)
        expected_total += step_cold_micros if step_cold else step_warm
        kinds.add("cold" if step_cold else "warm")
        if schedule is None:
            ttl_reasons.append(f"{spec.key}: runs on demand")
        elif step_cold:
            ttl_reasons.append(
                f"{spec.key}: wakes every {schedule.text.split(maxsplit=1)[-1]} > cache TTL {(ttl or 0) // 60}m, so the cache is cold at each wake"
            )
        else:
            ttl_reasons.append(f"{spec.key}: wakes within the {(ttl or 0) // 60}m cache TTL")
    if not models:
        return None
    expected = kinds.pop() if len(kinds) == 1 else "mixed"
    return WakeEstimate(warm, cold, expected_total, expected, "; ".join(ttl_reasons), models)


def _prompt_size(
    config: Config, ledger: Ledger, name: str, agent: AgentConfig, step: Any, tier: str, memory: AgentMemory
) -> tuple[int, int]:
    rows = ledger.query(
        "SELECT input_uncached, cache_read, cache_write_5m, cache_write_1h FROM calls WHERE agent = ? AND step = ? AND tier = ? "
        "AND input_uncached IS NOT NULL ORDER BY id DESC LIMIT 1",
        (name, step.name, tier),
    )
    try:
        workspace = config.workspace(name)
        context = read_context(workspace, step, config.file.limits.max_context_file_bytes) if workspace.is_dir() else []
    except (PromptTooLarge, WorkspaceError):
        context = []
    messages = build_messages(name, agent, step, digest=memory.digest(), context=context, failure=None, failure_chars=0)
    prefix = estimate_tokens(messages[:1])
    other = estimate_tokens([Message("user", messages[1].content)])
    if rows:
        total = sum(int(v or 0) for v in rows[0])
        # Keep the measured total, split in the same proportion as today's prompt.
        share = prefix / max(1, prefix + other)
        prefix = int(total * share)
        other = total - prefix
    return prefix, other


def _last_turns(ledger: Ledger, name: str, step: str, tier: str) -> int | None:
    """How many turns the step's last worker attempt at ``tier`` took."""
    rows = ledger.query(
        "SELECT run_id, attempt FROM calls WHERE agent = ? AND step = ? AND tier = ? AND turn IS NOT NULL "
        "ORDER BY id DESC LIMIT 1",
        (name, step, tier),
    )
    if not rows:
        return None
    count = ledger.scalar(
        "SELECT max(turn) FROM calls WHERE agent = ? AND step = ? AND tier = ? AND run_id = ? AND attempt = ?",
        (name, step, tier, rows[0][0], rows[0][1]),
    )
    return int(count) if count else None


def _last_output(ledger: Ledger, name: str, step: str, tier: str) -> int | None:
    rows = ledger.query(
        "SELECT output FROM calls WHERE agent = ? AND step = ? AND tier = ? AND output IS NOT NULL ORDER BY id DESC LIMIT 1",
        (name, step, tier),
    )
    return int(rows[0][0]) if rows else None


__all__ = ["AgentStatus", "WakeEstimate", "agent_statuses"]
