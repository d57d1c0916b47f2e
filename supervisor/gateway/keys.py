"""Gateway keys: minted once, shown once, stored as a SHA-256 hash.

A key is ``sk-sup-`` + 43 characters of ``secrets.token_urlsafe(32)`` (256 bits): guessing is hopeless, so a
plain hash lookup is enough (no slow KDF, no constant-time compare: the lookup is by hash, not by comparing
secrets). The ledger keeps the hash, a short display prefix, the agent, and optional bindings and limits (an
agent step's attempt: run, step, attempt, tier, max calls, a dollar cap, token caps, an expiry).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from supervisor.ledger import GatewayKey, Ledger

KEY_PREFIX = "sk-sup-"
DISPLAY_CHARS = 12


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True, slots=True)
class MintedKey:
    """A key just created: ``token`` is shown to the user once and never stored."""

    id: int
    agent: str
    token: str
    prefix: str


def mint_key(
    ledger: Ledger,
    agent: str,
    *,
    label: str = "",
    expires_at: datetime | None = None,
    run_id: int | None = None,
    step: str | None = None,
    attempt: int | None = None,
    tier: str | None = None,
    max_calls: int | None = None,
    max_micros: int | None = None,
    max_tokens: int | None = None,
    max_output_tokens: int | None = None,
) -> MintedKey:
    """Create a key for ``agent`` (optionally bound to one step attempt, with its own limits)."""
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    prefix = token[:DISPLAY_CHARS]
    key_id = ledger.create_key(
        agent=agent,
        key_hash=hash_key(token),
        prefix=prefix,
        label=label,
        expires_at=expires_at,
        run_id=run_id,
        step=step,
        attempt=attempt,
        tier=tier,
        max_calls=max_calls,
        max_micros=max_micros,
        max_tokens=max_tokens,
        max_output_tokens=max_output_tokens,
    )
    ledger.redactor = ledger.redactor.including({"SUPERVISOR_GATEWAY_KEY": token}, ["SUPERVISOR_GATEWAY_KEY"])
    return MintedKey(key_id, agent, token, prefix)


def lookup_key(ledger: Ledger, token: str) -> GatewayKey | None:
    if not token:
        return None
    return ledger.key_by_hash(hash_key(token))


def bearer_token(headers: dict[str, str]) -> str | None:
    """The key a client sent: ``Authorization: Bearer ...`` or ``x-api-key`` (Claude Code may send either)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None
