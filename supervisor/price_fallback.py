"""The fallback price database: pydantic's ``genai-prices`` package, for paid models neither catalog lists.

Its price data ships inside the installed package; nothing is fetched at run time (its optional updater is never
started). It is imported on the first lookup that needs it (~0.2 s), never on the ``supervisor --help`` path.

Matching follows the database's own rules, never a fuzzy guess of ours: our provider is turned into one of its
provider ids (by the provider's ``base_url`` against the database's API URL patterns, else by the explicit
``GENAI_PROVIDER`` table below), then the database's matcher finds the model by id, alias or pattern within that
provider (and the providers it officially falls back to, e.g. Azure -> OpenAI).

A price the database holds is turned into our ``PriceTable`` only when our cost function can charge it exactly:
start-dated prices become effective-dated tables, a prompt-size tier becomes a long-context band. A time-of-day
price (it has no weekday or holiday rule), a per-request fee, a separately priced reasoning output or a model with
no token prices leaves the model unpriced, with a message saying why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from supervisor.catalog import LongContextBand, ModelSpec, PriceTable, Rates, Tier

if TYPE_CHECKING:
    from supervisor.catalog import Pricing

log = logging.getLogger(__name__)

ORIGIN: Final = "genai-prices"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Our provider name (the key of [providers.NAME]) -> genai-prices' provider id. A provider whose base_url matches one
# of the database's API URL patterns is matched by that first, whatever its name.
GENAI_PROVIDER: dict[str, str] = {
    "anthropic": "anthropic",
    "openai": "openai",
    "deepseek": "deepseek",
    "gemini": "google",
    "google": "google",
    "vertex": "google",
    "mistral": "mistral",
    "openrouter": "openrouter",
    "groq": "groq",
    "together": "together",
    "fireworks": "fireworks",
    "xai": "x-ai",
    "grok": "x-ai",
    "moonshot": "moonshotai",
    "kimi": "moonshotai",
    "cerebras": "cerebras",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "novita": "novita",
    "zai": "zai",
    "zhipu": "zhipuai",
    "minimax": "minimax",
    "azure": "azure",
    "bedrock": "aws",
    "aws": "aws",
    "cloudflare": "cloudflare",
    "databricks": "databricks",
    "baseten": "baseten",
    "ovhcloud": "ovhcloud",
}

# Price keys for token components our cost function has.
_TOKEN_KEYS = frozenset(
    {"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "cache_write_5m_mtok", "cache_write_1h_mtok"}
)
# Price keys for inputs and tools a supervisor call never uses (images, audio, video, documents, server-side search
# and code tools): ignoring them cannot undercount a text call.
_UNUSED_MARKERS = ("audio", "image", "video", "gpixels", "document", "searches", "code_executions")

_warned = False


class Inexpressible(ValueError):
    """The database's price cannot be charged exactly by our cost function; the message says why."""


@dataclass(frozen=True, slots=True)
class Match:
    """A model found in the database: which provider and model entry, and the raw entry for the check."""

    provider_id: str
    model_id: str
    info: Any  # genai_prices.types.ModelInfo
    pricing_urls: tuple[str, ...]


