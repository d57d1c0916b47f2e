"""The fallback price database (genai-prices): models neither catalog lists are priced exactly, with their source.

Real child processes run the CLI; a real loopback OpenAI-compatible server answers the paid call; the ledger is a
real SQLite file. The golden figures are the genai-prices 0.2.5 data; each is also checked against genai-prices'
own ``calc_price`` so the translation into our catalog is proven, not assumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from supervisor.catalog import load_catalog
from supervisor.config import load_config
from supervisor.ledger import Ledger
from supervisor.runtime.router import BackendPool, Router
from tests.fakes.base import Reply
from tests.fakes.openai import OpenAIFake

CONFIG = """
[providers.openrouter]
kind = "openai_compat"
base_url = "{url}"
api_key_env = "OPENROUTER_API_KEY"
max_retries = 0

[providers.openai]
kind = "openai_compat"
base_url = "{url}"
api_key_env = "OPENAI_API_KEY"
max_retries = 0

[tiers]
cheap = ["openrouter:openai/gpt-5.6-sol", "openai:gpt-4o", "openai:gpt-nothing-2099"]
frontier = ["anthropic:claude-3-5-haiku"]
"""


def _write_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(CONFIG.format(url=url))
    return path


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"SUPERVISOR_HOME": str(home), "OPENROUTER_API_KEY": "sk-or-test", "OPENAI_API_KEY": "sk-test"})
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str], code: int | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    if code is not None:
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def _genai_micros(model: str, provider_id: str, at: datetime, **usage: int) -> int:
    """genai-prices' own price for the same usage (its input_tokens include every cached token), in micros."""
    from genai_prices import Usage, calc_price

    total_input = sum(usage.get(k, 0) for k in ("input", "cache_read", "cache_write", "cache_write_1h"))
    genai_usage = Usage(
        input_tokens=total_input,
        cache_read_tokens=usage.get("cache_read", 0),
        cache_write_tokens=usage.get("cache_write", 0) + usage.get("cache_write_1h", 0),
        cache_write_1h_tokens=usage.get("cache_write_1h", 0),
        output_tokens=usage.get("output", 0),
    )
    price = calc_price(genai_usage, model, provider_id=provider_id, genai_request_timestamp=at).total_price
    return int((price * 1_000_000).to_integral_value())


# model, provider id in genai-prices, --at, usage, expected components (micros), price label
GOLDEN: list[tuple[str, str, str, dict[str, int], dict[str, int], str]] = [
    (
        # Undated price, no cache-write price in the database: writes are charged as input (as genai-prices does).
        "openai:gpt-4o",
        "openai",
        "2026-12-01T12:00:00Z",
        {"input": 10_000, "cache_read": 20_000, "cache_write": 4_000, "output": 1_000},
        {
            "input_uncached": 25_000,
            "cache_read": 25_000,
            "cache_write_5m": 10_000,
            "cache_write_1h": 0,
            "output": 10_000,
        },
        "undated standard",
    ),
    (
        # Cache reads, 5-minute and 1-hour writes each at the database's own price.
        "anthropic:claude-3-5-haiku",
        "anthropic",
        "2026-12-01T12:00:00Z",
        {"input": 10_000, "cache_read": 20_000, "cache_write": 4_000, "cache_write_1h": 2_000, "output": 1_000},
        {
            "input_uncached": 8_000,
            "cache_read": 1_600,
            "cache_write_5m": 4_000,
            "cache_write_1h": 3_200,
            "output": 4_000,
        },
        "undated standard",
    ),
    (
        # OpenRouter's entry: a prompt over 272K tokens pays the tier price on every token (a long-context band).
        "openrouter:openai/gpt-5.6-sol",
        "openrouter",
        "2026-10-01T00:00:00Z",
        {"input": 250_000, "cache_read": 30_000, "output": 1_000},
        {"input_uncached": 1_000_000, "cache_read": 12_000, "cache_write_5m": 0, "cache_write_1h": 0, "output": 15_000},
        "undated long-context >272000",
    ),
    (
        # The same model after the database's start-dated price change of 2026-10-19.
        "openrouter:openai/gpt-5.6-sol",
        "openrouter",
        "2026-11-01T00:00:00+08:00",
        {"input": 250_000, "cache_read": 30_000, "output": 1_000},
        {"input_uncached": 2_000_000, "cache_read": 24_000, "cache_write_5m": 0, "cache_write_1h": 0, "output": 30_000},
        "2026-10-19 long-context >272000",
    ),
]


