"""Bad input: malformed configs, malformed catalog files, malformed model answers.

Configs and catalogs (hand-written cases plus hypothesis-generated mutations of a valid file) go through the
real CLI entry (``supervisor.cli.main``, in-process, stdout and stderr captured): exit code 2, ``error:`` lines
that name the file (and the agent and key, or the model and field), never an exception (which a real process
would print as a traceback).

Model answers go through whole runs with scripted tiers: invalid plans (planner mode), plans that write outside
the workspace, answers holding shell commands, terminal escape sequences and Textual markup. None of them may
execute anything (a canary file is never created), write outside the workspace, or put a raw escape byte on
the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.cli import main
from supervisor.config import parse_schedule
from tests.helpers import Tiers, make_harness, tree_digest

pytestmark = pytest.mark.timeout(120)

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass
class Done:
    code: int | None  # None: main() raised (a real process would print a traceback)
    out: str
    err: str


def cli(*args: str) -> Done:
    """``supervisor ARGS`` in-process; an exception escaping ``main`` is reported in ``err`` as a traceback."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    except Exception as exc:
        return Done(None, out.getvalue(), err.getvalue() + "".join(traceback.format_exception(exc)))
    return Done(code, out.getvalue(), err.getvalue())


def assert_clean_error(done: Done, names: str, fragments: tuple[str, ...] = ()) -> list[str]:
    """Exit 2, ``error:`` lines each naming ``names`` (the file), the fragments somewhere in them, no traceback."""
    assert "Traceback" not in done.err, done.err[-3000:]
    assert done.code == 2, (done.code, done.out, done.err)
    errors = [line for line in done.err.splitlines() if line.startswith("error: ")]
    assert errors, done.err
    for line in errors:
        assert names in line, f"the error does not name {names}: {line}"
    text = "\n".join(errors)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} missing from: {text}"
    assert not CONTROL.search(done.err + done.out), "raw control characters reached the terminal"
    return errors


# ------------------------------------------------------------------------------------------------------------
# Hand-written malformed configs

VALID = """
[providers.sim]
kind = "scripted"
simulated_as = "deepseek:deepseek-flash"
script = "script.toml"

[tiers]
cheap = ["sim:m"]

[agents.fixer]
goal = "Fix it."
workspace = "ws"
ladder = ["cheap"]
frontier = "never"

[[agents.fixer.steps]]
name = "prepare"
run = "echo hi > ctx.txt"

[[agents.fixer.steps]]
name = "write"
prompt = "Write."
context = ["ctx.txt"]
writes = "out.txt"
verify = ["grep -q ok out.txt"]
"""


def edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new, 1)


@dataclass(frozen=True)
class ConfigCase:
    toml: str
    fragments: tuple[str, ...] = ()
    commands: tuple[tuple[str, ...], ...] = (("config", "check"),)
    raw: bytes | None = None  # exact bytes instead of ``toml``
    # Commands that read only the ledger: they warn once, naming the file and the problem, and go on.
    ledger_only: tuple[tuple[str, ...], ...] = ()


RUN = ("run", "fixer")
STATUS = ("status",)

