"""Which models may serve a gateway request: the client's model name -> the agent's tiers -> candidates.

A name is a tier alias (``local``, ``cheap``, ``frontier``, ``auto`` = the agent's ladder from its lowest tier),
a catalog key (``provider:id``), the bare id of a configured model (``qwen3:4b``), one of the agent's mapped
names (``models = { "claude-sonnet-5-5" = "cheap" }``), or any other name (served by ``auto``, or refused when
the agent sets ``substitution = false``). A key bound to a tier (an agent step's attempt) is served by that
tier whatever the name. Serving another model than the one named is a *substitution*, always made visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from supervisor.catalog import TIERS, Tier, split_model_key
from supervisor.config import AgentConfig, Config
from supervisor.errors import CatalogError
from supervisor.ledger import GatewayKey
from supervisor.runtime.router import Candidate, Router


@dataclass(frozen=True, slots=True)
class Route:
    """The candidates to try in order, and whether serving them is a substitution (with why)."""

    candidates: list[tuple[Candidate, bool]]  # (candidate, substituted)
    skipped: list[str]
    reason: str  # how the name was read, e.g. "mapped by agents.aider.models" or "any other name -> auto"


class RouteRefused(Exception):
    def __init__(self, kind: Literal["permission", "not_found"], status: int, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.message = message


def _catalog_key(config: Config, name: str) -> str | None:
    """``name`` as a configured ``provider:id``, or the bare id of exactly one model in [tiers]."""
    try:
        provider, _ = split_model_key(name)
    except CatalogError:
        provider = ""
    if provider in config.providers:
        return name
    matches = {key for tier in TIERS for key in config.tiers.models(tier) if key.partition(":")[2] == name}
    return matches.pop() if len(matches) == 1 else None


def resolve(
    config: Config, router: Router, agent_name: str, agent: AgentConfig, key: GatewayKey | None, name: str
) -> Route:
    """Read the requested model name for this agent; raise ``RouteRefused`` when nothing may serve it."""
    ladder: list[Tier] = list(agent.ladder)
    target: str
    substituted_always = False
    if key is not None and key.tier is not None:
        if key.tier not in TIERS:
            raise RouteRefused("permission", 403, f"key {key.prefix}... is bound to an unknown tier {key.tier!r}")
        target = key.tier
        reason = f"this key is bound to the {key.tier} tier (an agent step's attempt)"
        substituted_always = name not in (key.tier, "auto")
    elif name in agent.models:
        target = agent.models[name]
        reason = f"mapped by agents.{agent_name}.models"
        substituted_always = True
    elif name in (*TIERS, "auto"):
        target = name
        reason = "a tier alias"
    elif (catalog_key := _catalog_key(config, name)) is not None:
        target = catalog_key
        reason = "a configured model"
    elif agent.substitution:
        target = "auto"
        reason = f"{name!r} is not a tier or a configured model: served by auto (the lowest allowed tier)"
        substituted_always = True
    else:
        raise RouteRefused(
            "not_found",
            404,
            f"model {name!r} is not served for agent {agent_name!r} (substitution = false): ask for local, cheap, "
            f"frontier, auto or a configured provider:id, or map it under agents.{agent_name}.models",
        )

    out: list[tuple[Candidate, bool]] = []
    skipped: list[str] = []
    if target in (*TIERS, "auto"):
        tiers: list[Tier] = ladder if target == "auto" else [t for t in TIERS if t == target]
        # A key bound to a tier (an agent step's attempt) was given that tier by the step's own ladder.
        bound = key is not None and key.tier is not None
        if target != "auto" and target not in ladder and not bound:
            raise RouteRefused(
                "permission",
                403,
                f"tier {target!r} is not on agent {agent_name!r}'s ladder ({', '.join(ladder)})",
            )
        for tier in tiers:
            usable, why = router.candidates(tier)
            skipped.extend(why)
            out.extend((c, substituted_always) for c in usable)
    else:
        found: Candidate | None = None
        for tier in TIERS:
            if target not in config.tiers.models(tier):
                continue
            usable, why = router.candidates(tier)
            found = next((c for c in usable if c.key == target), None)
            if found is None:
                skipped.extend(w for w in why if w.startswith(target))
            break
        else:
            skipped.append(f"{target}: not listed in any tier of [tiers]")
        if found is not None:
            if found.tier not in ladder:
                raise RouteRefused(
                    "permission",
                    403,
                    f"{target} serves the {found.tier} tier, which is not on agent {agent_name!r}'s ladder "
                    f"({', '.join(ladder)})",
                )
            out.append((found, substituted_always))
    return Route(out, skipped, reason)