@pytest.mark.parametrize(("model", "provider_id", "at", "usage", "expected", "label"), GOLDEN)
def test_catalog_price_golden_for_models_only_the_fallback_knows(
    tmp_path: Path,
    supervisor_home: Path,
    model: str,
    provider_id: str,
    at: str,
    usage: dict[str, int],
    expected: dict[str, int],
    label: str,
) -> None:
    config = _write_config(tmp_path, "http://127.0.0.1:9/v1")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in usage.items()]
    done = _cli(
        "catalog",
        "price",
        model,
        *flags,
        "--at",
        at,
        "--json",
        "--config",
        str(config),
        env=_env(supervisor_home),
        code=0,
    )
    out = json.loads(done.stdout)
    assert out["source"] == "genai-prices"
    assert out["price_source"] == "genai-prices 0.2.5"
    assert out["price_label"] == label
    assert out["components_micros"] == expected
    assert out["total_micros"] == sum(expected.values())
    when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    genai_id = model.split(":", 1)[1]
    assert out["total_micros"] == _genai_micros(genai_id, provider_id, when, **usage)

    text = _cli(
        "catalog", "price", model, *flags, "--at", at, "--config", str(config), env=_env(supervisor_home), code=0
    )
    assert "priced by genai-prices 0.2.5" in text.stdout
    assert f"{sum(expected.values()):,}" in text.stdout


def test_a_real_call_is_priced_by_the_fallback_and_the_ledger_row_says_so(
    tmp_path: Path, supervisor_home: Path
) -> None:
    with OpenAIFake() as fake:
        fake.enqueue(Reply(text="hi", input_tokens=5_000, cache_read=2_000, cache_write=1_000, output_tokens=300))
        config = _write_config(tmp_path, fake.url + "/v1")
        done = _cli(
            "ask", "openrouter:openai/gpt-5.6-sol", "hello", "--json", "--config", str(config),
            env=_env(supervisor_home), code=0,
        )  # fmt: skip
        assert len(fake.model_requests()) == 1
    answer = json.loads(done.stdout)
    # genai-prices 0.2.5, openrouter/openai/gpt-5.6-sol from 2026-10-19: 4 / 0.40 / 5 / 20 USD per million.
    expected = 5_000 * 4 + 2_000 * Decimal("0.4") + 1_000 * 5 + 300 * 20
    with Ledger(supervisor_home / "ledger.db") as ledger:
        (row,) = ledger.query("SELECT * FROM calls")
    assert row["priced"] == 1
    assert row["cost_micros"] == int(expected) == 31_800
    assert (row["cost_input_micros"], row["cost_cache_read_micros"], row["cost_cache_write_5m_micros"]) == (
        20_000,
        800,
        5_000,
    )
    assert row["price_source"] == "genai-prices 0.2.5"
    assert row["price_label"] == "2026-10-19 standard"
    assert (row["price_input"], row["price_cache_read"], row["price_cache_write"], row["price_output"]) == (
        "4",
        "0.4",
        "5",
        "20",
    )
    assert answer["cost"]["total_micros"] == 31_800
    assert answer["cost"]["price_label"] == "2026-10-19 standard"
    assert answer["cost"]["price_source"] == "genai-prices 0.2.5"


