"""Small Rich renderables shared by the screens: state badges, spend bars, money, times.

Everything that could come from a model or a gate goes through ``safe`` (terminal escapes stripped) and into a
``Text`` object, never into markup, so output like ``[bold]`` or ``\\x1b[2J`` is shown, not obeyed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from rich.text import Text

from supervisor.render import STATE_SYMBOL, money, sanitize


@dataclass(frozen=True)
class Palette:
    ok: str
    busy: str
    attention: str
    bad: str
    muted: str
    accent: str
    simulated: str


DARK = Palette(
    ok="#6cc98c",
    busy="#57a5e2",
    attention="#ffc473",
    bad="#ef7a8e",
    muted="#8a8f98",
    accent="#c792ea",
    simulated="#7fc8c8",
)
LIGHT = Palette(
    ok="#1d7a3a",
    busy="#0b5fa5",
    attention="#8a5a00",
    bad="#b3173b",
    muted="#5f6670",
    accent="#7a3fb0",
    simulated="#16707a",
)


def palette(dark: bool) -> Palette:
    return DARK if dark else LIGHT


# State: symbol (STATE_SYMBOL, shared with the CLI) + word + colour, never colour alone.
STATE_WORD = {
    "idle": "idle",
    "running": "running",
    "waiting_approval": "approval",
    "deferred": "deferred",
    "paused": "paused",
    "failed": "failed",
    "exhausted": "exhausted",
    "denied": "denied",
}
STATE_LONG = {**STATE_WORD, "waiting_approval": "waiting approval"}


def state_colour(state: str, p: Palette) -> str:
    return {
        "idle": p.muted,
        "running": p.busy,
        "waiting_approval": p.attention,
        "deferred": p.attention,
        "paused": p.accent,
    }.get(state, p.bad)


def state_text(state: str, p: Palette, *, long: bool = False) -> Text:
    symbol = STATE_SYMBOL.get(state, "•")
    word = (STATE_LONG if long else STATE_WORD).get(state, state)
    bold = " bold" if state not in ("idle",) else ""
    return Text(f"{symbol} {word}", style=f"{state_colour(state, p)}{bold}")


OUTCOME_SYMBOL = {
    "success": "✓",
    "running": "▶",
    "waiting_approval": "?",
    "deferred": "◷",
    "paused": "‖",
    "cancelled": "⊘",
    "crashed": "✗",
}


def outcome_text(outcome: str, p: Palette) -> Text:
    symbol = OUTCOME_SYMBOL.get(outcome, "✗")
    colour = {
        "success": p.ok,
        "running": p.busy,
        "waiting_approval": p.attention,
        "deferred": p.attention,
        "paused": p.accent,
        "cancelled": p.muted,
    }.get(outcome, p.bad)
    return Text(f"{symbol} {outcome.replace('_', ' ')}", style=colour)


APPROVAL_SYMBOL = {"pending": "?", "approved": "✓", "consumed": "✓", "denied": "✗"}


def approval_state_text(state: str, p: Palette) -> Text:
    colour = {"pending": p.attention, "approved": p.ok, "consumed": p.ok}.get(state, p.bad)
    word = "used" if state == "consumed" else state
    return Text(f"{APPROVAL_SYMBOL.get(state, '•')} {word}", style=f"{colour} bold" if state == "pending" else colour)


_PARTIALS = " ▏▎▍▌▋▊▉"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar ``width`` cells wide, filled to ``fraction`` (eighth-cell resolution)."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_PARTIALS[part] if part and full < width else "")
    return text.ljust(width)


def spend_bar(
    spent: int, cap: int | None, p: Palette, width: int = 6, *, simulated: bool = False, compact: bool = False
) -> Text:
    """``██▌░ $0.12/$5`` (or ``██▌░ $0.12 62%`` when ``compact``): a bar against the cap and the figures beside it,
    so the bar is never the only signal."""
    out = Text()
    if cap is None or cap <= 0:
        out.append(" " * width, style=p.muted)
        out.append(" ")
        out.append(money(spent), style=p.simulated if simulated else "")
        if not compact:
            out.append(" no cap", style=p.muted)
        return out
    fraction = spent / cap
    colour = p.ok if fraction < 0.75 else p.attention if fraction < 1.0 else p.bad
    filled = bar(fraction, width).rstrip()
    out.append(filled, style=colour)
    out.append("░" * (width - len(filled)), style=p.muted)
    out.append(" ")
    out.append(money(spent), style=p.simulated if simulated else "")
    if compact:
        out.append(f" {spent * 100 // cap}%", style=colour if fraction >= 0.75 else p.muted)
    else:
        out.append(f"/{cap_money(cap)}", style=p.muted)
    return out


def cap_money(micros: int) -> str:
    """A cap is a round number: $5, $0.50, $0.02, $0.005."""
    if micros % 1_000_000 == 0:
        return f"${micros // 1_000_000}"
    dollars = Decimal(micros) / Decimal(1_000_000)
    text = f"{dollars:f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def safe(text: str, limit: int | None = None) -> str:
    """Untrusted text (model or gate output) made safe to show: escapes stripped, optionally cut to ``limit``."""
    clean = sanitize(text)
    if limit is not None and len(clean) > limit:
        clean = clean[: max(0, limit - 1)] + "…"
    return clean


def one_line(text: str, limit: int | None = None) -> str:
    return safe(" ".join(text.split()), limit)


def local_clock(moment: datetime) -> str:
    return f"{moment.astimezone():%H:%M:%S}"


def when(moment: datetime | None, now: datetime) -> str:
    """A past or future moment relative to ``now``: ``in 4m``, ``2h ago``, or a date when it is far away."""
    if moment is None:
        return "—"
    delta = moment - now
    seconds = delta.total_seconds()
    future = seconds >= 0
    seconds = abs(seconds)
    if seconds < 45:
        return "now" if future else "just now"
    if seconds < 3600:
        span = f"{round(seconds / 60)}m"
    elif seconds < 86400:
        span = f"{seconds / 3600:.0f}h"
    elif seconds < 86400 * 14:
        span = f"{seconds / 86400:.0f}d"
    else:
        return f"{moment.astimezone():%Y-%m-%d}"
    return f"in {span}" if future else f"{span} ago"


def age(moment: datetime, now: datetime) -> str:
    return when(moment, now) if now - moment < timedelta(days=14) else f"{moment.astimezone():%Y-%m-%d %H:%M}"


def bytes_text(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover
