"""The live step log: one line per event, and the model's output as it streams in."""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import RichLog, Static

from supervisor.render import money, tokens, tool_call_text
from supervisor.runtime.events import (
    AgentDeferred,
    AgentStateChanged,
    ApprovalDecided,
    BreakerTripped,
    CallRecorded,
    CallStarted,
    CommandFinished,
    DigestWritten,
    Escalated,
    EscalationRequested,
    GateChecked,
    GatewayRefused,
    ModelSubstituted,
    Notice,
    PlanRecorded,
    ProgramFinished,
    ProgramOutput,
    ProgramStarted,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    StepVerified,
    TextStreamed,
    TierSkipped,
    TurnFinished,
    WorkerFinished,
    WorkspaceRestored,
)
from supervisor.tui.messages import FeedItem
from supervisor.tui.widgets.cells import Palette, local_clock, one_line, safe

STREAM_TAIL_CHARS = 4000
MAX_LINES = 2000


def describe(item: FeedItem, p: Palette) -> Text | None:
    """One styled line for an event (None for events not worth a line). Untrusted text never becomes markup."""
    d: dict[str, Any] = item.data
    kind = item.kind
    line = Text()

    def mark(symbol: str, colour: str) -> None:
        line.append(f"{symbol} ", style=f"{colour} bold")

    if kind == RunStarted.kind:
        mark("▶", p.busy)
        steps = ", ".join(str(s) for s in d.get("steps", [])) or "planner"
        line.append(f"run {item.run_id} started ({d.get('trigger', '?')}): {safe(steps)}")
        if d.get("simulated"):
            line.append("  simulated tiers", style=p.simulated)
    elif kind == StepStarted.kind:
        mark("─", p.muted)
        line.append(f"step {safe(str(d.get('step')))} ({d.get('step_kind', '?')})", style="bold")
    elif kind == CommandFinished.kind:
        ok = d.get("exit_code") == 0 and not d.get("timed_out")
        mark("$", p.ok if ok else p.bad)
        status = "timed out" if d.get("timed_out") else f"exit {d.get('exit_code')}"
        line.append(f"{one_line(str(d.get('command', '')), 80)} → {status} ({float(d.get('seconds') or 0):.2f}s)")
    elif kind == CallStarted.kind:
        mark("→", p.busy)
        line.append(f"{d.get('tier')} {safe(str(d.get('model')))} attempt {d.get('attempt')}")
        line.append(
            f"  ~{tokens(d.get('prompt_tokens'))} tokens in, up to {tokens(d.get('max_output_tokens'))} out,"
            f" reserved {money(d.get('reserved_micros'))}",
            style=p.muted,
        )
    elif kind == CallRecorded.kind:
        if d.get("error_class"):
            mark("✗", p.bad)
            line.append(f"{d.get('tier')} {safe(str(d.get('model')))}: {d.get('error_class')}: ")
            line.append(one_line(str(d.get("error", "")), 200), style=p.bad)
        else:
            mark("✓", p.ok)
            line.append(f"{d.get('tier')} {safe(str(d.get('model')))}: ")
            line.append(
                f"{tokens(d.get('input_uncached'))} in / {tokens(d.get('cache_read'))} cached / "
                f"{tokens(d.get('output'))} out  "
            )
            cost = money(d.get("cost_micros")) if d.get("priced") else "unpriced"
            line.append(cost, style=p.simulated if d.get("simulated") else "bold")
            if d.get("simulated"):
                line.append(" simulated", style=p.simulated)
            if d.get("latency_s") is not None:
                line.append(f"  {float(d['latency_s']):.2f}s", style=p.muted)
            if d.get("finish_reason") == "looping":
                line.append("  stopped: looping", style=p.bad)
    elif kind == TurnFinished.kind:
        calls = [c for c in d.get("tools", []) if isinstance(c, dict)]
        errors = any(c.get("error") for c in calls) or not calls
        mark("⚒", p.attention if errors else p.busy)
        line.append(f"turn {d.get('turn')}/{d.get('max_turns')} ", style="bold")
        if calls:
            line.append("; ".join(one_line(tool_call_text(c, 60), 200) for c in calls))
        else:
            line.append(f"no tool call: {one_line(str(d.get('note', '')), 160)}", style=p.bad)
        line.append(f"  {tokens(d.get('input_tokens'))} in / {tokens(d.get('output_tokens'))} out ", style=p.muted)
        cost = money(d.get("cost_micros")) if d.get("priced") else "unpriced"
        line.append(cost, style=p.simulated if d.get("simulated") else "bold")
    elif kind == WorkerFinished.kind:
        mark("⚒", p.muted)
        line.append(
            f"worker stopped after {d.get('turns')} turn(s) ({d.get('end')}): {one_line(str(d.get('summary', '')), 160)}",
            style=p.muted,
        )
    elif kind == ProgramStarted.kind:
        mark("⚙", p.busy)
        line.append(f"agent program at {d.get('tier')}, attempt {d.get('attempt')} (pid {d.get('pid')}): ")
        line.append(one_line(str(d.get("command", "")), 160), style=p.muted)
    elif kind == ProgramOutput.kind:
        lines = [safe(x) for x in str(d.get("text", "")).splitlines() if x.strip()]
        if not lines:
            return None
        line.append("\n".join(f"  │ {x[:300]}" for x in lines[-40:]), style=p.muted)
    elif kind == ProgramFinished.kind:
        ok = d.get("exit_code") == 0 and not d.get("stopped") and not d.get("timed_out")
        mark("⚙", p.ok if ok else p.bad)
        if d.get("stopped"):
            how = f"stopped ({one_line(str(d.get('stopped')), 120)})"
        elif d.get("timed_out"):
            how = "timed out"
        else:
            how = f"exited {d.get('exit_code')}"
        line.append(f"agent program {how} after {float(d.get('seconds') or 0):.1f}s: ", style="bold")
        line.append(
            f"{d.get('calls', 0)} call(s), {tokens(d.get('input_tokens'))} in / {tokens(d.get('output_tokens'))} out "
        )
        line.append(money(d.get("cost_micros")), style=p.simulated if d.get("simulated") else "bold")
        if d.get("unpriced_calls"):
            line.append(f" + {d.get('unpriced_calls')} unpriced", style=p.attention)
        if d.get("refused"):
            line.append(f"  {d.get('refused')} refused by the gateway", style=p.attention)
    elif kind == GateChecked.kind:
        passed = bool(d.get("passed"))
        mark("✓" if passed else "✗", p.ok if passed else p.bad)
        line.append(f"gate {one_line(str(d.get('gate', '')), 60)} {'passed' if passed else 'failed'}")
        if not passed and d.get("output"):
            line.append(": ")
            line.append(one_line(str(d.get("output")), 240), style=p.bad)
    elif kind == StepVerified.kind:
        mark("✓", p.ok)
        line.append(f"step {safe(str(d.get('step')))} verified at {d.get('tier')} ({safe(str(d.get('model')))})")
    elif kind == StepFinished.kind:
        if d.get("outcome") == "passed":
            return None
        mark("■", p.attention)
        line.append(f"step {safe(str(d.get('step')))}: {d.get('outcome')}")
    elif kind == WorkspaceRestored.kind:
        mark("↺", p.muted)
        line.append(
            f"workspace restored ({d.get('scope')}): {d.get('files_restored', 0)} put back, "
            f"{d.get('files_removed', 0)} removed",
            style=p.muted,
        )
    elif kind == Escalated.kind:
        mark("⇡", p.attention)
        line.append(f"escalating {d.get('from_tier')} → {d.get('to_tier')}: ")
        line.append(one_line(str(d.get("reason", "")), 160), style=p.muted)
    elif kind == TierSkipped.kind:
        mark("»", p.muted)
        line.append(f"skipping {d.get('tier')}: {one_line(str(d.get('reason', '')), 160)}", style=p.muted)
    elif kind == EscalationRequested.kind:
        mark("?", p.attention)
        line.append(f"approval #{d.get('approval_id')} needed: {safe(str(d.get('model')))} ", style="bold")
        line.append(
            f"est. {money(d.get('est_cold_micros'))} cold / {money(d.get('est_warm_micros'))} warm",
            style=p.attention,
        )
    elif kind == ApprovalDecided.kind:
        approved = bool(d.get("approved"))
        mark("✓" if approved else "✗", p.ok if approved else p.bad)
        line.append(f"approval #{d.get('approval_id')} {'approved' if approved else 'denied'} by {d.get('by')}")
    elif kind == AgentDeferred.kind:
        mark("◷", p.attention)
        line.append(f"deferred: {one_line(str(d.get('reason', '')), 200)}")
    elif kind == AgentStateChanged.kind:
        state = str(d.get("state"))
        if state not in ("paused", "idle") or not d.get("reason"):
            return None
        mark("‖" if state == "paused" else "·", p.accent if state == "paused" else p.muted)
        line.append(f"{state}: {one_line(str(d.get('reason', '')), 200)}")
    elif kind == ModelSubstituted.kind:
        mark("⇄", p.attention)
        line.append(f"gateway: {d.get('requested')} served by {d.get('served')} ({d.get('tier')})")
    elif kind == GatewayRefused.kind:
        mark("✗", p.bad)
        line.append(
            f"gateway refused {d.get('requested')} ({d.get('status')}): {one_line(str(d.get('reason', '')), 200)}"
        )
    elif kind == BreakerTripped.kind:
        mark("‖", p.bad)
        line.append(f"runaway breaker ({d.get('rule')}): ", style=f"{p.bad} bold")
        line.append(one_line(str(d.get("message", "")), 240))
    elif kind == DigestWritten.kind:
        mark("≡", p.muted)
        line.append(f"digest written ({d.get('tokens')} tokens)", style=p.muted)
    elif kind == PlanRecorded.kind:
        valid = bool(d.get("valid"))
        mark("✓" if valid else "✗", p.ok if valid else p.bad)
        line.append(f"plan from {d.get('tier')}: {d.get('steps')} step(s)" + ("" if valid else " (invalid)"))
    elif kind == Notice.kind:
        level = str(d.get("level", "info"))
        mark("!", p.bad if level == "error" else p.attention if level == "warning" else p.muted)
        line.append(one_line(str(d.get("message", "")), 300))
    elif kind == RunFinished.kind:
        outcome = str(d.get("outcome"))
        mark("■", p.ok if outcome == "success" else p.attention if outcome == "waiting_approval" else p.bad)
        line.append(f"run {item.run_id} {outcome.replace('_', ' ')}", style="bold")
        line.append(f"  {d.get('calls', 0)} call(s), {money(d.get('cost_micros'))}")
        if d.get("unpriced_calls"):
            line.append(f" + {d.get('unpriced_calls')} unpriced", style=p.attention)
        if d.get("reason") and outcome != "success":
            line.append(f"  {one_line(str(d.get('reason')), 160)}", style=p.muted)
    else:
        return None
    stamp = Text(f"{local_clock(item.at)} ", style=p.muted)
    return stamp + line


