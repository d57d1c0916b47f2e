"""Savings benchmark: the same task suite run twice, every step at the frontier tier vs through the ladder.

Run as ``python bench/savings.py [--local scripted|real|ollama] [--tasks N] [--json PATH]``; with
``--suite tools``, the multi-file tool tasks instead (``bench/savings_tools.py``: the built-in worker vs single
calls).

The suite is ``bench/tasks/*.toml``: one task per file (a prompt, context files, ``writes`` or ``output``,
deterministic gates, a category, an a-priori difficulty, a reference answer and a plausible wrong answer, and
the fixture files). Each task becomes one agent with one model step, run once through the real runtime: real
prompts, real reservations and ledger, real gates in a real workspace, real escalation.

Two runs per seed, each in a fresh data dir and fresh workspaces:

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

With ``--local real`` or ``--local ollama`` the same run also measures a **plain-prompt baseline**: the same local
model, the same tasks, each task sent as one plain chat message (the task's prompt, then each context file under
its name), with only the answer extraction applied before the same gates judge it. The product's local pass
rate (tasks the ladder passed at the local tier) is reported next to it, per task, with the seconds of local
compute per attempt.

Cost comes from the ledger (integer micro-dollars); pass rate = verified successes / tasks. The pair of runs is
repeated for ``--seeds`` seeds (default 10) and the figures pooled, so one lucky draw cannot make the result;
every seed's figures are in the JSON. With ``--local real`` or ``--local ollama`` the local model runs for real
in the first seed, and later seeds replay its recorded answers: greedy decoding is deterministic and a task's
local prompt is the same in every seed (the local tier is tried first, with no failure to report).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
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
from typing import Any, Literal, Protocol, TypeVar

from supervisor import __version__, paths
from supervisor.atomic_file import atomic_write
from supervisor.backends.base import Backend, Health, Message, OnText, Request, Result, TokenCount
from supervisor.backends.scripted import ScriptedAnswer, ScriptedBackend, prompt_text
from supervisor.catalog import Catalog, load_catalog
from supervisor.config import Config, StepConfig, parse_config
from supervisor.cost import format_usd
from supervisor.errors import BackendUnavailable
from supervisor.ledger import Ledger
from supervisor.runtime.answer import answer_form, extract_answer
from supervisor.runtime.runtime import Runtime
from supervisor.runtime.verify import run_gate
from supervisor.runtime.workspace import resolve_inside
from supervisor.usage import Usage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import git_commit, machine, write_results  # noqa: E402

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
DEFAULT_SEEDS = 10

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

    def describe(self, seeds: int = 1) -> list[str]:
        which = f"seed {self.seed}" if seeds == 1 else f"seeds {self.seed}..{self.seed + seeds - 1}"
        lines = [f"correctness model ({which}, {self.draws} draws): P(answer passes) by difficulty"]
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
# The local model, recorded and replayed


@dataclass(frozen=True)
class LocalCall:
    """What the local model answered to a task's (only) local prompt."""

    text: str
    prompt_tokens: int
    output_tokens: int
    compute_s: float | None
    finish_reason: str | None


_T = TypeVar("_T", bound="HasPrompt")


class HasPrompt(Protocol):
    @property
    def prompt(self) -> str: ...


def task_of(request: Request, by_agent: Mapping[str, _T]) -> _T:
    """The task a request is for: the one whose prompt it carries (prompts are unique in the suite; the minimal
    prompt local models get names no agent, so the prompt is the only reliable mark)."""
    text = prompt_text(request)
    found = [task for task in by_agent.values() if task.prompt.strip() in text]
    if not found:
        raise RuntimeError("a benchmark backend got a prompt that carries no task of the suite")
    return max(found, key=lambda task: len(task.prompt))


class RecordingBackend:
    """Wraps the real local backend and keeps each task's answer (text and exact usage) for later seeds."""

    def __init__(self, inner: Backend, by_agent: Mapping[str, Task]) -> None:
        self.inner = inner
        self.provider = inner.provider
        self.kind = inner.kind
        self.local = inner.local
        self.supports_tools = inner.supports_tools
        self.by_agent = by_agent
        self.calls: dict[str, LocalCall] = {}

    async def complete(self, request: Request, on_text: OnText | None = None) -> Result:
        result = await self.inner.complete(request, on_text)
        self.calls[task_of(request, self.by_agent).name] = LocalCall(
            result.text,
            int(result.usage.input_uncached or 0),
            int(result.usage.output or 0),
            result.compute_s,
            result.finish_reason,
        )
        return result

    def count_tokens(self, request: Request) -> TokenCount:
        return self.inner.count_tokens(request)

    async def health(self) -> Health:
        return await self.inner.health()

    async def aclose(self) -> None:
        await self.inner.aclose()


