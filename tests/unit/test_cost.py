"""Golden tests: usage x catalog price -> exact integer micro-dollars (protocols.md section 7)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from supervisor import paths
from supervisor.catalog import Catalog, load_catalog, local_spec
from supervisor.cost import cost_of, format_usd, usd_to_micros, worst_case_micros
from supervisor.usage import Usage

NOV_2026 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog([paths.bundled_models_dir()])


def spec(catalog: Catalog, key: str):  # type: ignore[no-untyped-def]
    found = catalog.get(key)
    assert found is not None, key
    return found


def test_anthropic_opus_5_5_worked_example(catalog: Catalog) -> None:
    usage = Usage(input_uncached=2_000, cache_read=140_000, cache_write_5m=0, cache_write_1h=8_000, output=1_500)
    cost = cost_of(usage, spec(catalog, "anthropic:claude-opus-5-5"), NOV_2026)
    assert cost.priced
    assert cost.components() == {
        "input_uncached": 8_000,
        "cache_read": 28_000,
        "cache_write_5m": 0,
        "cache_write_1h": 64_000,
        "output": 30_000,
    }
    assert cost.total_micros == 130_000  # $0.130


def test_openai_gpt_6_1_terra_worked_example(catalog: Catalog) -> None:
    # prompt 10,000 of which cached 8,000 and written 1,024 -> uncached 976
    usage = Usage(input_uncached=976, cache_read=8_000, cache_write_5m=1_024, cache_write_1h=0, output=500)
    cost = cost_of(usage, spec(catalog, "openai:gpt-6.1-terra"), NOV_2026)
    assert (
        cost.input_uncached_micros,
        cost.cache_read_micros,
        cost.cache_write_5m_micros,
        cost.output_micros,
    ) == (
        976,
        400,
        1_280,
        2_500,
    )
    assert cost.total_micros == 5_156  # $0.005156


OFF_PEAK_SATURDAY = datetime(2026, 11, 28, 3, 0, tzinfo=UTC)  # Saturday 11:00 Beijing
PEAK_MONDAY = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)  # Monday 10:00 Beijing
LUNCH_MONDAY = datetime(2026, 11, 30, 4, 30, tzinfo=UTC)  # Monday 12:30 Beijing: the midday gap is off-peak
NATIONAL_DAY = datetime(2026, 10, 1, 2, 0, tzinfo=UTC)  # Thursday 10:00 Beijing, public holiday


@pytest.mark.parametrize(
    ("at", "total", "label"),
    [
        (OFF_PEAK_SATURDAY, 1_290, "off-peak"),
        (PEAK_MONDAY, 2_580, "peak"),
        (LUNCH_MONDAY, 1_290, "off-peak"),
        (NATIONAL_DAY, 1_290, "off-peak"),
    ],
)
def test_deepseek_flash_peak_and_off_peak(catalog: Catalog, at: datetime, total: int, label: str) -> None:
    usage = Usage(input_uncached=3_000, cache_read=120_000, cache_write_5m=0, cache_write_1h=0, output=800)
    cost = cost_of(usage, spec(catalog, "deepseek:deepseek-flash"), at)
    assert cost.total_micros == total
    assert cost.price_label.endswith(label)


def test_deepseek_v4_pro_keeps_its_own_price_after_2026_09_14(catalog: Catalog) -> None:
    """DeepSeek's pricing page still lists deepseek-v4-pro (V4-Pro-0813) at its own price after the announced
    re-routing date; the catalog once billed it at the Flash price (4.4x less input, 3.3x less output)."""
    usage = Usage(input_uncached=1_000_000, cache_read=1_000_000, cache_write_5m=0, cache_write_1h=0, output=1_000_000)
    pro = spec(catalog, "deepseek:deepseek-v4-pro")
    before = cost_of(usage, pro, datetime(2026, 9, 13, 20, 0, tzinfo=UTC))  # Sunday: off-peak
    after = cost_of(usage, pro, datetime(2026, 11, 29, 20, 0, tzinfo=UTC))  # Sunday: off-peak
    peak = cost_of(usage, pro, datetime(2026, 11, 30, 2, 0, tzinfo=UTC))  # Monday 10:00 Beijing
    assert before.total_micros == after.total_micros == 660_000 + 22_000 + 1_980_000
    assert peak.total_micros == 1_320_000 + 44_000 + 3_960_000


def test_gpt_5_6_sol_promotional_price_from_2026_08_21(catalog: Catalog) -> None:
    """OpenAI's model page: 4 / 0.40 / 20 from 2026-08-21 (5 / 0.50 / 30 before), long prompts 2x and 1.5x."""
    sol = spec(catalog, "openai:gpt-5.6-sol")
    usage = Usage(input_uncached=100_000, cache_read=100_000, cache_write_5m=10_000, cache_write_1h=0, output=10_000)
    assert (
        cost_of(usage, sol, datetime(2026, 8, 20, 12, tzinfo=UTC)).total_micros == 500_000 + 50_000 + 62_500 + 300_000
    )
    assert cost_of(usage, sol, NOV_2026).total_micros == 400_000 + 40_000 + 50_000 + 200_000
    long = Usage(input_uncached=200_000, cache_read=100_000, cache_write_5m=0, cache_write_1h=0, output=10_000)
    cost = cost_of(long, sol, NOV_2026)
    assert cost.total_micros == 1_600_000 + 80_000 + 300_000
    assert "long-context" in cost.price_label


