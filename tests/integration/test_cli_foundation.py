"""The real console entry (``python -m supervisor``) in a child process: help, catalog, pricing, errors,
the ledger commands and ``doctor``."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from supervisor import __version__, paths
from supervisor.catalog import load_catalog
from supervisor.cli import build_parser
from supervisor.cost import Cost, cost_of, unpriced
from supervisor.ledger import CallRecord, Ledger
from supervisor.usage import Usage
from tests.fakes.ollama import OllamaFake

TIMEOUT_S = 60
CANARY_KEY = "sk-ant-CANARY-xyz"
PROVIDERS = {"anthropic", "openai", "deepseek", "gemini", "ollama", "mlx"}


def supervisor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m supervisor ARGS`` with this test's environment (its own SUPERVISOR_HOME)."""
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, **(env or {})},
        check=False,
    )


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and nested subcommand the parser knows (argparse has no public API for this)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from command_paths(sub, (*prefix, name))


COMMANDS = sorted(set(command_paths(build_parser())))


def assert_clean_failure(done: subprocess.CompletedProcess[str], code: int | None = None) -> None:
    """Non-zero, a one-line ``error:`` (plus an optional ``hint:``) on stderr, and never a traceback."""
    assert done.returncode != 0
    if code is not None:
        assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    assert lines[0].startswith("error: ")
    assert all(line.startswith("hint: ") for line in lines[1:]), lines


# ------------------------------------------------------------------------------------------------------------
# Version and help


