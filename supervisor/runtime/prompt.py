"""Every call's prompt is built fresh: the step's task, its declared context files, the answer form, and on a
retry only the last verify failure (reduced by ``feedback``). Never the history of earlier calls.

Two profiles, chosen per model by data (``prompt_profile`` on the provider, else on the model's catalog
entry, else by tier: local models ``minimal``, paid models ``full``):

- ``full``: a system message with the instructions, the goal, the rules and the context files, ending at a
  cache breakpoint, so providers with explicit prompt caching cache exactly the part that repeats across
  attempts and across wakes; then a user message with the digest (it changes after every run), the task and
  the answer form.
- ``minimal``: one user message with the task, the context files, the rules if any, and the answer form (a
  fenced block for a file). No identity preamble, no agent name, no digest: nothing a small model could copy
  into its answer by mistake, and a third of the prefill.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from supervisor.backends.base import BYTES_PER_TOKEN_ESTIMATE, Message
from supervisor.catalog import ModelSpec, PromptProfile
from supervisor.config import AgentConfig, JsonSchemaGate, ProviderConfig, PythonCompilesGate, StepConfig
from supervisor.errors import PromptTooLarge
from supervisor.runtime.answer import LANGUAGE_TAGS, AnswerForm, answer_form, is_plan_step
from supervisor.runtime.feedback import reduce_failure
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


def prompt_profile(spec: ModelSpec, provider: ProviderConfig, *, local: bool) -> PromptProfile:
    """The provider's ``prompt_profile``, else the catalog entry's, else minimal for local models, full for paid."""
    return provider.prompt_profile or spec.prompt_profile or ("minimal" if local else "full")


# Output budgets of local attempts when the step sets no max_output_tokens (a local model that rambles or loops
# costs real seconds on a CPU; a paid model is billed only for what it writes, so it keeps the step default).
LOCAL_OUTPUT_TOKENS_JSON = 256  # a JSON answer, or a short text answer kept as an artifact
LOCAL_OUTPUT_TOKENS_NEW_FILE = 512  # a file that does not exist yet (code from scratch)
LOCAL_EDIT_HEADROOM = 1.5  # an edit: the file's current size in tokens, and half again, plus 64
LOCAL_OUTPUT_TOKENS_MIN = 128


def output_budget(step: StepConfig, *, local: bool, model_max: int, workspace: Path | None) -> int:
    """The attempt's max_output_tokens: the step's own when it sets one (or for paid models), else a local default
    sized to the step: an edit gets the target file's size and half again, a new file 512, JSON or text 256."""
    if "max_output_tokens" in step.model_fields_set or not local:
        return min(step.max_output_tokens, model_max)
    target = workspace / step.writes if workspace is not None and step.writes else None
    if target is not None and target.is_file():
        tokens = math.ceil(target.stat().st_size / BYTES_PER_TOKEN_ESTIMATE)
        budget = max(LOCAL_OUTPUT_TOKENS_MIN, math.ceil(tokens * LOCAL_EDIT_HEADROOM) + 64)
    elif step.writes and not answer_form(step).json:
        budget = LOCAL_OUTPUT_TOKENS_NEW_FILE
    else:
        budget = LOCAL_OUTPUT_TOKENS_JSON
    return min(budget, step.max_output_tokens, model_max)


@dataclass(frozen=True, slots=True)
class AttemptPrompt:
    """One attempt's prompt, sized to the model: the messages, the output budget, and how to read the answer."""

    profile: PromptProfile
    messages: tuple[Message, ...]
    max_output_tokens: int
    form: AnswerForm


def attempt_prompt(
    agent_name: str,
    agent: AgentConfig,
    step: StepConfig,
    *,
    spec: ModelSpec,
    provider: ProviderConfig,
    local: bool,
    workspace: Path,
    digest: str,
    context: list[ContextFile],
    failure: str | None,
    failure_chars: int,
) -> AttemptPrompt:
    profile = prompt_profile(spec, provider, local=local)
    messages = build_messages(
        agent_name,
        agent,
        step,
        digest=digest,
        context=context,
        failure=failure,
        failure_chars=failure_chars,
        profile=profile,
    )
    budget = output_budget(step, local=local, model_max=spec.max_output_tokens, workspace=workspace)
    return AttemptPrompt(profile, messages, budget, step_answer_form(step, workspace, profile))