@dataclass
class PriceFallback:
    """genai-prices, loaded on first use; if it cannot load, every lookup says so and the catalogs still work."""

    _snapshot: Any = None
    _loaded: bool = False
    error: str = ""
    version: str = ""
    _specs: dict[tuple[Any, ...], Pricing] = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------------------
    # Loading

    def load(self) -> bool:
        """Import the package and its bundled data once; ``False`` (with ``error`` set) when that fails."""
        global _warned
        if self._loaded:
            return self._snapshot is not None
        self._loaded = True
        try:
            import genai_prices
            from genai_prices import data_snapshot

            snapshot = data_snapshot.get_snapshot()
            if not snapshot.providers:
                raise ValueError("its price data holds no providers")
            self.version = str(genai_prices.__version__)
        except ImportError as exc:
            self.error = f"genai-prices is not importable ({exc})"
        except Exception as exc:  # noqa: BLE001 - any failure inside a third-party data load means "no fallback"
            self.error = f"genai-prices failed to load its price data ({type(exc).__name__}: {exc})"
        else:
            self._snapshot = snapshot
            return True
        if not _warned:
            _warned = True
            log.warning("%s: only the bundled and user catalogs price models", self.error)
        return False

    @property
    def label(self) -> str:
        """``genai-prices 0.2.5``: what ledger rows and catalog entries name as the source."""
        return f"{ORIGIN} {self.version}"

    def status(self) -> dict[str, Any]:
        """For ``doctor``: whether the fallback loaded, its version and size, or why not."""
        if not self.load():
            return {"available": False, "version": None, "providers": 0, "models": 0, "detail": self.error}
        providers = self._snapshot.providers
        return {
            "available": True,
            "version": self.version,
            "providers": len(providers),
            "models": sum(len(p.models) for p in providers),
            "detail": "bundled price data (offline; never updated at run time)",
        }

    # ------------------------------------------------------------------------------------------------------
    # Matching

    def provider_id(self, provider: str, base_url: str | None) -> str | None:
        """The database's provider for ours: by ``base_url`` (its own API URL patterns), else by our name."""
        if not self.load():
            return None
        if base_url:
            try:
                return str(self._snapshot.find_provider(None, None, base_url).id)
            except LookupError:
                pass
        return GENAI_PROVIDER.get(provider.lower())

    def match(self, provider: str, model_id: str, base_url: str | None = None) -> Match | str:
        """The database's entry for ``provider:model_id``, or why there is none."""
        if not self.load():
            return self.error
        provider_id = self.provider_id(provider, base_url)
        if provider_id is None:
            return (
                f"genai-prices has no provider for {provider!r} (known names: see the README's model catalog "
                "section; a provider is also matched by its base_url)"
            )
        try:
            found, info = self._snapshot.find_provider_model(model_id, None, provider_id, None)
        except LookupError:
            return f"genai-prices {self.version} does not list {model_id!r} for provider {provider_id!r}"
        urls = tuple(found.pricing_urls or ())
        return Match(str(found.id), str(info.id), info, urls)

    # ------------------------------------------------------------------------------------------------------
    # Pricing

    def pricing(
        self,
        provider: str,
        model_id: str,
        *,
        base_url: str | None,
        tier: Tier,
        context_window: int | None,
    ) -> Pricing:
        """A spec priced from the database, or an unpriced answer that says why (never a guess, never $0)."""
        from supervisor.catalog import Pricing

        memo = (provider, model_id, base_url, tier, context_window)
        cached = self._specs.get(memo)
        if cached is not None:
            return cached
        key = f"{provider}:{model_id}"
        found = self.match(provider, model_id, base_url)
        if isinstance(found, str):
            answer = Pricing(key, None, "unpriced", f"{key} is not in the catalog, and {found}")
        else:
            try:
                spec = self._spec(found, provider, model_id, tier, context_window)
            except Inexpressible as exc:
                answer = Pricing(
                    key, None, "unpriced", f"{key}: genai-prices lists {found.provider_id}/{found.model_id}, but {exc}"
                )
            else:
                answer = Pricing(key, spec, ORIGIN)
        self._specs[memo] = answer
        return answer

    def _spec(self, found: Match, provider: str, model_id: str, tier: Tier, context_window: int | None) -> ModelSpec:
        tables = price_tables(found.info, self.label, found.provider_id)
        window = found.info.context_window or context_window
        if not window:
            raise Inexpressible(
                "it states no context window; set context_window under [providers."
                f"{provider}] so prompts can be checked against it"
            )
        where = f"{self.label} ({found.provider_id}/{found.model_id})"
        return ModelSpec(
            provider=provider,
            id=model_id,
            tier=tier,
            context_window=int(window),
            # The database states no output limit: the call's own output budget bounds it (and its reservation).
            max_output_tokens=int(window),
            prices=tables,
            source=where + (f"; {found.pricing_urls[0]}" if found.pricing_urls else ""),
            notes=str(found.info.price_comments or ""),
            origin=ORIGIN,
            price_source=self.label,
        )


# ----------------------------------------------------------------------------------------------------------
# Translating the database's prices into ours


def price_tables(info: Any, label: str, provider_id: str) -> tuple[PriceTable, ...]:
    """The model's prices as effective-dated tables; ``Inexpressible`` when our cost function cannot be exact."""
    from genai_prices.types import ModelPrice, StartDateConstraint, TimeOfDateConstraint

    source = f"{label} ({provider_id}/{info.id})"
    if isinstance(info.prices, ModelPrice):
        entries: list[tuple[Any, Any]] = [(None, info.prices)]
    else:
        entries = [(c.constraint, c.prices) for c in info.prices]
    tables: list[PriceTable] = []
    for index, (constraint, prices) in enumerate(entries):
        if isinstance(constraint, TimeOfDateConstraint):
            raise Inexpressible(
                "its prices change with the time of day and it has no weekday or holiday rule, so no exact price "
                "can be known; add the model to a user catalog with a [model.peak] table"
            )
        if constraint is None:
            if index:
                raise Inexpressible("its price conditions are in an order our catalog cannot state")
            start, dated = EPOCH, False
        elif isinstance(constraint, StartDateConstraint):
            start, dated = datetime.combine(constraint.start_date, time(0), tzinfo=UTC), True
            if tables and start <= tables[-1].effective_from:
                raise Inexpressible("its start-dated prices are not in date order")
        else:
            raise Inexpressible(f"its price condition {type(constraint).__name__} has no counterpart in our catalog")
        rates, bands = translate_prices(prices)
        tables.append(PriceTable(start, rates, bands, source=source, dated=dated))
    if not tables:
        raise Inexpressible("it has no prices")
    return tuple(tables)


