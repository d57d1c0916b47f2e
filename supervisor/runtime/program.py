"""Agent steps: an agent program (Aider, Claude Code, Codex, a script on an official SDK) does a step's work.

Its model calls go through the gateway and are served by the tier the ladder chose for the attempt; its work is
accepted only when the step's gates pass. One attempt, at one tier:

1. The workspace is snapshotted (incrementally). The step's ``task`` (and, on a retry, the last gate failure) is
   written to a file outside the workspace: ``{task_file}`` in the command, ``SUPERVISOR_TASK_FILE`` in its
   environment.
2. The gateway (the one this process hosts, or one started for the run) opens a door for the attempt: a key
   bound to (agent, run, step, attempt, tier) with the attempt's limits (``max_calls``, ``attempt_usd``,
   ``attempt_tokens``, the output ceiling) and an expiry, and a loopback port bound to that key for Ollama
   clients that send no key. Whatever model the program asks for, the attempt's tier serves it (a visible
   substitution); every call is reserved under every cap before it is sent.
3. The program runs in the workspace, in its own process group, with an environment that points every protocol
   at the gateway and holds no provider key (``child_environment``). Its output streams to the step log. A cap
   refused mid-attempt, a pause (a human, or the runaway breaker on the attempt's calls) stops it at once.
4. When it ends the door closes: the key is revoked, the port closed, a straggler's requests in flight
   cancelled, so a grandchild's later calls get 401. The gates decide; a failure restores the workspace byte for
   byte and the ladder retries (the failure appended to the task) or escalates, as for a model step.

A program that cannot start, never asks the gateway for a model, or only sends requests the gateway refuses
fails the step at once with a message saying so: another tier cannot fix that.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.catalog import ModelSpec, Tier
from supervisor.clock import utcnow
from supervisor.config import AgentConfig, Config, GatewayConfig, StepConfig
from supervisor.cost import format_usd, usd_to_micros, worst_case_micros
from supervisor.errors import SupervisorError
from supervisor.ledger import CapHit
from supervisor.runtime.events import (
    AgentStateChanged,
    Event,
    Notice,
    ProgramFinished,
    ProgramOutput,
    ProgramStarted,
)
from supervisor.runtime.process import CHILDREN_FILE, CommandResult, run_command
from supervisor.runtime.prompt import clean_failure
from supervisor.runtime.router import Candidate
from supervisor.runtime.steps import Attempt, attempt_snapshot, restore_attempt
from supervisor.runtime.workspace import WorkspaceError, resolve_inside
from supervisor.secrets import StreamScrubber

if TYPE_CHECKING:
    from supervisor.runtime.ladder import ModelStep
    from supervisor.runtime.run import RunState
    from supervisor.runtime.runtime import Runtime

# Credentials an agent program could use to reach a provider past the gateway: never in its environment (with
# every configured provider's ``api_key_env``, and any variable holding one of their values).
PROVIDER_KEY_VARS = frozenset(
    {
        "OPENAI_API_KEY",
        "OPENAI_ADMIN_KEY",
        "AZURE_OPENAI_API_KEY",
        "AZURE_API_KEY",
        "AZURE_OPENAI_AD_TOKEN",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "CLAUDE_CODE_OAUTH_TOKEN",
        "CODEX_API_KEY",
        "DEEPSEEK_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GENERATIVE_AI_API_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "VERTEXAI_API_KEY",
        "OPENROUTER_API_KEY",
        "MISTRAL_API_KEY",
        "CODESTRAL_API_KEY",
        "GROQ_API_KEY",
        "TOGETHER_API_KEY",
        "TOGETHERAI_API_KEY",
        "FIREWORKS_API_KEY",
        "FIREWORKS_AI_API_KEY",
        "XAI_API_KEY",
        "COHERE_API_KEY",
        "CO_API_KEY",
        "PERPLEXITY_API_KEY",
        "PERPLEXITYAI_API_KEY",
        "CEREBRAS_API_KEY",
        "DEEPINFRA_API_KEY",
        "NVIDIA_NIM_API_KEY",
        "HUGGINGFACE_API_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "REPLICATE_API_KEY",
        "REPLICATE_API_TOKEN",
        "MOONSHOT_API_KEY",
        "DASHSCOPE_API_KEY",
        "ZHIPUAI_API_KEY",
        "ZAI_API_KEY",
        "MINIMAX_API_KEY",
        "NOVITA_API_KEY",
        "SAMBANOVA_API_KEY",
        "AI21_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_BEARER_TOKEN_BEDROCK",
        "OLLAMA_API_KEY",
        "SUPERVISOR_GATEWAY_KEY",
    }
)
LOOPBACK_NO_PROXY = ("127.0.0.1", "localhost", "::1")
OUTPUT_FLUSH_S = 0.25  # the step log gets the program's output at most this late
OUTPUT_FLUSH_BYTES = 4096
PARTIAL_LINE_TICKS = 4  # a line without its end (a prompt, a progress bar) is shown after this many flushes
PAUSE_POLL_S = 0.5  # a pause made in another process is seen within this
EXPIRY_GRACE_S = 60.0  # the key expires this long after the attempt's timeout, even if we never revoke it
NOT_FOUND_EXITS = (126, 127)  # the shell's "not executable" and "command not found"
KEY_CAP_NAMES = {"key usd": "attempt_usd", "key tokens": "attempt_tokens", "key calls": "max_calls"}


# ----------------------------------------------------------------------------------------------------------
# What an attempt needs from a gateway (``supervisor.gateway.server.Gateway`` provides it)


@dataclass(frozen=True, slots=True)
class AttemptGrant:
    """What one attempt may do through the gateway: whose it is, which tier serves it, and its limits."""

    agent: str
    run_id: int
    step: str
    attempt: int
    tier: Tier
    expires_at: datetime
    max_calls: int | None = None
    max_micros: int | None = None
    max_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass
class AttemptWatch:
    """What the gateway saw of an attempt's key while it lived (the gateway writes, the attempt reads).

    ``stop`` is set when the program must stop now: a cap refused one of its calls, or its agent was paused."""

    key_id: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    requests: int = 0  # every request made with the key (listing models included)
    model_requests: int = 0  # requests that asked for a model (got as far as routing)
    refusals: list[str] = field(default_factory=list)
    refused: int = 0
    cap: CapHit | None = None
    stop_reason: str = ""
    paused: bool = False
    inflight: set[asyncio.Task[Any]] = field(default_factory=set)

    def note_refusal(self, status: int, message: str) -> None:
        self.refused += 1
        if len(self.refusals) < 10:
            self.refusals.append(f"{status}: {message}")

    def cap_reached(self, hit: CapHit) -> None:
        if self.cap is None:
            self.cap = hit
            self.stop_reason = f"a cap was reached: {hit.describe()}"
        self.stop.set()

    def pause(self, reason: str) -> None:
        if not self.paused:
            self.paused = True
            self.stop_reason = self.stop_reason or f"the agent was paused: {reason}"
        self.stop.set()


@dataclass(frozen=True, slots=True)
class AttemptDoor:
    """An attempt's way in: its key (shown to the program, never recorded), the gateway's URL, and a loopback port
    bound to the key (for clients that cannot send one)."""

    key_id: int
    token: str
    prefix: str
    url: str
    port_url: str
    watch: AttemptWatch


class AttemptGateway(Protocol):
    """A gateway serving in this process: it opens and closes attempts' doors."""

    async def open_attempt(self, grant: AttemptGrant) -> AttemptDoor: ...

    async def close_attempt(self, door: AttemptDoor) -> None: ...


