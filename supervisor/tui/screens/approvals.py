"""Frontier escalations: the modal that pops up wherever you are, and the list where requests wait.

``y`` approves once, ``n`` denies, ``escape`` leaves the request pending. Nothing is ever approved by default:
there is no focused button that Enter could press, and closing the window leaves requests pending.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from supervisor.clock import parse_iso
from supervisor.ledger import ApprovalRow
from supervisor.render import money
from supervisor.runtime.events import ApprovalDecided, EscalationRequested, RunFinished
from supervisor.tui.data import load_approvals
from supervisor.tui.messages import ApprovalsLoaded, FeedItem
from supervisor.tui.screens.base import SupervisorScreen
from supervisor.tui.widgets.cells import (
    Palette,
    approval_state_text,
    bar,
    cap_money,
    one_line,
    palette,
    safe,
    when,
)
from supervisor.tui.widgets.table import LiveTable, Row
from supervisor.tui.widgets.topbar import TopBar


@dataclass(frozen=True)
class ApprovalView:
    """One request, whether it came from a live event, a ledger event row, or the approvals table."""

    id: int
    agent: str
    step: str
    model: str
    reason: str
    est_cold_micros: int | None
    est_warm_micros: int | None
    caps_left: dict[str, Any]
    simulated: bool
    state: str = "pending"
    requested_at: str | None = None
    decided_by: str | None = None

    @classmethod
    def from_feed(cls, item: FeedItem) -> ApprovalView:
        d = item.data
        return cls(
            id=int(d["approval_id"]),
            agent=item.agent or "?",
            step=str(d.get("step", "")),
            model=str(d.get("model", "")),
            reason=str(d.get("reason", "")),
            est_cold_micros=d.get("est_cold_micros"),
            est_warm_micros=d.get("est_warm_micros"),
            caps_left=dict(d.get("caps_left") or {}),
            simulated=bool(d.get("simulated")),
        )

    @classmethod
    def from_row(cls, row: ApprovalRow) -> ApprovalView:
        return cls(
            id=row.id,
            agent=row.agent,
            step=row.step,
            model=row.model,
            reason=row.reason,
            est_cold_micros=row.est_cold_micros,
            est_warm_micros=row.est_warm_micros,
            caps_left=row.caps_left,
            simulated=row.simulated,
            state=row.state,
            requested_at=row.requested_at,
            decided_by=row.decided_by,
        )


def request_text(view: ApprovalView, p: Palette, *, reason_lines: int | None = None) -> Text:
    """The facts a human needs to decide: who, which step, why, which model, what it may cost, what is left."""
    out = Text()
    out.append("agent   ", style=p.muted)
    out.append(view.agent, style="bold")
    out.append("   step ", style=p.muted)
    out.append(safe(view.step), style="bold")
    out.append("\nmodel   ", style=p.muted)
    out.append(safe(view.model), style="bold")
    if view.simulated:
        out.append("  simulated: priced like the real model, not billed", style=p.simulated)
    out.append("\ncost    ", style=p.muted)
    out.append(f"{money(view.est_cold_micros)} with a cold cache", style="bold")
    out.append(" · ")
    out.append(f"{money(view.est_warm_micros)} warm", style="bold")
    out.append("  (estimate; output at its full budget)", style=p.muted)
    out.append("\ncaps    ", style=p.muted)
    if not view.caps_left:
        out.append("no dollar caps apply", style=p.attention)
    for index, (name, cap) in enumerate(view.caps_left.items()):
        if index:
            out.append("\n        ")
        limit, left = int(cap.get("limit_micros", 0)), int(cap.get("left_micros", 0))
        enough = view.est_cold_micros is None or left >= view.est_cold_micros
        colour = p.ok if enough else p.bad
        out.append(bar(left / limit if limit else 0.0, 8), style=colour)
        out.append(f" {name}: {money(left)} left of {cap_money(limit)}", style=colour if not enough else "")
    out.append("\nwhy     ", style=p.muted)
    reason = safe(view.reason.strip()) or "the lower tiers could not serve this step"
    lines = reason.splitlines()
    if reason_lines is not None and len(lines) > reason_lines:
        lines = [*lines[: reason_lines - 1], f"… ({len(lines) - reason_lines + 1} more lines)"]
    out.append("\n        ".join(lines))
    return out


class ApprovalModal(ModalScreen[bool | None]):
    """A frontier escalation waiting for a human: y approves once, n denies, escape decides later."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "decide(True)", "Approve once"),
        Binding("n", "decide(False)", "Deny"),
        Binding("escape", "later", "Later (stays pending)"),
    ]

    def __init__(self, view: ApprovalView) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        p = palette(self.app.current_theme.dark)
        with Vertical(id="approval-dialog"):
            title = Text(f" Frontier escalation · approval #{self.view.id} ", style=f"bold reverse {p.attention}")
            yield Static(title, id="approval-title")
            with VerticalScroll(id="approval-body"):
                yield Static(request_text(self.view, p), id="approval-text")
            keys = Text()
            keys.append(" y ", style=f"bold reverse {p.ok}")
            keys.append(" approve once   ")
            keys.append(" n ", style=f"bold reverse {p.bad}")
            keys.append(" deny   ")
            keys.append(" esc ", style="bold reverse")
            keys.append(" decide later (stays pending)")
            yield Static(keys, id="approval-keys")

    def action_decide(self, approve: bool) -> None:
        self.dismiss(approve)

    def action_later(self) -> None:
        self.dismiss(None)


