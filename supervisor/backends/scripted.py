"""A scripted backend: canned answers, for the demo's simulated tiers and fast run-loop tests.

Always labelled simulated: its calls are priced at the catalog prices of a named real model (``simulated_as``)
and reported apart from real spend. Answers come from a responder function (tests, the demo) or from a TOML
script file::

    default = "I don't know."         # optional: when nothing matches (before the tables, as TOML requires)

    [[answer]]
    match = "capital of France"      # a regular expression searched in the prompt
    text = "Paris"
    delay_s = 0.5                     # optional: answer after this long
    output_tokens = 120               # optional: report this many output tokens
"""

from __future__ import annotations

import asyncio
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from supervisor.backends.base import Health, Request, Result, TokenCount, estimate_tokens, refuse_tools
from supervisor.config import ProviderConfig
from supervisor.errors import BackendError, BadRequest, ConfigError
from supervisor.usage import Usage


@dataclass(frozen=True, slots=True)
class ScriptedAnswer:
    text: str = ""
    input_tokens: int | None = None  # default: the conservative estimate of the prompt
    output_tokens: int | None = None  # default: ceil(bytes / 3) of the text
    cache_read: int = 0
    finish_reason: str = "stop"
    delay_s: float = 0.0
    error: BackendError | None = None
    usage_known: bool = True


Responder = Callable[[Request], "ScriptedAnswer | str"]


def prompt_text(request: Request) -> str:
    return "\n".join(m.content for m in request.messages)


def load_script(path: Path) -> Responder:
    """A responder from a TOML script file (see the module docstring)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the script: {exc}") from None
    rules: list[tuple[re.Pattern[str], ScriptedAnswer]] = []
    unknown_top = set(data) - {"answer", "default"}
    if unknown_top:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown_top))}; a script has `default` and [[answer]] tables"
        )
    for index, entry in enumerate(data.get("answer", [])):
        unknown = set(entry) - {"match", "text", "delay_s", "output_tokens"}
        if unknown:
            raise ConfigError(
                f"{path}: answer[{index}]: unknown key(s) {', '.join(sorted(unknown))}",
                "an answer has match, text, delay_s and output_tokens; put `default` before the first [[answer]]",
            )
        try:
            answer = ScriptedAnswer(
                text=str(entry["text"]),
                delay_s=float(entry.get("delay_s", 0.0)),
                output_tokens=int(entry["output_tokens"]) if "output_tokens" in entry else None,
            )
            rules.append((re.compile(entry["match"], re.IGNORECASE | re.DOTALL), answer))
        except (KeyError, TypeError, ValueError, re.error) as exc:
            raise ConfigError(f"{path}: answer[{index}]: needs `match` (a regex) and `text`: {exc}") from None
    default = data.get("default")

    def respond(request: Request) -> ScriptedAnswer | str:
        text = prompt_text(request)
        for pattern, answer in rules:
            if pattern.search(text):
                return answer
        if default is not None:
            return str(default)
        raise BadRequest(f"{path}: no scripted answer matches this prompt", "add an [[answer]] whose match fits")

    return respond


class ScriptedBackend:
    kind = "scripted"
    supports_tools = False  # scripted answers are text; a tool step uses the JSON-in-text protocol with it

    def __init__(
        self,
        provider: str,
        config: ProviderConfig,
        environ: Mapping[str, str],
        responder: Responder | None = None,
        *,
        base_dir: Path | None = None,
    ) -> None:
        self.provider = provider
        self.local = config.local
        self.config = config
        self.calls: list[Request] = []
        if responder is None:
            if not config.script:
                raise ConfigError(f"providers.{provider}: a scripted provider needs `script` (a TOML file of answers)")
            script = Path(config.script).expanduser()
            if not script.is_absolute() and base_dir is not None:
                script = base_dir / script
            responder = load_script(script)
        self.responder = responder

    async def complete(self, request: Request, on_text: Callable[[str], None] | None = None) -> Result:
        refuse_tools(request, self.provider)
        self.calls.append(request)
        started = time.monotonic()
        answer = self.responder(request)
        if isinstance(answer, str):
            answer = ScriptedAnswer(answer)
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        if answer.error is not None:
            raise answer.error
        text = answer.text
        max_bytes = request.max_output_tokens * 3
        finish = answer.finish_reason
        if len(text.encode()) > max_bytes:
            text = text.encode()[:max_bytes].decode("utf-8", errors="ignore")
            finish = "length"
        if on_text is not None:
            for i in range(0, len(text), 16):
                on_text(text[i : i + 16])
        output = answer.output_tokens if answer.output_tokens is not None else -(-len(text.encode()) // 3)
        input_tokens = answer.input_tokens if answer.input_tokens is not None else estimate_tokens(request.messages)
        usage = (
            Usage(
                input_uncached=input_tokens - answer.cache_read,
                cache_read=answer.cache_read,
                cache_write_5m=0,
                cache_write_1h=0,
                output=output,
                reasoning=0,
            )
            if answer.usage_known
            else Usage()
        )
        total = time.monotonic() - started
        return Result(
            text=text,
            finish_reason=finish,
            usage=usage,
            ttft_s=total,
            total_s=total,
            tokens_per_s=None,
            compute_s=None,
            model_reported=request.model,
            raw_usage={"simulated": True},
        )

    def count_tokens(self, request: Request) -> TokenCount:
        return TokenCount(estimate_tokens(request.messages), exact=False)

    async def health(self) -> Health:
        return Health(self.provider, self.kind, True, "simulated (scripted answers)")

    async def aclose(self) -> None:
        return None
