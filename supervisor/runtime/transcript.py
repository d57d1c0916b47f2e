"""The built-in worker's transcript: each turn is a fresh, lean request whose size is bounded.

A turn's request is the step's fixed head (the system message with the goal, rules and context files, and the
task message with the digest, the step prompt and, on a retry, the last failure) and the loop's own past turns,
each in one of two forms:

- **full**: what the model said, its calls and every tool result, as chat messages (native tool messages, or
  the JSON-in-text protocol's assistant/user pairs);
- **elided**: one line in the task message, at most ``line_bytes`` bytes: the turn number, each call with its
  arguments cut short, and the first line of each result.

The newest turn is always full. Older turns are full, newest first, while their total stays within
``budget_tokens``; from the first that does not fit, every older turn is elided. Only the newest
``elided_turns`` elided turns get a line; the ones before are folded into one line (how many turns, which tools,
which files were written). Two caps make every full turn finite: a tool result longer than ``result_bytes`` is
cut (the tools' own limits keep results under it, so this is a backstop), and when what the model said in a
turn (its text and its calls' arguments) is over ``said_bytes``, the turn shows it elided and its results in
full. A turn may make at most ``MAX_CALLS_PER_TURN`` calls (the loop refuses the rest).

**The bound.** Sizes are our conservative estimate (``estimate_tokens``: UTF-8 bytes / 3 rounded up, plus 4
per message and 3 per request), so the bound holds whatever the model's tokenizer::

    input(any turn) <= F + H + B + N

``F`` is the head with the tools; ``H`` the summary section (``elided_turns`` lines of ``line_bytes`` and the
fold line); ``B`` the budget; ``N`` the newest turn at its caps (``said_bytes``, ``result_bytes`` of results, the ids,
names and framing of ``MAX_CALLS_PER_TURN`` calls, the loop's note, the turns-left nudge). No term depends on how
many turns have run: ``Transcript.bound`` computes it, and tests/integration/test_worker.py holds a 30-turn
loop with large tool outputs under it.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from supervisor.backends.base import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_REQUEST,
    Message,
    ToolCall,
    ToolSpec,
    estimate_tokens,
)
from supervisor.runtime.toolproto import render_result

Protocol = Literal["native", "text"]
MAX_CALLS_PER_TURN = 8
ID_MAX_BYTES = 64
NAME_MAX_BYTES = 64
NOTE_MAX_BYTES = 600  # the loop's own messages (protocol errors, nudges) are written by us and short
ARG_STUB_CHARS = 48  # what an elided line keeps of each argument value
SUMMARY_HEADER = "\n\nEarlier turns, summarized (their full output is no longer shown):"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CUT_MARKER = "\n[cut: this turn's results are longer than the transcript keeps; read less per turn]"


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """One executed call: the call as it is replayed to the model, and its result."""

    call: ToolCall
    content: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Turn:
    """One past turn: the model's text, the calls it made with their results, and a note from the loop (a
    protocol error, a nudge) sent after them."""

    number: int
    text: str
    outputs: tuple[ToolOutput, ...] = ()
    note: str = ""


@dataclass(frozen=True, slots=True)
class TranscriptPolicy:
    """How much of the past the next turn carries."""

    budget_tokens: int = 3_000  # B: older turns kept in full (limits.tool_transcript_tokens)
    elided_turns: int = 8  # elided turns that get a line of their own
    line_bytes: int = 240  # one elided turn's line
    result_bytes: int = 33_000  # all the tool results of one turn (one read at the read limit fits whole)
    said_bytes: int = 4_096  # what the model said in one turn, shown in full up to this


def cut_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, at a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", errors="ignore")


def first_line(text: str) -> str:
    return next((" ".join(line.split()) for line in text.splitlines() if line.strip()), "")


def replayable(call: ToolCall, turn: int, index: int) -> ToolCall:
    """``call`` as it can be sent back: an id of at most 64 safe characters, a name of at most 64 bytes, and
    arguments that are a JSON object ("{}" when the model's were not: the result says what was wrong)."""
    call_id = call.id if _ID.fullmatch(call.id) else f"call_{turn}_{index}"
    name = cut_bytes(call.name, NAME_MAX_BYTES) or "unnamed"
    try:
        arguments = call.arguments if isinstance(json.loads(call.arguments), dict) else "{}"
    except ValueError:
        arguments = "{}"
    return ToolCall(call_id, name, arguments)


def short_arguments(arguments: str) -> str:
    """``key=value, ...`` with each value on one line and cut to ``ARG_STUB_CHARS``."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return ""
    if not isinstance(value, dict):
        return ""
    parts = []
    for key, item in value.items():
        text = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
        text = " ".join(text.split())
        if len(text) > ARG_STUB_CHARS:
            text = f"{text[:ARG_STUB_CHARS]}…[{len(text):,} chars]"
        parts.append(f"{key}={text}")
    return ", ".join(parts)


def written_path(output: ToolOutput) -> str | None:
    """The file a successful write_file or edit_file changed."""
    if output.is_error or output.call.name not in ("write_file", "edit_file"):
        return None
    try:
        path = json.loads(output.call.arguments).get("path")
    except (ValueError, AttributeError):
        return None
    return path if isinstance(path, str) else None


def _said_bytes(turn: Turn) -> int:
    return len(turn.text.encode("utf-8")) + sum(len(o.call.arguments.encode("utf-8")) for o in turn.outputs)


@dataclass
class Transcript:
    """The loop's memory for one attempt: a fixed head and the turns so far, rendered lean for each request."""

    head: tuple[Message, Message]  # (system, task)
    protocol: Protocol
    tools: tuple[ToolSpec, ...]
    policy: TranscriptPolicy = field(default_factory=TranscriptPolicy)
    turns: list[Turn] = field(default_factory=list)

    def add(self, turn: Turn) -> None:
        self.turns.append(turn)

    # --- rendering ------------------------------------------------------------------------------------

    def messages(self, *, turns_left: int | None = None) -> tuple[Message, ...]:
        """The next request's messages (native tools go in ``Request.tools``; for text they are in the head)."""
        full_from = self._full_from()
        elided = self.turns[:full_from]
        system, task = self.head
        if elided:
            task = replace(task, content=task.content + self._summary(elided))
        out: list[Message] = [system, task]
        for turn in self.turns[full_from:]:
            out.extend(self._full(turn))
        if turns_left is not None and turns_left <= 2 and self.turns:
            nudge = f"{turns_left} turn{'s' if turns_left != 1 else ''} left: make your last change and call finish."
            last = out[-1]
            if last.role == "user":
                out[-1] = replace(last, content=f"{last.content}\n\n{nudge}")
            else:
                out.append(Message("user", nudge))
        return tuple(out)

    def _full_from(self) -> int:
        """Index of the oldest turn kept in full (the newest always is)."""
        if not self.turns:
            return 0
        start = len(self.turns) - 1
        used = 0
        while start > 0:
            size = estimate_tokens(self._full(self.turns[start - 1])) - TOKENS_PER_REQUEST
            if used + size > self.policy.budget_tokens:
                break
            used += size
            start -= 1
        return start

    def _full(self, turn: Turn) -> list[Message]:
        """A turn as chat messages: results cut at ``result_bytes``; what the model said elided past ``said_bytes``."""
        brief = _said_bytes(turn) > self.policy.said_bytes
        note = cut_bytes(turn.note, NOTE_MAX_BYTES)
        outputs = self._results(turn.outputs)
        if brief:
            outputs = [replace(o, call=replace(o.call, arguments="{}")) for o in outputs]
        said = cut_bytes(first_line(turn.text), self.policy.line_bytes) if brief else turn.text
        if brief:
            note = cut_bytes(
                f"(your reply was {_said_bytes(turn):,} bytes; it is shown shortened) {note}".strip(), NOTE_MAX_BYTES
            )
        if self.protocol == "text":
            if outputs and not brief:
                said = turn.text
            elif outputs:
                call = outputs[0].call
                said = cut_bytes(f'{{"tool": {json.dumps(call.name)}, "arguments": {{}}}} (shortened)', 200)
            parts = [render_result(o.call, o.content, is_error=o.is_error) for o in outputs]
            if note:
                parts.append(note)
            return [Message("assistant", said or "(empty reply)"), Message("user", "\n\n".join(parts) or "(nothing)")]
        calls = tuple(o.call for o in outputs)
        out = [Message("assistant", said if said or calls else "(empty reply)", tool_calls=calls)]
        out.extend(
            Message("tool", o.content, tool_call_id=o.call.id, name=o.call.name, is_error=o.is_error) for o in outputs
        )
        if note:
            out.append(Message("user", note))
        return out

    def _results(self, outputs: Sequence[ToolOutput]) -> list[ToolOutput]:
        """The turn's results, together at most ``result_bytes``: the first ones whole, the rest cut."""
        left = self.policy.result_bytes
        out = []
        for o in outputs:
            size = len(o.content.encode("utf-8"))
            if size > left:
                marker = CUT_MARKER if left > len(CUT_MARKER) else ""
                o = replace(o, content=cut_bytes(o.content, max(0, left - len(marker))) + marker)
                size = len(o.content.encode("utf-8"))
            left -= size
            out.append(o)
        return out

    def _line(self, turn: Turn) -> str:
        calls = []
        for o in turn.outputs:
            result = first_line(o.content) or "(empty)"
            calls.append(
                f"{o.call.name}({short_arguments(o.call.arguments)}) -> {'error: ' if o.is_error else ''}{result}"
            )
        body = "; ".join(calls) or f"no tool call ({first_line(turn.note) or first_line(turn.text) or 'empty reply'})"
        return cut_bytes(f"- turn {turn.number}: {body}", self.policy.line_bytes)

    def _summary(self, elided: Sequence[Turn]) -> str:
        keep = self.policy.elided_turns
        shown = list(elided[-keep:]) if keep else []
        folded = elided[: len(elided) - len(shown)]
        lines = [SUMMARY_HEADER]
        if folded:
            counts = Counter(o.call.name for t in folded for o in t.outputs)
            tools = ", ".join(f"{cut_bytes(name, 32)} x{n}" for name, n in sorted(counts.items())) or "no tool calls"
            files = sorted({p for t in folded for o in t.outputs if (p := written_path(o))})
            written = f"; files written: {', '.join(files)}" if files else ""
            fold = f"- turns {folded[0].number}-{folded[-1].number}: {tools}{written}"
            lines.append(cut_bytes(fold, 2 * self.policy.line_bytes))
        lines.extend(self._line(turn) for turn in shown)
        return "\n".join(lines)

    # --- the bound ------------------------------------------------------------------------------------

    def fixed_tokens(self) -> int:
        """``F``: the head, and the tools when they travel natively."""
        return estimate_tokens(self.head, self.tools if self.protocol == "native" else ())

    def summary_tokens(self) -> int:
        """``H``: the most the summary section adds to the task message."""
        p = self.policy
        most = len(SUMMARY_HEADER.encode()) + (1 + 2 * p.line_bytes) + p.elided_turns * (1 + p.line_bytes)
        return math.ceil(most / 3) + 1  # +1: ceil of a sum <= sum of ceils + 1

    def newest_turn_tokens(self) -> int:
        """``N``: the most the newest turn (and the turns-left nudge) can take."""
        p = self.policy
        ids = math.ceil((ID_MAX_BYTES + NAME_MAX_BYTES) / 3) + 1
        per_call = 2 * ids + TOKENS_PER_MESSAGE + 1  # id and name in the call and in its result message, rounding
        said = math.ceil(p.said_bytes / 3) + MAX_CALLS_PER_TURN + 1  # text and arguments, each rounded up
        results = math.ceil(p.result_bytes / 3)
        text_framing = math.ceil(MAX_CALLS_PER_TURN * (NAME_MAX_BYTES + 40) / 3)  # "Result of <name>:" headers
        note = TOKENS_PER_MESSAGE + math.ceil((NOTE_MAX_BYTES + 80) / 3)
        nudge = TOKENS_PER_MESSAGE + 30
        return TOKENS_PER_MESSAGE + said + results + MAX_CALLS_PER_TURN * per_call + text_framing + note + nudge

    def bound(self) -> int:
        """``F + H + B + N``: no request of this loop is larger, in estimated tokens, however many turns run."""
        return self.fixed_tokens() + self.summary_tokens() + self.policy.budget_tokens + self.newest_turn_tokens()
