"""Helpers shared by the benchmark scripts in bench/: the commit they ran at, the machine, writing the results."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def git_commit() -> str | None:
    """The commit the benchmark ran at (``-dirty`` when the working tree has changes), if in a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH_DIR, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, cwd=BENCH_DIR, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def machine() -> dict[str, Any]:
    """The keys every benchmark writes under ``"machine"``: the Python version and the OS and architecture.

    A script that records more (CPU count, library versions) adds its own keys to this dict.
    """
    return {"python": platform.python_version(), "system": f"{platform.system()} {platform.machine()}"}


def write_results(path: Path, results: dict[str, Any], *, announce: str = "results written to") -> None:
    """Write ``results`` to ``path`` as indented JSON (making its directory) and print ``announce`` and the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{announce} {path}")
