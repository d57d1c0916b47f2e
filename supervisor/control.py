"""How a view (the TUI) acts on agents: through a runtime it hosts, or through a daemon it attaches to.

Both controllers offer the same decisions (approve, deny, pause, resume, run now). ``HostedController`` calls
the in-process runtime directly and streams its events live; ``AttachedController`` writes to the ledger, which
the daemon polls, and reads events back from the ledger. Closing a view never stops a daemon's agents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from supervisor.ledger import Ledger
from supervisor.runtime.events import AgentStateChanged, ApprovalDecided, Event

Mode = Literal["hosted", "attached"]


class Controller(Protocol):
    mode: Mode

    @property
    def description(self) -> str:
        """One line for the header: who runs the agents."""
        ...

    def approve(self, approval_id: int) -> None: ...

    def deny(self, approval_id: int) -> None: ...

    def pause(self, agent: str) -> None: ...

    def resume(self, agent: str) -> bool: ...

    def run_now(self, agent: str) -> None: ...


@dataclass
class HostedController:
    """The view hosts the runtime (and its scheduler): decisions go straight to it."""

    runtime: Any  # supervisor.runtime.runtime.Runtime (kept Any to avoid an import cycle at module load)
    mode: Mode = "hosted"

    @property
    def description(self) -> str:
        return "hosting the runtime in this window (no daemon running): closing it stops the agents"

    def approve(self, approval_id: int) -> None:
        row = self.runtime.ledger.approval(approval_id)
        self.runtime.approve(approval_id, by="tui")
        self.runtime.bus.publish(
            ApprovalDecided(agent=row.agent if row else None, approval_id=approval_id, approved=True, by="tui")
        )

    def deny(self, approval_id: int) -> None:
        row = self.runtime.ledger.approval(approval_id)
        self.runtime.deny(approval_id, by="tui")
        self.runtime.bus.publish(
            ApprovalDecided(agent=row.agent if row else None, approval_id=approval_id, approved=False, by="tui")
        )

    def pause(self, agent: str) -> None:
        self.runtime.pause(agent, by="human", reason="paused from the TUI")

    def resume(self, agent: str) -> bool:
        return bool(self.runtime.resume(agent))

    def run_now(self, agent: str) -> None:
        if not self.runtime.is_running(agent):
            self.runtime.start(agent, "manual", approval_timeout_s=None)

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        unsubscribe: Callable[[], None] = self.runtime.bus.subscribe(callback)
        return unsubscribe


@dataclass
class AttachedController:
    """A daemon runs the agents: decisions are written to the ledger, which the daemon reads every second."""

    ledger: Ledger
    daemon_pid: int
    mode: Mode = "attached"

    @property
    def description(self) -> str:
        return f"attached to the daemon (pid {self.daemon_pid}): closing this window leaves the agents running"

    def approve(self, approval_id: int) -> None:
        row = self.ledger.decide_approval(approval_id, True, "tui")
        self.ledger.append_event(
            "approval_decided",
            {"approval_id": approval_id, "approved": True, "by": "tui"},
            agent=row.agent,
            run_id=row.run_id,
        )

    def deny(self, approval_id: int) -> None:
        row = self.ledger.decide_approval(approval_id, False, "tui")
        self.ledger.append_event(
            "approval_decided",
            {"approval_id": approval_id, "approved": False, "by": "tui"},
            agent=row.agent,
            run_id=row.run_id,
        )

    def pause(self, agent: str) -> None:
        self.ledger.pause_agent(agent, "human", "paused from the TUI")
        self.ledger.append_event(
            AgentStateChanged.kind, {"state": "paused", "reason": "paused from the TUI"}, agent=agent
        )

    def resume(self, agent: str) -> bool:
        resumed = self.ledger.resume_agent(agent)
        if resumed:
            self.ledger.append_event(
                AgentStateChanged.kind, {"state": "idle", "reason": "resumed from the TUI"}, agent=agent
            )
        return resumed

    def run_now(self, agent: str) -> None:
        self.ledger.enqueue_command(agent, "run_now", "tui")
