"""Planner mode: an agent with a goal and verify gates but no steps asks the cheapest tier for a plan.

The plan is JSON validated against the schema we publish (``supervisor/schemas/plan.schema.json``). Its steps
may only be model steps or commands from the agent's ``tools`` allowlist; anything else rejects the plan, and
planning is retried and escalated like any step. A tool step runs the allowlisted string from the config (the
model only names it): model output is never executed as a shell command. A planned model step may use the
built-in worker (``tools`` from the six built-in tools, ``commands`` by name from the agent's ``commands``
table, whose command lines come from the config). A planned ``agent`` step runs one of the agent's ``programs``
by name (its command line from the config) with the plan's ``task`` as its task file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.config import TOOL_NAMES, AgentConfig, CommandGate, StepConfig
from supervisor.runtime.verify import GateResult

if TYPE_CHECKING:
    from supervisor.runtime.run import RunState
    from supervisor.runtime.steps import StepOutcome, StepRunner

PLAN_STEP = "plan"
MAX_LISTED_FILES = 40


@cache
def plan_schema() -> dict[str, Any]:
    text = resources.files("supervisor").joinpath("schemas/plan.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _listing(workspace: Path) -> str:
    names = []
    for path in sorted(workspace.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(workspace).parts):
            continue
        if path.is_file():
            names.append(f"{path.relative_to(workspace).as_posix()} ({path.stat().st_size} bytes)")
        if len(names) >= MAX_LISTED_FILES:
            names.append("…")
            break
    return "\n".join(names) or "(empty)"


def planner_step(agent: AgentConfig, workspace: Path) -> StepConfig:
    tools = "\n".join(f"- {t}" for t in agent.tools) or "(none: plan model steps only)"
    commands = "\n".join(f"- {name}: {c.cmd}" for name, c in agent.commands.items()) or "(none)"
    programs = "\n".join(f"- {name}" for name in agent.programs) or "(none)"
    prompt = (
        "Plan the steps that reach the goal. Reply with one JSON object matching this schema:\n"
        f"{json.dumps(plan_schema()['properties'], separators=(',', ':'))}\n\n"
        "Step kinds: a `model` step asks a model (give `prompt`, optionally `context` files to read and the file "
        "it `writes`, and `verify` commands from the tools list); a `tool` step runs one command from the tools "
        "list, copied exactly. A `model` step that needs several files or to run checks may list built-in "
        f"worker `tools` ({', '.join(TOOL_NAMES)}) and, for run_command, `commands` by name from the commands "
        "list. An `agent` step hands a `task` to one of the agent programs below, by name.\n\n"
        f"Tools (the only commands allowed):\n{tools}\n\nCommands a worker may run (by name):\n"
        f"{commands}\n\nAgent programs (by name):\n{programs}\n\nFiles in the workspace:\n{_listing(workspace)}"
    )
    return StepConfig(name=PLAN_STEP, prompt=prompt, output=PLAN_STEP, max_output_tokens=1024)


def validate_plan(answer: str, agent: AgentConfig, snapshot_ignore: Sequence[str] = ()) -> GateResult:
    """Schema, allowlist and path checks; the first problem found is the failure the retry prompt carries."""
    import jsonschema

    label = "plan"
    try:
        plan = json.loads(answer)
    except json.JSONDecodeError as exc:
        return GateResult(label, False, f"the plan is not valid JSON: {exc}")
    validator = jsonschema.Draft202012Validator(plan_schema())
    errors = sorted(validator.iter_errors(plan), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(root)"
        return GateResult(label, False, f"the plan does not match the plan schema at {where}: {first.message}")
    names: set[str] = set()
    for index, step in enumerate(plan["steps"]):
        if step["name"] in names:
            return GateResult(label, False, f"steps[{index}]: the name {step['name']!r} is used twice")
        names.add(step["name"])
        if step["kind"] == "agent":
            if step["program"] not in agent.programs:
                return GateResult(
                    label,
                    False,
                    f"steps[{index}] ({step['name']}): {step['program']!r} is not one of the agent's programs; "
                    f"allowed: {', '.join(agent.programs) or 'none'}",
                )
            for command in step.get("verify", []):
                if command not in agent.tools:
                    return GateResult(
                        label,
                        False,
                        f"steps[{index}] ({step['name']}): verify command {command!r} is not one of the agent's tools",
                    )
        if step["kind"] == "tool" and step["tool"] not in agent.tools:
            return GateResult(
                label,
                False,
                f"steps[{index}] ({step['name']}): {step['tool']!r} is not one of the agent's tools; "
                f"allowed: {', '.join(agent.tools) or 'none'}",
            )
        if step["kind"] == "model":
            problem = _worker_problem(step, agent)
            if problem:
                return GateResult(label, False, f"steps[{index}] ({step['name']}): {problem}")
            for command in step.get("verify", []):
                if command not in agent.tools:
                    return GateResult(
                        label,
                        False,
                        f"steps[{index}] ({step['name']}): verify command {command!r} is not one of the agent's tools",
                    )
            for rel in [*step.get("context", []), *([step["writes"]] if step.get("writes") else [])]:
                path = Path(rel)
                if path.is_absolute() or ".." in path.parts or not rel.strip():
                    return GateResult(
                        label, False, f"steps[{index}] ({step['name']}): {rel!r} is outside the workspace"
                    )
                hidden = set(snapshot_ignore) & set(path.parts)
                if hidden:
                    return GateResult(
                        label,
                        False,
                        f"steps[{index}] ({step['name']}): {rel!r} is inside {', '.join(sorted(hidden))}, which "
                        "workspace snapshots leave out; a plan may not touch it",
                    )
    return GateResult(label, True, f"valid plan with {len(plan['steps'])} step(s)")


def _worker_problem(step: dict[str, Any], agent: AgentConfig) -> str | None:
    """Why a planned model step's worker settings are not allowed, or None."""
    tools = step.get("tools")
    names = step.get("commands", [])
    if tools is None:
        return "`commands` and `max_turns` need `tools`" if names or "max_turns" in step else None
    unknown = [n for n in names if n not in agent.commands]
    if unknown:
        allowed = ", ".join(agent.commands) or "none"
        return f"command {unknown[0]!r} is not one of the agent's commands; allowed: {allowed}"
    if "run_command" in tools and not names:
        return "run_command needs `commands` (names from the agent's commands)"
    if names and "run_command" not in tools:
        return "`commands` are run with run_command: add it to `tools`"
    return None


