"""Caps from config as ledger limits, and cost estimates for approvals and cost-per-wake.

Dollar caps are written in USD in the config and become integer micro-dollars here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from supervisor.catalog import ModelSpec
from supervisor.clock import local_day_start, local_month_start
from supervisor.config import AgentConfig, Config
from supervisor.cost import format_usd, usd_to_micros, worst_case_micros
from supervisor.ledger import CapLimits, Ledger


def _micros(usd: float | None) -> int | None:
    return None if usd is None else usd_to_micros(usd)


def cap_limits(config: Config, agent: AgentConfig) -> CapLimits:
    caps, global_caps = agent.caps, config.file.caps
    return CapLimits(
        run_micros=_micros(caps.run_usd),
        agent_day_micros=_micros(caps.day_usd),
        agent_month_micros=_micros(caps.month_usd),
        global_day_micros=_micros(global_caps.day_usd),
        global_month_micros=_micros(global_caps.month_usd),
        run_tokens=caps.run_tokens,
        agent_day_tokens=caps.day_tokens,
        agent_month_tokens=caps.month_tokens,
    )


def caps_left(ledger: Ledger, config: Config, agent_name: str, run_id: int | None, now: datetime) -> dict[str, Any]:
    """What is left of every dollar cap that applies to the agent (for approval prompts and status)."""
    agent = config.agent(agent_name)
    limits = cap_limits(config, agent)
    day, month = local_day_start(now), local_month_start(now)
    scopes: list[tuple[str, int | None, int]] = []
    if run_id is not None:
        scopes.append(("run", limits.run_micros, ledger.spend(run_id=run_id).micros))
    scopes += [
        ("agent day", limits.agent_day_micros, ledger.spend(agent=agent_name, since=day).micros),
        ("agent month", limits.agent_month_micros, ledger.spend(agent=agent_name, since=month).micros),
        ("global day", limits.global_day_micros, ledger.spend(since=day).micros),
        ("global month", limits.global_month_micros, ledger.spend(since=month).micros),
    ]
    out: dict[str, Any] = {}
    for name, limit, spent in scopes:
        if limit is None:
            continue
        out[name] = {"limit_micros": limit, "spent_micros": spent, "left_micros": max(0, limit - spent)}
    return out


def describe_caps_left(left: dict[str, Any]) -> str:
    if not left:
        return "no caps set"
    return ", ".join(
        f"{name} {format_usd(v['left_micros'], places=4)} left of {format_usd(v['limit_micros'], places=4)}"
        for name, v in left.items()
    )


@dataclass(frozen=True, slots=True)
class CallEstimate:
    """What one call would cost with a cold and a warm prompt cache (output at its full budget)."""

    cold_micros: int
    warm_micros: int
    worst_micros: int
    prefix_tokens: int
    other_tokens: int
    output_tokens: int


def estimate_call(
    spec: ModelSpec, prefix_tokens: int, other_tokens: int, output_tokens: int, at: datetime
) -> CallEstimate:
    """Cold: the stable prefix is written to the cache (or sent uncached when the provider has no write fee);
    warm: the prefix is read from the cache. The rest of the prompt is uncached input either way."""
    table = spec.price_at(at) or spec.prices[-1]
    prompt = prefix_tokens + other_tokens
    rates, _label = table.rates_for(at, prompt)
    from decimal import ROUND_CEILING, Decimal

    def micros(value: Decimal) -> int:
        return int(value.quantize(Decimal(1), rounding=ROUND_CEILING))

    cold = micros(
        prefix_tokens * max(rates.cache_write, rates.input) + other_tokens * rates.input + output_tokens * rates.output
    )
    warm = micros(prefix_tokens * rates.cache_read + other_tokens * rates.input + output_tokens * rates.output)
    return CallEstimate(
        cold,
        warm,
        worst_case_micros(spec, prompt, output_tokens, at),
        prefix_tokens,
        other_tokens,
        output_tokens,
    )
