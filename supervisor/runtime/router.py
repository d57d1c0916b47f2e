"""Routing: which models serve a tier right now, and which tiers a step should try.

The ladder is walked cheapest first. Within a tier the configured models are tried in order; a model is left
out when its provider is unreachable by policy (offline mode, a missing API key), when it is *unpriced* (a
non-local model with no catalog entry never receives paid traffic), or when it is a local model that is not
on this machine (an MLX model whose weights are absent, an Ollama model that is not pulled). Learned routing
skips a tier whose gate failed on each of a step's last K runs, with a re-probe every Nth run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from supervisor.catalog import TIERS, Catalog, ModelSpec, Tier, split_model_key
from supervisor.config import Config
from supervisor.errors import BackendUnavailable
from supervisor.ledger import Ledger
from supervisor.runtime.pool import BackendPool


@dataclass(frozen=True, slots=True)
class Candidate:
    """One model that may serve a tier: ``spec`` prices it (for a simulated provider, the named real model)."""

    tier: Tier
    key: str
    provider: str
    model_id: str
    spec: ModelSpec
    local: bool
    simulated: bool


@dataclass(frozen=True, slots=True)
class LearnedSkip:
    tier: Tier
    failed_runs: list[int]
    reason: str


@runtime_checkable
class KnowsItsModels(Protocol):
    """A local backend that can tell, without generating, whether a model is on this machine."""

    async def model_missing(self, name: str) -> str | None: ...


class Router:
    """``ledger`` (for learned routing) may be None where only availability is asked (`config check`)."""

    def __init__(self, config: Config, catalog: Catalog, pool: BackendPool, ledger: Ledger | None) -> None:
        self.config = config
        self.catalog = catalog
        self.pool = pool
        self.ledger = ledger

    def candidates(self, tier: Tier) -> tuple[list[Candidate], list[str]]:
        """The usable models of ``tier`` in order, and why each other one was left out."""
        usable: list[Candidate] = []
        skipped: list[str] = []
        for key in self.config.tiers.models(tier):
            provider, model_id = split_model_key(key)
            pcfg = self.config.providers.get(provider)
            if pcfg is None:
                skipped.append(f"{key}: provider not configured")
                continue
            why = self.pool.availability(provider)
            if why is not None:
                skipped.append(f"{key}: {why}")
                continue
            simulated = pcfg.kind == "scripted"
            pricing = self.catalog.spec_for(provider, model_id, pcfg, tier=tier)
            if pricing.spec is None:
                skipped.append(f"{key}: unpriced, so paid traffic is never sent to it ({pricing.reason})")
                continue
            spec = pricing.spec
            usable.append(Candidate(tier, key, provider, model_id, spec, pcfg.local or spec.is_free, simulated))
        return usable, skipped

    async def missing(self, candidate: Candidate) -> str | None:
        """Why ``candidate`` is a local model that is not on this machine, or None (present, or not checkable)."""
        if not candidate.local or candidate.simulated:
            return None
        try:
            backend = self.pool.get(candidate.provider)
        except BackendUnavailable:
            return None  # reported by the call, as for any unreachable provider
        if isinstance(backend, KnowsItsModels):
            return await backend.model_missing(candidate.model_id)
        return None

    async def available(self, tier: Tier) -> tuple[list[Candidate], list[str], list[str]]:
        """``candidates(tier)`` without the local models that are not on this machine: (usable, skipped, missing)."""
        usable, skipped = self.candidates(tier)
        present: list[Candidate] = []
        missing: list[str] = []
        for candidate in usable:
            why = await self.missing(candidate)
            if why is None:
                present.append(candidate)
            else:
                missing.append(f"{candidate.key} is not on this machine: {why}")
        return present, skipped, missing

    def learned_skip(self, agent: str, step: str, tier: Tier, *, current_run: int | None = None) -> LearnedSkip | None:
        """Skip ``tier`` for this step when its gate failed there on each of the last K runs (re-probe every N).

        ``current_run`` is the run asking (not counted as a run since the last probe); ``supervisor status`` asks
        without one, about the next run.
        """
        if self.ledger is None:
            return None
        k = self.config.file.router.skip_after_failed_runs
        n = self.config.file.router.reprobe_every
        attempts = self.ledger.recent_attempts(agent, step, limit=500)
        at_tier = [a for a in attempts if a["tier"] == tier]
        if not at_tier:
            return None
        runs: dict[int, bool] = {}
        for a in at_tier:  # newest first
            runs[a["run_id"]] = runs.get(a["run_id"], False) or bool(a["passed"])
        recent = list(runs.items())[:k]
        if len(recent) < k or any(passed for _, passed in recent):
            return None
        # Runs of this agent since the tier was last tried: every Nth run probes it again.
        last_tried = recent[0][0]
        runs_since = [r for r in self.ledger.recent_run_ids(agent, n + 1) if r > last_tried and r != current_run]
        if len(runs_since) >= n - 1:
            return None
        failed = [run_id for run_id, _ in recent]
        return LearnedSkip(
            tier,
            failed,
            f"the gate failed at {tier} on each of the last {k} runs ({', '.join(map(str, failed))}); "
            f"re-probed every {n} runs",
        )


async def missing_local_models(config: Config, catalog: Catalog) -> list[str]:
    """Every configured local model that is not on this machine, with why (for `config check` and `status`)."""
    pool = BackendPool(config, config.environ)
    router = Router(config, catalog, pool, None)
    found: list[str] = []
    try:
        for tier in TIERS:
            _, _, missing = await router.available(tier)
            found += [m for m in missing if m not in found]
    finally:
        await pool.aclose()
    return found
