"""Bounded retries for transient backend failures (429, 503/529, dropped connections).

The server's Retry-After is honoured when it is reasonable (up to ``MAX_RETRY_AFTER_S``); otherwise the delay
is exponential (0.5 s doubling, capped at 8 s) with jitter, as the official OpenAI and Anthropic SDKs do.
A missing API key or a bad request is never retried.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from supervisor.backends.base import Backend, OnText, Request, Result
from supervisor.errors import BackendError, BackendTimeout, RateLimited

INITIAL_DELAY_S = 0.5
MAX_DELAY_S = 8.0
MAX_RETRY_AFTER_S = 60.0

Sleep = Callable[[float], Awaitable[None]]
OnRetry = Callable[[BackendError, int, float], None]


def retry_delay(error: BackendError, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based) after ``error``."""
    if (
        isinstance(error, RateLimited)
        and error.retry_after_s is not None
        and 0 < error.retry_after_s <= MAX_RETRY_AFTER_S
    ):
        return error.retry_after_s
    base = min(INITIAL_DELAY_S * 2.0 ** (attempt - 1), MAX_DELAY_S)
    jitter: float = (rng or random.Random()).uniform(0, base * 0.25)
    return base - jitter


async def complete_with_retry(
    backend: Backend,
    request: Request,
    *,
    on_text: OnText | None = None,
    max_retries: int = 2,
    sleep: Sleep = asyncio.sleep,
    on_retry: OnRetry | None = None,
) -> Result:
    """``backend.complete`` with up to ``max_retries`` retries of retryable errors.

    A timeout is not retried: the server accepted the request and may have billed it, and waiting twice as
    long is not what the user asked for.
    """
    attempt = 0
    while True:
        try:
            return await backend.complete(request, on_text)
        except BackendError as error:
            attempt += 1
            if not error.retryable or isinstance(error, BackendTimeout) or attempt > max_retries:
                raise
            delay = retry_delay(error, attempt)
            if on_retry is not None:
                on_retry(error, attempt, delay)
            await sleep(delay)