class ReplayBackend:
    """The local model's recorded answers, returned for the same prompts with the same exact usage."""

    kind = "replay"
    local = True
    supports_tools = False

    def __init__(self, provider: str, calls: Mapping[str, LocalCall], by_agent: Mapping[str, Task]) -> None:
        self.provider = provider
        self.calls = calls
        self.by_agent = by_agent

    def _call(self, request: Request) -> LocalCall:
        task = task_of(request, self.by_agent)
        call = self.calls.get(task.name)
        if call is None:
            raise BackendUnavailable(f"no recorded local answer for {task.name}", provider=self.provider)
        return call

    async def complete(self, request: Request, on_text: OnText | None = None) -> Result:
        call = self._call(request)
        if on_text is not None and call.text:
            on_text(call.text)
        usage = Usage(call.prompt_tokens, 0, 0, 0, call.output_tokens)
        total = call.compute_s or 0.0
        return Result(call.text, call.finish_reason, usage, None, total, compute_s=call.compute_s)

    def count_tokens(self, request: Request) -> TokenCount:
        return TokenCount(self._call(request).prompt_tokens, exact=True)

    async def health(self) -> Health:
        return Health(self.provider, self.kind, True, "replaying recorded answers")

    async def aclose(self) -> None:
        return None


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
    cost_by_tier_micros: dict[str, int]
    calls: dict[str, int]
    input_tokens: int
    output_tokens: int
    local_compute_s: float
    seconds: float
    reason: str = ""
    local_answer: str | None = None  # --local real/ollama: what the local model said (first 400 chars)
    local_finish_reason: str | None = None  # --local real/ollama: "stop", "length", "looping", ...
    local_prompt_tokens: int | None = None
    local_output_tokens: int | None = None


@dataclass
class SuiteRun:
    label: str
    ladder: list[str]
    seed: int
    results: list[TaskResult] = field(default_factory=list)
    seconds: float = 0.0
    local_calls: dict[str, LocalCall] = field(default_factory=dict)


def fixed_clock(at: datetime) -> Callable[[], datetime]:
    """``at``, advancing with the monotonic clock: prices stay those in force at ``at`` for the whole run."""
    start = time.monotonic()
    return lambda: at + timedelta(seconds=time.monotonic() - start)


def responder(tier: Tier, model: CorrectnessModel, by_agent: Mapping[str, Task]) -> Callable[[Request], ScriptedAnswer]:
    def respond(request: Request) -> ScriptedAnswer:
        task = task_of(request, by_agent)
        return ScriptedAnswer(text=task.reference if model.passes(task, tier) else task.wrong)

    return respond


def local_provider(local: LocalMode, gguf: Path | None, ollama_model: str) -> tuple[str, dict[str, Any], str]:
    """(provider name, provider config, model key) of the local tier."""
    if local == "scripted":
        return "sim-local", {"kind": "scripted", "local": True, "simulated_as": LOCAL_MODEL}, "sim-local:smollm2-135m"
    if local == "real":
        assert gguf is not None
        return "mlx", {"kind": "mlx", "local": True, "models": {"smollm2-135m": str(gguf)}}, LOCAL_MODEL
    return "ollama", {"kind": "ollama", "local": True}, f"ollama:{ollama_model}"


def step_table(task: Task) -> dict[str, Any]:
    """The task's one model step, as config."""
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
    return step


def build_config(
    tasks: Sequence[Task],
    root: Path,
    ladder: list[Tier],
    local: tuple[str, dict[str, Any], str],
    environ: Mapping[str, str],
) -> Config:
    agents: dict[str, Any] = {}
    for task in tasks:
        step = step_table(task)
        agents[task.agent] = {
            "goal": GOAL,
            "workspace": str(root / "ws" / task.name),
            "ladder": ladder,
            "frontier": "allow",
            "attempts_per_tier": ATTEMPTS_PER_TIER,
            "steps": [step],
        }
    return suite_config(agents, local, environ, "bench/savings.py")