CONFIG_CASES: list[Any] = [
    pytest.param(ConfigCase("[agents.fixer\n", ("not valid TOML",)), id="toml-unclosed-table"),
    pytest.param(ConfigCase('goal = "unterminated\n', ("not valid TOML",)), id="toml-unterminated-string"),
    pytest.param(
        ConfigCase(VALID + "\n[agents.fixer]\ngoal = 'again'\n", ("not valid TOML",)), id="toml-duplicate-table"
    ),
    pytest.param(ConfigCase("", (), raw=b'offline = "\xff\xfe"\n'), id="not-utf8"),
    pytest.param(
        ConfigCase("offline = true\nbogus = 1\n" + VALID, ("bogus", "unknown key")), id="unknown-top-level-key"
    ),
    pytest.param(ConfigCase(edit('goal = "Fix it."\n', ""), ("agent 'fixer'", "goal", "missing")), id="missing-goal"),
    pytest.param(ConfigCase(edit('workspace = "ws"\n', ""), ("agent 'fixer'", "workspace")), id="missing-workspace"),
    pytest.param(
        ConfigCase(edit('goal = "Fix it."', 'goal = "Fix it."\nstesp = []'), ("agent 'fixer'", "stesp", "unknown key")),
        id="typo-key",
    ),
    pytest.param(ConfigCase(edit('name = "write"', 'nmae = "write"'), ("agent 'fixer'", "nmae")), id="typo-step-key"),
    pytest.param(ConfigCase('[caps]\nday_usd = "ten"\n' + VALID, ("caps.day_usd",)), id="cap-not-a-number"),
    pytest.param(ConfigCase("[caps]\nday_usd = -1\n" + VALID, ("caps.day_usd",)), id="negative-global-cap"),
    pytest.param(ConfigCase("[caps]\nmonth_usd = nan\n" + VALID, ("caps.month_usd",)), id="nan-cap"),
    pytest.param(
        ConfigCase(VALID + "[agents.fixer.caps]\nrun_usd = -0.5\n", ("agent 'fixer'", "caps.run_usd")),
        id="negative-agent-cap",
    ),
    pytest.param(
        ConfigCase(VALID + "[agents.fixer.caps]\nday_dollars = 5\n", ("agent 'fixer'", "day_dollars")), id="unknown-cap"
    ),
    pytest.param(
        ConfigCase(
            edit('frontier = "never"', 'frontier = "never"\nschedule = "every 5s"'),
            ("agent 'fixer'", "schedule", "10 seconds"),
        ),
        id="schedule-too-short",
    ),
    pytest.param(
        ConfigCase(
            edit('frontier = "never"', 'frontier = "never"\nschedule = "hourly"'), ("agent 'fixer'", "schedule")
        ),
        id="schedule-unknown",
    ),
    pytest.param(
        ConfigCase(
            edit('frontier = "never"', 'frontier = "never"\nschedule = "daily 25:00"'), ("agent 'fixer'", "schedule")
        ),
        id="schedule-bad-time",
    ),
    pytest.param(
        ConfigCase(
            edit('frontier = "never"', 'frontier = "allow"\nschedule = "every 15m"'), ("agent 'fixer'", "allow")
        ),
        id="scheduled-frontier-allow",
    ),
    pytest.param(
        ConfigCase(edit('ladder = ["cheap"]', 'ladder = ["cheap", "premium"]'), ("agent 'fixer'", "ladder")),
        id="unknown-tier",
    ),
    pytest.param(
        ConfigCase(edit('ladder = ["cheap"]', 'ladder = ["cheap", "local"]'), ("agent 'fixer'", "cheapest first")),
        id="ladder-order",
    ),
    pytest.param(
        ConfigCase(edit('ladder = ["cheap"]', 'ladder = ["cheap", "cheap"]'), ("agent 'fixer'", "twice")),
        id="ladder-duplicate",
    ),
    pytest.param(ConfigCase(edit('ladder = ["cheap"]', "ladder = []"), ("agent 'fixer'", "ladder")), id="ladder-empty"),
    pytest.param(
        ConfigCase(edit('ladder = ["cheap"]', 'ladder = "cheap"'), ("agent 'fixer'", "ladder")), id="ladder-not-a-list"
    ),
    pytest.param(
        ConfigCase(
            edit('writes = "out.txt"', 'writes = "../outside.txt"'),
            ("agent 'fixer'", "outside.txt", "inside the workspace"),
        ),
        id="writes-parent",
    ),
    pytest.param(
        ConfigCase(edit('writes = "out.txt"', 'writes = "/etc/passwd"'), ("agent 'fixer'", "/etc/passwd")),
        id="writes-absolute",
    ),
    pytest.param(
        ConfigCase(edit('writes = "out.txt"', 'writes = "a/../../outside.txt"'), ("agent 'fixer'",)),
        id="writes-sneaky-parent",
    ),
    pytest.param(
        ConfigCase(edit('context = ["ctx.txt"]', 'context = ["../../secret"]'), ("agent 'fixer'", "secret")),
        id="context-parent",
    ),
    pytest.param(
        ConfigCase(edit('name = "write"', 'name = "prepare"'), ("agent 'fixer'", "unique", "prepare")),
        id="duplicate-step-names",
    ),
    pytest.param(
        ConfigCase(
            edit('run = "echo hi > ctx.txt"', 'run = "echo hi > ctx.txt"\nprompt = "also"'),
            ("agent 'fixer'", "exactly one"),
        ),
        id="step-run-and-prompt",
    ),
    pytest.param(
        ConfigCase(edit('run = "echo hi > ctx.txt"', "timeout_s = 5"), ("agent 'fixer'", "exactly one")),
        id="step-neither",
    ),
    pytest.param(
        ConfigCase(edit('run = "echo hi > ctx.txt"', 'run = "echo hi"\nwrites = "x.txt"'), ("agent 'fixer'", "run")),
        id="run-step-with-writes",
    ),
    pytest.param(
        ConfigCase(edit('writes = "out.txt"', 'writes = "out.txt"\noutput = "o"'), ("agent 'fixer'", "not both")),
        id="writes-and-output",
    ),
    pytest.param(
        ConfigCase(
            edit('verify = ["grep -q ok out.txt"]', 'verify = [{ regex = "([" }]'),
            ("agent 'fixer'", "regular expression"),
        ),
        id="invalid-regex",
    ),
    pytest.param(
        ConfigCase(edit('verify = ["grep -q ok out.txt"]', 'verify = [{ shell = "x" }]'), ("agent 'fixer'", "gate")),
        id="unknown-gate",
    ),
    pytest.param(
        ConfigCase(edit('verify = ["grep -q ok out.txt"]', "verify = [1]"), ("agent 'fixer'", "gate")),
        id="gate-not-a-string",
    ),
    pytest.param(
        ConfigCase(
            edit('verify = ["grep -q ok out.txt"]', "verify = [{ python_compiles = false }]"), ("agent 'fixer'",)
        ),
        id="python-compiles-false",
    ),
    pytest.param(
        ConfigCase(edit('verify = ["grep -q ok out.txt"]', 'verify = [{ cmd = "" }]'), ("agent 'fixer'",)),
        id="empty-gate-command",
    ),
    pytest.param(
        ConfigCase(
            edit('frontier = "never"', 'frontier = "never"\nattempts_per_tier = 0'),
            ("agent 'fixer'", "attempts_per_tier"),
        ),
        id="attempts-zero",
    ),
    pytest.param(
        ConfigCase(
            edit('frontier = "never"', 'frontier = "never"\nattempts_per_tier = 11'),
            ("agent 'fixer'", "attempts_per_tier"),
        ),
        id="attempts-too-many",
    ),
    pytest.param(
        ConfigCase(edit('frontier = "never"', 'frontier = "sometimes"'), ("agent 'fixer'", "frontier")),
        id="frontier-policy",
    ),
    pytest.param(
        ConfigCase(
            edit('frontier = "never"', 'frontier = "never"\nmemory_tokens = 99999999999999999999'),
            ("agent 'fixer'", "memory_tokens"),
        ),
        id="huge-integer",
    ),
    pytest.param(
        ConfigCase(edit('prompt = "Write."', 'prompt = "Write."\ntemperature = 3'), ("agent 'fixer'", "temperature")),
        id="temperature",
    ),
    pytest.param(
        ConfigCase(
            edit('prompt = "Write."', 'prompt = "Write."\nmax_output_tokens = 0'),
            ("agent 'fixer'", "max_output_tokens"),
        ),
        id="zero-output-budget",
    ),
    pytest.param(
        ConfigCase(
            edit('run = "echo hi > ctx.txt"', 'run = "echo hi > ctx.txt"\ntimeout_s = -1'),
            ("agent 'fixer'", "timeout_s"),
        ),
        id="negative-timeout",
    ),
    pytest.param(
        ConfigCase(edit('goal = "Fix it."', "goal = 2026-01-01"), ("agent 'fixer'", "goal")), id="goal-is-a-date"
    ),
    pytest.param(
        ConfigCase(edit('workspace = "ws"', "workspace = 5"), ("agent 'fixer'", "workspace")),
        id="workspace-not-a-string",
    ),
    pytest.param(
        ConfigCase(
            edit('[[agents.fixer.steps]]\nname = "prepare"', '[agents.fixer.stepz]\nname = "prepare"'),
            ("agent 'fixer'",),
        ),
        id="steps-misnamed",
    ),
    pytest.param(ConfigCase('agents = "fixer"\n', ("agents",)), id="agents-not-a-table"),
    pytest.param(
        ConfigCase('[agents."bad name!"]\ngoal = "g"\nworkspace = "ws"\nverify = ["true"]\n', ("bad name!",)),
        id="bad-agent-name",
    ),
    pytest.param(
        ConfigCase(
            '[agents."\\u001b[2J\\u001b]0;pwned\\u0007x"]\ngoal = "g"\nworkspace = "ws"\nverify = ["true"]\n', ("name",)
        ),
        id="escape-in-agent-name",
    ),
    pytest.param(
        ConfigCase('[agents.planner]\ngoal = "g"\nworkspace = "ws"\ntools = ["true"]\n', ("agent 'planner'", "verify")),
        id="planner-without-verify",
    ),
    pytest.param(
        ConfigCase(VALID.replace('kind = "scripted"', 'kind = "grpc"'), ("providers.sim.kind",)),
        id="unknown-provider-kind",
    ),
    pytest.param(
        ConfigCase('[providers.proxy]\nkind = "openai_compat"\n' + VALID, ("providers.proxy", "base_url")),
        id="provider-without-base-url",
    ),
    pytest.param(
        ConfigCase(
            VALID.replace('script = "script.toml"', 'script = "script.toml"\nmax_retries = 99'),
            ("providers.sim.max_retries",),
        ),
        id="max-retries",
    ),
    pytest.param(
        ConfigCase(
            VALID.replace('script = "script.toml"', 'script = "script.toml"\ntimeout_s = 0'),
            ("providers.sim.timeout_s",),
        ),
        id="provider-timeout-zero",
    ),
    pytest.param(
        ConfigCase(
            VALID.replace('script = "script.toml"', 'script = "script.toml"\nheaders = { X = 1 }'),
            ("providers.sim.headers",),
        ),
        id="header-not-a-string",
    ),
    pytest.param(
        ConfigCase(VALID.replace('simulated_as = "deepseek:deepseek-flash"\n', ""), ("providers.sim.simulated_as",)),
        id="scripted-without-price",
    ),
    pytest.param(
        ConfigCase(
            VALID.replace('"deepseek:deepseek-flash"', '"deepseek:no-such-model"'), ("providers.sim.simulated_as",)
        ),
        id="scripted-price-unknown",
    ),
    pytest.param(
        ConfigCase(VALID.replace('cheap = ["sim:m"]', 'cheap = ["nowhere:m"]'), ("tiers.cheap", "nowhere")),
        id="tier-provider-unknown",
    ),
    pytest.param(
        ConfigCase("[limits]\nmax_concurrent_agents = 0\n" + VALID, ("limits.max_concurrent_agents",)), id="limits-zero"
    ),
    pytest.param(
        ConfigCase("[breaker]\nmax_output_ratio = 2\n" + VALID, ("breaker.max_output_ratio",)), id="breaker-ratio"
    ),
    pytest.param(ConfigCase("approval_timeout_s = -1\n" + VALID, ("approval_timeout_s",)), id="approval-timeout"),
    pytest.param(ConfigCase('offline = "maybe"\n' + VALID, ("offline",)), id="offline-not-a-bool"),
    pytest.param(
        ConfigCase(VALID.replace('cheap = ["sim:m"]', 'cheap = "sim:m"'), ("tiers.cheap",)), id="tier-not-a-list"
    ),
    pytest.param(
        ConfigCase(
            "[limits]\nmax_concurrent_agents = 0\n" + VALID,
            ("limits",),
            commands=(RUN,),
            ledger_only=(STATUS, ("ledger", "report")),
        ),
        id="run-refuses-a-bad-config-status-reads-the-ledger",
    ),
    pytest.param(
        ConfigCase(VALID.replace('cheap = ["sim:m"]', 'cheap = ["nocolon"]'), ("tiers.cheap", "nocolon")),
        id="tier-model-without-colon",
    ),
    pytest.param(
        ConfigCase(
            "[caps]\nday_usd = inf\n" + VALID,
            ("caps.day_usd",),
            commands=(("config", "check"), RUN),
            ledger_only=(STATUS,),
        ),
        id="infinite-cap",
    ),
    pytest.param(
        ConfigCase("[caps]\nday_usd = 1e308\n" + VALID, ("caps.day_usd",), commands=(RUN,), ledger_only=(STATUS,)),
        id="absurd-cap",
    ),
    pytest.param(
        ConfigCase(
            edit('workspace = "ws"', 'workspace = "~no-such-user-4242/ws"'),
            ("agent 'fixer'", "workspace"),
            commands=(("config", "check"), STATUS, RUN),
        ),
        id="workspace-unknown-user",
    ),
    pytest.param(
        ConfigCase(
            edit('workspace = "ws"', 'workspace = "w\\u0000s"'),
            ("agent 'fixer'", "workspace"),
            commands=(("config", "check"), RUN),
            ledger_only=(STATUS,),
        ),
        id="workspace-nul-byte",
    ),
    pytest.param(
        ConfigCase(
            edit('context = ["ctx.txt"]', 'context = ["c\\u0000tx.txt"]'),
            ("agent 'fixer'", "context"),
            commands=(("config", "check"), RUN),
            ledger_only=(STATUS,),
        ),
        id="context-nul-byte",
    ),
    pytest.param(
        ConfigCase(
            edit('writes = "out.txt"', 'tools = ["read_file", "python3 check.py"]'),
            ("agent 'fixer'", "steps[1].tools", "unknown tool 'python3 check.py'", "run_command"),
        ),
        id="worker-unknown-tool",
    ),
    pytest.param(
        ConfigCase(
            edit('writes = "out.txt"', 'tools = ["read_file", "run_command"]'),
            ("agent 'fixer'", "steps[1]", "run_command needs `commands"),
        ),
        id="worker-run-command-without-commands",
    ),
    pytest.param(
        ConfigCase(
            edit('writes = "out.txt"', 'tools = ["read_file"]\ncommands = { test = "pytest -q" }'),
            ("agent 'fixer'", "steps[1]", "add it to `tools`"),
        ),
        id="worker-commands-without-run-command",
    ),
    pytest.param(
        ConfigCase(
            edit('writes = "out.txt"', 'tools = ["run_command"]\ncommands = { "run tests" = "pytest -q" }'),
            ("agent 'fixer'", "steps[1]", "command name 'run tests'"),
        ),
        id="worker-command-name",
    ),
    pytest.param(
        ConfigCase(edit('writes = "out.txt"', "max_turns = 5"), ("agent 'fixer'", "steps[1]", "`tools`")),
        id="worker-max-turns-without-tools",
    ),
    pytest.param(
        ConfigCase(
            edit('writes = "out.txt"', 'tools = ["read_file"]\nmax_turns = 0'), ("agent 'fixer'", "steps[1].max_turns")
        ),
        id="worker-max-turns-zero",
    ),
    pytest.param(
        ConfigCase(
            edit('run = "echo hi > ctx.txt"', 'run = "echo hi > ctx.txt"\ntools = ["read_file"]'),
            ("agent 'fixer'", "steps[0]", "tools"),
        ),
        id="worker-tools-on-a-run-step",
    ),
    pytest.param(
        ConfigCase(
            edit('cheap = ["sim:m"]', 'cheap = ["sim:m"]\nno_tools = ["sim:other"]'), ("tiers", "no_tools", "sim:other")
        ),
        id="no-tools-unknown-model",
    ),
    pytest.param(
        ConfigCase(
            edit('frontier = "never"', 'frontier = "never"\ncommands = { test = "pytest" }'),
            ("agent 'fixer'", "planner mode"),
        ),
        id="agent-commands-with-steps",
    ),
    pytest.param(
        ConfigCase(
            'catalog_dirs = ["~no-such-user-4242/models"]\n' + VALID,
            ("catalog_dirs",),
            commands=(("config", "check"), STATUS),
        ),
        id="catalog-dir-unknown-user",
    ),
]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "ws").mkdir()
    (tmp_path / "script.toml").write_text('[[answer]]\nmatch = "."\ntext = "ok"\n')
    return tmp_path


