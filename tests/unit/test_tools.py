"""The built-in worker's tools on a real workspace: confinement, size limits, exact edits, allowlisted commands.

Every refusal must come back as an error result the model can read (never an exception) and leave nothing
outside the workspace changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from supervisor.backends.base import ToolCall
from supervisor.config import TOOL_NAMES, CommandGate
from supervisor.runtime.process import ProcessRegistry
from supervisor.runtime.tools import ToolBox, ToolLimits, tool_specs
from tests.helpers import tree_digest

IGNORE = (".git", ".venv", "node_modules")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the workspace with a secret in it: no tool may read or change it."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_text("the launch codes\n")
    return d


@pytest.fixture
def ws(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def f():\n    return 1\n\n\ndef g():\n    return 1\n")
    (root / "README.md").write_text("# app\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (root / "link_out").symlink_to(outside / "secret.txt")
    (root / "dir_out").symlink_to(outside, target_is_directory=True)
    (root / "link_in").symlink_to(root / "README.md")
    return root


def box(ws: Path, *, commands: dict[str, CommandGate] | None = None, **limits: Any) -> ToolBox:
    commands = commands or {}
    return ToolBox(
        ws,
        tool_specs(TOOL_NAMES, commands) if commands else tool_specs(TOOL_NAMES[:4], {}),
        commands=commands,
        ignore=IGNORE,
        limits=ToolLimits(**limits),
        registry=ProcessRegistry(),
        agent="a",
    )


def call(tool: str, /, **arguments: Any) -> ToolCall:
    return ToolCall("call_1", tool, json.dumps(arguments))


def test_specs_have_exactly_the_documented_names_and_arguments() -> None:
    specs = tool_specs(TOOL_NAMES, {"test": CommandGate(cmd="pytest -q")})
    shape = {s.name: (s.parameters["required"], s.parameters["additionalProperties"]) for s in specs}
    assert shape == {
        "read_file": (["path"], False),
        "list_files": (["glob"], False),
        "write_file": (["path", "content"], False),
        "edit_file": (["path", "old", "new"], False),
        "run_command": (["name"], False),
        "finish": (["summary"], False),
    }
    run = next(s for s in specs if s.name == "run_command")
    assert run.parameters["properties"]["name"]["enum"] == ["test"]
    assert "test: pytest -q" in run.description
    # finish is always offered, whatever the step lists
    assert [s.name for s in tool_specs(["read_file"], {})] == ["read_file", "finish"]


async def test_read_list_write_and_edit_inside_the_workspace(ws: Path) -> None:
    tools = box(ws)
    read = await tools.execute(call("read_file", path="src/app.py"))
    assert read.content.startswith("def f():")
    assert not read.is_error

    listed = await tools.execute(call("list_files", glob="**/*.py"))
    assert listed.content == "src/app.py (46 bytes)"
    top = await tools.execute(call("list_files", glob="*"))
    # the top level only; the ignored .git and the symlink that leads out are not listed
    assert top.content.splitlines() == ["README.md (6 bytes)", "link_in (6 bytes)"]

    wrote = await tools.execute(call("write_file", path="new/dir/b.py", content="x = 1\n"))
    assert wrote.content == "created new/dir/b.py: 6 bytes, 1 lines"
    assert wrote.changed == ("new/dir/b.py",)
    assert (ws / "new" / "dir" / "b.py").read_text() == "x = 1\n"

    edited = await tools.execute(
        call("edit_file", path="src/app.py", old="def f():\n    return 1", new="def f():\n    return 2")
    )
    assert edited.content == "edited src/app.py: replaced 1 span"
    assert not edited.is_error
    assert (ws / "src" / "app.py").read_text().startswith("def f():\n    return 2\n")

    finished = await tools.execute(call("finish", summary="made f return 2"))
    assert finished.finished
    assert finished.content == "finished: made f return 2"


async def test_edit_file_replaces_exactly_one_unique_span(ws: Path) -> None:
    tools = box(ws)
    before = (ws / "src" / "app.py").read_bytes()
    twice = await tools.execute(call("edit_file", path="src/app.py", old="return 1", new="return 2"))
    assert twice.is_error
    assert "appears 2 times" in twice.content
    missing = await tools.execute(call("edit_file", path="src/app.py", old="return 3", new="return 2"))
    assert missing.is_error
    assert "not found" in missing.content
    empty = await tools.execute(call("edit_file", path="src/app.py", old="", new="x"))
    assert empty.is_error
    assert "empty" in empty.content
    assert (ws / "src" / "app.py").read_bytes() == before


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("read_file", {"path": "/etc/passwd"}, "absolute path"),
        ("read_file", {"path": "~/.ssh/id_rsa"}, "absolute path"),
        ("read_file", {"path": "../outside/secret.txt"}, "'..' is not allowed"),
        ("read_file", {"path": "src/../../outside/secret.txt"}, "'..' is not allowed"),
        ("read_file", {"path": "link_out"}, "through a symlink"),
        ("read_file", {"path": "dir_out/secret.txt"}, "through a symlink"),
        ("read_file", {"path": ".git/config"}, "inside .git"),
        ("read_file", {"path": "."}, "the workspace itself"),
        ("read_file", {"path": ""}, "the path is empty"),
        ("list_files", {"glob": "/etc/*"}, "absolute"),
        ("list_files", {"glob": "../*"}, "'..' is not allowed"),
        ("write_file", {"path": "/tmp/evil.txt", "content": "x"}, "absolute path"),
        ("write_file", {"path": "../outside/secret.txt", "content": "x"}, "'..' is not allowed"),
        ("write_file", {"path": "link_out", "content": "pwned"}, "through a symlink"),
        ("write_file", {"path": "dir_out/new.txt", "content": "pwned"}, "through a symlink"),
        ("write_file", {"path": ".git/hooks/pre-commit", "content": "rm -rf /"}, "inside .git"),
        ("edit_file", {"path": "link_out", "old": "launch", "new": "pwned"}, "through a symlink"),
    ],
)
async def test_paths_cannot_escape_the_workspace(
    ws: Path, outside: Path, tool: str, arguments: dict[str, str], expected: str
) -> None:
    before_ws, before_out = tree_digest(ws), tree_digest(outside)
    result = await box(ws).execute(call(tool, **arguments))
    assert result.is_error
    assert result.content.startswith("error: ")
    assert expected in result.content
    assert tree_digest(ws) == before_ws
    assert tree_digest(outside) == before_out
    assert not Path("/tmp/evil.txt").exists()


async def test_a_symlink_that_stays_inside_is_followed(ws: Path) -> None:
    result = await box(ws).execute(call("read_file", path="link_in"))
    assert result.content == "# app\n"


async def test_size_limits_refuse_whole_never_truncate(ws: Path) -> None:
    (ws / "big.txt").write_text("a" * 2000)
    tools = box(ws, max_read_bytes=1000, max_write_bytes=1000)
    read = await tools.execute(call("read_file", path="big.txt"))
    assert read.is_error
    assert "2,000 bytes, over the 1,000-byte read limit" in read.content
    huge = await tools.execute(call("write_file", path="huge.bin", content="z" * 50_000))
    assert huge.is_error
    assert "over the 1,000-byte write limit" in huge.content
    assert "nothing was written" in huge.content
    assert not (ws / "huge.bin").exists()
    (ws / "small.txt").write_text("x" * 900)
    grow = await tools.execute(call("edit_file", path="small.txt", old="x" * 900, new="y" * 1200))
    assert grow.is_error
    assert (ws / "small.txt").read_text() == "x" * 900
    (ws / "bin.dat").write_bytes(b"\xff\xfe\x00")
    binary = await tools.execute(call("read_file", path="bin.dat"))
    assert binary.is_error
    assert "not UTF-8" in binary.content


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"path": "src/app.py"', "not valid JSON"),
        ('["src/app.py"]', "must be a JSON object"),
        ('{"path": "a", "path": "b"}', "given twice"),
        ('{"file": "src/app.py"}', "unexpected argument(s) 'file'"),
        ("{}", "missing argument(s) 'path'"),
        ('{"path": 3}', "must be strings"),
    ],
)
async def test_malformed_arguments_are_refused_with_the_usage(ws: Path, arguments: str, expected: str) -> None:
    result = await box(ws).execute(ToolCall("c", "read_file", arguments))
    assert result.is_error
    assert expected in result.content
    assert "read_file(path)" in result.content


async def test_an_unknown_tool_is_refused_with_the_list(ws: Path) -> None:
    result = await box(ws).execute(call("delete_everything", path="."))
    assert result.is_error
    assert result.content == (
        "error: there is no tool 'delete_everything'; the tools are: read_file, list_files, write_file, "
        "edit_file, finish"
    )


async def test_run_command_runs_only_allowlisted_names(ws: Path, outside: Path) -> None:
    commands = {
        "count": CommandGate(cmd="ls src | wc -l"),
        "fail": CommandGate(cmd="echo broken >&2; exit 3"),
        "slow": CommandGate(cmd="sleep 30", timeout_s=0.5),
    }
    tools = box(ws, commands=commands)
    ok = await tools.execute(call("run_command", name="count"))
    assert ok.content == "[exit 0] $ ls src | wc -l\n1"
    assert not ok.is_error
    failed = await tools.execute(call("run_command", name="fail"))
    assert failed.content == "[exit 3] $ echo broken >&2; exit 3\nbroken"
    assert not failed.is_error
    slow = await tools.execute(call("run_command", name="slow"))
    assert "[timed out after 0.5s]" in slow.content
    before = tree_digest(outside)
    refused = await tools.execute(call("run_command", name="rm -rf ../outside"))
    assert refused.is_error
    assert "'rm -rf ../outside' is not an allowed command" in refused.content
    assert "count, fail, slow" in refused.content
    assert tree_digest(outside) == before


async def test_run_command_keeps_the_tail_of_long_output(ws: Path) -> None:
    commands = {"noisy": CommandGate(cmd="seq 1 5000")}
    result = await box(ws, commands=commands, max_output_chars=200).execute(call("run_command", name="noisy"))
    lines = result.content.splitlines()
    assert lines[0] == "[exit 0] $ seq 1 5000"
    assert lines[1].startswith("[")
    assert lines[1].endswith("earlier bytes not shown]")
    assert lines[-1] == "5000"
    assert len(result.content) < 400


async def test_results_are_scrubbed_of_secrets(ws: Path) -> None:
    (ws / ".env.example").write_text("KEY=sk-live-123456\n")
    tools = box(ws)
    tools.scrub = lambda text: text.replace("sk-live-123456", "[redacted]")
    result = await tools.execute(call("read_file", path=".env.example"))
    assert result.content == "KEY=[redacted]\n"


async def test_writing_where_a_file_is_in_the_way_is_an_error_not_a_crash(ws: Path) -> None:
    result = await box(ws).execute(call("write_file", path="README.md/inner.txt", content="x"))
    assert result.is_error
    assert "README.md is a file" in result.content
    assert os.path.isfile(ws / "README.md")
