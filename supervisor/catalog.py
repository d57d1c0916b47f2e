"""The model catalog: ``models/*.toml`` (bundled) plus the user's catalog directories.

Each file is data that humans edit: prices in USD per million tokens as decimal strings, effective-dated, with
the source they came from. This module validates them at the boundary (pydantic, unknown keys are errors) and
turns them into frozen ``ModelSpec`` objects the rest of the code trusts.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from supervisor.errors import CatalogError

if TYPE_CHECKING:
    from supervisor.price_fallback import PriceFallback


class ProviderTraits(Protocol):
    """What pricing reads of a provider's config (``config.ProviderConfig`` has it): the catalog sits below the
    config, so it names the traits rather than importing the config's type."""

    @property
    def kind(self) -> str: ...

    @property
    def simulated_as(self) -> str | None: ...

    @property
    def local(self) -> bool: ...

    @property
    def context_window(self) -> int | None: ...

    @property
    def base_url(self) -> str | None: ...


Tier = Literal["local", "cheap", "frontier"]
TIERS: tuple[Tier, ...] = ("local", "cheap", "frontier")
PromptProfile = Literal["minimal", "full"]
LOCAL_PROVIDER_KINDS = frozenset({"ollama", "mlx"})
# Where a model's prices come from: a catalog file shipped with the package or written by the user, the fallback
# price database, $0 for a local provider's unlisted model, or a real model's prices under a simulated name.
Origin = Literal["bundled", "user", "genai-prices", "local", "simulated", "unpriced"]


# ----------------------------------------------------------------------------------------------------------
# Domain objects (what the rest of the code uses)


@dataclass(frozen=True, slots=True)
class Rates:
    """Unit prices in USD per million tokens (exact decimals)."""

    input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal
    cache_write_1h: Decimal | None = None

    @property
    def write_1h(self) -> Decimal:
        """The 1-hour cache-write price; providers without one bill such writes at the plain write price."""
        return self.cache_write if self.cache_write_1h is None else self.cache_write_1h

    @property
    def highest_prompt_rate(self) -> Decimal:
        """The most any one prompt token can cost (used for worst-case reservations)."""
        return max(self.input, self.cache_read, self.cache_write, self.write_1h)

    @property
    def is_free(self) -> bool:
        return all(r == 0 for r in (self.input, self.cache_read, self.cache_write, self.write_1h, self.output))

    def as_dict(self) -> dict[str, str | None]:
        return {
            "input": str(self.input),
            "cache_read": str(self.cache_read),
            "cache_write": str(self.cache_write),
            "cache_write_1h": None if self.cache_write_1h is None else str(self.cache_write_1h),
            "output": str(self.output),
        }


ZERO_RATES = Rates(Decimal(0), Decimal(0), Decimal(0), Decimal(0), Decimal(0))


@dataclass(frozen=True, slots=True)
class LongContextBand:
    """Whole-request prices once the prompt (uncached + cache read + cache write) exceeds ``above_prompt_tokens``."""

    above_prompt_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class PeakWindow:
    """Hours (in a fixed UTC offset) when ``rates`` replace the base rates, e.g. DeepSeek's Beijing peak."""

    utc_offset: timedelta
    weekdays: frozenset[int]  # ISO weekdays, 1 = Monday
    hours: tuple[tuple[time, time], ...]
    holidays: frozenset[date]  # local dates that are off-peak all day
    workdays: frozenset[date]  # local dates that follow the weekday hours even on a weekend (make-up days)
    rates: Rates

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(timezone(self.utc_offset))
        day = local.date()
        if day in self.holidays:
            return False
        if local.isoweekday() not in self.weekdays and day not in self.workdays:
            return False
        clock = local.time().replace(tzinfo=None)
        return any(start <= clock < end for start, end in self.hours)


