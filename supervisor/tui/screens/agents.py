"""Home: one row per agent (state, position, spend against caps, tokens, last gate, next run)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from supervisor.clock import parse_iso
from supervisor.render import money, tokens
from supervisor.runtime.status import AgentStatus
from supervisor.tui.data import Snapshot
from supervisor.tui.messages import FeedItem
from supervisor.tui.screens.base import SupervisorScreen
from supervisor.tui.widgets.cells import (
    Palette,
    cap_money,
    one_line,
    outcome_text,
    spend_bar,
    state_text,
    when,
)
from supervisor.tui.widgets.table import LiveTable, Panel, Row
from supervisor.tui.widgets.topbar import TopBar

STEP_WIDTH = 13
GATE_WIDTH = 13
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("state", "state", 10),
    ("agent", "agent", 10),
    ("step", "tier · step", STEP_WIDTH),
    ("today", "today · of cap", 18),
    ("month", "month · of cap", 18),
    ("tokens", "in/cache/out", 12),
    ("gate", "last gate", GATE_WIDTH),
    ("next", "next run", 9),
)
_GATE = re.compile(r"^(?P<step>.*): (?P<result>pass|fail) at (?P<tier>.*)$")

GETTING_STARTED = """\
No agents yet.

  supervisor init     write a starter supervisor.toml for this machine
  supervisor demo     watch three simulated agents run (nothing is billed)

