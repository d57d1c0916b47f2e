"""A running gateway in the test's event loop, forwarding to the loopback protocol fakes (priced like the real
models they stand in for: DeepSeek Flash for cheap, Claude Sonnet 5.5 for frontier, Qwen3 on Ollama for local)."""

from __future__ import annotations

import os
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from supervisor.catalog import default_catalog_dirs, load_catalog
from supervisor.config import load_config
from supervisor.gateway.keys import mint_key
from supervisor.gateway.server import Gateway
from supervisor.ledger import Ledger
from supervisor.runtime.runtime import Runtime
from supervisor.secrets import Redactor
from tests.fakes.anthropic import AnthropicFake
from tests.fakes.ollama import OllamaFake
from tests.fakes.openai import OpenAIFake

T = TypeVar("T")

PROVIDER_KEYS = {
    "DEEPSEEK_API_KEY": "sk-deepseek-CANARY-0123456789abcdef",
    "ANTHROPIC_API_KEY": "sk-ant-CANARY-0123456789abcdef",
    "OPENAI_API_KEY": "sk-openai-CANARY-0123456789abcdef",
}

PROVIDERS = """
[providers.deepseek]
kind = "openai_compat"
base_url = "{openai}"
api_key_env = "DEEPSEEK_API_KEY"
max_retries = 0

[providers.openai]
kind = "openai_compat"
base_url = "{openai_plain}"
api_key_env = "OPENAI_API_KEY"
max_retries = 0
responses = true

[providers.anthropic]
kind = "anthropic"
base_url = "{anthropic}"
api_key_env = "ANTHROPIC_API_KEY"
max_retries = 0

[providers.ollama]
kind = "ollama"
host = "{ollama}"
local = true
max_retries = 0

[tiers]
local = {local}
cheap = ["deepseek:deepseek-flash", "openai:gpt-5.4-mini"]
frontier = ["anthropic:claude-sonnet-5-5"]
"""

AGENTS = """
[agents.aider]
goal = "pair programming in the terminal"
ladder = ["local", "cheap", "frontier"]
frontier = "allow"
models = { "claude-sonnet-5-5" = "cheap" }
"""


@dataclass
class Setup:
    gateway: Gateway
    runtime: Runtime
    ledger: Ledger
    openai: OpenAIFake
    anthropic: AnthropicFake
    ollama: OllamaFake
    config_path: Path
    environ: dict[str, str]
    clients: list[Any] = field(default_factory=list)
    openai_plain: OpenAIFake | None = None  # OpenAI's own usage dialect (cached tokens inside prompt_tokens)

    def track(self, client: T) -> T:
        """An SDK client closed before the gateway stops (so no connection outlives the event loop)."""
        self.clients.append(client)
        return client

    def key(self, agent: str = "aider", **kwargs: object) -> str:
        return mint_key(self.ledger, agent, **kwargs).token  # type: ignore[arg-type]

    @property
    def url(self) -> str:
        return self.gateway.url

    def calls(self, agent: str | None = None) -> list[dict[str, object]]:
        return list(reversed(self.ledger.calls(agent=agent)))


def write_config(
    tmp_path: Path, urls: dict[str, str], agents: str = AGENTS, extra: str = "", local: str = '["ollama:qwen3:4b"]'
) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(textwrap.dedent(extra) + PROVIDERS.format(local=local, **urls) + textwrap.dedent(agents))
    return path


@asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    agents: str = AGENTS,
    extra: str = "",
    *,
    offline: bool = False,
    local_models: str = '["ollama:qwen3:4b"]',
) -> AsyncIterator[Setup]:
    with (
        OpenAIFake(dialect="deepseek", models=("deepseek-flash",)) as openai,
        AnthropicFake(models=("claude-sonnet-5-5",)) as anthropic,
        OllamaFake() as ollama,
        OpenAIFake(dialect="openai", models=("gpt-5.4-mini",)) as openai_plain,
    ):
        urls = {
            "openai": openai.url,
            "anthropic": anthropic.url,
            "ollama": ollama.url,
            "openai_plain": openai_plain.url,
        }
        config_path = write_config(tmp_path, urls, agents, extra, local_models)
        environ = {**os.environ, **PROVIDER_KEYS}
        config = load_config(config_path, environ, required=True)
        if offline:
            config = config.with_offline(True)
        home = Path(os.environ["SUPERVISOR_HOME"])
        ledger = Ledger(home / "ledger.db", redactor=Redactor.from_environ(environ))
        runtime = Runtime(config, load_catalog(default_catalog_dirs()), ledger, environ=environ, home=home)
        try:
            async with Gateway(runtime, port=0, agent_ports=True) as gateway:
                setup = Setup(gateway, runtime, ledger, openai, anthropic, ollama, config_path, environ)
                setup.openai_plain = openai_plain
                try:
                    yield setup
                finally:
                    for client in setup.clients:
                        close = getattr(client, "close", None) or client._client.aclose
                        await close()
        finally:
            await runtime.aclose()
            ledger.close()
