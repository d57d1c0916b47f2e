"""A small agent on the official ``anthropic`` SDK: a tool loop over the Messages protocol.

The client is built with no arguments (``ANTHROPIC_BASE_URL`` and ``ANTHROPIC_API_KEY`` point it at the
gateway), the model is ``SUPERVISOR_MODEL`` and the task is the file ``SUPERVISOR_TASK_FILE`` names. A model
that cannot call tools is asked once for the whole fixed file instead.
"""

from __future__ import annotations

import os
import pathlib
import sys
from typing import Any

import anthropic

TOOLS: list[Any] = [
    {
        "name": "read_file",
        "description": "Read a file of the project.",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    },
    {
        "name": "write_file",
        "description": "Replace a file's whole content.",
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
]


def run_tool(name: str, args: dict[str, str]) -> str:
    path = pathlib.Path(args["path"])
    if name == "read_file":
        return path.read_text()
    path.write_text(args["content"])
    return f"wrote {path}"


def whole_file(client: anthropic.Anthropic, model: str, task: str, target: str) -> None:
    source = pathlib.Path(target).read_text()
    reply = client.messages.create(
        model=model,
        max_tokens=int(os.environ.get("AGENT_TEXT_TOKENS", "12")),
        messages=[{"role": "user", "content": f"{task}\n{target}:\n{source}\nReply with the fixed {target}."}],
    )
    text = "".join(block.text for block in reply.content if block.type == "text")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("```"))
    pathlib.Path(target).write_text(body + "\n")
    print(f"agent: no tools here; wrote {target} from a {reply.usage.output_tokens}-token reply")


def main() -> int:
    client = anthropic.Anthropic()
    model = os.environ["SUPERVISOR_MODEL"]
    task = pathlib.Path(os.environ["SUPERVISOR_TASK_FILE"]).read_text()
    files = sorted(p.name for p in pathlib.Path(".").glob("*.py"))
    messages: list[Any] = [{"role": "user", "content": f"{task}\nFiles: {', '.join(files)}"}]
    for turn in range(1, int(os.environ.get("AGENT_MAX_TURNS", "6")) + 1):
        try:
            reply = client.messages.create(
                model=model, max_tokens=300, system="You fix code with the tools.", messages=messages, tools=TOOLS
            )
        except anthropic.BadRequestError as exc:
            if "cannot call tools" not in str(exc):
                raise
            whole_file(client, model, task, os.environ.get("AGENT_TARGET", "calc.py"))
            return 0
        uses = [block for block in reply.content if block.type == "tool_use"]
        print(f"agent: turn {turn}: {len(uses)} tool call(s), {reply.usage.input_tokens} tokens in")
        if not uses:
            print("agent: done: " + "".join(b.text for b in reply.content if b.type == "text"))
            return 0
        messages.append(
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in reply.content]}
        )
        results = [
            {"type": "tool_result", "tool_use_id": block.id, "content": run_tool(block.name, dict(block.input))}
            for block in uses
        ]
        messages.append({"role": "user", "content": results})
    print("agent: out of turns")
    return 1


if __name__ == "__main__":
    sys.exit(main())
