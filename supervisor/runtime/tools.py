"""The built-in worker's tools, run inside the workspace and nowhere else.

The model sees six tools, with exactly these names and arguments: ``read_file(path)``, ``list_files(glob)``,
``write_file(path, content)``, ``edit_file(path, old, new)``, ``run_command(name)`` and ``finish(summary)``.
``ToolBox.execute`` runs one call and returns its result as text for the model; it never raises for anything
the model did. A refused call (a path outside the workspace, a file over a size limit, a command that is not
allowlisted, arguments that are not what the tool takes, a tool that does not exist) comes back as an error
result saying why, so the model can correct itself, and the loop records it like any other result.

Confinement, for every path argument:

- relative, without ``..``, without a NUL byte, not the workspace itself;
- not inside a directory that workspace snapshots leave out (``limits.snapshot_ignore``: ``.git``, ``.venv``,
  ...), since a change there could not be undone when a gate fails;
- resolved with every symlink followed (``realpath``), the result must still be inside the workspace and
  outside the ignored directories: a symlink that leads out is refused, for reading as for writing;
- ``read_file`` refuses a file over ``limits.max_tool_read_bytes`` or not UTF-8; ``write_file`` and
  ``edit_file`` refuse to leave a file over ``limits.max_tool_write_bytes``; writes are atomic.

``run_command`` runs only a command named in the step's ``commands`` table: the model gives the name and the
command line comes from the config. It runs like a gate (its own process group, a timeout, captured output)
and returns the exit status and the tail of the output.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from supervisor.atomic_file import atomic_write
from supervisor.backends.base import ToolCall, ToolSpec
from supervisor.config import TOOL_NAMES, CommandGate
from supervisor.runtime.process import ProcessRegistry, run_command

MAX_LISTED_FILES = 200
MAX_PATH_CHARS = 1024


@dataclass(frozen=True, slots=True)
class ToolLimits:
    """The size limits the tools enforce (from ``[limits]``)."""

    max_read_bytes: int = 32_000
    max_write_bytes: int = 128_000
    max_output_chars: int = 4_000
    capture_bytes: int = 64_000


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one call did: ``content`` goes back to the model; ``is_error`` marks a refused or failed call."""

    content: str
    is_error: bool = False
    finished: bool = False  # the model called finish
    changed: tuple[str, ...] = ()  # workspace files this call wrote


class ToolRefused(Exception):
    """A call the tools will not run, with the message the model reads."""


