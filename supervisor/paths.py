"""Where data lives: the platform data dir (platformdirs), or ``SUPERVISOR_HOME`` when set.

Nothing here creates directories at import time; callers ask for a path and create what they write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

APP_NAME = "frugal-supervisor"


def home(environ: Mapping[str, str] | None = None) -> Path:
    """The data directory: ``$SUPERVISOR_HOME`` or the platform's user data dir."""
    env = os.environ if environ is None else environ
    override = env.get("SUPERVISOR_HOME")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the default ``supervisor.toml`` lives (inside ``SUPERVISOR_HOME`` when that is set)."""
    env = os.environ if environ is None else environ
    if env.get("SUPERVISOR_HOME"):
        return home(env)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The config file used when ``--config`` is not given (``SUPERVISOR_CONFIG`` overrides)."""
    env = os.environ if environ is None else environ
    explicit = env.get("SUPERVISOR_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return config_dir(env) / "supervisor.toml"


def ledger_path(environ: Mapping[str, str] | None = None) -> Path:
    """The SQLite ledger file."""
    return home(environ) / "ledger.db"


def agents_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Per-agent memory: ``agents/<name>/digest.md``, ``runs/``, ``state.json``."""
    return home(environ) / "agents"


def user_models_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's catalog directory, which overrides or extends the bundled one."""
    return home(environ) / "models"


def local_models_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Model weights fetched by ``supervisor models pull`` (e.g. the embedded SmolLM2 GGUF)."""
    return home(environ) / "weights"


def _data_root() -> Path:
    """The bundled data: ``supervisor/_data`` in a wheel, the repository root in a source checkout."""
    package_dir = Path(__file__).resolve().parent
    bundled = package_dir / "_data"
    if bundled.is_dir():
        return bundled
    return package_dir.parent


def bundled_models_dir() -> Path:
    """The catalog that ships with the package (``models/`` at the top of the repository)."""
    return _data_root() / "models"


def assets_dir() -> Path:
    """Stylesheets and screenshots (``assets/`` at the top of the repository)."""
    return _data_root() / "assets"
