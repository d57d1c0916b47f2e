"""One pure function turns a ``Usage`` and a ``ModelSpec`` into money, exactly.

Money is integer micro-dollars (1 USD = 1,000,000 micros) from here to the screen. Prices are USD per million
tokens, so a token costs ``price`` micro-dollars: ``tokens * price`` is the exact cost in micros.

Rounding: each component (uncached input, cache read, cache write 5m, cache write 1h, output) is computed
exactly as a decimal and rounded half-up to a whole micro-dollar; the total is the sum of the rounded
components, so the parts always add up to the whole. Worst-case reservations round *up* instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from supervisor.catalog import ModelSpec, Rates
from supervisor.usage import Usage

MICROS_PER_USD = 1_000_000


@dataclass(frozen=True, slots=True)
class Cost:
    """The price of one call, per component, in integer micro-dollars.

    ``priced`` is False when the usage is unknown or the model has no price: then every amount is ``None``
    and reports show the call as *unpriced*, never as $0.
    """

    priced: bool
    input_uncached_micros: int | None = None
    cache_read_micros: int | None = None
    cache_write_5m_micros: int | None = None
    cache_write_1h_micros: int | None = None
    output_micros: int | None = None
    total_micros: int | None = None
    rates: Rates | None = None
    price_label: str = ""
    reason: str = ""

    def components(self) -> dict[str, int | None]:
        return {
            "input_uncached": self.input_uncached_micros,
            "cache_read": self.cache_read_micros,
            "cache_write_5m": self.cache_write_5m_micros,
            "cache_write_1h": self.cache_write_1h_micros,
            "output": self.output_micros,
        }


def unpriced(reason: str) -> Cost:
    return Cost(priced=False, reason=reason)


def _micros(tokens: int, price_per_mtok: Decimal) -> int:
    return int((Decimal(tokens) * price_per_mtok).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def cost_of(usage: Usage, spec: ModelSpec | None, at: datetime) -> Cost:
    """Price ``usage`` with the rates in force for ``spec`` at ``at`` (the call's start, timezone-aware).

    Unknown components are only acceptable where their price is zero (e.g. any component of a local model);
    otherwise the call is unpriced. Long-context bands switch the price of the whole request.
    """
    if spec is None:
        return unpriced("model is not in the catalog")
    table = spec.price_at(at)
    if table is None:
        return unpriced(f"no price in force for {spec.key} at {at:%Y-%m-%d}")
    prompt_tokens = usage.prompt_tokens
    if prompt_tokens is None:
        if spec.is_free:
            prompt_tokens = 0
        else:
            return unpriced("the provider did not report usage")
    rates, label = table.rates_for(at, prompt_tokens)
    parts: list[tuple[int | None, Decimal]] = [
        (usage.input_uncached, rates.input),
        (usage.cache_read, rates.cache_read),
        (usage.cache_write_5m, rates.cache_write),
        (usage.cache_write_1h, rates.write_1h),
        (usage.output, rates.output),
    ]
    amounts: list[int] = []
    for index, (tokens, rate) in enumerate(parts):
        if tokens is None:
            # A missing cache component next to a known uncached input means "this provider has no such
            # cache"; a missing uncached input or output with a non-zero price means we do not know the cost.
            if rate != 0 and not (index in (1, 2, 3) and usage.input_uncached is not None):
                return unpriced("the provider did not report every token component")
            amounts.append(0)
        else:
            amounts.append(_micros(tokens, rate))
    label = f"{table.date_label} {label}"
    return Cost(
        priced=True,
        input_uncached_micros=amounts[0],
        cache_read_micros=amounts[1],
        cache_write_5m_micros=amounts[2],
        cache_write_1h_micros=amounts[3],
        output_micros=amounts[4],
        total_micros=sum(amounts),
        rates=rates,
        price_label=label,
    )


def worst_case_micros(spec: ModelSpec, prompt_tokens: int, max_output_tokens: int, at: datetime) -> int:
    """The most a call can cost: every prompt token at the highest prompt rate, plus the full output budget.

    Rounded up, so a reservation never undercounts. Peak and long-context prices are included whenever they
    could apply, because a call that starts just before peak hours may be billed at peak.
    """
    table = spec.price_at(at) or spec.prices[-1]
    rates = table.worst_rates(prompt_tokens)
    exact = Decimal(prompt_tokens) * rates.highest_prompt_rate + Decimal(max_output_tokens) * rates.output
    return int(exact.quantize(Decimal(1), rounding=ROUND_CEILING))


def format_usd(micros: int | None, *, places: int = 6) -> str:
    """``1290`` -> ``"$0.001290"``; ``None`` -> ``"unpriced"``."""
    if micros is None:
        return "unpriced"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    whole, frac = divmod(micros, MICROS_PER_USD)
    text = f"{frac:06d}"[:places] if places else ""
    return f"{sign}${whole}.{text}" if places else f"{sign}${whole}"


def usd_to_micros(usd: float | Decimal | str) -> int:
    """Config caps are written in dollars; turn them into micro-dollars exactly (via the decimal string)."""
    value = Decimal(str(usd))
    return int((value * MICROS_PER_USD).quantize(Decimal(1), rounding=ROUND_HALF_UP))
