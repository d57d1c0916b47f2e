"""Errors that carry a fix-it hint; the CLI and TUI print them without a traceback."""

from __future__ import annotations


class SupervisorError(Exception):
    """Base error: ``message`` says what went wrong, ``hint`` says how to fix it."""

    exit_code: int = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class UsageError(SupervisorError):
    """The command line was used wrongly."""

    exit_code = 2


class ConfigError(SupervisorError):
    """A config or catalog file is malformed; the message names the file and the key."""

    exit_code = 2


class CatalogError(ConfigError):
    """A model catalog file is malformed, or a model is not in the catalog."""


class LedgerError(SupervisorError):
    """The ledger could not be opened or written."""


class BudgetError(SupervisorError):
    """A spend cap stops a call before it is sent."""

    exit_code = 3


class VerifyError(SupervisorError):
    """A verify gate is misconfigured (not: a gate that failed; that is an outcome, not an error)."""


class PromptTooLarge(SupervisorError):
    """A prompt or a context file does not fit; we never truncate silently."""


class BackendError(SupervisorError):
    """A backend call failed; subclasses are the few kinds the router tells apart.

    ``error_class`` is the stable short name recorded in the ledger and printed by the CLI.
    """

    error_class = "backend"
    retryable = False

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.provider = provider
        self.model = model
        self.status = status


class BackendUnavailable(BackendError):
    """Connection refused, DNS failure, server down, missing API key, or the server never answered."""

    error_class = "unavailable"
    retryable = True


class BackendTimeout(BackendUnavailable):
    """The server accepted the request but did not answer within the timeout."""

    error_class = "timeout"


class RateLimited(BackendError):
    """HTTP 429: slow down. ``retry_after_s`` is the server's Retry-After, when it sent one."""

    error_class = "rate_limited"
    retryable = True

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, hint, provider=provider, model=model, status=status)
        self.retry_after_s = retry_after_s


class Overloaded(RateLimited):
    """HTTP 503/529: the provider (not your quota) is overloaded."""

    error_class = "overloaded"


class BadRequest(BackendError):
    """HTTP 400/422: the request itself is wrong; retrying the same request will not help."""

    error_class = "bad_request"


class ContextOverflow(BadRequest):
    """The prompt plus max output tokens does not fit the model's context window."""

    error_class = "context_overflow"


class AuthError(BackendError):
    """HTTP 401/403 (or 402 billing): the key is missing, wrong or out of credit."""

    error_class = "auth"


class ModelNotFound(BackendError):
    """HTTP 404 or an unknown local model."""

    error_class = "model_not_found"


class ProtocolError(BackendError):
    """The response was malformed or cut off; any usage it carried is unknown, so the call is unpriced."""

    error_class = "protocol"
    # Not retried inside one reservation: a cut stream may already have been billed. The runtime counts it as a
    # failed attempt and takes a fresh reservation for the next one.
    retryable = False

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        provider: str = "",
        model: str = "",
        status: int | None = None,
        partial_text: str = "",
    ) -> None:
        super().__init__(message, hint, provider=provider, model=model, status=status)
        self.partial_text = partial_text