# Starts a gateway for a run when the process does not host one (``supervisor run``); closed when the run ends.
GatewayFactory = Callable[["Runtime"], AbstractAsyncContextManager[AttemptGateway]]


# ----------------------------------------------------------------------------------------------------------
# The program's environment, command line and task


def child_environment(
    base: Mapping[str, str],
    door: AttemptDoor,
    *,
    remove: Iterable[str],
    secret_values: Iterable[str],
    model: str,
    task_file: Path,
    agent: str,
    run_id: int,
    step: str,
    attempt: int,
    tier: str,
) -> dict[str, str]:
    """The parent's environment minus every provider credential, plus variables that point every protocol the
    program may speak at the gateway, with the attempt's key: ``openai.OpenAI()`` and ``anthropic.Anthropic()``
    built with no arguments, LiteLLM (Aider), Goose, Claude Code and an Ollama client all land there."""
    dropped = set(PROVIDER_KEY_VARS) | set(remove)
    values = {v for v in secret_values if v}
    env = {k: v for k, v in base.items() if k not in dropped and v not in values}
    key = door.token
    v1 = f"{door.url}/v1"
    env.update(
        {
            "OPENAI_BASE_URL": v1,  # the openai SDK, Codex
            "OPENAI_API_BASE": v1,  # LiteLLM (Aider) and older clients
            "OPENAI_API_KEY": key,
            "OPENAI_HOST": door.url,  # Goose (its path is OPENAI_BASE_PATH, v1/chat/completions by default)
            "ANTHROPIC_BASE_URL": door.url,  # the anthropic SDK, Claude Code
            "ANTHROPIC_API_KEY": key,
            "ANTHROPIC_AUTH_TOKEN": key,
            "OLLAMA_HOST": door.port_url,  # a port bound to this attempt: no key needed
            "OLLAMA_API_KEY": key,  # clients that can send one (the ollama SDK sends it as a bearer token)
            "SUPERVISOR_GATEWAY_URL": door.url,
            "SUPERVISOR_GATEWAY_KEY": key,
            "SUPERVISOR_MODEL": model,
            "SUPERVISOR_TIER": tier,
            "SUPERVISOR_TASK_FILE": str(task_file),
            "SUPERVISOR_AGENT": agent,
            "SUPERVISOR_RUN_ID": str(run_id),
            "SUPERVISOR_STEP": step,
            "SUPERVISOR_ATTEMPT": str(attempt),
        }
    )
    for name in ("NO_PROXY", "no_proxy"):  # a configured proxy must not carry loopback calls (or the key) away
        parts = [p.strip() for p in env.get(name, "").split(",") if p.strip()]
        env[name] = ",".join([*parts, *(h for h in LOOPBACK_NO_PROXY if h not in parts)])
    return env


