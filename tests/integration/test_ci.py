"""CI cannot pass without its tests: ``.ci/run`` stops at the first failing step, and the real-model tests either
run or fail the run (the ``embedded_gguf`` fixture under ``SUPERVISOR_CI``, and ``.ci/real_model_ran.py``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from supervisor.models_pull import EMBEDDED_MODELS

REPO = Path(__file__).resolve().parents[2]
SMOLLM2 = EMBEDDED_MODELS["smollm2-135m"]


def _stub(directory: Path, name: str, log: Path) -> None:
    """An executable that records that it ran and succeeds: a tool CI must never reach after a failed step."""
    path = directory / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 0\n')
    path.chmod(0o755)


def test_a_failing_install_fails_ci_and_nothing_after_it_runs(tmp_path: Path) -> None:
    # A checkout with CI's scripts and nothing to install: `pip install -e ".[dev]"` fails. With pytest, ruff,
    # mypy and supervisor on PATH (stubs that succeed), an `&&` chain under `set -e` fell through to "CI passed".
    project = tmp_path / "project"
    shutil.copytree(REPO / ".ci", project / ".ci")
    stubs, log = tmp_path / "stubs", tmp_path / "ran.log"
    stubs.mkdir()
    for tool in ("pytest", "ruff", "mypy", "supervisor"):
        _stub(stubs, tool, log)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTEST_ADDOPTS")}
    env["PATH"] = f"{stubs}{os.pathsep}{env['PATH']}"

    done = subprocess.run(
        ["bash", str(project / ".ci" / "run")], capture_output=True, text=True, env=env, timeout=240, check=False
    )

    assert done.returncode != 0, done.stdout + done.stderr
    assert "CI passed" not in done.stdout
    assert "does not appear to be a Python project" in done.stderr  # pip's own failure stopped the run
    assert not log.exists(), log.read_text()
    assert not (project / ".venv").exists()
    assert (project / ".ci-venv" / "bin" / "activate").is_file()


# ------------------------------------------------------------------------------------------------------------
# .ci/real_model_ran.py over junit XML as pytest writes it (properties carry the markers conftest records)


def _case(name: str, markers: str | None, outcome: str = "") -> str:
    props = f'<properties><property name="markers" value="{markers}"/></properties>' if markers else ""
    return f'<testcase classname="tests.t" name="{name}" time="1.0">{props}{outcome}</testcase>'


SKIPPED = '<skipped type="pytest.skip" message="could not fetch the embedded model">skip</skipped>'


@pytest.mark.parametrize(
    ("cases", "code", "says"),
    [
        ([_case("test_gguf", "slow,real_model"), _case("test_plain", None)], 0, "1 real-model tests ran and passed"),
        ([_case("test_gguf", "slow,real_model", SKIPPED)], 1, "test_gguf (real_model, slow) was skipped"),
        ([_case("test_gguf", "real_model"), _case("test_many", "slow", SKIPPED)], 1, "test_many (slow) was skipped"),
        ([_case("test_gguf", "real_model", '<error message="fixture">x</error>')], 1, "did not pass"),
        ([_case("test_plain", None), _case("test_many", "slow")], 1, "no real-model test ran"),
    ],
    ids=["ran", "real-model skipped", "slow skipped", "errored", "none"],
)
def test_the_real_model_check(tmp_path: Path, cases: list[str], code: int, says: str) -> None:
    junit = tmp_path / "junit.xml"
    junit.write_text(
        f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{"".join(cases)}</testsuite></testsuites>'
    )

    done = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "real_model_ran.py"), str(junit)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == code, done.stdout + done.stderr
    assert says in done.stdout + done.stderr


def test_the_real_model_check_fails_without_a_junit_file(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "real_model_ran.py"), str(tmp_path / "missing.xml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "cannot read the junit XML" in done.stderr


# ------------------------------------------------------------------------------------------------------------
# The embedded_gguf fixture, in a child pytest run with this suite's conftest


PROBE = textwrap.dedent(
    """
    from pathlib import Path

    def test_uses_the_real_model(embedded_gguf: Path) -> None:
        assert embedded_gguf.is_file()
    """
)


def _probe(tmp_path: Path, *, ci: bool, cache: Path, offline: bool) -> subprocess.CompletedProcess[str]:
    """Run one test that needs ``embedded_gguf`` with the wheel cache ``cache`` (and no package index if offline)."""
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "SUPERVISOR_TEST_GGUF", "SUPERVISOR_CI")}
    env.update({"PYTHONPATH": str(REPO), "SUPERVISOR_WHEEL_CACHE": str(cache)})
    if ci:
        env["SUPERVISOR_CI"] = "1"
    if offline:  # pip reads no config and has no index: as on a machine without network
        env.update({"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""})
    plugins = ["-p", "no:cacheprovider", "-p", "tests.conftest"]
    config = ["-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path)]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-n0", *plugins, *config, "-rs", "-q", str(tmp_path / "test_probe.py")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def _wrong_wheel(directory: Path) -> Path:
    """A wheel of the pinned name whose sha256 is not the pin (as with a wrong pin or a tampered index)."""
    directory.mkdir()
    (directory / SMOLLM2.wheel_glob.replace("*", "py3-none-any")).write_bytes(b"not the pinned wheel")
    return directory


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_a_wheel_that_does_not_match_its_pin_fails_the_real_model_test(tmp_path: Path, ci: bool) -> None:
    done = _probe(tmp_path, ci=ci, cache=_wrong_wheel(tmp_path / "wheels"), offline=True)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout, done.stdout
    assert f"is pinned to {SMOLLM2.sha256}" in done.stdout
    assert "skipped" not in done.stdout


def test_without_network_the_real_model_test_skips_with_a_reason_outside_ci(tmp_path: Path) -> None:
    done = _probe(tmp_path, ci=False, cache=tmp_path / "empty", offline=True)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 skipped" in done.stdout
    assert f"could not fetch the embedded model {SMOLLM2.requirement}" in done.stdout  # -rs prints the reason


def test_without_network_the_real_model_test_fails_in_ci(tmp_path: Path) -> None:
    done = _probe(tmp_path, ci=True, cache=tmp_path / "empty", offline=True)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 error" in done.stdout
    assert "SUPERVISOR_CI is set: the real-model tests must run in CI" in done.stdout
