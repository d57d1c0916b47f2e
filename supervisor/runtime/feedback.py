"""A failed gate, reduced to what a model can act on: the retry prompt's feedback and the digest's one line.

A gate's raw output is written for humans at a terminal: a Python traceback runs through the interpreter's own
files (with this machine's absolute paths), pytest prints every failing test in full, and the runtime's detail
names the command twice. A small model given all that copies it, loops on it, or runs out of window. So:

- a **traceback** becomes its exception line and the frames in the workspace (file relative to the workspace,
  line, function, the source line); frames in the interpreter or site-packages are dropped (the last frame is
  kept when none is in the workspace);
- **pytest** output becomes the failing tests from its short summary, the ``E`` lines that explain each
  assertion, where it failed, and the final count;
- anything else keeps its last lines;
- the command appears once, as ``\\`cmd\\` failed (exit N):``; absolute paths under the workspace become relative
  and any other absolute path is cut to its file name;
- the result is at most ``limit`` characters (``limits.failure_excerpt_chars``), cut at a line.

``digest_entry`` makes the one line the digest keeps for an open failure: the same reduction, first lines only,
no machine paths, at most ``DIGEST_ENTRY_CHARS``.

Pure functions of strings: nothing here runs a process or reads a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DIGEST_ENTRY_CHARS = 200
TAIL_LINES = 12
MAX_FRAMES = 3
MAX_E_LINES = 6  # pytest "E" lines kept per failing test
MAX_FAILED_TESTS = 5

_COMMAND_HEAD = re.compile(r"^cmd: (?P<gate>.*)\n\$ (?P<cmd>.*)\n\[(?P<status>exit -?\d+|timed out)\]\n?", re.DOTALL)
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')
_CARETS = re.compile(r"^\s*[~^]+\s*$")
_EXCEPTION = re.compile(
    r"^(?P<name>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failure)|AssertionError)\b"
)
_PYTEST_SUMMARY = re.compile(r"^=+ short test summary info =+$")
_PYTEST_FINAL = re.compile(r"^=*\s*\d+ (failed|passed|error|errors)\b.*(?: in [\d.]+s)?.*$")
_PYTEST_LOCATION = re.compile(r"^(?P<file>[\w./-]+\.py):(?P<line>\d+): (?P<error>\w+)$")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])(?:/[\w.@+-]+)+/(?P<name>[\w.@+-]+)")


@dataclass(frozen=True, slots=True)
class Frame:
    path: str
    line: int
    func: str
    source: str


def reduce_failure(detail: str, *, workspace: Path | None = None, limit: int = 1000) -> str:
    """The gate failure ``detail`` as a retry prompt carries it (see the module docstring)."""
    text = _relative(detail.replace("\r\n", "\n"), workspace).strip()
    head = ""
    match = _COMMAND_HEAD.match(text)
    if match is not None:
        status = match.group("status")
        head = f"`{match.group('cmd')}` {'timed out' if status == 'timed out' else f'failed ({status})'}"
        text = text[match.end() :].strip()
        body = _reduce_output(text)
        reduced = f"{head}:\n{body}" if body else head
    else:
        reduced = _reduce_output(text)
    return _cut(strip_machine_paths(reduced), limit)


def digest_entry(detail: str, *, workspace: Path | None = None, limit: int = DIGEST_ENTRY_CHARS) -> str:
    """One short line for the digest's open failures: the reduced failure's first lines, no machine paths."""
    reduced = reduce_failure(detail, workspace=workspace, limit=max(limit * 4, 400))
    lines = [line.strip() for line in reduced.splitlines() if line.strip()]
    flat = " ".join(lines[:3])
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def strip_machine_paths(text: str) -> str:
    """Absolute paths cut to their last part (``/usr/lib/python3.11/json/decoder.py`` -> ``decoder.py``)."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group("name"), text)


# ------------------------------------------------------------------------------------------------------------