@dataclass(frozen=True, slots=True)
class PriceTable:
    """The prices of one model from ``effective_from`` until the next table takes over."""

    effective_from: datetime
    rates: Rates
    long_context: tuple[LongContextBand, ...] = ()
    peak: PeakWindow | None = None
    source: str = ""
    dated: bool = True  # False: the source gives no start date (in force since before it tracked changes)

    @property
    def date_label(self) -> str:
        """The price date as ledger rows and reports show it: ``2026-07-30``, or ``undated``."""
        return f"{self.effective_from:%Y-%m-%d}" if self.dated else "undated"

    def rates_for(self, at: datetime, prompt_tokens: int) -> tuple[Rates, str]:
        """The rates in force for a request of ``prompt_tokens`` started at ``at``, and a label saying why."""
        for band in sorted(self.long_context, key=lambda b: b.above_prompt_tokens, reverse=True):
            if prompt_tokens > band.above_prompt_tokens:
                return band.rates, f"long-context >{band.above_prompt_tokens}"
        if self.peak is not None and self.peak.contains(at):
            return self.peak.rates, "peak"
        return self.rates, "off-peak" if self.peak is not None else "standard"

    def worst_rates(self, prompt_tokens: int) -> Rates:
        """The highest rates any request of this size could be billed at (peak or not)."""
        candidates = [self.rates]
        if self.peak is not None:
            candidates.append(self.peak.rates)
        candidates.extend(b.rates for b in self.long_context if prompt_tokens > b.above_prompt_tokens)
        return Rates(
            input=max(r.input for r in candidates),
            cache_read=max(r.cache_read for r in candidates),
            cache_write=max(r.cache_write for r in candidates),
            output=max(r.output for r in candidates),
            cache_write_1h=max(r.write_1h for r in candidates),
        )


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model: where it sits on the ladder, how big it is, and what it costs over time."""

    provider: str
    id: str
    tier: Tier
    context_window: int
    max_output_tokens: int
    prices: tuple[PriceTable, ...]  # sorted by effective_from
    cache_ttl_seconds: int | None = None
    source: str = ""
    catalog_file: str = ""
    notes: str = ""
    synthesized: bool = False  # True for a local model with no catalog entry ($0 by construction)
    origin: Origin = "bundled"
    price_source: str = ""  # what ledger rows record: "bundled openai.toml", "user /path/x.toml", "genai-prices 0.2.5"
    checked: date | None = None  # the catalog file's [meta] checked date
    fallback_disagrees: FallbackDisagreement | None = None
    prompt_profile: PromptProfile | None = None  # "minimal" (small models) or "full"; None: by tier

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.id}"

    @property
    def is_local(self) -> bool:
        return self.tier == "local"

    def price_at(self, at: datetime) -> PriceTable | None:
        """The price table in force at ``at``; ``None`` if ``at`` is before every known table."""
        in_force = [p for p in self.prices if p.effective_from <= at]
        return in_force[-1] if in_force else None

    @property
    def current_rates(self) -> Rates:
        table = self.price_at(datetime.now(UTC))
        return (table or self.prices[0]).rates

    @property
    def is_free(self) -> bool:
        return all(
            p.rates.is_free
            and all(b.rates.is_free for b in p.long_context)
            and (p.peak is None or p.peak.rates.is_free)
            for p in self.prices
        )


@dataclass(frozen=True, slots=True)
class FallbackDisagreement:
    """Where a catalog entry knowingly disagrees with the fallback database, and why ours stands.

    ``theirs`` maps each component (``input``, ``peak.output``, ``above_272000.cache_read`` ...) to the database's
    value we reject; the check accepts exactly those values, so a changed database value is looked at again.
    """

    reason: str
    checked: date
    theirs: dict[str, Decimal]


def local_spec(provider: str, model_id: str, context_window: int | None = None) -> ModelSpec:
    """A $0 spec for a model served by a local provider that the catalog does not list."""
    return ModelSpec(
        provider=provider,
        id=model_id,
        tier="local",
        context_window=context_window or 8192,
        max_output_tokens=context_window or 8192,
        prices=(PriceTable(effective_from=datetime(1970, 1, 1, tzinfo=UTC), rates=ZERO_RATES),),
        source="local provider: $0 marginal cost",
        synthesized=True,
        origin="local",
        price_source="local provider ($0)",
    )


def simulated_spec(spec: ModelSpec, provider: str, model_id: str, tier: Tier) -> ModelSpec:
    """A simulated model: the real model's prices and window, under the simulated provider's name and tier."""
    from dataclasses import replace

    return replace(
        spec, provider=provider, id=model_id, tier=tier, notes=f"simulated; priced as {spec.key}", origin="simulated"
    )


@dataclass(frozen=True, slots=True)
class Pricing:
    """How one model is priced: its spec and where its prices come from, or why it is unpriced.

    ``spec`` is ``None`` exactly when the model is unpriced: then ``reason`` says why, the router never sends it
    paid traffic and reports never show it as $0.
    """

    key: str
    spec: ModelSpec | None
    origin: Origin
    reason: str = ""

    @property
    def priced(self) -> bool:
        return self.spec is not None


def split_model_key(key: str) -> tuple[str, str]:
    """``"ollama:qwen3:4b"`` -> ``("ollama", "qwen3:4b")``: the provider is everything before the first colon."""
    provider, sep, model_id = key.partition(":")
    if not sep or not provider or not model_id:
        raise CatalogError(
            f"model {key!r} is not written as provider:id",
            "write models as provider:id, e.g. anthropic:claude-sonnet-5-5 or ollama:qwen3:4b",
        )
    return provider, model_id


@dataclass(frozen=True)
class Catalog:
    """All known models by ``provider:id``; later catalog directories override earlier ones."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    fallback: PriceFallback | None = None  # the price database for models no catalog file lists

    def get(self, key: str) -> ModelSpec | None:
        """The catalog file entry for ``provider:id`` (no fallback, no local or simulated pricing)."""
        return self.models.get(key)

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(sorted(self.models.values(), key=lambda m: (TIERS.index(m.tier), m.provider, m.id)))

    def __len__(self) -> int:
        return len(self.models)

    def by_tier(self, tier: Tier) -> list[ModelSpec]:
        return [m for m in self if m.tier == tier]

    def spec_for(
        self,
        provider: str,
        model_id: str,
        provider_config: ProviderTraits | None = None,
        *,
        tier: Tier | None = None,
    ) -> Pricing:
        """How ``provider:model_id`` is priced: the one place that decides it (router, ask, status, TUI, CLI).

        In order: a scripted provider is priced as its ``simulated_as`` model; then the user catalog, then the
        bundled catalog (one map, the user's entries loaded last); then a local provider's unlisted model is $0;
        then the fallback price database. Anything else is unpriced, with the reason. ``tier`` is the rung the
        caller uses the model on (it labels a simulated or fallback-priced spec; catalog entries keep their own).
        """
        key = f"{provider}:{model_id}"
        pcfg = provider_config
        if pcfg is not None and pcfg.kind == "scripted":
            real = self.models.get(pcfg.simulated_as or "")
            if real is None:
                return Pricing(
                    key,
                    None,
                    "unpriced",
                    f"{key}: a simulated provider needs simulated_as, the provider:id of a catalog model whose prices "
                    "it simulates",
                )
            return Pricing(key, simulated_spec(real, provider, model_id, tier or real.tier), "simulated")
        spec = self.models.get(key)
        if spec is not None:
            return Pricing(key, spec, spec.origin)
        if pcfg is not None and pcfg.local:
            return Pricing(key, local_spec(provider, model_id, pcfg.context_window), "local")
        if self.fallback is None:
            return Pricing(key, None, "unpriced", f"{key} is not in the catalog")
        return self.fallback.pricing(
            provider,
            model_id,
            base_url=pcfg.base_url if pcfg is not None else None,
            tier=tier or "frontier",
            context_window=pcfg.context_window if pcfg is not None else None,
        )


