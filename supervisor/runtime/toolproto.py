"""The JSON-in-text tool protocol, for models without native tool calling (the embedded SmolLM2, MLX models).

The prompt offers the tools as text (``render_tools``); the model answers each turn with ONE call written as
JSON; ``parse_reply`` reads it strictly into a ``ToolCall``, or raises ``ToolProtocolError`` saying exactly
what is wrong, so the model can be told and try again. Nothing is guessed: there is no searching the text for
something that looks like an object, and no repair of broken JSON.

What ``parse_reply`` accepts, after removing whitespace at both ends of the reply:

1. Either the whole reply is one JSON value, or the whole reply is one fenced block: a first line that is three
   backticks, optionally followed by ``json`` (any case), then the JSON value on the following lines, then a
   last line that is three backticks. Nothing may come before or after the value or the block; a fence line
   may carry trailing spaces.
2. The JSON is strict (RFC 8259): no single quotes, no trailing commas, no comments, no ``NaN`` or
   ``Infinity``, and no key twice in one object.
3. The value is one object with the key ``"tool"``, a string that is exactly the name of an offered tool, and
   optionally ``"arguments"``, an object (absent means ``{}``). Any other key is an error: a model that writes
   ``{"tool": "read_file", "path": "a.py"}`` is told to put ``path`` inside ``"arguments"``.

One call per reply: a list of calls, or two objects, is an error. Whether the arguments fit the tool's schema
is for whoever runs the tool to check, as for native calls. The call's ``arguments`` is the arguments object
serialized again (``json.dumps``, non-ASCII kept), so its text is canonical, not the model's spacing.

``render_result`` writes a tool's result (or error) as the text of the next user turn, and ``render_error``
tells the model why its last reply was not a call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final, Literal

from supervisor.backends.base import ToolCall, ToolSpec
from supervisor.errors import SupervisorError

TOOL_KEY: Final = "tool"
ARGUMENTS_KEY: Final = "arguments"
FENCE: Final = "```"
_OPENING_FENCE: Final = re.compile(r"```[ \t]*(?:json)?[ \t]*", re.IGNORECASE)
_CLOSING_FENCE: Final = re.compile(r"```[ \t]*")
FORMAT_HINT: Final = 'reply with only one JSON object: {"tool": "<tool name>", "arguments": {...}}'

Reason = Literal[
    "empty",  # nothing but whitespace
    "fence",  # a ``` block that is not one well-formed block
    "text_around",  # prose before or after the JSON value or the block
    "not_json",  # not a JSON value
    "not_object",  # JSON, but not an object (e.g. a list of calls)
    "duplicate_key",  # a key twice in one object
    "no_tool",  # no "tool" key
    "tool_not_string",  # "tool" is not a string
    "unknown_tool",  # "tool" names no offered tool
    "unexpected_key",  # a key other than "tool" and "arguments"
    "arguments_not_object",  # "arguments" is not an object
]


class ToolProtocolError(SupervisorError):
    """A reply that is not a valid call. ``reason`` is a stable short name (for the ledger and tests); the
    message is written for the model, which gets it back as the result of its turn."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message, FORMAT_HINT)
        self.reason: Reason = reason


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unfence(text: str) -> str | None:
    """The body of the reply's one fenced block; ``None`` when the reply does not start with a fence."""
    if not text.startswith(FENCE):
        return None
    lines = text.split("\n")
    if not _OPENING_FENCE.fullmatch(lines[0].rstrip("\r")):
        raise ToolProtocolError(
            "fence", "the opening ``` must be alone on its line (optionally as ```json), with the JSON below it"
        )
    closing = next((i for i, line in enumerate(lines[1:], 1) if _CLOSING_FENCE.fullmatch(line.rstrip("\r"))), None)
    if closing is None:
        raise ToolProtocolError("fence", "the ``` block is not closed by a line of three backticks")
    if closing != len(lines) - 1:
        after = "another ``` block" if any(FENCE in line for line in lines[closing + 1 :]) else "text"
        raise ToolProtocolError("text_around", f"the reply has {after} after its ``` block; send exactly one call")
    return "\n".join(lines[1:closing])


def _loads(text: str, fenced: bool) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_object_without_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        raise ToolProtocolError("duplicate_key", f"the key {exc.args[0]!r} appears twice in one object") from None
    except json.JSONDecodeError as exc:
        where = f"(line {exc.lineno}, column {exc.colno})"
        if exc.msg == "Extra data":
            raise ToolProtocolError(
                "text_around",
                f"the reply goes on after the JSON value {where}; send exactly one JSON object and nothing after it",
            ) from None
        if not fenced and FENCE in text:
            raise ToolProtocolError(
                "text_around", "the reply has text outside its ``` block; send the block (or the JSON) alone"
            ) from None
        if exc.pos == 0 and text.lstrip()[:1] not in ("{", "[", '"'):
            raise ToolProtocolError(
                "text_around" if "{" in text else "not_json",
                "the reply does not start with a JSON object; send the JSON object alone, without words around it",
            ) from None
        raise ToolProtocolError("not_json", f"the reply is not valid JSON: {exc.msg} {where}") from None
    except ValueError as exc:  # NaN / Infinity
        raise ToolProtocolError("not_json", f"the reply is not valid JSON: {exc}") from None