def test_the_valid_config_is_valid(project: Path) -> None:
    """Every case below breaks this config in one place, so each error comes from that one change."""
    path = project / "supervisor.toml"
    path.write_text(VALID)
    done = cli("config", "check", "--config", str(path))
    assert done.code == 0, done.err


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_malformed_config(project: Path, case: ConfigCase, monkeypatch: pytest.MonkeyPatch) -> None:
    path = project / "supervisor.toml"
    if case.raw is not None:
        path.write_bytes(case.raw)
    else:
        path.write_text(case.toml)
    for command in case.commands:
        monkeypatch.setenv("SUPERVISOR_HOME", tempfile.mkdtemp(dir=project))  # a fresh ledger per command
        done = cli(*command, "--config", str(path))
        assert_clean_error(done, str(path), case.fragments)
    for command in case.ledger_only:
        monkeypatch.setenv("SUPERVISOR_HOME", tempfile.mkdtemp(dir=project))
        done = cli(*command, "--config", str(path))
        assert "Traceback" not in done.err, done.err[-3000:]
        assert done.code == 0, (command, done.out, done.err)
        warnings = [line for line in done.err.splitlines() if line.startswith("warning: ")]
        assert len(warnings) == 1, done.err  # said once
        assert str(path) in warnings[0]
        assert all(fragment in warnings[0] for fragment in case.fragments), warnings[0]


