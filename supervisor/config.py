"""``supervisor.toml`` -> frozen, validated objects.

The file is read with ``tomllib`` and validated by pydantic models with ``extra="forbid"``, so a typo is an
error that names the file, the agent and the key. ``load_config(path, environ)`` is pure: the environment is an
argument. Precedence: defaults < file < environment < CLI flags (the CLI applies its flags with ``replace``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from supervisor.catalog import TIERS, PromptProfile, Tier, split_model_key
from supervisor.errors import ConfigError

ProviderKind = Literal["ollama", "mlx", "openai_compat", "anthropic", "scripted"]
LOCAL_KINDS = frozenset({"ollama", "mlx"})  # their models run on this machine: local unless the config says not
FrontierPolicy = Literal["ask", "never", "allow"]
MAX_USD = 1_000_000.0  # a cap beyond a million dollars is a typo, and would not fit exact micro-dollar math
AGENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# ----------------------------------------------------------------------------------------------------------
# Providers


class ProviderConfig(_Model):
    """How to reach one provider; built-in defaults exist for the well-known ones."""

    kind: ProviderKind
    """The wire protocol: ollama, mlx, openai_compat, anthropic (or scripted, for demos and tests)."""
    base_url: str | None = None
    """API base URL (openai_compat, anthropic)."""
    host: str | None = None
    """Ollama server; ``OLLAMA_HOST`` overrides when set."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the API key (the key itself never goes in this file)."""
    local: bool = False
    """$0 marginal cost: the provider's models join the local tier and are never blocked by dollar caps.

    Defaults to true for the local kinds (ollama, mlx); set ``local = false`` for, say, a paid hosted Ollama."""
    keep_alive: str | int | None = None
    """Ollama: how long the server keeps a model loaded after a call (e.g. "10m", 0 to unload at once)."""
    context_window: int | None = Field(default=None, gt=0)
    """Context window to use for models this provider serves when the catalog does not say (Ollama's num_ctx)."""
    timeout_s: float = Field(default=120.0, gt=0)
    """Seconds to wait for a whole call."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """Seconds to wait for a connection."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers (not for secrets: use api_key_env)."""
    responses: bool | None = None
    """openai_compat: the server also speaks OpenAI's Responses API (``POST {base_url}/responses``), so the
    gateway passes Responses requests through to it, stateful ones (``previous_response_id``, ``store``,
    ``conversation``) included. Default: true for api.openai.com, false for every other server."""
    anthropic_version: str = "2023-06-01"
    """anthropic: the ``anthropic-version`` header."""
    cache_ttl: Literal["5m", "1h"] = "5m"
    """anthropic: the TTL of the cache breakpoint on the stable prefix."""
    models: dict[str, str] = Field(default_factory=dict)
    """mlx: model name -> local directory, GGUF file or Hugging Face repo id."""
    memory_budget_mb: int = Field(default=4096, gt=0)
    """mlx: unload least-recently-used models beyond this much memory."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Retries after 429/503/529 or a dropped connection (bounded exponential backoff, Retry-After honoured)."""
    prompt_profile: PromptProfile | None = None
    """The prompt its models get: "minimal" (task, context, answer form: for small models) or "full" (goal,
    rules, digest, a cache-friendly stable prefix). Unset: the model's catalog entry decides, else its tier
    (local models minimal, paid models full)."""
    simulated_as: str | None = None
    """scripted: the real model (provider:id) whose catalog prices a simulated call is charged at."""
    script: str | None = None
    """scripted: a TOML file of canned answers ([[answer]] match/text), relative to the config file."""

    @model_validator(mode="before")
    @classmethod
    def _local_kinds_are_local(cls, data: Any) -> Any:
        # A declared [providers.ollama] must not silently turn the local tier into unpriced models.
        if isinstance(data, dict) and "local" not in data and data.get("kind") in LOCAL_KINDS:
            return {**data, "local": True}
        return data

    @model_validator(mode="after")
    def _kind_fields(self) -> ProviderConfig:
        if self.kind in ("openai_compat", "anthropic") and not self.base_url:
            raise ValueError(f"a provider of kind {self.kind!r} needs base_url")
        return self


def default_providers() -> dict[str, ProviderConfig]:
    """The providers that work with no config at all."""
    return {
        "ollama": ProviderConfig(kind="ollama", host="http://127.0.0.1:11434", local=True),
        "mlx": ProviderConfig(kind="mlx", local=True),
        "anthropic": ProviderConfig(
            kind="anthropic", base_url="https://api.anthropic.com", api_key_env="ANTHROPIC_API_KEY"
        ),
        "openai": ProviderConfig(
            kind="openai_compat", base_url="https://api.openai.com/v1", api_key_env="OPENAI_API_KEY"
        ),
        "deepseek": ProviderConfig(
            kind="openai_compat", base_url="https://api.deepseek.com", api_key_env="DEEPSEEK_API_KEY"
        ),
        "gemini": ProviderConfig(
            kind="openai_compat",
            base_url="https://generativelanguage.googleapis.com/v1beta/openai",
            api_key_env="GEMINI_API_KEY",
        ),
    }


