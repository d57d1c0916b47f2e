"""Every screen at 80x24 and 120x40 over a fixed ledger and a fixed clock (``tests/tui/seed.py``).

Update with ``pytest tests/tui --snapshot-update`` after a deliberate change, and look at the report. The same
run rewrites ``assets/screenshot.svg`` (the README's screenshot) from the 120x40 Agents screen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from supervisor import paths
from supervisor.tui.screens.approvals import ApprovalModal, ApprovalView
from tests.tui.helpers import FakeDaemonController, seeded_app, settle
from tests.tui.seed import seed

SIZES = [(80, 24), (120, 40)]


async def _approval_modal(pilot: Pilot[Any]) -> None:
    app = pilot.app
    row = app.ledger.approval(1)  # type: ignore[attr-defined]
    assert row is not None
    app.push_screen(ApprovalModal(ApprovalView.from_row(row)))


SCREENS: dict[str, tuple[str, ...] | Callable[[Pilot[Any]], Awaitable[None]]] = {
    "agents": (),
    "agent": ("down", "down", "enter"),  # reviewer: waiting for approval, with its step log
    "approvals": ("a",),
    "approval_modal": _approval_modal,
    "costs": ("c",),
    "models": ("m",),
    "alarms": ("l",),
    "help": ("question_mark",),
}


def _run_before(screen: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        action = SCREENS[screen]
        if callable(action):
            await action(pilot)
        else:
            await pilot.press(*action)
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(screen: str, size: tuple[int, int], snap_compare: Any, tmp_path: Path, supervisor_home: Path) -> None:
    app = seeded_app(seed(tmp_path, supervisor_home), FakeDaemonController())
    assert snap_compare(app, terminal_size=size, run_before=_run_before(screen))


def test_readme_screenshot_is_the_agents_snapshot(
    tmp_path: Path, supervisor_home: Path, request: pytest.FixtureRequest
) -> None:
    """``assets/screenshot.svg`` is the 120x40 Agents screen; ``--snapshot-update`` regenerates it."""
    from textual._doc import take_svg_screenshot

    app = seeded_app(seed(tmp_path, supervisor_home), FakeDaemonController())
    svg = take_svg_screenshot(app=app, terminal_size=(120, 40), run_before=_run_before("agents"))
    target = paths.assets_dir() / "screenshot.svg"
    if request.config.getoption("--snapshot-update", default=False):
        target.write_text(svg, encoding="utf-8")
    assert target.exists(), "run `pytest tests/tui --snapshot-update` to generate assets/screenshot.svg"
    assert target.read_text(encoding="utf-8") == svg
