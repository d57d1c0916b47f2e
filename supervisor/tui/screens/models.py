"""Models: the tier ladder as configured, each backend's health, API keys (names only) and the hardware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from supervisor.backends.base import LocalModel
from supervisor.tui.data import ModelsData
from supervisor.tui.messages import ModelsLoaded
from supervisor.tui.screens.base import SupervisorScreen
from supervisor.tui.widgets.cells import Palette, bytes_text, one_line, when
from supervisor.tui.widgets.table import LiveTable, Row
from supervisor.tui.widgets.topbar import TopBar

PROBE_EVERY_S = 30.0


class ModelsScreen(SupervisorScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("g", "probe", "Probe again"),
        Binding("escape", "app.home", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._models: ModelsData | None = None

    def compose(self) -> ComposeResult:
        yield TopBar("Models")
        with VerticalScroll(id="models-scroll"):
            yield Static(Text(" Tier ladder (cheapest first)", style="bold"), classes="section")
            ladder = LiveTable(id="ladder")
            for key, label, width in (
                ("tier", "tier", 8),
                ("model", "model", 20),
                ("status", "status", 13),
                ("in", "$/M in", 7),
                ("cache", "$/M cached", 10),
                ("out", "$/M out", 7),
                ("source", "prices from", 12),
                ("ctx", "context", 8),
                ("ttl", "cache TTL", 9),
            ):
                ladder.add_column(label, width=width, key=key)
            yield ladder
            yield Static(Text(" Backends", style="bold"), classes="section")
            yield Static(id="backends")
            yield Static(Text(" API keys (names only)", style="bold"), classes="section")
            yield Static(id="api-keys")
            yield Static(Text(" Hardware", style="bold"), classes="section")
            yield Static(id="hardware")
        yield Footer()

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#backends", Static).update(Text(" probing…", style=self.palette.muted))
        self.set_interval(PROBE_EVERY_S, self._maybe_probe)

    def _maybe_probe(self) -> None:
        if self.app.screen is self:
            self.reload()

    def action_probe(self) -> None:
        self.reload()

    def reload(self) -> None:
        self._probe()

    @work(thread=True, exclusive=True, group="models")
    def _probe(self) -> None:
        app = self.sup
        self.post_message(ModelsLoaded(app.models_probe(app.config, app.catalog, app.environ, app.runtime)))

    def on_models_loaded(self, message: ModelsLoaded) -> None:
        message.stop()
        self._models = message.models
        self._draw()

    def repaint(self) -> None:
        self.query_one("#ladder", LiveTable).forget()
        self._draw()

    def _draw(self) -> None:
        data = self._models
        if data is None:
            return
        p = self.palette
        rows: list[Row] = []
        for e in data.ladder:
            ready = e.status in ("ready", "simulated")
            status = Text(("✓ " if ready else "✗ ") + one_line(e.status, 11), style=p.ok if ready else p.bad)
            if e.simulated:
                status = Text("≈ simulated", style=p.simulated)
            model = Text(one_line(e.key, 20))
            rows.append(
                (
                    f"{e.tier}:{e.key}",
                    [
                        Text(e.tier, style="bold"),
                        model,
                        status,
                        _price(e.input_per_mtok, p),
                        _price(e.cache_read_per_mtok, p),
                        _price(e.output_per_mtok, p),
                        _source(e.source, p),
                        f"{e.context_window // 1000}k" if e.context_window else "?",
                        f"{e.cache_ttl_s // 60}m" if e.cache_ttl_s else "—",
                    ],
                )
            )
        if not rows:
            rows.append(("none", [Text("—"), Text("no tiers configured", style=p.muted), "", "", "", "", "", "", ""]))
        self.query_one("#ladder", LiveTable).show_rows(rows)
        self.query_one("#backends", Static).update(backends_text(data, p, self.sup.clock()))
        keys = Text(" ")
        for index, (name, present) in enumerate(data.api_keys.items()):
            if index:
                keys.append("  ")
            keys.append(("✓ " if present else "✗ ") + name, style=p.ok if present else p.muted)
            keys.append(" set" if present else " missing", style=p.ok if present else p.muted)
        self.query_one("#api-keys", Static).update(keys)
        hw = data.hardware
        hardware = Text(f" {hw.cpu}, {hw.cores} cores\n")
        hardware.append(f" RAM {bytes_text(hw.memory_available_bytes)} free of {bytes_text(hw.memory_total_bytes)}\n")
        hardware.append(" GPU " + (", ".join(hw.gpus) if hw.gpus else f"none ({hw.gpu_detail})"))
        self.query_one("#hardware", Static).update(hardware)


def _source(origin: str, p: Palette) -> Text:
    """Where a ladder model's prices come from: bundled, user, genai-prices (the fallback), local, simulated."""
    if origin == "unpriced":
        return Text("none", style=p.attention)
    styles = {"bundled": p.muted, "local": p.muted, "simulated": p.simulated}
    return Text(origin, style=styles.get(origin, ""))


def _price(value: str | None, p: Palette) -> Text:
    if value is None:
        return Text("unpriced", style=p.attention)
    return Text(value.rstrip("0").rstrip(".") if "." in value else value)


def backends_text(data: ModelsData, p: Palette, now: datetime) -> Text:
    out = Text()
    for index, b in enumerate(data.backends):
        if index:
            out.append("\n")
        out.append(" ✓ " if b.ok else " ✗ ", style=p.ok if b.ok else p.bad)
        out.append(f"{b.provider}", style="bold")
        out.append(f" ({b.kind})  ", style=p.muted)
        out.append(one_line(b.detail, 200))
        if b.memory_used_bytes is not None:
            out.append(f"; {bytes_text(b.memory_used_bytes)} of weights in memory", style=p.muted)
        pulled = [m for m in b.models if not m.loaded]
        loaded = [m for m in b.models if m.loaded]
        if loaded:
            out.append("\n     loaded: ", style=p.muted)
            out.append(", ".join(_loaded(m, now) for m in loaded))
        if pulled:
            out.append("\n     on disk: ", style=p.muted)
            out.append(", ".join(f"{one_line(m.name, 40)} ({bytes_text(m.size_bytes)})" for m in pulled[:12]))
            if len(pulled) > 12:
                out.append(f" and {len(pulled) - 12} more", style=p.muted)
    return out


def _loaded(model: LocalModel, now: datetime) -> str:
    """A loaded model and, for Ollama, when the server will unload it."""
    text = f"{one_line(model.name, 40)} ({bytes_text(model.size_bytes)})"
    if model.expires_at:
        try:
            expires = datetime.fromisoformat(model.expires_at)
        except ValueError:
            return text + f" until {one_line(model.expires_at, 30)}"
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        text += f" unloads {when(expires, now)}"
    return text