def test_a_model_absent_everywhere_is_unpriced_and_gets_no_paid_traffic(tmp_path: Path, supervisor_home: Path) -> None:
    with OpenAIFake() as fake:
        config_path = _write_config(tmp_path, fake.url + "/v1")
        env = _env(supervisor_home)
        done = _cli("ask", "openai:gpt-nothing-2099", "hello", "--config", str(config_path), env=env)
        assert done.returncode != 0
        assert "unpriced" in done.stderr
        assert "does not list 'gpt-nothing-2099'" in done.stderr
        assert fake.model_requests() == []

        config = load_config(config_path, env)
        catalog = load_catalog([Path(__file__).resolve().parents[2] / "models"])
        with Ledger(supervisor_home / "ledger.db") as ledger:
            usable, skipped = Router(config, catalog, BackendPool(config, env), ledger).candidates("cheap")
        assert [c.key for c in usable] == ["openrouter:openai/gpt-5.6-sol", "openai:gpt-4o"]
        assert [c.spec.origin for c in usable] == ["genai-prices", "genai-prices"]
        assert len(skipped) == 1
        assert skipped[0].startswith("openai:gpt-nothing-2099: unpriced")

    json_done = _cli(
        "catalog", "price", "openai:gpt-nothing-2099", "--json", "--config", str(config_path), env=env, code=1
    )
    assert json.loads(json_done.stdout)["priced"] is False


def test_catalog_lists_fallback_models_with_their_source(tmp_path: Path, supervisor_home: Path) -> None:
    config = _write_config(tmp_path, "http://127.0.0.1:9/v1")
    done = _cli("catalog", "--json", "--config", str(config), env=_env(supervisor_home), code=0)
    by_key = {m["model"]: m for m in json.loads(done.stdout)}
    assert by_key["openai:gpt-4o"]["source"] == "genai-prices"
    assert by_key["openai:gpt-4o"]["price_source"] == "genai-prices 0.2.5"
    assert by_key["anthropic:claude-opus-5-5"]["source"] == "bundled"
    assert "openai:gpt-nothing-2099" not in by_key
    only = _cli("catalog", "--source", "genai-prices", "--config", str(config), env=_env(supervisor_home), code=0)
    lines = [line.split()[0] for line in only.stdout.splitlines()[2:] if line.strip() and ":" in line.split()[0]]
    assert sorted(lines) == ["anthropic:claude-3-5-haiku", "openai:gpt-4o", "openrouter:openai/gpt-5.6-sol"]


# ------------------------------------------------------------------------------------------------------------
# Without genai-prices


def _hidden_env(tmp_path: Path, home: Path) -> dict[str, str]:
    """A child environment whose interpreter cannot import genai_prices (a real import failure, not a patch)."""
    site = tmp_path / "hide-genai"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['genai_prices'] = None\n")
    return _env(home, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))


def test_without_genai_prices_the_catalogs_still_work_and_it_is_said_once(
    tmp_path: Path, supervisor_home: Path
) -> None:
    env = _hidden_env(tmp_path, supervisor_home)
    config = _write_config(tmp_path, "http://127.0.0.1:9/v1")
    probe = subprocess.run(
        [sys.executable, "-c", "import genai_prices"], env=env, capture_output=True, text=True, check=False
    )
    assert probe.returncode != 0
    assert "ModuleNotFoundError" in probe.stderr

    doctor = json.loads(_cli("doctor", "--json", "--config", str(config), env=env, code=0).stdout)
    assert doctor["prices"]["available"] is False
    assert "genai-prices is not importable" in doctor["prices"]["detail"]
    text = _cli("doctor", "--config", str(config), env=env, code=0).stdout
    assert "prices    fallback unavailable: genai-prices is not importable" in text

    bundled = _cli(
        "catalog", "price", "anthropic:claude-opus-5-5", "--input", "1000", "--config", str(config), env=env, code=0
    )
    assert "4,000" in bundled.stdout
    assert "bundled anthropic.toml" in bundled.stdout

    listing = _cli("catalog", "--config", str(config), env=env, code=0)
    assert "anthropic:claude-opus-5-5" in listing.stdout
    assert "openai:gpt-4o" not in listing.stdout
    # Three fallback-only models were looked up; the missing package is reported once.
    assert listing.stderr.count("genai-prices is not importable") == 1

    missing = _cli("catalog", "price", "openai:gpt-4o", "--json", "--config", str(config), env=env, code=1)
    assert "genai-prices is not importable" in json.loads(missing.stdout)["reason"]
    check = _cli("catalog", "check", "--config", str(config), env=env, code=2)  # cannot check: not a verdict
    assert "cannot check the catalog: genai-prices is not importable" in check.stderr


