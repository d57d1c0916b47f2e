"""Alarms: every runaway-breaker trip with the evidence it saw; resume the agent from here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Static

from supervisor.clock import parse_iso
from supervisor.runtime.events import AgentStateChanged, BreakerTripped
from supervisor.tui.data import Alarm, load_alarms
from supervisor.tui.messages import AlarmsLoaded, FeedItem
from supervisor.tui.screens.base import SupervisorScreen
from supervisor.tui.widgets.cells import Palette, one_line, safe, when
from supervisor.tui.widgets.table import LiveTable, Row
from supervisor.tui.widgets.topbar import TopBar

RULES = {
    "rising_input": "rising input",
    "hourly_spend": "hourly spend",
    "repeated_failure": "same failure",
}


class AlarmsScreen(SupervisorScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("u", "resume", "Resume agent"),
        Binding("escape", "app.home", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._alarms: list[Alarm] = []

    def compose(self) -> ComposeResult:
        yield TopBar("Alarms")
        table = LiveTable(id="alarms")
        for key, label, width in (
            ("when", "when", 9),
            ("agent", "agent", 14),
            ("rule", "rule", 13),
            ("state", "now", 11),
            ("message", "what the breaker saw", 40),
        ):
            table.add_column(label, width=width, key=key)
        yield table
        with VerticalScroll(id="evidence-scroll"):
            yield Static(id="evidence")
        yield Footer()

    @property
    def selected(self) -> Alarm | None:
        key = self.selected_row_key()
        return next((a for a in self._alarms if str(a.event_id) == key), None)

    @property
    def selected_agent(self) -> str | None:
        alarm = self.selected
        return alarm.agent if alarm else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "resume":
            alarm = self.selected
            return alarm is not None and alarm.still_paused
        return True

    def on_mount(self) -> None:
        super().on_mount()
        self.reload()

    def reload(self) -> None:
        if self.sup.reader_ready:
            self._load()

    @work(thread=True, exclusive=True, group="alarms")
    def _load(self) -> None:
        self.post_message(AlarmsLoaded(load_alarms(self.sup.reader())))

    def on_alarms_loaded(self, message: AlarmsLoaded) -> None:
        message.stop()
        self._alarms = list(message.alarms)
        self._draw()

    def _draw(self) -> None:
        p = self.palette
        now = self.sup.clock()
        rows: list[Row] = []
        for a in self._alarms:
            state = Text("‖ paused", style=f"{p.bad} bold") if a.still_paused else Text("resumed", style=p.muted)
            rows.append(
                (
                    str(a.event_id),
                    [
                        when(parse_iso(a.at), now),
                        Text(a.agent, style="bold"),
                        RULES.get(a.rule, a.rule),
                        state,
                        one_line(a.message, 200),
                    ],
                )
            )
        self.query_one(LiveTable).show_rows(rows)
        self._show_evidence()

    def _show_evidence(self) -> None:
        alarm = self.selected
        p = self.palette
        target = self.query_one("#evidence", Static)
        if alarm is None:
            target.update(Text(" no breaker alarms: the runaway breaker has never tripped", style=p.muted))
            return
        target.update(evidence_text(alarm, p))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_evidence()
        self.sup.refresh_bindings()

    def action_resume(self) -> None:
        alarm = self.selected
        if alarm is not None and alarm.still_paused:
            self.sup.resume(alarm.agent)

    def apply_feed(self, items: Sequence[FeedItem]) -> None:
        if any(i.kind in (BreakerTripped.kind, AgentStateChanged.kind) for i in items):
            self.reload()

    def repaint(self) -> None:
        self.query_one(LiveTable).forget()
        self._draw()


def evidence_text(alarm: Alarm, p: Palette) -> Text:
    out = Text()
    out.append(f" {alarm.agent}", style="bold")
    out.append(f"  {RULES.get(alarm.rule, alarm.rule)}  ", style=p.bad)
    out.append(f"at {parse_iso(alarm.at).astimezone():%Y-%m-%d %H:%M:%S}\n", style=p.muted)
    out.append(" " + safe(alarm.message) + "\n")
    if alarm.evidence:
        out.append(" evidence\n", style=p.muted)
        for key, value in alarm.evidence.items():
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            out.append(f"   {safe(str(key))}: ", style=p.muted)
            out.append(safe(shown) + "\n")
    if alarm.still_paused:
        out.append("\n\n u resumes the agent (its next run starts at the bottom of its ladder)", style=p.attention)
    return out