def _relative(text: str, workspace: Path | None) -> str:
    if workspace is None:
        return text
    root = str(workspace).rstrip("/")
    text = text.replace(root + "/", "")
    resolved = str(workspace.resolve()).rstrip("/") if workspace.is_absolute() else root
    if resolved != root:
        text = text.replace(resolved + "/", "")
    return text.replace(root, ".")


def _reduce_output(text: str) -> str:
    lines = text.splitlines()
    if any(_PYTEST_SUMMARY.match(line.strip()) for line in lines):
        return _reduce_pytest(lines)
    if any(line.startswith("Traceback (most recent call last):") for line in lines):
        return _reduce_traceback(lines)
    return "\n".join(_tail(lines, TAIL_LINES))


def _tail(lines: list[str], count: int) -> list[str]:
    kept = [line.rstrip() for line in lines if line.strip()]
    return (["…"] if len(kept) > count else []) + kept[-count:]


def _reduce_traceback(lines: list[str]) -> str:
    """The last traceback: its exception line(s) first, then the frames that are the workspace's own files."""
    start = max(i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last):"))
    block = lines[start + 1 :]
    frames: list[Frame] = []
    index = 0
    while index < len(block):
        found = _FRAME.match(block[index])
        if found is None:
            break
        source = ""
        index += 1
        while index < len(block) and block[index].startswith("    ") and not _FRAME.match(block[index]):
            if not _CARETS.match(block[index]) and not source:
                source = block[index].strip()
            index += 1
        frames.append(Frame(found.group("path"), int(found.group("line")), found.group("func") or "", source))
    # What follows the frames: for a SyntaxError, the offending source line and its caret, then the error.
    rest = [line.rstrip() for line in block[index:] if line.strip()]
    error_lines = [line for line in rest if not line.startswith(" ")] or rest[-1:]
    syntax_context = [line for line in rest if line.startswith(" ")]
    own = [f for f in frames if not f.path.startswith(("/", "<")) and "site-packages" not in f.path]
    shown = own[-MAX_FRAMES:] or frames[-1:]
    out = error_lines[:3]
    for frame in shown:
        where = f"{frame.path}, line {frame.line}" + (f", in {frame.func}" if frame.func else "")
        out.append(f"  at {where}" + (f": {frame.source}" if frame.source else ""))
    out.extend(f"  {line.strip()}" for line in syntax_context[:2])
    return "\n".join(out)


def _reduce_pytest(lines: list[str]) -> str:
    """The failing tests from pytest's short summary, the E lines explaining each, where, and the count."""
    summary_at = next(i for i, line in enumerate(lines) if _PYTEST_SUMMARY.match(line.strip()))
    failed = [line.strip() for line in lines[summary_at + 1 :] if line.startswith(("FAILED", "ERROR"))]
    final = next((line.strip("= ").strip() for line in reversed(lines) if _PYTEST_FINAL.match(line.strip())), "")
    explanations: list[str] = []
    current: list[str] = []
    for line in lines[:summary_at]:
        if line.startswith("E "):
            if len(current) < MAX_E_LINES:
                current.append(line.rstrip())
            continue
        location = _PYTEST_LOCATION.match(line.strip())
        if location is not None and current:
            explanations.append("\n".join([*current, f"  at {location.group('file')}:{location.group('line')}"]))
            current = []
    if current:
        explanations.append("\n".join(current))
    out = failed[:MAX_FAILED_TESTS]
    if len(failed) > MAX_FAILED_TESTS:
        out.append(f"(and {len(failed) - MAX_FAILED_TESTS} more)")
    out.extend(explanations[:MAX_FAILED_TESTS])
    if final:
        out.append(final)
    return "\n".join(out) if out else "\n".join(_tail(lines, TAIL_LINES))


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    kept = text[: limit - 1]
    if "\n" in kept:
        kept = kept[: kept.rindex("\n")]
    return kept.rstrip() + "\n…"