Then open `supervisor` again (or run `supervisor daemon` and attach to it)."""


class AgentsScreen(SupervisorScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._snapshot: Snapshot | None = None
        self._had_selection = False

    def compose(self) -> ComposeResult:
        yield TopBar("Agents")
        table = LiveTable(id="agents", on_cursor=self._show_detail)
        for key, label, width in COLUMNS:
            table.add_column(label, width=width, key=key)
        yield table
        yield Panel(id="agent-detail")
        yield Static(GETTING_STARTED, id="getting-started")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        if self.sup.snapshot is not None:
            self.apply_snapshot(self.sup.snapshot)
        else:
            self.query_one("#agent-detail", Panel).show(Text("loading…", style=self.palette.muted))
        self._toggle_empty()

    @property
    def selected_agent(self) -> str | None:
        return self.selected_row_key()

    def _toggle_empty(self) -> None:
        empty = not self.sup.config.agents
        self.query_one("#getting-started").display = empty
        self.query_one(LiveTable).display = not empty
        self.query_one("#agent-detail").display = not empty
        if empty and self.sup.config_path_hint:
            hint = Text(GETTING_STARTED + f"\n\nConfig looked for at: {self.sup.config_path_hint}")
            self.query_one("#getting-started", Static).update(hint)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot
        p = self.palette
        rows: list[Row] = [(s.name, agent_cells(s, snapshot, p)) for s in snapshot.statuses]
        self.query_one(LiveTable).show_rows(rows)
        self._show_detail()

    def apply_feed(self, items: Sequence[FeedItem]) -> None:
        pass  # the app reloads the snapshot (debounced) when an event changes what this screen shows

    def repaint(self) -> None:
        self.query_one(LiveTable).forget()
        if self._snapshot is not None:
            self.apply_snapshot(self._snapshot)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if not self._had_selection:  # p and r become available: redraw the footer once, not on every move
            self._had_selection = True
            self.sup.refresh_bindings()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.sup.open_agent(str(event.row_key.value))

    def action_open(self) -> None:
        agent = self.selected_agent
        if agent is not None:
            self.sup.open_agent(agent)

    def _show_detail(self) -> None:
        panels = self.query("#agent-detail")
        detail = panels.first() if panels else None
        if not isinstance(detail, Panel):
            return  # the screen is still being built, or already torn down
        snapshot = self._snapshot
        name = self.selected_agent
        status = next((s for s in snapshot.statuses if s.name == name), None) if snapshot else None
        if status is None or snapshot is None:
            detail.show(Text(""))
            return
        detail.show(agent_detail_text(status, snapshot, self.palette))


def tier_text(tier: str | None, p: Palette) -> Text:
    """The tier, coloured by what it costs (the word is always there)."""
    colour = {"local": p.ok, "cheap": p.attention, "frontier": p.bad}.get(tier or "", p.muted)
    return Text(tier or "?", style=colour)


def agent_cells(s: AgentStatus, snapshot: Snapshot, p: Palette) -> list[RenderableType]:
    simulated = snapshot.simulated.get(s.name, False)
    if s.current_step and s.state in ("running", "waiting_approval", "deferred"):
        step = tier_text(s.current_tier, p)
        step.append(" " + one_line(s.current_step, max(2, STEP_WIDTH - len(step.plain) - 1)))
    else:
        step = Text("—", style=p.muted)
    if s.name in snapshot.loading:
        wait = Text("…", style=p.muted)
        return [
            state_text(s.state, p),
            Text(s.name, style="bold"),
            step,
            wait,
            wait,
            wait,
            wait,
            next_run_text(s, snapshot, p),
        ]
    t = s.tokens_today
    token_text = Text(
        f"{tokens(t.get('input_uncached', 0))}/{tokens(t.get('cache_read', 0))}/{tokens(t.get('output', 0))}"
    )
    return [
        state_text(s.state, p),
        Text(s.name, style="bold"),
        step,
        spend_bar(s.spend_day_micros, s.cap_day_micros, p, width=4, simulated=simulated, compact=True),
        spend_bar(s.spend_month_micros, s.cap_month_micros, p, width=4, simulated=simulated, compact=True),
        token_text,
        gate_text(s.last_gate, p),
        next_run_text(s, snapshot, p),
    ]


def gate_text(last_gate: str | None, p: Palette) -> Text:
    """``✓ cheap write``: the verdict, the tier that reached it, then the step if it fits."""
    if not last_gate:
        return Text("—", style=p.muted)
    match = _GATE.match(last_gate)
    if match is None:
        return Text(one_line(last_gate, GATE_WIDTH))
    passed = match["result"] == "pass"
    out = Text("✓ " if passed else "✗ ", style=p.ok if passed else p.bad)
    tier = match["tier"] if match["tier"] not in ("None", "") else ""
    if tier:
        out.append(tier, style=p.muted)
    room = GATE_WIDTH - len(out.plain) - (1 if tier else 0)
    if room >= 3:
        out.append((" " if tier else "") + one_line(match["step"], room))
    return out


def next_run_text(s: AgentStatus, snapshot: Snapshot, p: Palette) -> Text:
    if s.state == "paused":
        return Text("paused", style=p.muted)
    if not s.schedule:
        return Text("on demand", style=p.muted)
    if s.next_run_at is None:
        return Text("—", style=p.muted)
    return Text(when(parse_iso(s.next_run_at), snapshot.now))


def agent_detail_text(s: AgentStatus, snapshot: Snapshot, p: Palette) -> Text:
    """Everything about the highlighted agent that the columns abbreviate (fits 80 columns, 5 lines)."""
    simulated = snapshot.simulated.get(s.name, False)
    out = Text(no_wrap=False)
    out.append(f"{s.name}  ", style="bold")
    out.append_text(state_text(s.state, p, long=True))
    if s.state_reason and s.state != "idle":
        out.append(f"  {one_line(s.state_reason, 120)}", style=p.muted)
    out.append("\n")
    if s.current_step and s.state in ("running", "waiting_approval", "deferred"):
        out.append(f"step {one_line(s.current_step, 30)}")
        if s.current_tier:
            out.append(f" at {s.current_tier}")
        if s.current_model:
            out.append(f" ({one_line(s.current_model, 40)})", style=p.muted)
        out.append("   ")
    out.append(f"schedule {s.schedule or 'on demand'}", style=p.muted)
    if s.schedule and s.next_run_at and s.state != "paused":
        out.append(f" · next {when(parse_iso(s.next_run_at), snapshot.now)}", style=p.muted)
    out.append("\n")
    if s.name in snapshot.loading:
        out.append("loading spend, tokens and the last run…", style=p.muted)
        return out
    out.append("today ")
    out.append_text(spend_bar(s.spend_day_micros, s.cap_day_micros, p, width=10, simulated=simulated))
    out.append("   month ")
    out.append_text(spend_bar(s.spend_month_micros, s.cap_month_micros, p, width=10, simulated=simulated))
    if s.cap_run_micros is not None:
        out.append(f"   run cap {cap_money(s.cap_run_micros)}", style=p.muted)
    if simulated:
        out.append("   simulated tiers: not billed", style=p.simulated)
    if snapshot.complete and (snapshot.global_day_cap is not None or snapshot.global_month_cap is not None):
        out.append("\nall agents: today ", style=p.muted)
        out.append_text(spend_bar(snapshot.global_day_spend, snapshot.global_day_cap, p, width=10))
        out.append("   month ", style=p.muted)
        out.append_text(spend_bar(snapshot.global_month_spend, snapshot.global_month_cap, p, width=10))
    out.append("\n")
    t = s.tokens_today
    out.append(
        f"tokens today: {t.get('input_uncached', 0):,} uncached in · {t.get('cache_read', 0):,} cache read · "
        f"{t.get('cache_write', 0):,} cache write · {t.get('output', 0):,} out"
    )
    if s.local_compute_s_today:
        out.append(f" · local compute {s.local_compute_s_today:.1f}s", style=p.muted)
    out.append("\n")
    if s.last_run:
        run = s.last_run
        out.append(f"last run #{run['id']} ")
        out.append_text(outcome_text(str(run["outcome"]), p))
        out.append(f" {money(run.get('cost_micros') or 0)}")
        if run.get("unpriced_calls"):
            out.append(f" + {run['unpriced_calls']} unpriced", style=p.attention)
        out.append(f" {when(parse_iso(run['started_at']), snapshot.now)}", style=p.muted)
    else:
        out.append("never run", style=p.muted)
    if s.wake_estimate is not None:
        w = s.wake_estimate
        out.append(
            f"  ·  per wake {money(w.warm_micros)} warm / {money(w.cold_micros)} cold, expect {w.expected}",
            style=p.muted,
        )
    if s.pending_approvals:
        out.append(f"  ·  {s.pending_approvals} approval(s) pending (a)", style=p.attention)
    if s.learned_skips:
        skips = ", ".join(f"{k['step']}@{k['tier']}" for k in s.learned_skips)
        out.append(f"\nlearned: skipping {one_line(skips, 100)}", style=p.muted)
    if s.breaker:
        out.append("\n")
        out.append(f"breaker ({s.breaker.get('rule')}): ", style=f"{p.bad} bold")
        out.append(one_line(str(s.breaker.get("message", "")), 160))
    return out