def test_a_bad_catalog_named_by_catalog_dirs_is_named(project: Path) -> None:
    (project / "cat").mkdir()
    bad = project / "cat" / "extra.toml"
    bad.write_text('[meta]\nprovider = "x"\nchecked = 2026-01-01\nsources = ["s"]\n\n[[model]]\nid = "m"\n')
    path = project / "supervisor.toml"
    path.write_text('catalog_dirs = ["cat"]\n' + VALID)
    assert_clean_error(cli("config", "check", "--config", str(path)), str(bad), ("model 'm'",))


def test_a_config_that_is_a_directory(project: Path) -> None:
    path = project / "supervisor.toml"
    path.mkdir()
    assert_clean_error(cli("config", "check", "--config", str(path)), str(path), ("cannot read",))


# ------------------------------------------------------------------------------------------------------------
# Generated config mutations


BASE_CONFIG: dict[str, Any] = {
    "caps": {"day_usd": 5.0, "month_usd": 50.0},
    "providers": {
        "sim": {
            "kind": "scripted",
            "simulated_as": "deepseek:deepseek-flash",
            "script": "script.toml",
            "timeout_s": 30.0,
            "max_retries": 1,
        }
    },
    "tiers": {"cheap": ["sim:m"]},
    "limits": {"max_context_file_bytes": 10000, "max_concurrent_agents": 2},
    "agents": {
        "fixer": {
            "goal": "Fix it.",
            "workspace": "ws",
            "schedule": "every 15m",
            "ladder": ["cheap"],
            "frontier": "never",
            "attempts_per_tier": 2,
            "memory_tokens": 800,
            "caps": {"run_usd": 0.5},
            "steps": [
                {"name": "prepare", "run": "echo hi > ctx.txt", "timeout_s": 10.0},
                {
                    "name": "write",
                    "prompt": "Write.",
                    "context": ["ctx.txt"],
                    "writes": "out.txt",
                    "verify": ["grep -q ok out.txt", {"regex": "ok"}],
                    "max_output_tokens": 100,
                    "temperature": 0.5,
                },
            ],
        }
    },
}
Path_ = tuple[str | int, ...]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML also forbids a raw DEL
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def dumps(data: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in data.items())


