"""Every call's prompt is built fresh: goal and rules, the declared context files, the memory digest, the step's
prompt, and on a retry only the last verify failure (trimmed). Never the history of earlier calls.

The stable prefix (instructions, goal, rules and context files) ends with a cache breakpoint, so providers with
explicit prompt caching cache exactly the part that repeats across attempts and across wakes; the digest, which
changes after every run, comes after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from supervisor.backends.base import Message
from supervisor.config import AgentConfig, JsonSchemaGate, PythonCompilesGate, StepConfig
from supervisor.errors import PromptTooLarge
from supervisor.runtime.workspace import resolve_inside
from supervisor.secrets import Redactor

SYSTEM_PREAMBLE = (
    "You are one step of an unattended agent run by frugal-supervisor. Each call is a fresh session: "
    "everything you need is below. A deterministic check verifies your answer."
)


@dataclass(frozen=True, slots=True)
class ContextFile:
    path: str
    text: str


def read_context(workspace: Path, step: StepConfig, max_bytes: int) -> list[ContextFile]:
    """Read the step's context files; refuse (never truncate) one that is too big or not text."""
    files = []
    for rel in step.context:
        path = resolve_inside(workspace, rel)
        if not path.is_file():
            raise PromptTooLarge(
                f"step {step.name!r}: context file {rel} does not exist in {workspace}",
                "create it, or have an earlier step produce it",
            )
        size = path.stat().st_size
        if size > max_bytes:
            raise PromptTooLarge(
                f"step {step.name!r}: context file {rel} is {size:,} bytes, over the {max_bytes:,}-byte limit",
                "send a smaller file (have a tier-0 step extract what matters) or raise limits.max_context_file_bytes",
            )
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise PromptTooLarge(
                f"step {step.name!r}: context file {rel} is not UTF-8 text", "only text files can be context"
            ) from None
        files.append(ContextFile(rel, text))
    return files


def worker_instructions(step: StepConfig) -> str:
    """How a step with tools works, and what checks the result."""
    from supervisor.runtime.verify import describe

    checks = "; ".join(describe(g) for g in step.verify) or "the step's gates"
    text = (
        "Do the task with the tools, one tool call per reply: each result comes back before your next reply. "
        "Paths are relative to the workspace. Read a file before you edit it; edit_file replaces one exact span "
        f"of text. You have at most {step.turn_limit} turns. When the task is done, call finish."
    )
    return f"{text} Your work is then checked by: {checks}."


def answer_instructions(step: StepConfig) -> str:
    """Tell the model the shape of the answer the gates will check."""
    if step.uses_tools:
        return worker_instructions(step)
    if step.output == "plan" and step.name == "plan":
        return "Reply with only the JSON plan: no explanation, no code fences."
    if any(isinstance(g, JsonSchemaGate) for g in step.verify):
        return "Reply with only the JSON document: no explanation, no code fences."
    if step.writes:
        extra = " It must be valid Python." if any(isinstance(g, PythonCompilesGate) for g in step.verify) else ""
        return f"Reply with only the complete new content of {step.writes}: no explanation, no code fences.{extra}"
    return "Reply with only the answer."


def build_messages(
    agent_name: str,
    agent: AgentConfig,
    step: StepConfig,
    *,
    digest: str,
    context: list[ContextFile],
    failure: str | None,
    failure_chars: int,
    tools_text: str | None = None,
) -> tuple[Message, ...]:
    """``tools_text``: the tools offered as text (the JSON-in-text protocol), part of the stable prefix."""
    system = f"{SYSTEM_PREAMBLE}\n\nAgent: {agent_name}\nGoal: {agent.goal.strip()}"
    if agent.rules.strip():
        system += f"\nRules: {agent.rules.strip()}"
    if tools_text:
        system += f"\n\n{tools_text}"
    if context:
        body = "\n\n".join(f"=== {f.path} ===\n{f.text.rstrip()}\n=== end of {f.path} ===" for f in context)
        system += f"\n\nContext files:\n\n{body}"
    task = ""
    if digest.strip():
        # The digest changes after every run, so it goes after the cache breakpoint: the stable prefix
        # (instructions and context files) can then be read from a warm cache on the next wake.
        task += f"Memory from earlier runs:\n{digest.strip()}\n\n"
    task += f"Task ({step.name}): {(step.prompt or '').strip()}\n\n{answer_instructions(step)}"
    if failure:
        excerpt = failure.strip()
        if len(excerpt) > failure_chars:
            excerpt = "…" + excerpt[-failure_chars:]
        task += f"\n\nA previous attempt at this task was rejected by the verify gate:\n{excerpt}\nAvoid that mistake."
    # One system message holds everything stable (and ends at the cache breakpoint); one user message holds
    # what changes. Two messages suit every chat template, including strict-alternation ones.
    return (Message("system", system, cache_breakpoint=True), Message("user", task))


_FENCE = re.compile(r"^\s*```[^\n`]*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


def extract_answer(text: str) -> str:
    """The answer to write or check: the model's text, unwrapped if it is a single fenced code block."""
    match = _FENCE.match(text)
    body = match.group("body") if match else text.strip()
    return body if body.endswith("\n") or not body else body + "\n"


def clean_failure(failure: str | None, workspace: Path, redactor: Redactor) -> str | None:
    """The gate failure as the next prompt sees it: no keys, and no absolute workspace paths (so the prompt,
    and its cost, do not depend on where the workspace happens to live)."""
    if not failure:
        return None
    return redactor.scrub(failure).replace(str(workspace) + "/", "").replace(str(workspace), ".")