# ----------------------------------------------------------------------------------------------------------
# Caps, gates, steps, agents


class CapsConfig(_Model):
    """Spend caps in USD (and optional token caps). A call that could cross one is not sent: the agent defers."""

    run_usd: float | None = Field(default=None, ge=0, le=MAX_USD, allow_inf_nan=False)
    """Most one run may spend."""
    day_usd: float | None = Field(default=None, ge=0, le=MAX_USD, allow_inf_nan=False)
    """Most per calendar day (local time)."""
    month_usd: float | None = Field(default=None, ge=0, le=MAX_USD, allow_inf_nan=False)
    """Most per calendar month (local time)."""
    run_tokens: int | None = Field(default=None, ge=0)
    """Most tokens (prompt + output, every tier, local included) one run may use."""
    day_tokens: int | None = Field(default=None, ge=0)
    """Most tokens per day, local models included."""
    month_tokens: int | None = Field(default=None, ge=0)
    """Most tokens per month, local models included."""


class CommandGate(_Model):
    """A command run in the workspace; exit status 0 passes."""

    cmd: str = Field(min_length=1)
    timeout_s: float = Field(default=60.0, gt=0)


class JsonSchemaGate(_Model):
    """The answer must be JSON valid against this schema file (path relative to the workspace)."""

    json_schema: str = Field(min_length=1)


class RegexGate(_Model):
    """The answer must match this regular expression (``re.search``, multiline)."""

    regex: str = Field(min_length=1)

    @field_validator("regex")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return v


class PythonCompilesGate(_Model):
    """The answer must be Python source that compiles."""

    python_compiles: Literal[True]


Gate = CommandGate | JsonSchemaGate | RegexGate | PythonCompilesGate
_GATE_KEYS = ("cmd", "json_schema", "regex", "python_compiles")


def _parse_gate(value: Any) -> Any:
    if isinstance(value, str):
        return {"cmd": value}
    return value


def _gate_tag(value: Any) -> str | None:
    if isinstance(value, BaseModel):
        return {CommandGate: "cmd", JsonSchemaGate: "json_schema", RegexGate: "regex"}.get(
            type(value), "python_compiles"
        )
    if isinstance(value, dict):
        for key in _GATE_KEYS:
            if key in value:
                return key
    return None


GateSpec = Annotated[
    Annotated[CommandGate, Tag("cmd")]
    | Annotated[JsonSchemaGate, Tag("json_schema")]
    | Annotated[RegexGate, Tag("regex")]
    | Annotated[PythonCompilesGate, Tag("python_compiles")],
    Discriminator(
        _gate_tag,
        custom_error_type="gate",
        custom_error_message=(
            "a gate is a command string, or a table with one of: cmd, json_schema, regex, python_compiles"
        ),
    ),
]


# The built-in worker's tools, exactly as the model sees them (names and arguments are documented in README).
TOOL_NAMES: tuple[str, ...] = ("read_file", "list_files", "write_file", "edit_file", "run_command", "finish")
DEFAULT_MAX_TURNS = 12
COMMAND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")


def _parse_commands(value: Any) -> Any:
    """``{ test = "pytest -q" }`` or ``{ test = { cmd = "pytest -q", timeout_s = 120 } }``."""
    if isinstance(value, dict):
        return {name: ({"cmd": cmd} if isinstance(cmd, str) else cmd) for name, cmd in value.items()}
    return value


def _check_commands(commands: dict[str, CommandGate]) -> None:
    for name in commands:
        if not COMMAND_NAME.match(name):
            raise ValueError(
                f"command name {name!r}: use letters, digits, '-', '_' or '.' (up to 41), e.g. test or lint; "
                "the model calls run_command with this name"
            )


def _check_tools(tools: list[str]) -> list[str]:
    if not tools:
        raise ValueError(f"`tools` is empty; list the built-in tools the model may use: {', '.join(TOOL_NAMES)}")
    for tool in tools:
        if tool not in TOOL_NAMES:
            looks_like_command = not tool.isidentifier()
            hint = (
                '; a command goes in `commands = { name = "command line" }` and the model runs it with run_command'
                if looks_like_command
                else ""
            )
            raise ValueError(f"unknown tool {tool!r}: the built-in tools are {', '.join(TOOL_NAMES)}{hint}")
    if len(set(tools)) != len(tools):
        raise ValueError("a tool appears twice in `tools`")
    return tools