# ----------------------------------------------------------------------------------------------------------
# File format (validated at the boundary)


MAX_PRICE = Decimal(100_000)  # USD per million tokens; anything above is a typo (and breaks exact math)


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError('write prices as decimal strings in USD per million tokens, e.g. "0.15"')
    try:
        result = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f'{value!r} is not a number; write prices as decimal strings, e.g. "0.15"') from exc
    if not result.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    if result < 0:
        raise ValueError(f"{value!r} is negative; prices are zero or more")
    if result > MAX_PRICE:
        raise ValueError(f"{value!r} USD per million tokens is not a plausible price (the limit is {MAX_PRICE:,})")
    return result


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give a date (2026-10-07) or a datetime with an offset (2026-10-07T00:00:00Z)")
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=UTC)
    if isinstance(value, str):
        try:
            return _when(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            try:
                return _when(date.fromisoformat(value))
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a date; write 2026-10-07 or 2026-10-07T00:00:00Z") from exc
    raise ValueError("give a date (2026-10-07) or a datetime with an offset")


Price = Annotated[Decimal, BeforeValidator(_decimal)]
When = Annotated[datetime, BeforeValidator(_when)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _RatesFile(_Strict):
    input: Price
    cache_read: Price
    cache_write: Price
    output: Price
    cache_write_1h: Price | None = None

    def to_rates(self) -> Rates:
        return Rates(self.input, self.cache_read, self.cache_write, self.output, self.cache_write_1h)


class _BandFile(_RatesFile):
    above_prompt_tokens: int = Field(gt=0)


class _PeakFile(_RatesFile):
    utc_offset: str = Field(description='fixed offset of the provider\'s clock, e.g. "+08:00" for Beijing')
    weekdays: list[int] = Field(description="ISO weekdays with peak hours, 1 = Monday")
    hours: list[str] = Field(description='local peak hours, e.g. ["09:00-12:00", "14:00-18:00"]')
    holidays: list[date] = Field(default_factory=list)
    workdays: list[date] = Field(default_factory=list)

    @field_validator("utc_offset")
    @classmethod
    def _offset(cls, v: str) -> str:
        _parse_offset(v)
        return v

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, v: list[int]) -> list[int]:
        if not v or any(d < 1 or d > 7 for d in v):
            raise ValueError("weekdays are ISO numbers 1 (Monday) to 7 (Sunday)")
        return v

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: list[str]) -> list[str]:
        for span in v:
            _parse_span(span)
        return v

    def to_window(self) -> PeakWindow:
        return PeakWindow(
            utc_offset=_parse_offset(self.utc_offset),
            weekdays=frozenset(self.weekdays),
            hours=tuple(_parse_span(s) for s in self.hours),
            holidays=frozenset(self.holidays),
            workdays=frozenset(self.workdays),
            rates=self.to_rates(),
        )