def parse_reply(text: str, tools: Sequence[ToolSpec], *, call_id: str = "call_0") -> ToolCall:
    """Read one reply as one call to one of ``tools`` (see the module docstring for exactly what is accepted).

    ``call_id`` becomes the call's id (the text protocol has none): the caller numbers its turns.
    """
    stripped = text.strip()
    if not stripped:
        raise ToolProtocolError("empty", "the reply is empty")
    body = _unfence(stripped)
    value = _loads(stripped if body is None else body, fenced=body is not None)
    if isinstance(value, list):
        raise ToolProtocolError(
            "not_object", "the reply is a JSON list; make exactly one call per reply, as one object"
        )
    if not isinstance(value, dict):
        raise ToolProtocolError("not_object", f"the reply is a JSON {_json_type(value)}, not an object")
    if TOOL_KEY not in value:
        keys = ", ".join(repr(k) for k in value) or "none"
        raise ToolProtocolError("no_tool", f'the object has no "tool" key (its keys: {keys})')
    name = value[TOOL_KEY]
    if not isinstance(name, str):
        raise ToolProtocolError(
            "tool_not_string", f'"tool" must be a tool\'s name as a string, not a {_json_type(name)}'
        )
    offered = [tool.name for tool in tools]
    if name not in offered:
        raise ToolProtocolError(
            "unknown_tool", f"there is no tool {name!r}; the tools are: {', '.join(offered) or '(none)'}"
        )
    extra = [key for key in value if key not in (TOOL_KEY, ARGUMENTS_KEY)]
    if extra:
        listed = ", ".join(repr(k) for k in extra)
        raise ToolProtocolError(
            "unexpected_key",
            f'unexpected key(s) {listed} next to "tool"; the tool\'s arguments go inside "arguments": {{...}}',
        )
    arguments = value.get(ARGUMENTS_KEY, {})
    if not isinstance(arguments, dict):
        raise ToolProtocolError(
            "arguments_not_object", f'"arguments" must be a JSON object, not a {_json_type(arguments)}'
        )
    return ToolCall(id=call_id, name=name, arguments=json.dumps(arguments, ensure_ascii=False))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"


# ----------------------------------------------------------------------------------------------------------
# Prompt text


def _type_name(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("enum"), list):
        return "|".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind)
    return str(kind) if isinstance(kind, str) else "any"


def _placeholder(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    if isinstance(schema, dict) and isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    return {"integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}.get(str(kind), "...")


def signature(tool: ToolSpec) -> str:
    """``name(arg: type, optional?: type)`` from the tool's JSON Schema."""
    properties = tool.parameters.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = tool.parameters.get("required")
    required = set(required) if isinstance(required, list) else set()
    params = [f"{arg}{'' if arg in required else '?'}: {_type_name(schema)}" for arg, schema in properties.items()]
    return f"{tool.name}({', '.join(params)})"


def example_call(tool: ToolSpec) -> str:
    """A call of ``tool`` with placeholder values for its required arguments, exactly as a reply should be."""
    properties = tool.parameters.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = tool.parameters.get("required")
    names = [n for n in properties if isinstance(required, list) and n in required]
    arguments = {name: _placeholder(properties[name]) for name in names}
    return json.dumps({TOOL_KEY: tool.name, ARGUMENTS_KEY: arguments}, ensure_ascii=False)


def render_tools(tools: Sequence[ToolSpec]) -> str:
    """The tools and the reply format, as prompt text short enough for a small model to follow."""
    if not tools:
        raise ValueError("render_tools needs at least one tool")
    lines = [
        "You can use tools. To use one, reply with only a JSON object, nothing else, like this:",
        example_call(tools[0]),
        "One tool per reply. The result comes in the next message.",
        "",
        "Tools:",
    ]
    lines.extend(f"- {signature(tool)}: {tool.description}" for tool in tools)
    return "\n".join(lines)


def render_result(call: ToolCall, content: str, *, is_error: bool = False) -> str:
    """A tool's result as the text of the next user turn."""
    head = f"Error from {call.name}:" if is_error else f"Result of {call.name}:"
    return f"{head}\n{content}"


def render_error(error: ToolProtocolError) -> str:
    """What the model is told when its reply was not a call."""
    return f"Your reply was not a valid tool call: {error.message}. Please {FORMAT_HINT}."