class StepConfig(_Model):
    """One step: ``run`` (a command, tier 0, no model), ``prompt`` (a model call, optionally with tools) or
    ``agent`` (an agent program whose model calls go through the gateway, served by the attempt's tier)."""

    name: str = Field(min_length=1)
    """Unique within the agent."""
    run: str | None = None
    """A shell command run in the workspace with no model (tier 0)."""
    prompt: str | None = None
    """What the model is asked to do."""
    context: list[str] = Field(default_factory=list)
    """Workspace files the model sees (the only ones)."""
    writes: str | None = None
    """Workspace file the answer is written to (restored byte-for-byte if a gate fails)."""
    output: str | None = None
    """Keep the answer as a run artifact under this name instead of writing a file."""
    verify: list[GateSpec] = Field(default_factory=list)
    """Gates that must all pass."""
    ladder: list[Tier] | None = None
    """Tiers this step may use, cheapest first (defaults to the agent's ladder)."""
    attempts_per_tier: int | None = Field(default=None, ge=1, le=10)
    """Attempts within one tier before escalating (defaults to the agent's)."""
    max_output_tokens: int = Field(default=1024, gt=0)
    """Output budget of each call (always explicit)."""
    timeout_s: float = Field(default=300.0, gt=0)
    """Seconds for a run step, or for each model call."""
    temperature: float = Field(default=0.0, ge=0, le=2)
    tools: list[str] | None = None
    """Built-in worker: the tools the model may call, turn after turn, until it calls ``finish`` (read_file,
    list_files, write_file, edit_file, run_command, finish; ``finish`` is always offered). Unset: one call."""
    commands: dict[str, CommandGate] = Field(default_factory=dict)
    """Built-in worker: the commands ``run_command`` may run, by name (``{ test = "pytest -q" }``); the model
    names one, it never writes a command line."""
    max_turns: int | None = Field(default=None, ge=1, le=100)
    """Built-in worker: at most this many turns (model calls) per attempt (default 12)."""
    agent: AgentCommand | None = None
    """An agent program as the worker: ``"aider --yes-always --message-file {task_file}"`` or
    ``{ cmd = "...", timeout_s = 900 }``. Each attempt runs it in the workspace with a short-lived gateway key
    bound to the attempt's tier; the gates decide, as for a model step."""
    task: str | None = None
    """Agent step: what the program is asked to do, written to a file outside the workspace (``{task_file}`` in
    the command, ``SUPERVISOR_TASK_FILE`` in its environment); a retry appends the last gate failure."""
    max_calls: int | None = Field(default=None, ge=1, le=10_000)
    """Agent step: most model calls one attempt may make (default 20); the frontier estimate assumes all of them."""
    attempt_usd: float | None = Field(default=None, ge=0, le=MAX_USD, allow_inf_nan=False)
    """Agent step: most one attempt may spend (checked before each call, like every cap)."""
    attempt_tokens: int | None = Field(default=None, ge=0)
    """Agent step: most tokens (prompt + output) one attempt may use, local models included."""

    @field_validator("verify", mode="before")
    @classmethod
    def _gates(cls, v: Any) -> Any:
        if isinstance(v, (str, dict)):
            v = [v]
        return [_parse_gate(g) for g in v] if isinstance(v, list) else v

    @field_validator("commands", mode="before")
    @classmethod
    def _commands(cls, v: Any) -> Any:
        return _parse_commands(v)

    @field_validator("agent", mode="before")
    @classmethod
    def _agent(cls, v: Any) -> Any:
        return _parse_agent_command(v)

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _check_tools(v)

    @model_validator(mode="after")
    def _shape(self) -> StepConfig:
        kinds = [k for k, v in (("run", self.run), ("prompt", self.prompt), ("agent", self.agent)) if v is not None]
        if len(kinds) != 1:
            raise ValueError(
                "a step needs exactly one of `run` (a command), `prompt` (a model call) or `agent` (an agent "
                + ("program)" if not kinds else f"program); it has {' and '.join(f'`{k}`' for k in kinds)}")
            )
        agent_only = [k for k in ("task", "max_calls", "attempt_usd", "attempt_tokens") if getattr(self, k) is not None]
        if agent_only and self.agent is None:
            raise ValueError(
                f"{', '.join(f'`{k}`' for k in agent_only)}: only for a step with `agent` (an agent program)"
            )
        if self.agent is not None:
            wrong = [
                k
                for k, v in (
                    ("context", self.context),
                    ("output", self.output),
                    ("tools", self.tools),
                    ("commands", self.commands),
                    ("max_turns", self.max_turns),
                )
                if v
            ]
            if wrong:
                raise ValueError(
                    f"an `agent` step takes no {', '.join(wrong)}: the program reads the workspace itself; give it "
                    "`task`, `verify` and `ladder` (`writes` names a file content gates check)"
                )
        if self.run is not None and (self.context or self.writes or self.output or self.ladder or self.tools):
            raise ValueError(
                "a `run` step takes no context, writes, output, ladder or tools (those are for model steps)"
            )
        _check_commands(self.commands)
        if self.tools is None and (self.commands or self.max_turns is not None):
            raise ValueError("`commands` and `max_turns` are for a step with `tools` (the built-in worker)")
        if self.tools is not None:
            if "run_command" in self.tools and not self.commands:
                raise ValueError(
                    'run_command needs `commands = { name = "command line" }`: the commands the model may run'
                )
            if self.commands and "run_command" not in self.tools:
                raise ValueError("`commands` are run with the run_command tool: add it to `tools`")
            if self.output:
                raise ValueError(
                    "a step with `tools` changes files with its tools; `output` is for a single call's answer"
                )
        if self.writes and self.output:
            raise ValueError("give either `writes` (a file) or `output` (a run artifact), not both")
        for rel in [*self.context, *([self.writes] if self.writes else [])]:
            _check_relative(rel)
        return self

    @property
    def is_model_step(self) -> bool:
        return self.prompt is not None

    @property
    def is_agent_step(self) -> bool:
        """An agent program (Aider, Claude Code, a script) does the work; its calls go through the gateway."""
        return self.agent is not None

    @property
    def call_limit(self) -> int:
        """An agent step's most model calls per attempt."""
        return self.max_calls if self.max_calls is not None else DEFAULT_AGENT_MAX_CALLS

    @property
    def uses_tools(self) -> bool:
        """A model step run by the built-in worker (a bounded loop of tool calls), not one call."""
        return self.tools is not None

    @property
    def turn_limit(self) -> int:
        return self.max_turns if self.max_turns is not None else DEFAULT_MAX_TURNS


