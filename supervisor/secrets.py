"""Keep API keys out of everything we write: the ledger, logs, digests, events, CLI output and the TUI.

Backends never put keys in messages; this is the second line of defence: any text we persist or print passes
through ``Redactor.scrub``, which replaces the value of every key-bearing environment variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_KEY_NAME = re.compile(r"(API_KEY|_TOKEN|_SECRET)$")
_MIN_SECRET_LEN = 8


@dataclass(frozen=True)
class Redactor:
    """Replaces known secret values with ``[redacted:VAR]``."""

    secrets: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], extra_names: Iterable[str] = ()) -> Redactor:
        names = {n for n in environ if _KEY_NAME.search(n)} | set(extra_names)
        pairs = [(name, environ[name]) for name in sorted(names) if len(environ.get(name, "")) >= _MIN_SECRET_LEN]
        # Longest first, so a key that contains another is replaced whole.
        pairs.sort(key=lambda p: len(p[1]), reverse=True)
        return cls(tuple(pairs))

    def scrub(self, text: str) -> str:
        for name, value in self.secrets:
            if value in text:
                text = text.replace(value, f"[redacted:{name}]")
        return text


NO_SECRETS = Redactor()
