"""Failure feedback: real gates in real child processes (python tracebacks, pytest), reduced for a retry prompt."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from supervisor.config import CommandGate, JsonSchemaGate
from supervisor.runtime.feedback import digest_entry, reduce_failure, strip_machine_paths
from supervisor.runtime.verify import run_gate

PY = sys.executable
SHOWN_PY = strip_machine_paths(PY)  # the interpreter's own path is a machine path too


async def gate_detail(workspace: Path, gate: CommandGate | JsonSchemaGate, answer: str | None = None) -> str:
    """What the runtime hands to the retry prompt: ``"<gate>\\n<output>"`` of a failing gate."""
    result = await run_gate(gate, answer=answer, workspace=workspace, capture_bytes=64_000)
    assert not result.passed
    return f"{result.gate}\n{result.output}"


def write(workspace: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (workspace / name).write_text(text)


TEST_PAL = """\
from pal import is_palindrome

cases = {"A man, a plan, a canal: Panama": True, "race a car": False}
for text, want in cases.items():
    got = is_palindrome(text)
    assert got is want, f"is_palindrome({text!r}) returned {got!r}, expected {want!r}"
"""


async def test_assertion_traceback_keeps_the_exception_and_the_workspace_frame(tmp_path: Path) -> None:
    write(tmp_path, {"pal.py": "def is_palindrome(s):\n    return s == s[::-1]\n", "test_pal.py": TEST_PAL})
    detail = await gate_detail(tmp_path, CommandGate(cmd=f"{PY} test_pal.py"))
    assert str(tmp_path) in detail
    assert detail.count("test_pal.py") >= 3
    reduced = reduce_failure(detail, workspace=tmp_path)
    assert reduced.splitlines()[0] == f"`{SHOWN_PY} test_pal.py` failed (exit 1):"
    assert "AssertionError: is_palindrome('A man, a plan, a canal: Panama') returned False, expected True" in reduced
    assert "at test_pal.py, line 6, in <module>: assert got is want" in reduced
    assert str(tmp_path) not in reduced
    assert "Traceback" not in reduced
    assert "^^^" not in reduced
    assert reduced.count("test_pal.py`") == 1  # the command once
    assert len(reduced) < len(detail) * 0.6


async def test_frames_outside_the_workspace_are_dropped(tmp_path: Path) -> None:
    """json.load on a broken file: four frames in the interpreter's json package, one in the workspace."""
    write(tmp_path, {"check.py": 'import json\ndata = json.load(open("out.json"))\n', "out.json": '{"a":\n'})
    detail = await gate_detail(tmp_path, CommandGate(cmd=f"{PY} check.py"))
    assert "json/decoder.py" in detail
    reduced = reduce_failure(detail, workspace=tmp_path)
    assert "JSONDecodeError: Expecting value: line 2 column 1 (char 6)" in reduced
    assert "at check.py, line 2, in <module>: data = json.load" in reduced
    assert "decoder.py" not in reduced
    assert "/" not in reduced.replace("/ ", "")


async def test_error_raised_inside_the_answer_shows_both_frames(tmp_path: Path) -> None:
    write(
        tmp_path,
        {"add.py": "def add(a, b):\n    return a + c\n", "t.py": "from add import add\nassert add(1, 2) == 3\n"},
    )
    reduced = reduce_failure(await gate_detail(tmp_path, CommandGate(cmd=f"{PY} t.py")), workspace=tmp_path)
    assert reduced.splitlines()[1] == "NameError: name 'c' is not defined"
    assert "at t.py, line 2, in <module>: assert add(1, 2) == 3" in reduced
    assert "at add.py, line 2, in add: return a + c" in reduced


async def test_syntax_error_in_the_answer(tmp_path: Path) -> None:
    write(tmp_path, {"add.py": "def add(a, b):\n    return a +\n", "t.py": "from add import add\n"})
    reduced = reduce_failure(await gate_detail(tmp_path, CommandGate(cmd=f"{PY} t.py")), workspace=tmp_path)
    assert "SyntaxError: invalid syntax" in reduced
    assert "at add.py, line 2: return a +" in reduced


async def test_pytest_output_becomes_the_failing_assertions(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "add.py": "def add(a, b):\n    return a - b\n",
            "test_add.py": (
                "from add import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n\n\n"
                "def test_neg():\n    assert add(-1, -2) == -3\n\n\ndef test_zero():\n    assert add(0, 0) == 0\n"
            ),
        },
    )
    detail = await gate_detail(tmp_path, CommandGate(cmd=f"{PY} -m pytest -p no:cacheprovider test_add.py"))
    assert "test session starts" in detail
    reduced = reduce_failure(detail, workspace=tmp_path)
    lines = reduced.splitlines()
    assert "FAILED test_add.py::test_add - assert -1 == 3" in lines
    assert "FAILED test_add.py::test_neg - assert 1 == -3" in lines
    assert "E        +  where -1 = add(1, 2)" in lines
    assert "  at test_add.py:5" in lines
    assert lines[-1].startswith("2 failed, 1 passed")
    assert "test session starts" not in reduced
    assert "def test_add" not in reduced


async def test_other_gates_keep_their_message(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"type": "object", "required": ["name"]}')
    detail = await gate_detail(tmp_path, JsonSchemaGate(json_schema="s.json"), answer='{"nome": 1}')
    assert reduce_failure(detail, workspace=tmp_path) == (
        "json_schema: s.json\nthe answer does not match the schema:\nat (root): 'name' is a required property"
    )


async def test_long_output_is_cut_at_the_documented_limit(tmp_path: Path) -> None:
    write(tmp_path, {"noisy.py": "for i in range(500):\n    print('line', i, 'x' * 60)\nraise SystemExit(3)\n"})
    reduced = reduce_failure(await gate_detail(tmp_path, CommandGate(cmd=f"{PY} noisy.py")), limit=300)
    assert len(reduced) <= 300
    assert reduced.startswith(f"`{SHOWN_PY} noisy.py` failed (exit 3):\n…")


def test_timeout_head() -> None:
    assert reduce_failure("cmd: sleep 9\n$ sleep 9\n[timed out]\n") == "`sleep 9` timed out"


async def test_digest_entry_is_one_short_line_without_machine_paths(tmp_path: Path) -> None:
    write(tmp_path, {"pal.py": "def is_palindrome(s):\n    return s == s[::-1]\n", "test_pal.py": TEST_PAL})
    detail = await gate_detail(tmp_path, CommandGate(cmd=f"{PY} test_pal.py"))
    entry = digest_entry(detail)  # the digest does not know the workspace: paths are cut anyway
    assert "\n" not in entry
    assert len(entry) <= 200
    assert "/" not in entry
    assert entry.startswith("`python")
    assert "AssertionError: is_palindrome(" in entry
    missing = (
        "the embedded model smollm2-135m is not on this machine yet (expected /home/u/.local/share/x/SmolLM2.gguf)"
    )
    assert digest_entry(missing) == "the embedded model smollm2-135m is not on this machine yet (expected SmolLM2.gguf)"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("/usr/lib/python3.11/json/decoder.py", "decoder.py"),
        ("see /tmp/x/ws/add.py, line 3", "see add.py, line 3"),
        ("a/b relative/path.py stays", "a/b relative/path.py stays"),
        ("https://example.org/a/b stays", "https://example.org/a/b stays"),
    ],
)
def test_strip_machine_paths(text: str, want: str) -> None:
    assert strip_machine_paths(text) == want