class ApprovalsScreen(SupervisorScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "decide(True)", "Approve once"),
        Binding("n", "decide(False)", "Deny"),
        Binding("escape", "app.home", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._rows: list[ApprovalView] = []

    def compose(self) -> ComposeResult:
        yield TopBar("Approvals")
        table = LiveTable(id="approvals")
        for key, label, width in (
            ("id", "#", 5),
            ("state", "state", 10),
            ("agent", "agent", 14),
            ("step", "step", 12),
            ("model", "model", 20),
            ("cost", "cold / warm", 21),
            ("when", "requested", 10),
        ):
            table.add_column(label, width=width, key=key)
        yield table
        with VerticalScroll(id="approval-detail-scroll"):
            yield Static(id="approval-detail")
        yield Footer()

    @property
    def selected(self) -> ApprovalView | None:
        key = self.selected_row_key()
        return next((r for r in self._rows if str(r.id) == key), None)

    @property
    def selected_agent(self) -> str | None:
        row = self.selected
        return row.agent if row else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "decide":
            row = self.selected
            return row is not None and row.state == "pending"
        return True

    def on_mount(self) -> None:
        super().on_mount()
        self.reload()

    def reload(self) -> None:
        if self.sup.reader_ready:
            self._load()

    @work(thread=True, exclusive=True, group="approvals")
    def _load(self) -> None:
        self.post_message(ApprovalsLoaded(load_approvals(self.sup.reader())))

    def on_approvals_loaded(self, message: ApprovalsLoaded) -> None:
        message.stop()
        self._rows = [ApprovalView.from_row(r) for r in message.approvals]
        self._draw()

    def _draw(self) -> None:
        p = self.palette
        now = self.sup.clock()
        rows: list[Row] = []
        for r in self._rows:
            cost = Text(f"{money(r.est_cold_micros)} / {money(r.est_warm_micros)}")
            if r.simulated:
                cost.stylize(p.simulated)
            rows.append(
                (
                    str(r.id),
                    [
                        f"#{r.id}",
                        approval_state_text(r.state, p),
                        Text(r.agent, style="bold"),
                        one_line(r.step, 12),
                        one_line(r.model, 20),
                        cost,
                        when(parse_iso(r.requested_at), now) if r.requested_at else "",
                    ],
                )
            )
        self.query_one(LiveTable).show_rows(rows)
        self._show_detail()

    def _show_detail(self) -> None:
        detail = self.query_one("#approval-detail", Static)
        row = self.selected
        p = self.palette
        if row is None:
            detail.update(Text("no approval requests yet: a frontier escalation will appear here", style=p.muted))
            return
        head = Text()
        head.append_text(approval_state_text(row.state, p))
        if row.decided_by:
            head.append(f" by {row.decided_by}", style=p.muted)
        if row.state == "pending":
            head.append("   y approve once · n deny", style=p.attention)
        head.append("\n")
        detail.update(head + request_text(row, p))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()
        self.sup.refresh_bindings()

    def action_decide(self, approve: bool) -> None:
        row = self.selected
        if row is None or row.state != "pending":
            return
        self.sup.decide(row.id, approve)

    def apply_feed(self, items: Sequence[FeedItem]) -> None:
        if any(i.kind in (EscalationRequested.kind, ApprovalDecided.kind, RunFinished.kind) for i in items):
            self.reload()

    def repaint(self) -> None:
        self.query_one(LiveTable).forget()
        self._draw()
