"""``supervisor doctor``: what this machine has, probed quickly (every probe has a short timeout).

The JSON keys are stable (documented in the README): ``version``, ``os``, ``cpu``, ``memory``, ``gpu``,
``ollama``, ``mlx``, ``api_keys``, ``prices``, ``ledger``, ``config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import platform
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor import __version__, paths
from supervisor.errors import SupervisorError

if TYPE_CHECKING:
    from supervisor.backends.base import Backend, Health

PROBE_TIMEOUT_S = 2.0
KNOWN_KEY_VARS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY")


@dataclass(frozen=True)
class DoctorReport:
    data: dict[str, Any]

    @property
    def apple_silicon(self) -> bool:
        return bool(self.data["cpu"]["apple_silicon"])

    @property
    def ollama_models(self) -> list[dict[str, Any]]:
        return list(self.data["ollama"]["models"]) if self.data["ollama"]["reachable"] else []


def probe_os() -> dict[str, Any]:
    return {
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def probe_cpu() -> dict[str, Any]:
    apple = platform.system() == "Darwin" and platform.machine() == "arm64"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"model": model, "cores": os.cpu_count() or 1, "apple_silicon": apple}


def probe_memory() -> dict[str, Any]:
    import psutil

    vm = psutil.virtual_memory()
    return {"total_bytes": int(vm.total), "available_bytes": int(vm.available)}


def probe_gpu() -> dict[str, Any]:
    """NVIDIA GPUs via ``nvidia-smi`` when it exists (2 s timeout); Apple Silicon shares system memory."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"nvidia": [], "detail": "nvidia-smi not found"}
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"nvidia": [], "detail": f"nvidia-smi failed: {exc}"}
    gpus = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[1].isdigit():
            gpus.append({"name": parts[0], "memory_total_mb": int(parts[1])})
    return {"nvidia": gpus, "detail": "ok" if gpus else (out.stderr.strip() or "no GPU reported")}


async def probe_health(backend: Backend, timeout_s: float) -> Health:
    """One backend's health within ``timeout_s`` (``TimeoutError`` past it); the backend is closed either way.

    The doctor and the TUI's Models screen both probe through this."""
    try:
        return await asyncio.wait_for(backend.health(), timeout=timeout_s)
    finally:
        with contextlib.suppress(SupervisorError, OSError):
            await backend.aclose()


async def probe_ollama(environ: Mapping[str, str]) -> dict[str, Any]:
    from supervisor.backends.registry import make_backend
    from supervisor.config import default_providers

    config = default_providers()["ollama"]
    if environ.get("OLLAMA_HOST"):
        config = config.model_copy(update={"host": environ["OLLAMA_HOST"]})
    backend = make_backend("ollama", config, environ)
    try:
        health = await probe_health(backend, PROBE_TIMEOUT_S + 1)
    except TimeoutError:
        return {"host": config.host, "reachable": False, "detail": "timed out", "models": [], "loaded": []}
    return {
        "host": config.host,
        "reachable": health.ok,
        "detail": health.detail,
        "models": [{"name": m.name, "size_bytes": m.size_bytes} for m in health.models if not m.loaded],
        "loaded": [
            {
                "name": m.name,
                "size_bytes": m.size_bytes,
                "expires_at": m.expires_at,
                "context_length": m.context_length,
            }
            for m in health.models
            if m.loaded
        ],
    }


def probe_mlx(environ: Mapping[str, str]) -> dict[str, Any]:
    """Is mlx-lm importable (checked without importing it), and is the embedded model on disk?"""
    importable = importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None
    from supervisor.models_pull import EMBEDDED_MODELS, embedded_model_path

    embedded = []
    for name in EMBEDDED_MODELS:
        path = embedded_model_path(name, environ)
        embedded.append({"name": name, "path": str(path), "present": path.exists()})
    detail = "importable" if importable else 'not installed (pip install "frugal-supervisor[mlx]")'
    return {"importable": importable, "detail": detail, "embedded_models": embedded}


def probe_api_keys(environ: Mapping[str, str], extra: tuple[str, ...] = ()) -> dict[str, bool]:
    """Which key variables are set: names only, never values."""
    return {name: bool(environ.get(name)) for name in (*KNOWN_KEY_VARS, *extra)}


def probe_ledger(environ: Mapping[str, str]) -> dict[str, Any]:
    path = paths.ledger_path(environ)
    size = path.stat().st_size if path.exists() else 0
    wal = path.with_name(path.name + "-wal")
    if wal.exists():
        size += wal.stat().st_size
    return {"path": str(path), "exists": path.exists(), "size_bytes": size}


def probe_prices() -> dict[str, Any]:
    """The fallback price database (genai-prices): loaded, its version and size, or why it is unavailable."""
    from supervisor.price_fallback import default_fallback

    return default_fallback().status()


def run_doctor(
    environ: Mapping[str, str], config_path: Path | None = None, extra_keys: tuple[str, ...] = ()
) -> DoctorReport:
    config = config_path or paths.default_config_path(environ)
    data: dict[str, Any] = {
        "version": __version__,
        "os": probe_os(),
        "cpu": probe_cpu(),
        "memory": probe_memory(),
        "gpu": probe_gpu(),
        "ollama": asyncio.run(probe_ollama(environ)),
        "mlx": probe_mlx(environ),
        "api_keys": probe_api_keys(environ, extra_keys),
        "prices": probe_prices(),
        "ledger": probe_ledger(environ),
        "config": {"path": str(config), "exists": config.exists()},
    }
    return DoctorReport(data)
