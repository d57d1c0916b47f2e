"""Plain-text rendering for the CLI: aligned tables, money, and safe printing of untrusted text."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

# C0/C1 control characters except tab and newline: model output must never drive the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ESCAPE_SEQUENCE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


# An agent's state as a symbol, shown next to its word (CLI and TUI alike): never colour alone.
STATE_SYMBOL = {
    "idle": "·",
    "running": "▶",
    "waiting_approval": "?",
    "deferred": "◷",
    "paused": "‖",
    "failed": "✗",
    "exhausted": "✗",
    "denied": "✗",
}


def sanitize(text: str) -> str:
    """Strip terminal escape sequences and control characters from untrusted text (model output, gate output)."""
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()) -> str:
    """A simple aligned table; columns listed in ``right`` are right-aligned (numbers)."""
    cells = [[str(h) for h in headers], *[[sanitize(str(c)) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        parts = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def usd(micros: int | None, places: int = 6) -> str:
    from supervisor.cost import format_usd  # lazily: the cost module pulls in the catalog and pydantic

    return format_usd(micros, places=places)


def money(micros: int | None) -> str:
    """Dollars with as many places as the amount needs: $0, $0.000029, $0.0123, $4.56."""
    if micros is None:
        return "unpriced"
    if micros == 0:
        return "$0"
    if abs(micros) < 10_000:
        return usd(micros, places=6)
    if abs(micros) < 1_000_000:
        return usd(micros, places=4)
    return usd(micros, places=2)


def tokens(n: int | None) -> str:
    if n is None:
        return "?"
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1_000:.0f}k"
    return str(n)


def print_json(data: Any, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    stream.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def tool_call_text(call: dict[str, Any], result_chars: int = 80) -> str:
    """One built-in worker call as a line: ``read_file(path=a.py) -> first line of the result``."""
    result = next((" ".join(line.split()) for line in str(call.get("result", "")).splitlines() if line.strip()), "")
    if len(result) > result_chars:
        result = result[: result_chars - 1] + "…"
    mark = "error: " if call.get("error") and not result.startswith("error") else ""
    return sanitize(f"{call.get('tool')}({call.get('arguments', '')}) -> {mark}{result}")
