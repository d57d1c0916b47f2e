"""The runaway breaker: the 136M-token pattern, caught while it is still small.

Three rules, each with configurable thresholds (``[breaker]`` in the config):

(a) rising input: the agent's input tokens per call rise across N consecutive calls while each call's output
    stays under a small share of its input (a session re-sending an ever-growing thread);
(b) hourly spend: spend in the last hour exceeds a share of the agent's day cap;
(c) repeated failure: the same gate fails with the same output N times in a row at one tier (a loop).

A trip pauses the agent (only a human's resume restarts it) and records an alarm event with the evidence.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from supervisor.config import BreakerConfig
from supervisor.cost import format_usd
from supervisor.ledger import Ledger


@dataclass(frozen=True, slots=True)
class Trip:
    rule: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _prompt(row: dict[str, Any]) -> int:
    return sum(int(row.get(k) or 0) for k in ("input_uncached", "cache_read", "cache_write_5m", "cache_write_1h"))


def check_rising_input(ledger: Ledger, agent: str, cfg: BreakerConfig) -> Trip | None:
    calls = list(reversed(ledger.recent_agent_calls(agent, cfg.rising_calls)))  # oldest first
    if len(calls) < cfg.rising_calls:
        return None
    inputs = [_prompt(c) for c in calls]
    outputs = [int(c.get("output") or 0) for c in calls]
    rising = all(b > a for a, b in itertools.pairwise(inputs))
    lean_output = all(o < cfg.max_output_ratio * i for i, o in zip(inputs, outputs, strict=True) if i)
    if not (rising and lean_output and all(inputs)):
        return None
    return Trip(
        "rising_input",
        f"input tokens rose across {len(calls)} consecutive calls ({inputs[0]:,} -> {inputs[-1]:,}) while output stayed "
        f"under {cfg.max_output_ratio:.0%} of input: the pattern of a session that keeps re-sending a growing context",
        {"call_ids": [c["id"] for c in calls], "input_tokens": inputs, "output_tokens": outputs},
    )


def check_hourly_spend(
    ledger: Ledger, agent: str, day_cap_micros: int | None, cfg: BreakerConfig, now: datetime
) -> Trip | None:
    if not day_cap_micros:
        return None
    spent = ledger.spend(agent=agent, since=now - timedelta(hours=1)).micros
    threshold = int(day_cap_micros * cfg.hour_share_of_day_cap)
    if spent <= threshold:
        return None
    return Trip(
        "hourly_spend",
        f"spent {format_usd(spent, places=4)} in the last hour, more than {cfg.hour_share_of_day_cap:.0%} of the "
        f"{format_usd(day_cap_micros, places=2)} day cap",
        {"spent_last_hour_micros": spent, "day_cap_micros": day_cap_micros, "threshold_micros": threshold},
    )


def check_repeated_failure(ledger: Ledger, agent: str, step: str, tier: str, cfg: BreakerConfig) -> Trip | None:
    """The last N attempts of this step (across runs) at ``tier`` all failed with byte-identical gate output."""
    recent = ledger.recent_attempts(agent, step, limit=cfg.same_failure_repeats)
    if len(recent) < cfg.same_failure_repeats:
        return None
    if any(a["tier"] != tier or a["passed"] for a in recent):
        return None
    hashes = {a["failure_hash"] for a in recent}
    if len(hashes) != 1:
        return None
    return Trip(
        "repeated_failure",
        f"step {step!r} failed its gate {len(recent)} times in a row at {tier} with the same output; retrying it "
        "again would loop",
        {
            "step": step,
            "tier": tier,
            "runs": sorted({a["run_id"] for a in recent}),
            "failure": recent[0]["failure"][:500],
        },
    )
