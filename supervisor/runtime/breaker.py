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

from supervisor.clock import parse_iso
from supervisor.config import BreakerConfig
from supervisor.cost import format_usd
from supervisor.ledger import Ledger
from supervisor.runtime.events import BreakerTripped


@dataclass(frozen=True, slots=True)
class Trip:
    rule: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


def _prompt(row: dict[str, Any]) -> int:
    return sum(int(row.get(k) or 0) for k in ("input_uncached", "cache_read", "cache_write_5m", "cache_write_1h"))


def last_trip(ledger: Ledger, agent: str) -> tuple[int, datetime | None]:
    """The newest call id and the time of the agent's last trip: evidence from before a human's resume never
    counts again (otherwise the first call after a resume would re-trip on the old calls)."""
    trips = ledger.events_after(0, agent=agent, kinds=[BreakerTripped.kind])
    if not trips:
        return 0, None
    newest = max((int(c) for t in trips for c in t.data.get("evidence", {}).get("call_ids", [])), default=0)
    newest = max(
        newest,
        int(
            ledger.scalar(
                "SELECT coalesce(max(id), 0) FROM calls WHERE agent = ? AND ended_at <= ?", (agent, trips[-1].at)
            )
            or 0
        ),
    )
    return newest, parse_iso(trips[-1].at)


def check_rising_input(
    ledger: Ledger, agent: str, step: str, cfg: BreakerConfig, *, floor_tokens: int = 0, key_id: int | None = None
) -> Trip | None:
    """Rule (a), per step: the same step re-sending more and more each call is the signature of a growing
    session; different steps of a pipeline reading different-sized files are not.

    ``floor_tokens``: calls whose input is at most this are not evidence. The built-in worker passes the size
    its lean transcript settles at (the fixed head, the summary lines and the transcript budget): a loop
    filling its budget grows by design; one whose turns keep growing past it is what this rule is for.
    ``key_id``: only the calls made with this gateway key (an agent step's attempt: each attempt starts afresh)."""
    floor, _ = last_trip(ledger, agent)
    calls = list(
        reversed(ledger.recent_agent_calls(agent, cfg.rising_calls, step=step, after_id=floor, key_id=key_id))
    )  # oldest first
    if len(calls) < cfg.rising_calls:
        return None
    inputs = [_prompt(c) for c in calls]
    outputs = [int(c.get("output") or 0) for c in calls]
    if any(i <= floor_tokens for i in inputs):
        return None
    rising = all(b > a for a, b in itertools.pairwise(inputs))
    lean_output = all(o < cfg.max_output_ratio * i for i, o in zip(inputs, outputs, strict=True) if i)
    if not (rising and lean_output and all(inputs)):
        return None
    return Trip(
        "rising_input",
        f"input tokens of step {step!r} rose across {len(calls)} consecutive calls ({inputs[0]:,} -> {inputs[-1]:,}) "
        f"while output stayed under {cfg.max_output_ratio:.0%} of input: the pattern of a session that keeps "
        "re-sending a growing context",
        {"step": step, "call_ids": [c["id"] for c in calls], "input_tokens": inputs, "output_tokens": outputs},
    )


def check_hourly_spend(
    ledger: Ledger, agent: str, day_cap_micros: int | None, cfg: BreakerConfig, now: datetime
) -> Trip | None:
    """Rule (b): spend in the last hour (since the last trip, if that is more recent) over a share of the day cap."""
    if not day_cap_micros:
        return None
    _, tripped_at = last_trip(ledger, agent)
    since = now - timedelta(hours=1)
    if tripped_at is not None and tripped_at > since:
        since = tripped_at
    spent = ledger.spend(agent=agent, since=since).micros
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
