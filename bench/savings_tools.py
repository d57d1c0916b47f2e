"""Savings on multi-file tool tasks: the built-in worker (tools) vs single calls, the ladder vs frontier-only.

Run as ``python bench/savings.py --suite tools [--seeds N] [--json PATH]`` (this module holds the suite; the
shared correctness model and pricing set-up come from ``bench/savings.py``).

The suite is ``bench/tool_tasks/*.toml``: multi-file tasks (two or three files to change) with a deterministic
gate (a test script), the fixed content of each file a correct fix changes (``changes``), what a plausible wrong
fix leaves (``wrong``), and a check per changed file (``checks``). Each task runs through the real runtime (real
prompts, reservations, ledger, workspaces, gates, restores and escalation) in two shapes:

- **tools**: one step with the built-in worker's tools and the task's named command. A tier that answers
  correctly makes the reference calls: read each context file, one ``edit_file`` per changed region (computed
  from the fixture and the fixed content), run the test, ``finish``; one that does not makes the same calls
  with the wrong content. The scripted tiers speak the JSON-in-text protocol.
- **single calls**: the only way to express a multi-file change without tools: one step per changed file, each
  with every context file and the file's complete new content as the answer (``writes``), gated by that file's
  check (the last step also by the test).

Each shape runs frontier-only (``ladder = ["frontier"]``) and through the ladder (local, cheap, frontier). The
paid tiers are scripted backends priced at catalog prices, exactly as in the single-file suite; whether a tier
gets a task right is drawn from the same documented, seeded correctness model (one latent draw per task, shared
by every tier and by both shapes: the benchmark measures what the shapes and the ladder cost at the same
correctness, not which shape a model does better with). Input tokens are the real prompt sizes and output
tokens the size of the calls or file contents returned. The local tier is a scripted stand-in with its own
documented pass model (``--local scripted``) or the real embedded SmolLM2 (``--local real``: slow on a CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import math
import os
import re
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import git_commit, machine, write_results
from bench.savings import (
    CATEGORIES,
    CHEAP_MODEL,
    DEFAULT_AT,
    DEFAULT_P,
    DIFFICULTIES,
    FRONTIER_MODEL,
    GOAL,
    TIERS,
    CorrectnessModel,
    Difficulty,
    LocalMode,
    Tier,
    fixed_clock,
    gate_python_first,
    local_provider,
    parse_probs,
    pct,
    resolve_gguf,
    suite_config,
    task_of,
    work_dir,
)
from supervisor import __version__, paths
from supervisor.backends.base import Backend, Request
from supervisor.backends.scripted import ScriptedAnswer, ScriptedBackend, prompt_text
from supervisor.catalog import Catalog, load_catalog
from supervisor.config import Config
from supervisor.cost import format_usd
from supervisor.ledger import Ledger
from supervisor.runtime.runtime import Runtime

BENCH_DIR = Path(__file__).resolve().parent
TOOL_TASKS_DIR = BENCH_DIR / "tool_tasks"
DEFAULT_JSON = BENCH_DIR / "results" / "savings_tools.json"
SHAPES = ("tools", "single")
MAX_TURNS = 12
WORKER_TOOLS = ["read_file", "list_files", "write_file", "edit_file", "run_command", "finish"]
TASK_KEYS = {"category", "difficulty", "prompt", "context", "verify", "commands", "changes", "wrong", "checks", "files"}
WRITE_STEP = "This step: write the complete new {path} (the other files are handled by their own steps)."
_WRITE_STEP_LINE = re.compile(r"This step: write the complete new (.+?) \(the other files")
_TURN_LINE = re.compile(r"^- turn (\d+):", re.MULTILINE)
_FOLD_LINE = re.compile(r"^- turns (\d+)-(\d+):", re.MULTILINE)


@dataclass(frozen=True)
class ToolTask:
    name: str
    category: str
    difficulty: Difficulty
    prompt: str
    context: list[str]
    verify: list[str]
    commands: dict[str, str]
    changes: dict[str, str]
    wrong: dict[str, str]
    checks: dict[str, str]
    files: dict[str, str]

    @property
    def agent(self) -> str:
        return f"t-{self.name}"

    def calls(self, correct: bool) -> list[dict[str, Any]]:
        """The tool calls a tier makes: the reference fix, or the same moves with the wrong content."""
        target = self.changes if correct else self.wrong
        calls: list[dict[str, Any]] = [{"tool": "read_file", "arguments": {"path": p}} for p in self.context]
        for path, new in target.items():
            calls.extend(edit_calls(path, self.files[path], new))
        calls.append({"tool": "run_command", "arguments": {"name": next(iter(self.commands))}})
        summary = "fixed " + ", ".join(target) if correct else "changed " + ", ".join(target)
        calls.append({"tool": "finish", "arguments": {"summary": summary}})
        return calls

    def content(self, path: str, correct: bool) -> str:
        """What a single call answers for ``path``: the fixed file, or what the wrong fix leaves there."""
        if correct:
            return self.changes[path]
        return self.wrong.get(path, self.files[path])


def edit_calls(path: str, old_text: str, new_text: str) -> list[dict[str, Any]]:
    """``edit_file`` calls turning ``old_text`` into ``new_text``: one per changed region, each ``old`` widened
    with whole neighbouring lines until it appears once (as a careful model would), else one ``write_file``."""
    old_lines = old_text.splitlines(keepends=True)
    new_lines = new_text.splitlines(keepends=True)
    calls = []
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in reversed(matcher.get_opcodes()):  # bottom up: earlier spans stay where they were
        if tag == "equal":
            continue
        lo, hi = i1, i2
        while True:
            old = "".join(old_lines[lo:hi])
            if old and old_text.count(old) == 1:
                break
            if lo == 0 and hi == len(old_lines):
                return [{"tool": "write_file", "arguments": {"path": path, "content": new_text}}]
            lo, hi = max(0, lo - 1), min(len(old_lines), hi + 1)
        new = "".join(old_lines[lo:i1]) + "".join(new_lines[j1:j2]) + "".join(old_lines[i2:hi])
        calls.append({"tool": "edit_file", "arguments": {"path": path, "old": old, "new": new}})
    return list(reversed(calls))


def load_tool_task(path: Path) -> ToolTask:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    unknown = set(data) - TASK_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    if data.get("difficulty") not in DIFFICULTIES or data.get("category") not in CATEGORIES:
        raise ValueError(f"{path}: difficulty must be one of {DIFFICULTIES}, category one of {CATEGORIES}")
    files = {str(k): str(v).lstrip("\n") for k, v in data["files"].items()}
    changes = {str(k): str(v).lstrip("\n") for k, v in data["changes"].items()}
    wrong = {str(k): str(v).lstrip("\n") for k, v in data.get("wrong", {}).items()}
    if len(changes) < 2 or set(changes) - set(files) or set(wrong) - set(files) or set(data["checks"]) != set(changes):
        raise ValueError(f"{path}: a task changes at least two existing files, with a check for each")
    return ToolTask(
        name=path.stem,
        category=data["category"],
        difficulty=data["difficulty"],
        prompt=str(data["prompt"]),
        context=list(data["context"]),
        verify=list(data["verify"]),
        commands=dict(data["commands"]),
        changes=changes,
        wrong=wrong,
        checks=dict(data["checks"]),
        files=files,
    )


def load_tool_tasks(directory: Path = TOOL_TASKS_DIR) -> list[ToolTask]:
    return [load_tool_task(p) for p in sorted(directory.glob("*.toml"))]


# ------------------------------------------------------------------------------------------------------------
# Config, responders, one run


def build_config(
    tasks: Sequence[ToolTask],
    root: Path,
    shape: str,
    ladder: list[Tier],
    local: tuple[str, dict[str, Any], str],
    environ: Mapping[str, str],
) -> Config:
    agents: dict[str, Any] = {}
    for task in tasks:
        if shape == "tools":
            steps: list[dict[str, Any]] = [
                {
                    "name": "fix",
                    "prompt": task.prompt,
                    "tools": WORKER_TOOLS,
                    "commands": task.commands,
                    "max_turns": MAX_TURNS,
                    "max_output_tokens": 1024,
                    "timeout_s": 900,
                    "verify": task.verify,
                }
            ]
        else:
            paths_in_order = list(task.changes)
            steps = []
            for index, path in enumerate(paths_in_order):
                last = index == len(paths_in_order) - 1
                budget = math.ceil(len(task.changes[path].encode()) / 3 * 1.5) + 32
                steps.append(
                    {
                        "name": f"write-{index + 1}",
                        "prompt": f"{task.prompt} {WRITE_STEP.format(path=path)}",
                        "context": task.context,
                        "writes": path,
                        "max_output_tokens": budget,
                        "timeout_s": 900,
                        "verify": [task.checks[path], *(task.verify if last else [])],
                    }
                )
        agents[task.agent] = {
            "goal": GOAL,
            "workspace": str(root / "ws" / task.name),
            "ladder": ladder,
            "frontier": "allow",
            "attempts_per_tier": 1,
            "steps": steps,
        }
    return suite_config(agents, local, environ, "bench/savings_tools.py")


def turns_so_far(request: Request) -> int:
    """How many turns came before this request: full turns (assistant messages) and summarized ones."""
    task = request.messages[1].content
    summarized = len(_TURN_LINE.findall(task))
    summarized += sum(int(b) - int(a) + 1 for a, b in _FOLD_LINE.findall(task))
    return summarized + sum(1 for m in request.messages if m.role == "assistant")


def responder(
    tier: Tier, model: CorrectnessModel, by_agent: Mapping[str, ToolTask]
) -> Callable[[Request], ScriptedAnswer]:
    def respond(request: Request) -> ScriptedAnswer:
        task = task_of(request, by_agent)
        text = prompt_text(request)
        correct = model.passes(task, tier)  # type: ignore[arg-type]  # duck-typed: name and difficulty
        write = _WRITE_STEP_LINE.search(text)
        if write is not None:
            return ScriptedAnswer(text=task.content(write.group(1), correct))
        calls = task.calls(correct)
        return ScriptedAnswer(text=json.dumps(calls[min(turns_so_far(request), len(calls) - 1)]))

    return respond


@dataclass
class Row:
    task: str
    difficulty: str
    passed: bool
    tier_reached: str | None
    cost_micros: int
    cost_by_tier_micros: dict[str, int]
    calls_by_tier: dict[str, int]
    input_tokens: int
    output_tokens: int
    reason: str = ""


@dataclass
class ShapeRun:
    shape: str
    label: str
    seed: int
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0


async def run_shape(
    tasks: Sequence[ToolTask],
    *,
    shape: str,
    label: str,
    ladder: list[Tier],
    local: LocalMode,
    model: CorrectnessModel,
    catalog: Catalog,
    work: Path,
    at: datetime,
    gguf: Path | None = None,
    progress: Callable[[str], None] = lambda _line: None,
) -> ShapeRun:
    root = work / f"{shape}-{label}"
    home = root / "home"
    home.mkdir(parents=True)
    for task in tasks:
        for rel, text in task.files.items():
            target = root / "ws" / task.name / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
    environ = {**os.environ, "SUPERVISOR_HOME": str(home)}
    local_spec = local_provider(local, gguf, "unused")
    config = build_config(tasks, root, shape, ladder, local_spec, environ)
    by_agent = {t.agent: t for t in tasks}
    backends: dict[str, Backend] = {
        name: ScriptedBackend(name, config.providers[name], environ, responder(tier, model, by_agent))
        for name, tier in (("sim-cheap", "cheap"), ("sim-frontier", "frontier"))
    }
    if local == "scripted":
        backends[local_spec[0]] = ScriptedBackend(
            local_spec[0], config.providers[local_spec[0]], environ, responder("local", model, by_agent)
        )
    ledger = Ledger(home / "ledger.db")
    runtime = Runtime(config, catalog, ledger, environ=environ, backends=backends, clock=fixed_clock(at), home=home)
    run = ShapeRun(shape, label, model.seed)
    started = time.perf_counter()
    try:
        for task in tasks:
            result = await runtime.run_agent(task.agent, "bench", approval_timeout_s=0)
            calls = ledger.calls(run_id=result.run_id) if result.run_id else []
            cost: Counter[str] = Counter()
            for c in calls:
                cost[str(c["tier"])] += int(c["cost_micros"] or 0)
            per_tier = Counter(str(c["tier"]) for c in calls)
            row = Row(
                task=task.name,
                difficulty=task.difficulty,
                passed=result.outcome == "success",
                tier_reached=result.tier_reached,
                cost_micros=sum(cost.values()),
                cost_by_tier_micros={t: cost.get(t, 0) for t in TIERS},
                calls_by_tier={t: per_tier.get(t, 0) for t in TIERS},
                input_tokens=sum(int(c["input_uncached"] or 0) + int(c["cache_read"] or 0) for c in calls),
                output_tokens=sum(int(c["output"] or 0) for c in calls),
                reason="" if result.outcome == "success" else result.reason[:300],
            )
            run.rows.append(row)
            progress(
                f"  [{shape} {label}] {task.name:<20} {'pass' if row.passed else 'FAIL'} at "
                f"{row.tier_reached or '-':<8} {format_usd(row.cost_micros, places=6):>10}"
            )
    finally:
        await runtime.aclose()
        ledger.close()
    run.seconds = time.perf_counter() - started
    return run


def pooled(runs: Sequence[ShapeRun]) -> dict[str, Any]:
    rows = [r for run in runs for r in run.rows]
    seeds = max(len(runs), 1)
    cost_by_tier = {t: sum(r.cost_by_tier_micros[t] for r in rows) for t in TIERS}
    calls_by_tier = {t: sum(r.calls_by_tier[t] for r in rows) for t in TIERS}
    passed_at = Counter(r.tier_reached for r in rows if r.passed)
    return {
        "task_runs": len(rows),
        "passes": sum(r.passed for r in rows),
        "pass_rate": sum(r.passed for r in rows) / len(rows) if rows else 0.0,
        "cost_micros": sum(r.cost_micros for r in rows),
        "cost_micros_per_suite": sum(r.cost_micros for r in rows) / seeds,
        "cost_by_tier_micros_per_suite": {t: v / seeds for t, v in cost_by_tier.items()},
        "calls_by_tier_per_suite": {t: v / seeds for t, v in calls_by_tier.items()},
        "passes_by_tier_per_suite": {t: passed_at.get(t, 0) / seeds for t in TIERS},
        "input_tokens_per_suite": sum(r.input_tokens for r in rows) / seeds,
        "output_tokens_per_suite": sum(r.output_tokens for r in rows) / seeds,
    }


async def check_suite(tasks: Sequence[ToolTask], catalog: Catalog, work: Path) -> list[str]:
    """Every task in both shapes at the frontier: the reference passes, the wrong fix fails."""
    at = datetime.fromisoformat(DEFAULT_AT)
    problems: list[str] = []
    for shape in SHAPES:
        for label, p in (("reference", 1.0), ("wrong", 0.0)):
            probs: dict[Tier, dict[Difficulty, float]] = {t: dict.fromkeys(DIFFICULTIES, p) for t in TIERS}
            run = await run_shape(
                tasks,
                shape=shape,
                label=f"check-{label}",
                ladder=["frontier"],
                local="scripted",
                model=CorrectnessModel(probs, 0),
                catalog=catalog,
                work=work,
                at=at,
            )
            for row in run.rows:
                if row.passed != (p == 1.0):
                    problems.append(
                        f"{row.task} ({shape}): the {label} fix {'failed' if p else 'passed'}: {row.reason}"
                    )
    return problems


# ------------------------------------------------------------------------------------------------------------
# Main


def render(results: dict[str, Any], model: CorrectnessModel) -> str:
    seeds, tasks = results["seeds"], results["suite"]["tasks"]
    runs = results["runs"]
    lines = [
        "",
        f"tool tasks: {tasks} multi-file tasks x {seeds} seed(s); {results['local']['description']}",
        f"paid tiers simulated at catalog prices: cheap = {CHEAP_MODEL}, frontier = {FRONTIER_MODEL} (cold cache)",
        *model.describe(seeds),
        "  (one draw per task, shared by both shapes: pass rates match by construction; costs are measured)",
        "",
        f"{'per suite run' + (' (mean over seeds)' if seeds > 1 else ''):<30} {'pass rate':>9} {'cost':>11} "
        f"{'local':>9} {'cheap':>9} {'frontier':>9}  {'calls l/c/f':>16}",
        "-" * 110,
    ]
    for key, label in (
        ("tools_frontier", "tools, frontier-only"),
        ("tools_ladder", "tools, ladder"),
        ("single_frontier", "single calls, frontier-only"),
        ("single_ladder", "single calls, ladder"),
    ):
        r = runs[key]
        by_tier = r["cost_by_tier_micros_per_suite"]
        calls = r["calls_by_tier_per_suite"]
        lines.append(
            f"{label:<30} {pct(r['pass_rate']):>9} {format_usd(round(r['cost_micros_per_suite']), places=5):>11} "
            + " ".join(f"{format_usd(round(by_tier[t]), places=5):>9}" for t in TIERS)
            + f"  {' / '.join(f'{calls[t]:.1f}' for t in TIERS):>16}"
        )
    r = results["ratios"]
    lines += [
        "",
        f"tools: ladder / frontier-only cost {r['tools_ladder_vs_frontier']:.3f} ({pct(1 - r['tools_ladder_vs_frontier'])} "
        f"lower) at pass rate {pct(runs['tools_ladder']['pass_rate'])} vs {pct(runs['tools_frontier']['pass_rate'])}",
        f"single calls: ladder / frontier-only cost {r['single_ladder_vs_frontier']:.3f}; tools / single calls: "
        f"{r['tools_vs_single_ladder']:.3f} on the ladder, {r['tools_vs_single_frontier']:.3f} at the frontier",
        "passes by tier (tools, ladder): "
        + ", ".join(f"{t} {runs['tools_ladder']['passes_by_tier_per_suite'][t]:.1f}" for t in TIERS),
    ]
    return "\n".join(lines)


def main_tools(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="savings on multi-file tool tasks (bench/savings.py --suite tools)")
    parser.add_argument("--suite", choices=["tools"], default="tools")
    parser.add_argument("--local", choices=["scripted", "real"], default="scripted")
    parser.add_argument("--tasks", type=int, default=None, metavar="N", help="only the first N tasks (by name)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--seeds", type=int, default=10, metavar="N")
    parser.add_argument("--draws", choices=["nested", "independent"], default="nested")
    for tier in TIERS:
        parser.add_argument(f"--p-{tier}", type=parse_probs, default=None, metavar="E,M,H")
    parser.add_argument("--at", default=DEFAULT_AT)
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--check-tasks", action="store_true", help="only check references pass and wrong fixes fail")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    tasks = load_tool_tasks()[: args.tasks] if args.tasks else load_tool_tasks()
    catalog = load_catalog([paths.bundled_models_dir()])
    progress: Callable[[str], None] = (lambda _line: None) if args.quiet else (lambda line: print(line, flush=True))
    if args.check_tasks:
        with work_dir(args.keep) as work, gate_python_first():
            problems = asyncio.run(check_suite(tasks, catalog, work))
        print("\n".join(problems) if problems else f"all {len(tasks)} tool tasks: references pass, wrong fixes fail")
        return 1 if problems else 0
    p = {tier: dict(getattr(args, f"p_{tier}") or DEFAULT_P[tier]) for tier in TIERS}
    at = datetime.fromisoformat(args.at).astimezone(UTC)
    gguf = resolve_gguf(args.gguf) if args.local == "real" else None
    description = (
        f"local tier = the real embedded SmolLM2-135M ({gguf.name}, mlx on CPU)"
        if gguf
        else "local tier = a scripted stand-in (P pass: "
        + ", ".join(f"{d} {p['local'][d]:.2f}" for d in DIFFICULTIES)
        + ")"
    )
    runs: dict[str, list[ShapeRun]] = {
        key: [] for key in ("tools_frontier", "tools_ladder", "single_frontier", "single_ladder")
    }
    models = []
    with work_dir(args.keep) as work, gate_python_first():
        for offset in range(args.seeds):
            model = CorrectnessModel(p, args.seed + offset, args.draws)
            models.append(model)
            for shape in SHAPES:
                for label, ladder in (("frontier", ["frontier"]), ("ladder", ["local", "cheap", "frontier"])):
                    print(f"{shape}, {label}, seed {model.seed} ...", flush=True)
                    run = asyncio.run(
                        run_shape(
                            tasks,
                            shape=shape,
                            label=f"{label}-{model.seed}",
                            ladder=ladder,  # type: ignore[arg-type]
                            local=args.local,
                            model=model,
                            catalog=catalog,
                            work=work,
                            at=at,
                            gguf=gguf,
                            progress=progress if offset == 0 else (lambda _line: None),
                        )
                    )
                    runs[f"{shape}_{label}"].append(run)
    pooled_runs = {key: pooled(value) for key, value in runs.items()}

    def ratio(a: str, b: str) -> float:
        return pooled_runs[a]["cost_micros"] / pooled_runs[b]["cost_micros"] if pooled_runs[b]["cost_micros"] else 0.0

    results: dict[str, Any] = {
        "benchmark": "savings_tools",
        "version": __version__,
        "commit": git_commit(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "cpus": os.cpu_count()},
        "priced_at": at.isoformat(),
        "local": {"mode": args.local, "description": description},
        "models": {"cheap": CHEAP_MODEL, "frontier": FRONTIER_MODEL},
        "correctness_model": {"first_seed": args.seed, "draws": args.draws, "p": p},
        "seeds": args.seeds,
        "max_turns": MAX_TURNS,
        "suite": {
            "tasks": len(tasks),
            "files_changed": {t.name: len(t.changes) for t in tasks},
            "by_difficulty": dict(Counter(t.difficulty for t in tasks)),
        },
        "runs": pooled_runs,
        "ratios": {
            "tools_ladder_vs_frontier": ratio("tools_ladder", "tools_frontier"),
            "single_ladder_vs_frontier": ratio("single_ladder", "single_frontier"),
            "tools_vs_single_ladder": ratio("tools_ladder", "single_ladder"),
            "tools_vs_single_frontier": ratio("tools_frontier", "single_frontier"),
        },
        "equal_pass_rate": pooled_runs["tools_ladder"]["passes"] >= pooled_runs["tools_frontier"]["passes"],
        "first_seed": {key: [asdict(r) for r in value[0].rows] for key, value in runs.items()},
    }
    print(render(results, models[0]))
    write_results(args.json, results)
    return 0