def walk(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk(v, (*path, i))


def get(data: Any, path: Path_) -> Any:
    for part in path:
        data = data[part]
    return data


def copy(data: Any) -> Any:
    return json.loads(json.dumps(data))


MAPS = {("agents",), ("providers",)}  # user-named keys, not fields: renaming one is not an error by itself
NUMBERS = [p for p, v in walk(BASE_CONFIG) if isinstance(v, (int, float)) and not isinstance(v, bool)]
SCALARS = [p for p, v in walk(BASE_CONFIG) if p and not isinstance(v, (dict, list))]
CONTAINERS = [p for p, v in walk(BASE_CONFIG) if p and isinstance(v, (dict, list)) and p not in MAPS]
FIELDS = [
    p for p, _ in walk(BASE_CONFIG) if p and isinstance(p[-1], str) and p[:-1] not in MAPS and "verify" not in p[:-1]
]
REQUIRED = [
    ("agents", "fixer", "goal"),
    ("agents", "fixer", "workspace"),
    ("agents", "fixer", "steps", 0, "name"),
    ("agents", "fixer", "steps", 0, "run"),
    ("agents", "fixer", "steps", 1, "name"),
    ("agents", "fixer", "steps", 1, "prompt"),
    ("providers", "sim", "kind"),
    ("providers", "sim", "simulated_as"),
]
BAD_REGEXES = ["(", "[a-", "*x", "a{2,1}", "(?P<n", "\\", "x)", "(?<=a+)b"]
BROKEN_TOML = ["[[", "x = ", "= 1", '"unterminated', "[agents", "key = [1, 2", "a.b.c = {", "'''"]


def _valid_schedule(text: str) -> bool:
    try:
        parse_schedule(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Mutation:
    kind: str
    path: Path_
    value: Any = None


def mutations() -> st.SearchStrategy[Mutation]:
    not_numbers = st.one_of(st.just({"bogus": 1}), st.lists(st.integers(), min_size=1, max_size=3))
    return st.one_of(
        st.builds(Mutation, st.just("drop"), st.sampled_from(REQUIRED)),
        st.builds(Mutation, st.just("rename"), st.sampled_from(FIELDS), st.sampled_from(["_typo", "Typo", "_x_typo"])),
        st.builds(Mutation, st.just("wrong-type"), st.sampled_from(SCALARS), not_numbers),
        st.builds(Mutation, st.just("wrong-type"), st.sampled_from(CONTAINERS), st.sampled_from([[1, 2], 7])),
        st.builds(
            Mutation,
            st.just("negative"),
            st.sampled_from(NUMBERS),
            st.one_of(st.integers(max_value=-1), st.floats(max_value=-0.001, allow_nan=False, allow_infinity=False)),
        ),
        st.builds(
            Mutation,
            st.just("set"),
            st.just(("agents", "fixer", "schedule")),
            st.one_of(
                st.integers(0, 9).map(lambda n: f"every {n}s"),
                st.tuples(st.integers(24, 99), st.integers(0, 99)).map(lambda t: f"daily {t[0]}:{t[1]:02d}"),
                st.text(max_size=20).filter(lambda s: not _valid_schedule(s)),
            ),
        ),
        st.builds(
            Mutation,
            st.just("set"),
            st.sampled_from([("agents", "fixer", "ladder"), ("agents", "fixer", "steps", 1, "ladder")]),
            st.text(min_size=1, max_size=12)
            .filter(lambda s: s not in ("local", "cheap", "frontier"))
            .map(lambda s: ["cheap", s]),
        ),
        st.builds(
            Mutation,
            st.just("set"),
            st.sampled_from([("agents", "fixer", "steps", 1, "writes"), ("agents", "fixer", "steps", 1, "context")]),
            st.tuples(
                st.sampled_from(["../", "/", "a/../../", "../../../../", "./../"]),
                st.text(alphabet="abcxyz._-/", max_size=12),
            ).map(lambda t: t[0] + t[1]),
        ),
        st.builds(Mutation, st.just("duplicate-step"), st.just(("agents", "fixer", "steps"))),
        st.builds(
            Mutation,
            st.just("set"),
            st.just(("agents", "fixer", "steps", 1, "verify")),
            st.sampled_from(BAD_REGEXES).map(lambda r: [{"regex": r}]),
        ),
        st.builds(Mutation, st.just("set"), st.just(("agents", "fixer", "frontier")), st.just("allow")),
        st.builds(Mutation, st.just("set"), st.just(("tiers", "cheap")), st.just(["sim:m", "nowhere:m"])),
        st.builds(
            Mutation, st.just("broken-toml"), st.integers(0, 200).map(lambda n: (n,)), st.sampled_from(BROKEN_TOML)
        ),
    )


def apply(mutation: Mutation) -> str:
    data = copy(BASE_CONFIG)
    if mutation.kind == "broken-toml":
        lines = dumps(data).splitlines()
        lines.insert(int(mutation.path[0]) % (len(lines) + 1), mutation.value)
        return "\n".join(lines) + "\n"
    *parent_path, last = mutation.path
    parent = get(data, tuple(parent_path))
    if mutation.kind == "drop":
        del parent[last]
    elif mutation.kind == "rename":
        parent[f"{last}{mutation.value}"] = parent.pop(last)
    elif mutation.kind in ("wrong-type", "negative", "set"):
        if mutation.kind == "set" and isinstance(last, str) and last == "context":
            parent[last] = [mutation.value]
        else:
            parent[last] = mutation.value
    elif mutation.kind == "duplicate-step":
        steps = get(data, mutation.path)
        steps[1]["name"] = steps[0]["name"]
    return dumps(data)


def test_the_generator_base_config_is_valid(project: Path) -> None:
    path = project / "supervisor.toml"
    path.write_text(dumps(BASE_CONFIG))
    done = cli("config", "check", "--config", str(path))
    assert done.code == 0, done.err


@settings(
    max_examples=70,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=mutations())
def test_generated_config_mutations(mutation: Mutation) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ws").mkdir()
        (root / "script.toml").write_text('[[answer]]\nmatch = "."\ntext = "ok"\n')
        path = root / "supervisor.toml"
        path.write_text(apply(mutation))
        done = cli("config", "check", "--config", str(path))
        fragments: tuple[str, ...] = ()
        if mutation.kind != "broken-toml" and mutation.path[:2] == ("agents", "fixer"):
            fragments = ("agent 'fixer'",)
        if mutation.kind == "rename":
            fragments = (*fragments, f"{mutation.path[-1]}{mutation.value}")
        assert_clean_error(done, str(path), fragments)


# ------------------------------------------------------------------------------------------------------------
# Catalog files


VALID_MODEL = {
    "id": "fake-1",
    "provider": "fakeco",
    "tier": "cheap",
    "context_window": 100000,
    "max_output_tokens": 8000,
    "input": "0.10",
    "cache_read": "0.01",
    "cache_write": "0.10",
    "output": "0.40",
    "effective_from": "2026-01-01",
}
META = '[meta]\nprovider = "fakeco"\nchecked = 2026-11-01\nsources = ["https://example.invalid/prices"]\n'


def catalog_text(model: dict[str, Any] | None = None, meta: str = META, extra: str = "") -> str:
    body = "" if model is None else "[[model]]\n" + dumps(model)
    return meta + "\n" + body + extra


def model_with(**changes: Any) -> dict[str, Any]:
    model = dict(VALID_MODEL)
    for key, value in changes.items():
        if value is None:
            model.pop(key)
        else:
            model[key] = value
    return model


PEAK = '[model.peak]\nutc_offset = "{offset}"\nweekdays = {days}\nhours = {hours}\ninput = "1"\ncache_read = "1"\ncache_write = "1"\noutput = "1"\n'

CATALOG_CASES: list[Any] = [
    pytest.param("[meta\nprovider = 'x'\n", ("not valid TOML",), id="toml"),
    pytest.param(catalog_text(VALID_MODEL, meta=""), ("meta",), id="no-meta"),
    pytest.param(
        catalog_text(VALID_MODEL, meta='[meta]\nchecked = 2026-11-01\nsources = ["s"]\n'),
        ("meta.provider",),
        id="meta-provider",
    ),
    pytest.param(
        catalog_text(VALID_MODEL, meta='[meta]\nprovider = "f"\nchecked = 2026-11-01\nsources = []\n'),
        ("meta.sources",),
        id="meta-sources-empty",
    ),
    pytest.param(catalog_text(model_with(id=None)), ("id",), id="model-without-id"),
    pytest.param(catalog_text(model_with(inputs="0.1")), ("model 'fake-1'", "inputs"), id="unknown-field"),
    pytest.param(
        catalog_text(model_with(input=0.15)), ("model 'fake-1'", "input", "decimal strings"), id="price-as-float"
    ),
    pytest.param(catalog_text(model_with(output="abc")), ("model 'fake-1'", "output"), id="price-not-a-number"),
    pytest.param(catalog_text(model_with(output="-1")), ("model 'fake-1'", "output", "negative"), id="price-negative"),
    pytest.param(catalog_text(model_with(input="NaN")), ("model 'fake-1'", "input", "finite"), id="price-nan"),
    pytest.param(
        catalog_text(model_with(input="Infinity")), ("model 'fake-1'", "input", "finite"), id="price-infinite"
    ),
    pytest.param(catalog_text(model_with(tier="premium")), ("model 'fake-1'", "tier"), id="unknown-tier"),
    pytest.param(catalog_text(model_with(context_window=0)), ("model 'fake-1'", "context_window"), id="zero-window"),
    pytest.param(
        catalog_text(model_with(max_output_tokens=-5)), ("model 'fake-1'", "max_output_tokens"), id="negative-output"
    ),
    pytest.param(
        catalog_text(model_with(effective_from="yesterday")), ("model 'fake-1'", "effective_from"), id="bad-date"
    ),
    pytest.param(
        catalog_text(model_with(cache_ttl_seconds=-1)), ("model 'fake-1'", "cache_ttl_seconds"), id="negative-ttl"
    ),
    pytest.param(catalog_text(model_with(provider="")), ("model 'fake-1'", "provider"), id="empty-provider"),
    pytest.param(
        catalog_text(VALID_MODEL) + "\n[[model]]\n" + dumps(VALID_MODEL),
        ("model 'fake-1'", "duplicate"),
        id="duplicate-id",
    ),
    pytest.param(
        catalog_text(
            model_with(
                price_changes=[
                    {
                        **{k: VALID_MODEL[k] for k in ("input", "cache_read", "cache_write", "output")},
                        "effective_from": "2026-01-01",
                    }
                ]
            )
        ),
        ("model 'fake-1'", "effective_from"),
        id="two-tables-same-day",
    ),
    pytest.param(
        catalog_text(VALID_MODEL, extra=PEAK.format(offset="8h", days="[1]", hours='["09:00-12:00"]')),
        ("model 'fake-1'", "utc_offset"),
        id="peak-offset",
    ),
    pytest.param(
        catalog_text(VALID_MODEL, extra=PEAK.format(offset="+08:00", days="[0]", hours='["09:00-12:00"]')),
        ("model 'fake-1'", "weekdays"),
        id="peak-weekday",
    ),
    pytest.param(
        catalog_text(VALID_MODEL, extra=PEAK.format(offset="+08:00", days="[1]", hours='["12:00-09:00"]')),
        ("model 'fake-1'", "hours"),
        id="peak-backwards",
    ),
    pytest.param(
        catalog_text(
            model_with(
                long_context=[
                    {"above_prompt_tokens": 0, "input": "1", "cache_read": "1", "cache_write": "1", "output": "1"}
                ]
            )
        ),
        ("model 'fake-1'", "above_prompt_tokens"),
        id="band-zero",
    ),
    pytest.param(META + "\nmodel = [1, 2]\n", ("model",), id="models-not-tables"),
    pytest.param(META + "\n[model]\n" + dumps(VALID_MODEL), ("model",), id="model-is-a-table"),
    pytest.param(
        catalog_text(model_with(input="1e999", output="1e999")),
        ("model 'fake-1'", "input"),
        id="absurd-price",
    ),
]


@pytest.mark.parametrize(("text", "fragments"), CATALOG_CASES)
def test_malformed_catalog_file(supervisor_home: Path, text: str, fragments: tuple[str, ...]) -> None:
    bad = supervisor_home / "models" / "bad.toml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(text)
    assert_clean_error(cli("catalog"), str(bad), fragments)
    assert_clean_error(
        cli("catalog", "price", "fakeco:fake-1", "--input", "1000", "--output", "1000"), str(bad), fragments
    )


def test_a_catalog_file_that_is_not_utf8(supervisor_home: Path) -> None:
    bad = supervisor_home / "models" / "bad.toml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(META.encode() + b'\nnotes = "\xff"\n')
    assert_clean_error(cli("catalog"), str(bad), ("cannot read",))


CATALOG_FIELDS = [k for k in VALID_MODEL if k != "id"]


def catalog_mutations() -> st.SearchStrategy[tuple[str, str, Any]]:
    prices = ["input", "cache_read", "cache_write", "output"]
    return st.one_of(
        st.tuples(st.just("drop"), st.sampled_from(CATALOG_FIELDS), st.none()),
        st.tuples(st.just("rename"), st.sampled_from(CATALOG_FIELDS), st.sampled_from(["_typo", "s_typo"])),
        st.tuples(
            st.just("set"),
            st.sampled_from(prices),
            st.one_of(
                st.floats(allow_nan=True, allow_infinity=True),
                st.text(alphabet="abc-+eE.,%$ ", min_size=1, max_size=8).filter(
                    lambda s: not re.fullmatch(r"\s*[0-9.]+\s*", s)
                ),
                st.integers(max_value=-1).map(str),
                st.sampled_from(["NaN", "-Infinity", "sNaN", "-0.5", "1,5", "$1"]),
            ),
        ),
        st.tuples(
            st.just("set"),
            st.sampled_from(["context_window", "max_output_tokens"]),
            st.one_of(st.integers(max_value=0), st.text(alphabet="abxyz-. ", max_size=5)),
        ),
        st.tuples(
            st.just("set"),
            st.just("tier"),
            st.text(max_size=10).filter(lambda s: s not in ("local", "cheap", "frontier")),
        ),
        st.tuples(
            st.just("set"),
            st.just("effective_from"),
            st.sampled_from(
                [
                    "yesterday",
                    "2026-13-01",
                    "2026-02-30",
                    "01/02/2026",
                    "2026-1-1",
                    "",
                    "T",
                    "2026-01-01T25:00:00Z",
                    "soon",
                ]
            ),
        ),
    )


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutation=catalog_mutations())
def test_generated_catalog_mutations(supervisor_home: Path, mutation: tuple[str, str, Any]) -> None:
    kind, field, value = mutation
    model = dict(VALID_MODEL)
    if kind == "drop":
        del model[field]
    elif kind == "rename":
        model[field + value] = model.pop(field)
    else:
        model[field] = value
    bad = supervisor_home / "models" / "bad.toml"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(catalog_text(model))
    try:
        errors = assert_clean_error(
            cli("catalog"), str(bad), ("model 'fake-1'",) if kind != "drop" or field != "id" else ()
        )
        assert any(field in line for line in errors), errors
    finally:
        bad.unlink()


# ------------------------------------------------------------------------------------------------------------
# Malformed model answers through whole runs


CANARY = "PWNED"
PLANNER = """
[agents.planner]
goal = "Produce report.txt."
workspace = "ws"
tools = ["test -f report.txt", "echo tool-ran > tool.txt"]
verify = ["test -f report.txt"]
ladder = ["local", "cheap"]
attempts_per_tier = 1
frontier = "never"
"""


def outside_digest(tmp_path: Path) -> dict[str, str]:
    """Every file under the test's directory except the workspace and the data dir (which runs write)."""
    return {
        k: v
        for k, v in tree_digest(tmp_path).items()
        if not k.startswith(("ws/", "supervisor-home/")) and k != "supervisor-home"
    }


def assert_no_canary(*roots: Path) -> None:
    for root in roots:
        found = [p for p in root.rglob(f"*{CANARY}*")]
        assert not found, f"something executed model output: {found}"
    assert not Path(CANARY).exists()


def plan(*steps: dict[str, Any]) -> str:
    return json.dumps({"summary": "plan", "steps": list(steps)})


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param("this is not json {", id="not-json"),
        pytest.param('{"steps": [', id="truncated-json"),
        pytest.param(plan(), id="no-steps"),
        pytest.param(
            json.dumps({"steps": [{"kind": "shell", "name": "x", "cmd": f"touch {CANARY}"}]}), id="unknown-kind"
        ),
        pytest.param(plan({"kind": "tool", "name": "t", "tool": f"touch {CANARY}"}), id="tool-not-allowed"),
        pytest.param(
            plan({"kind": "tool", "name": "t", "tool": f"echo tool-ran > tool.txt; touch {CANARY}"}),
            id="tool-with-injection",
        ),
        pytest.param(
            plan({"kind": "model", "name": "m", "prompt": "p", "writes": "../outside.txt"}), id="writes-parent"
        ),
        pytest.param(
            plan({"kind": "model", "name": "m", "prompt": "p", "writes": "/tmp/outside-abs.txt"}), id="writes-absolute"
        ),
        pytest.param(
            plan({"kind": "model", "name": "m", "prompt": "p", "context": ["../../etc/passwd"]}), id="context-parent"
        ),
        pytest.param(
            plan({"kind": "model", "name": "m", "prompt": "p", "verify": [f"touch {CANARY}"]}), id="verify-not-allowed"
        ),
        pytest.param(plan({"kind": "model", "name": "m", "prompt": "p", "run": f"touch {CANARY}"}), id="extra-field"),
        pytest.param(
            plan({"kind": "model", "name": "m", "prompt": "p"}, {"kind": "model", "name": "m", "prompt": "q"}),
            id="duplicate-names",
        ),
        pytest.param(plan({"kind": "model", "name": "$(touch PWNED)", "prompt": "p"}), id="shell-in-name"),
        pytest.param(
            "```json\n" + plan({"kind": "tool", "name": "t", "tool": f"touch {CANARY}"}) + "\n```", id="fenced-bad-plan"
        ),
    ],
)
def test_invalid_plans_are_failed_gates(tmp_path: Path, answer: str) -> None:
    harness = make_harness(
        tmp_path, PLANNER, files={"notes.md": "notes\n"}, tiers=Tiers(local=lambda r: answer, cheap=lambda r: answer)
    )
    before_ws = tree_digest(harness.workspace)
    before_outside = outside_digest(tmp_path)
    runtime, backends = harness.runtime()
    result = asyncio.run(runtime.run_agent("planner"))
    assert result.outcome == "exhausted", (result.outcome, result.reason)
    assert tree_digest(harness.workspace) == before_ws
    assert outside_digest(tmp_path) == before_outside
    assert not Path("/tmp/outside-abs.txt").exists()
    assert_no_canary(tmp_path)
    plans = runtime.ledger.query("SELECT valid, validation_error FROM plans WHERE run_id = ?", (result.run_id,))
    assert len(plans) == 2
    assert not any(p["valid"] for p in plans)
    assert all(p["validation_error"] for p in plans)
    # The retry at the next tier was told why the first plan was refused.
    assert "plan" in backends["sim-cheap"].calls[0].messages[-1].content