def _parse_offset(v: str) -> timedelta:
    sign = -1 if v.startswith("-") else 1
    body = v.lstrip("+-")
    try:
        hh, mm = body.split(":")
        return sign * timedelta(hours=int(hh), minutes=int(mm))
    except ValueError as exc:
        raise ValueError(f'{v!r} is not a UTC offset; write e.g. "+08:00"') from exc


def _parse_span(span: str) -> tuple[time, time]:
    try:
        start, end = (time.fromisoformat(s.strip()) for s in span.split("-"))
    except ValueError as exc:
        raise ValueError(f'{span!r} is not an hour span; write e.g. "09:00-12:00"') from exc
    if end <= start:
        raise ValueError(f"{span!r} ends before it starts")
    return start, end


class _TableFile(_RatesFile):
    effective_from: When
    source: str = ""
    long_context: list[_BandFile] = Field(default_factory=list)
    peak: _PeakFile | None = None

    def to_table(self, default_source: str) -> PriceTable:
        return PriceTable(
            effective_from=self.effective_from,
            rates=self.to_rates(),
            long_context=tuple(
                LongContextBand(b.above_prompt_tokens, b.to_rates())
                for b in sorted(self.long_context, key=lambda b: b.above_prompt_tokens)
            ),
            peak=self.peak.to_window() if self.peak else None,
            source=self.source or default_source,
        )


class _DisagreeFile(_Strict):
    reason: str = Field(min_length=1)
    checked: date
    theirs: dict[str, Price] = Field(min_length=1)

    def to_domain(self) -> FallbackDisagreement:
        return FallbackDisagreement(self.reason, self.checked, dict(self.theirs))


class _ModelFile(_TableFile):
    id: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    tier: Tier
    context_window: int = Field(gt=0)
    max_output_tokens: int = Field(gt=0)
    cache_ttl_seconds: int | None = Field(default=None, ge=0)
    notes: str = ""
    prompt_profile: PromptProfile | None = None
    price_changes: list[_TableFile] = Field(default_factory=list)
    fallback_disagrees: _DisagreeFile | None = None


class _MetaFile(_Strict):
    provider: str
    checked: date
    sources: list[str] = Field(min_length=1)
    notes: str = ""


