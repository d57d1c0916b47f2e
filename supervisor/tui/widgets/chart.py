"""A bar chart of spend per day: real spend and simulated spend stacked in different colours and glyphs."""

from __future__ import annotations

from rich.text import Text
from textual.app import RenderResult
from textual.reactive import reactive
from textual.widget import Widget

from supervisor.ledger.views import DaySpend
from supervisor.render import money
from supervisor.tui.widgets.cells import palette

_EIGHTHS = " ▁▂▃▄▅▆▇█"


class SpendChart(Widget):
    """Columns per day, scaled to the largest day; the top line names the scale, the bottom line the dates."""

    DEFAULT_CSS = """
    SpendChart { height: 8; }
    """

    days: reactive[tuple[DaySpend, ...]] = reactive(tuple, layout=False)

    def render(self) -> RenderResult:
        p = palette(self.app.current_theme.dark)
        width, height = self.content_size.width, self.content_size.height
        days = list(self.days)
        if not days or width < 10 or height < 3:
            return Text("no spend recorded in this range", style=p.muted)
        rows = height - 2
        column = max(1, min(3, width // max(1, len(days))))
        days = days[-(width // column) :]
        top = max((d.cost_micros + d.simulated_micros for d in days), default=0)
        real_total = sum(d.cost_micros for d in days)
        sim_total = sum(d.simulated_micros for d in days)
        unpriced = sum(d.unpriced_calls for d in days)
        header = Text(no_wrap=True, overflow="ellipsis")
        header.append(f"max {money(top)}/day", style="bold")
        header.append(f" · █ real {money(real_total)}", style=p.busy)
        if sim_total:
            header.append(f" · ▒ simulated {money(sim_total)}", style=p.simulated)
        if unpriced:
            header.append(f" · ? {unpriced} unpriced", style=p.attention)
        lines = [header]
        for level in range(rows, 0, -1):
            line = Text(no_wrap=True)
            for d in days:
                total = d.cost_micros + d.simulated_micros
                real_cells = (d.cost_micros / top * rows) if top else 0.0
                all_cells = (total / top * rows) if top else 0.0
                cell = _cell(all_cells, level)
                if cell.strip():
                    # Real spend sits at the bottom in solid blocks; simulated spend is stacked on it, shaded.
                    is_real = d.cost_micros > 0 and real_cells >= level - 0.5
                    if is_real:
                        line.append(cell * column, style=p.busy)
                    elif cell == "█" or all_cells - (level - 1) >= 0.5:
                        line.append("▒" * column, style=p.simulated)
                    else:
                        line.append(" " * column)
                elif level == 1 and d.unpriced_calls:
                    line.append("?".ljust(column), style=p.attention)
                else:
                    line.append(" " * column)
            lines.append(line)
        axis = Text(no_wrap=True, overflow="ellipsis", style=p.muted)
        first, last = days[0].day, days[-1].day
        span = len(days) * column
        left, right = f"{first:%m-%d}", f"{last:%m-%d}"
        if first == last:
            axis.append(left)
        else:
            gap = max(1, span - len(left) - len(right))
            axis.append(left + "─" * gap + right if span >= len(left) + len(right) + 1 else left)
        lines.append(axis)
        return Text("\n").join(lines)


def _cell(height_cells: float, level: int) -> str:
    """The glyph for row ``level`` (1 = bottom) of a column ``height_cells`` tall."""
    if height_cells >= level:
        return "█"
    if height_cells <= level - 1:
        return " "
    eighths = round((height_cells - (level - 1)) * 8)
    return _EIGHTHS[max(1, eighths)] if height_cells > 0 else " "