def answer_instructions(step: StepConfig, profile: PromptProfile = "full") -> str:
    """Tell the model the shape of the answer the gates will check."""
    if step.uses_tools:
        return worker_instructions(step)
    json_answer = any(isinstance(g, JsonSchemaGate) for g in step.verify)
    python = any(isinstance(g, PythonCompilesGate) for g in step.verify)
    if profile == "minimal":
        # Small models fence code whatever they are told, so ask for the fence and take the block out.
        if is_plan_step(step):
            return "Reply with the JSON plan only."
        if json_answer or (step.writes or "").lower().endswith(".json"):
            return "Reply with the JSON only."
        if step.writes:
            tag = answer_form(step).fence_tag
            return f"Reply with the complete new {PurePosixPath(step.writes).name} in one ```{tag} block."
        if python:
            return "Reply with the Python code in one ```python block."
        return "Reply with only the answer."
    if is_plan_step(step):
        return "Reply with only the JSON plan: no explanation, no code fences."
    if json_answer:
        return "Reply with only the JSON document: no explanation, no code fences."
    if step.writes:
        extra = " It must be valid Python." if python else ""
        return f"Reply with only the complete new content of {step.writes}: no explanation, no code fences.{extra}"
    return "Reply with only the answer."


def step_answer_form(step: StepConfig, workspace: Path | None, profile: PromptProfile) -> AnswerForm:
    """How the answer is taken out of the reply; our own words (the answer form, the task's lines) are echoes."""
    instruction = answer_instructions(step, profile)
    echoes = [sentence for sentence in instruction.replace(": ", ". ").split(". ")]
    echoes += [instruction, *(step.prompt or "").splitlines()]
    return answer_form(step, workspace, echoes=echoes)


def _fenced(text: str, tag: str = "") -> str:
    """``text`` in a fenced block whose fence is longer than any backtick run inside it."""
    longest = run = 0
    for char in text:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{tag}\n{text.rstrip()}\n{fence}"


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
    profile: PromptProfile = "full",
) -> tuple[Message, ...]:
    """The messages of one attempt; ``failure`` is the last gate failure, already reduced (``clean_failure``).
    ``tools_text``: the tools offered as text (the JSON-in-text protocol), part of the stable prefix. A step with
    tools always gets the full layout: the worker's protocol lives in it."""
    excerpt = None
    if failure:
        excerpt = failure.strip()
        if len(excerpt) > failure_chars:
            excerpt = excerpt[: failure_chars - 1] + "…"
    if profile == "minimal" and not tools_text and not step.uses_tools:
        return (Message("user", _minimal_task(agent, step, context, excerpt)),)
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
    if excerpt:
        task += f"\n\nA previous attempt at this task was rejected by the verify gate:\n{excerpt}\nAvoid that mistake."
    # One system message holds everything stable (and ends at the cache breakpoint); one user message holds
    # what changes. Two messages suit every chat template, including strict-alternation ones.
    return (Message("system", system, cache_breakpoint=True), Message("user", task))


def clean_failure(failure: str | None, workspace: Path, redactor: Redactor, limit: int) -> str | None:
    """The gate failure as the next prompt sees it: no keys, reduced to what a model can act on (``feedback``),
    with paths relative to the workspace (so the prompt, and its cost, do not depend on where it happens to live),
    at most ``limit`` characters."""
    if not failure:
        return None
    return reduce_failure(redactor.scrub(failure), workspace=workspace, limit=limit)


def _minimal_task(agent: AgentConfig, step: StepConfig, context: list[ContextFile], failure: str | None) -> str:
    parts = []
    if is_plan_step(step):
        parts.append(f"Goal: {agent.goal.strip()}")  # the planner's task is the goal
    parts.append((step.prompt or "").strip())
    for f in context:
        tags = LANGUAGE_TAGS.get(PurePosixPath(f.path).suffix.lower(), ())
        parts.append(f"{f.path}:\n{_fenced(f.text, tags[0] if tags else '')}")
    if agent.rules.strip():
        parts.append(f"Rules: {agent.rules.strip()}")
    if failure:
        parts.append(f"Your last answer was rejected:\n{failure}")
    parts.append(answer_instructions(step, "minimal"))
    return "\n\n".join(parts)