def suite_config(
    agents: dict[str, Any], local: tuple[str, dict[str, Any], str], environ: Mapping[str, str], source: str
) -> Config:
    """The suites' config: ``agents`` over the local tier and the two simulated paid tiers."""
    local_name, local_cfg, local_key = local
    data = {
        "providers": {
            "sim-cheap": {"kind": "scripted", "simulated_as": CHEAP_MODEL},
            "sim-frontier": {"kind": "scripted", "simulated_as": FRONTIER_MODEL},
            local_name: local_cfg,
        },
        "tiers": {
            "local": [local_key],
            "cheap": ["sim-cheap:deepseek-flash"],
            "frontier": ["sim-frontier:claude-sonnet-5-5"],
        },
        "agents": agents,
    }
    return parse_config(data, source, None, environ)


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
    replay: Mapping[str, LocalCall] | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> SuiteRun:
    """Every task once, in order, through one runtime with its own ledger."""
    root = work / label
    home = root / "home"
    home.mkdir(parents=True)
    write_workspaces(tasks, root)
    environ = {**os.environ, "SUPERVISOR_HOME": str(home)}
    local_spec = local_provider(local, gguf, ollama_model)
    config = build_config(tasks, root, ladder, local_spec, environ)
    by_agent = {t.agent: t for t in tasks}
    paid: tuple[tuple[str, Tier], ...] = (("sim-cheap", "cheap"), ("sim-frontier", "frontier"))
    backends: dict[str, Backend] = {
        name: ScriptedBackend(name, config.providers[name], environ, responder(tier, model, by_agent))
        for name, tier in paid
    }
    local_name = local_spec[0]
    recorder: RecordingBackend | None = None
    if local == "scripted":
        backends[local_name] = ScriptedBackend(
            local_name, config.providers[local_name], environ, responder("local", model, by_agent)
        )
    elif replay is not None:
        backends[local_name] = ReplayBackend(local_name, replay, by_agent)
    elif "local" in ladder:
        from supervisor.backends.registry import make_backend

        recorder = RecordingBackend(make_backend(local_name, config.providers[local_name], environ), by_agent)
        backends[local_name] = recorder
    ledger = Ledger(home / "ledger.db")
    runtime = Runtime(config, catalog, ledger, environ=environ, backends=backends, clock=fixed_clock(at), home=home)
    run = SuiteRun(label, list(ladder), model.seed)
    started = time.perf_counter()
    try:
        for index, task in enumerate(tasks, 1):
            t0 = time.perf_counter()
            result = await runtime.run_agent(task.agent, "bench", approval_timeout_s=0)
            calls = ledger.calls(run_id=result.run_id) if result.run_id else []
            per_tier = Counter(str(c["tier"]) for c in calls)
            cost_by_tier: Counter[str] = Counter()
            for c in calls:
                cost_by_tier[str(c["tier"])] += int(c["cost_micros"] or 0)
            local_call = (recorder.calls if recorder else (replay or {})).get(task.name)
            row = TaskResult(
                task=task.name,
                category=task.category,
                difficulty=task.difficulty,
                outcome=result.outcome,
                passed=result.outcome == "success",
                tier_reached=result.tier_reached,
                cost_micros=sum(cost_by_tier.values()),
                cost_by_tier_micros={tier: cost_by_tier.get(tier, 0) for tier in TIERS},
                calls={tier: per_tier.get(tier, 0) for tier in TIERS},
                input_tokens=sum(int(c["input_uncached"] or 0) + int(c["cache_read"] or 0) for c in calls),
                output_tokens=sum(int(c["output"] or 0) for c in calls),
                local_compute_s=sum(float(c["compute_s"] or 0.0) for c in calls if c["tier"] == "local"),
                seconds=time.perf_counter() - t0,
                reason="" if result.outcome == "success" else result.reason[:300],
                local_answer=local_call.text[:400] if local_call and "local" in ladder else None,
                local_finish_reason=local_call.finish_reason if local_call and "local" in ladder else None,
                local_prompt_tokens=local_call.prompt_tokens if local_call and "local" in ladder else None,
                local_output_tokens=local_call.output_tokens if local_call and "local" in ladder else None,
            )
            run.results.append(row)
            mark = "pass" if row.passed else "FAIL"
            progress(
                f"  [{label}] {index:>2}/{len(tasks)} {task.name:<24} {mark} at {row.tier_reached or '-':<8} "
                f"{format_usd(row.cost_micros, places=6):>10}  {row.seconds:6.1f}s"
            )
    finally:
        await runtime.aclose()
        ledger.close()
    run.seconds = time.perf_counter() - started
    if recorder is not None:
        run.local_calls = dict(recorder.calls)
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
# The plain-prompt baseline: the same local model, each task as one plain chat message


@dataclass
class PlainResult:
    task: str
    passed: bool
    compute_s: float | None
    prompt_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None
    answer: str
    reason: str = ""


def plain_message(task: Task) -> str:
    """The task as a person would paste it into a chat: its prompt, then each context file under its name."""
    parts = [task.prompt.strip()]
    parts += [f"{rel}:\n{task.files[rel].strip()}" for rel in task.context]
    return "\n\n".join(parts)