def steps_from_plan(answer: str, agent: AgentConfig) -> list[StepConfig]:
    """Turn a validated plan into steps; tool commands are taken from the config, never from the answer."""
    plan = json.loads(answer)
    steps = []
    for step in plan["steps"]:
        if step["kind"] == "tool":
            command = agent.tools[agent.tools.index(step["tool"])]
            steps.append(StepConfig(name=step["name"], run=command))
        elif step["kind"] == "agent":
            # the program's command line comes from the config; the plan only names it and writes the task
            verify = [CommandGate(cmd=agent.tools[agent.tools.index(c)]) for c in step.get("verify", [])]
            steps.append(
                StepConfig(name=step["name"], agent=agent.programs[step["program"]], task=step["task"], verify=verify)
            )
        else:
            verify = [CommandGate(cmd=agent.tools[agent.tools.index(c)]) for c in step.get("verify", [])]
            tools = step.get("tools")
            steps.append(
                StepConfig(
                    name=step["name"],
                    prompt=step["prompt"],
                    context=list(step.get("context", [])),
                    writes=step.get("writes"),
                    output=None if step.get("writes") or tools else step["name"],
                    verify=verify,
                    tools=list(tools) if tools else None,
                    # command lines come from the config; the plan only names them
                    commands={name: agent.commands[name] for name in step.get("commands", [])},
                    max_turns=step.get("max_turns") if tools else None,
                )
            )
    return steps


async def plan_steps(steps: StepRunner, state: RunState) -> tuple[list[StepConfig], StepOutcome | None]:
    """Run the planning step through ``steps`` (retried and escalated like any model step, its answer checked
    as a plan); the plan's steps, or why there are none."""
    step = planner_step(state.cfg, state.workspace)
    state.planning_step = step
    outcome = await steps.run(state, step, kind="plan")
    if outcome.status != "passed":
        return [], outcome
    text = Path(state.artifacts[PLAN_STEP]).read_text(encoding="utf-8")
    return steps_from_plan(text, state.cfg), None
