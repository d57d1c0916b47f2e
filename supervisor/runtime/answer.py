"""What a step's answer looks like, how we ask for it, and how we take it out of what the model actually says.

Models wrap answers in code fences and prose ("```python ... ```\\n\\nThis is the complete solution."), put a
JSON object after a sentence, or echo our own instructions back. The gates judge the answer, not the wrapping,
so before anything is written or checked the answer is taken out of the reply by these rules, in order:

1. **Fenced blocks.** When the reply holds fenced code blocks (three or more backticks or tildes), the answer is
   one block and the prose around it is dropped: the block whose info string names the target file, else the
   first whose language tag matches the target's file type (``python`` for ``.py``, ``json`` for ``.json``...),
   else the only block, else the first (empty blocks do not count, and fence lines that enclose nothing are
   dropped). A block left open at the end of the reply runs to the end. Markdown targets are the exception: a
   Markdown file may itself hold code blocks, so only a block tagged ``markdown``/``md``, or one that opens the
   reply, is taken out; otherwise the reply is kept whole.
2. **JSON targets** (a ``json_schema`` gate, a ``.json`` file, the planner's plan): the first complete JSON
   value, found by scanning with ``json.JSONDecoder.raw_decode`` from each ``{`` or ``[`` (of the expected type,
   when the schema says), inside the chosen block or else in the whole reply.
3. **Plain-text targets**: a line that repeats our own words (a sentence of the answer form, or a line of the
   task) is dropped, and so is a leading ``Answer:``. When the answer is kept as an artifact (``output``, not a
   file), a reply that is one sentence stating it ("The answer is: Cy.", "The answer is 24:30.") is the answer
   without the sentence around it (``Cy``, ``24:30``); a longer reply is left as it is.

The answer always ends with one newline (files are text files).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from supervisor.config import JsonSchemaGate, PythonCompilesGate, StepConfig

JsonType = Literal["object", "array"]

# Fence info-string tags by file suffix: a block tagged with one of these is the target's block.
LANGUAGE_TAGS: dict[str, tuple[str, ...]] = {
    ".py": ("python", "py", "python3"),
    ".json": ("json", "jsonc"),
    ".md": ("markdown", "md"),
    ".markdown": ("markdown", "md"),
    ".csv": ("csv",),
    ".tsv": ("tsv", "csv"),
    ".toml": ("toml",),
    ".yaml": ("yaml", "yml"),
    ".yml": ("yaml", "yml"),
    ".ini": ("ini", "cfg"),
    ".cfg": ("ini", "cfg"),
    ".env": ("env", "dotenv", "bash", "sh"),
    ".txt": ("text", "txt", "plaintext", "plain"),
    ".sh": ("bash", "sh", "shell", "zsh"),
    ".js": ("javascript", "js"),
    ".ts": ("typescript", "ts"),
    ".html": ("html",),
    ".css": ("css",),
    ".sql": ("sql",),
    ".xml": ("xml",),
    ".rs": ("rust", "rs"),
    ".go": ("go", "golang"),
    ".rb": ("ruby", "rb"),
    ".c": ("c",),
    ".h": ("c",),
    ".cpp": ("cpp", "c++"),
    ".java": ("java",),
}
MARKDOWN_TAGS = ("markdown", "md")


@dataclass(frozen=True, slots=True)
class AnswerForm:
    """The shape of a step's answer: what the prompt asks for and what extraction looks for."""

    target: str | None = None  # the file the answer is written to (``writes``), if any
    languages: tuple[str, ...] = ()  # fence tags that mark the target's block
    json: bool = False  # the answer is one JSON value
    json_type: JsonType | None = None  # its expected top-level type, when known
    python: bool = False  # the answer must be Python source
    echoes: tuple[str, ...] = ()  # our own words; a reply line that repeats one is not part of the answer

    @property
    def markdown(self) -> bool:
        return any(tag in MARKDOWN_TAGS for tag in self.languages)

    @property
    def fence_tag(self) -> str:
        """The tag a prompt asks the answer's block to carry."""
        if self.json:
            return "json"
        return self.languages[0] if self.languages else "text"


PLAIN = AnswerForm()


def is_plan_step(step: StepConfig) -> bool:
    return step.output == "plan" and step.name == "plan"


def answer_form(step: StepConfig, workspace: Path | None = None, *, echoes: Sequence[str] = ()) -> AnswerForm:
    """The answer form of ``step``; ``workspace`` lets a JSON schema's top-level type be read."""
    suffix = PurePosixPath(step.writes).suffix.lower() if step.writes else ""
    languages = LANGUAGE_TAGS.get(suffix, ())
    schema_gates = [g for g in step.verify if isinstance(g, JsonSchemaGate)]
    python = any(isinstance(g, PythonCompilesGate) for g in step.verify) or suffix == ".py"
    if python and not languages:
        languages = LANGUAGE_TAGS[".py"]
    is_json = is_plan_step(step) or bool(schema_gates) or suffix == ".json"
    json_type: JsonType | None = "object" if is_plan_step(step) else None
    if schema_gates and workspace is not None:
        json_type = _schema_type(workspace / schema_gates[0].json_schema)
    return AnswerForm(
        target=step.writes,
        languages=languages,
        json=is_json,
        json_type=json_type,
        python=python,
        echoes=tuple(e for e in echoes if e.strip()),
    )


def _schema_type(path: Path) -> JsonType | None:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the gate reports an unreadable schema; extraction just does not know the type
    kind = schema.get("type") if isinstance(schema, dict) else None
    return kind if kind in ("object", "array") else None


# ------------------------------------------------------------------------------------------------------------
# Fenced blocks