async def run_plain(
    tasks: Sequence[Task],
    *,
    local: LocalMode,
    gguf: Path | None,
    ollama_model: str,
    catalog: Catalog,
    work: Path,
    progress: Callable[[str], None] = lambda _line: None,
) -> list[PlainResult]:
    """Every task once through the bare local backend: one user message, the answer extraction, the same gates."""
    from supervisor.backends.registry import make_backend

    root = work / "plain"
    write_workspaces(tasks, root)
    environ = {**os.environ, "SUPERVISOR_HOME": str(root / "home")}
    name, provider, key = local_provider(local, gguf, ollama_model)
    config = parse_config({"providers": {name: provider}}, "bench/savings.py", None, environ)
    backend = make_backend(name, config.providers[name], environ)
    model_id = key.split(":", 1)[1]
    spec = catalog.spec_for(name, model_id, config.providers[name], tier="local").spec
    out: list[PlainResult] = []
    try:
        for index, task in enumerate(tasks, 1):
            workspace = root / "ws" / task.name
            step = StepConfig.model_validate(step_table(task))
            request = Request(
                model=model_id,
                messages=(Message("user", plain_message(task)),),
                max_output_tokens=task.max_output_tokens,
                temperature=0.0,
                timeout_s=900,
                context_window=spec.context_window if spec else None,
            )
            result = await backend.complete(request)
            answer = extract_answer(result.text, answer_form(step, workspace, echoes=task.prompt.splitlines()))
            if step.writes:
                atomic_write(resolve_inside(workspace, step.writes), answer.encode("utf-8"))
            passed, reason = True, ""
            for gate in step.verify:
                checked = await run_gate(gate, answer=answer, workspace=workspace, capture_bytes=64_000)
                if not checked.passed:
                    passed, reason = False, f"{checked.gate}: {checked.output[-200:]}"
                    break
            out.append(
                PlainResult(
                    task.name,
                    passed,
                    result.compute_s,
                    result.usage.input_uncached,
                    result.usage.output,
                    result.finish_reason,
                    result.text[:400],
                    reason,
                )
            )
            progress(
                f"  [plain] {index:>2}/{len(tasks)} {task.name:<24} {'pass' if passed else 'FAIL'}  "
                f"{result.compute_s or 0.0:6.1f}s"
            )
    finally:
        await backend.aclose()
    return out


