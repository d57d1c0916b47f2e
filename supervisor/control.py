"""How a view (the TUI) acts on agents: through a runtime it hosts, or through a daemon it attaches to.

Both controllers offer the same decisions (approve, deny, pause, resume, run now). ``HostedController`` calls
the in-process runtime directly and streams its events live; ``AttachedController`` writes to the ledger, which
the daemon polls, and reads events back from the ledger. Closing a view never stops a daemon's agents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from supervisor.ledger import ApprovalRow, Ledger
from supervisor.runtime import agent_state
from supervisor.runtime.events import AgentStateChanged, ApprovalDecided, Event

if TYPE_CHECKING:
    from supervisor.runtime.runtime import Runtime


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

    runtime: Runtime
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
    """Decisions written to the ledger, which a daemon reads every second (the TUI attached to a daemon, and the
    CLI's approve/deny/pause/resume, with or without a daemon)."""

    ledger: Ledger
    daemon_pid: int | None = None
    mode: Mode = "attached"
    by: Literal["tui", "cli"] = "tui"  # who decided: kept in the approval row and the events

    @property
    def description(self) -> str:
        return f"attached to the daemon (pid {self.daemon_pid}): closing this window leaves the agents running"

    @property
    def _where(self) -> str:
        return "the TUI" if self.by == "tui" else "the command line"

    def approve(self, approval_id: int) -> None:
        self.decide(approval_id, True)

    def deny(self, approval_id: int) -> None:
        self.decide(approval_id, False)

    def decide(self, approval_id: int, approved: bool) -> ApprovalRow:
        row = self.ledger.decide_approval(approval_id, approved, self.by)
        self.ledger.append_event(
            ApprovalDecided.kind,
            {"approval_id": approval_id, "approved": approved, "by": self.by},
            agent=row.agent,
            run_id=row.run_id,
        )
        return row

    def pause(self, agent: str) -> None:
        reason = f"paused from {self._where}"
        agent_state.pause(
            self.ledger,
            None,
            agent,
            "human",
            reason,
            event=AgentStateChanged(agent=agent, state="paused", reason=reason),
        )

    def resume(self, agent: str) -> bool:
        event = AgentStateChanged(agent=agent, state="idle", reason=f"resumed from {self._where}")
        return agent_state.resume(self.ledger, None, agent, event=event)

    def run_now(self, agent: str) -> None:
        self.ledger.enqueue_command(agent, "run_now", self.by)
