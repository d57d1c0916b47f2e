"""A config with an error never hides the money: the TUI opens on the ledger alone and its Costs screen shows
every agent's spend (what `supervisor tui` does when supervisor.toml does not load)."""

from __future__ import annotations

from pathlib import Path

from supervisor.config import load_config
from supervisor.tui.app import SupervisorApp
from supervisor.tui.screens.costs import CostsScreen
from supervisor.tui.widgets.table import LiveTable
from tests.tui.helpers import settle, until
from tests.tui.seed import NOW, fake_models_probe, seed


async def test_costs_screen_reads_the_ledger_without_a_config(tmp_path: Path) -> None:
    seeded = seed(tmp_path / "root", tmp_path / "home")
    empty = load_config(None, {"SUPERVISOR_HOME": str(tmp_path / "home")})  # what cmd_tui falls back to
    assert not empty.agents
    warning = "supervisor.toml has an error (`supervisor config check`): showing the ledger only"
    app = SupervisorApp(
        empty,
        seeded.catalog,
        seeded.ledger,
        None,
        environ={},
        clock=lambda: NOW,
        warning=warning,
        models_probe=fake_models_probe,
    )
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, CostsScreen), what="the Costs screen")
        table = app.screen.query_one("#by-agent", LiveTable)
        await until(pilot, lambda: table.row_count >= 3, what="spend per agent from the ledger")
        agents = " ".join(str(table.get_row_at(i)[0]) for i in range(table.row_count))
        assert all(name in agents for name in ("fixer", "triage", "reviewer")), agents
    seeded.ledger.close()
