"""``supervisor catalog check``: every catalog entry against the fallback price database's price in force today.

Each disagreement is listed by component (``input``, ``cache_read``, ``cache_write``, ``cache_write_1h``,
``output``; prefixed ``peak.`` for time-of-day prices and ``above_N.`` for a prompt-size band), with both values,
their sources and dates. A disagreement the catalog entry records as deliberate (``[model.fallback_disagrees]``,
naming the database's exact value) is accepted; any other makes the check fail, so CI keeps the bundled catalog
honest. Peak *hours* are compared too; the database has no weekday or holiday rule, so days are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from supervisor.catalog import Catalog, ModelSpec, PriceTable, Rates
from supervisor.price_fallback import Inexpressible, Match, PriceFallback, in_force

COMPONENTS = ("input", "cache_read", "cache_write", "cache_write_1h", "output")


@dataclass(frozen=True, slots=True)
class Disagreement:
    component: str
    ours: Decimal
    theirs: Decimal
    accepted: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "ours": str(self.ours),
            "theirs": str(self.theirs),
            "accepted": self.accepted,
        }


@dataclass(frozen=True, slots=True)
class ModelCheck:
    """One catalog model against the database: its verdict, each disagreement, and both sources with dates."""

    model: str
    origin: str
    verdict: str  # agrees | disagrees | accepted | not-in-fallback | not-comparable | no-price-today
    ours_source: str = ""
    ours_date: str = ""
    ours_checked: str = ""
    theirs_source: str = ""
    theirs_date: str = ""
    detail: str = ""
    disagreements: tuple[Disagreement, ...] = ()
    accepted_reason: str = ""
    accepted_checked: str = ""
    stale_acceptances: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.verdict == "disagrees"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "origin": self.origin,
            "verdict": self.verdict,
            "ours": {"source": self.ours_source, "effective_from": self.ours_date, "checked": self.ours_checked},
            "theirs": {"source": self.theirs_source, "effective_from": self.theirs_date},
            "detail": self.detail,
            "disagreements": [d.as_dict() for d in self.disagreements],
            "accepted": (
                {"reason": self.accepted_reason, "checked": self.accepted_checked} if self.accepted_reason else None
            ),
            "stale_acceptances": list(self.stale_acceptances),
        }


@dataclass(frozen=True)
class CheckReport:
    at: datetime
    fallback: str
    models: list[ModelCheck] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(m.failed for m in self.models)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "fallback": self.fallback,
            "failed": self.failed,
            "models": [m.as_dict() for m in self.models],
        }


def check_catalog(
    catalog: Catalog,
    fallback: PriceFallback,
    at: datetime,
    *,
    base_urls: Mapping[str, str | None] | None = None,
    origins: Iterable[str] = ("bundled", "user"),
) -> CheckReport:
    """Compare each catalog-file model of ``origins`` with the database; local ($0) models are skipped."""
    wanted = set(origins)
    report = CheckReport(at, fallback.label)
    for spec in catalog:
        if spec.origin not in wanted or spec.is_free:
            continue
        base_url = (base_urls or {}).get(spec.provider)
        found = fallback.match(spec.provider, spec.id, base_url)
        if isinstance(found, str):
            report.models.append(ModelCheck(spec.key, spec.origin, "not-in-fallback", detail=found))
            continue
        report.models.append(_compare(spec, found, fallback.label, at))
    return report


def _compare(spec: ModelSpec, found: Match, label: str, at: datetime) -> ModelCheck:
    theirs_source = f"{label} {found.provider_id}/{found.model_id}" + (
        f" ({found.pricing_urls[0]})" if found.pricing_urls else ""
    )
    table = spec.price_at(at)
    if table is None:
        return ModelCheck(
            spec.key, spec.origin, "no-price-today", theirs_source=theirs_source, detail="no price in force"
        )
    ours_source = f"{spec.price_source}: {table.source or spec.source}"
    ours_checked = spec.checked.isoformat() if spec.checked else ""
    try:
        theirs = in_force(found.info, at)
    except Inexpressible as exc:
        return ModelCheck(
            spec.key,
            spec.origin,
            "not-comparable",
            ours_source=ours_source,
            ours_date=table.date_label,
            ours_checked=ours_checked,
            theirs_source=theirs_source,
            detail=str(exc),
        )
    # The 1-hour write price is compared only where either side states one (else both charge the plain write).
    names: tuple[str, ...] = COMPONENTS
    if table.rates.cache_write_1h is None and theirs.rates.cache_write_1h is None:
        names = tuple(n for n in COMPONENTS if n != "cache_write_1h")
    ours_values: dict[str, Decimal] = {}
    theirs_values: dict[str, Decimal] = {}
    _put(ours_values, "", table.rates, names)
    _put(theirs_values, "", theirs.rates, names)
    thresholds = {b.above_prompt_tokens for b in table.long_context} | {b.above_prompt_tokens for b in theirs.bands}
    for threshold in sorted(thresholds):
        _put(ours_values, f"above_{threshold}.", _band(table.rates, table.long_context, threshold), names)
        _put(theirs_values, f"above_{threshold}.", _band(theirs.rates, theirs.bands, threshold), names)
    notes: list[str] = []
    if table.peak is not None or theirs.peak is not None:
        _put(ours_values, "peak.", table.peak.rates if table.peak else table.rates, names)
        _put(theirs_values, "peak.", theirs.peak or theirs.rates, names)
        ours_hours = _utc_hours(table)
        if ours_hours != theirs.peak_hours_utc:
            notes.append(
                f"peak hours (UTC): ours {_hours(ours_hours) or 'none'}, theirs {_hours(theirs.peak_hours_utc) or 'none'}"
            )

    accepted = spec.fallback_disagrees
    accepted_values = accepted.theirs if accepted else {}
    disagreements = tuple(
        Disagreement(name, ours_values[name], theirs_values[name], accepted_values.get(name) == theirs_values[name])
        for name in ours_values
        if ours_values[name] != theirs_values[name]
    )
    open_ones = [d for d in disagreements if not d.accepted]
    stale = tuple(
        f"{name} = {value} (genai-prices now says {theirs_values.get(name, 'nothing')})"
        for name, value in accepted_values.items()
        if not any(d.component == name and d.accepted for d in disagreements)
    )
    if open_ones or notes:
        verdict = "disagrees"
    elif disagreements:
        verdict = "accepted"
    else:
        verdict = "agrees"
    return ModelCheck(
        spec.key,
        spec.origin,
        verdict,
        ours_source=ours_source,
        ours_date=table.date_label,
        ours_checked=ours_checked,
        theirs_source=theirs_source,
        theirs_date=theirs.since.isoformat() if theirs.since else "undated",
        detail="; ".join(notes),
        disagreements=disagreements,
        accepted_reason=accepted.reason if accepted and disagreements else "",
        accepted_checked=accepted.checked.isoformat() if accepted and disagreements else "",
        stale_acceptances=stale,
    )


def _put(out: dict[str, Decimal], prefix: str, rates: Rates, names: Iterable[str]) -> None:
    for name in names:
        value = rates.write_1h if name == "cache_write_1h" else getattr(rates, name)
        out[prefix + name] = value


def _band(base: Rates, bands: Iterable[Any], threshold: int) -> Rates:
    """The rates a prompt of ``threshold + 1`` tokens pays (the highest band it crosses, else the base)."""
    chosen = base
    for band in sorted(bands, key=lambda b: b.above_prompt_tokens):
        if threshold + 1 > band.above_prompt_tokens:
            chosen = band.rates
    return chosen


def _utc_hours(table: PriceTable) -> tuple[tuple[time, time], ...]:
    if table.peak is None:
        return ()
    offset = table.peak.utc_offset
    day = date(2000, 1, 3)
    return tuple(
        sorted(
            (
                (datetime.combine(day, start) - offset).time(),
                (datetime.combine(day, end) - offset).time(),
            )
            for start, end in table.peak.hours
        )
    )


def _hours(spans: Iterable[tuple[time, time]]) -> str:
    return ", ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in spans)
