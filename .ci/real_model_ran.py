"""CI's check that the real-model tests ran: read pytest's junit XML, fail on any skipped slow or real-model test.

tests/conftest.py records each test's ``slow``/``real_model`` markers as a junit property; a run where none of
the real-model tests passed, or any marked test was skipped, is not a green run.

Usage: python .ci/real_model_ran.py JUNIT_XML
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def problems(junit: Path) -> tuple[list[str], list[str]]:
    """(what is wrong, the real-model tests that passed)."""
    try:
        root = ET.parse(junit).getroot()
    except (OSError, ET.ParseError) as exc:
        return [f"cannot read the junit XML {junit}: {exc}"], []
    wrong: list[str] = []
    passed: list[str] = []
    for case in root.iter("testcase"):
        markers = {
            mark
            for prop in case.iter("property")
            if prop.get("name") == "markers"
            for mark in (prop.get("value") or "").split(",")
            if mark
        }
        if not markers:
            continue
        name = f"{case.get('classname')}::{case.get('name')}"
        skipped = case.find("skipped")
        if skipped is not None:
            wrong.append(f"{name} ({', '.join(sorted(markers))}) was skipped: {skipped.get('message')}")
        elif case.find("failure") is not None or case.find("error") is not None:
            wrong.append(f"{name} ({', '.join(sorted(markers))}) did not pass")
        elif "real_model" in markers:
            passed.append(name)
    if not passed:
        wrong.append("no real-model test ran (no test marked real_model passed)")
    return wrong, passed


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    wrong, passed = problems(Path(argv[1]))
    for line in wrong:
        print(f"error: {line}", file=sys.stderr)
    if wrong:
        return 1
    print(f"{len(passed)} real-model tests ran and passed:")
    for name in passed:
        print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