class AgentCommand(_Model):
    """An agent program run as a step's worker (``agent = "aider ..."`` or ``{ cmd = "...", timeout_s = N }``)."""

    cmd: str = Field(min_length=1)
    """The command line, run with the shell in the workspace; ``{task_file}`` becomes the task file's path."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Seconds one attempt may run (then its process group is stopped: TERM, then KILL); default: the step's
    ``timeout_s``."""

    @field_validator("cmd")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip() or "\x00" in v:
            raise ValueError('give the agent program\'s command line (e.g. "aider --message-file {task_file}")')
        return v


def _parse_agent_command(value: Any) -> Any:
    return {"cmd": value} if isinstance(value, str) else value


DEFAULT_AGENT_MAX_CALLS = 20


def _check_relative(rel: str) -> None:
    if "\x00" in rel:
        raise ValueError("a path cannot contain a NUL byte")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts or not rel.strip():
        raise ValueError(f"{rel!r} must be a path inside the workspace (relative, without '..')")


_EVERY = re.compile(r"^every\s+(\d+)\s*(s|m|h|d)$")
_DAILY = re.compile(r"^daily\s+(\d{1,2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class Schedule:
    """``every 30m`` (an interval in seconds) or ``daily 09:30`` (a local wall-clock time)."""

    text: str
    interval_s: int | None = None
    daily_at: time | None = None

    @property
    def nominal_interval_s(self) -> int:
        return self.interval_s if self.interval_s is not None else 86_400


def parse_schedule(text: str) -> Schedule:
    s = text.strip().lower()
    if m := _EVERY.match(s):
        n = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86_400}[m.group(2)]
        if n < 10:
            raise ValueError("a schedule interval must be at least 10 seconds")
        return Schedule(text=text, interval_s=n)
    if m := _DAILY.match(s):
        hh, mm = int(m.group(1)), int(m.group(2))
        if hh > 23 or mm > 59:
            raise ValueError(f"{text!r}: the time must be HH:MM between 00:00 and 23:59")
        return Schedule(text=text, daily_at=time(hh, mm))
    raise ValueError(f'{text!r} is not a schedule; write "every 15m", "every 2h" or "daily 09:30"')


