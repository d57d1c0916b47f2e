"""Savings benchmark: the same task suite run twice, every step at the frontier tier vs through the ladder.

Run as ``python bench/savings.py [--local scripted|real|ollama] [--tasks N] [--json PATH]``.

The suite is ``bench/tasks/*.toml``: one task per file (a prompt, context files, ``writes`` or ``output``,
deterministic gates, a category, an a-priori difficulty, a reference answer and a plausible wrong answer, and
the fixture files). Each task becomes one agent with one model step, run once through the real runtime: real
prompts, real reservations and ledger, real gates in a real workspace, real escalation.

Two runs, each in a fresh data dir and fresh workspaces:

- frontier-only: ``ladder = ["frontier"]``, ``frontier = "allow"``;
- ladder: ``ladder = ["local", "cheap", "frontier"]``, ``frontier = "allow"`` (the benchmark measures cost
  routing; approvals are exercised elsewhere), ``attempts_per_tier = 1``.

The paid tiers are scripted backends priced at catalog prices (cheap as deepseek:deepseek-flash, frontier as
anthropic:claude-sonnet-5-5), cold cache, at a fixed instant (``--at``) so the figures do not depend on the
hour. Whether a tier answers a task correctly is drawn from a documented, seeded correctness model (printed
with the results): a pass returns the task's reference answer, a fail its plausible wrong answer, and the gates
judge either way. Input tokens are the real prompt sizes (the scripted backend's estimate, ceil(bytes / 3) plus
framing) and output tokens the size of the answer returned. The local tier is the real embedded SmolLM2
(``--local real``; the model answers, the gates judge), a model served by Ollama (``--local ollama``), or a
scripted stand-in with its own documented pass model (``--local scripted``, the fast default).

Cost comes from the ledger (integer micro-dollars); pass rate = verified successes / tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from supervisor import __version__, paths
from supervisor.backends.base import Request
from supervisor.backends.scripted import ScriptedAnswer, ScriptedBackend
from supervisor.catalog import Catalog, load_catalog
from supervisor.config import Config, parse_config
from supervisor.cost import format_usd
from supervisor.ledger import Ledger
from supervisor.runtime.events import CallStarted, Event, TextStreamed
from supervisor.runtime.runtime import Runtime

BENCH_DIR = Path(__file__).resolve().parent
TASKS_DIR = BENCH_DIR / "tasks"
DEFAULT_JSON = BENCH_DIR / "results" / "savings.json"

Tier = Literal["local", "cheap", "frontier"]
Difficulty = Literal["easy", "medium", "hard"]
LocalMode = Literal["scripted", "real", "ollama"]
Draws = Literal["nested", "independent"]
DIFFICULTIES: tuple[Difficulty, ...] = ("easy", "medium", "hard")
CATEGORIES = ("extraction", "conversion", "code", "edit", "reasoning")
TIERS: tuple[Tier, ...] = ("local", "cheap", "frontier")

CHEAP_MODEL = "deepseek:deepseek-flash"
FRONTIER_MODEL = "anthropic:claude-sonnet-5-5"
LOCAL_MODEL = "mlx:smollm2-135m"
DEFAULT_OLLAMA_MODEL = "qwen3:4b"
# A Tuesday, 20:00 in UTC+8: outside DeepSeek's peak hours, after every price change in the bundled catalog.
DEFAULT_AT = "2026-11-17T12:00:00+00:00"
GOAL = "Complete the task below exactly as asked."
ATTEMPTS_PER_TIER = 1

# The documented correctness model: P(the tier's answer passes the gates) by the task's a-priori difficulty.
DEFAULT_P: dict[Tier, dict[Difficulty, float]] = {
    # --local scripted only: an assumed small local model that gets most easy tasks and few medium ones.
    "local": {"easy": 0.6, "medium": 0.2, "hard": 0.0},
    "cheap": {"easy": 0.95, "medium": 0.8, "hard": 0.4},
    "frontier": {"easy": 0.99, "medium": 0.97, "hard": 0.9},
}

ANCHORS = [
    ("RouteLLM (Ong et al., 2024)", "up to 85% lower cost at 95% of GPT-4 quality"),
    ("FrugalGPT (Chen et al., 2023)", "up to 98% lower cost at equal quality"),
]
TARGET_REDUCTION = 0.90


# ------------------------------------------------------------------------------------------------------------
# The task suite


@dataclass(frozen=True)
class Task:
    name: str
    category: str
    difficulty: Difficulty
    prompt: str
    context: list[str]
    writes: str | None
    output: str | None
    verify: list[Any]
    reference: str
    wrong: str
    files: dict[str, str]
    max_output_tokens: int

    @property
    def agent(self) -> str:
        return f"t-{self.name}"


TASK_KEYS = {
    "category",
    "difficulty",
    "prompt",
    "context",
    "writes",
    "output",
    "verify",
    "reference",
    "wrong",
    "files",
    "max_output_tokens",
}


def estimate_text_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / 3)


def load_task(path: Path) -> Task:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - TASK_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    if data.get("difficulty") not in DIFFICULTIES:
        raise ValueError(f"{path}: difficulty must be one of {DIFFICULTIES}")
    if data.get("category") not in CATEGORIES:
        raise ValueError(f"{path}: category must be one of {CATEGORIES}")
    if bool(data.get("writes")) == bool(data.get("output")):
        raise ValueError(f"{path}: give exactly one of writes or output")
    reference = str(data["reference"])
    # Room for the reference answer and half again: the real local model gets the same budget.
    default_budget = max(32, math.ceil(estimate_text_tokens(reference) * 1.5) + 16)
    return Task(
        name=path.stem,
        category=data["category"],
        difficulty=data["difficulty"],
        prompt=str(data["prompt"]),
        context=list(data.get("context", [])),
        writes=data.get("writes"),
        output=data.get("output"),
        verify=list(data["verify"]),
        reference=reference,
        wrong=str(data["wrong"]),
        files={str(k): str(v) for k, v in data.get("files", {}).items()},
        max_output_tokens=int(data.get("max_output_tokens", default_budget)),
    )


def load_tasks(directory: Path = TASKS_DIR) -> list[Task]:
    return [load_task(p) for p in sorted(directory.glob("*.toml"))]


# ------------------------------------------------------------------------------------------------------------
# The correctness model


@dataclass(frozen=True)
class CorrectnessModel:
    """Seeded, documented: does ``tier`` answer ``task`` correctly?

    ``nested`` (default): one latent draw u ~ U(0, 1) per task, shared by every tier; a tier passes when
    u < P(tier, difficulty). Capability is nested: whatever a cheaper tier gets right, a dearer one does too
    (with the default probabilities). ``independent``: a separate draw per (task, tier).
    """

    p: dict[Tier, dict[Difficulty, float]]
    seed: int
    draws: Draws = "nested"

    def draw(self, task: str, tier: Tier) -> float:
        key = f"{self.seed}:{task}" if self.draws == "nested" else f"{self.seed}:{task}:{tier}"
        return random.Random(key).random()

    def passes(self, task: Task, tier: Tier) -> bool:
        return self.draw(task.name, tier) < self.p[tier][task.difficulty]

    def describe(self) -> list[str]:
        lines = [
            f"correctness model (seed {self.seed}, {self.draws} draws): P(answer passes) by difficulty",
        ]
        for tier in TIERS:
            probs = ", ".join(f"{d} {self.p[tier][d]:.2f}" for d in DIFFICULTIES)
            note = " (only with --local scripted)" if tier == "local" else ""
            lines.append(f"  {tier:<9} {probs}{note}")
        if self.draws == "nested":
            lines.append(
                "  one latent draw u per task, shared by every tier: a tier passes when u < P(tier, difficulty)"
            )
        else:
            lines.append("  an independent draw per (task, tier)")
        return lines


def parse_probs(text: str) -> dict[Difficulty, float]:
    """``easy=0.9,medium=0.5,hard=0.1`` (every difficulty must be given)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = float(value)
    if set(out) != set(DIFFICULTIES) or not all(0.0 <= v <= 1.0 for v in out.values()):
        raise argparse.ArgumentTypeError(f"{text!r}: give easy=P,medium=P,hard=P with 0 <= P <= 1")
    return {d: out[d] for d in DIFFICULTIES}


