"""What every screen shares: the header, the footer, and the hooks the app uses to push data down."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from textual.screen import Screen

from supervisor.tui.data import Snapshot
from supervisor.tui.messages import FeedItem
from supervisor.tui.widgets.cells import Palette, palette
from supervisor.tui.widgets.table import LiveTable

if TYPE_CHECKING:
    from supervisor.tui.app import SupervisorApp


class SupervisorScreen(Screen[None]):
    """A screen the app keeps informed: ``apply_feed`` for events, ``apply_snapshot`` for agent status."""

    @property
    def sup(self) -> SupervisorApp:
        return cast("SupervisorApp", self.app)

    @property
    def palette(self) -> Palette:
        return palette(self.app.current_theme.dark)

    @property
    def selected_agent(self) -> str | None:
        """The agent that ``p`` (pause/resume) and ``r`` (run now) act on here, if any."""
        return None

    def selected_row_key(self, selector: str = "LiveTable") -> str | None:
        """The highlighted row's key in this screen's table (None while the screen is being built or torn down)."""
        tables = self.query(selector)
        table = tables.first() if tables else None
        return table.selected_key if isinstance(table, LiveTable) else None

    def on_mount(self) -> None:
        self.sup.register_view(self)

    def on_unmount(self) -> None:
        self.sup.unregister_view(self)

    def on_screen_resume(self) -> None:
        self.reload()
        self.sup.refresh_bindings()

    def reload(self) -> None:
        """Load this screen's data again (in a worker)."""

    def apply_feed(self, items: Sequence[FeedItem]) -> None:
        """New events, in order."""

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """A fresh status of every agent."""

    def repaint(self) -> None:
        """Redraw with the current theme's colours (cells bake their colours in)."""
