"""Costs: totals by agent, by model and by day with every token component, over a date range.

Simulated spend (demo tiers) is shown in its own rows and its own total, never added to real spend; calls whose
usage is unknown are counted as unpriced, never as $0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

from supervisor.clock import local_day_start
from supervisor.ledger import ReportRow
from supervisor.render import money, tokens
from supervisor.runtime.events import CallRecorded, RunFinished
from supervisor.tui.data import RANGE_PRESETS, CostsData, DateRange, load_costs, parse_range, preset_range
from supervisor.tui.messages import CostsLoaded, FeedItem
from supervisor.tui.screens.base import SupervisorScreen
from supervisor.tui.widgets.cells import Palette, one_line
from supervisor.tui.widgets.chart import SpendChart
from supervisor.tui.widgets.table import LiveTable, Row
from supervisor.tui.widgets.topbar import TopBar

REPORT_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("group", "", 28),
    ("cost", "cost", 11),
    ("calls", "calls", 6),
    ("unpriced", "unpriced", 8),
    ("input", "in", 7),
    ("cache_read", "cache rd", 8),
    ("cache_write", "cache wr", 8),
    ("output", "out", 7),
    ("compute", "local cpu", 9),
)


class CostsScreen(SupervisorScreen):
    AUTO_FOCUS = "#by-agent"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left_square_bracket", "range(-1)", "Prev range"),
        Binding("right_square_bracket", "range(1)", "Next range"),
        Binding("slash", "custom_range", "Dates"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._preset = RANGE_PRESETS.index("this month")
        self._custom: DateRange | None = None
        self._costs: CostsData | None = None

    def compose(self) -> ComposeResult:
        yield TopBar("Costs")
        yield Static(id="costs-range")
        yield Input(placeholder="YYYY-MM-DD..YYYY-MM-DD, then Enter (Esc cancels)", id="range-input")
        yield SpendChart(id="costs-chart")
        yield Static(id="costs-totals")
        with TabbedContent(id="costs-tabs"):
            for name, label in (("agent", "By agent"), ("model", "By model"), ("day", "By day")):
                with TabPane(label, id=f"tab-{name}"):
                    table = LiveTable(id=f"by-{name}")
                    for key, title, width in REPORT_COLUMNS:
                        table.add_column(title or name, width=width, key=key)
                    yield table
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.reload()

    @property
    def date_range(self) -> DateRange:
        if self._custom is not None:
            return self._custom
        today = local_day_start(self.sup.clock()).date()
        return preset_range(RANGE_PRESETS[self._preset], today)

    def action_range(self, step: int) -> None:
        if self._custom is not None:
            self._custom = None
        else:
            self._preset = (self._preset + step) % len(RANGE_PRESETS)
        self.reload()

    def action_custom_range(self) -> None:
        field = self.query_one("#range-input", Input)
        field.add_class("-open")
        field.focus()

    def action_back(self) -> None:
        field = self.query_one("#range-input", Input)
        if field.has_class("-open"):
            field.remove_class("-open")
            self.query_one("#by-agent").focus()
            return
        self.sup.action_home()

    @on(Input.Submitted, "#range-input")
    def _range_entered(self, event: Input.Submitted) -> None:
        try:
            self._custom = parse_range(event.value)
        except ValueError as exc:
            self.notify(str(exc), severity="warning")
            return
        event.input.remove_class("-open")
        self.query_one("#by-agent").focus()
        self.reload()

    def reload(self) -> None:
        span = self.date_range
        self.query_one("#costs-range", Static).update(range_text(span, self.palette))
        if self.sup.reader_ready:
            self._load(span)

    @work(thread=True, exclusive=True, group="costs")
    def _load(self, span: DateRange) -> None:
        today = local_day_start(self.sup.clock()).date()
        self.post_message(CostsLoaded(load_costs(self.sup.reader(), span, today)))

    def on_costs_loaded(self, message: CostsLoaded) -> None:
        message.stop()
        if message.costs.range != self.date_range:
            return  # a newer range was asked for while this one loaded
        self._costs = message.costs
        self._draw()

    def _draw(self) -> None:
        costs = self._costs
        if costs is None:
            return
        p = self.palette
        self.query_one("#costs-chart", SpendChart).days = tuple(costs.days)
        self.query_one("#costs-totals", Static).update(totals_text(costs.by_agent, p))
        for name, rows in (("agent", costs.by_agent), ("model", costs.by_model), ("day", costs.by_day)):
            table = self.query_one(f"#by-{name}", LiveTable)
            ordered = sorted(rows, key=lambda r: r.group, reverse=True) if name == "day" else rows
            table.show_rows([report_cells(r, p) for r in ordered])

    def apply_feed(self, items: Sequence[FeedItem]) -> None:
        if any(i.kind in (CallRecorded.kind, RunFinished.kind) for i in items) and self.app.screen is self:
            self.reload()

    def repaint(self) -> None:
        for name in ("agent", "model", "day"):
            self.query_one(f"#by-{name}", LiveTable).forget()
        self.reload()


def range_text(span: DateRange, p: Palette) -> Text:
    out = Text(" range ", style=p.muted)
    out.append(span.label, style="bold")
    if span.since or span.until:
        out.append(f"  ({span.since or '…'} … {span.until or '…'})", style=p.muted)
    out.append("   [ ] change · / dates", style=p.muted)
    return out


def report_cells(r: ReportRow, p: Palette) -> Row:
    group = Text(one_line(r.group, 28)) if not r.simulated else Text("≈ " + one_line(r.group, 26), style=p.simulated)
    cost = Text(money(r.cost_micros), style=p.simulated if r.simulated else "bold")
    if r.unpriced_calls:
        cost.append("+?", style=p.attention)
    unpriced = Text(f"⚠ {r.unpriced_calls}", style=p.attention) if r.unpriced_calls else Text("")
    return (
        f"{r.group}\0{int(r.simulated)}",
        [
            group,
            cost,
            str(r.calls),
            unpriced,
            tokens(r.input_uncached),
            tokens(r.cache_read),
            tokens(r.cache_write),
            tokens(r.output),
            f"{r.local_compute_s:.1f}s" if r.local_compute_s else "",
        ],
    )


def totals_text(rows: Sequence[ReportRow], p: Palette) -> Text:
    real = sum(r.cost_micros for r in rows if not r.simulated)
    simulated = sum(r.cost_micros for r in rows if r.simulated)
    unpriced = sum(r.unpriced_calls for r in rows)
    compute = sum(r.local_compute_s for r in rows)
    calls = sum(r.calls for r in rows)
    out = Text(" real spend ")
    out.append(money(real), style="bold")
    if simulated:
        out.append("  ·  ≈ simulated ", style=p.simulated)
        out.append(money(simulated), style=f"{p.simulated} bold")
        out.append(" (demo tiers, not billed)", style=p.simulated)
    out.append(f"  ·  {calls:,} calls", style=p.muted)
    if unpriced:
        out.append(f"  ·  ⚠ {unpriced} unpriced (usage unknown, not in totals)", style=p.attention)
    if compute:
        out.append(f"  ·  local compute {compute:.1f}s", style=p.muted)
    return out