def test_help_does_not_import_genai_prices() -> None:
    code = "import sys, supervisor.cli; supervisor.cli.build_parser(); print('genai_prices' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------------------
# catalog check


PLANTED = """
[meta]
provider = "openai"
checked = 2026-12-01
sources = ["https://example.invalid/planted"]

[[model]]
id = "gpt-4o"
provider = "openai"
tier = "cheap"
context_window = 128000
max_output_tokens = 16384
input = "2.50"
cache_read = "1.25"
cache_write = "2.50"
output = "12.00"
effective_from = 2024-05-13
{accept}
"""


def _check(home: Path, accept: str) -> tuple[int, dict[str, Any]]:
    (home / "models").mkdir(exist_ok=True)
    (home / "models" / "planted.toml").write_text(textwrap.dedent(PLANTED.format(accept=accept)))
    done = _cli("catalog", "check", "--json", env=_env(home))
    return done.returncode, json.loads(done.stdout)


def test_catalog_check_finds_a_planted_disagreement(supervisor_home: Path) -> None:
    code, report = _check(supervisor_home, "")
    assert code == 1
    assert report["failed"] is True
    (planted,) = [m for m in report["models"] if m["model"] == "openai:gpt-4o"]
    assert planted["origin"] == "user"
    assert planted["verdict"] == "disagrees"
    assert planted["disagreements"] == [{"component": "output", "ours": "12.00", "theirs": "10", "accepted": False}]
    assert planted["ours"]["effective_from"] == "2024-05-13"
    assert planted["ours"]["checked"] == "2026-12-01"
    assert planted["theirs"]["source"].startswith("genai-prices 0.2.5 openai/gpt-4o")
    # Every bundled model agrees or is not in the database: the shipped catalog passes on its own.
    others = [m for m in report["models"] if m["model"] != "openai:gpt-4o"]
    assert {m["verdict"] for m in others} <= {"agrees", "accepted", "not-in-fallback"}

    text = _cli("catalog", "check", env=_env(supervisor_home), code=1).stdout
    assert "openai:gpt-4o (user): disagrees" in text
    assert "DISAGREES" in text


def test_catalog_check_accepts_a_disagreement_recorded_as_deliberate(supervisor_home: Path) -> None:
    accept = """
  [model.fallback_disagrees]
  reason = "Planted for the test: our output price is the one the provider bills."
  checked = 2026-12-01
  theirs = { output = "10" }
"""
    code, report = _check(supervisor_home, accept)
    assert code == 0
    assert report["failed"] is False
    (planted,) = [m for m in report["models"] if m["model"] == "openai:gpt-4o"]
    assert planted["verdict"] == "accepted"
    assert planted["accepted"] == {
        "reason": "Planted for the test: our output price is the one the provider bills.",
        "checked": "2026-12-01",
    }

    # An acceptance names the database's exact value: a different value is looked at again.
    code, report = _check(supervisor_home, accept.replace('output = "10"', 'output = "9"'))
    assert code == 1
    (planted,) = [m for m in report["models"] if m["model"] == "openai:gpt-4o"]
    assert planted["verdict"] == "disagrees"
    assert planted["stale_acceptances"] == ["output = 9 (genai-prices now says 10)"]


def test_the_shipped_catalog_passes_the_check(supervisor_home: Path) -> None:
    done = _cli("catalog", "check", env=_env(supervisor_home), code=0)
    assert "catalog models checked against genai-prices 0.2.5" in done.stdout


def test_catalog_check_reports_peak_hours_that_differ(supervisor_home: Path) -> None:
    planted = (Path(__file__).resolve().parents[2] / "models" / "deepseek.toml").read_text()
    (supervisor_home / "models").mkdir()
    (supervisor_home / "models" / "deepseek.toml").write_text(planted.replace('"14:00-18:00"', '"14:00-17:00"'))
    done = _cli("catalog", "check", "--json", env=_env(supervisor_home), code=1)
    flash = next(m for m in json.loads(done.stdout)["models"] if m["model"] == "deepseek:deepseek-flash")
    assert flash["verdict"] == "disagrees"
    assert flash["detail"] == "peak hours (UTC): ours 01:00-04:00, 06:00-09:00, theirs 01:00-04:00, 06:00-10:00"


