"""Building blocks for runtime tests: a config on disk, a workspace, scripted tiers, a real ledger."""

from __future__ import annotations

import hashlib
import os
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supervisor.backends.base import Message, Request
from supervisor.backends.scripted import ScriptedAnswer, ScriptedBackend
from supervisor.catalog import Catalog, default_catalog_dirs, load_catalog
from supervisor.config import Config, load_config
from supervisor.ledger import Ledger
from supervisor.runtime.runtime import Runtime

# Three scripted tiers priced like real models (local is free; cheap like DeepSeek Flash; frontier like Sonnet 5.5).
# The local stand-in gets the full prompt, so these tests see goal, digest and retry wording in one shape at every
# tier; tests of the minimal profile (what a real small local model gets by default) set it themselves.
PROVIDERS = """
[providers.sim-local]
kind = "scripted"
local = true
simulated_as = "mlx:smollm2-135m"
script = "unused.toml"
prompt_profile = "full"

[providers.sim-cheap]
kind = "scripted"
simulated_as = "deepseek:deepseek-flash"
script = "unused.toml"

[providers.sim-frontier]
kind = "scripted"
simulated_as = "anthropic:claude-sonnet-5-5"
script = "unused.toml"

[tiers]
local = ["sim-local:tiny"]
cheap = ["sim-cheap:flash"]
frontier = ["sim-frontier:sonnet"]
"""

Responder = Callable[[Request], "ScriptedAnswer | str"]

# The documented estimate for backends without a local tokenizer (supervisor.backends.base.estimate_tokens),
# worked by hand: ceil(UTF-8 bytes / 3) per message, + 4 per message, + 3 per request.
ESTIMATED_MESSAGES = (
    Message("system", "You are terse."),  # 14 bytes -> 5
    Message("user", "h\u00e9llo w\u00f6rld"),  # 13 bytes, 11 characters -> 5 (4 if characters were counted)
    Message("assistant", "ok"),  # 2 bytes -> 1
    Message("user", "Count me: 12345"),  # 15 bytes -> 5
)
ESTIMATED_TOKENS = (5 + 5 + 1 + 5) + 4 * 4 + 3


def last_user(request: Request) -> str:
    return request.messages[-1].content


@dataclass
class Tiers:
    """Scripted answers per tier; each records the requests it received."""

    local: Responder = field(default=lambda r: "wrong")
    cheap: Responder = field(default=lambda r: "wrong")
    frontier: Responder = field(default=lambda r: "wrong")

    def backends(self, config: Config, environ: Mapping[str, str]) -> dict[str, ScriptedBackend]:
        return {
            "sim-local": ScriptedBackend("sim-local", config.providers["sim-local"], environ, self.local),
            "sim-cheap": ScriptedBackend("sim-cheap", config.providers["sim-cheap"], environ, self.cheap),
            "sim-frontier": ScriptedBackend("sim-frontier", config.providers["sim-frontier"], environ, self.frontier),
        }


@dataclass
class Harness:
    tmp: Path
    config_path: Path
    workspace: Path
    home: Path
    environ: dict[str, str]
    tiers: Tiers
    _catalog: Catalog | None = None

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(default_catalog_dirs())
        return self._catalog

    def config(self) -> Config:
        return load_config(self.config_path, self.environ, required=True)

    def ledger(self) -> Ledger:
        from supervisor.secrets import Redactor

        return Ledger(self.home / "ledger.db", redactor=Redactor.from_environ(self.environ))

    def runtime(self, ledger: Ledger | None = None, **kwargs: Any) -> tuple[Runtime, dict[str, ScriptedBackend]]:
        config = self.config()
        backends = self.tiers.backends(config, self.environ)
        runtime = Runtime(
            config,
            self.catalog,
            ledger or self.ledger(),
            environ=self.environ,
            backends=backends,
            home=self.home,
            **kwargs,
        )
        return runtime, backends


def make_harness(
    tmp_path: Path,
    agents_toml: str,
    *,
    files: Mapping[str, str] | None = None,
    extra_toml: str = "",
    tiers: Tiers | None = None,
    local_profile: str = "full",
) -> Harness:
    """A config (scripted tiers + ``agents_toml``) with its workspace at ``tmp/ws``; ``local_profile`` is the
    prompt profile of the local stand-in ("minimal" is what a real small local model gets by default)."""
    workspace = tmp_path / "ws"
    workspace.mkdir(exist_ok=True)
    for rel, text in (files or {}).items():
        path = workspace / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    config_path = tmp_path / "supervisor.toml"
    providers = PROVIDERS.replace('prompt_profile = "full"', f'prompt_profile = "{local_profile}"', 1)
    config_path.write_text(textwrap.dedent(extra_toml) + providers + textwrap.dedent(agents_toml))
    home = Path(os.environ["SUPERVISOR_HOME"])
    environ = dict(os.environ)
    return Harness(tmp_path, config_path, workspace, home, environ, tiers or Tiers())


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256 of its bytes), to compare workspaces byte for byte."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            out[path.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return out
