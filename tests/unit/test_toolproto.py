"""The JSON-in-text tool protocol: every rule of what ``parse_reply`` accepts, on replies small models write."""

from __future__ import annotations

import json

import pytest

from supervisor.backends.base import ToolCall, ToolSpec
from supervisor.runtime.toolproto import (
    ToolProtocolError,
    example_call,
    parse_reply,
    render_error,
    render_result,
    render_tools,
    signature,
)

TOOLS = (
    ToolSpec(
        "read_file",
        "Read a file in the workspace.",
        {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    ),
    ToolSpec(
        "edit_file",
        "Replace one unique span of a file.",
        {
            "type": "object",
            "properties": {"path": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}},
            "required": ["path", "old", "new"],
        },
    ),
    ToolSpec(
        "run_command",
        "Run one of the step's named commands.",
        {"type": "object", "properties": {"name": {"type": "string", "enum": ["test", "lint"]}}, "required": ["name"]},
    ),
    ToolSpec(
        "list_files",
        "List files matching a glob.",
        {"type": "object", "properties": {"glob": {"type": "string"}, "limit": {"type": "integer"}}},
    ),
    ToolSpec("finish", "Say you are done.", {"type": "object", "properties": {"summary": {"type": "string"}}}),
)


def call(text: str, call_id: str = "call_0") -> ToolCall:
    return parse_reply(text, TOOLS, call_id=call_id)


def refused(text: str) -> ToolProtocolError:
    with pytest.raises(ToolProtocolError) as info:
        parse_reply(text, TOOLS)
    return info.value


# --- accepted ------------------------------------------------------------------------------------------------


def test_a_bare_object_is_one_call() -> None:
    assert call('{"tool": "read_file", "arguments": {"path": "src/app.py"}}', "call_7") == ToolCall(
        "call_7", "read_file", '{"path": "src/app.py"}'
    )


def test_whitespace_around_the_reply_is_ignored() -> None:
    reply = '\n\n  {"tool": "run_command", "arguments": {"name": "test"}}  \n'
    assert call(reply).name == "run_command"


def test_a_pretty_printed_object_is_accepted() -> None:
    reply = '{\n  "tool": "edit_file",\n  "arguments": {\n    "path": "a.py",\n    "old": "x = 1",\n    "new": "x = 2"\n  }\n}'
    parsed = call(reply)
    assert json.loads(parsed.arguments) == {"path": "a.py", "old": "x = 1", "new": "x = 2"}


def test_a_json_fence_is_accepted() -> None:
    reply = '```json\n{"tool": "read_file", "arguments": {"path": "tests/test_app.py"}}\n```'
    assert call(reply).arguments == '{"path": "tests/test_app.py"}'


def test_a_bare_fence_an_upper_case_tag_and_trailing_spaces_are_accepted() -> None:
    assert call('```\n{"tool": "finish", "arguments": {"summary": "done"}}\n```').name == "finish"
    assert call('```JSON  \n{"tool": "finish", "arguments": {}}\n```   ').name == "finish"
    assert call('  ```json\r\n{"tool": "finish"}\r\n```\r\n').name == "finish"


def test_missing_arguments_mean_an_empty_object() -> None:
    assert call('{"tool": "list_files"}').arguments == "{}"


def test_arguments_are_reserialized_canonically_keeping_non_ascii() -> None:
    parsed = call('{"tool":"edit_file","arguments":{"path":"ü.py","old":"a","new":"é\\n"}}')
    assert parsed.arguments == '{"path": "ü.py", "old": "a", "new": "é\\n"}'


def test_backticks_inside_a_json_string_are_content_not_a_fence() -> None:
    content = "# Title\n```py\nprint(1)\n```\n"
    reply = json.dumps({"tool": "edit_file", "arguments": {"path": "README.md", "old": "x", "new": content}})
    assert json.loads(call(reply).arguments)["new"] == content
    assert json.loads(call(f"```json\n{reply}\n```").arguments)["new"] == content


# --- refused, with the reason and a message the model can act on --------------------------------------------


def test_an_empty_reply() -> None:
    assert refused("  \n ").reason == "empty"


def test_prose_instead_of_a_call() -> None:
    error = refused("I will read the file src/app.py to see what is wrong.")
    assert error.reason == "not_json"
    assert "JSON object" in error.message


def test_prose_before_the_object_is_not_fished_out() -> None:
    error = refused('Sure! Here is the tool call: {"tool": "read_file", "arguments": {"path": "a.py"}}')
    assert error.reason == "text_around"


def test_prose_after_the_object() -> None:
    error = refused('{"tool": "read_file", "arguments": {"path": "a.py"}}\nThis will show me the file.')
    assert error.reason == "text_around"
    assert "after the JSON value" in error.message


def test_prose_around_a_fence() -> None:
    assert refused('Let me check.\n```json\n{"tool": "read_file", "arguments": {"path": "a"}}\n```').reason == (
        "text_around"
    )
    error = refused('```json\n{"tool": "read_file", "arguments": {"path": "a"}}\n```\nThat reads it.')
    assert error.reason == "text_around"
    assert "after its ``` block" in error.message