class AgentConfig(_Model):
    """One agent: a goal, a workspace, a ladder of tiers, caps, and steps (or a planner).

    An agent with neither ``steps`` nor ``verify`` is an *external* agent: a program the user already runs
    (Claude Code, Aider, an SDK script) that calls models through the gateway. It holds a ladder, a frontier
    policy and caps for that traffic, and the gateway options below."""

    goal: str = Field(min_length=1)
    """What the agent is for; every prompt starts with it."""
    workspace: str | None = None
    """Directory the agent works in (``~`` expanded; relative paths are relative to the config file); needed by
    agents with steps or a planner, optional for external agents."""
    schedule: str | None = None
    """"every 15m", "every 2h" or "daily 09:30"; unset means runs only on demand."""
    ladder: list[Tier] = Field(default_factory=lambda: list(TIERS))
    """Tiers to try, cheapest first."""
    frontier: FrontierPolicy = "ask"
    """ask: a keyboard approval before each frontier call; never: stop at the tier below; allow: no approval
    (refused for scheduled agents)."""
    attempts_per_tier: int = Field(default=2, ge=1, le=10)
    """Attempts within one tier before escalating."""
    caps: CapsConfig = Field(default_factory=CapsConfig)
    """Per-agent caps."""
    memory_tokens: int = Field(default=1500, ge=100, le=100_000)
    """Bound on the memory digest carried into each session."""
    tools: list[str] = Field(default_factory=list)
    """Commands a planner may use (planner mode: an agent with no steps)."""
    commands: dict[str, CommandGate] = Field(default_factory=dict)
    """Planner mode: named commands a planned step with tools may run with ``run_command``."""
    programs: dict[str, AgentCommand] = Field(default_factory=dict)
    """Planner mode: agent programs a planned ``agent`` step may run, by name (``{ aider = "aider ... {task_file}"
    }``); the plan names one and writes its task, the command line comes from here."""
    rules: str = ""
    """Standing instructions added after the goal in every prompt."""
    verify: list[GateSpec] = Field(default_factory=list)
    """Planner mode: gates the whole run must pass."""
    steps: list[StepConfig] = Field(default_factory=list)
    """The steps, in order; empty means planner mode."""
    enabled: bool = True
    """A disabled agent is never scheduled (and an external one's gateway traffic is refused)."""
    models: dict[str, str] = Field(default_factory=dict)
    """Gateway: model names a client asks for -> a tier alias (local, cheap, frontier, auto) or a catalog key
    (``provider:id``), e.g. ``{ "claude-sonnet-5-5" = "cheap" }``."""
    substitution: bool = True
    """Gateway: serve a model name that is neither a tier, a catalog key nor in ``models`` with ``auto`` (the
    lowest allowed tier); false refuses such requests instead."""
    max_output_tokens: int | None = Field(default=None, gt=0)
    """Gateway: the output ceiling injected when a client sends none, and the most a client may ask for
    (default: ``[gateway] max_output_tokens``)."""
    hold_open_s: float | None = Field(default=None, gt=0, le=3600)
    """Gateway: hold a request that needs a frontier approval open (with keep-alive pings) for up to this many
    seconds while a human decides, instead of refusing it at once."""
    gateway_port: int | None = Field(default=None, ge=1, le=65535)
    """Gateway: a loopback port bound to this agent, for clients that cannot send a key (its calls are recorded
    as authenticated by port)."""

    @field_validator("verify", mode="before")
    @classmethod
    def _gates(cls, v: Any) -> Any:
        if isinstance(v, (str, dict)):
            v = [v]
        return [_parse_gate(g) for g in v] if isinstance(v, list) else v

    @field_validator("commands", mode="before")
    @classmethod
    def _commands(cls, v: Any) -> Any:
        return _parse_commands(v)

    @field_validator("programs", mode="before")
    @classmethod
    def _programs(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {name: _parse_agent_command(cmd) for name, cmd in v.items()}
        return v

    @field_validator("workspace")
    @classmethod
    def _workspace(cls, v: str) -> str:
        if not v.strip() or "\x00" in v:
            raise ValueError("give the workspace directory (a path without NUL bytes)")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str | None) -> str | None:
        if v is not None:
            parse_schedule(v)
        return v

    @field_validator("ladder")
    @classmethod
    def _ladder(cls, v: list[Tier]) -> list[Tier]:
        if not v:
            raise ValueError("the ladder needs at least one tier: local, cheap or frontier")
        if len(set(v)) != len(v):
            raise ValueError("a tier appears twice in the ladder")
        if [t for t in TIERS if t in v] != v:
            raise ValueError("list tiers cheapest first: local, cheap, frontier")
        return v

    @model_validator(mode="after")
    def _shape(self) -> AgentConfig:
        if self.schedule and self.frontier == "allow":
            raise ValueError(
                'frontier = "allow" is refused for a scheduled agent: a frontier model is never invoked on a '
                'timer without approval; use frontier = "ask" or "never"'
            )
        names = [s.name for s in self.steps]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"step names must be unique; repeated: {', '.join(sorted(dupes))}")
        _check_commands(self.commands)
        for name in self.programs:
            if not COMMAND_NAME.match(name):
                raise ValueError(
                    f"programs: name {name!r}: use letters, digits, '-', '_' or '.' (up to 41), e.g. aider; a plan "
                    "names the program with it"
                )
        if self.commands and self.steps:
            raise ValueError(
                "the agent's `commands` are for planner mode (no steps); give a step with tools its own `commands`"
            )
        if self.programs and self.steps:
            raise ValueError("the agent's `programs` are for planner mode (no steps); give a step its own `agent`")
        if self.external:
            if self.schedule:
                raise ValueError(
                    "an external agent (no `steps`, no planner `verify`) has nothing to run on a schedule; add "
                    "steps, or remove `schedule`"
                )
            if self.tools or self.rules or self.commands or self.programs:
                raise ValueError(
                    "`tools`, `commands`, `programs` and `rules` need `steps` or a planner `verify` gate; an agent with neither "
                    "is an external agent, whose programs call models through the gateway"
                )
        elif self.workspace is None:
            raise ValueError("an agent with steps or a planner needs `workspace` (the directory it works in)")
        for name, target in self.models.items():
            if target not in (*TIERS, "auto"):
                try:
                    split_model_key(target)
                except ConfigError:
                    raise ValueError(
                        f"models.{name}: {target!r} is neither a tier (local, cheap, frontier, auto) nor a catalog "
                        "key (provider:id)"
                    ) from None
        return self

    @property
    def external(self) -> bool:
        """No steps and no planner gate: an agent that only calls models through the gateway."""
        return not self.steps and not self.verify

    @property
    def schedule_spec(self) -> Schedule | None:
        return parse_schedule(self.schedule) if self.schedule else None

    @property
    def planner_mode(self) -> bool:
        return not self.steps and bool(self.verify)


