"""The local tier's prompt, paired: each savings task sent to the same local model three ways, back to back.

Run as ``python bench/local_prompt.py [--local real|ollama] [--task NAME ...] [--json PATH]``.

For every task of ``bench/tasks`` (one model step each), in the same minute and with the same output budget:

- ``minimal``: the prompt small local models get now (the task, its context, the answer form);
- ``full``: the full profile, which is the prompt every model got before the profiles existed (the preamble,
  ``Agent: <name>``, the goal, the context files, the task, the answer form);
- ``plain``: the task as one plain chat message (``savings.plain_message``).

Each answer goes through the answer extraction for its prompt and the task's real gates. The order of the three
rotates from task to task, so a change in the machine's load during the run falls on all three alike. Printed
per task and summed: passes, seconds of local compute per attempt (median, max), prompt and output tokens.
This isolates what the prompt costs and earns; ``bench/savings.py --local real`` measures the whole ladder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import git_commit, machine, write_results  # noqa: E402
from bench.savings import (  # noqa: E402
    GOAL,
    LocalMode,
    Task,
    gate_python_first,
    load_tasks,
    local_provider,
    ollama_reachable,
    plain_message,
    resolve_gguf,
    select_tasks,
    step_table,
    work_dir,
    write_workspaces,
)
from supervisor import __version__, paths  # noqa: E402
from supervisor.atomic_file import atomic_write  # noqa: E402
from supervisor.backends.base import Backend, Message, Request  # noqa: E402
from supervisor.catalog import PromptProfile, load_catalog  # noqa: E402
from supervisor.config import AgentConfig, StepConfig, parse_config  # noqa: E402
from supervisor.runtime.answer import AnswerForm, answer_form, extract_answer  # noqa: E402
from supervisor.runtime.prompt import build_messages, read_context, step_answer_form  # noqa: E402
from supervisor.runtime.verify import run_gate  # noqa: E402
from supervisor.runtime.workspace import resolve_inside  # noqa: E402

DEFAULT_JSON = ROOT / "bench" / "results" / "local_prompt.json"
VARIANTS = ("minimal", "full", "plain")


@dataclass
class Attempt:
    task: str
    variant: str
    passed: bool
    compute_s: float | None
    prompt_tokens: int | None
    output_tokens: int | None
    finish_reason: str | None
    reason: str = ""


def messages_for(variant: str, task: Task, step: StepConfig, workspace: Path) -> tuple[Message, ...]:
    if variant == "plain":
        return (Message("user", plain_message(task)),)
    agent = AgentConfig.model_validate({"goal": GOAL, "workspace": str(workspace), "steps": [step_table(task)]})
    context = read_context(workspace, step, 256_000)
    profile: PromptProfile = "minimal" if variant == "minimal" else "full"
    return build_messages(
        task.agent, agent, step, digest="", context=context, failure=None, failure_chars=2000, profile=profile
    )


def form_for(variant: str, task: Task, step: StepConfig, workspace: Path) -> AnswerForm:
    if variant == "plain":
        return answer_form(step, workspace, echoes=task.prompt.splitlines())
    return step_answer_form(step, workspace, "minimal" if variant == "minimal" else "full")


async def attempt(backend: Backend, model_id: str, window: int | None, variant: str, task: Task, root: Path) -> Attempt:
    workspace = root / variant / "ws" / task.name
    step = StepConfig.model_validate(step_table(task))
    request = Request(
        model=model_id,
        messages=messages_for(variant, task, step, workspace),
        max_output_tokens=task.max_output_tokens,
        temperature=0.0,
        timeout_s=900,
        context_window=window,
    )
    result = await backend.complete(request)
    passed, reason = result.finish_reason != "looping", "looping" if result.finish_reason == "looping" else ""
    if passed:
        answer = extract_answer(result.text, form_for(variant, task, step, workspace))
        if step.writes:
            atomic_write(resolve_inside(workspace, step.writes), answer.encode("utf-8"))
        for gate in step.verify:
            checked = await run_gate(gate, answer=answer, workspace=workspace, capture_bytes=64_000)
            if not checked.passed:
                passed, reason = False, f"{checked.gate}: {checked.output[-160:]}"
                break
    return Attempt(
        task.name,
        variant,
        passed,
        result.compute_s,
        result.usage.input_uncached,
        result.usage.output,
        result.finish_reason,
        reason,
    )


async def run(
    tasks: Sequence[Task], local: LocalMode, gguf: Path | None, ollama_model: str, work: Path
) -> list[Attempt]:
    from supervisor.backends.registry import make_backend

    for variant in VARIANTS:
        write_workspaces(tasks, work / variant)
    environ = {**os.environ, "SUPERVISOR_HOME": str(work / "home")}
    name, provider, key = local_provider(local, gguf, ollama_model)
    config = parse_config({"providers": {name: provider}}, "bench/local_prompt.py", None, environ)
    backend = make_backend(name, config.providers[name], environ)
    model_id = key.split(":", 1)[1]
    catalog = load_catalog([paths.bundled_models_dir()])
    spec = catalog.spec_for(name, model_id, config.providers[name], tier="local").spec
    attempts: list[Attempt] = []
    try:
        for index, task in enumerate(tasks):
            order = VARIANTS[index % 3 :] + VARIANTS[: index % 3]  # rotate, so load drift falls on all three
            for variant in order:
                done = await attempt(backend, model_id, spec.context_window if spec else None, variant, task, work)
                attempts.append(done)
                print(
                    f"  {task.name:<24} {variant:<8} {'pass' if done.passed else 'FAIL'} "
                    f"{done.compute_s or 0.0:6.1f}s  {done.prompt_tokens} in / {done.output_tokens} out  "
                    f"{done.finish_reason}",
                    flush=True,
                )
    finally:
        await backend.aclose()
    return attempts


def summary(attempts: Sequence[Attempt]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = [a for a in attempts if a.variant == variant]
        seconds = [a.compute_s for a in mine if a.compute_s is not None]
        prompts = [a.prompt_tokens for a in mine if a.prompt_tokens is not None]
        outputs = [a.output_tokens for a in mine if a.output_tokens is not None]
        out[variant] = {
            "attempts": len(mine),
            "passes": sum(a.passed for a in mine),
            "median_s": statistics.median(seconds) if seconds else None,
            "max_s": max(seconds) if seconds else None,
            "total_s": sum(seconds),
            "median_prompt_tokens": statistics.median(prompts) if prompts else None,
            "median_output_tokens": statistics.median(outputs) if outputs else None,
            "looping": sum(1 for a in mine if a.finish_reason == "looping"),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--local", choices=["real", "ollama"], default="real")
    parser.add_argument("--task", action="append", metavar="NAME", help="only this task (repeatable)")
    parser.add_argument("--tasks", type=int, default=None, metavar="N", help="only the first N tasks")
    parser.add_argument("--gguf", type=Path, default=None, help="--local real: the SmolLM2 GGUF (default: pulled)")
    parser.add_argument("--ollama-model", default="qwen3:4b")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH")
    args = parser.parse_args(argv)
    tasks = select_tasks(load_tasks(), args.tasks, args.task)
    local: LocalMode = args.local
    gguf = resolve_gguf(args.gguf) if local == "real" else None
    if local == "ollama" and ollama_reachable() is None:
        raise SystemExit("--local ollama: no Ollama server answers (set OLLAMA_HOST or start `ollama serve`)")
    with work_dir(args.keep) as work, gate_python_first():
        attempts = asyncio.run(run(tasks, local, gguf, args.ollama_model, work))
    figures = summary(attempts)
    print(f"\n{'':<8} {'passes':>7} {'median s':>9} {'max s':>7} {'prompt tok':>11} {'output tok':>11} {'looping':>8}")
    for variant, f in figures.items():
        print(
            f"{variant:<8} {f['passes']:>4}/{f['attempts']:<2} {f['median_s'] or 0:>9.1f} {f['max_s'] or 0:>7.1f} "
            f"{f['median_prompt_tokens'] or 0:>11} {f['median_output_tokens'] or 0:>11} {f['looping']:>8}"
        )
    write_results(
        args.json,
        {
            "benchmark": "local_prompt",
            "version": __version__,
            "commit": git_commit(),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {**machine(), "cpus": os.cpu_count()},
            "local": local,
            "summary": figures,
            "attempts": [asdict(a) for a in attempts],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
