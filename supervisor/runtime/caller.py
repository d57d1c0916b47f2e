"""One model call, the only way: size check, reservation, send, price, settle, record.

1. The prompt is counted (the model's tokenizer where we have it, a conservative estimate elsewhere) and a
   prompt that does not fit the model's window is refused: we never truncate.
2. The worst case (every prompt token at the highest prompt rate + the full output budget) is reserved in one
   ``BEGIN IMMEDIATE`` transaction; if any cap could be crossed the call is not sent (``CapHit``).
3. The request is sent; retries happen only for errors the provider does not bill (429, 503/529, refused
   connections), with Retry-After honoured.
4. The usage is priced by ``cost_of`` and the reservation settled to it. A call whose usage is unknown (a cut
   stream, a timeout after sending) stays charged at its worst case and is recorded as unpriced, never $0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from supervisor.backends.base import OnText, Request, Result
from supervisor.backends.retry import complete_with_retry
from supervisor.clock import utcnow
from supervisor.cost import Cost, cost_of, worst_case_micros
from supervisor.errors import BackendError, BackendTimeout, ContextOverflow, ProtocolError
from supervisor.ledger import CallRecord, CapHit, CapLimits, Ledger
from supervisor.ledger.ledger import Settlement
from supervisor.runtime.events import CallRecorded, CallStarted, EventBus, Notice
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


class ModelCaller:
    def __init__(
        self, ledger: Ledger, pool: BackendPool, bus: EventBus, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.ledger = ledger
        self.pool = pool
        self.bus = bus
        self.clock = clock

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
        spec = candidate.spec
        if backend.kind == "mlx":
            # Off the event loop: the MLX backend may load its model (and tokenizer) to count exactly.
            count = await asyncio.to_thread(backend.count_tokens, request)
        else:
            count = backend.count_tokens(request)  # a byte-count estimate: cheaper than a thread hop
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
        held = self.ledger.reserve(
            agent=agent,
            run_id=run_id,
            provider=candidate.provider,
            model=candidate.model_id,
            amount_micros=amount,
            tokens=count.tokens + request.max_output_tokens,
            limits=limits,
            now=now,
        )
        if isinstance(held, CapHit):
            return held
        self.bus.publish(
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

        def record(
            started: datetime,
            usage: Usage,
            cost: Cost,
            result: Result | None,
            error: BackendError | None,
            elapsed: float,
            settlement: Settlement | None = None,
        ) -> int:
            call_id = self.ledger.record_call(
                CallRecord(
                    agent=agent,
                    provider=candidate.provider,
                    model=candidate.model_id,
                    tier=candidate.tier,
                    started_at=started,
                    ended_at=self.clock(),
                    usage=usage,
                    cost=cost,
                    run_id=run_id,
                    step_id=step_id,
                    step=step,
                    attempt=attempt,
                    simulated=candidate.simulated,
                    latency_s=result.total_s if result else elapsed,
                    ttft_s=result.ttft_s if result else None,
                    tokens_per_s=result.tokens_per_s if result else None,
                    compute_s=result.compute_s if result else None,
                    finish_reason=result.finish_reason if result else None,
                    error_class=error.error_class if error else None,
                    error=str(error) if error else "",
                    reservation_id=held.id,
                    prompt_tokens_est=count.tokens,
                    price_source=spec.price_source,
                    turn=turn,
                ),
                settlement,
            )
            self.bus.publish(
                CallRecorded(
                    agent=agent,
                    run_id=run_id,
                    call_id=call_id,
                    step=step,
                    tier=candidate.tier,
                    model=candidate.key,
                    attempt=attempt,
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
                    turn=turn,
                )
            )
            return call_id

        def on_retry(error: BackendError, retry: int, delay: float) -> None:
            # The rejected try cost nothing, but it happened: it gets its own $0 row.
            record(self.clock(), Usage(), not_billed(error.error_class), None, error, 0.0)
            self.bus.publish(
                Notice(
                    agent=agent,
                    run_id=run_id,
                    message=f"{candidate.key}: {error.error_class}; retry {retry} in {delay:.1f}s",
                )
            )

        started = self.clock()
        t0 = time.monotonic()
        self.ledger.mark_sent(held.id)
        pcfg = self.pool.provider(candidate.provider)
        try:
            result = await complete_with_retry(
                backend, request, on_text=on_text, max_retries=pcfg.max_retries, on_retry=on_retry
            )
        except asyncio.CancelledError:
            # Interrupted in flight: the provider may still bill it. Keep the worst case and say so.
            record(
                started,
                Usage(),
                Cost(priced=False, reason="cancelled in flight; usage unknown"),
                None,
                None,
                time.monotonic() - t0,
                Settlement(held.id, None, None, note="cancelled in flight"),
            )
            raise
        except BackendError as error:
            elapsed = time.monotonic() - t0
            maybe_billed = isinstance(error, MAYBE_BILLED)
            if maybe_billed:
                cost = Cost(
                    priced=False,
                    reason=f"{error.error_class}: the provider may have billed it; usage unknown",
                )
            else:
                cost = not_billed(error.error_class)
            # The call row and the reservation's end share one transaction: never one without the other.
            settlement = Settlement(held.id, None, None, release=not maybe_billed, note=error.error_class)
            call_id = record(started, Usage(), cost, None, error, elapsed, settlement)
            return CallOutcome(call_id, None, error, cost, count.tokens)
        usage = result.usage
        cost = cost_of(usage, spec, started)
        actual_tokens = (
            None if usage.prompt_tokens is None or usage.output is None else usage.prompt_tokens + usage.output
        )
        if candidate.simulated:
            cost = replace(
                cost,
                price_label=f"simulated at {spec.notes.removeprefix('simulated; priced as ')} {cost.price_label}",
            )
        settlement = Settlement(held.id, cost.total_micros if cost.priced else None, actual_tokens)
        call_id = record(started, usage, cost, result, None, time.monotonic() - t0, settlement)
        return CallOutcome(call_id, result, None, cost, count.tokens)