def test_gemini_intro_price_ends_with_the_year(catalog: Catalog) -> None:
    usage = Usage(input_uncached=5_000, cache_read=15_000, cache_write_5m=0, cache_write_1h=0, output=1_000)
    gemini = spec(catalog, "gemini:gemini-3.8-flash")
    assert cost_of(usage, gemini, NOV_2026).total_micros == 8_625  # $0.008625
    assert cost_of(usage, gemini, datetime(2026, 12, 31, 23, 59, tzinfo=UTC)).total_micros == 8_625
    assert cost_of(usage, gemini, datetime(2027, 1, 1, 0, 0, tzinfo=UTC)).total_micros == 17_250


def test_haiku_5_5_long_context_band_bills_every_token_of_the_request(catalog: Catalog) -> None:
    haiku = spec(catalog, "anthropic:claude-haiku-5-5")
    small = Usage(input_uncached=90_000, cache_read=10_000, cache_write_5m=0, cache_write_1h=0, output=1_000)
    large = Usage(input_uncached=90_000, cache_read=20_000, cache_write_5m=0, cache_write_1h=0, output=1_000)
    small_cost = cost_of(small, haiku, NOV_2026)
    large_cost = cost_of(large, haiku, NOV_2026)
    assert small_cost.total_micros == 9_000 + 100 + 500  # exactly 100k prompt tokens: the low band
    assert large_cost.total_micros == 45_000 + 1_000 + 2_500
    assert "long-context" in large_cost.price_label


def test_openai_prompts_over_272k_are_billed_at_the_long_context_rates(catalog: Catalog) -> None:
    terra = spec(catalog, "openai:gpt-6.1-terra")
    usage = Usage(input_uncached=300_000, cache_read=0, cache_write_5m=0, cache_write_1h=0, output=1_000)
    assert cost_of(usage, terra, NOV_2026).total_micros == 600_000 + 7_500


def test_sonnet_5_5_cache_read_cut_is_effective_dated(catalog: Catalog) -> None:
    sonnet = spec(catalog, "anthropic:claude-sonnet-5-5")
    usage = Usage(input_uncached=0, cache_read=1_000_000, cache_write_5m=0, cache_write_1h=0, output=0)
    assert cost_of(usage, sonnet, datetime(2026, 10, 6, tzinfo=UTC)).total_micros == 200_000
    assert cost_of(usage, sonnet, datetime(2026, 10, 7, tzinfo=UTC)).total_micros == 100_000


def test_unknown_usage_is_unpriced_never_zero(catalog: Catalog) -> None:
    cost = cost_of(Usage(), spec(catalog, "anthropic:claude-sonnet-5-5"), NOV_2026)
    assert not cost.priced
    assert cost.total_micros is None
    assert "did not report" in cost.reason


def test_missing_output_count_is_unpriced(catalog: Catalog) -> None:
    cost = cost_of(Usage(input_uncached=100), spec(catalog, "deepseek:deepseek-flash"), NOV_2026)
    assert not cost.priced


def test_absent_cache_fields_next_to_known_input_mean_no_cache(catalog: Catalog) -> None:
    cost = cost_of(Usage(input_uncached=1_000_000, output=0), spec(catalog, "deepseek:deepseek-flash"), PEAK_MONDAY)
    assert cost.priced
    assert cost.total_micros == 300_000


def test_model_missing_from_catalog_is_unpriced() -> None:
    cost = cost_of(Usage(input_uncached=10, cache_read=0, output=10), None, NOV_2026)
    assert not cost.priced
    assert cost.reason == "model is not in the catalog"


def test_local_model_is_free_even_with_unknown_usage() -> None:
    local = local_spec("ollama", "some-model:latest")
    assert cost_of(Usage(input_uncached=500, cache_read=0, output=20), local, NOV_2026).total_micros == 0
    unknown = cost_of(Usage(), local, NOV_2026)
    assert unknown.priced
    assert unknown.total_micros == 0


def test_call_before_any_price_is_unpriced(catalog: Catalog) -> None:
    cost = cost_of(
        Usage(input_uncached=1, output=1),
        spec(catalog, "openai:gpt-6.2-sol"),
        datetime(2020, 1, 1, tzinfo=UTC),
    )
    assert not cost.priced
    assert "no price in force" in cost.reason


def test_rounding_is_half_up_per_component_and_parts_add_up(catalog: Catalog) -> None:
    haiku = spec(catalog, "anthropic:claude-haiku-5-5")  # input 0.10, read 0.01, output 0.50 per MTok
    usage = Usage(input_uncached=5, cache_read=49, cache_write_5m=4, cache_write_1h=0, output=1)
    cost = cost_of(usage, haiku, NOV_2026)
    # 5 x 0.10 = 0.5 -> 1; 49 x 0.01 = 0.49 -> 0; 4 x 0.125 = 0.5 -> 1; 1 x 0.50 = 0.5 -> 1
    assert cost.components() == {
        "input_uncached": 1,
        "cache_read": 0,
        "cache_write_5m": 1,
        "cache_write_1h": 0,
        "output": 1,
    }
    assert cost.total_micros == sum(v for v in cost.components().values() if v is not None)


def test_worst_case_takes_the_highest_prompt_rate_and_rounds_up(catalog: Catalog) -> None:
    sonnet = spec(catalog, "anthropic:claude-sonnet-5-5")  # highest prompt rate: the 1h write at 4.00
    assert worst_case_micros(sonnet, 1_000, 500, NOV_2026) == 4_000 + 5_000
    flash = spec(catalog, "deepseek:deepseek-flash")  # worst case is the peak price, even off-peak
    assert worst_case_micros(flash, 1, 1, OFF_PEAK_SATURDAY) == 2  # 0.30 + 1.20 = 1.5 -> rounded up


def test_money_helpers() -> None:
    assert format_usd(1_290) == "$0.001290"
    assert format_usd(130_000, places=2) == "$0.13"
    assert format_usd(None) == "unpriced"
    assert usd_to_micros(0.2) == 200_000
    assert usd_to_micros("50") == 50_000_000