def seconds_per_attempt(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median and max seconds of local compute per attempt (and how many attempts)."""
    if not values:
        return {"attempts": 0, "median_s": None, "max_s": None}
    return {"attempts": len(values), "median_s": statistics.median(values), "max_s": max(values)}


def local_tier_figures(ladder: SuiteRun, plain: Sequence[PlainResult]) -> dict[str, Any]:
    """The product's local pass per task (passed at the local tier in the ladder run) next to the plain baseline."""
    by_task = {p.task: p for p in plain}
    rows: list[dict[str, Any]] = []
    for r in ladder.results:
        base = by_task.get(r.task)
        rows.append(
            {
                "task": r.task,
                "difficulty": r.difficulty,
                "product_local_pass": r.passed and r.tier_reached == "local",
                "plain_pass": bool(base and base.passed),
                "product_local_s": r.local_compute_s if r.calls["local"] else None,
                "plain_s": base.compute_s if base else None,
                "product_finish": r.local_finish_reason,
                "plain_finish": base.finish_reason if base else None,
                "product_prompt_tokens": r.local_prompt_tokens,
                "plain_prompt_tokens": base.prompt_tokens if base else None,
            }
        )
    product = sum(row["product_local_pass"] for row in rows)
    baseline = sum(row["plain_pass"] for row in rows)
    product_s = [float(r.local_compute_s) for r in ladder.results if r.calls["local"]]
    plain_s = [float(p.compute_s) for p in plain if p.compute_s is not None]
    return {
        "tasks": rows,
        "product_local_passes": product,
        "plain_passes": baseline,
        "product_at_least_plain": product >= baseline,
        "product_seconds_per_local_attempt": seconds_per_attempt(product_s),
        "plain_seconds_per_attempt": seconds_per_attempt(plain_s),
        "looping_stopped": sum(1 for r in ladder.results if r.local_finish_reason == "looping"),
        "plain_results": [asdict(p) for p in plain],
    }


def render_local_tier(figures: dict[str, Any]) -> str:
    def mark(passed: bool) -> str:
        return "pass" if passed else "FAIL"

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    lines = [
        "",
        "local tier: the product's prompt and answer handling vs the same model given each task as a plain message",
        f"{'task':<24} {'product':>8} {'plain':>8} {'product s':>10} {'plain s':>8}  finish (product / plain)",
        "-" * 82,
    ]
    for row in figures["tasks"]:
        lines.append(
            f"{row['task']:<24} {mark(row['product_local_pass']):>8} {mark(row['plain_pass']):>8} "
            f"{secs(row['product_local_s']):>10} {secs(row['plain_s']):>8}  "
            f"{row['product_finish'] or '-'} / {row['plain_finish'] or '-'}"
        )
    total = len(figures["tasks"])
    ps, bs = figures["product_seconds_per_local_attempt"], figures["plain_seconds_per_attempt"]
    lines += [
        "-" * 82,
        f"local passes: product {figures['product_local_passes']} of {total}, plain {figures['plain_passes']} of "
        f"{total}: target product >= plain " + ("met" if figures["product_at_least_plain"] else "MISSED"),
        f"seconds of local compute per attempt: product median {secs(ps['median_s'])}, max {secs(ps['max_s'])}; "
        f"plain median {secs(bs['median_s'])}, max {secs(bs['max_s'])}; "
        f"{figures['looping_stopped']} product attempt(s) stopped as looping",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Figures, pooled over seeds


def pooled(runs: Sequence[SuiteRun]) -> dict[str, Any]:
    """One configuration's figures over every seed: totals, per-suite means and the pass rate."""
    rows = [r for run in runs for r in run.results]
    seeds = len(runs)
    calls: Counter[str] = Counter()
    cost_by_tier: Counter[str] = Counter()
    for r in rows:
        calls.update(r.calls)
        cost_by_tier.update(r.cost_by_tier_micros)
    by_difficulty = {}
    for d in DIFFICULTIES:
        sub = [r for r in rows if r.difficulty == d]
        by_difficulty[d] = {
            "tasks_per_seed": len(sub) // max(seeds, 1),
            "passes": sum(r.passed for r in sub),
            "pass_rate": sum(r.passed for r in sub) / len(sub) if sub else None,
            "cost_micros": sum(r.cost_micros for r in sub),
        }
    return {
        "label": runs[0].label,
        "ladder": runs[0].ladder,
        "seeds": seeds,
        "task_runs": len(rows),
        "passes": sum(r.passed for r in rows),
        "pass_rate": sum(r.passed for r in rows) / len(rows) if rows else 0.0,
        "cost_micros": sum(r.cost_micros for r in rows),
        "cost_micros_per_suite": sum(r.cost_micros for r in rows) / seeds,
        "cost_by_tier_micros": {tier: cost_by_tier.get(tier, 0) for tier in TIERS},
        "calls_per_tier": {tier: calls.get(tier, 0) for tier in TIERS},
        "calls_per_tier_per_suite": {tier: calls.get(tier, 0) / seeds for tier in TIERS},
        "tasks_passed_at": dict(Counter(r.tier_reached or "-" for r in rows if r.passed)),
        "tasks_reaching_frontier": sum(1 for r in rows if r.calls.get("frontier")),
        "local_compute_s": sum(r.local_compute_s for r in rows),
        "seconds": sum(run.seconds for run in runs),
        "by_difficulty": by_difficulty,
    }


def per_seed(frontier: SuiteRun, ladder: SuiteRun) -> dict[str, Any]:
    f_cost = sum(r.cost_micros for r in frontier.results)
    l_cost = sum(r.cost_micros for r in ladder.results)
    f_pass = sum(r.passed for r in frontier.results)
    l_pass = sum(r.passed for r in ladder.results)
    ratio = l_cost / f_cost if f_cost else 0.0
    return {
        "seed": frontier.seed,
        "frontier_only_cost_micros": f_cost,
        "ladder_cost_micros": l_cost,
        "cost_ratio": ratio,
        "frontier_only_passes": f_pass,
        "ladder_passes": l_pass,
        "ladder_frontier_calls": sum(r.calls["frontier"] for r in ladder.results),
        "met": l_pass >= f_pass and 1 - ratio >= TARGET_REDUCTION,
    }


def drivers(frontier_runs: Sequence[SuiteRun], ladder_runs: Sequence[SuiteRun]) -> dict[str, Any]:
    """What the ratio is made of, from task pairs (same seed, same task) of the two configurations."""
    f_total = sum(r.cost_micros for run in frontier_runs for r in run.results) or 1
    cheap = sum(r.cost_by_tier_micros["cheap"] for run in ladder_runs for r in run.results)
    top = sum(r.cost_by_tier_micros["frontier"] for run in ladder_runs for r in run.results)
    pairs = [
        (f, lad)
        for f_run, l_run in zip(frontier_runs, ladder_runs, strict=True)
        for f, lad in zip(f_run.results, l_run.results, strict=True)
    ]
    escalated = [(f, lad) for f, lad in pairs if lad.calls["frontier"]]
    same_task_f = sum(f.cost_micros for f, _ in escalated)
    same_task_l = sum(lad.cost_by_tier_micros["frontier"] for _, lad in escalated)
    seeds = len(ladder_runs)
    tasks = len(ladder_runs[0].results) if ladder_runs else 0
    mean_task = f_total / max(len(pairs), 1)
    mean_call = same_task_l / len(escalated) if escalated else 0.0
    # How many tasks could reach the frontier, at these prompt sizes, for the ladder to cost 90% less.
    room = max(0.0, (1 - TARGET_REDUCTION) - cheap / f_total) * f_total / seeds
    allowed = room / mean_call if mean_call else None
    return {
        "cheap_share_of_frontier_only": cheap / f_total,
        "frontier_share_of_frontier_only": top / f_total,
        "tasks_reaching_frontier_per_suite": len(escalated) / max(seeds, 1),
        "same_task_frontier_call_premium": same_task_l / same_task_f if same_task_f else None,
        "escalated_task_cost_vs_mean": (same_task_f / len(escalated)) / mean_task if escalated else None,
        "max_frontier_tasks_per_suite_for_target": allowed,
        "tasks_per_suite": tasks,
    }


def pct(x: float) -> str:
    return f"{x:.1%}"


def render(results: dict[str, Any], model: CorrectnessModel) -> str:
    f, lad = results["frontier_only"], results["ladder"]
    seeds, tasks = results["seeds"], results["suite"]["tasks"]
    ratio = results["cost_ratio"]

    def calls(d: dict[str, float]) -> str:
        fmt = "{:.0f}" if seeds == 1 else "{:.1f}"
        return " / ".join(fmt.format(d[t]) for t in TIERS)

    lines = [
        "",
        f"savings: {tasks} tasks x {seeds} seed(s); {results['local']['description']}",
        f"paid tiers simulated at catalog prices: cheap = {CHEAP_MODEL}, frontier = {FRONTIER_MODEL} "
        f"(prices in force at {results['priced_at']}, cold cache); attempts_per_tier = {ATTEMPTS_PER_TIER}",
        *model.describe(seeds),
        "",
        f"{'per suite run (' + str(tasks) + ' tasks)' + (', mean over seeds' if seeds > 1 else ''):<44} "
        f"{'frontier-only':>18} {'ladder':>18}",
        "-" * 82,
        f"{'verified pass rate':<44} {pct(f['pass_rate']):>18} {pct(lad['pass_rate']):>18}",
        f"{'cost (ledger, simulated at catalog prices)':<44} "
        f"{format_usd(round(f['cost_micros_per_suite']), places=6):>18} "
        f"{format_usd(round(lad['cost_micros_per_suite']), places=6):>18}",
        f"{'calls local / cheap / frontier':<44} {calls(f['calls_per_tier_per_suite']):>18} "
        f"{calls(lad['calls_per_tier_per_suite']):>18}",
        "",
        f"cost ratio ladder / frontier-only: {ratio:.3f} ({pct(1 - ratio)} lower); verified pass rate "
        f"{pct(lad['pass_rate'])} (ladder) vs {pct(f['pass_rate'])} (frontier-only)",
    ]
    if seeds > 1:
        sw = results["per_seed"]
        ratios = [s["cost_ratio"] for s in sw]
        lower = sum(s["ladder_passes"] < s["frontier_only_passes"] for s in sw)
        lines.append(
            f"  per seed: cost ratio {min(ratios):.3f} to {max(ratios):.3f}; ladder pass rate below frontier-only "
            f"in {lower} of {seeds} seeds; target met in {sum(s['met'] for s in sw)} of {seeds}"
        )
    for d in DIFFICULTIES:
        fd, ld = f["by_difficulty"][d], lad["by_difficulty"][d]
        if not fd["tasks_per_seed"]:
            continue
        r = ld["cost_micros"] / fd["cost_micros"] if fd["cost_micros"] else 0.0
        lines.append(
            f"  {d:<7} {fd['tasks_per_seed']:>2} tasks: pass rate {pct(fd['pass_rate']):>6} vs "
            f"{pct(ld['pass_rate']):>6}; cost ratio {r:.3f}"
        )
    dr = results["drivers"]
    passed_at = lad["tasks_passed_at"]
    why = [
        "",
        f"what drives it: {dr['tasks_reaching_frontier_per_suite']:.1f} of {tasks} tasks per suite run fail the cheap "
        f"tier and reach the frontier; those frontier calls alone cost {pct(dr['frontier_share_of_frontier_only'])} "
        f"of frontier-only, the cheap calls {pct(dr['cheap_share_of_frontier_only'])}, local calls $0.",
    ]
    if dr["same_task_frontier_call_premium"] is not None:
        why.append(
            f"  on the same tasks a ladder frontier call costs {dr['same_task_frontier_call_premium']:.2f}x the "
            "frontier-only call (its prompt carries the failed gate's output), and the tasks that escalate cost "
            f"{dr['escalated_task_cost_vs_mean']:.2f}x the average task at the frontier."
        )
    if dr["cheap_share_of_frontier_only"] >= 1 - TARGET_REDUCTION:
        why.append(
            f"  the cheap calls alone cost more than {1 - TARGET_REDUCTION:.0%} of frontier-only: {TARGET_REDUCTION:.0%} "
            "lower is out of reach even with no task reaching the frontier, unless the local tier passes more."
        )
    elif dr["max_frontier_tasks_per_suite_for_target"] is not None:
        why.append(
            f"  at these prompt sizes, {TARGET_REDUCTION:.0%} lower needs at most "
            f"{dr['max_frontier_tasks_per_suite_for_target']:.1f} of {tasks} tasks reaching the frontier."
        )
    why.append("  ladder passes by tier: " + ", ".join(f"{t} {passed_at.get(t, 0)}" for t in TIERS))
    lines += [
        *why,
        "",
        "anchors: " + "; ".join(f"{who}: {what}" for who, what in ANCHORS),
    ]
    target = results["target"]
    lines.append(
        f"target: >= {TARGET_REDUCTION:.0%} lower cost at an equal verified pass rate: "
        + ("met" if target["met"] else "MISSED")
        + f" ({pct(1 - ratio)} lower; ladder pass rate {'equal or better' if target['pass_rate_ok'] else 'LOWER'})"
    )
    if results["local"]["mode"] != "scripted":
        lad_runs = results["ladder_local_seconds"]
        lines.append(
            f"local model: {lad_runs['compute_s']:.0f} s of local compute in the first seed's ladder run "
            f"({lad_runs['wall_s'] / 60:.1f} min wall); later seeds replayed its answers"
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


def select_tasks(tasks: list[Task], count: int | None, names: list[str] | None) -> list[Task]:
    if names:
        known = {t.name: t for t in tasks}
        missing = [n for n in names if n not in known]
        if missing:
            raise SystemExit(f"unknown task(s): {', '.join(missing)}")
        tasks = [known[n] for n in names]
    return tasks[:count] if count else tasks


def main(argv: list[str] | None = None) -> int:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--suite", choices=["tasks", "tools"], default="tasks")
    if pre.parse_known_args(argv)[0].suite == "tools":
        from bench.savings_tools import main_tools  # the multi-file tool tasks: bench/savings_tools.py

        return main_tools(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--suite",
        choices=["tasks", "tools"],
        default="tasks",
        help="tasks: the single-file suite (bench/tasks); tools: the multi-file tool tasks (bench/savings_tools.py)",
    )
    parser.add_argument("--local", choices=["scripted", "real", "ollama"], default="scripted")
    parser.add_argument("--tasks", type=int, default=None, metavar="N", help="only the first N tasks (by name)")
    parser.add_argument("--task", action="append", metavar="NAME", help="only this task (repeatable)")
    parser.add_argument("--seed", type=int, default=2026, help="the first seed of the correctness model")
    parser.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, metavar="N", help="seeds SEED..SEED+N-1, pooled")
    parser.add_argument("--draws", choices=["nested", "independent"], default="nested")
    for tier in TIERS:
        probs = ",".join(f"{d}={DEFAULT_P[tier][d]}" for d in DIFFICULTIES)
        parser.add_argument(f"--p-{tier}", type=parse_probs, default=None, metavar="E,M,H", help=f"default {probs}")
    parser.add_argument("--at", default=DEFAULT_AT, help="price calls at this instant (ISO 8601)")
    parser.add_argument("--gguf", type=Path, default=None, help="--local real: the SmolLM2 GGUF (default: pulled)")
    parser.add_argument("--ollama-model", default=DEFAULT_OLLAMA_MODEL, help="--local ollama: the model")
    parser.add_argument("--check-tasks", action="store_true", help="only check references pass and wrongs fail")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR", help="keep workspaces and ledgers here")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write the results")
    parser.add_argument("--quiet", action="store_true", help="no per-task progress lines")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")

    tasks = select_tasks(load_tasks(), args.tasks, args.task)
    catalog = load_catalog([paths.bundled_models_dir()])
    progress: Callable[[str], None] = (lambda _line: None) if args.quiet else (lambda line: print(line, flush=True))

    if args.check_tasks:
        with work_dir(args.keep) as work, gate_python_first():
            problems = asyncio.run(check_suite(tasks, catalog, work))
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
        description = f"local tier = a scripted stand-in (P pass: {probs})"

    frontier_runs: list[SuiteRun] = []
    ladder_runs: list[SuiteRun] = []
    replay: dict[str, LocalCall] | None = None
    plain: list[PlainResult] = []
    models: list[CorrectnessModel] = []
    with work_dir(args.keep) as work, gate_python_first():
        for offset in range(args.seeds):
            model = CorrectnessModel(p, args.seed + offset, args.draws)
            models.append(model)
            first = offset == 0
            common: dict[str, Any] = {
                "local": local,
                "model": model,
                "catalog": catalog,
                "at": at,
                "gguf": gguf,
                "ollama_model": args.ollama_model,
                "work": work / f"seed-{model.seed}",
                "progress": progress if first else (lambda _line: None),
            }
            tag = f" seed {model.seed} ({offset + 1} of {args.seeds})"
            print(f"frontier-only run,{tag} ...", flush=True)
            frontier_runs.append(asyncio.run(run_suite(tasks, label="frontier-only", ladder=["frontier"], **common)))
            print(f"ladder run,{tag}{'' if replay is None else ' (local answers replayed)'} ...", flush=True)
            ladder = asyncio.run(
                run_suite(tasks, label="ladder", ladder=["local", "cheap", "frontier"], replay=replay, **common)
            )
            ladder_runs.append(ladder)
            if local != "scripted" and replay is None:
                replay = ladder.local_calls
                print("plain-prompt baseline (the same local model, each task as one plain message) ...", flush=True)
                plain = asyncio.run(
                    run_plain(
                        tasks,
                        local=local,
                        gguf=gguf,
                        ollama_model=args.ollama_model,
                        catalog=catalog,
                        work=work / f"seed-{model.seed}",
                        progress=progress,
                    )
                )

    f_all, l_all = pooled(frontier_runs), pooled(ladder_runs)
    ratio = l_all["cost_micros"] / f_all["cost_micros"] if f_all["cost_micros"] else 0.0
    pass_ok = l_all["passes"] >= f_all["passes"]
    results: dict[str, Any] = {
        "benchmark": "savings",
        "version": __version__,
        "commit": git_commit(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "cpus": os.cpu_count()},
        "priced_at": at.isoformat(),
        "local": {"mode": local, "description": description, "gguf": str(gguf) if gguf else None},
        "models": {
            "cheap": CHEAP_MODEL,
            "frontier": FRONTIER_MODEL,
            "local": f"ollama:{args.ollama_model}" if local == "ollama" else LOCAL_MODEL,
        },
        "attempts_per_tier": ATTEMPTS_PER_TIER,
        "correctness_model": {"first_seed": args.seed, "draws": args.draws, "p": p},
        "seeds": args.seeds,
        "suite": {
            "tasks": len(tasks),
            "by_category": dict(Counter(t.category for t in tasks)),
            "by_difficulty": dict(Counter(t.difficulty for t in tasks)),
        },
        "frontier_only": f_all,
        "ladder": l_all,
        "cost_ratio": ratio,
        "cost_reduction": 1 - ratio,
        "per_seed": [per_seed(f, lad) for f, lad in zip(frontier_runs, ladder_runs, strict=True)],
        "drivers": drivers(frontier_runs, ladder_runs),
        "ladder_local_seconds": {
            "compute_s": sum(r.local_compute_s for r in ladder_runs[0].results),
            "wall_s": ladder_runs[0].seconds,
        },
        "local_tier": local_tier_figures(ladder_runs[0], plain) if local != "scripted" else None,
        "anchors": [{"source": who, "claim": what} for who, what in ANCHORS],
        "target": {
            "cost_reduction_min": TARGET_REDUCTION,
            "pass_rate_ok": pass_ok,
            "met": pass_ok and (1 - ratio) >= TARGET_REDUCTION,
        },
        "tasks": {
            "first_seed_frontier_only": [asdict(r) for r in frontier_runs[0].results],
            "first_seed_ladder": [asdict(r) for r in ladder_runs[0].results],
        },
    }
    print(render(results, models[0]))
    if results["local_tier"] is not None:
        print(render_local_tier(results["local_tier"]))
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
