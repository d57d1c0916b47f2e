"""The header: where you are, who runs the agents (hosted or attached), and what needs you."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

from supervisor.render import money
from supervisor.tui.widgets.cells import cap_money, palette


@dataclass(frozen=True)
class HeaderState:
    mode: str  # "hosted" | "attached" | "read-only"
    description: str
    pending_approvals: int = 0
    alarms: int = 0
    warning: str = ""
    offline: bool = False
    simulated: bool = False
    today_micros: int | None = None  # all agents' spend today (None until the first status load)
    today_cap_micros: int | None = None


class TopBar(Widget):
    """Two lines: title and badges; then the mode and what closing the window does."""

    DEFAULT_CSS = """
    TopBar { height: 2; }
    """

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title

    def render(self) -> RenderResult:
        state: HeaderState | None = getattr(self.app, "header_state", None)
        p = palette(self.app.current_theme.dark)
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(" frugal-supervisor", style="bold")
        line.append(" ▸ ", style=p.muted)
        line.append(self.title, style="bold")
        if state is not None:
            badges: list[Text] = []
            if state.pending_approvals:
                n = state.pending_approvals
                badges.append(Text(f"? {n} approval{'s' if n != 1 else ''} (a)", style=f"{p.attention} bold"))
            if state.alarms:
                n = state.alarms
                badges.append(Text(f"‖ {n} alarm{'s' if n != 1 else ''} (l)", style=f"{p.bad} bold"))
            if state.today_micros is not None:
                spend = Text(f"today {money(state.today_micros)}")
                if state.today_cap_micros is not None:
                    spend.append(f" of {cap_money(state.today_cap_micros)}", style=p.muted)
                badges.append(spend)
            if state.simulated:
                badges.append(Text("simulated tiers", style=p.simulated))
            if state.offline:
                badges.append(Text("offline", style=p.attention))
            for badge in badges:
                line.append("  ")
                line.append_text(badge)
        second = Text(no_wrap=True, overflow="ellipsis")
        if state is not None:
            label = {"hosted": " HOSTED ", "attached": " ATTACHED "}.get(state.mode, " READ-ONLY ")
            colour = p.busy if state.mode == "attached" else p.ok if state.mode == "hosted" else p.muted
            second.append(" ")
            second.append(label, style=f"bold reverse {colour}")
            second.append(" ")
            if state.warning:
                second.append(state.warning, style=f"{p.bad} bold")
            else:
                second.append(state.description, style=p.muted)
        both = Text("\n").join([line, second])
        both.no_wrap = True
        both.overflow = "ellipsis"
        return both