def command_line(cmd: str, task_file: Path, model: str) -> str:
    """The configured command with ``{task_file}`` and ``{model}`` filled in (shell-quoted); other braces stay."""
    return cmd.replace("{task_file}", shlex.quote(str(task_file))).replace("{model}", shlex.quote(model))


def task_text(step: StepConfig, failure: str | None, *, previous: str) -> str:
    """The task file: the step's task, then (on a retry) how the last attempt failed."""
    text = (step.task or "").strip()
    if failure:
        note = (
            f"The previous attempt ({previous}) did not pass the step's checks, and the workspace was put back as "
            f"it was before it. What failed:\n\n{failure.strip()}"
        )
        text = f"{text}\n\n---\n{note}" if text else note
    return text + "\n"


def output_ceiling(config: Config, agent: AgentConfig, step: StepConfig) -> int:
    """The most output one call of the program may ask for: the step's ``max_output_tokens`` when set, else the
    agent's gateway ceiling, else ``[gateway] max_output_tokens``."""
    if "max_output_tokens" in step.model_fields_set:
        return step.max_output_tokens
    return agent.max_output_tokens or (config.file.gateway or GatewayConfig()).max_output_tokens


def attempt_estimate(
    config: Config, agent: AgentConfig, step: StepConfig, spec: ModelSpec, at: datetime
) -> tuple[int, str]:
    """A frontier approval's estimate for one attempt: the per-call worst case (a full context window and the
    output ceiling) times ``max_calls``, bounded by ``attempt_usd``; and the sentence that says so."""
    output = min(output_ceiling(config, agent, step), spec.max_output_tokens)
    per_call = worst_case_micros(spec, max(spec.context_window - output, 0), output, at)
    calls = step.call_limit
    total = per_call * calls
    text = (
        f"agent program: up to {calls} call(s) x {format_usd(per_call, places=4)} worst case per call "
        f"({spec.context_window - output:,} prompt + {output:,} output tokens) = {format_usd(total, places=4)}"
    )
    if step.attempt_usd is not None:
        cap = usd_to_micros(step.attempt_usd)
        text += f"; attempt cap {format_usd(cap, places=4)}"
        total = min(total, cap)
    return total, text


