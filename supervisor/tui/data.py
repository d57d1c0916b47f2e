"""What the screens show, loaded off the event loop: plain dataclasses built from the ledger, config and probes.

Every function here may block (SQLite, the filesystem, psutil, HTTP probes with short timeouts), so the app only
calls them from thread workers, which post the results back as messages. Nothing here imports Textual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor.backends.base import LocalModel
from supervisor.catalog import TIERS, Catalog, split_model_key
from supervisor.clock import local_day_start, local_month_start
from supervisor.config import Config
from supervisor.cost import usd_to_micros
from supervisor.errors import SupervisorError
from supervisor.ledger import ApprovalRow, CapLimits, EventRow, Ledger, ReportRow
from supervisor.ledger.views import DaySpend, counts, latest_events, recent_approvals, spend_per_day, spend_split
from supervisor.runtime.budget import cap_limits
from supervisor.runtime.events import BreakerTripped
from supervisor.runtime.status import AgentStatus, agent_statuses

if TYPE_CHECKING:
    from supervisor.runtime.runtime import Runtime


# ------------------------------------------------------------------------------------------------------------
# Agents (home screen and header)


@dataclass(frozen=True)
class Snapshot:
    """Everything the Agents screen and the header show, as of ``now``."""

    statuses: list[AgentStatus]
    simulated: dict[str, bool]  # agent -> its ladder uses simulated (scripted) tiers
    pending_approvals: int
    breaker_paused: int
    now: datetime
    daemon_alive: bool | None = None  # attached mode: is the daemon still there? (None when hosting)
    global_day_cap: int | None = None
    global_month_cap: int | None = None
    loading: frozenset[str] = frozenset()  # agents whose figures are not loaded yet (state only)

    @property
    def global_day_spend(self) -> int:
        """All configured agents' spend today (the sum of the rows, so it needs no query of its own)."""
        return sum(s.spend_day_micros for s in self.statuses)

    @property
    def global_month_spend(self) -> int:
        return sum(s.spend_month_micros for s in self.statuses)

    @property
    def complete(self) -> bool:
        return not self.loading


def agent_is_simulated(config: Config, name: str) -> bool:
    """True when any tier the agent may use is served by a scripted (simulated) provider."""
    agent = config.agents[name]
    tiers = {t for step in agent.steps for t in (step.ladder or agent.ladder)} or set(agent.ladder)
    for tier in tiers:
        for key in config.tiers.models(tier):
            provider = config.providers.get(key.partition(":")[0])
            if provider is not None and provider.kind == "scripted":
                return True
    return False


def placeholder(config: Config, name: str, row: Mapping[str, Any]) -> AgentStatus:
    """What the agents table knows at once (state, position, next run): figures follow from ``agent_statuses``."""
    limits = cap_limits(config, config.agents[name])
    return AgentStatus(
        name=name,
        state=str(row.get("state", "idle")),
        state_reason=str(row.get("state_reason", "")),
        state_since=str(row.get("state_since", "")),
        paused_by=row.get("paused_by"),
        schedule=config.agents[name].schedule,
        next_run_at=row.get("next_run_at"),
        current_step=row.get("current_step"),
        current_tier=row.get("current_tier"),
        current_model=row.get("current_model"),
        spend_day_micros=0,
        spend_month_micros=0,
        cap_day_micros=limits.agent_day_micros,
        cap_month_micros=limits.agent_month_micros,
        cap_run_micros=limits.run_micros,
        tokens_today={},
        local_compute_s_today=0.0,
        last_run=None,
        last_gate=None,
        pending_approvals=0,
    )


def subset(config: Config, names: list[str]) -> Config:
    """The same config with only ``names`` as agents (to compute their status and no one else's)."""
    agents = {name: config.agents[name] for name in names}
    return Config(config.path, config.file.model_copy(update={"agents": agents}), config.providers, config.environ)


