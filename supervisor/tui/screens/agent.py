"""One agent: the live step log (with model output streaming), its digest, recent runs, spend per day, caps,
and the processes it has running now."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from supervisor.clock import parse_iso
from supervisor.render import money, tokens
from supervisor.runtime.events import CallRecorded, DigestWritten, RunFinished
from supervisor.tui.data import AgentDetail, Snapshot, load_agent_detail
from supervisor.tui.messages import AgentDetailLoaded, FeedItem, ProcessesSampled, from_row
from supervisor.tui.screens.base import SupervisorScreen
from supervisor.tui.widgets.cells import (
    Palette,
    bytes_text,
    cap_money,
    one_line,
    outcome_text,
    safe,
    spend_bar,
    state_text,
    when,
)
from supervisor.tui.widgets.chart import SpendChart
from supervisor.tui.widgets.steplog import StepLog
from supervisor.tui.widgets.table import LiveTable, Panel, Row
from supervisor.tui.widgets.topbar import TopBar

PROCESS_SAMPLE_S = 2.0


class AgentScreen(SupervisorScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, agent: str) -> None:
        super().__init__()
        self.agent = agent
        self._detail: AgentDetail | None = None
        self._live = False  # history written: live events now go straight to the log
        self._processes: list[dict[str, object]] = []

    @property
    def selected_agent(self) -> str | None:
        return self.agent

    def compose(self) -> ComposeResult:
        yield TopBar(f"Agent {self.agent}")
        yield Panel(id="agent-summary")
        with Horizontal(id="agent-body"):
            with Vertical(id="log-pane"):
                yield Static(Text(" step log", style="bold"), classes="pane-title")
                yield StepLog(self.palette, id="steplog")
            with TabbedContent(id="agent-tabs"):
                with TabPane("Runs", id="tab-runs"):
                    runs = LiveTable(id="runs")
                    for key, label, width in (
                        ("id", "run", 5),
                        ("outcome", "outcome", 11),
                        ("cost", "cost", 10),
                        ("when", "started", 8),
                    ):
                        runs.add_column(label, width=width, key=key)
                    yield runs
                with TabPane("Spend", id="tab-spend"):
                    yield SpendChart(id="agent-chart")
                    yield Static(id="agent-caps")
                with TabPane("Digest", id="tab-digest"), VerticalScroll():
                    yield Static(id="digest")
                with TabPane("Procs", id="tab-procs"):
                    procs = LiveTable(id="procs")
                    for key, label, width in (
                        ("pid", "pid", 7),
                        ("name", "process", 14),
                        ("cpu", "CPU", 6),
                        ("rss", "RSS", 10),
                    ):
                        procs.add_column(label, width=width, key=key)
                    yield procs
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.reload()
        self._render_summary()
        self.set_interval(PROCESS_SAMPLE_S, self._sample_processes)
        self._sample_processes()

    def action_back(self) -> None:
        self.app.pop_screen()

    # --------------------------------------------------------------------------------------------------------
    # Data in

    def reload(self) -> None:
        if self.sup.reader_ready:
            self._load_detail()

    @work(thread=True, exclusive=True, group="agent-detail")
    def _load_detail(self) -> None:
        worker = get_current_worker()
        app = self.sup
        detail = load_agent_detail(app.config, app.reader(), self.agent, app.clock(), app.start_event_id)
        if not worker.is_cancelled:
            self.post_message(AgentDetailLoaded(detail))

    def on_agent_detail_loaded(self, message: AgentDetailLoaded) -> None:
        message.stop()
        detail = message.detail
        self._detail = detail
        if not self._live:
            log = self.query_one(StepLog)
            for row in detail.backlog:
                log.add(from_row(row))
            for item in self.sup.live_items(self.agent):
                log.add(item)
            self._live = True
        self._render_detail()

    def _sample_processes(self) -> None:
        if self.app.screen is self:
            self._sample()

    @work(thread=True, exclusive=True, group="agent-procs")
    def _sample(self) -> None:
        rows = self.sup.sample_processes(self.agent)
        self.post_message(ProcessesSampled(self.agent, rows))

    def on_processes_sampled(self, message: ProcessesSampled) -> None:
        message.stop()
        self._processes = list(message.rows)
        table = self.query_one("#procs", LiveTable)
        rows: list[Row] = [
            (
                str(r["pid"]),
                [
                    str(r["pid"]),
                    one_line(str(r.get("name", "?")), 14),
                    f"{float(r.get('cpu_percent', 0.0)):.0f}%",
                    bytes_text(int(r.get("rss_bytes", 0))),
                ],
            )
            for r in message.rows
        ]
        table.show_rows(rows)

    def apply_feed(self, items: Sequence[FeedItem]) -> None:
        mine = [i for i in items if i.agent == self.agent]
        if not mine:
            return
        if self._live:
            log = self.query_one(StepLog)
            for item in mine:
                log.add(item)
        if any(i.kind in (RunFinished.kind, CallRecorded.kind, DigestWritten.kind) for i in mine):
            self.reload()

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._render_summary()

    def repaint(self) -> None:
        self.query_one(StepLog).set_palette(self.palette)
        self.query_one("#runs", LiveTable).forget()
        self._render_summary()
        self._render_detail()

    # --------------------------------------------------------------------------------------------------------
    # Drawing

    def _render_summary(self) -> None:
        summary = self.query_one("#agent-summary", Panel)
        snapshot = self.sup.snapshot
        status = next((s for s in snapshot.statuses if s.name == self.agent), None) if snapshot else None
        p = self.palette
        if status is None or snapshot is None:
            summary.show(Text(f" {self.agent}: loading…", style=p.muted))
            return
        simulated = snapshot.simulated.get(self.agent, False)
        out = Text(" ")
        out.append_text(state_text(status.state, p, long=True))
        if status.state_reason and status.state != "idle":
            out.append(f"  {one_line(status.state_reason, 90)}", style=p.muted)
        out.append("\n ")
        if status.current_step and status.state in ("running", "waiting_approval", "deferred"):
            out.append(f"step {one_line(status.current_step, 24)}", style="bold")
            if status.current_tier:
                out.append(f" at {status.current_tier}")
            if status.current_model:
                out.append(f" · {one_line(status.current_model, 40)}", style=p.muted)
        else:
            out.append("no step running", style=p.muted)
        out.append(f"   schedule {status.schedule or 'on demand'}", style=p.muted)
        if status.schedule and status.next_run_at and status.state != "paused":
            out.append(f", next {when(parse_iso(status.next_run_at), snapshot.now)}", style=p.muted)
        out.append("\n today ")
        out.append_text(spend_bar(status.spend_day_micros, status.cap_day_micros, p, width=8, simulated=simulated))
        out.append("  month ")
        out.append_text(spend_bar(status.spend_month_micros, status.cap_month_micros, p, width=8, simulated=simulated))
        t = status.tokens_today
        out.append(
            f"  tokens {tokens(t.get('input_uncached'))}/{tokens(t.get('cache_read'))}/{tokens(t.get('output'))}",
            style=p.muted,
        )
        summary.show(out)

    def _render_detail(self) -> None:
        detail = self._detail
        if detail is None:
            return
        p = self.palette
        now = self.sup.clock()
        runs: list[Row] = []
        for run in detail.runs:
            cost = Text(money(run.get("cost_micros") or 0))
            if run.get("unpriced_calls"):
                cost.append("+?", style=p.attention)
            if run.get("simulated"):
                cost.stylize(p.simulated)
            runs.append(
                (
                    str(run["id"]),
                    [
                        f"#{run['id']}",
                        outcome_text(str(run["outcome"]), p),
                        cost,
                        when(parse_iso(run["started_at"]), now),
                    ],
                )
            )
        self.query_one("#runs", LiveTable).show_rows(runs)
        self.query_one("#agent-chart", SpendChart).days = tuple(detail.days)
        self.query_one("#agent-caps", Static).update(caps_text(detail, p))
        digest = detail.digest.strip()
        self.query_one("#digest", Static).update(
            Text(safe(digest)) if digest else Text("no digest yet: it is written at the end of each run", style=p.muted)
        )


def caps_text(detail: AgentDetail, p: Palette) -> Text:
    caps = detail.caps
    out = Text()
    out.append("today  ")
    out.append_text(spend_bar(detail.spend_day_micros, caps.agent_day_micros, p, width=10))
    out.append("\nmonth  ")
    out.append_text(spend_bar(detail.spend_month_micros, caps.agent_month_micros, p, width=10))
    if detail.simulated_day_micros:
        out.append(f"\nof today, {money(detail.simulated_day_micros)} simulated (not billed)", style=p.simulated)
    limits = []
    if caps.run_micros is not None:
        limits.append(f"run {cap_money(caps.run_micros)}")
    if caps.global_day_micros is not None:
        limits.append(f"all agents/day {cap_money(caps.global_day_micros)}")
    if caps.global_month_micros is not None:
        limits.append(f"all agents/month {cap_money(caps.global_month_micros)}")
    for label, value in (
        ("run tokens", caps.run_tokens),
        ("tokens/day", caps.agent_day_tokens),
        ("tokens/month", caps.agent_month_tokens),
    ):
        if value is not None:
            limits.append(f"{label} {value:,}")
    out.append("\ncaps: " + (", ".join(limits) if limits else "no run or global caps"), style=p.muted)
    return out
