"""One model call, the only way: size check, reservation, send, price, settle, record.

1. The prompt is counted (the model's tokenizer where we have it, a conservative estimate elsewhere) and a
   prompt that does not fit the model's window is refused: we never truncate.
2. The worst case (every prompt token at the highest prompt rate + the full output budget) is reserved in one
   ``BEGIN IMMEDIATE`` transaction; if any cap could be crossed the call is not sent (``CapHit``).
3. The request is sent; retries happen only for errors the provider does not bill (429, 503/529, refused
   connections), with Retry-After honoured.
4. The usage is priced by ``cost_of`` and the reservation settled to it. A call whose usage is unknown (a cut
   stream, a timeout after sending) stays charged at its worst case and is recorded as unpriced, never $0.

Steps 1-2 are ``ModelCaller.open`` (it returns a ``PendingCall``) and step 4 is one of the pending call's
finishers (``finish``, ``fail``, ``lost``, ``cancelled``); ``ModelCaller.call`` runs both around a backend call.
The gateway uses the same two halves around a relayed or translated request, so runtime steps and gateway
traffic share one reservation, one pricing and one ledger row shape.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from supervisor.backends.base import OnText, Request, Result, TokenCount
from supervisor.backends.retry import complete_with_retry
from supervisor.clock import utcnow
from supervisor.cost import Cost, cost_of, worst_case_micros
from supervisor.errors import BackendError, BackendTimeout, ContextOverflow, ProtocolError
from supervisor.ledger import CallRecord, CapHit, CapLimits, Ledger
from supervisor.ledger.ledger import PendingEvent, Reservation, Settlement
from supervisor.runtime.events import CallRecorded, CallStarted, Event, EventBus, Notice
from supervisor.runtime.pool import BackendPool
from supervisor.runtime.router import Candidate
from supervisor.usage import Usage

OUTPUT_EXCERPT_CHARS = 2000
# Errors after which the provider may have processed (and billed) the request.
MAYBE_BILLED = (ProtocolError, BackendTimeout)


@dataclass(frozen=True, slots=True)
class CallOutcome:
    call_id: int
    result: Result | None
    error: BackendError | None
    cost: Cost
    prompt_tokens: int

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclass(frozen=True, slots=True)
class CallTags:
    """Where a call came from, for its ledger row: the runtime's own steps leave these empty; the gateway fills
    them (the model name the client asked for, how the caller authenticated, which key)."""

    requested_model: str | None = None
    auth: str | None = None  # "key" | "port" (a per-agent loopback port) | None (the runtime itself)
    key_id: int | None = None
    via: str = "runtime"  # "runtime" | "gateway"


def not_billed(reason: str) -> Cost:
    """A failed request the provider rejected before doing any work: priced, and $0."""
    return Cost(
        priced=True,
        input_uncached_micros=0,
        cache_read_micros=0,
        cache_write_5m_micros=0,
        cache_write_1h_micros=0,
        output_micros=0,
        total_micros=0,
        price_label=f"not billed ({reason})",
    )


@dataclass(slots=True)
class PendingCall:
    """A call whose worst case is reserved and not yet settled: exactly one finisher ends it.

    ``finish`` (a result with usage), ``fail`` (a backend error: released if the provider did no work, kept at
    the worst case if it may have billed), ``lost`` (sent, but the usage never arrived: kept at the worst case,
    unpriced), ``cancelled`` (interrupted in flight: the same). Each writes the call row and settles the
    reservation in one transaction, then publishes ``CallRecorded``.
    """

    caller: ModelCaller
    agent: str
    run_id: int | None
    step: str
    step_id: int | None
    attempt: int
    candidate: Candidate
    max_output_tokens: int
    count: TokenCount
    held: Reservation
    tags: CallTags = field(default_factory=CallTags)
    started: datetime | None = None
    turn: int | None = None  # the built-in worker's turn within the attempt (None: a single call)
    t0: float = 0.0
    call_id: int | None = None
    sent: bool = False
    finished_usage: Usage | None = None  # the usage ``finish`` recorded (None: not finished with usage)

    @property
    def reserved_micros(self) -> int:
        return self.held.amount_micros

    @property
    def done(self) -> bool:
        return self.call_id is not None

    def mark_sent(self) -> None:
        """The request is about to leave: from now on a crash means "maybe billed", not "never sent"."""
        self.started = self.caller.clock()
        self.t0 = time.monotonic()
        if not self.sent:
            self.sent = True
            self.caller.ledger.mark_sent(self.held.id)

    def _elapsed(self) -> float:
        return time.monotonic() - self.t0 if self.t0 else 0.0

    def finish(self, result: Result) -> CallOutcome:
        spec = self.candidate.spec
        usage = result.usage
        started = self.started or self.caller.clock()
        cost = cost_of(usage, spec, started)
        actual_tokens = (
            None if usage.prompt_tokens is None or usage.output is None else usage.prompt_tokens + usage.output
        )
        if self.candidate.simulated:
            cost = replace(
                cost,
                price_label=f"simulated at {spec.notes.removeprefix('simulated; priced as ')} {cost.price_label}",
            )
        settlement = Settlement(self.held.id, cost.total_micros if cost.priced else None, actual_tokens)
        call_id = self._record(usage, cost, result, None, self._elapsed(), settlement)
        self.finished_usage = usage
        return CallOutcome(call_id, result, None, cost, self.count.tokens)

    def fail(self, error: BackendError) -> CallOutcome:
        maybe_billed = isinstance(error, MAYBE_BILLED)
        if maybe_billed:
            cost = Cost(priced=False, reason=f"{error.error_class}: the provider may have billed it; usage unknown")
        else:
            cost = not_billed(error.error_class)
        # The call row and the reservation's end share one transaction: never one without the other.
        settlement = Settlement(self.held.id, None, None, release=not maybe_billed, note=error.error_class)
        call_id = self._record(Usage(), cost, None, error, self._elapsed(), settlement)
        return CallOutcome(call_id, None, error, cost, self.count.tokens)

    def lost(self, reason: str, result: Result | None = None) -> CallOutcome:
        """Sent and answered, but the usage is unknown (a cut stream, an upstream without usage): the worst case
        stays charged and the row is unpriced, never $0."""
        cost = Cost(priced=False, reason=f"{reason}; usage unknown")
        settlement = Settlement(self.held.id, None, None, note=reason)
        usage = result.usage if result is not None else Usage()
        call_id = self._record(usage, cost, result, None, self._elapsed(), settlement)
        return CallOutcome(call_id, result, None, cost, self.count.tokens)

    def cancelled(self, note: str = "cancelled in flight") -> None:
        """Interrupted in flight: the provider may still bill it. Keep the worst case and say so."""
        self._record(
            Usage(),
            Cost(priced=False, reason=f"{note}; usage unknown"),
            None,
            None,
            self._elapsed(),
            Settlement(self.held.id, None, None, note=note),
        )

    def release(self, note: str) -> None:
        """Never sent (refused before forwarding): give the hold back; no call row."""
        self.caller.ledger.release(self.held.id, note)
        self.call_id = 0

    def _record(
        self,
        usage: Usage,
        cost: Cost,
        result: Result | None,
        error: BackendError | None,
        elapsed: float,
        settlement: Settlement | None = None,
        started: datetime | None = None,
    ) -> int:
        call_id = self.caller.record(self, usage, cost, result, error, elapsed, settlement, started)
        if settlement is not None:
            self.call_id = call_id
        return call_id


class ModelCaller:
    def __init__(
        self, ledger: Ledger, pool: BackendPool, bus: EventBus, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.ledger = ledger
        self.pool = pool
        self.bus = bus
        self.clock = clock

    def open(
        self,
        *,
        agent: str,
        run_id: int | None,
        step: str,
        step_id: int | None,
        attempt: int,
        candidate: Candidate,
        request: Request,
        limits: CapLimits,
        count: TokenCount | None = None,
        tags: CallTags | None = None,
        turn: int | None = None,
        key_id: int | None = None,
        approval_id: int | None = None,
        sent: bool = False,
    ) -> PendingCall | CapHit:
        """Check the window and reserve the worst case; ``count`` skips counting when the caller already did;
        ``sent`` marks the call sent with the reservation (one transaction fewer, for a caller that forwards at
        once)."""
        spec = candidate.spec
        if count is None:
            count = self.pool.get(candidate.provider).count_tokens(request)
        window = request.context_window or spec.context_window
        if count.tokens + request.max_output_tokens > window:
            raise ContextOverflow(
                f"{candidate.key}: the prompt is {'' if count.exact else '~'}{count.tokens:,} tokens and the output "
                f"budget {request.max_output_tokens:,}; together they exceed the {window:,}-token window",
                "shorten the context files, lower max_output_tokens, or let the step escalate to a bigger model",
                provider=candidate.provider,
                model=candidate.model_id,
            )
        now = self.clock()
        amount = 0 if spec.is_free else worst_case_micros(spec, count.tokens, request.max_output_tokens, now)
        started_event = self.bus.prepare(
            CallStarted(
                agent=agent,
                run_id=run_id,
                step=step,
                tier=candidate.tier,
                model=candidate.key,
                attempt=attempt,
                prompt_tokens=count.tokens,
                max_output_tokens=request.max_output_tokens,
                reserved_micros=amount,
                simulated=candidate.simulated,
                turn=turn,
            )
        )
        held = self.ledger.reserve(
            agent=agent,
            run_id=run_id,
            provider=candidate.provider,
            model=candidate.model_id,
            amount_micros=amount,
            tokens=count.tokens + request.max_output_tokens,
            limits=limits,
            now=now,
            key_id=key_id,
            approval_id=approval_id,
            sent=sent,
            event=self.bus.row(started_event),  # the reservation and its event commit together
        )
        if isinstance(held, CapHit):
            return held
        self.bus.fan_out(started_event)
        pending = PendingCall(
            self,
            agent,
            run_id,
            step,
            step_id,
            attempt,
            candidate,
            request.max_output_tokens,
            count,
            held,
            tags or CallTags(),
            turn=turn,
        )
        if sent:
            pending.started, pending.t0, pending.sent = now, time.monotonic(), True
        return pending

    def record(
        self,
        pending: PendingCall,
        usage: Usage,
        cost: Cost,
        result: Result | None,
        error: BackendError | None,
        elapsed: float,
        settlement: Settlement | None = None,
        started: datetime | None = None,
    ) -> int:
        """Write one call row (with the reservation's settlement, when given) and publish ``CallRecorded``."""
        p, candidate, tags = pending, pending.candidate, pending.tags
        recorded: list[Event] = []

        def event(call_id: int) -> PendingEvent | None:
            prepared = self.bus.prepare(
                CallRecorded(
                    agent=p.agent,
                    run_id=p.run_id,
                    call_id=call_id,
                    step=p.step,
                    tier=candidate.tier,
                    model=candidate.key,
                    attempt=p.attempt,
                    input_uncached=usage.input_uncached,
                    cache_read=usage.cache_read,
                    cache_write=usage.cache_write,
                    output=usage.output,
                    cost_micros=cost.total_micros,
                    priced=cost.priced,
                    latency_s=result.total_s if result else elapsed,
                    error_class=error.error_class if error else None,
                    error=str(error) if error else "",
                    simulated=candidate.simulated,
                    output_excerpt=(result.text[:OUTPUT_EXCERPT_CHARS] if result else ""),
                    requested_model=tags.requested_model,
                    via=tags.via,
                    turn=p.turn,
                    finish_reason=result.finish_reason if result else None,
                )
            )
            recorded.append(prepared)
            return self.bus.row(prepared)

        call_id = self.ledger.record_call(
            CallRecord(
                agent=p.agent,
                provider=candidate.provider,
                model=candidate.model_id,
                tier=candidate.tier,
                started_at=started or p.started or self.clock(),
                ended_at=self.clock(),
                usage=usage,
                cost=cost,
                run_id=p.run_id,
                step_id=p.step_id,
                step=p.step,
                attempt=p.attempt,
                simulated=candidate.simulated,
                latency_s=result.total_s if result else elapsed,
                ttft_s=result.ttft_s if result else None,
                tokens_per_s=result.tokens_per_s if result else None,
                compute_s=result.compute_s if result else None,
                finish_reason=result.finish_reason if result else None,
                error_class=error.error_class if error else None,
                error=str(error) if error else "",
                reservation_id=p.held.id,
                prompt_tokens_est=p.count.tokens,
                price_source=candidate.spec.price_source,
                turn=p.turn,
                requested_model=tags.requested_model,
                auth=tags.auth,
                key_id=tags.key_id,
                via=tags.via,
            ),
            settlement,
            event,  # the call row, its settlement and its event commit together
        )
        for prepared in recorded:
            self.bus.fan_out(prepared)
        return call_id

    async def call(
        self,
        *,
        agent: str,
        run_id: int | None,
        step: str,
        step_id: int | None,
        attempt: int,
        candidate: Candidate,
        request: Request,
        limits: CapLimits,
        on_text: OnText | None = None,
        turn: int | None = None,
    ) -> CallOutcome | CapHit:
        """``turn``: the built-in worker's turn within ``attempt`` (each turn is one call like any other)."""
        backend = self.pool.get(candidate.provider)
        if backend.kind == "mlx":
            # Off the event loop: the MLX backend may load its model (and tokenizer) to count exactly.
            count = await asyncio.to_thread(backend.count_tokens, request)
        else:
            count = backend.count_tokens(request)  # a byte-count estimate: cheaper than a thread hop
        pending = self.open(
            agent=agent,
            run_id=run_id,
            step=step,
            step_id=step_id,
            attempt=attempt,
            candidate=candidate,
            request=request,
            limits=limits,
            count=count,
            turn=turn,
        )
        if isinstance(pending, CapHit):
            return pending

        def on_retry(error: BackendError, retry: int, delay: float) -> None:
            # The rejected try cost nothing, but it happened: it gets its own $0 row.
            self.record(pending, Usage(), not_billed(error.error_class), None, error, 0.0, started=self.clock())
            self.bus.publish(
                Notice(
                    agent=agent,
                    run_id=run_id,
                    message=f"{candidate.key}: {error.error_class}; retry {retry} in {delay:.1f}s",
                )
            )

        pending.mark_sent()
        pcfg = self.pool.provider(candidate.provider)
        try:
            result = await complete_with_retry(
                backend, request, on_text=on_text, max_retries=pcfg.max_retries, on_retry=on_retry
            )
        except asyncio.CancelledError:
            pending.cancelled()
            raise
        except BackendError as error:
            return pending.fail(error)
        return pending.finish(result)