def test_version() -> None:
    done = supervisor("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"supervisor {__version__}"


def test_help_lists_every_command() -> None:
    done = supervisor("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: supervisor")
    for (name,) in (c for c in COMMANDS if len(c) == 1):
        assert name in done.stdout


def test_the_nested_commands_are_collected() -> None:
    expected = {("catalog", "price"), ("ledger", "report"), ("ledger", "path"), ("models", "pull"), ("config", "check")}
    assert expected <= set(COMMANDS)
    assert {("doctor",), ("catalog",), ("ledger",)} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    done = supervisor(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: supervisor {' '.join(command)}")
    assert done.stderr == ""


# ------------------------------------------------------------------------------------------------------------
# catalog


def test_catalog_json_lists_models_with_tiers_and_decimal_string_prices() -> None:
    done = supervisor("catalog", "--json")
    assert done.returncode == 0, done.stderr
    models = json.loads(done.stdout)
    assert len(models) >= 10
    assert {m["provider"] for m in models} >= PROVIDERS
    assert {m["tier"] for m in models} == {"local", "cheap", "frontier"}
    for m in models:
        assert m["model"] == f"{m['provider']}:{m['id']}"
        prices = m["prices_usd_per_mtok"]
        for component in ("input", "cache_read", "cache_write", "output"):
            assert isinstance(prices[component], str), (m["model"], component)
            assert Decimal(prices[component]) >= 0
        assert prices["cache_write_1h"] is None or isinstance(prices["cache_write_1h"], str)
    opus = next(m for m in models if m["model"] == "anthropic:claude-opus-5-5")
    assert opus["tier"] == "frontier"
    assert {
        k: opus["prices_usd_per_mtok"][k] for k in ("input", "cache_read", "cache_write", "cache_write_1h", "output")
    } == {
        "input": "4.00",
        "cache_read": "0.20",
        "cache_write": "5.00",
        "cache_write_1h": "8.00",
        "output": "20.00",
    }
    tiers = [m["tier"] for m in json.loads(supervisor("catalog", "--tier", "cheap", "--json").stdout)]
    assert tiers
    assert set(tiers) == {"cheap"}


def test_catalog_table() -> None:
    done = supervisor("catalog")
    assert done.returncode == 0, done.stderr
    assert "anthropic:claude-opus-5-5" in done.stdout
    assert "USD per million tokens" in done.stdout


def test_catalog_price_gives_the_total_and_every_component() -> None:
    done = supervisor(
        "catalog",
        "price",
        "anthropic:claude-opus-5-5",
        "--input",
        "2000",
        "--cache-write-1h",
        "8000",
        "--cache-read",
        "140000",
        "--output",
        "1500",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    priced = json.loads(done.stdout)
    assert priced["total_micros"] == 130_000
    assert priced["total_usd"] == "$0.130000"
    assert priced["priced"] is True
    assert priced["components_micros"] == {
        "input_uncached": 8_000,
        "cache_read": 28_000,
        "cache_write_5m": 0,
        "cache_write_1h": 64_000,
        "output": 30_000,
    }
    assert priced["usage"]["cache_write_1h"] == 8_000
    assert priced["rates_usd_per_mtok"]["cache_write_1h"] == "8.00"

    table = supervisor("catalog", "price", "anthropic:claude-opus-5-5", "--input", "2000", "--output", "1500")
    assert table.returncode == 0, table.stderr
    assert "$0.038000" in table.stdout  # 8,000 + 30,000 micro-dollars


@pytest.mark.parametrize(
    ("at", "label", "total"),
    [
        ("2026-11-30T02:00:00Z", "peak", 300_000 + 1_200_000),  # Monday 10:00 Beijing
        ("2026-11-28T03:00:00Z", "off-peak", 150_000 + 600_000),  # Saturday 11:00 Beijing
        ("2026-11-30T12:30:00+08:00", "off-peak", 150_000 + 600_000),  # the midday gap, with an offset
    ],
)
def test_catalog_price_at_peak_and_off_peak(at: str, label: str, total: int) -> None:
    done = supervisor(
        "catalog", "price", "deepseek:deepseek-flash", "--input", "1000000", "--output", "1000000", "--at", at, "--json"
    )
    assert done.returncode == 0, done.stderr
    priced = json.loads(done.stdout)
    assert priced["total_micros"] == total
    assert priced["price_label"].endswith(f" {label}")


def test_a_malformed_model_key_is_a_one_line_error_with_a_hint() -> None:
    done = supervisor("catalog", "price", "nocolon", "--input", "10", "--json")
    assert_clean_failure(done)
    assert "hint: " in done.stderr
    assert done.stdout == ""


def test_an_unknown_model_is_unpriced_with_a_hint_in_both_forms() -> None:
    """Text and --json agree: exit 1, the reason, and how to fix it (issue 12: --json used to exit 0)."""
    text = supervisor("catalog", "price", "anthropic:claude-nonexistent-9", "--input", "10")
    assert text.returncode == 1
    assert text.stdout.startswith("anthropic:claude-nonexistent-9: unpriced (")
    assert "does not list 'claude-nonexistent-9'" in text.stdout
    assert text.stderr.startswith("hint: add it to a user catalog")
    done = supervisor("catalog", "price", "anthropic:claude-nonexistent-9", "--input", "10", "--json")
    assert done.returncode == 1
    out = json.loads(done.stdout)
    assert out["priced"] is False
    assert out["total_micros"] is None
    assert out["hint"].startswith("add it to a user catalog")


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["catalog", "price", "anthropic:claude-opus-5-5", "--input", "-5"],
        ["catalog", "price", "anthropic:claude-opus-5-5", "--input", "lots"],
        ["catalog", "price", "anthropic:claude-opus-5-5", "--at", "yesterday"],
        ["catalog", "--tier", "premium"],
        ["ledger"],
        ["ledger", "report", "--by", "week"],
        ["ledger", "report", "--since", "31/12/2026"],
        ["nosuchcommand"],
    ],
    ids=" ".join,
)
def test_bad_flags_exit_2_without_a_traceback(args: list[str]) -> None:
    assert_clean_failure(supervisor(*args), code=2)


# ------------------------------------------------------------------------------------------------------------
# ask: an Ollama provider is local whether or not the config declares it


@pytest.fixture
def ollama_fake() -> Iterator[OllamaFake]:
    with OllamaFake(models=("smollm2:360m",)) as fake:  # pulled, but not in the bundled catalog
        yield fake


def ollama_config(tmp_path: Path, fake: OllamaFake, table: str | None) -> tuple[list[str], dict[str, str]]:
    """``--config`` args and env for: no table (OLLAMA_HOST finds the fake), or a declared ``[providers.ollama]``."""
    if table is None:
        return [], {"OLLAMA_HOST": fake.url}
    path = tmp_path / "supervisor.toml"
    path.write_text(f'[providers.ollama]\nkind = "ollama"\nhost = "{fake.url}"\n{table}')
    return ["--config", str(path)], {}


@pytest.mark.parametrize("table", [None, "", "local = true\n"], ids=["no table", "declared", "declared local"])
def test_ask_sends_an_uncatalogued_ollama_model_to_the_server(
    tmp_path: Path, ollama_fake: OllamaFake, table: str | None
) -> None:
    flags, env = ollama_config(tmp_path, ollama_fake, table)
    missing = supervisor("ask", "ollama:nosuch:1b", "hello", *flags, env=env)
    assert_clean_failure(missing, code=1)
    assert "unpriced" not in missing.stderr
    assert "ollama pull nosuch:1b" in missing.stderr, missing.stderr
    assert [r.json["model"] for r in ollama_fake.model_requests()] == ["nosuch:1b"]

    pulled = supervisor("ask", "ollama:smollm2:360m", "hello", "--json", *flags, env=env)
    assert pulled.returncode == 0, pulled.stderr
    answer = json.loads(pulled.stdout)
    assert answer["cost"]["priced"] is True
    assert answer["cost"]["total_micros"] == 0  # local: $0 marginal cost, not unpriced
    assert answer["usage"]["output"] > 0


def test_ask_refuses_an_uncatalogued_model_when_the_user_says_ollama_is_not_local(
    tmp_path: Path, ollama_fake: OllamaFake
) -> None:
    flags, env = ollama_config(tmp_path, ollama_fake, "local = false\n")
    done = supervisor("ask", "ollama:nosuch:1b", "hello", *flags, env=env)
    assert_clean_failure(done)
    assert "ollama:nosuch:1b is unpriced, so paid traffic is never sent to it" in done.stderr
    assert ollama_fake.model_requests() == []


# ------------------------------------------------------------------------------------------------------------
# ledger


def test_ledger_path_is_in_supervisor_home(supervisor_home: Path) -> None:
    done = supervisor("ledger", "path")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{supervisor_home / 'ledger.db'}\n"


@pytest.fixture
def populated_ledger(supervisor_home: Path) -> Path:
    """A ledger at the default path with priced, unpriced, local and simulated calls on two days."""
    path = paths.ledger_path()
    assert path == supervisor_home / "ledger.db"
    catalog = load_catalog([paths.bundled_models_dir()])
    opus = catalog.get("anthropic:claude-opus-5-5")
    assert opus is not None
    day1 = datetime(2026, 11, 10, 12, tzinfo=UTC)
    day2 = day1 + timedelta(days=1)
    usage = Usage(input_uncached=2_000, cache_read=140_000, cache_write_5m=0, cache_write_1h=8_000, output=1_500)

    def call(agent: str, at: datetime, **kw: Any) -> CallRecord:
        return CallRecord(
            agent, "anthropic", "claude-opus-5-5", "frontier", at, at, usage, cost_of(usage, opus, at), **kw
        )

    with Ledger(path) as ledger:
        ledger.record_calls(
            [
                call("fixer", day1, run_id=1),
                call("fixer", day2, run_id=1),
                call("docs", day2, run_id=2),
                call("demo", day2, simulated=True),
                CallRecord("docs", "openai", "gpt-x", "frontier", day2, day2, Usage(), unpriced("no usage"), run_id=2),
                CallRecord(
                    "docs",
                    "ollama",
                    "qwen3:4b",
                    "local",
                    day2,
                    day2,
                    Usage(input_uncached=100, output=20),
                    Cost(True, 0, 0, 0, 0, 0, 0),
                    run_id=2,
                    compute_s=4.5,
                ),
            ]
        )
    return path


REPORT_KEYS = {
    "group",
    "calls",
    "unpriced_calls",
    "input_uncached",
    "cache_read",
    "cache_write",
    "output",
    "cost_micros",
    "local_compute_s",
}


def test_ledger_report_json(populated_ledger: Path) -> None:
    done = supervisor("ledger", "report", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert all(set(row) >= REPORT_KEYS for row in rows)
    by_group = {(r["group"], r["simulated"]): r for r in rows}
    assert set(by_group) == {("demo", True), ("docs", False), ("fixer", False)}
    fixer = by_group[("fixer", False)]
    assert (fixer["calls"], fixer["unpriced_calls"], fixer["cost_micros"]) == (2, 0, 260_000)
    assert (fixer["input_uncached"], fixer["cache_read"], fixer["cache_write"], fixer["output"]) == (
        4_000,
        280_000,
        16_000,
        3_000,
    )
    docs = by_group[("docs", False)]
    assert (docs["calls"], docs["unpriced_calls"], docs["cost_micros"], docs["local_compute_s"]) == (3, 1, 130_000, 4.5)
    assert by_group[("demo", True)]["cost_micros"] == 130_000

    models = json.loads(supervisor("ledger", "report", "--by", "model", "--agent", "docs", "--json").stdout)
    assert [(m["group"], m["calls"]) for m in models] == [
        ("anthropic:claude-opus-5-5", 1),
        ("ollama:qwen3:4b", 1),
        ("openai:gpt-x", 1),
    ]
    day2 = datetime(2026, 11, 11, 12, tzinfo=UTC).astimezone().date().isoformat()
    days = json.loads(supervisor("ledger", "report", "--by", "day", "--since", day2, "--json").stdout)
    assert [(d["group"], d["simulated"], d["calls"]) for d in days] == [(day2, False, 4), (day2, True, 1)]
    runs = json.loads(supervisor("ledger", "report", "--by", "run", "--json").stdout)
    assert {r["group"] for r in runs} == {"run 1 fixer", "run 2 docs", "run - demo"}


def test_ledger_report_table_says_unpriced_and_simulated(populated_ledger: Path) -> None:
    done = supervisor("ledger", "report", "--by", "agent")
    assert done.returncode == 0, done.stderr
    assert "demo (simulated)" in done.stdout
    assert "real spend $0.3900" in done.stdout
    assert "simulated (demo tiers, not billed) $0.1300" in done.stdout
    assert "1 unpriced call(s) not included" in done.stdout


def test_ledger_report_on_an_empty_ledger() -> None:
    done = supervisor("ledger", "report")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no calls recorded yet"
    assert json.loads(supervisor("ledger", "report", "--json").stdout) == []


def test_a_file_that_is_not_a_ledger_is_a_clean_error(supervisor_home: Path) -> None:
    (supervisor_home / "ledger.db").write_bytes(b"not a database at all " * 200)
    done = supervisor("ledger", "report")
    assert_clean_failure(done, code=1)
    assert "cannot open the ledger" in done.stderr


def test_a_global_config_flag_before_the_command_is_honoured(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere" / "supervisor.toml"
    done = supervisor("--config", str(config), "config", "path")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(config)


def test_a_config_flag_after_the_command_is_honoured(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere" / "supervisor.toml"
    done = supervisor("config", "path", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(config)


# ------------------------------------------------------------------------------------------------------------
# doctor


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released), so the Ollama probe fails fast."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


DOCTOR_KEYS = {"version", "os", "cpu", "memory", "gpu", "ollama", "mlx", "api_keys", "ledger", "config"}


def test_doctor_json_has_stable_keys_and_never_prints_a_key(closed_port: int, supervisor_home: Path) -> None:
    env = {"ANTHROPIC_API_KEY": CANARY_KEY, "OLLAMA_HOST": f"127.0.0.1:{closed_port}"}
    done = supervisor("doctor", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert CANARY_KEY not in done.stdout + done.stderr
    assert "CANARY" not in done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= DOCTOR_KEYS
    assert report["version"] == __version__
    assert report["api_keys"]["ANTHROPIC_API_KEY"] is True
    assert report["api_keys"]["OPENAI_API_KEY"] is False
    assert all(isinstance(v, bool) for v in report["api_keys"].values())
    assert report["ollama"]["reachable"] is False
    assert str(closed_port) in report["ollama"]["host"]
    assert report["ledger"]["path"] == str(supervisor_home / "ledger.db")
    assert report["cpu"]["cores"] >= 1
    assert report["memory"]["total_bytes"] > 0


def test_doctor_text_never_prints_a_key(closed_port: int) -> None:
    env = {"ANTHROPIC_API_KEY": CANARY_KEY, "OLLAMA_HOST": f"127.0.0.1:{closed_port}"}
    done = supervisor("doctor", env=env)
    assert done.returncode == 0, done.stderr
    assert CANARY_KEY not in done.stdout + done.stderr
    assert "ANTHROPIC_API_KEY set" in done.stdout
    assert "OPENAI_API_KEY missing" in done.stdout
    assert "not reachable" in done.stdout