class _CatalogFile(_Strict):
    meta: _MetaFile
    model: list[dict[str, Any]] = Field(default_factory=list)


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see models/README in the docs for the fields)"
    elif err["type"] == "missing":
        msg = "missing required field"
    return where, msg.removeprefix("Value error, ")


def load_catalog_file(path: Path, *, origin: Origin = "user") -> list[ModelSpec]:
    """Read and validate one catalog file; every error names the file, the model id and the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}", "fix the syntax at the line shown") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path}: cannot read: {exc}") from None
    try:
        parsed = _CatalogFile.model_validate(data)
    except ValidationError as exc:
        where, msg = _first_error(exc)
        raise CatalogError(
            f"{path}: {where}: {msg}",
            "each catalog file needs a [meta] table with provider, checked and sources",
        ) from None
    specs: list[ModelSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(parsed.model):
        model_id = str(raw.get("id", f"#{index + 1}"))
        try:
            m = _ModelFile.model_validate(raw)
        except ValidationError as exc:
            where, msg = _first_error(exc)
            raise CatalogError(f"{path}: model {model_id!r}: field {where}: {msg}") from None
        key = f"{m.provider}:{m.id}"
        if key in seen:
            raise CatalogError(f"{path}: model {m.id!r}: duplicate id", "each [[model]] id may appear once per file")
        seen.add(key)
        tables = [
            m.to_table(parsed.meta.sources[0]),
            *(c.to_table(parsed.meta.sources[0]) for c in m.price_changes),
        ]
        tables.sort(key=lambda t: t.effective_from)
        for a, b in itertools.pairwise(tables):
            if a.effective_from == b.effective_from:
                raise CatalogError(
                    f"{path}: model {m.id!r}: field effective_from: two price tables start at {a.effective_from:%Y-%m-%d}",
                    "give each entry in price_changes its own effective_from",
                )
        for t in tables:
            if t.peak is not None and t.long_context:
                raise CatalogError(
                    f"{path}: model {m.id!r}: field peak: a price table cannot have both peak hours and long-context bands",
                    "split them into separate models or price tables",
                )
        specs.append(
            ModelSpec(
                provider=m.provider,
                id=m.id,
                tier=m.tier,
                context_window=m.context_window,
                max_output_tokens=m.max_output_tokens,
                prices=tuple(tables),
                cache_ttl_seconds=m.cache_ttl_seconds,
                source=m.source or parsed.meta.sources[0],
                catalog_file=str(path),
                notes=m.notes,
                origin=origin,
                price_source=f"bundled {path.name}" if origin == "bundled" else f"user {path}",
                checked=parsed.meta.checked,
                fallback_disagrees=m.fallback_disagrees.to_domain() if m.fallback_disagrees else None,
                prompt_profile=m.prompt_profile,
            )
        )
    return specs


def load_catalog(directories: Sequence[Path] | Iterable[Path], *, fallback: bool = True) -> Catalog:
    """Load every ``*.toml`` in each directory, in order; a later model with the same key replaces an earlier one.

    The package's own ``models/`` directory is ``bundled``; any other is the user's. With ``fallback`` the catalog
    prices other paid models from genai-prices (loaded only when such a model is looked up).
    """
    from supervisor import paths

    bundled = paths.bundled_models_dir().resolve()
    models: dict[str, ModelSpec] = {}
    files: list[Path] = []
    for directory in directories:
        directory = Path(directory).expanduser()
        if not directory.is_dir():
            continue
        origin: Origin = "bundled" if directory.resolve() == bundled else "user"
        for path in sorted(directory.glob("*.toml")):
            for spec in load_catalog_file(path, origin=origin):
                models[spec.key] = spec
            files.append(path)
    price_db = None
    if fallback:
        from supervisor.price_fallback import default_fallback

        price_db = default_fallback()
    return Catalog(models=models, files=tuple(files), fallback=price_db)


def default_catalog_dirs(extra: Sequence[Path] = (), environ: dict[str, str] | None = None) -> list[Path]:
    """Bundled catalog first, then ``$SUPERVISOR_HOME/models``, then any configured directories."""
    from supervisor import paths

    return [paths.bundled_models_dir(), paths.user_models_dir(environ), *extra]