class TiersConfig(_Model):
    """Which models serve each tier, tried in order within a tier (``provider:id``)."""

    local: list[str] = Field(default_factory=list)
    cheap: list[str] = Field(default_factory=list)
    frontier: list[str] = Field(default_factory=list)
    no_tools: list[str] = Field(default_factory=list)
    """Tiers (``"local"``) or models (``"mlx:smollm2-135m"``) that cannot use tools at all: steps with ``tools``
    skip them. Other models get tools natively where their provider has tool calling, else as JSON in text."""

    @field_validator("local", "cheap", "frontier")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            try:
                split_model_key(key)
            except ConfigError as exc:  # pydantic reports ValueErrors with the file and the key
                raise ValueError(f"{exc.message}; {exc.hint}") from None
        return v

    @model_validator(mode="after")
    def _no_tools(self) -> TiersConfig:
        listed = {key for tier in TIERS for key in self.models(tier)}
        for entry in self.no_tools:
            if entry not in TIERS and entry not in listed:
                raise ValueError(
                    f"no_tools: {entry!r} is neither a tier ({', '.join(TIERS)}) nor a model listed under [tiers]"
                )
        return self

    def models(self, tier: Tier) -> list[str]:
        return list(getattr(self, tier))

    def can_use_tools(self, tier: Tier, key: str) -> bool:
        """False when ``no_tools`` names the tier or the model."""
        return tier not in self.no_tools and key not in self.no_tools


class BreakerConfig(_Model):
    """Runaway-breaker thresholds (the 136M-token pattern)."""

    rising_calls: int = Field(default=5, ge=2)
    """(a) Trip when input tokens per call rise across this many consecutive calls of an agent..."""
    max_output_ratio: float = Field(default=0.05, gt=0, le=1)
    """...while each call's output stays under this share of its input."""
    hour_share_of_day_cap: float = Field(default=0.5, gt=0, le=1)
    """(b) Trip when spend in the last hour exceeds this share of the agent's day cap."""
    same_failure_repeats: int = Field(default=3, ge=2)
    """(c) Escalate (and record an alarm) when the same gate fails with the same output this many times in a row at one tier."""


class RouterConfig(_Model):
    """Routing that learns from the ledger."""

    skip_after_failed_runs: int = Field(default=3, ge=1)
    """Skip a tier for a step whose gate failed there on each of the last K runs."""
    reprobe_every: int = Field(default=5, ge=2)
    """...but try it again every Nth run, and restore it when it passes."""


