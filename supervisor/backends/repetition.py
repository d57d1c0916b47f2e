"""The repetition guard: stop a generation that has started to cycle, instead of letting it run to its budget.

Small local models decoding greedily fall into loops ("A-sort\\nA-sort\\n..."): once a passage has come out
several times in a row it will keep coming, and on a CPU every extra token costs real seconds. The local
backends feed each text delta to a ``RepetitionGuard``; when the text ends with one passage repeated at least
``min_repeats`` times and the repeats cover at least ``min_span_chars`` characters, the guard trips and the
backend stops generating (MLX leaves its generation loop, Ollama stops reading and closes the stream). The
call then finishes with ``finish_reason = "looping"``, which the runtime treats as a failed attempt.

The thresholds make legitimate repetition very unlikely to trip it: a passage of 7 characters must repeat
29 times (200 characters), a 60-character line 4 times, and one character 200 times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LOOPING = "looping"  # the finish reason of a generation the guard stopped
MIN_REPEATS = 4
MIN_SPAN_CHARS = 200
MAX_PERIOD_CHARS = 400
CHECK_EVERY_CHARS = 16


@dataclass(frozen=True, slots=True)
class Loop:
    """What the guard saw: a passage of ``period`` characters repeated ``repeats`` times at the end."""

    period: int
    repeats: int
    passage: str

    def describe(self) -> str:
        shown = self.passage if len(self.passage) <= 40 else self.passage[:39] + "…"
        return f"the same {self.period}-character passage {shown!r} came out {self.repeats} times in a row"


class RepetitionGuard:
    """Feed it the generated text, delta by delta; ``feed`` returns True once the text is looping."""

    def __init__(
        self,
        *,
        min_repeats: int = MIN_REPEATS,
        min_span_chars: int = MIN_SPAN_CHARS,
        max_period_chars: int = MAX_PERIOD_CHARS,
        check_every_chars: int = CHECK_EVERY_CHARS,
    ) -> None:
        self.min_repeats = min_repeats
        self.min_span_chars = min_span_chars
        self.max_period_chars = max_period_chars
        self.check_every_chars = check_every_chars
        self.window = max(max_period_chars * min_repeats, min_span_chars + max_period_chars)
        self._tail = ""
        self._since_check = 0
        self.loop: Loop | None = None

    @property
    def tripped(self) -> bool:
        return self.loop is not None

    def feed(self, delta: str) -> bool:
        if self.loop is not None or not delta:
            return self.loop is not None
        self._tail = (self._tail + delta)[-self.window :]
        self._since_check += len(delta)
        if self._since_check >= self.check_every_chars:
            self._since_check = 0
            self.loop = find_loop(self._tail, self.min_repeats, self.min_span_chars, self.max_period_chars)
        return self.loop is not None


def find_loop(text: str, min_repeats: int, min_span_chars: int, max_period_chars: int) -> Loop | None:
    """The shortest passage that ``text`` ends with, repeated enough times to count as a loop, if any."""
    limit = min(max_period_chars, len(text) // min_repeats)
    for period in _candidate_periods(text, limit):
        repeats = max(min_repeats, math.ceil(min_span_chars / period))
        if repeats * period > len(text):
            continue
        passage = text[-period:]
        if text.endswith(passage * repeats):
            count = repeats
            while (count + 1) * period <= len(text) and text[-(count + 1) * period : -count * period] == passage:
                count += 1
            if "\n" in passage[:-1]:  # show the passage as lines ("A-sort\n"), not as cut mid-line ("t\nA-sor")
                cut = passage.index("\n") + 1
                passage = passage[cut:] + passage[:cut]
            return Loop(period, count, passage)
    return None


_NEEDLE = 4


def _candidate_periods(text: str, limit: int) -> list[int]:
    """Periods (shortest first) at which the text's last characters occur again: the only ones that can loop.

    Found with ``str.rfind`` in C rather than by testing all ``limit`` periods in Python."""
    periods = list(range(1, min(_NEEDLE, limit + 1)))
    if len(text) <= _NEEDLE:
        return periods
    needle = text[-_NEEDLE:]
    lowest = max(0, len(text) - _NEEDLE - limit)
    end = len(text) - 1
    while True:
        found = text.rfind(needle, lowest, end)
        if found < 0:
            return periods
        period = len(text) - _NEEDLE - found
        if period >= _NEEDLE:
            periods.append(period)
        end = found + _NEEDLE - 1


def describe_loop(text: str) -> str:
    """Why a generation that ended with ``finish_reason = "looping"`` failed, for the retry prompt and the log."""
    loop = find_loop(text[-(MAX_PERIOD_CHARS * MIN_REPEATS * 2) :], MIN_REPEATS, MIN_SPAN_CHARS, MAX_PERIOD_CHARS)
    what = loop.describe() if loop is not None else "the output kept repeating itself"
    return f"looping: {what}; the generation was stopped"