# ------------------------------------------------------------------------------------------------------------
# catalog price: exit codes and time zones (issue 12, item 5)


def test_catalog_price_exit_codes_agree_between_text_and_json(supervisor_home: Path) -> None:
    env = _env(supervisor_home)
    # A catalog model before its first price (no price in force) once exited 0 with --json and 1 without.
    before_first = ["catalog", "price", "openai:gpt-6.2-astra", "--input", "5", "--at", "2026-01-01T00:00Z"]
    for args in (before_first, ["catalog", "price", "openai:gpt-nothing-2099"], ["catalog", "price", "nosuch:model"]):
        assert _cli(*args, env=env).returncode == 1
        assert _cli(*args, "--json", env=env).returncode == 1
    assert _cli("catalog", "price", "openai:gpt-5.4-mini", "--input", "5", "--json", env=env).returncode == 0


def test_catalog_price_at_honours_an_offset_and_says_which_zone(supervisor_home: Path) -> None:
    # Tuesday 10:00 in Beijing is DeepSeek's peak, whatever this machine's zone.
    args = ["catalog", "price", "deepseek:deepseek-flash", "--input", "1000000"]
    for tz in ("UTC", "America/New_York"):
        env = _env(supervisor_home, TZ=tz)
        out = json.loads(_cli(*args, "--at", "2026-12-01T10:00+08:00", "--json", env=env, code=0).stdout)
        assert out["total_micros"] == 300_000
        assert out["price_label"].endswith("peak")
        assert out["at"] == "2026-12-01T10:00:00+08:00"
        assert out["timezone"] == "UTC+08:00 (from --at)"
    text = _cli(*args, "--at", "2026-12-01T10:00+08:00", env=_env(supervisor_home), code=0).stdout
    assert "at 2026-12-01 10:00 UTC+08:00 (from --at); price 2026-09-10 peak" in text

    # A naive time is this machine's local time, and the output says so.
    beijing = json.loads(
        _cli(*args, "--at", "2026-12-01T10:00", "--json", env=_env(supervisor_home, TZ="Asia/Shanghai"), code=0).stdout
    )
    utc = json.loads(
        _cli(*args, "--at", "2026-12-01T10:00", "--json", env=_env(supervisor_home, TZ="UTC"), code=0).stdout
    )
    assert beijing["total_micros"] == 300_000
    assert utc["total_micros"] == 150_000
    assert beijing["timezone"] == "CST UTC+08:00 (this machine's time zone: --at had no offset)"
    assert utc["timezone"] == "UTC UTC+00:00 (this machine's time zone: --at had no offset)"


def test_fallback_context_window_comes_from_the_database_or_the_config(tmp_path: Path, supervisor_home: Path) -> None:
    now = datetime.now(UTC).isoformat()
    env = _env(supervisor_home)
    # genai-prices lists mistral-large without a context window: unpriced until the config gives one.
    bare = _cli(
        "catalog", "price", "mistral:mistral-large-latest", "--input", "10", "--at", now, "--json", env=env, code=1
    )
    assert "set context_window under [providers.mistral]" in json.loads(bare.stdout)["reason"]
    config = tmp_path / "mistral.toml"
    config.write_text(
        '[providers.mistral]\nkind = "openai_compat"\nbase_url = "https://api.mistral.ai/v1"\n'
        'api_key_env = "MISTRAL_API_KEY"\ncontext_window = 128000\n'
    )
    priced = _cli(
        "catalog", "price", "mistral:mistral-large-latest", "--input", "1000000", "--json", "--config", str(config),
        env=env, code=0,
    )  # fmt: skip
    out = json.loads(priced.stdout)
    assert out["source"] == "genai-prices"
    assert out["total_micros"] == _genai_micros("mistral-large-latest", "mistral", datetime.now(UTC), input=1_000_000)
