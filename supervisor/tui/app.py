"""The Textual app: a view over agents that a hosted runtime or a daemon runs.

Data flows one way each direction. Down: thread workers read the ledger (through a connection of the app's own,
so a long report never waits on the runtime's lock), the results arrive as messages, and the app hands them to
the screens. Up: keys become decisions sent through the controller (onto the hosted runtime's loop, or written
to the ledger for the daemon). Events arrive as ``Feed`` messages from the hosted runtime's bus or from tailing
the ledger; the app debounces the status reloads they trigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import Screen
from textual.theme import Theme
from textual.worker import get_current_worker

from supervisor import paths
from supervisor.catalog import Catalog
from supervisor.clock import utcnow
from supervisor.config import Config
from supervisor.errors import SupervisorError
from supervisor.ledger import Ledger
from supervisor.runtime.events import (
    ApprovalDecided,
    BreakerTripped,
    EscalationRequested,
    Event,
    ModelSubstituted,
    Notice,
)
from supervisor.tui.data import (
    ModelsProbe,
    ProcessSampler,
    Snapshot,
    StatusLoader,
    daemon_pids,
    hosted_roots,
    probe_models,
)
from supervisor.tui.host import RuntimeHost
from supervisor.tui.messages import (
    STATE_KINDS,
    Booted,
    Feed,
    FeedItem,
    HostStopped,
    LedgerChanged,
    Problem,
    SnapshotLoaded,
    StatusLoadDone,
)
from supervisor.tui.screens.agents import AgentsScreen
from supervisor.tui.screens.base import SupervisorScreen
from supervisor.tui.widgets.cells import Palette, palette
from supervisor.tui.widgets.topbar import HeaderState, TopBar

if TYPE_CHECKING:
    from supervisor.control import Controller
    from supervisor.runtime.runtime import Runtime
    from supervisor.runtime.scheduler import Scheduler


if TYPE_CHECKING:
    from supervisor.tui.screens.approvals import ApprovalModal, ApprovalView


# Screens other than the home one are imported when first shown: the first frame comes sooner.
def _approvals_screen() -> Screen[Any]:
    from supervisor.tui.screens.approvals import ApprovalsScreen

    return ApprovalsScreen()


def _costs_screen() -> Screen[Any]:
    from supervisor.tui.screens.costs import CostsScreen

    return CostsScreen()


def _models_screen() -> Screen[Any]:
    from supervisor.tui.screens.models import ModelsScreen

    return ModelsScreen()


def _alarms_screen() -> Screen[Any]:
    from supervisor.tui.screens.alarms import AlarmsScreen

    return AlarmsScreen()


DEBOUNCE_S = 0.5  # at most two status reloads a second, however many events arrive
POLL_S = 2.0  # look for changes other processes made (a CLI pause, a decision from another window)
RETIME_S = 15.0  # relative times ("in 4m") are redrawn this often, from the figures already loaded
TAIL_S = 0.3  # attached mode: how often the ledger is read for the daemon's new events
LIVE_BUFFER = 500  # live events kept per agent, for an Agent screen opened later
QUIT_WAIT_S = 60.0  # how long quitting waits for hosted runs to restore their workspaces

DARK = Theme(
    name="supervisor-dark",
    primary="#57A5E2",
    secondary="#81A1C1",
    accent="#C792EA",
    warning="#FFC473",
    error="#EF7A8E",
    success="#6CC98C",
    foreground="#D8DEE9",
    background="#14161B",
    surface="#1B1E25",
    panel="#262B36",
    dark=True,
)
LIGHT = Theme(
    name="supervisor-light",
    primary="#0B5FA5",
    secondary="#3F6E9A",
    accent="#7A3FB0",
    warning="#8A5A00",
    error="#B3173B",
    success="#1D7A3A",
    foreground="#1F2328",
    background="#F6F6F3",
    surface="#FFFFFF",
    panel="#E4E7EB",
    dark=False,
)


class AgentCommands(Provider):
    """Command palette entries for each agent by name: open it, run it now, pause or resume it."""

    def _entries(self) -> list[tuple[str, str, Callable[[], Any]]]:
        app = cast("SupervisorApp", self.app)
        out: list[tuple[str, str, Callable[[], Any]]] = []
        for name in app.config.agents:
            out.append((f"Open {name}", "live log, runs, spend, digest, processes", partial(app.open_agent, name)))
            out.append((f"Run {name} now", "start a run of this agent", partial(app.run_now, name)))
            out.append((f"Pause or resume {name}", "a pause stops its current run", partial(app.toggle_pause, name)))
        return out

    async def discover(self) -> Hits:
        for title, help_text, callback in self._entries():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


class SupervisorApp(App[int]):
    """frugal-supervisor's TUI. Give it what to show and how to act; it connects to nothing by itself."""

    TITLE = "frugal-supervisor"
    MODES: ClassVar[dict[str, str | Callable[[], Screen[Any]]]] = {
        "agents": AgentsScreen,
        "approvals": _approvals_screen,
        "costs": _costs_screen,
        "models": _models_screen,
        "alarms": _alarms_screen,
    }
    DEFAULT_MODE = "agents"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012 - Textual reads it per class
    COMMANDS = App.COMMANDS | {AgentCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "toggle_pause", "Pause/resume"),
        Binding("r", "run_now", "Run now"),
        Binding("a", "show('approvals')", "Approvals"),
        Binding("c", "show('costs')", "Costs"),
        Binding("m", "show('models')", "Models"),
        Binding("l", "show('alarms')", "Alarms"),
        Binding("question_mark", "help", "Help"),
        Binding("t", "toggle_theme", "Theme", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        ledger: Ledger,
        controller: Controller | None,
        runtime: Runtime | None = None,
        scheduler: Scheduler | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        models_probe: ModelsProbe | None = None,
        warning: str = "",
        config_path_hint: Path | None = None,
        theme: str = "supervisor-dark",
    ) -> None:
        super().__init__(css_path=[paths.assets_dir() / "supervisor.tcss"])
        self.config = config
        self.catalog = catalog
        self.ledger = ledger
        self.controller = controller
        self.runtime = runtime
        self.scheduler = scheduler
        self.environ: Mapping[str, str] = environ if environ is not None else config.environ
        self.clock = clock
        self.models_probe: ModelsProbe = models_probe or probe_models
        self.config_path_hint = config_path_hint
        self._warning = warning
        self._initial_theme = theme
        self.snapshot: Snapshot | None = None
        self.start_event_id = 0
        self.reader_ready = False
        self.header_state = HeaderState(mode=self.mode, description=self._description())
        self._reader: Ledger | None = None
        self._reader_lock = threading.Lock()
        self._views: list[SupervisorScreen] = []
        self._live: dict[str, deque[FeedItem]] = {}
        self._host: RuntimeHost | None = RuntimeHost(runtime, scheduler) if runtime is not None else None
        self._unsubscribe: Callable[[], None] | None = None
        self._stopping = threading.Event()
        self._refresh_timer: Any | None = None
        self._loading = False
        self._dirty = False
        self._dirty_agents: set[str] | None = None  # None: everyone
        self._status_loader = StatusLoader()
        self._agent_rows: dict[str, tuple[Any, ...]] = {}
        self._sampler = ProcessSampler()
        self._approval_queue: list[ApprovalView] = []
        self._modal: ApprovalModal | None = None
        self._settled_approvals: set[int] = set()  # decided here or elsewhere, or left pending with escape

    # --------------------------------------------------------------------------------------------------------
    # Who runs the agents

    @property
    def mode(self) -> str:
        if self.controller is None:
            return "read-only"
        return str(getattr(self.controller, "mode", "attached"))

    @property
    def daemon_pid(self) -> int | None:
        pid = getattr(self.controller, "daemon_pid", None) if self.mode == "attached" else None
        return int(pid) if pid is not None else None

    def _description(self) -> str:
        if self.controller is None:
            return "no config yet: nothing runs here (`supervisor init` or `supervisor demo`)"
        return str(self.controller.description)

    @property
    def palette(self) -> Palette:
        return palette(self.current_theme.dark)

    def reader(self) -> Ledger:
        """The app's own read connection (opened on first use; only call this from a worker thread)."""
        with self._reader_lock:
            if self._reader is None:
                self._reader = Ledger(self.ledger.path, redactor=self.ledger.redactor, migrate=False)
            return self._reader

    # --------------------------------------------------------------------------------------------------------
    # Start and stop

    def on_mount(self) -> None:
        self.register_theme(DARK)
        self.register_theme(LIGHT)
        self.theme = self._initial_theme
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._update_header()
        self._boot()
        if not self.is_headless:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGTERM, lambda: self.call_next(self.action_quit))

    @work(thread=True, group="boot")
    def _boot(self) -> None:
        self.post_message(Booted(self.reader().last_event_id()))

    def on_booted(self, message: Booted) -> None:
        self.start_event_id = message.start_event_id
        self.reader_ready = True
        if self._host is not None and self.runtime is not None:
            self._unsubscribe = self.runtime.bus.subscribe(self._runtime_event)
            self._run_host()
        elif self.mode == "attached":
            self._tail(message.start_event_id)
        self.set_interval(POLL_S, self._poll)
        self.set_interval(RETIME_S, self._retime)
        self.request_refresh(delay=0.0)
        for view in list(self._views):
            view.reload()

    @work(thread=True, group="runtime", name="hosted runtime")
    def _run_host(self) -> None:
        assert self._host is not None
        error: str | None = None
        try:
            self._host.run()
        except Exception as exc:  # noqa: BLE001 - shown to the user: the agents stopped running
            error = f"{type(exc).__name__}: {exc}"
        self.post_message(HostStopped(error))

    def _runtime_event(self, event: Event) -> None:
        """The hosted runtime's bus callback (called on the runtime's thread): post, never touch widgets."""
        self.post_message(Feed.of_event(event))

    @work(thread=True, group="tail", name="ledger tail")
    def _tail(self, after_id: int) -> None:
        reader = self.reader()
        worker = get_current_worker()
        while not self._stopping.is_set() and not worker.is_cancelled:
            try:
                rows = reader.events_after(after_id, limit=500)
            except SupervisorError as exc:
                self.post_message(Problem(f"cannot read the daemon's events: {exc}"))
                self._stopping.wait(5.0)
                continue
            if rows:
                after_id = rows[-1].id
                self.post_message(Feed.of_rows(rows))
                continue
            self._stopping.wait(TAIL_S)

    def on_host_stopped(self, message: HostStopped) -> None:
        if message.error:
            self._warning = f"the hosted runtime stopped: {message.error}; agents are not running"
            self._update_header()
            self.notify(message.error, title="runtime stopped", severity="error", timeout=30)

    async def action_quit(self) -> None:
        if self._host is not None and not self._host.finished.is_set():
            self.notify("stopping runs and restoring their workspaces…", timeout=QUIT_WAIT_S)
            self._host.stop()
            await asyncio.to_thread(self._host.wait, QUIT_WAIT_S)
        self._shutdown_threads()
        self.exit(0)

    def on_unmount(self) -> None:
        self._shutdown_threads()

    def _shutdown_threads(self) -> None:
        self._stopping.set()
        if self._host is not None:
            self._host.stop()
            self._host.wait(QUIT_WAIT_S)  # the loop is closing anyway; runs must finish restoring first
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._reader_lock:
            if self._reader is not None and not any(w.is_running for w in self.workers):
                self._reader.close()
                self._reader = None

    # --------------------------------------------------------------------------------------------------------
    # Screens

    def register_view(self, view: SupervisorScreen) -> None:
        if view not in self._views:
            self._views.append(view)

    def unregister_view(self, view: SupervisorScreen) -> None:
        with contextlib.suppress(ValueError):
            self._views.remove(view)

    def live_items(self, agent: str) -> list[FeedItem]:
        return list(self._live.get(agent, ()))

    def open_agent(self, agent: str) -> None:
        from supervisor.tui.screens.agent import AgentScreen

        if agent not in self.config.agents:
            return
        if self.current_mode != "agents":
            self.switch_mode("agents")
        current = self.screen
        if isinstance(current, AgentScreen):
            if current.agent == agent:
                return
            self.pop_screen()
        self.push_screen(AgentScreen(agent))

    def action_show(self, mode: str) -> None:
        self.switch_mode(mode)

    def action_home(self) -> None:
        self.switch_mode("agents")

    def action_help(self) -> None:
        from supervisor.tui.screens.help import HelpScreen

        self.push_screen(HelpScreen(self._description()))

    def action_toggle_theme(self) -> None:
        self.theme = "supervisor-light" if self.current_theme.dark else "supervisor-dark"

    def _theme_changed(self, theme: Theme) -> None:
        for view in list(self._views):
            view.repaint()
        self._update_header()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield SystemCommand("Agents", "every agent: state, spend against caps, next run", self.action_home)
        yield SystemCommand(
            "Approvals", "frontier escalations waiting for a decision", partial(self.switch_mode, "approvals")
        )
        yield SystemCommand("Costs", "totals by agent, model and day", partial(self.switch_mode, "costs"))
        yield SystemCommand(
            "Models", "tier ladder, backend health, API keys, hardware", partial(self.switch_mode, "models")
        )
        yield SystemCommand("Alarms", "runaway-breaker trips and their evidence", partial(self.switch_mode, "alarms"))
        selected = self.selected_agent
        if selected is not None:
            yield SystemCommand(f"Pause or resume {selected}", "the selected agent", self.action_toggle_pause)
            yield SystemCommand(f"Run {selected} now", "the selected agent", self.action_run_now)
        yield SystemCommand(
            "Toggle light/dark theme", "switch between the two supervisor themes", self.action_toggle_theme
        )
        yield SystemCommand("Help", "keys, state symbols, who runs the agents", self.action_help)
        for command in super().get_system_commands(screen):
            if command.title != "Quit":
                yield command
        yield SystemCommand("Quit", "leave (hosted runs are stopped; attached agents keep running)", self.action_quit)

    @property
    def selected_agent(self) -> str | None:
        screen = self.screen
        return screen.selected_agent if isinstance(screen, SupervisorScreen) else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_pause", "run_now"):
            return None if self.selected_agent is None or self.controller is None else True
        return True

    # --------------------------------------------------------------------------------------------------------
    # Events in

    def on_feed(self, message: Feed) -> None:
        changed: set[str | None] = set()
        for item in message.items:
            if item.agent is not None:
                self._live.setdefault(item.agent, deque(maxlen=LIVE_BUFFER)).append(item)
            if item.kind == EscalationRequested.kind:
                from supervisor.tui.screens.approvals import ApprovalView

                self._queue_approval(ApprovalView.from_feed(item))
            elif item.kind == ApprovalDecided.kind:
                self._approval_settled_elsewhere(item)
            elif item.kind == BreakerTripped.kind:
                self.notify(
                    f"{item.agent}: {item.data.get('message', '')}",
                    title="runaway breaker: agent paused",
                    severity="error",
                    timeout=15,
                    markup=False,
                )
            elif item.kind == ModelSubstituted.kind:
                self.notify(
                    f"{item.agent}: asked for {item.data.get('requested')}, served by {item.data.get('served')}",
                    title="gateway substitution",
                    timeout=6,
                    markup=False,
                )
            elif item.kind == Notice.kind and item.data.get("level") in ("warning", "error"):
                self.notify(
                    f"{item.agent + ': ' if item.agent else ''}{item.data.get('message', '')}",
                    severity="error" if item.data.get("level") == "error" else "warning",
                    markup=False,
                )
            if item.kind in STATE_KINDS:
                changed.add(item.agent)
        for view in list(self._views):
            view.apply_feed(message.items)
        if changed:
            self.request_refresh(changed)

    def on_problem(self, message: Problem) -> None:
        self.notify(
            message.text, severity="error" if message.severity == "error" else "warning", markup=False, timeout=10
        )

    # --------------------------------------------------------------------------------------------------------
    # Agent status (debounced)

    def request_refresh(self, agents: Iterable[str | None] | None = None, delay: float = DEBOUNCE_S) -> None:
        """Reload agent status soon (of ``agents``, or of everyone); a burst of requests becomes one reload."""
        if agents is None:
            self._dirty_agents = None
        elif self._dirty_agents is not None:
            named = {a for a in agents if a is not None}
            self._dirty_agents |= named
            if not named and not self._dirty_agents:
                return
        self._dirty = True
        if self._refresh_timer is None and self.reader_ready:
            # Textual's Timer divides by its interval: a zero delay would crash it, so never ask for one.
            self._refresh_timer = self.set_timer(max(delay, 0.01), self._start_refresh)

    def _start_refresh(self) -> None:
        self._refresh_timer = None
        if self._loading:
            return  # the reload in flight re-arms when it lands
        names = self._dirty_agents
        self._dirty = False
        self._dirty_agents = set()
        self._loading = True
        self._load_snapshot(None if names is None else set(names))

    @work(thread=True, group="snapshot")
    def _load_snapshot(self, names: set[str] | None) -> None:
        worker = get_current_worker()
        try:
            self._status_loader.load(
                self.config,
                self.catalog,
                self.reader(),
                self.clock(),
                self.environ,
                names,
                self._post_snapshot,
                daemon_pid=self.daemon_pid,
                cancelled=lambda: worker.is_cancelled or self._stopping.is_set(),
            )
        except SupervisorError as exc:
            self.post_message(Problem(f"cannot read agent status: {exc}"))
        finally:
            self.post_message(StatusLoadDone())

    def _post_snapshot(self, snapshot: Snapshot) -> None:
        self.post_message(SnapshotLoaded(snapshot))

    def on_snapshot_loaded(self, message: SnapshotLoaded) -> None:
        self.snapshot = message.snapshot
        self._update_header()
        for view in list(self._views):
            view.apply_snapshot(message.snapshot)

    def on_status_load_done(self, message: StatusLoadDone) -> None:
        self._loading = False
        if self._dirty:
            self._dirty = False
            self.request_refresh([], delay=DEBOUNCE_S)

    def _poll(self) -> None:
        if self.reader_ready and not self._stopping.is_set():
            self._check_changes()

    @work(thread=True, exclusive=True, group="poll")
    def _check_changes(self) -> None:
        """Changes made without an event this window saw (a pause from the CLI, a row a crash left behind)."""
        rows = {
            str(r[0]): tuple(r[1:])
            for r in self.reader().query("SELECT name, state, updated_at, next_run_at, paused_by FROM agents")
        }
        changed = {name for name, row in rows.items() if self._agent_rows.get(name) != row}
        first = not self._agent_rows
        self._agent_rows = rows
        if changed and not first:
            self.post_message(LedgerChanged(changed))

    def on_ledger_changed(self, message: LedgerChanged) -> None:
        self.request_refresh(message.agents)

    def _retime(self) -> None:
        """Relative times move on; a new local day resets every "today" figure (then everything reloads)."""
        snapshot = self.snapshot
        if snapshot is None:
            return
        now = self.clock()
        if now.astimezone().date() != snapshot.now.astimezone().date():
            self.request_refresh(None, delay=0.0)
            return
        self.snapshot = replace(snapshot, now=now)
        for view in list(self._views):
            view.apply_snapshot(self.snapshot)

    def _update_header(self) -> None:
        snapshot = self.snapshot
        warning = self._warning
        if snapshot is not None and snapshot.daemon_alive is False and not warning:
            warning = (
                f"the daemon (pid {self.daemon_pid}) is not answering: agents may not be running; "
                "start `supervisor daemon` again, then reopen this window"
            )
        self.header_state = HeaderState(
            mode=self.mode,
            description=self._description(),
            pending_approvals=snapshot.pending_approvals if snapshot else 0,
            alarms=snapshot.breaker_paused if snapshot else 0,
            warning=warning,
            offline=self.config.offline,
            simulated=any(snapshot.simulated.values()) if snapshot else False,
            today_micros=snapshot.global_day_spend if snapshot and snapshot.complete else None,
            today_cap_micros=snapshot.global_day_cap if snapshot else None,
        )
        for view in list(self._views):
            for bar in view.query(TopBar):
                bar.refresh()

    # --------------------------------------------------------------------------------------------------------
    # Decisions out

    def _state_of(self, agent: str) -> str | None:
        if self.snapshot is None:
            return None
        return next((s.state for s in self.snapshot.statuses if s.name == agent), None)

    def _control(self, label: str, fn: Callable[..., Any], *args: Any) -> bool:
        """Send one decision: onto the hosted runtime's loop, or (attached) to the ledger from a thread."""
        if self.controller is None:
            self.notify("nothing runs here yet: `supervisor init` writes a config", severity="warning")
            return False

        def failed(exc: BaseException) -> None:
            self.post_message(Problem(f"{label}: {exc}"))

        if self._host is not None:
            if not self._host.call(fn, *args, on_error=failed):
                self.notify(f"{label}: the runtime is not running", severity="error")
                return False
            return True
        self._control_in_thread(label, fn, args)
        return True

    @work(thread=True, group="control")
    def _control_in_thread(self, label: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except SupervisorError as exc:
            self.post_message(Problem(f"{label}: {exc}"))

    def action_toggle_pause(self) -> None:
        agent = self.selected_agent
        if agent is not None:
            self.toggle_pause(agent)

    def action_run_now(self) -> None:
        agent = self.selected_agent
        if agent is not None:
            self.run_now(agent)

    def toggle_pause(self, agent: str) -> None:
        if self._state_of(agent) == "paused":
            self.resume(agent)
            return
        if self.controller is not None and self._control(f"pause {agent}", self.controller.pause, agent):
            self.notify(f"{agent} paused: p resumes it", markup=False)
            self.request_refresh([agent], delay=0.2)

    def resume(self, agent: str) -> None:
        if self.controller is not None and self._control(f"resume {agent}", self.controller.resume, agent):
            self.notify(f"{agent} resumed", markup=False)
            self.request_refresh([agent], delay=0.2)

    def run_now(self, agent: str) -> None:
        state = self._state_of(agent)
        if state == "paused":
            self.notify(f"{agent} is paused: p resumes it first", severity="warning", markup=False)
            return
        if state in ("running", "waiting_approval"):
            self.notify(f"{agent} is already running", markup=False)
            return
        if self.controller is not None and self._control(f"run {agent}", self.controller.run_now, agent):
            where = "" if self.mode == "hosted" else " (the daemon starts it within a second)"
            self.notify(f"{agent}: run requested{where}", markup=False)
            self.request_refresh([agent], delay=0.2)

    def decide(self, approval_id: int, approve: bool) -> None:
        if self.controller is None:
            return
        fn = self.controller.approve if approve else self.controller.deny
        verb = "approve" if approve else "deny"
        if self._control(f"{verb} #{approval_id}", fn, approval_id):
            self._settled_approvals.add(approval_id)
            if approve:
                self.notify(f"approval #{approval_id} approved: the step runs once at the frontier tier")
            else:
                self.notify(f"approval #{approval_id} denied: the run ends as denied")
            self.request_refresh([], delay=0.2)

    def sample_processes(self, agent: str) -> list[dict[str, Any]]:
        """CPU and RSS of the agent's processes (called from a worker thread)."""
        if self.runtime is not None:
            return self._sampler.sample(hosted_roots(self.runtime, agent))
        pid = self.daemon_pid
        if pid is not None and agent in self.config.agents and not self.config.agents[agent].external:
            return self._sampler.sample(daemon_pids(pid, self.config.workspace(agent)), descendants=False)
        return []

    # --------------------------------------------------------------------------------------------------------
    # The approval modal: pops up wherever the user is; one at a time, in order

    def _queue_approval(self, view: ApprovalView) -> None:
        if view.id in self._settled_approvals or any(v.id == view.id for v in self._approval_queue):
            return
        self._approval_queue.append(view)
        self._show_next_approval()

    def _show_next_approval(self) -> None:
        if self._modal is not None:
            return
        while self._approval_queue:
            view = self._approval_queue.pop(0)
            if view.id in self._settled_approvals:
                continue
            from supervisor.tui.screens.approvals import ApprovalModal

            self._modal = ApprovalModal(view)
            self.push_screen(self._modal, partial(self._approval_answered, view))
            return

    def _approval_answered(self, view: ApprovalView, answer: bool | None) -> None:
        self._modal = None
        if view.id not in self._settled_approvals:
            if answer is None:
                self._settled_approvals.add(view.id)
                self.notify(f"approval #{view.id} left pending: a lists it", timeout=5)
            else:
                self.decide(view.id, answer)
        self._show_next_approval()

    def _approval_settled_elsewhere(self, item: FeedItem) -> None:
        approval_id = int(item.data.get("approval_id", 0))
        already = approval_id in self._settled_approvals
        self._settled_approvals.add(approval_id)
        if self._modal is not None and self._modal.view.id == approval_id and not already:
            verb = "approved" if item.data.get("approved") else "denied"
            self.notify(f"approval #{approval_id} was {verb} by {item.data.get('by', '?')}", markup=False)
            self._modal.dismiss(None)
