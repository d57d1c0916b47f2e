"""Continuity without a growing session: a bounded digest file per agent, rewritten after every run.

Every run is a fresh session. What the next run needs (the last outcome, open failures, decisions) lives in
``agents/<name>/digest.md``, rewritten deterministically at the end of each run, with no model call, and kept
under ``memory_tokens``. Its shape is fixed (one "last run" line, counts over recent runs, one line per open
failure, the last few decisions), so from the second run on its size stays flat however long the agent lives.
The full record of each run goes to ``runs/<run_id>.md`` and is never sent to a model. ``state.json`` holds the
structured history the digest is rendered from.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from supervisor.atomic_file import atomic_write_text
from supervisor.backends.base import BYTES_PER_TOKEN_ESTIMATE
from supervisor.cost import format_usd
from supervisor.runtime.feedback import digest_entry
from supervisor.secrets import NO_SECRETS, Redactor

RECENT_RUNS = 10
MAX_DECISIONS = 5
KEEP_RUN_SUMMARIES = 50
FAILURE_EXCERPT_CHARS = 300


@dataclass(frozen=True, slots=True)
class StepSummary:
    name: str
    outcome: str
    tier: str | None = None
    model: str | None = None
    attempts: int = 0
    failure: str = ""  # the last gate failure (trimmed), if the step did not pass


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: int
    agent: str
    trigger: str
    started_at: str
    ended_at: str
    outcome: str
    reason: str
    cost_micros: int
    unpriced_calls: int
    steps: list[StepSummary] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)


def estimate_text_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN_ESTIMATE)


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class AgentMemory:
    """The files under ``agents/<name>/``."""

    def __init__(self, agent: str, agents_dir: Path, memory_tokens: int, redactor: Redactor = NO_SECRETS) -> None:
        self.agent = agent
        self.directory = agents_dir / agent
        self.memory_tokens = memory_tokens
        self.redactor = redactor

    @property
    def digest_path(self) -> Path:
        return self.directory / "digest.md"

    @property
    def state_path(self) -> Path:
        return self.directory / "state.json"

    def run_record_path(self, run_id: int) -> Path:
        return self.directory / "runs" / f"{run_id}.md"

    def digest(self) -> str:
        """The digest the next session starts from ('' before the first run)."""
        try:
            return self.digest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.state_path.read_text(encoding="utf-8"))
            return data
        except (FileNotFoundError, ValueError):
            return {"runs": [], "open_failures": {}, "decisions": []}

    def record_run(self, summary: RunSummary, record_lines: list[str]) -> tuple[Path, int]:
        """Save the run's full record, update the state, and rewrite the bounded digest."""
        scrub = self.redactor.scrub
        atomic_write_text(self.run_record_path(summary.run_id), scrub("\n".join(record_lines) + "\n"))
        state = self.state()
        state["runs"] = [*state.get("runs", []), asdict(summary)][-KEEP_RUN_SUMMARIES:]
        failures: dict[str, Any] = state.get("open_failures", {})
        for step in summary.steps:
            if step.outcome == "passed":
                failures.pop(step.name, None)
            elif step.failure:
                failures[step.name] = {
                    "tier": step.tier,
                    "run_id": summary.run_id,
                    "failure": digest_entry(step.failure),  # short, and no machine paths
                }
        state["open_failures"] = failures
        state["decisions"] = [*state.get("decisions", []), *summary.decisions][-MAX_DECISIONS:]
        atomic_write_text(self.state_path, scrub(json.dumps(state, indent=1)))
        text = scrub(render_digest(self.agent, state, self.memory_tokens))
        atomic_write_text(self.digest_path, text)
        return self.digest_path, estimate_text_tokens(text)


def render_digest(agent: str, state: dict[str, Any], budget_tokens: int) -> str:
    """Deterministic rendering, trimmed (oldest decisions first, then failure detail) to fit the budget."""
    runs: list[dict[str, Any]] = state.get("runs", [])
    failures: dict[str, Any] = state.get("open_failures", {})
    decisions: list[str] = list(state.get("decisions", []))
    failure_chars = FAILURE_EXCERPT_CHARS
    while True:
        text = _render(agent, runs, failures, decisions, failure_chars)
        if estimate_text_tokens(text) <= budget_tokens:
            return text
        if decisions:
            decisions = decisions[1:]
        elif failure_chars > 60:
            failure_chars //= 2
        elif len(failures) > 1:
            failures = dict(list(failures.items())[:-1])
        else:
            return text[: budget_tokens * BYTES_PER_TOKEN_ESTIMATE // 2]


def _render(
    agent: str, runs: list[dict[str, Any]], failures: dict[str, Any], decisions: list[str], failure_chars: int
) -> str:
    lines = [
        f"# Memory digest for {agent}",
        "(Written by the supervisor after each run; not a conversation.)",
        "",
    ]
    if not runs:
        return "\n".join([*lines, "No runs yet."]) + "\n"
    last = runs[-1]
    step_bits = []
    for step in last.get("steps", []):
        where = f" at {step['tier']}" if step.get("tier") else ""
        step_bits.append(f"{step['name']} {step['outcome']}{where}")
    cost = "unpriced" if last.get("unpriced_calls") else format_usd(last.get("cost_micros", 0))
    lines += [
        "## Last run",
        f"Run {last['run_id']} ({last['started_at'][:16].replace('T', ' ')} UTC, {last['trigger']}): {last['outcome']}"
        + (f" ({_one_line(last['reason'], 120)})" if last.get("reason") else "")
        + f"; {'; '.join(step_bits) or 'no steps'}; cost {cost}.",
        "",
    ]
    recent = runs[-RECENT_RUNS:]
    outcomes = Counter(r["outcome"] for r in recent)
    passing: Counter[str] = Counter()
    for r in recent:
        for step in r.get("steps", []):
            if step["outcome"] == "passed" and step.get("tier"):
                passing[f"{step['name']}@{step['tier']}"] += 1
    lines += [
        f"## Last {len(recent)} runs",
        "Outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) + ".",
        "Passed at: " + (", ".join(f"{k} x{v}" for k, v in sorted(passing.items())) or "nothing yet") + ".",
        "",
    ]
    if failures:
        lines.append("## Open failures (fix these)")
        for name, info in sorted(failures.items()):
            excerpt = _one_line(info["failure"], failure_chars)
            lines.append(f"- {name} (run {info['run_id']}, {info.get('tier') or 'tier 0'}): {excerpt}")
        lines.append("")
    if decisions:
        lines.append("## Decisions")
        lines += [f"- {_one_line(d, 160)}" for d in decisions]
        lines.append("")
    return "\n".join(lines)
