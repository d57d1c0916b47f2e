"""Build a backend from its provider config; imports each protocol module only when it is used."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from supervisor.backends.base import Backend
from supervisor.config import ProviderConfig
from supervisor.errors import ConfigError


def make_backend(
    provider: str, config: ProviderConfig, environ: Mapping[str, str], *, base_dir: Path | None = None
) -> Backend:
    """A backend for ``provider``; API keys are read from ``environ`` by the backend, never logged.

    ``base_dir`` (the config file's directory) resolves relative paths such as a scripted provider's script.
    """
    if config.kind == "ollama":
        from supervisor.backends.ollama import OllamaBackend

        return OllamaBackend(provider, config, environ)
    if config.kind == "openai_compat":
        from supervisor.backends.openai_compat import OpenAICompatBackend

        return OpenAICompatBackend(provider, config, environ)
    if config.kind == "anthropic":
        from supervisor.backends.anthropic import AnthropicBackend

        return AnthropicBackend(provider, config, environ)
    if config.kind == "mlx":
        from supervisor.backends.mlx import MLXBackend

        return MLXBackend(provider, config, environ)
    if config.kind == "scripted":
        from supervisor.backends.scripted import ScriptedBackend

        return ScriptedBackend(provider, config, environ, base_dir=base_dir)
    raise ConfigError(f"provider {provider!r}: unknown kind {config.kind!r}")  # pragma: no cover - pydantic guards
