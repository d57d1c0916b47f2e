"""The CLI around the local tier: `config check` warns about missing local models, `status` says they are
skipped, the ledger reads without a valid config, `models pull` says where the model is once, and `run --help`
lists the exit codes. Every command runs as a real child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from supervisor.models_pull import EMBEDDED_MODELS, embedded_model_path
from supervisor.runtime.runtime import EXIT_CODES

REPO = Path(__file__).resolve().parents[2]
MISSING = (
    "mlx:smollm2-135m is not on this machine: the embedded model smollm2-135m is not on this machine yet "
    "(hint: supervisor models pull smollm2-135m)"
)

CONFIG = """
[providers.sim-cheap]
kind = "scripted"
simulated_as = "deepseek:deepseek-flash"
script = "cheap.toml"

[tiers]
local = ["mlx:smollm2-135m"]
cheap = ["sim-cheap:flash"]

[agents.noter]
goal = "Write the note."
workspace = "ws"
ladder = ["local", "cheap"]
frontier = "never"

[[agents.noter.steps]]
name = "note"
prompt = "Write note.txt saying ok."
writes = "note.txt"
verify = [{ regex = "^ok$" }]
"""


def supervisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ),
        check=False,
        cwd=REPO,
    )


def write_config(tmp_path: Path, text: str = CONFIG) -> Path:
    (tmp_path / "ws").mkdir(exist_ok=True)
    (tmp_path / "cheap.toml").write_text('[[answer]]\nmatch = "."\ntext = "ok"\n')
    path = tmp_path / "supervisor.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_missing_local_model_is_a_warning_in_config_check_and_a_note_in_status(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    check = supervisor("config", "check", "--config", str(config))
    assert check.returncode == 0, check.stderr  # a warning, not a problem
    assert f"warning: {config}: tiers: {MISSING}; runs skip it until it is there" in check.stderr
    assert "ok (1 agent, 1 warning(s))" in check.stdout

    run = supervisor("run", "noter", "--config", str(config))
    assert run.returncode == 0, run.stdout + run.stderr  # the run went on to the cheap tier
    assert f"noter: warning: {MISSING}" in run.stdout
    assert "verified at cheap" in run.stdout

    status = supervisor("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    assert f"skipped: {MISSING}" in status.stdout
    data = json.loads(supervisor("status", "--config", str(config), "--json").stdout)
    assert data["missing_models"] == [MISSING]


def test_the_ledger_reads_when_the_config_has_an_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert supervisor("run", "noter", "--config", str(config)).returncode == 0
    config.write_text(config.read_text().replace('frontier = "never"', 'frontier = "never"\nfrontir = "ask"'))
    assert supervisor("config", "check", "--config", str(config)).returncode == 2  # the typo is an error

    report = supervisor("ledger", "report", "--config", str(config))
    assert report.returncode == 0, report.stderr
    assert "noter (simulated)" in report.stdout
    assert "simulated (demo tiers, not billed) $0.0000" in report.stdout
    warnings = [line for line in report.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1  # said once
    assert "frontir" in warnings[0]
    assert "showing the ledger without the config" in warnings[0]

    status = supervisor("status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    assert "noter" in status.stdout
    assert "success" in status.stdout
    assert len([line for line in status.stderr.splitlines() if line.startswith("warning:")]) == 1
    as_json = json.loads(supervisor("status", "--config", str(config), "--json").stdout)
    assert as_json["config_error"] is True
    assert [a["name"] for a in as_json["agents"]] == ["noter"]
    assert as_json["agents"][0]["last_run"]["outcome"] == "success"

    # Commands that need a valid config still refuse, with the problem named.
    run = supervisor("run", "noter", "--config", str(config))
    assert run.returncode == 2
    assert "frontir" in run.stderr


def test_models_pull_says_where_the_model_is_once(tmp_path: Path) -> None:
    spec = EMBEDDED_MODELS["smollm2-135m"]
    path = embedded_model_path("smollm2-135m", os.environ)
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:  # already pulled: the right size is what `is_pulled` checks
        handle.truncate(spec.size_bytes)
    done = supervisor("models", "pull", "smollm2-135m")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(str(path)) == 1
    assert done.stdout.splitlines() == [
        f"smollm2-135m is already at {path}",
        'try it: supervisor ask mlx:smollm2-135m "What is the capital of France?"',
    ]


def test_run_help_lists_every_exit_code() -> None:
    done = supervisor("run", "--help")
    assert done.returncode == 0
    lines = done.stdout.split("exit codes:", 1)[1].splitlines()
    listed = {int(line.split()[0]) for line in lines if line.strip()}
    assert listed == {*EXIT_CODES.values(), 2}