class LimitsConfig(_Model):
    """Size limits that keep prompts lean and outputs bounded."""

    max_context_file_bytes: int = Field(default=256_000, gt=0)
    """A context file larger than this is refused (never truncated)."""
    max_capture_bytes: int = Field(default=64_000, gt=0)
    """Output kept from each command or gate."""
    failure_excerpt_chars: int = Field(default=2_000, gt=0)
    """How much of a failing gate's output goes into the retry prompt."""
    max_concurrent_agents: int = Field(default=4, ge=1)
    """Agents that may run at once."""
    max_snapshot_bytes: int = Field(default=256_000_000, gt=0)
    """A run copies its workspace first so a failed run can restore it byte-for-byte; larger workspaces are refused."""
    snapshot_ignore: list[str] = Field(
        default_factory=lambda: [
            ".git",
            "node_modules",
            ".venv",
            "venv",
            "__pycache__",
            ".mypy_cache",
            ".pytest_cache",
            ".ruff_cache",
        ]
    )
    """Directory names left out of workspace snapshots (and so not restored after a failed run); the built-in
    worker's tools cannot read, list or write inside them."""
    max_tool_read_bytes: int = Field(default=32_000, gt=0)
    """Built-in worker: read_file refuses a larger file (never truncates it)."""
    max_tool_write_bytes: int = Field(default=128_000, gt=0)
    """Built-in worker: write_file and edit_file refuse to make a file larger than this."""
    max_tool_output_chars: int = Field(default=4_000, ge=200)
    """Built-in worker: the tail of a command's output that run_command returns (the rest is counted, not sent)."""
    tool_transcript_tokens: int = Field(default=3_000, ge=0)
    """Built-in worker: past turns kept in full in each turn's prompt, in estimated tokens; older tool outputs
    are cut to one line, so a turn's input stays bounded however long the loop runs."""


class GatewayConfig(_Model):
    """The local gateway (``supervisor gateway``; the daemon and the hosted TUI serve it too when this table is
    present): where it listens and the limits it enforces on every request."""

    host: str = "127.0.0.1"
    """Listen address. Anything but a loopback address needs ``allow_non_loopback = true``."""
    port: int = Field(default=7878, ge=0, le=65535)
    """Listen port (0: any free port)."""
    allow_non_loopback: bool = False
    """Listen on a non-loopback address (every request still needs a key; per-agent ports stay loopback)."""
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    """Largest request body accepted (Claude Code sends ~200 KB)."""
    max_output_tokens: int = Field(default=4096, gt=0)
    """Output ceiling injected when a client sends none, and the most a request may ask for (an agent's
    ``max_output_tokens`` overrides it)."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    """A client must send its whole request (headers and body) within this many seconds."""
    idle_timeout_s: float = Field(default=75.0, gt=0)
    """A kept-alive connection with no request for this long is closed."""
    upstream_timeout_s: float = Field(default=600.0, gt=0)
    """Most one forwarded call may take, start to end (a slow local model included)."""
    hold_open_max_s: float = Field(default=300.0, gt=0, le=3600)
    """Upper bound for an agent's ``hold_open_s`` (clients time out: Codex after 300 s idle)."""
    ping_interval_s: float = Field(default=10.0, gt=0)
    """Keep-alive pings while a request is held open."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the gateway; a request with any other ``Origin`` header is refused."""
    shutdown_grace_s: float = Field(default=10.0, ge=0)
    """On SIGTERM/SIGINT, requests in flight get this long to finish; then they are cancelled upstream and their
    holds settled (kept at the worst case: the provider may have billed them)."""