_OPEN = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n]*?)[ \t]*$")
_LONE_FENCE = re.compile(r"^[ \t]{0,3}(?:`{3,}|~{3,})[ \t]*[\w.+-]*[ \t]*$")


@dataclass(frozen=True, slots=True)
class Block:
    info: str  # the info string after the opening fence ("python", "python title=add.py", "")
    body: str
    closed: bool
    opens_reply: bool = False  # nothing but blank lines before its opening fence

    @property
    def tag(self) -> str:
        first = self.info.split(maxsplit=1)[0] if self.info.strip() else ""
        return first.split(":", 1)[0].strip("{}.").lower()


def fenced_blocks(text: str) -> list[Block]:
    """Every fenced code block of ``text``, in order (CommonMark's rules for fence length and characters)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opened = _OPEN.match(lines[index])
        if opened is None or ("`" in opened.group("info") and opened.group("fence")[0] == "`"):
            index += 1
            continue
        fence = opened.group("fence")
        body: list[str] = []
        start = index
        index += 1
        closed = False
        while index < len(lines):
            stripped = lines[index].strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                closed = True
                index += 1
                break
            body.append(lines[index])
            index += 1
        info = opened.group("info")
        stray = _OPEN.match(body[0]) if body and not info else None
        if stray is not None and stray.group("info"):
            info, body = stray.group("info"), body[1:]  # "```\n```python\n...": the second fence names the block
        blocks.append(
            Block(info, "\n".join(body), closed, opens_reply=not blocks and not "".join(lines[:start]).strip())
        )
    return blocks


def choose_block(blocks: Sequence[Block], form: AnswerForm) -> Block | None:
    """The target's block: named by the info string, else tagged with its language, else the only, else the first."""
    blocks = [block for block in blocks if block.body.strip()]  # an empty (or cut-off) fence holds no answer
    if not blocks:
        return None
    if form.target:
        named = re.compile(rf"(?:^|[\s=:/\"'])({re.escape(PurePosixPath(form.target).name.lower())})(?:$|[\s\"'])")
        for block in blocks:
            if named.search(block.info.lower()):
                return block
    tags = ("json", "jsonc") if form.json and not form.languages else form.languages
    for block in blocks:
        if block.tag and block.tag in tags:
            return block
    if form.markdown:
        # An untagged block is more likely part of the Markdown file than a wrapper around it, unless the reply
        # starts with it (a README does not start with a code block; a model wrapping the file does).
        return blocks[0] if blocks[0].opens_reply and blocks[0].closed else None
    return blocks[0]


# ------------------------------------------------------------------------------------------------------------
# JSON

_DECODER = json.JSONDecoder()


def first_json_value(text: str, expected: JsonType | None = None) -> str | None:
    """The text of the first complete JSON object or array in ``text`` (of the ``expected`` type if given)."""
    starts = "{" if expected == "object" else "[" if expected == "array" else "{["
    for index, char in enumerate(text):
        if char not in starts:
            continue
        try:
            _, end = _DECODER.raw_decode(text, index)
        except ValueError:
            continue
        return text[index:end]
    return None


# ------------------------------------------------------------------------------------------------------------
# Echoes


def _normal(line: str) -> str:
    return " ".join(line.lower().split()).strip(" .:;!*`\"'")


_ANSWER_LABEL = re.compile(r"^\s*(?:final\s+)?answer\s*:\s*", re.IGNORECASE)
# One sentence that states the answer: "The answer is: Cy." / "So the final answer is 24:30." (the period ends the
# sentence, not the answer). Only a whole one-line reply: "The answer is Ana, who ..." is left as it is.
_ANSWER_SENTENCE = re.compile(
    r"^\s*(?:so,?\s+)?the\s+(?:final\s+|correct\s+)?answer\s+is\s*:?\s*(?P<answer>[^\s,;][^,;]*?)\s*\.?\s*$",
    re.IGNORECASE,
)


def drop_echoes(text: str, echoes: Sequence[str]) -> str:
    """``text`` without lines that repeat one of ``echoes`` (compared without case, spacing or end punctuation),
    and without a leading ``Answer:`` label."""
    phrases = {_normal(echo) for echo in echoes} - {""}
    kept = [line for line in text.splitlines() if _normal(line) not in phrases]
    while kept and not kept[0].strip():
        kept.pop(0)
    if kept:
        kept[0] = _ANSWER_LABEL.sub("", kept[0], count=1)
    return "\n".join(kept)


def unwrap_answer_sentence(text: str) -> str:
    """A one-line reply that states the answer in a sentence ("The answer is: Cy.") without the sentence."""
    sentence = _ANSWER_SENTENCE.match(text.strip()) if len(text.strip().splitlines()) == 1 else None
    return sentence.group("answer") if sentence is not None else text


# ------------------------------------------------------------------------------------------------------------
# The rules, in order


def extract_answer(text: str, form: AnswerForm = PLAIN) -> str:
    """The answer to write or check, taken out of the model's reply by the rules in the module docstring."""
    block = choose_block(fenced_blocks(text), form)
    body = block.body if block is not None else text
    if form.json:
        value = first_json_value(body.strip(), form.json_type)
        if value is None and block is not None:
            value = first_json_value(text, form.json_type)
        if value is not None:
            return value + "\n"
    if block is None:
        body = drop_echoes(body, form.echoes)
        if form.target is None and not form.json:  # an answer kept as an artifact, not a file's content
            body = unwrap_answer_sentence(body)
        if not form.markdown:  # fences that enclose nothing ("```\n```\n| city |..."): not part of the answer
            body = "\n".join(line for line in body.splitlines() if not _LONE_FENCE.match(line))
    body = body.strip("\n")
    if block is None:
        body = body.strip()
    return body + "\n" if body.strip() else ""
