"""The core runs headless: importing any module outside ``supervisor.tui`` never imports Textual."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import supervisor

CHECK = """
import importlib, json, sys
failures = {}
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
    leaked = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
    if leaked:
        failures[name] = leaked[:3]
        break
print(json.dumps({"failures": failures, "imported": len(json.loads(sys.argv[1]))}))
"""


def core_modules() -> list[str]:
    """Every module file in the package (found on disk: some subpackages are namespace packages)."""
    root = Path(supervisor.__file__).resolve().parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if name == "supervisor.__main__" or name == "supervisor.tui" or name.startswith("supervisor.tui."):
            continue
        names.append(name)
    return names


def test_no_core_module_imports_textual() -> None:
    names = core_modules()
    assert "supervisor.runtime.runtime" in names
    assert "supervisor.control" in names
    assert "supervisor.ledger.views" in names
    out = subprocess.run(
        [sys.executable, "-c", CHECK, json.dumps(names)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(supervisor.__file__).resolve().parents[1],
    )
    result = json.loads(out.stdout)
    assert result["failures"] == {}, f"these imports pulled in textual: {result['failures']}"
    assert result["imported"] == len(names)


def test_the_cli_reaches_textual_only_for_the_tui() -> None:
    """``supervisor --help`` and the command table load without Textual (it is imported inside ``cmd_tui``)."""
    code = "import sys, supervisor.cli, supervisor.commands; print(any(m.startswith('textual') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
