"""Events: frozen, past-tense facts the runtime emits. It never draws; views subscribe.

Every event is written to the ledger's ``events`` table (so a TUI in another process can follow it) and handed
to in-process subscribers (the TUI when it hosts the runtime, the CLI's printer). ``TextStreamed`` is the one
exception: model text as it arrives goes to in-process subscribers only, because the full answer is recorded
once the call ends.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from supervisor.clock import iso, utcnow

if TYPE_CHECKING:
    from supervisor.ledger import Ledger
    from supervisor.ledger.ledger import PendingEvent
    from supervisor.secrets import Redactor


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base: which agent and run it concerns, and when."""

    kind: ClassVar[str] = "event"
    persist: ClassVar[bool] = True
    agent: str | None = None
    run_id: int | None = None
    at: datetime = field(default_factory=utcnow)

    def data(self) -> dict[str, Any]:
        names, values = _data_fields(type(self))
        return {
            name: value if type(value) in _SCALARS else _plain(value)
            for name, value in zip(names, values(self), strict=True)
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "event": self.kind,
            "at": iso(self.at),
            "agent": self.agent,
            "run_id": self.run_id,
            **self.data(),
        }


_DATA_FIELDS: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _data_fields(cls: type[Event]) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    """An event class's data fields, in order, and a getter of their values as a tuple (``dataclasses.fields``
    and a ``getattr`` per field cost more than the rest of publishing an event)."""
    known = _DATA_FIELDS.get(cls)
    if known is None:
        names = tuple(f.name for f in fields(cls) if f.name not in ("agent", "run_id", "at"))
        getter = operator.attrgetter(*names) if len(names) > 1 else lambda e: tuple(getattr(e, n) for n in names)
        known = _DATA_FIELDS[cls] = (names, getter)
    return known


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    trigger: str
    steps: list[str]
    simulated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    outcome: str  # success | failed | exhausted | denied | deferred | waiting_approval | paused | cancelled
    reason: str = ""
    cost_micros: int = 0
    unpriced_calls: int = 0
    calls: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted(Event):
    kind: ClassVar[str] = "step_started"
    step: str
    step_kind: str  # run | model | plan


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFinished(Event):
    kind: ClassVar[str] = "step_finished"
    step: str
    outcome: str  # passed | failed | exhausted | denied | deferred | waiting_approval | skipped
    tier: str | None = None
    model: str | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandFinished(Event):
    """A tier-0 command (no model) ran."""

    kind: ClassVar[str] = "command_finished"
    step: str
    command: str
    exit_code: int | None
    timed_out: bool
    output: str
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStarted(Event):
    kind: ClassVar[str] = "call_started"
    step: str
    tier: str
    model: str
    attempt: int
    prompt_tokens: int
    max_output_tokens: int
    reserved_micros: int
    simulated: bool = False
    turn: int | None = None  # the built-in worker's turn (None: a single-call step)


@dataclass(frozen=True, slots=True, kw_only=True)
class TextStreamed(Event):
    """A piece of model output as it arrives (in-process only)."""

    kind: ClassVar[str] = "text_streamed"
    persist: ClassVar[bool] = False
    step: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecorded(Event):
    kind: ClassVar[str] = "call_recorded"
    call_id: int
    step: str
    tier: str
    model: str
    attempt: int
    input_uncached: int | None
    cache_read: int | None
    cache_write: int | None
    output: int | None
    cost_micros: int | None
    priced: bool
    latency_s: float | None
    error_class: str | None = None
    error: str = ""
    simulated: bool = False
    output_excerpt: str = ""  # the start of the answer, so a view attached to a daemon sees what the model said
    turn: int | None = None  # the built-in worker's turn (None: a single-call step)
    requested_model: str | None = None  # gateway calls: the model name the client asked for
    via: str = "runtime"  # "runtime" or "gateway"
    finish_reason: str | None = None  # "stop", "length", "looping" (stopped by the repetition guard), ...