def test_a_valid_plan_cannot_write_through_a_symlink_out_of_the_workspace(tmp_path: Path) -> None:
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (outside / "victim.txt").write_text("victim\n")

    def answer(request: Any) -> str:
        if "Plan the steps" in request.messages[-1].content:
            return plan(
                {"kind": "model", "name": "m", "prompt": "write it", "writes": "link/evil.txt"},
                {"kind": "model", "name": "n", "prompt": "write it", "writes": "link/victim.txt"},
            )
        return f"$(touch {CANARY}) `touch {CANARY}`"

    harness = make_harness(tmp_path, PLANNER, tiers=Tiers(local=answer, cheap=answer))
    (harness.workspace / "link").symlink_to(outside, target_is_directory=True)
    before_ws = tree_digest(harness.workspace)
    before_outside = outside_digest(tmp_path)
    runtime, _ = harness.runtime()
    result = asyncio.run(runtime.run_agent("planner"))
    assert result.outcome in ("failed", "exhausted"), result
    assert outside_digest(tmp_path) == before_outside
    assert (outside / "victim.txt").read_text() == "victim\n"
    assert not (outside / "evil.txt").exists()
    assert tree_digest(harness.workspace) == before_ws
    assert_no_canary(tmp_path)
    failures = " ".join(r["failure"] for r in runtime.ledger.query("SELECT failure FROM attempts"))
    assert "outside the workspace" in failures


