"""A small agent on the official ``openai`` SDK: a tool loop that reads files and writes a fix.

It is written the way agent scripts are: the client is built with no arguments (``OPENAI_BASE_URL`` and
``OPENAI_API_KEY`` point it at the gateway), the model is ``SUPERVISOR_MODEL`` and the task is the file
``SUPERVISOR_TASK_FILE`` names. A model that cannot call tools (the gateway refuses a request with tools for
it) is asked once for the whole fixed file instead, which is written as it comes back. A refused call ends it
with exit 1, or (``AGENT_ON_ERROR=wait``) makes it wait, as an agent waiting out a rate limit would.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import openai

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "read_file",
            "description": "Read a file of the project.",
            "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "write_file",
            "description": "Replace a file's whole content.",
            "parameters": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                "required": ["path", "content"],
            },
        },
    },
]


def run_tool(name: str, args: dict[str, str]) -> str:
    path = pathlib.Path(args["path"])
    if name == "read_file":
        return path.read_text()
    path.write_text(args["content"])
    return f"wrote {path}"


def whole_file(client: openai.OpenAI, model: str, task: str, target: str) -> None:
    """Without tools: ask for the fixed file and write the reply (minus a fence) over it."""
    source = pathlib.Path(target).read_text()
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"{task}\n{target}:\n{source}\nReply with the fixed {target}."}],
        max_tokens=int(os.environ.get("AGENT_TEXT_TOKENS", "12")),
    )
    text = reply.choices[0].message.content or ""
    body = "\n".join(line for line in text.splitlines() if not line.startswith("```"))
    pathlib.Path(target).write_text(body + "\n")
    print(f"agent: no tools here; wrote {target} from a {reply.usage.completion_tokens}-token reply")


def main() -> int:
    client = openai.OpenAI()
    model = os.environ["SUPERVISOR_MODEL"]
    task = pathlib.Path(os.environ["SUPERVISOR_TASK_FILE"]).read_text()
    files = sorted(p.name for p in pathlib.Path(".").glob("*.py"))
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "You fix code with the tools."},
        {"role": "user", "content": f"{task}\nFiles: {', '.join(files)}"},
    ]
    for turn in range(1, int(os.environ.get("AGENT_MAX_TURNS", "6")) + 1):
        try:
            reply = client.chat.completions.create(model=model, messages=messages, tools=TOOLS, max_tokens=300)
        except openai.BadRequestError as exc:
            if "cannot call tools" not in str(exc):
                raise
            whole_file(client, model, task, os.environ.get("AGENT_TARGET", "calc.py"))
            return 0
        except openai.APIStatusError as exc:
            print(f"agent: the call was refused: {exc.status_code}: {exc.message}", flush=True)
            if os.environ.get("AGENT_ON_ERROR") == "wait":  # like an agent that waits out a rate limit
                time.sleep(120)
            return 1
        message = reply.choices[0].message
        print(f"agent: turn {turn}: {len(message.tool_calls or [])} tool call(s), {reply.usage.total_tokens} tokens")
        if not message.tool_calls:
            print(f"agent: done: {message.content}")
            return 0
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            result = run_tool(call.function.name, json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    print("agent: out of turns")
    return 1


if __name__ == "__main__":
    sys.exit(main())