def tool_specs(names: Sequence[str], commands: Mapping[str, CommandGate]) -> tuple[ToolSpec, ...]:
    """The tools offered to the model: ``names`` in the canonical order, always with ``finish``."""
    offered = [name for name in TOOL_NAMES if name in names or name == "finish"]
    return tuple(_spec(name, commands) for name in offered)


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _spec(name: str, commands: Mapping[str, CommandGate]) -> ToolSpec:
    def params(**props: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    if name == "read_file":
        return ToolSpec(
            name,
            "Read a text file in the workspace.",
            params(path=_string("the file's path relative to the workspace, e.g. src/app.py")),
        )
    if name == "list_files":
        return ToolSpec(
            name,
            'List the workspace files matching a glob: "*" is the top level, "**/*.py" every .py file.',
            params(glob=_string("a glob relative to the workspace")),
        )
    if name == "write_file":
        return ToolSpec(
            name,
            "Create or overwrite a file in the workspace with exactly this content.",
            params(path=_string("the file's path relative to the workspace"), content=_string("the whole file")),
        )
    if name == "edit_file":
        return ToolSpec(
            name,
            "Replace the one place where `old` appears in a file with `new` (`old` must appear exactly once: "
            "include enough surrounding lines to make it unique).",
            params(
                path=_string("the file's path relative to the workspace"),
                old=_string("the exact text to replace"),
                new=_string("the text to put in its place"),
            ),
        )
    if name == "run_command":
        listed = "; ".join(f"{n}: {c.cmd}" for n, c in commands.items())
        return ToolSpec(
            name,
            f"Run one of the allowed commands by name and get its exit status and output. Commands: {listed}.",
            params(name={"type": "string", "enum": list(commands), "description": "the command's name"}),
        )
    if name == "finish":
        return ToolSpec(
            name,
            "Call this when the task is done; the result is then checked.",
            params(summary=_string("one line: what you changed")),
        )
    raise ValueError(f"unknown tool {name!r}")  # pragma: no cover - names come from the validated config


# ----------------------------------------------------------------------------------------------------------
# Arguments


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_arguments(call: ToolCall, spec: ToolSpec) -> dict[str, str]:
    """The call's arguments, checked strictly against ``spec``: a JSON object with exactly its string arguments."""
    expected = list(spec.parameters["properties"])
    usage = f"{spec.name}({', '.join(expected)})"
    try:
        value = json.loads(call.arguments or "{}", object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise ToolRefused(f"the argument {exc.args[0]!r} is given twice; call {usage}") from None
    except ValueError as exc:
        raise ToolRefused(f"the arguments are not valid JSON ({exc}); call {usage} with a JSON object") from None
    if not isinstance(value, dict):
        raise ToolRefused(f"the arguments must be a JSON object; call {usage}")
    unexpected = [k for k in value if k not in expected]
    if unexpected:
        raise ToolRefused(f"unexpected argument(s) {', '.join(map(repr, unexpected))}; {spec.name} takes: {usage}")
    missing = [k for k in expected if k not in value]
    if missing:
        raise ToolRefused(f"missing argument(s) {', '.join(map(repr, missing))}; call {usage}")
    wrong = [k for k in expected if not isinstance(value[k], str)]
    if wrong:
        raise ToolRefused(f"argument(s) {', '.join(map(repr, wrong))} must be strings; call {usage}")
    return {k: value[k] for k in expected}


# ----------------------------------------------------------------------------------------------------------
# Paths


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A glob over relative POSIX paths: ``**`` spans directories, ``*`` and ``?`` stay within one name."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass
class ToolBox:
    """Runs tool calls for one attempt of one step, confined to ``workspace``."""

    workspace: Path
    specs: tuple[ToolSpec, ...]
    commands: Mapping[str, CommandGate] = field(default_factory=dict)
    ignore: Sequence[str] = ()
    limits: ToolLimits = field(default_factory=ToolLimits)
    scrub: Callable[[str], str] = lambda text: text
    registry: ProcessRegistry | None = None
    agent: str = ""
    group_file: Path | None = None

    def __post_init__(self) -> None:
        self.root = self.workspace.resolve()
        self._by_name = {spec.name: spec for spec in self.specs}

    async def execute(self, call: ToolCall) -> ToolResult:
        """Run ``call``; every refusal is an error result, never an exception."""
        spec = self._by_name.get(call.name)
        if spec is None:
            offered = ", ".join(self._by_name)
            return ToolResult(f"error: there is no tool {call.name!r}; the tools are: {offered}", is_error=True)
        try:
            args = parse_arguments(call, spec)
            if call.name == "read_file":
                return self._read_file(args["path"])
            if call.name == "list_files":
                return self._list_files(args["glob"])
            if call.name == "write_file":
                return self._write(args["path"], args["content"])
            if call.name == "edit_file":
                return self._edit_file(args["path"], args["old"], args["new"])
            if call.name == "run_command":
                return await self._run_command(args["name"])
            summary = " ".join(args["summary"].split())[:500]
            return ToolResult(f"finished: {summary}" if summary else "finished", finished=True)
        except ToolRefused as exc:
            return ToolResult(self.scrub(f"error: {exc}"), is_error=True)

    # --- paths ----------------------------------------------------------------------------------------

    def resolve(self, rel: str) -> tuple[Path, str]:
        """(real path, workspace-relative POSIX path) of ``rel``, or ``ToolRefused`` saying why not."""
        text = rel.strip()
        if not text:
            raise ToolRefused("the path is empty; give a path relative to the workspace, e.g. src/app.py")
        if "\x00" in text or len(text) > MAX_PATH_CHARS:
            raise ToolRefused("that is not a usable path")
        pure = PurePosixPath(text.replace("\\", "/"))
        if pure.is_absolute() or text.startswith("~"):
            raise ToolRefused(f"{rel!r} is an absolute path; give a path relative to the workspace")
        if ".." in pure.parts:
            raise ToolRefused(f"{rel!r} leads outside the workspace ('..' is not allowed)")
        parts = [p for p in pure.parts if p != "."]
        if not parts:
            raise ToolRefused(f"{rel!r} is the workspace itself, not a file in it")
        self._check_ignored(parts, rel)
        target = Path(os.path.realpath(self.root.joinpath(*parts)))
        if target != self.root and self.root not in target.parents:
            raise ToolRefused(f"{rel!r} leads outside the workspace (through a symlink)")
        inside = target.relative_to(self.root).parts
        if not inside:
            raise ToolRefused(f"{rel!r} is the workspace itself, not a file in it")
        self._check_ignored(list(inside), rel)
        return target, "/".join(inside)

    def _check_ignored(self, parts: Sequence[str], rel: str) -> None:
        hidden = sorted(set(self.ignore) & set(parts))
        if hidden:
            raise ToolRefused(
                f"{rel!r} is inside {hidden[0]}, which the workspace snapshot leaves out (a change there could not "
                "be undone); the tools cannot touch it"
            )

    # --- the tools ------------------------------------------------------------------------------------

    def _read_file(self, rel: str) -> ToolResult:
        path, shown = self.resolve(rel)
        if path.is_dir():
            raise ToolRefused(f"{shown} is a directory; use list_files")
        if not path.is_file():
            raise ToolRefused(f"no such file: {shown} (list_files shows what exists)")
        size = path.stat().st_size
        if size > self.limits.max_read_bytes:
            raise ToolRefused(
                f"{shown} is {size:,} bytes, over the {self.limits.max_read_bytes:,}-byte read limit; it cannot "
                "be read whole (limits.max_tool_read_bytes)"
            )
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ToolRefused(f"{shown} is not UTF-8 text") from None
        return ToolResult(self.scrub(text))

    def _list_files(self, glob: str) -> ToolResult:
        pattern = glob.strip().replace("\\", "/").removeprefix("./")
        if not pattern:
            raise ToolRefused('the glob is empty; "*" lists the top level, "**/*" everything')
        pure = PurePosixPath(pattern)
        if pure.is_absolute() or pattern.startswith("~"):
            raise ToolRefused(f"{glob!r} is absolute; give a glob relative to the workspace")
        if ".." in pure.parts:
            raise ToolRefused(f"{glob!r} leads outside the workspace ('..' is not allowed)")
        regex = _glob_regex(pattern)
        ignored = set(self.ignore)
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if d not in ignored)
            base = Path(dirpath)
            for name in sorted(filenames):
                full = base / name
                rel = full.relative_to(self.root).as_posix()
                if not regex.match(rel):
                    continue
                if full.is_symlink():
                    real = Path(os.path.realpath(full))
                    if real != self.root and self.root not in real.parents:
                        continue  # leads out: not part of the workspace as far as the tools go
                found.append(rel)
        if not found:
            return ToolResult(f"no files match {pattern!r}")
        shown = [f"{rel} ({self._size(rel)})" for rel in found[:MAX_LISTED_FILES]]
        if len(found) > MAX_LISTED_FILES:
            shown.append(f"… and {len(found) - MAX_LISTED_FILES} more (narrow the glob)")
        return ToolResult("\n".join(shown))

    def _size(self, rel: str) -> str:
        try:
            return f"{(self.root / rel).stat().st_size:,} bytes"
        except OSError:
            return "unreadable"

    def _write(self, rel: str, content: str, *, verb: str = "wrote") -> ToolResult:
        path, shown = self.resolve(rel)
        data = content.encode("utf-8")
        if len(data) > self.limits.max_write_bytes:
            raise ToolRefused(
                f"that would make {shown} {len(data):,} bytes, over the {self.limits.max_write_bytes:,}-byte write "
                "limit (limits.max_tool_write_bytes); nothing was written"
            )
        if path.is_dir():
            raise ToolRefused(f"{shown} is a directory")
        parent = path.parent
        # Every directory on the way must be a real directory inside the workspace (resolve() checked the
        # deepest existing one; a file in the way is reported instead of crashing).
        for ancestor in [parent, *parent.parents]:
            if ancestor == self.root:
                break
            if ancestor.exists() and not ancestor.is_dir():
                raise ToolRefused(f"cannot write {shown}: {ancestor.relative_to(self.root).as_posix()} is a file")
        existed = path.exists()
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise ToolRefused(f"cannot write {shown}: {exc.strerror or exc}") from None
        lines = content.count("\n") + (0 if content.endswith("\n") or not content else 1)
        what = "replaced" if verb == "edited" else ("overwrote" if existed else "created")
        return ToolResult(f"{what} {shown}: {len(data):,} bytes, {lines} lines", changed=(shown,))

    def _edit_file(self, rel: str, old: str, new: str) -> ToolResult:
        path, shown = self.resolve(rel)
        if not path.is_file():
            raise ToolRefused(f"no such file: {shown} (write_file creates a file)")
        if path.stat().st_size > self.limits.max_write_bytes:
            raise ToolRefused(f"{shown} is over the {self.limits.max_write_bytes:,}-byte write limit")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise ToolRefused(f"{shown} is not UTF-8 text") from None
        if not old:
            raise ToolRefused("`old` is empty; give the exact text to replace")
        count = text.count(old)
        if count == 0:
            raise ToolRefused(f"`old` was not found in {shown}; read_file shows its exact text")
        if count > 1:
            raise ToolRefused(
                f"`old` appears {count} times in {shown}; include more surrounding text so it appears once"
            )
        result = self._write(shown, text.replace(old, new, 1), verb="edited")
        return ToolResult(f"edited {shown}: replaced 1 span", changed=result.changed)

    async def _run_command(self, name: str) -> ToolResult:
        command = self.commands.get(name)
        if command is None:
            allowed = ", ".join(self.commands) or "none"
            raise ToolRefused(f"{name!r} is not an allowed command; run_command takes a name, one of: {allowed}")
        result = await run_command(
            command.cmd,
            self.root,
            timeout_s=command.timeout_s,
            capture_bytes=self.limits.capture_bytes,
            registry=self.registry,
            agent=self.agent,
            group_file=self.group_file,
        )
        status = f"timed out after {command.timeout_s:g}s" if result.timed_out else f"exit {result.exit_code}"
        output = result.output.rstrip()
        limit = self.limits.max_output_chars
        head = ""
        if len(output) > limit:
            head = f"[{len(output[:-limit].encode('utf-8')):,} earlier bytes not shown]\n"
            output = output[-limit:]
        tail = f"\n[{result.truncated_bytes:,} more bytes not captured]" if result.truncated_bytes else ""
        body = f"{head}{output}{tail}" if output else "(no output)"
        return ToolResult(self.scrub(f"[{status}] $ {command.cmd}\n{body}"))