# {canary} is an absolute path outside the workspace: a failed attempt's restore cannot remove what a shell made
# there (a canary inside the workspace let a mutant that ran every answer through `sh -c` pass).
SHELL_ANSWERS = [
    "$(touch {canary})",
    "`touch {canary}`",
    "ok; touch {canary}",
    "true && touch {canary} || true",
    "ok\n$(touch {canary}-2)\n`touch {canary}-3`\n; rm -rf ../victim",
    "';touch {canary};'",
    '"; touch {canary}; echo "',
    "ok\x00; touch {canary}",
]
SHELL_AGENT = """
[agents.scribe]
goal = "Write answer.txt."
workspace = "ws"
ladder = ["local"]
attempts_per_tier = 1
frontier = "never"

[[agents.scribe.steps]]
name = "write"
prompt = "Write the answer."
writes = "answer.txt"
verify = ["grep -qx 'exactly ok' answer.txt", {{ regex = "{regex}" }}, {{ python_compiles = true }}]
"""


@pytest.mark.parametrize("answer", SHELL_ANSWERS, ids=[f"shell-{i}" for i in range(len(SHELL_ANSWERS))])
def test_shell_commands_in_answers_never_run(tmp_path: Path, answer: str) -> None:
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "keep.txt").write_text("keep\n")
    (tmp_path / "outside").mkdir()
    canary = tmp_path / "outside" / CANARY
    answer = answer.format(canary=canary)
    harness = make_harness(
        tmp_path, SHELL_AGENT.format(regex="."), files={"answer.txt": "old\n"}, tiers=Tiers(local=lambda r: answer)
    )
    before_ws = tree_digest(harness.workspace)
    before_outside = outside_digest(tmp_path)
    runtime, _ = harness.runtime()
    result = asyncio.run(runtime.run_agent("scribe"))
    assert result.outcome == "exhausted", result
    assert sorted(p.name for p in canary.parent.iterdir()) == [], "something executed model output"
    assert tree_digest(harness.workspace) == before_ws
    assert outside_digest(tmp_path) == before_outside
    assert_no_canary(tmp_path)


