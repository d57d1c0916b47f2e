"""Help: every key, what the state symbols mean, and who runs the agents."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from supervisor.render import STATE_SYMBOL
from supervisor.tui.widgets.cells import STATE_LONG, palette, state_colour

KEYS: tuple[tuple[str, str], ...] = (
    ("enter", "open the agent: live log, runs, spend, digest, processes"),
    ("p", "pause or resume the selected agent (a pause stops its run)"),
    ("r", "run the selected agent now"),
    ("a", "approvals waiting for you: y approves once, n denies"),
    ("c", "costs by agent, model and day: [ ] range, / dates"),
    ("m", "models: tier ladder, backends, API keys, hardware"),
    ("l", "alarms: runaway-breaker trips and evidence (u resumes)"),
    ("t", "switch between the dark and the light theme"),
    ("ctrl+p", "command palette: every action, every agent by name"),
    ("escape", "back"),
    ("?", "this help"),
    ("q", "quit (hosting: runs stop, workspaces are restored)"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close"),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, mode_description: str) -> None:
        super().__init__()
        self.mode_description = mode_description

    def compose(self) -> ComposeResult:
        p = palette(self.app.current_theme.dark)
        text = Text()
        text.append("Keys\n", style="bold")
        for key, what in KEYS:
            text.append(f"  {key:<8}", style=f"bold {p.busy}")
            text.append(f"{what}\n")
        text.append("\nAgent states (symbol, word and colour)\n", style="bold")
        for state, word in STATE_LONG.items():
            text.append(f"  {STATE_SYMBOL[state]} {word:<17}", style=state_colour(state, p))
        text.append("\n\nMoney\n", style="bold")
        text.append(
            "  Spend bars fill towards a cap; the figures are always shown beside them. Simulated spend (demo\n"
            "  tiers) is labelled and never added to real spend; calls with unknown usage are 'unpriced'.\n"
        )
        text.append("\nWho runs the agents\n", style="bold")
        text.append(f"  {self.mode_description}\n", style=p.muted)
        with Vertical(id="help-dialog"):
            yield Static(Text(" Help ", style="bold reverse"), id="help-title")
            with VerticalScroll():
                yield Static(text)
            yield Static(Text(" escape closes", style=p.muted))

    def action_close(self) -> None:
        self.dismiss(None)
