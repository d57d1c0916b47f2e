"""Keep API keys out of everything we write: the ledger, logs, digests, events, CLI output and the TUI.

Backends never put keys in messages; this is the second line of defence: any text we persist or print passes
through ``Redactor.scrub``, which replaces the value of every key-bearing environment variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

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

    def including(self, environ: Mapping[str, str], names: Iterable[str]) -> Redactor:
        """This redactor plus the values of ``names`` (e.g. the providers' ``api_key_env``) found in ``environ``."""
        extra = Redactor.from_environ({n: environ[n] for n in names if n in environ}, names)
        merged = dict(self.secrets)
        merged.update(extra.secrets)
        pairs = sorted(merged.items(), key=lambda p: len(p[1]), reverse=True)
        return Redactor(tuple(pairs))

    def may_hide_in_json(self, text: str) -> bool:
        """Whether JSON ``text`` (encoded with ``ensure_ascii=False``) may hold a key in one of its strings: a key
        JSON writes as itself is there only if its text is; a key with a character JSON escapes may hide."""
        return self._escaped_in_json or any(value in text for _name, value in self.secrets)

    @cached_property
    def secret_bytes(self) -> list[tuple[bytes, bytes]]:
        """Each key and its replacement as UTF-8 bytes, for scrubbing relayed bytes."""
        return [(value.encode(), f"[redacted:{name}]".encode()) for name, value in self.secrets]

    @cached_property
    def _escaped_in_json(self) -> bool:
        return not all(_json_plain(value) for _name, value in self.secrets)

    def scrub(self, text: str) -> str:
        for name, value in self.secrets:
            if value in text:
                text = text.replace(value, f"[redacted:{name}]")
        return text


NO_SECRETS = Redactor()


def _json_plain(value: str) -> bool:
    """``json.dumps(value, ensure_ascii=False)`` writes ``value`` as itself, between quotes."""
    return '"' not in value and "\\" not in value and all(ord(c) >= 0x20 for c in value)


class StreamScrubber:
    """Scrubs text that arrives in pieces: a key split across two deltas is still caught.

    It holds back the end of the text whenever that end could be the start of a key, and lets it go once the
    next piece shows it is not (or ``flush`` at the end).
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._tail = ""

    def feed(self, delta: str) -> str:
        if not self.redactor.secrets:
            return delta
        text = self.redactor.scrub(self._tail + delta)
        hold = 0
        for _name, value in self.redactor.secrets:
            for size in range(min(len(value) - 1, len(text)), hold, -1):
                if text.endswith(value[:size]):
                    hold = size
                    break
        self._tail = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        tail, self._tail = self._tail, ""
        return self.redactor.scrub(tail)


class ByteStreamScrubber:
    """``StreamScrubber`` for relayed bytes: a key split across two reads of a socket is still caught.

    Each piece comes out at once with any whole key replaced, except its last bytes when they could be the start
    of a key: those wait for the next piece (or ``flush``). Cheap in the common case: per key, one ``in`` test
    and a ``find`` of its first byte in the piece's last ``len(key) - 1`` bytes, all in C. An SSE or NDJSON
    piece ends with a newline, so nothing is held back unless a key starts there.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._secrets = redactor.secret_bytes
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._secrets:
            return chunk
        data = self._tail + chunk if self._tail else chunk
        for value, replacement in self._secrets:
            if value in data:
                data = data.replace(value, replacement)
        hold = 0
        size = len(data)
        for value, _replacement in self._secrets:
            # A proper prefix of the key ending the data starts in its last len(key) - 1 bytes; the earliest such
            # start is the longest hold, and only a start before the current hold's would lengthen it.
            start, end = max(size - len(value) + 1, 0), size - hold
            at = data.find(value[:1], start, end)
            while at != -1:
                if value.startswith(data[at:]):
                    hold = size - at
                    break
                at = data.find(value[:1], at + 1, end)
        if hold:
            self._tail = data[size - hold :]
            return data[: size - hold]
        self._tail = b""
        return data

    def flush(self) -> bytes:
        tail, self._tail = self._tail, b""
        for value, replacement in self._secrets:
            tail = tail.replace(value, replacement)
        return tail


def scrub_tree(value: Any, redactor: Redactor) -> Any:
    """Scrub every string inside ``value`` before it is encoded (escaping could hide a key from the scrubber)."""
    if isinstance(value, str):
        return redactor.scrub(value)
    if isinstance(value, dict):
        return {scrub_tree(k, redactor): scrub_tree(v, redactor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub_tree(v, redactor) for v in value]
    return value