def translate_prices(prices: Any) -> tuple[Rates, tuple[LongContextBand, ...]]:
    """One ``ModelPrice`` as our base rates and long-context bands."""
    from genai_prices.types import TieredPrices

    values: dict[str, Any] = {}
    for key, value in vars(prices).items():
        if key.startswith("_") or value is None:
            continue
        if key in _TOKEN_KEYS:
            values[key] = value
        elif key == "output_reasoning_mtok" and value == prices.output_mtok:
            continue  # reasoning billed as output: exactly what our cost function does
        elif not any(marker in key for marker in _UNUSED_MARKERS):
            raise Inexpressible(f"it charges {key!r}, which our cost function has no component for")
    if "input_mtok" not in values or "output_mtok" not in values:
        raise Inexpressible("it has no per-token input and output price")
    thresholds = sorted({t.start for v in values.values() if isinstance(v, TieredPrices) for t in v.tiers})

    def at(value: Any, threshold: int | None) -> Decimal:
        if not isinstance(value, TieredPrices):
            return Decimal(value)
        price = value.base
        for tier in value.tiers:
            if threshold is not None and tier.start <= threshold:
                price = tier.price
        return Decimal(price)

    def rates(threshold: int | None) -> Rates:
        get = {k: at(v, threshold) for k, v in values.items()}
        input_ = get["input_mtok"]
        # A component the database leaves unpriced is charged as input, exactly as genai-prices itself does.
        return Rates(
            input=input_,
            cache_read=get.get("cache_read_mtok", input_),
            cache_write=get.get("cache_write_5m_mtok", get.get("cache_write_mtok", input_)),
            output=get["output_mtok"],
            cache_write_1h=get.get("cache_write_1h_mtok"),
        )

    base = rates(None)
    bands = tuple(LongContextBand(t, rates(t)) for t in thresholds)
    if base.is_free and all(b.rates.is_free for b in bands):
        raise Inexpressible(
            "it lists the model at $0, and a paid provider's model is never priced at $0 from the fallback; "
            "add a user catalog entry if it really is free"
        )
    return base, bands


# ----------------------------------------------------------------------------------------------------------
# What the check compares: the database's prices in force at a moment, with its time-of-day prices apart


@dataclass(frozen=True, slots=True)
class InForce:
    """The database's prices for one model at one moment (time-of-day prices kept apart as ``peak``)."""

    rates: Rates
    bands: tuple[LongContextBand, ...]
    since: date | None  # the start date of the price in force; None = undated
    peak: Rates | None
    peak_hours_utc: tuple[tuple[time, time], ...]


def in_force(info: Any, at: datetime) -> InForce:
    """The prices genai-prices applies at ``at`` outside any time-of-day window, and its peak prices apart."""
    from genai_prices.types import ModelPrice, StartDateConstraint, TimeOfDateConstraint

    entries = (
        [(None, info.prices)]
        if isinstance(info.prices, ModelPrice)
        else [(c.constraint, c.prices) for c in info.prices]
    )
    base_prices, since = entries[0][1], None
    peak_prices: Any = None
    hours: list[tuple[time, time]] = []
    for constraint, prices in entries:
        if isinstance(constraint, TimeOfDateConstraint):
            peak_prices = prices
            hours.append((_utc(constraint.start_time), _utc(constraint.end_time)))
        elif constraint is None or (isinstance(constraint, StartDateConstraint) and constraint.active(at)):
            base_prices = prices
            since = constraint.start_date if isinstance(constraint, StartDateConstraint) else None
            if peak_prices is not None:
                peak_prices, hours = None, []  # a later start-dated price replaces earlier time-of-day ones
    rates, bands = translate_prices(base_prices)
    peak = translate_prices(peak_prices)[0] if peak_prices is not None else None
    return InForce(rates, bands, since, peak, tuple(sorted(hours)))


def _utc(value: time) -> time:
    if value.tzinfo is None:
        return value
    return datetime.combine(date(2000, 1, 3), value).astimezone(UTC).time()


def default_fallback() -> PriceFallback:
    """The one fallback a process uses (it loads the package once)."""
    global _default
    if _default is None:
        _default = PriceFallback()
    return _default


_default: PriceFallback | None = None