def test_two_calls_in_one_reply() -> None:
    two_lines = (
        '{"tool": "read_file", "arguments": {"path": "a.py"}}\n{"tool": "read_file", "arguments": {"path": "b.py"}}'
    )
    assert refused(two_lines).reason == "text_around"
    two_fences = '```json\n{"tool": "finish"}\n```\n```json\n{"tool": "finish"}\n```'
    assert "another ``` block" in refused(two_fences).message
    listed = refused('[{"tool": "read_file", "arguments": {"path": "a.py"}}, {"tool": "finish"}]')
    assert listed.reason == "not_object"
    assert "one call per reply" in listed.message


def test_a_fence_that_is_not_one_block() -> None:
    assert refused('```json {"tool": "finish"} ```').reason == "fence"  # on one line
    assert refused('```python\n{"tool": "finish"}\n```').reason == "fence"  # not json
    unclosed = refused('```json\n{"tool": "read_file", "arguments": {"path": "a.py"}}')  # cut at max tokens
    assert unclosed.reason == "fence"
    assert "not closed" in unclosed.message


def test_json_cut_short_by_the_token_limit() -> None:
    error = refused('{"tool": "edit_file", "arguments": {"path": "a.py", "old": "x = 1", "new": "x')
    assert error.reason == "not_json"
    assert error.message.endswith("Unterminated string starting at (line 1, column 76)")


def test_python_dicts_trailing_commas_and_constants_are_not_json() -> None:
    assert refused("{'tool': 'read_file', 'arguments': {'path': 'a.py'}}").reason == "not_json"
    assert refused('{"tool": "read_file", "arguments": {"path": "a.py",},}').reason == "not_json"
    assert refused('{"tool": "list_files", "arguments": {"limit": NaN}}').reason == "not_json"


def test_a_key_twice_is_not_resolved_by_guessing() -> None:
    error = refused('{"tool": "read_file", "tool": "finish", "arguments": {}}')
    assert error.reason == "duplicate_key"
    assert "'tool'" in error.message


def test_a_json_value_that_is_not_an_object() -> None:
    assert refused('"read_file"').reason == "not_object"
    assert refused("42").reason == "not_object"


def test_openai_style_name_instead_of_tool() -> None:
    error = refused('{"name": "read_file", "arguments": {"path": "a.py"}}')
    assert error.reason == "no_tool"
    assert "'name'" in error.message


def test_tool_that_is_not_a_string() -> None:
    assert refused('{"tool": ["read_file"], "arguments": {"path": "a.py"}}').reason == "tool_not_string"


def test_an_unknown_tool_lists_the_offered_ones() -> None:
    error = refused('{"tool": "Read_File", "arguments": {"path": "a.py"}}')  # names are exact
    assert error.reason == "unknown_tool"
    assert "read_file, edit_file, run_command, list_files, finish" in error.message
    assert refused('{"tool": "delete_file", "arguments": {"path": "a.py"}}').reason == "unknown_tool"


def test_arguments_flattened_next_to_tool() -> None:
    error = refused('{"tool": "read_file", "path": "a.py"}')
    assert error.reason == "unexpected_key"
    assert "'path'" in error.message
    assert '"arguments"' in error.message


def test_arguments_as_a_json_string_are_not_unwrapped() -> None:
    error = refused('{"tool": "read_file", "arguments": "{\\"path\\": \\"a.py\\"}"}')
    assert error.reason == "arguments_not_object"
    assert "not a string" in error.message
    assert refused('{"tool": "read_file", "arguments": null}').reason == "arguments_not_object"


def test_no_tools_offered_refuses_every_call() -> None:
    with pytest.raises(ToolProtocolError) as info:
        parse_reply('{"tool": "read_file"}', ())
    assert info.value.reason == "unknown_tool"


# --- prompt text ---------------------------------------------------------------------------------------------


def test_signatures_show_types_enums_and_optional_arguments() -> None:
    assert signature(TOOLS[0]) == "read_file(path: string)"
    assert signature(TOOLS[2]) == 'run_command(name: "test"|"lint")'
    assert signature(TOOLS[3]) == "list_files(glob?: string, limit?: integer)"


def test_the_rendered_prompt_lists_every_tool_and_its_example_is_itself_accepted() -> None:
    text = render_tools(TOOLS)
    for tool in TOOLS:
        assert f"- {signature(tool)}: {tool.description}" in text
    assert example_call(TOOLS[0]) in text
    for tool in TOOLS:
        assert parse_reply(example_call(tool), TOOLS).name == tool.name
    assert len(text) < 700  # short enough for a 135M model's attention


def test_render_tools_needs_a_tool() -> None:
    with pytest.raises(ValueError, match="at least one tool"):
        render_tools(())


def test_results_and_errors_render_as_the_next_turn() -> None:
    read = ToolCall("call_3", "read_file", '{"path": "a.py"}')
    assert render_result(read, "x = 1\n") == "Result of read_file:\nx = 1\n"
    assert render_result(read, "no such file: a.py", is_error=True) == "Error from read_file:\nno such file: a.py"
    message = render_error(refused("I think I should read it."))
    assert message.startswith("Your reply was not a valid tool call: the reply does not start with a JSON object")
    assert '{"tool": "<tool name>", "arguments": {...}}' in message
