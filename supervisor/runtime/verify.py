"""Deterministic verify gates: a command's exit code, a JSON schema, a regex, or "the Python compiles".

Gates decide whether cheap work is accepted. They never call a model. Content gates (schema, regex, compiles)
check the step's answer; command gates run in the workspace after the answer is written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from supervisor.config import CommandGate, Gate, JsonSchemaGate, PythonCompilesGate, RegexGate
from supervisor.runtime.process import ProcessRegistry, run_command
from supervisor.runtime.workspace import WorkspaceError, resolve_inside


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: str  # a short description: "cmd: pytest -q", "json_schema: out.schema.json", ...
    passed: bool
    output: str  # why it failed (or a short note when it passed)


def describe(gate: Gate) -> str:
    if isinstance(gate, CommandGate):
        return f"cmd: {gate.cmd}"
    if isinstance(gate, JsonSchemaGate):
        return f"json_schema: {gate.json_schema}"
    if isinstance(gate, RegexGate):
        return f"regex: {gate.regex}"
    return "python_compiles"


def check_json_schema(answer: str, schema_path: Path) -> GateResult:
    import jsonschema

    label = f"json_schema: {schema_path.name}"
    try:
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return GateResult(label, False, f"cannot read the schema {schema_path}: {exc}")
    try:
        document = json.loads(answer)
    except json.JSONDecodeError as exc:
        return GateResult(label, False, f"the answer is not valid JSON: {exc}")
    validator_cls = jsonschema.validators.validator_for(schema)
    try:
        validator_cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return GateResult(label, False, f"the schema itself is invalid: {exc.message}")
    errors = sorted(validator_cls(schema).iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"at {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors[:10]]
        more = f"\n(and {len(errors) - 10} more)" if len(errors) > 10 else ""
        return GateResult(label, False, "the answer does not match the schema:\n" + "\n".join(lines) + more)
    return GateResult(label, True, "valid")


def check_regex(answer: str, pattern: str) -> GateResult:
    label = f"regex: {pattern}"
    if re.search(pattern, answer, flags=re.MULTILINE):
        return GateResult(label, True, "matched")
    return GateResult(label, False, f"the answer does not match /{pattern}/")


def check_python_compiles(answer: str, filename: str = "<answer>") -> GateResult:
    try:
        compile(answer, filename, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return GateResult("python_compiles", False, f"SyntaxError: {exc.msg} (line {exc.lineno})")
    except ValueError as exc:  # e.g. null bytes
        return GateResult("python_compiles", False, f"not compilable: {exc}")
    return GateResult("python_compiles", True, "compiles")


async def run_gate(
    gate: Gate,
    *,
    answer: str | None,
    workspace: Path,
    capture_bytes: int,
    registry: ProcessRegistry | None = None,
    agent: str = "",
    group_file: Path | None = None,
) -> GateResult:
    """Run one gate. ``answer`` is the step's text (``None`` for a `run` step, where content gates read nothing)."""
    if isinstance(gate, CommandGate):
        result = await run_command(
            gate.cmd,
            workspace,
            timeout_s=gate.timeout_s,
            capture_bytes=capture_bytes,
            registry=registry,
            agent=agent,
            group_file=group_file,
        )
        return GateResult(describe(gate), result.ok, result.summary())
    text = answer or ""
    if isinstance(gate, JsonSchemaGate):
        try:
            schema_path = resolve_inside(workspace, gate.json_schema)
        except WorkspaceError as exc:
            return GateResult(describe(gate), False, exc.message)
        return check_json_schema(text, schema_path)
    if isinstance(gate, RegexGate):
        return check_regex(text, gate.regex)
    if isinstance(gate, PythonCompilesGate):
        return check_python_compiles(text)
    raise AssertionError(f"unknown gate {gate!r}")  # pragma: no cover - the config union is closed