def test_an_accepted_answer_full_of_shell_is_written_as_text_only(tmp_path: Path) -> None:
    """Even an answer that passes its gates is data: written byte for byte, never run."""
    answer = f"exactly ok\n$(touch {CANARY})\n`touch {CANARY}-2`\n"
    agent = SHELL_AGENT.format(regex="^exactly ok$").replace(", { python_compiles = true }", "")
    harness = make_harness(tmp_path, agent, tiers=Tiers(local=lambda r: answer))
    before_outside = outside_digest(tmp_path)
    runtime, _ = harness.runtime()
    result = asyncio.run(runtime.run_agent("scribe"))
    assert result.outcome == "success", result
    assert (harness.workspace / "answer.txt").read_text() == answer
    assert outside_digest(tmp_path) == before_outside
    assert_no_canary(tmp_path)


# ------------------------------------------------------------------------------------------------------------
# Terminal escape sequences and Textual markup reaching the CLI


NASTY = (
    "\\u001b]0;pwned-title\\u0007\\u001b[2J\\u001b[31mred\\u001b[0m [bold red]x[/] "
    "[link=https://evil.example]click[/link] \\u009b31m \\u0007bell\\u0008"
)
ESCAPE_CONFIG = """
[providers.sim-local]
kind = "scripted"
local = true
simulated_as = "mlx:smollm2-135m"
script = "script.toml"

[providers.sim-frontier]
kind = "scripted"
simulated_as = "anthropic:claude-sonnet-5-5"
script = "script.toml"

[tiers]
local = ["sim-local:tiny"]
frontier = ["sim-frontier:sonnet"]

[agents.noisy]
goal = "Write out.txt."
workspace = "ws"
ladder = ["local", "frontier"]
attempts_per_tier = 1
frontier = "ask"

[[agents.noisy.steps]]
name = "write"
prompt = "Write the answer."
writes = "out.txt"
verify = ["cat out.txt; echo; false"]
"""


def supervisor(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args, "--config", str(tmp_path / "supervisor.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=False,
    )


def test_escape_sequences_and_markup_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "out.txt").write_text("old\n")
    (tmp_path / "script.toml").write_text(f'[[answer]]\nmatch = "."\ntext = "{NASTY}"\n')
    (tmp_path / "supervisor.toml").write_text(textwrap.dedent(ESCAPE_CONFIG))
    before_ws = tree_digest(tmp_path / "ws")
    before_outside = outside_digest(tmp_path)
    outputs = {}
    run = supervisor(tmp_path, "run", "noisy")
    outputs["run"] = run
    assert run.returncode == 4, (run.stdout, run.stderr)  # local failed its gate; frontier waits for approval
    assert "red" in run.stdout
    assert "click" in run.stdout
    assert "[bold red]x[/]" in run.stdout  # markup is shown as the literal text it is
    for args in (
        ("status",),
        ("approvals", "--all"),
        ("ledger", "report", "--by", "run"),
        ("ask", "sim-local:tiny", "say something"),
        ("ask", "sim-frontier:sonnet", "say something"),
    ):
        outputs[" ".join(args)] = supervisor(tmp_path, *args)
    for name, done in outputs.items():
        assert "Traceback" not in done.stderr, (name, done.stderr)
        text = done.stdout + done.stderr
        assert not CONTROL.search(text), f"`supervisor {name}` printed raw control characters: {text!r}"
    assert outputs["ask sim-local:tiny say something"].returncode == 0
    assert "click" in outputs["ask sim-local:tiny say something"].stdout
    assert "click" in outputs["approvals --all"].stdout  # the escalation reason, sanitized
    assert tree_digest(tmp_path / "ws") == before_ws
    assert outside_digest(tmp_path) == before_outside
