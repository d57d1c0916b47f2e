"""The README stays true: its Quickstart commands are the ones CI runs, and its CLI reference is generated.

Regenerate the CLI reference with: UPDATE_README=1 pytest tests/integration/test_readme.py
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from supervisor.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BEGIN, END = "<!-- cli-reference-begin -->", "<!-- cli-reference-end -->"


def quickstart_commands() -> list[str]:
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:sh|bash|console)\n(.+?)\n```", section, flags=re.DOTALL)


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    out: list[tuple[str, argparse.ArgumentParser]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.append((name, sub))
    return out


def render_cli_reference() -> str:
    """Every command's usage line and one-line description, straight from the parser."""
    parser = build_parser()
    lines = ["```text"]
    for name, sub in _subparsers(parser):
        entries = [(name, sub), *((f"{name} {n}", s) for n, s in _subparsers(sub))]
        for _full, p in entries:
            usage = " ".join(p.format_usage().split())
            usage = usage.removeprefix("usage: ")
            lines.append(usage)
            if p.description:
                lines.append(f"    {p.description}")
    lines.append("```")
    return "\n".join(lines)


CI_VENV = ".ci-venv"  # CI's own virtualenv; the README's .venv is the developer's


def ci_test_block() -> list[str]:
    ci = (REPO / ".ci" / "run").read_text()
    block = ci.split("# README-TEST-COMMAND-BEGIN\n", 1)[1].split("\n# README-TEST-COMMAND-END", 1)[0]
    return block.strip().splitlines()


def test_quickstart_has_two_commands_the_second_is_what_ci_runs() -> None:
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    demo, tests = (c.strip() for c in commands)
    assert demo.endswith("supervisor demo"), demo
    assert tests.endswith("pytest"), tests
    # CI runs the same steps, one per line (so each fails CI on its own), in its own virtualenv.
    steps = [step.strip().replace(".venv", CI_VENV) for step in tests.split("&&")]
    assert ci_test_block() == steps


def test_every_ci_step_fails_ci_on_its_own() -> None:
    """``set -e`` ignores failures of all but the last command in an ``&&`` or ``||`` list: CI has none."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    commands = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert commands[0] == "set -euo pipefail", commands[:2]
    assert [c for c in commands if "&&" in c or "||" in c or c.rstrip().endswith("\\")] == []
    assert not any(".venv" in c.replace(CI_VENV, "") for c in commands), "CI must not touch the README's .venv"


def test_the_demo_command_exists() -> None:
    parser = build_parser()
    args = parser.parse_args(["demo"])
    assert args.handler == "demo"
    assert not args.headless


def test_cli_reference_is_generated_from_the_parser() -> None:
    text = README.read_text()
    assert BEGIN in text
    assert END in text
    before, rest = text.split(BEGIN, 1)
    current, after = rest.split(END, 1)
    current = current.strip()
    wanted = render_cli_reference()
    if os.environ.get("UPDATE_README") and current != wanted:
        README.write_text(f"{before}{BEGIN}\n{wanted}\n{END}{after}")
        current = wanted
    assert current == wanted, (
        "the README's CLI reference is stale: UPDATE_README=1 pytest tests/integration/test_readme.py"
    )