def program_summary(event: ProgramFinished) -> str:
    """How an agent step's program ended and what its calls used, in one line (the CLI log and the TUI)."""
    if event.stopped:
        how = f"stopped after {event.seconds:.1f}s ({event.stopped})"
    elif event.timed_out:
        how = f"timed out after {event.seconds:.1f}s"
    else:
        how = f"exited {event.exit_code} after {event.seconds:.1f}s"
    cost = format_usd(event.cost_micros)
    if event.unpriced_calls:
        cost += f" + {event.unpriced_calls} unpriced"
    refused = f", {event.refused} refused" if event.refused else ""
    served = f" on {', '.join(event.served)}" if event.served else ""
    return (
        f"{event.tier} attempt {event.attempt}: agent program {how}: {event.calls} call(s){refused}{served}, "
        f"{event.input_tokens} in / {event.output_tokens} out, {cost}"
    )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:60] or "step"


# ----------------------------------------------------------------------------------------------------------
# The step log: the program's output as it arrives


class OutputPump:
    """Turns the program's output bytes into ``ProgramOutput`` events: decoded, scrubbed of known secrets (a key
    split across two reads is caught too: the scrubber holds back what could be the start of one), in whole
    lines at most ``OUTPUT_FLUSH_S`` late (a partial line, such as a prompt, a little later), up to ``limit``
    characters per attempt."""

    def __init__(self, publish: Callable[[str], None], scrubber: StreamScrubber, limit: int) -> None:
        self.publish = publish
        self.scrubber = scrubber
        self.limit = limit
        self.sent = 0
        self.hidden = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._timer: asyncio.TimerHandle | None = None
        self._partial_ticks = 0

    def feed(self, chunk: bytes) -> None:
        self._buffer += self.scrubber.feed(self._decoder.decode(chunk))
        if len(self._buffer) >= OUTPUT_FLUSH_BYTES:
            self._emit(len(self._buffer))
        elif self._buffer and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(OUTPUT_FLUSH_S, self._tick)

    def _tick(self) -> None:
        self._timer = None
        lines = self._buffer.rfind("\n") + 1
        if lines:
            self._partial_ticks = 0
            self._emit(lines)
        elif self._buffer:
            self._partial_ticks += 1
            if self._partial_ticks >= PARTIAL_LINE_TICKS:
                self._partial_ticks = 0
                self._emit(len(self._buffer))
        if self._buffer:
            self._timer = asyncio.get_running_loop().call_later(OUTPUT_FLUSH_S, self._tick)

    def _emit(self, cut: int) -> None:
        text, self._buffer = self._buffer[:cut], self._buffer[cut:]
        room = self.limit - self.sent
        if len(text) > room:
            self.hidden += len(text) - max(room, 0)
            text = text[: max(room, 0)]
        if text:
            self.sent += len(text)
            self.publish(text)

    def close(self) -> None:
        """The program has ended: everything left, the scrubber's held-back tail included."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buffer += self.scrubber.feed(self._decoder.decode(b"", final=True)) + self.scrubber.flush()
        self._emit(len(self._buffer))
        if self.hidden:
            self.publish(f"\n[{self.hidden:,} more characters of output not shown]\n")
            self.hidden = 0


# ----------------------------------------------------------------------------------------------------------
# One attempt


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """What an attempt's key was used for, from the ledger."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_micros: int = 0
    unpriced_calls: int = 0
    served: tuple[str, ...] = ()
    simulated: bool = False