class StatusLoader:
    """Agent status, loaded incrementally: the agents table's rows at once, then each agent's figures in chunks.

    ``agent_statuses`` costs a few milliseconds per agent on a big ledger (spend windows, the cache-aware wake
    estimate), so a reload covers only the agents that events said changed, and the first load posts what it has
    after every chunk. Used from one worker thread at a time.
    """

    CHUNK = 8

    def __init__(self) -> None:
        self.statuses: dict[str, AgentStatus] = {}
        self.loaded: set[str] = set()  # agents whose figures have been computed at least once

    def load(
        self,
        config: Config,
        catalog: Catalog,
        reader: Ledger,
        now: datetime,
        environ: Mapping[str, str],
        names: set[str] | None,
        post: Callable[[Snapshot], None],
        *,
        daemon_pid: int | None = None,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        rows = {r["name"]: r for r in reader.agents()}
        badge = counts(reader)
        alive: bool | None = None
        if daemon_pid is not None:
            from supervisor.daemon import daemon_status

            info = daemon_status(reader)
            alive = info is not None and int(info["pid"]) == daemon_pid
        caps = config.file.caps
        simulated = {name: agent_is_simulated(config, name) for name in config.agents}
        wanted = [n for n in config.agents if names is None or n in names or n not in self.loaded]
        # Rows first: state and position are one query for every agent; figures keep their last known values.
        for name in config.agents:
            row = rows.get(name, {})
            known = self.statuses.get(name)
            if known is None:
                self.statuses[name] = placeholder(config, name, row)
            elif row:
                self.statuses[name] = replace(
                    known,
                    state=str(row.get("state", known.state)),
                    state_reason=str(row.get("state_reason", "")),
                    paused_by=row.get("paused_by"),
                    next_run_at=row.get("next_run_at"),
                    current_step=row.get("current_step"),
                    current_tier=row.get("current_tier"),
                    current_model=row.get("current_model"),
                )
        for gone in set(self.statuses) - set(config.agents):
            del self.statuses[gone]
            self.loaded.discard(gone)

        def snapshot(loading: set[str]) -> Snapshot:
            return Snapshot(
                statuses=[self.statuses[n] for n in config.agents],
                simulated=simulated,
                pending_approvals=badge["pending_approvals"],
                breaker_paused=badge["breaker_paused"],
                now=now,
                daemon_alive=alive,
                global_day_cap=None if caps.day_usd is None else usd_to_micros(caps.day_usd),
                global_month_cap=None if caps.month_usd is None else usd_to_micros(caps.month_usd),
                loading=frozenset(n for n in loading if n not in self.loaded),
            )

        pending = set(wanted)
        progressive = any(n not in self.loaded for n in wanted)
        if progressive:
            post(snapshot(pending))  # rows now, figures as they come
        for start in range(0, len(wanted), self.CHUNK):
            if cancelled():
                return
            chunk = wanted[start : start + self.CHUNK]
            for status in agent_statuses(subset(config, chunk), catalog, reader, now, dict(environ)):
                self.statuses[status.name] = status
                self.loaded.add(status.name)
            pending.difference_update(chunk)
            if pending and progressive:
                post(snapshot(pending))
        post(snapshot(set()))


# ------------------------------------------------------------------------------------------------------------
# One agent


@dataclass(frozen=True)
class AgentDetail:
    name: str
    digest: str
    runs: list[dict[str, Any]]
    days: list[DaySpend]
    caps: CapLimits
    spend_day_micros: int
    spend_month_micros: int
    simulated_day_micros: int
    backlog: list[EventRow]  # the agent's events before this window opened, oldest first


def load_agent_detail(
    config: Config, reader: Ledger, name: str, now: datetime, before_event_id: int, days: int = 30
) -> AgentDetail:
    from supervisor.runtime.memory import AgentMemory

    agent = config.agent(name)
    memory = AgentMemory(name, reader.path.parent / "agents", agent.memory_tokens, reader.redactor)
    today = local_day_start(now).date()
    _, day_sim = spend_split(reader, name, today)
    return AgentDetail(
        name=name,
        digest=memory.digest(),
        runs=reader.recent_runs(name, limit=20),
        days=spend_per_day(reader, today - timedelta(days=days - 1), today, agent=name),
        caps=cap_limits(config, agent),
        spend_day_micros=reader.spend(agent=name, since=local_day_start(now)).micros,
        spend_month_micros=reader.spend(agent=name, since=local_month_start(now)).micros,
        simulated_day_micros=day_sim,
        backlog=latest_events(reader, agent=name, before_id=before_event_id, limit=200),
    )


class ProcessSampler:
    """CPU and RSS of an agent's child processes and their descendants.

    psutil measures CPU between two calls on the same ``Process`` object, so the objects are kept between
    samples (a fresh object always reports 0%).
    """

    def __init__(self) -> None:
        self._known: dict[int, Any] = {}

    def sample(self, pids: list[int], *, descendants: bool = True) -> list[dict[str, Any]]:
        import psutil

        procs: list[Any] = []
        for pid in pids:
            try:
                root = self._process(pid)
                procs.append(root)
                if descendants:
                    procs.extend(self._process(c.pid) for c in root.children(recursive=True))
            except psutil.Error:
                continue
        rows: list[dict[str, Any]] = []
        alive: set[int] = set()
        for proc in procs:
            try:
                with proc.oneshot():
                    rows.append(
                        {
                            "pid": proc.pid,
                            "name": proc.name(),
                            "cpu_percent": proc.cpu_percent(interval=None),
                            "rss_bytes": proc.memory_info().rss,
                        }
                    )
                alive.add(proc.pid)
            except psutil.Error:
                continue
        self._known = {pid: p for pid, p in self._known.items() if pid in alive}
        return rows

    def _process(self, pid: int) -> Any:
        import psutil

        proc = self._known.get(pid)
        if proc is None or not proc.is_running():
            proc = psutil.Process(pid)
            self._known[pid] = proc
        return proc


def hosted_roots(runtime: Runtime, agent: str) -> list[int]:
    """The agent's child pids from the runtime's registry (copied with a retry: the runtime's thread mutates it)."""
    for _ in range(3):
        try:
            return sorted(runtime.processes.by_agent.get(agent, ()))
        except RuntimeError:  # the set changed size while it was being copied
            continue
    return []


def daemon_pids(daemon_pid: int, workspace: Path) -> list[int]:
    """An attached view cannot see the daemon's process registry: the agent's processes are the daemon's
    descendants whose working directory is inside the agent's workspace (commands and gates run there)."""
    import psutil

    pids: list[int] = []
    try:
        children = psutil.Process(daemon_pid).children(recursive=True)
    except psutil.Error:
        return pids
    for proc in children:
        try:
            cwd = Path(proc.cwd())
        except psutil.Error:
            continue
        if cwd == workspace or workspace in cwd.parents:
            pids.append(proc.pid)
    return pids


# ------------------------------------------------------------------------------------------------------------
# Costs


@dataclass(frozen=True)
class DateRange:
    label: str
    since: date | None
    until: date | None


RANGE_PRESETS = ("today", "last 7 days", "last 30 days", "this month", "all time")


def preset_range(label: str, today: date) -> DateRange:
    if label == "today":
        return DateRange(label, today, today)
    if label == "last 7 days":
        return DateRange(label, today - timedelta(days=6), today)
    if label == "last 30 days":
        return DateRange(label, today - timedelta(days=29), today)
    if label == "this month":
        return DateRange(label, today.replace(day=1), today)
    return DateRange("all time", None, None)


def parse_range(text: str) -> DateRange:
    """``2026-01-01..2026-01-31``, ``2026-01-01..`` or a single day; raises ``ValueError`` with a readable message."""
    text = text.strip()
    if ".." in text:
        start, _, end = text.partition("..")
    else:
        start = end = text
    try:
        since = date.fromisoformat(start.strip()) if start.strip() else None
        until = date.fromisoformat(end.strip()) if end.strip() else None
    except ValueError:
        raise ValueError("write a range as YYYY-MM-DD..YYYY-MM-DD (either end may be left open)") from None
    if since and until and since > until:
        raise ValueError("the range starts after it ends")
    label = f"{since or '…'} … {until or '…'}" if since != until else str(since)
    return DateRange(label, since, until)


@dataclass(frozen=True)
class CostsData:
    range: DateRange
    by_agent: list[ReportRow]
    by_model: list[ReportRow]
    by_day: list[ReportRow]
    days: list[DaySpend]


def load_costs(reader: Ledger, span: DateRange, today: date) -> CostsData:
    by_day = reader.report("day", since=span.since, until=span.until)
    first = span.since
    if first is None:
        first = min((date.fromisoformat(r.group) for r in by_day), default=today)
    last = span.until or today
    if (last - first).days > 366:  # a chart wider than a year says nothing a report does not
        first = last - timedelta(days=366)
    return CostsData(
        range=span,
        by_agent=reader.report("agent", since=span.since, until=span.until),
        by_model=reader.report("model", since=span.since, until=span.until),
        by_day=by_day,
        days=spend_per_day(reader, first, last),
    )


# ------------------------------------------------------------------------------------------------------------
# Models


@dataclass(frozen=True)
class LadderEntry:
    tier: str
    key: str
    provider: str
    kind: str
    status: str  # "ready" or why the router would skip it now
    priced_as: str | None  # the catalog model that prices it (itself, or `simulated_as` for a scripted one)
    input_per_mtok: str | None
    output_per_mtok: str | None
    cache_read_per_mtok: str | None
    context_window: int | None
    cache_ttl_s: int | None
    simulated: bool
    source: str = ""  # where its prices come from: bundled, user, genai-prices, local, simulated or unpriced
    unpriced_reason: str = ""


@dataclass(frozen=True)
class BackendHealth:
    provider: str
    kind: str
    ok: bool
    detail: str
    models: list[LocalModel] = field(default_factory=list)
    memory_used_bytes: int | None = None


@dataclass(frozen=True)
class Hardware:
    cpu: str
    cores: int
    memory_total_bytes: int
    memory_available_bytes: int
    gpus: list[str]
    gpu_detail: str


@dataclass(frozen=True)
class ModelsData:
    ladder: list[LadderEntry]
    backends: list[BackendHealth]
    api_keys: dict[str, bool]  # key variable name -> present (never the value)
    hardware: Hardware


def ladder(config: Config, catalog: Catalog, environ: Mapping[str, str]) -> list[LadderEntry]:
    """The tier ladder as configured, with prices and whether each model is usable right now."""
    from supervisor.runtime.pool import BackendPool

    pool = BackendPool(config, environ)
    out: list[LadderEntry] = []
    for tier in TIERS:
        for key in config.tiers.models(tier):
            provider, model_id = split_model_key(key)
            pcfg = config.providers.get(provider)
            kind = pcfg.kind if pcfg else "?"
            simulated = pcfg is not None and pcfg.kind == "scripted"
            pricing = catalog.spec_for(provider, model_id, pcfg, tier=tier)
            spec = pricing.spec
            priced_as = (pcfg.simulated_as if simulated and pcfg else key) if spec and not spec.synthesized else None
            status = pool.availability(provider) or ("simulated" if simulated else "ready")
            rates = spec.current_rates if spec else None
            out.append(
                LadderEntry(
                    tier=tier,
                    key=key,
                    provider=provider,
                    kind=kind,
                    status=status,
                    priced_as=priced_as,
                    input_per_mtok=str(rates.input) if rates else None,
                    output_per_mtok=str(rates.output) if rates else None,
                    cache_read_per_mtok=str(rates.cache_read) if rates else None,
                    context_window=spec.context_window if spec and not spec.synthesized else None,
                    cache_ttl_s=spec.cache_ttl_seconds if spec else None,
                    simulated=simulated,
                    source=pricing.origin,
                    unpriced_reason=pricing.reason,
                )
            )
    return out


def probe_hardware() -> Hardware:
    from supervisor.doctor import probe_cpu, probe_gpu, probe_memory

    cpu, memory, gpu = probe_cpu(), probe_memory(), probe_gpu()
    return Hardware(
        cpu=str(cpu["model"]),
        cores=int(cpu["cores"]),
        memory_total_bytes=int(memory["total_bytes"]),
        memory_available_bytes=int(memory["available_bytes"]),
        gpus=[f"{g['name']} ({g['memory_total_mb']} MiB)" for g in gpu["nvidia"]],
        gpu_detail="Apple Silicon (unified memory)" if cpu["apple_silicon"] else str(gpu["detail"]),
    )


def probe_backends(config: Config, environ: Mapping[str, str], runtime: Runtime | None = None) -> list[BackendHealth]:
    """Ollama and MLX always (the local tier's homes), plus every other provider the tiers name.

    Remote APIs are not called (a probe must cost nothing): their row says whether the key is set. When this
    window hosts the runtime, MLX's loaded models and memory come from the runtime's own backend.
    """
    from supervisor.backends.registry import make_backend
    from supervisor.doctor import probe_health

    names: list[str] = ["ollama", "mlx"]
    for tier in TIERS:
        for key in config.tiers.models(tier):
            provider = key.partition(":")[0]
            if provider not in names:
                names.append(provider)
    hosted: dict[str, Any] = runtime.pool.loaded() if runtime is not None else {}
    out: list[BackendHealth] = []
    for name in names:
        pcfg = config.providers.get(name)
        if pcfg is None:
            out.append(BackendHealth(name, "?", False, "not configured"))
            continue
        if pcfg.kind in ("anthropic", "openai_compat"):
            key_env = pcfg.api_key_env
            present = bool(key_env and environ.get(key_env))
            detail = f"{key_env} set" if present else f"{key_env} missing" if key_env else "no key needed (not probed)"
            if config.offline and not pcfg.local:
                detail += "; offline mode"
            out.append(BackendHealth(name, pcfg.kind, present or not key_env, detail))
            continue
        if pcfg.kind == "mlx" and name in hosted:
            backend = hosted[name]
            loaded = backend.loaded_models()
            out.append(
                BackendHealth(
                    name,
                    "mlx",
                    True,
                    f"in this process: {len(loaded)} loaded",
                    models=list(backend.available_models()),
                    memory_used_bytes=backend.memory_used_bytes(),
                )
            )
            continue
        try:
            base_dir = config.path.parent if config.path else None
            probe = make_backend(name, pcfg, environ, base_dir=base_dir)
        except SupervisorError as exc:
            out.append(BackendHealth(name, pcfg.kind, False, str(exc)))
            continue

        try:
            health = asyncio.run(probe_health(probe, 5.0))
        except (TimeoutError, SupervisorError, OSError) as exc:
            out.append(BackendHealth(name, pcfg.kind, False, f"probe failed: {exc}"))
            continue
        detail = health.detail
        if pcfg.kind == "mlx" and runtime is None:
            detail += "; loaded models live in the process that runs the agents"
        out.append(BackendHealth(name, pcfg.kind, health.ok, detail, models=list(health.models)))
    return out


def probe_models(config: Config, catalog: Catalog, environ: Mapping[str, str], runtime: Runtime | None) -> ModelsData:
    from supervisor.doctor import probe_api_keys

    extra = tuple(sorted({p.api_key_env for p in config.providers.values() if p.api_key_env}))
    return ModelsData(
        ladder=ladder(config, catalog, environ),
        backends=probe_backends(config, environ, runtime),
        api_keys=probe_api_keys(environ, extra),
        hardware=probe_hardware(),
    )


ModelsProbe = Callable[[Config, Catalog, Mapping[str, str], "Runtime | None"], ModelsData]


# ------------------------------------------------------------------------------------------------------------
# Approvals and alarms


def load_approvals(reader: Ledger) -> list[ApprovalRow]:
    return recent_approvals(reader)


@dataclass(frozen=True)
class Alarm:
    event_id: int
    at: str
    agent: str
    rule: str
    message: str
    evidence: dict[str, Any]
    still_paused: bool  # the agent is still paused by the breaker (resume is possible)


def load_alarms(reader: Ledger, limit: int = 100) -> list[Alarm]:
    rows = latest_events(reader, kinds=(BreakerTripped.kind,), limit=limit)
    agents = {r["name"]: r for r in reader.agents()}
    out = []
    for row in reversed(rows):  # newest first
        agent = row.agent or "?"
        state = agents.get(agent, {})
        out.append(
            Alarm(
                event_id=row.id,
                at=row.at,
                agent=agent,
                rule=str(row.data.get("rule", "?")),
                message=str(row.data.get("message", "")),
                evidence=dict(row.data.get("evidence") or {}),
                still_paused=state.get("state") == "paused" and state.get("paused_by") == "breaker",
            )
        )
    return out


__all__ = [
    "RANGE_PRESETS",
    "AgentDetail",
    "Alarm",
    "BackendHealth",
    "CostsData",
    "DateRange",
    "Hardware",
    "LadderEntry",
    "ModelsData",
    "ModelsProbe",
    "ProcessSampler",
    "Snapshot",
    "StatusLoader",
    "agent_is_simulated",
    "daemon_pids",
    "hosted_roots",
    "ladder",
    "load_agent_detail",
    "load_alarms",
    "load_approvals",
    "load_costs",
    "parse_range",
    "placeholder",
    "preset_range",
    "probe_models",
    "subset",
]