# ------------------------------------------------------------------------------------------------------------
# One run of the suite


@dataclass
class TaskResult:
    task: str
    category: str
    difficulty: str
    outcome: str
    passed: bool
    tier_reached: str | None
    cost_micros: int
    calls: dict[str, int]
    input_tokens: int
    output_tokens: int
    local_compute_s: float
    seconds: float
    reason: str = ""
    answers: dict[str, str] = field(default_factory=dict)  # "local" -> what the local model answered


@dataclass
class SuiteRun:
    label: str
    ladder: list[str]
    results: list[TaskResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tasks(self) -> int:
        return len(self.results)

    @property
    def passes(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def pass_rate(self) -> float:
        return self.passes / self.tasks if self.tasks else 0.0

    @property
    def cost_micros(self) -> int:
        return sum(r.cost_micros for r in self.results)

    def calls(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for r in self.results:
            total.update(r.calls)
        return {tier: total.get(tier, 0) for tier in TIERS}

    def cost_by_tier(self) -> dict[str, int]:
        return dict(self._by_tier)

    _by_tier: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "ladder": self.ladder,
            "tasks": self.tasks,
            "passes": self.passes,
            "pass_rate": self.pass_rate,
            "cost_micros": self.cost_micros,
            "cost_by_tier_micros": self.cost_by_tier(),
            "calls_per_tier": self.calls(),
            "seconds": self.seconds,
        }


def fixed_clock(at: datetime) -> Callable[[], datetime]:
    """``at``, advancing with the monotonic clock: prices stay those in force at ``at`` for the whole run."""
    start = time.monotonic()
    return lambda: at + timedelta(seconds=time.monotonic() - start)


_AGENT_LINE = re.compile(r"^Agent: (\S+)$", re.MULTILINE)


def task_of(request: Request, by_agent: Mapping[str, Task]) -> Task:
    match = _AGENT_LINE.search(request.messages[0].content)
    if match is None or match.group(1) not in by_agent:
        raise RuntimeError("a scripted tier got a prompt that names no task of the suite")
    return by_agent[match.group(1)]


def responder(tier: Tier, model: CorrectnessModel, by_agent: Mapping[str, Task]) -> Callable[[Request], ScriptedAnswer]:
    def respond(request: Request) -> ScriptedAnswer:
        task = task_of(request, by_agent)
        return ScriptedAnswer(text=task.reference if model.passes(task, tier) else task.wrong)

    return respond


def provider_section(local: LocalMode, gguf: Path | None, ollama_model: str) -> tuple[dict[str, Any], list[str]]:
    providers: dict[str, Any] = {
        "sim-cheap": {"kind": "scripted", "simulated_as": CHEAP_MODEL},
        "sim-frontier": {"kind": "scripted", "simulated_as": FRONTIER_MODEL},
    }
    if local == "scripted":
        providers["sim-local"] = {"kind": "scripted", "local": True, "simulated_as": LOCAL_MODEL}
        local_models = ["sim-local:smollm2-135m"]
    elif local == "real":
        assert gguf is not None
        providers["mlx"] = {"kind": "mlx", "local": True, "models": {"smollm2-135m": str(gguf)}}
        local_models = [LOCAL_MODEL]
    else:
        local_models = [f"ollama:{ollama_model}"]
    return providers, local_models


def build_config(
    tasks: Sequence[Task],
    root: Path,
    ladder: list[Tier],
    local: LocalMode,
    gguf: Path | None,
    ollama_model: str,
    environ: Mapping[str, str],
) -> Config:
    providers, local_models = provider_section(local, gguf, ollama_model)
    agents: dict[str, Any] = {}
    for task in tasks:
        step: dict[str, Any] = {
            "name": "task",
            "prompt": task.prompt,
            "context": task.context,
            "verify": task.verify,
            "max_output_tokens": task.max_output_tokens,
            "timeout_s": 900,
        }
        if task.writes:
            step["writes"] = task.writes
        else:
            step["output"] = task.output
        agents[task.agent] = {
            "goal": GOAL,
            "workspace": str(root / "ws" / task.name),
            "ladder": ladder,
            "frontier": "allow",
            "attempts_per_tier": ATTEMPTS_PER_TIER,
            "steps": [step],
        }
    data = {
        "providers": providers,
        "tiers": {
            "local": local_models,
            "cheap": ["sim-cheap:deepseek-flash"],
            "frontier": ["sim-frontier:claude-sonnet-5-5"],
        },
        "agents": agents,
    }
    return parse_config(data, "bench/savings.py", None, environ)


def write_workspaces(tasks: Sequence[Task], root: Path) -> None:
    for task in tasks:
        workspace = root / "ws" / task.name
        workspace.mkdir(parents=True, exist_ok=True)
        for rel, text in task.files.items():
            path = workspace / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def gate_python_first() -> Iterator[None]:
    """Gates run ``python3 ...``: resolve it to the interpreter running the benchmark, not a slow shim."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{old}"
    try:
        yield
    finally:
        os.environ["PATH"] = old


async def run_suite(
    tasks: Sequence[Task],
    *,
    label: str,
    ladder: list[Tier],
    local: LocalMode,
    model: CorrectnessModel,
    catalog: Catalog,
    work: Path,
    at: datetime,
    gguf: Path | None = None,
    ollama_model: str = DEFAULT_OLLAMA_MODEL,
    progress: Callable[[str], None] = lambda _line: None,
) -> SuiteRun:
    root = work / label
    home = root / "home"
    home.mkdir(parents=True)
    write_workspaces(tasks, root)
    environ = {**os.environ, "SUPERVISOR_HOME": str(home)}
    config = build_config(tasks, root, ladder, local, gguf, ollama_model, environ)
    by_agent = {t.agent: t for t in tasks}
    backends: dict[str, Any] = {
        name: ScriptedBackend(name, config.providers[name], environ, responder(tier, model, by_agent))
        for name, tier in (("sim-cheap", "cheap"), ("sim-frontier", "frontier"))
    }
    if local == "scripted":
        backends["sim-local"] = ScriptedBackend(
            "sim-local", config.providers["sim-local"], environ, responder("local", model, by_agent)
        )
    ledger = Ledger(home / "ledger.db")
    runtime = Runtime(config, catalog, ledger, environ=environ, backends=backends, clock=fixed_clock(at), home=home)
    run = SuiteRun(label, list(ladder))
    answers: dict[str, str] = {}
    tier_now: list[str] = ["?"]

    def listen(event: Event) -> None:
        if isinstance(event, CallStarted):
            tier_now[0] = event.tier
            answers[event.tier] = ""
        elif isinstance(event, TextStreamed):
            answers[tier_now[0]] = answers.get(tier_now[0], "") + event.text

    unsubscribe = runtime.bus.subscribe(listen)
    started = time.perf_counter()
    try:
        for index, task in enumerate(tasks, 1):
            answers.clear()
            t0 = time.perf_counter()
            result = await runtime.run_agent(task.agent, "bench", approval_timeout_s=0)
            calls = ledger.calls(run_id=result.run_id) if result.run_id else []
            per_tier = Counter(str(c["tier"]) for c in calls)
            for c in calls:
                run._by_tier[str(c["tier"])] = run._by_tier.get(str(c["tier"]), 0) + int(c["cost_micros"] or 0)
            row = TaskResult(
                task=task.name,
                category=task.category,
                difficulty=task.difficulty,
                outcome=result.outcome,
                passed=result.outcome == "success",
                tier_reached=result.tier_reached,
                cost_micros=sum(int(c["cost_micros"] or 0) for c in calls),
                calls={tier: per_tier.get(tier, 0) for tier in TIERS},
                input_tokens=sum(int(c["input_uncached"] or 0) + int(c["cache_read"] or 0) for c in calls),
                output_tokens=sum(int(c["output"] or 0) for c in calls),
                local_compute_s=sum(float(c["compute_s"] or 0.0) for c in calls if c["tier"] == "local"),
                seconds=time.perf_counter() - t0,
                reason="" if result.outcome == "success" else result.reason[:300],
                answers={tier: text[:400] for tier, text in answers.items() if tier == "local"},
            )
            run.results.append(row)
            mark = "pass" if row.passed else "FAIL"
            progress(
                f"  [{label}] {index:>2}/{len(tasks)} {task.name:<24} {mark} at {row.tier_reached or '-':<8} "
                f"{format_usd(row.cost_micros, places=6):>10}  {row.seconds:6.1f}s"
            )
    finally:
        unsubscribe()
        await runtime.aclose()
        ledger.close()
    run.seconds = time.perf_counter() - started
    return run


# ------------------------------------------------------------------------------------------------------------
# The suite's own check: every reference passes its gates and every wrong answer fails them


async def check_suite(tasks: Sequence[Task], catalog: Catalog, work: Path) -> list[str]:
    """Run the suite at the frontier tier with an oracle that always / never answers right."""
    at = datetime.fromisoformat(DEFAULT_AT)
    problems: list[str] = []
    for label, p in (("reference", 1.0), ("wrong", 0.0)):
        probs: dict[Tier, dict[Difficulty, float]] = {t: dict.fromkeys(DIFFICULTIES, p) for t in TIERS}
        run = await run_suite(
            tasks,
            label=f"check-{label}",
            ladder=["frontier"],
            local="scripted",
            model=CorrectnessModel(probs, 0),
            catalog=catalog,
            work=work,
            at=at,
        )
        for r in run.results:
            if r.passed != (p == 1.0):
                problems.append(f"{r.task}: the {label} answer {'failed' if p == 1.0 else 'passed'} ({r.reason})")
    return problems


# ------------------------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
    }


def pct(x: float) -> str:
    return f"{x:.1%}"


def drivers(frontier: SuiteRun, ladder: SuiteRun) -> dict[str, Any]:
    """What the ratio is made of."""
    by_tier = ladder.cost_by_tier()
    f_cost = frontier.cost_micros or 1
    escalated = [r for r in ladder.results if r.calls.get("frontier")]
    frontier_calls_ladder = ladder.calls()["frontier"]
    frontier_calls_only = frontier.calls()["frontier"] or 1
    mean_only = frontier.cost_micros / frontier_calls_only
    mean_ladder = by_tier.get("frontier", 0) / frontier_calls_ladder if frontier_calls_ladder else 0.0
    return {
        "ladder_cheap_share_of_frontier_only": by_tier.get("cheap", 0) / f_cost,
        "ladder_frontier_share_of_frontier_only": by_tier.get("frontier", 0) / f_cost,
        "tasks_reaching_frontier": len(escalated),
        "tasks_passed_at": dict(Counter(r.tier_reached or "-" for r in ladder.results if r.passed)),
        "mean_frontier_call_micros_frontier_only": mean_only,
        "mean_frontier_call_micros_ladder": mean_ladder,
    }


def by_difficulty(run: SuiteRun) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for d in DIFFICULTIES:
        rows = [r for r in run.results if r.difficulty == d]
        out[d] = {
            "tasks": len(rows),
            "passes": sum(r.passed for r in rows),
            "cost_micros": sum(r.cost_micros for r in rows),
        }
    return out


def render(results: dict[str, Any], model: CorrectnessModel) -> str:
    f, lad = results["frontier_only"], results["ladder"]
    ratio = results["cost_ratio"]
    lines = [
        "",
        f"savings: {f['tasks']} tasks, {results['local']['description']}",
        f"paid tiers simulated at catalog prices: cheap = {CHEAP_MODEL}, frontier = {FRONTIER_MODEL} "
        f"(prices in force at {results['priced_at']}, cold cache); attempts_per_tier = {ATTEMPTS_PER_TIER}",
        *model.describe(),
        "",
        f"{'':<34} {'frontier-only':>16} {'ladder':>16}",
        "-" * 68,
        f"{'verified passes':<34} {f['passes']:>9} ({pct(f['pass_rate']):>5}) {lad['passes']:>9} ({pct(lad['pass_rate']):>5})",
        f"{'cost (ledger)':<34} {format_usd(f['cost_micros'], places=6):>16} {format_usd(lad['cost_micros'], places=6):>16}",
        f"{'calls local / cheap / frontier':<34} {'{local} / {cheap} / {frontier}'.format(**f['calls_per_tier']):>16} "
        f"{'{local} / {cheap} / {frontier}'.format(**lad['calls_per_tier']):>16}",
        f"{'wall time':<34} {f['seconds']:>15.1f}s {lad['seconds']:>15.1f}s",
        "",
        f"cost ratio ladder / frontier-only: {ratio:.3f} ({pct(1 - ratio)} lower); "
        f"pass rate {pct(lad['pass_rate'])} vs {pct(f['pass_rate'])}",
    ]
    for d in DIFFICULTIES:
        fd, ld = results["by_difficulty"]["frontier_only"][d], results["by_difficulty"]["ladder"][d]
        if not fd["tasks"]:
            continue
        r = ld["cost_micros"] / fd["cost_micros"] if fd["cost_micros"] else 0.0
        lines.append(
            f"  {d:<7} {fd['tasks']:>2} tasks: passes {fd['passes']:>2} vs {ld['passes']:>2}; cost ratio {r:.3f}"
        )
    dr = results["drivers"]
    escalated = f"{dr['tasks_reaching_frontier']} of {lad['tasks']} tasks escalated that far"
    if dr["mean_frontier_call_micros_ladder"]:
        relative = dr["mean_frontier_call_micros_ladder"] / max(dr["mean_frontier_call_micros_frontier_only"], 1)
        escalated += (
            f"; each of those frontier calls cost {relative:.2f}x a frontier-only call, its prompt carrying the "
            "failed gate's output"
        )
    lines += [
        "",
        f"what drives it: the ladder's frontier calls alone cost {pct(dr['ladder_frontier_share_of_frontier_only'])} "
        f"of frontier-only ({escalated}); its cheap calls cost {pct(dr['ladder_cheap_share_of_frontier_only'])}; "
        "local calls are $0. Tasks passed at: "
        + ", ".join(f"{k} {v}" for k, v in sorted(dr["tasks_passed_at"].items())),
        "",
        "anchors: " + "; ".join(f"{who}: {what}" for who, what in ANCHORS),
    ]
    met = results["target"]["met"]
    lines.append(
        f"target: >= {TARGET_REDUCTION:.0%} lower cost at an equal verified pass rate: "
        + ("met" if met else "MISSED")
        + f" ({pct(1 - ratio)} lower; pass rate {'equal or better' if results['target']['pass_rate_ok'] else 'LOWER'})"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Main


def resolve_gguf(explicit: Path | None) -> Path:
    from supervisor.models_pull import embedded_model_path, pull_embedded

    if explicit is not None:
        if not explicit.is_file():
            raise SystemExit(f"--gguf {explicit} does not exist")
        return explicit
    path = embedded_model_path("smollm2-135m", os.environ)
    if path.is_file():
        return path
    print("pulling the embedded model (smollm2-135m) ...", flush=True)
    return pull_embedded("smollm2-135m", dict(os.environ), progress=lambda line: print(f"  {line}", flush=True))


def ollama_reachable() -> str | None:
    import httpx

    host = os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"
    if "://" not in host:
        host = f"http://{host}"
    try:
        httpx.get(f"{host.rstrip('/')}/api/tags", timeout=1.0).raise_for_status()
    except httpx.HTTPError:
        return None
    return host


@contextlib.contextmanager
def work_dir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            raise SystemExit(f"--keep {keep}: give a new or empty directory")
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="bench-savings-") as tmp:
        yield Path(tmp)


def sweep(runs: list[tuple[CorrectnessModel, SuiteRun, SuiteRun]]) -> dict[str, Any]:
    rows = []
    for model, frontier, ladder in runs:
        ratio = ladder.cost_micros / frontier.cost_micros if frontier.cost_micros else 0.0
        rows.append(
            {
                "seed": model.seed,
                "cost_ratio": ratio,
                "frontier_pass_rate": frontier.pass_rate,
                "ladder_pass_rate": ladder.pass_rate,
                "frontier_calls_in_ladder": ladder.calls()["frontier"],
                "met": ladder.passes >= frontier.passes and 1 - ratio >= TARGET_REDUCTION,
            }
        )
    ratios = [r["cost_ratio"] for r in rows]
    return {
        "seeds": len(rows),
        "cost_ratio_mean": statistics.fmean(ratios),
        "cost_ratio_min": min(ratios),
        "cost_ratio_max": max(ratios),
        "ladder_pass_rate_mean": statistics.fmean(r["ladder_pass_rate"] for r in rows),
        "frontier_pass_rate_mean": statistics.fmean(r["frontier_pass_rate"] for r in rows),
        "ladder_pass_rate_below_frontier": sum(r["ladder_pass_rate"] < r["frontier_pass_rate"] for r in rows),
        "met": sum(r["met"] for r in rows),
        "runs": rows,
    }


def render_sweep(sw: dict[str, Any]) -> str:
    return (
        f"\nacross {sw['seeds']} seeds: cost ratio mean {sw['cost_ratio_mean']:.3f} "
        f"(min {sw['cost_ratio_min']:.3f}, max {sw['cost_ratio_max']:.3f}; {1 - sw['cost_ratio_mean']:.1%} lower on "
        f"average); pass rate ladder {sw['ladder_pass_rate_mean']:.1%} vs frontier-only "
        f"{sw['frontier_pass_rate_mean']:.1%} (ladder lower in {sw['ladder_pass_rate_below_frontier']} of "
        f"{sw['seeds']}); target met in {sw['met']} of {sw['seeds']}"
    )


def select_tasks(tasks: list[Task], count: int | None, names: list[str] | None) -> list[Task]:
    if names:
        known = {t.name: t for t in tasks}
        missing = [n for n in names if n not in known]
        if missing:
            raise SystemExit(f"unknown task(s): {', '.join(missing)}")
        tasks = [known[n] for n in names]
    return tasks[:count] if count else tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--local", choices=["scripted", "real", "ollama"], default="scripted")
    parser.add_argument("--tasks", type=int, default=None, metavar="N", help="only the first N tasks (by name)")
    parser.add_argument("--task", action="append", metavar="NAME", help="only this task (repeatable)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--draws", choices=["nested", "independent"], default="nested")
    for tier in TIERS:
        probs = ",".join(f"{d}={DEFAULT_P[tier][d]}" for d in DIFFICULTIES)
        parser.add_argument(f"--p-{tier}", type=parse_probs, default=None, metavar="E,M,H", help=f"default {probs}")
    parser.add_argument("--at", default=DEFAULT_AT, help="price calls at this instant (ISO 8601)")
    parser.add_argument("--gguf", type=Path, default=None, help="--local real: the SmolLM2 GGUF (default: pulled)")
    parser.add_argument("--ollama-model", default=DEFAULT_OLLAMA_MODEL, help="--local ollama: the model")
    parser.add_argument("--check-tasks", action="store_true", help="only check references pass and wrongs fail")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write the results")
    parser.add_argument("--quiet", action="store_true", help="no per-task progress lines")
    parser.add_argument("--seeds", type=int, default=1, metavar="N", help="repeat with seeds SEED..SEED+N-1")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep workspaces and ledgers here")
    args = parser.parse_args(argv)

    tasks = select_tasks(load_tasks(), args.tasks, args.task)
    catalog = load_catalog([paths.bundled_models_dir()])
    progress: Callable[[str], None] = (lambda _line: None) if args.quiet else (lambda line: print(line, flush=True))

    if args.check_tasks:
        with tempfile.TemporaryDirectory(prefix="bench-savings-") as tmp, gate_python_first():
            problems = asyncio.run(check_suite(tasks, catalog, Path(tmp)))
        print("\n".join(problems) if problems else f"all {len(tasks)} tasks: references pass, wrong answers fail")
        return 1 if problems else 0

    p = {tier: dict(getattr(args, f"p_{tier}") or DEFAULT_P[tier]) for tier in TIERS}
    at = datetime.fromisoformat(args.at).astimezone(UTC)
    local: LocalMode = args.local
    gguf: Path | None = None
    if local == "real":
        gguf = resolve_gguf(args.gguf)
        description = f"local tier = the real embedded SmolLM2-135M ({gguf.name}, mlx on CPU)"
    elif local == "ollama":
        host = ollama_reachable()
        if host is None:
            raise SystemExit("--local ollama: no Ollama server answers (set OLLAMA_HOST or start `ollama serve`)")
        description = f"local tier = ollama:{args.ollama_model} at {host}"
    else:
        probs = ", ".join(f"{d} {p['local'][d]:.2f}" for d in DIFFICULTIES)
        description = f"local tier = scripted stand-in (P pass: {probs})"

    runs: list[tuple[CorrectnessModel, SuiteRun, SuiteRun]] = []
    with work_dir(args.keep) as work, gate_python_first():
        for offset in range(args.seeds):
            seeded = CorrectnessModel(p, args.seed + offset, args.draws)  # type: ignore[arg-type]
            common: dict[str, Any] = {
                "local": local,
                "model": seeded,
                "catalog": catalog,
                "at": at,
                "gguf": gguf,
                "ollama_model": args.ollama_model,
                "progress": progress if offset == 0 else (lambda _line: None),
            }
            where = work / f"seed-{seeded.seed}"
            tag = f" (seed {seeded.seed}, {offset + 1} of {args.seeds})" if args.seeds > 1 else ""
            print(f"frontier-only run ({len(tasks)} tasks){tag} ...", flush=True)
            frontier = asyncio.run(run_suite(tasks, label="frontier-only", ladder=["frontier"], work=where, **common))
            print(f"ladder run ({len(tasks)} tasks; {description}){tag} ...", flush=True)
            ladder = asyncio.run(
                run_suite(tasks, label="ladder", ladder=["local", "cheap", "frontier"], work=where, **common)
            )
            runs.append((seeded, frontier, ladder))

    model, frontier, ladder = runs[0]
    ratio = ladder.cost_micros / frontier.cost_micros if frontier.cost_micros else 0.0
    pass_ok = ladder.passes >= frontier.passes
    results: dict[str, Any] = {
        "benchmark": "savings",
        "version": __version__,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "priced_at": at.isoformat(),
        "local": {"mode": local, "description": description, "gguf": str(gguf) if gguf else None},
        "models": {
            "cheap": CHEAP_MODEL,
            "frontier": FRONTIER_MODEL,
            "local": LOCAL_MODEL if local != "ollama" else f"ollama:{args.ollama_model}",
        },
        "attempts_per_tier": ATTEMPTS_PER_TIER,
        "correctness_model": {"seed": model.seed, "draws": model.draws, "p": model.p},
        "suite": {
            "tasks": len(tasks),
            "by_category": dict(Counter(t.category for t in tasks)),
            "by_difficulty": dict(Counter(t.difficulty for t in tasks)),
        },
        "frontier_only": frontier.summary(),
        "ladder": ladder.summary(),
        "cost_ratio": ratio,
        "cost_reduction": 1 - ratio,
        "by_difficulty": {"frontier_only": by_difficulty(frontier), "ladder": by_difficulty(ladder)},
        "drivers": drivers(frontier, ladder),
        "anchors": [{"source": who, "claim": what} for who, what in ANCHORS],
        "target": {
            "cost_reduction_min": TARGET_REDUCTION,
            "pass_rate_ok": pass_ok,
            "met": pass_ok and (1 - ratio) >= TARGET_REDUCTION,
        },
        "tasks": {
            "frontier_only": [asdict(r) for r in frontier.results],
            "ladder": [asdict(r) for r in ladder.results],
        },
    }
    if len(runs) > 1:
        results["sweep"] = sweep(runs)
    print(render(results, model))
    if "sweep" in results:
        print(render_sweep(results["sweep"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
