"""``supervisor ask``: one call to one model, through the same reservation, pricing and ledger path as agents.

The call is recorded under the agent ``cli`` (one run per question), so `ledger report` shows it like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor.backends.base import Message, OnText, Request
from supervisor.catalog import TIERS, Catalog, split_model_key
from supervisor.config import Config
from supervisor.errors import BudgetError, CatalogError, ConfigError
from supervisor.ledger import CapHit, CapLimits, Ledger
from supervisor.runtime.budget import _micros
from supervisor.runtime.caller import CallOutcome, ModelCaller
from supervisor.runtime.events import EventBus
from supervisor.runtime.pool import BackendPool
from supervisor.runtime.router import Candidate

ASK_AGENT = "cli"


@dataclass(frozen=True)
class AskResult:
    key: str
    outcome: CallOutcome
    run_id: int
    simulated: bool
    price_source: str = ""  # where the call's prices came from, as its ledger row records it


async def ask(
    config: Config,
    catalog: Catalog,
    ledger: Ledger,
    model: str,
    prompt: str,
    *,
    system: str | None = None,
    max_tokens: int = 512,
    temperature: float = 0.0,
    timeout_s: float = 120.0,
    on_text: OnText | None = None,
) -> AskResult:
    provider, model_id = split_model_key(model)
    pcfg = config.providers.get(provider)
    if pcfg is None:
        raise ConfigError(
            f"provider {provider!r} is not configured",
            f"known providers: {', '.join(sorted(config.providers))}; add [providers.{provider}] to the config",
        )
    tier = next((t for t in TIERS if model in config.tiers.models(t)), None)
    pricing = catalog.spec_for(provider, model_id, pcfg, tier=tier)
    spec = pricing.spec
    if spec is None:
        raise CatalogError(
            f"{model} is unpriced, so paid traffic is never sent to it: {pricing.reason}",
            "add it to a user catalog ($SUPERVISOR_HOME/models/*.toml), or mark the provider `local = true` if it is free",
        )
    pool = BackendPool(config, config.environ)
    why = pool.availability(provider)
    if why is not None:
        from supervisor.errors import BackendUnavailable

        raise BackendUnavailable(f"{model}: {why}", provider=provider, model=model_id)
    ledger.ensure_agent(ASK_AGENT)
    simulated = pcfg.kind == "scripted"
    run_id = ledger.start_run(ASK_AGENT, "ask", simulated=simulated)
    candidate = Candidate(spec.tier, model, provider, model_id, spec, pcfg.local or spec.is_free, simulated)
    messages = ([Message("system", system, cache_breakpoint=True)] if system else []) + [Message("user", prompt)]
    request = Request(
        model=model_id,
        messages=tuple(messages),
        max_output_tokens=min(max_tokens, spec.max_output_tokens),
        temperature=temperature,
        timeout_s=timeout_s,
        context_window=spec.context_window,
        cache_ttl=pcfg.cache_ttl,
    )
    caps = config.file.caps
    limits = CapLimits(global_day_micros=_micros(caps.day_usd), global_month_micros=_micros(caps.month_usd))
    caller = ModelCaller(ledger, pool, EventBus(ledger))
    outcome_text = "failed"
    try:
        outcome = await caller.call(
            agent=ASK_AGENT,
            run_id=run_id,
            step="ask",
            step_id=None,
            attempt=1,
            candidate=candidate,
            request=request,
            limits=limits,
            on_text=on_text,
        )
        if isinstance(outcome, CapHit):
            outcome_text = "deferred"
            raise BudgetError(
                f"not sent: {outcome.describe()}", "raise the cap in [caps] or wait for the window to reset"
            )
        outcome_text = "success" if outcome.ok else "failed"
        return AskResult(model, outcome, run_id, simulated, candidate.spec.price_source)
    finally:
        ledger.finish_run(run_id, outcome_text)
        await pool.aclose()
