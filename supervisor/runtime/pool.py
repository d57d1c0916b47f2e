"""The backends a runtime talks to, one per provider, created on first use and closed with the runtime."""

from __future__ import annotations

from collections.abc import Mapping

from supervisor.backends.base import Backend
from supervisor.config import Config, ProviderConfig
from supervisor.errors import BackendUnavailable


class BackendPool:
    """Backends by provider name, created on first use; tests and the demo can inject their own."""

    def __init__(
        self, config: Config, environ: Mapping[str, str], overrides: Mapping[str, Backend] | None = None
    ) -> None:
        self.config = config
        self.environ = environ
        self._backends: dict[str, Backend] = dict(overrides or {})

    def provider(self, name: str) -> ProviderConfig:
        return self.config.providers[name]

    def availability(self, name: str) -> str | None:
        """``None`` when the provider may be used now, else why not (offline, key missing)."""
        pcfg = self.config.providers.get(name)
        if pcfg is None:
            return f"provider {name!r} is not configured"
        if self.config.offline and not pcfg.local:
            return "offline mode: only local providers are used"
        if pcfg.api_key_env and not self.environ.get(pcfg.api_key_env) and not pcfg.local:
            return f"{pcfg.api_key_env} is not set"
        return None

    def get(self, name: str) -> Backend:
        backend = self._backends.get(name)
        if backend is None:
            why = self.availability(name)
            if why is not None and name not in self._backends:
                raise BackendUnavailable(f"provider {name}: {why}", provider=name)
            from supervisor.backends.registry import make_backend

            base_dir = self.config.path.parent if self.config.path else None
            backend = make_backend(name, self.config.providers[name], self.environ, base_dir=base_dir)
            self._backends[name] = backend
        return backend

    def loaded(self) -> dict[str, Backend]:
        return dict(self._backends)

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
