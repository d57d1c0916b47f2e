"""A DataTable that is refreshed in place: unchanged rows stay put, the cursor stays on the same row key."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import RenderableType
from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static
from textual.widgets.data_table import RowDoesNotExist

Row = tuple[str, Sequence[RenderableType]]


class LiveTable(DataTable[RenderableType]):
    """``show_rows`` diffs against what is on screen, so a refresh every half second costs what changed."""

    def __init__(self, *, id: str | None = None, on_cursor: Callable[[], None] | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._shown: dict[str, tuple[str, ...]] = {}
        self._order: list[str] = []
        self._on_cursor = on_cursor

    def watch_cursor_coordinate(self, old_coordinate: Coordinate, new_coordinate: Coordinate) -> None:
        super().watch_cursor_coordinate(old_coordinate, new_coordinate)
        if old_coordinate != new_coordinate and self._on_cursor is not None:
            # Called before the next frame is drawn, so whatever shows the selection changes in the same frame
            # as the cursor (a RowHighlighted handler would run after it and cost a second frame).
            self._on_cursor()

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except RowDoesNotExist:
            return None
        return None if key.value is None else str(key.value)

    def show_rows(self, rows: Sequence[Row]) -> None:
        order = [key for key, _ in rows]
        if order == self._order:
            columns = list(self.columns)
            for key, cells in rows:
                signature = tuple(_signature(c) for c in cells)
                before = self._shown.get(key)
                if before == signature:
                    continue
                for index, cell in enumerate(cells):
                    if before is None or before[index] != signature[index]:
                        self.update_cell(key, columns[index], cell, update_width=False)
                self._shown[key] = signature
            return
        selected = self.selected_key
        self.clear()
        self._shown = {}
        for key, cells in rows:
            self.add_row(*cells, key=key)
            self._shown[key] = tuple(_signature(c) for c in cells)
        self._order = order
        if selected is not None and selected in self._shown:
            self.move_cursor(row=self.get_row_index(selected), animate=False)

    def forget(self) -> None:
        """Make the next ``show_rows`` redraw everything (after a theme change recolours the cells)."""
        self._order = []


def _signature(cell: RenderableType) -> str:
    if isinstance(cell, Text):
        return f"{cell.plain}\0{cell.style}\0{[(s.start, s.end, str(s.style)) for s in cell.spans]}"
    return repr(cell)


class Panel(Static):
    """A fixed-height text panel: redrawn only when its text changes, without a layout pass (no extra frame)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown_signature = ""

    def show(self, content: Text) -> None:
        signature = _signature(content)
        if signature != self._shown_signature:
            self._shown_signature = signature
            self.update(content, layout=False)