@dataclass(frozen=True, slots=True, kw_only=True)
class GateChecked(Event):
    """One verify gate ran (``passed`` says how it went)."""

    kind: ClassVar[str] = "gate_checked"
    step: str
    gate: str
    passed: bool
    output: str
    tier: str | None = None
    attempt: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class StepVerified(Event):
    kind: ClassVar[str] = "step_verified"
    step: str
    tier: str | None
    model: str | None
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkspaceRestored(Event):
    kind: ClassVar[str] = "workspace_restored"
    step: str | None
    files_restored: int
    files_removed: int
    scope: str  # attempt | run | crash


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalated(Event):
    kind: ClassVar[str] = "escalated"
    step: str
    from_tier: str | None
    to_tier: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TierSkipped(Event):
    kind: ClassVar[str] = "tier_skipped"
    step: str
    tier: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationRequested(Event):
    """A frontier call is waiting for a human's approval."""

    kind: ClassVar[str] = "escalation_requested"
    approval_id: int
    step: str
    model: str
    reason: str
    est_cold_micros: int | None
    est_warm_micros: int | None
    caps_left: dict[str, Any]
    simulated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDecided(Event):
    kind: ClassVar[str] = "approval_decided"
    approval_id: int
    approved: bool
    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentDeferred(Event):
    kind: ClassVar[str] = "agent_deferred"
    step: str | None
    reason: str
    cap: str | None = None
    resets_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStateChanged(Event):
    kind: ClassVar[str] = "agent_state"
    state: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerTripped(Event):
    """The runaway breaker paused an agent; ``evidence`` is what it saw."""

    kind: ClassVar[str] = "breaker_tripped"
    rule: str  # rising_input | hourly_spend | repeated_failure
    message: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestWritten(Event):
    kind: ClassVar[str] = "digest_written"
    path: str
    tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRecorded(Event):
    kind: ClassVar[str] = "plan_recorded"
    tier: str
    model: str
    valid: bool
    error: str
    steps: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnFinished(Event):
    """One turn of the built-in worker: the model's call (one ledger call) and the tools it ran.

    ``tools`` holds one entry per call: ``tool``, ``arguments`` (long values cut short), ``result`` (an
    excerpt) and ``error`` (the call was refused or failed). ``note`` is what the loop told the model after
    the results (e.g. why its reply was not a valid call)."""

    kind: ClassVar[str] = "turn_finished"
    step: str
    tier: str
    model: str
    attempt: int
    turn: int
    max_turns: int
    call_id: int
    protocol: str  # native | text
    tools: list[dict[str, Any]]
    text: str = ""
    note: str = ""
    input_tokens: int | None = None  # every prompt token: uncached, cache read and cache write
    output_tokens: int | None = None
    cost_micros: int | None = None
    priced: bool = True
    simulated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerFinished(Event):
    """The built-in worker's loop ended (the gates decide next): how, after how many turns."""

    kind: ClassVar[str] = "worker_finished"
    step: str
    tier: str
    model: str
    attempt: int
    turns: int
    end: str  # finished | answered | max_turns | window | call_failed | deferred | paused | not_sent
    summary: str = ""
    files_changed: list[str] = field(default_factory=list)
    input_bound_tokens: int | None = None  # no turn's request was larger (estimated tokens; see runtime.transcript)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgramStarted(Event):
    """An agent step's program started for one attempt, with a gateway key bound to the attempt's tier."""

    kind: ClassVar[str] = "program_started"
    step: str
    tier: str
    attempt: int
    command: str
    pid: int
    key_prefix: str  # the attempt key's display prefix (never the key)
    gateway_url: str
    model: str  # what the program is told to ask for (SUPERVISOR_MODEL)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgramOutput(Event):
    """What an agent step's program printed (stdout and stderr), in pieces as it arrives, secrets scrubbed."""

    kind: ClassVar[str] = "program_output"
    step: str
    attempt: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgramFinished(Event):
    """An agent step's program ended (or was stopped): how, and what its calls through the gateway used."""

    kind: ClassVar[str] = "program_finished"
    step: str
    tier: str
    attempt: int
    exit_code: int | None
    timed_out: bool
    stopped: str  # why it was stopped early ("" when it ended by itself)
    seconds: float
    calls: int  # model calls recorded under the attempt's key
    refused: int  # requests the gateway refused
    input_tokens: int  # every prompt token: uncached, cache read and cache write
    output_tokens: int
    cost_micros: int
    unpriced_calls: int = 0
    served: list[str] = field(default_factory=list)  # the models that answered (provider:id)
    simulated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSubstituted(Event):
    """The gateway served a request with another model than the client asked for (never silently)."""

    kind: ClassVar[str] = "model_substituted"
    requested: str
    served: str
    tier: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayRefused(Event):
    """The gateway refused a request before forwarding it (a cap, an approval, offline, the breaker, a policy)."""

    kind: ClassVar[str] = "gateway_refused"
    requested: str
    reason: str
    status: int
    approval_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Notice(Event):
    """Something worth telling the user that is not an outcome (a retry, a recovered crash, a reload)."""

    kind: ClassVar[str] = "notice"
    message: str
    level: str = "info"


Subscriber = Callable[[Event], None]


class EventBus:
    """Persists events to the ledger and fans them out to in-process subscribers."""

    def __init__(self, ledger: Ledger | None) -> None:
        self._ledger = ledger
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: Event) -> None:
        """Scrub known secrets from every text field first: subscribers (the CLI log, the TUI) see what the ledger
        stores, never a key a model or a gate echoed back."""
        event = self.prepare(event)
        row = self.row(event)
        if row is not None and self._ledger is not None:
            self._ledger.append_event(row.kind, row.data, agent=row.agent, run_id=row.run_id, at=row.at)
        self.fan_out(event)

    # A change and the event that reports it can share one transaction: ``prepare`` the event, hand ``row`` to
    # the ledger call that makes the change, then ``fan_out`` once it is committed.

    def prepare(self, event: Event) -> Event:
        if self._ledger is not None and self._ledger.redactor.secrets:
            return scrub_event(event, self._ledger.redactor)
        return event

    def announce(self, event: Event) -> None:
        """An event the ledger already holds (written in the same transaction as the change it reports): scrubbed
        like any other, then handed to in-process subscribers only."""
        self.fan_out(self.prepare(event))

    def row(self, event: Event) -> PendingEvent | None:
        """The ledger row for a prepared event (None: not persisted)."""
        if not event.persist or self._ledger is None:
            return None
        from supervisor.ledger.ledger import PendingEvent

        return PendingEvent(event.kind, event.data(), run_id=event.run_id, at=event.at, agent=event.agent)

    def fan_out(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            subscriber(event)


def scrub_event(event: Event, redactor: Redactor) -> Event:
    from supervisor.secrets import scrub_tree

    names, values = _data_fields(type(event))
    texts = [event.agent or ""]
    nested = False
    for value in values(event):
        if type(value) is str:
            texts.append(value)
        elif isinstance(value, (str, dict, list)):
            nested = True
    joined = "\x00".join(texts)
    if not nested and redactor.scrub(joined) is joined:
        return event  # the common case: one pass per secret over all the text, nothing to replace
    changes = {}
    for name, value in zip(("agent", *names), (event.agent, *values(event)), strict=True):
        if isinstance(value, (str, dict, list)):
            cleaned = scrub_tree(value, redactor)
            if cleaned != value:
                changes[name] = cleaned
    return replace(event, **changes) if changes else event