class StepLog(Vertical):
    """Events for one agent as they happen; the model's answer streams into the line under the log."""

    DEFAULT_CSS = """
    StepLog { height: 1fr; }
    StepLog > RichLog { height: 1fr; }
    StepLog > #stream { height: auto; max-height: 6; display: none; }
    StepLog > #stream.-streaming { display: block; }
    """

    def __init__(self, palette: Palette, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.palette = palette
        self._stream = ""
        self._stream_model = ""
        self._decided: set[int] = set()  # a decision is announced by the deciding view and by the waiting run
        # What the log shows, kept as facts (an event, or a streamed answer) so it can be drawn again when the
        # width changes (RichLog wraps as it writes) or the theme does (colours are baked into each line).
        self._entries: deque[FeedItem | str] = deque(maxlen=MAX_LINES)
        self._width = 0

    def compose(self) -> ComposeResult:
        yield RichLog(wrap=True, markup=False, highlight=False, max_lines=MAX_LINES, auto_scroll=True, min_width=20)
        yield Static(id="stream")

    def add(self, item: FeedItem) -> None:
        if item.kind == TextStreamed.kind:
            self._stream = (self._stream + str(item.data.get("text", "")))[-STREAM_TAIL_CHARS:]
            self._show_stream()
            return
        if item.kind == ApprovalDecided.kind:
            approval_id = int(item.data.get("approval_id") or 0)
            if approval_id in self._decided:
                return
            self._decided.add(approval_id)
        if item.kind == CallStarted.kind:
            self._flush_stream()
            self._stream_model = f"{item.data.get('tier')} {item.data.get('model')}"
            if (item.data.get("turn") or 1) > 1:
                return  # the worker's later turns: each turn's own line says enough
        if item.kind == CallRecorded.kind:
            if item.data.get("turn") is not None and not item.data.get("error_class"):
                self._clear_stream()  # the turn's line (next) shows its calls, tokens and cost
                return
            self._flush_stream(header=item)
            return
        self._write(item)

    def set_palette(self, palette: Palette) -> None:
        self.palette = palette
        self._redraw()

    def _render_entry(self, entry: FeedItem | str) -> Text | None:
        if isinstance(entry, str):
            return Text(indent_block(entry, 9), style=f"{self.palette.muted} italic")
        return describe(entry, self.palette)

    def _write(self, entry: FeedItem | str) -> None:
        text = self._render_entry(entry)
        if text is not None:
            self._entries.append(entry)
            self.query_one(RichLog).write(text)

    def _redraw(self) -> None:
        log = self.query_one(RichLog)
        log.clear()
        for entry in self._entries:
            text = self._render_entry(entry)
            if text is not None:
                log.write(text)

    def on_resize(self, event: events.Resize) -> None:
        """RichLog wraps lines when they are written: rewrap everything when the width changes."""
        if event.size.width != self._width:
            self._width = event.size.width
            self._redraw()

    def _show_stream(self) -> None:
        stream = self.query_one("#stream", Static)
        lines = safe(self._stream).splitlines()[-5:] or [""]
        shown = Text(f"▌ {safe(self._stream_model)} is answering…\n", style=self.palette.busy)
        shown.append("\n".join(lines), style="italic")
        stream.update(shown)
        stream.add_class("-streaming")

    def _clear_stream(self) -> None:
        self._stream = ""
        stream = self.query_one("#stream", Static)
        stream.update("")
        stream.remove_class("-streaming")

    def _flush_stream(self, header: FeedItem | None = None) -> None:
        """The call ended: its line, then the answer that streamed in (the ledger never stores it)."""
        if header is not None:
            self._write(header)
        if self._stream.strip():
            self._write(safe(self._stream.rstrip()))
        self._stream = ""
        stream = self.query_one("#stream", Static)
        stream.update("")
        stream.remove_class("-streaming")


def indent_block(text: str, spaces: int, max_lines: int = 12) -> str:
    lines = text.splitlines()
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], f"… ({len(lines) - max_lines + 1} more lines)"]
    pad = " " * spaces
    return "\n".join(pad + line for line in lines)