class Programs:
    """Runs the attempts of agent steps for ``runtime`` (its config, ledger and gateway are read at each call)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def attempt(
        self, walk: ModelStep, tier: Tier, candidate: Candidate, attempt: int, failure: str | None
    ) -> Attempt:
        """One attempt: the program in a snapshot of the workspace, then the gates; restored unless they pass."""
        rt = self.runtime
        state, step = walk.state, walk.step
        assert step.agent is not None
        limits = rt.config.file.limits
        try:
            gateway = await self._gateway(state)
        except SupervisorError as exc:
            return self._broken(state, step.name, f"{exc.message}; {exc.hint}" if exc.hint else exc.message)
        timeout_s = step.agent.timeout_s or step.timeout_s
        grant = AttemptGrant(
            agent=state.agent,
            run_id=state.run_id,
            step=step.name,
            attempt=attempt,
            tier=tier,
            # the gateway checks keys against the wall clock (a runtime's clock may be a test's fixed one)
            expires_at=utcnow() + timedelta(seconds=timeout_s + EXPIRY_GRACE_S),
            max_calls=step.call_limit,
            max_micros=usd_to_micros(step.attempt_usd) if step.attempt_usd is not None else None,
            max_tokens=step.attempt_tokens,
            max_output_tokens=output_ceiling(rt.config, state.cfg, step),
        )
        tasks = rt.home / "tasks"
        tasks.mkdir(parents=True, exist_ok=True)
        task_file = tasks / f"{state.run_id}-{_safe_name(step.name)}.md"
        previous = f"attempt {attempt - 1}" if attempt > 1 else "an earlier attempt"
        # Reduced as a model step's retry prompt carries it, at most failure_excerpt_chars.
        cleaned = clean_failure(failure, state.workspace, rt.ledger.redactor, limits.failure_excerpt_chars)
        task_file.write_text(task_text(step, cleaned, previous=previous), encoding="utf-8")
        snapshot = attempt_snapshot(rt, state)
        door: AttemptDoor | None = None
        try:
            door = await gateway.open_attempt(grant)
            result = await self._run(state, step, tier, attempt, door, task_file, timeout_s)
        except BaseException:
            if door is not None:
                await gateway.close_attempt(door)
            snapshot.restore()
            snapshot.discard()
            task_file.unlink(missing_ok=True)
            raise
        await gateway.close_attempt(door)  # the key dies with the attempt: a straggler's next call gets 401
        task_file.unlink(missing_ok=True)
        watch = door.watch
        usage = self._usage(door.key_id)
        rt.bus.publish(
            ProgramFinished(
                agent=state.agent,
                run_id=state.run_id,
                step=step.name,
                tier=tier,
                attempt=attempt,
                exit_code=result.exit_code,
                timed_out=result.timed_out,
                stopped=watch.stop_reason if result.stopped else "",
                seconds=round(result.seconds, 3),
                calls=usage.calls,
                refused=watch.refused,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cost_micros=usage.cost_micros,
                unpriced_calls=usage.unpriced_calls,
                served=list(usage.served),
                simulated=usage.simulated,
            )
        )
        verdict = await self._judge(state, step, tier, attempt, result, watch, usage)
        if verdict.kind != "judged" or not verdict.passed:
            restore_attempt(rt, state, step.name, snapshot)
        snapshot.discard()
        return verdict

    async def _gateway(self, state: RunState) -> AttemptGateway:
        """The gateway this process hosts, else one started for this run (closed when the run ends)."""
        rt = self.runtime
        if rt.gateway is not None:
            return rt.gateway
        if state.gateway is None:
            if rt.gateway_factory is None:
                raise SupervisorError(
                    "an agent step needs the gateway, and this process cannot serve one",
                    "run the agent with `supervisor run`, the daemon or the TUI",
                )
            stack = AsyncExitStack()
            state.gateway = await stack.enter_async_context(rt.gateway_factory(rt))
            state.gateway_exit = stack
        return state.gateway

    async def _run(
        self,
        state: RunState,
        step: StepConfig,
        tier: Tier,
        attempt: int,
        door: AttemptDoor,
        task_file: Path,
        timeout_s: float,
    ) -> CommandResult:
        """The program itself, with its output streamed and a watch for pauses; the door stays open throughout."""
        rt = self.runtime
        assert step.agent is not None
        limits = rt.config.file.limits
        watch = door.watch
        model = tier
        key_names = [p.api_key_env for p in rt.config.providers.values() if p.api_key_env]
        environ = {**_process_environ(), **rt.environ}
        env = child_environment(
            environ,
            door,
            remove=key_names,
            secret_values=[environ[n] for n in key_names if len(environ.get(n, "")) >= 8],
            model=model,
            task_file=task_file,
            agent=state.agent,
            run_id=state.run_id,
            step=step.name,
            attempt=attempt,
            tier=tier,
        )
        command = command_line(step.agent.cmd, task_file, model)
        pump = OutputPump(
            lambda text: rt.bus.publish(
                ProgramOutput(agent=state.agent, run_id=state.run_id, step=step.name, attempt=attempt, text=text)
            ),
            StreamScrubber(rt.ledger.redactor),
            limits.max_capture_bytes,
        )

        def started(pid: int) -> None:
            rt.bus.publish(
                ProgramStarted(
                    agent=state.agent,
                    run_id=state.run_id,
                    step=step.name,
                    tier=tier,
                    attempt=attempt,
                    command=command,
                    pid=pid,
                    key_prefix=door.prefix,
                    gateway_url=door.url,
                    model=model,
                )
            )

        def on_event(event: Event) -> None:
            if isinstance(event, AgentStateChanged) and event.agent == state.agent and event.state == "paused":
                watch.pause(event.reason or "paused")

        unsubscribe = rt.bus.subscribe(on_event)
        poller = asyncio.ensure_future(self._poll_pause(state.agent, watch))
        try:
            return await run_command(
                command,
                state.workspace,
                timeout_s=timeout_s,
                capture_bytes=limits.max_capture_bytes,
                env=env,
                registry=rt.processes,
                agent=state.agent,
                group_file=state.snapshot.directory / CHILDREN_FILE,
                on_output=pump.feed,
                stop=watch.stop,
                on_start=started,
            )
        finally:
            unsubscribe()
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            pump.close()

    async def _poll_pause(self, agent: str, watch: AttemptWatch) -> None:
        """A pause made in another process (``supervisor pause``) stops the program too."""
        while not watch.stop.is_set():
            row = self.runtime.ledger.agent(agent)
            if row is not None and row["state"] == "paused":
                watch.pause(str(row["state_reason"] or "paused"))
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.stop.wait(), PAUSE_POLL_S)

    def _usage(self, key_id: int) -> KeyUsage:
        row = self.runtime.ledger.query(
            "SELECT count(*), coalesce(sum(coalesce(input_uncached, 0) + coalesce(cache_read, 0) + "
            "coalesce(cache_write_5m, 0) + coalesce(cache_write_1h, 0)), 0), coalesce(sum(output), 0), "
            "coalesce(sum(cost_micros), 0), coalesce(sum(1 - priced), 0), coalesce(max(simulated), 0) "
            "FROM calls WHERE key_id = ?",
            (key_id,),
        )[0]
        served = [
            str(r[0])
            for r in self.runtime.ledger.query(
                "SELECT provider || ':' || model FROM calls WHERE key_id = ? AND error_class IS NULL "
                "GROUP BY provider, model ORDER BY min(id)",
                (key_id,),
            )
        ]
        return KeyUsage(
            calls=int(row[0]),
            input_tokens=int(row[1]),
            output_tokens=int(row[2]),
            cost_micros=int(row[3]),
            unpriced_calls=int(row[4]),
            served=tuple(served),
            simulated=bool(row[5]),
        )

    async def _judge(
        self,
        state: RunState,
        step: StepConfig,
        tier: Tier,
        attempt: int,
        result: CommandResult,
        watch: AttemptWatch,
        usage: KeyUsage,
    ) -> Attempt:
        """How the attempt ended: stopped by a cap or a pause, a program that never worked, or the gates' verdict."""
        rt = self.runtime
        if watch.cap is not None:
            hit = watch.cap
            if hit.cap in KEY_CAP_NAMES:
                hit = replace(hit, cap=f"{KEY_CAP_NAMES[hit.cap]} (step {step.name}, attempt {attempt})")
            return Attempt("deferred", cap=hit, calls=usage.calls)
        row = rt.ledger.agent(state.agent)
        if watch.paused or (row is not None and row["state"] == "paused"):
            reason = watch.stop_reason or f"the agent was paused: {row['state_reason'] if row else ''}"
            return Attempt("paused", detail=reason, calls=usage.calls)
        output = rt.ledger.redactor.scrub(result.output)
        summary = rt.ledger.redactor.scrub(result.summary())
        refusals = ""
        if watch.refusals:
            refusals = "\nthe gateway refused: " + "; ".join(rt.ledger.redactor.scrub(r)[:300] for r in watch.refusals)
        never_asked = watch.model_requests == 0
        if result.exit_code in NOT_FOUND_EXITS and never_asked:
            return self._broken(
                state,
                step.name,
                f"step {step.name!r}: the agent program could not be started (exit {result.exit_code}: the shell "
                f"found no such command, or it is not executable); check agent.cmd and PATH\n{summary}",
            )
        if not result.ok:
            why = "timed out" if result.timed_out else "stopped" if result.stopped else f"exited {result.exit_code}"
            detail = f"the agent program {why}\n{summary}{refusals}"
            if never_asked:
                return self._broken(state, step.name, self._never_asked(step, why, watch, summary, refusals))
            return Attempt("judged", passed=False, detail=detail, calls=usage.calls, rising_checked=True)
        answer = output
        if step.writes:
            try:
                path = resolve_inside(state.workspace, step.writes)
                answer = path.read_text(encoding="utf-8") if path.is_file() else ""
            except (OSError, UnicodeDecodeError, WorkspaceError):
                answer = ""
        passed, detail = await rt.steps.run_gates(
            state, step.name, step.verify, answer=answer, tier=tier, attempt=attempt
        )
        if not passed and never_asked:
            return self._broken(
                state,
                step.name,
                self._never_asked(step, f"exited 0 ({detail.splitlines()[0]} failed)", watch, summary, refusals),
            )
        if not passed and refusals:
            detail += refusals
        return Attempt("judged", passed=passed, detail=detail, calls=usage.calls, rising_checked=True)

    def _never_asked(self, step: StepConfig, why: str, watch: AttemptWatch, summary: str, refusals: str) -> str:
        if watch.requests == 0:
            return (
                f"step {step.name!r}: the agent program {why} without calling the gateway: point it at the "
                "gateway's variables (OPENAI_BASE_URL, ANTHROPIC_BASE_URL, OLLAMA_HOST, SUPERVISOR_MODEL) and give "
                f"it the task ({{task_file}}); no tier can fix this\n{summary}"
            )
        return (
            f"step {step.name!r}: the agent program {why}, and the gateway refused every request it made: it speaks "
            f"a protocol or route the gateway does not serve; no tier can fix this{refusals}\n{summary}"
        )

    def _broken(self, state: RunState, step: str, message: str) -> Attempt:
        self.runtime.bus.publish(Notice(agent=state.agent, run_id=state.run_id, message=message, level="error"))
        return Attempt("broken", detail=message)


def _process_environ() -> dict[str, str]:
    import os

    return dict(os.environ)