class ConfigFile(_Model):
    """The whole file."""

    offline: bool = False
    """Turn off every non-local provider."""
    catalog_dirs: list[str] = Field(default_factory=list)
    """Extra catalog directories (after the bundled one and $SUPERVISOR_HOME/models)."""
    local_usd_per_hour: float | None = Field(default=None, ge=0, le=MAX_USD, allow_inf_nan=False)
    """If set, local compute time is shown as a separate "local compute" figure (never mixed with spend)."""
    approval_timeout_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """How long a run waits for an approval before leaving it pending (None: the CLI default)."""
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    tiers: TiersConfig = Field(default_factory=TiersConfig)
    caps: CapsConfig = Field(default_factory=CapsConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    gateway: GatewayConfig | None = None
    """The local gateway; absent: only ``supervisor gateway`` serves it, with the defaults."""
    agents: dict[str, AgentConfig] = Field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# The loaded config


@dataclass(frozen=True)
class Config:
    """A validated config: the file's content plus the merged providers and resolved paths."""

    path: Path | None
    file: ConfigFile
    providers: dict[str, ProviderConfig]
    environ: Mapping[str, str]
    offline_override: bool = False  # offline because of --offline, not the file: kept across reloads

    @property
    def agents(self) -> dict[str, AgentConfig]:
        return self.file.agents

    @property
    def tiers(self) -> TiersConfig:
        return self.file.tiers

    @property
    def offline(self) -> bool:
        return self.file.offline

    def agent(self, name: str) -> AgentConfig:
        try:
            return self.file.agents[name]
        except KeyError:
            known = ", ".join(sorted(self.file.agents)) or "none"
            where = self.path or "the config"
            raise ConfigError(
                f"no agent named {name!r} in {where}", f"known agents: {known}; add one under [agents.{name}]"
            ) from None

    def workspace(self, name: str) -> Path:
        agent = self.agent(name)
        if agent.workspace is None:
            raise ConfigError(
                f"agent {name!r} has no workspace: it is an external agent (no steps), served by the gateway",
                f"give agents.{name} steps and a workspace to run it, or call models through `supervisor gateway`",
            )
        return self._path(agent.workspace, f"agent {name!r}: workspace")

    def catalog_dirs(self) -> list[Path]:
        return [self._path(d, "catalog_dirs") for d in self.file.catalog_dirs]

    def _path(self, text: str, key: str) -> Path:
        """A configured path: ``~`` expanded, relative to the config file's directory."""
        where = self.path or "the config"
        try:
            raw = Path(text).expanduser()
            if not raw.is_absolute():
                raw = (self.path.parent if self.path else Path.cwd()) / raw
            return raw.resolve()
        except (RuntimeError, ValueError, OSError) as exc:
            raise ConfigError(f"{where}: {key}: {text!r} is not a usable path ({exc})", "fix the path") from None

    def with_offline(self, offline: bool) -> Config:
        return Config(
            self.path, self.file.model_copy(update={"offline": offline}), self.providers, self.environ, offline
        )


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" in str(part) or str(part) in _GATE_KEYS:
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


_TYPE_HINTS = {
    "extra_forbidden": "unknown key: check the spelling (supervisor config check lists every problem)",
    "missing": "missing required key",
}


def _problems(exc: ValidationError, source: str) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for err in exc.errors():
        loc = _format_loc(err["loc"])
        msg = _TYPE_HINTS[err["type"]] if err["type"] in _TYPE_HINTS else str(err["msg"]).removeprefix("Value error, ")
        agent = ""
        if len(err["loc"]) >= 2 and err["loc"][0] == "agents":
            agent = f"agent {err['loc'][1]!r}: "
        line = f"{source}: {agent}{loc}: {msg}"
        if line not in seen:
            seen.add(line)
            problems.append(line)
    return problems


class ConfigProblems(ConfigError):
    """Every problem found in a config file, one line each."""

    def __init__(self, problems: list[str]) -> None:
        first = problems[0] if problems else "invalid config"
        more = f" (and {len(problems) - 1} more; run `supervisor config check`)" if len(problems) > 1 else ""
        super().__init__(first + more, "fix the key named above; `supervisor config check` prints every problem")
        self.problems = problems


def parse_config(data: Mapping[str, Any], source: str, path: Path | None, environ: Mapping[str, str]) -> Config:
    """Validate already-parsed TOML and merge it with the built-in providers and the environment."""
    try:
        file = ConfigFile.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigProblems(_problems(exc, source)) from None
    problems: list[str] = []
    providers = default_providers()
    providers.update(file.providers)
    if "ollama" in providers and providers["ollama"].kind == "ollama" and environ.get("OLLAMA_HOST"):
        providers["ollama"] = providers["ollama"].model_copy(update={"host": environ["OLLAMA_HOST"]})
    for tier in TIERS:
        for key in file.tiers.models(tier):
            provider, _ = split_model_key(key)
            if provider not in providers:
                problems.append(
                    f"{source}: tiers.{tier}: model {key!r} names provider {provider!r}, which is not configured "
                    f"(add [providers.{provider}] or use one of: {', '.join(sorted(providers))})"
                )
    ports: dict[int, str] = {}
    for name, agent in file.agents.items():
        if not AGENT_NAME.match(name):
            problems.append(f"{source}: agent {name!r}: name: use letters, digits, '-', '_' or '.' (up to 64)")
        if agent.gateway_port is not None:
            if agent.gateway_port in ports:
                problems.append(
                    f"{source}: agent {name!r}: gateway_port: {agent.gateway_port} is already agent "
                    f"{ports[agent.gateway_port]!r}'s"
                )
            ports[agent.gateway_port] = name
    gateway = file.gateway
    if gateway is not None and gateway.port in ports and gateway.port != 0:
        problems.append(f"{source}: gateway.port: {gateway.port} is also agent {ports[gateway.port]!r}'s gateway_port")
    if environ.get("SUPERVISOR_OFFLINE", "").lower() in {"1", "true", "yes"}:
        file = file.model_copy(update={"offline": True})
    if problems:
        raise ConfigProblems(problems)
    return Config(path=path, file=file, providers=providers, environ=environ)


def load_config(path: Path | None, environ: Mapping[str, str], *, required: bool = False) -> Config:
    """Load ``path`` (or, when it does not exist and is not required, an empty config with defaults)."""
    if path is None or not path.exists():
        if required:
            where = path or "supervisor.toml"
            raise ConfigError(
                f"config file {where} does not exist",
                "run `supervisor init` to write a starter config, or pass --config PATH",
            )
        return parse_config({}, "defaults", None, environ)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigProblems([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(data, str(path), path, environ)
