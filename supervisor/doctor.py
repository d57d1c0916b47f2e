"""``supervisor doctor``: what this machine has, probed quickly (every probe has a short timeout).

The JSON keys are stable (documented in the README): ``version``, ``os``, ``cpu``, ``memory``, ``gpu``,
``ollama``, ``mlx``, ``api_keys``, ``prices``, ``ledger``, ``config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supervisor import __version__, paths
from supervisor.errors import SupervisorError

if TYPE_CHECKING:
    from supervisor.backends.base import Backend, Health

PROBE_TIMEOUT_S = 2.0
MLX_DEVICE_TIMEOUT_S = 30.0  # importing mlx's CUDA build and initialising the device takes a few seconds
KNOWN_KEY_VARS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "DEEPSEEK_API_KEY", "GEMINI_API_KEY")
PROC_NVIDIA = Path("/proc/driver/nvidia")

# mlx's CUDA builds (PyPI: mlx[cuda13] -> mlx-cuda-13, mlx[cuda12] -> mlx-cuda-12; see ml-explore's install
# docs): both need compute capability >= 7.5; CUDA 13 needs driver >= 580, CUDA 12 driver >= 550.54.14.
MLX_BUILDS = ("mlx-cuda-13", "mlx-cuda-12", "mlx-cpu", "mlx-metal")
CUDA13_MIN_DRIVER = (580,)
CUDA12_MIN_DRIVER = (550, 54, 14)
CUDA_MIN_COMPUTE = (7, 5)
INSTALL = {
    "cuda13": 'pip install "frugal-supervisor[cuda]"',
    "cuda12": 'pip install "frugal-supervisor[cuda12]"',
    "cpu": 'pip install "frugal-supervisor[mlx]"',
    "metal": 'pip install "frugal-supervisor[mlx]"',
}


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
    """NVIDIA GPUs via ``nvidia-smi`` (2 s timeout), else the driver's ``/proc/driver/nvidia``; Apple Silicon
    shares system memory. Each GPU has its name, memory, driver version and compute capability when known."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        gpus = _proc_nvidia_gpus(PROC_NVIDIA)
        detail = "found by the NVIDIA driver (nvidia-smi not found)" if gpus else "nvidia-smi not found"
        return {"nvidia": gpus, "detail": detail}
    fields = "name,memory.total,driver_version,compute_cap"
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"nvidia": [], "detail": f"nvidia-smi failed: {exc}"}
    gpus = parse_nvidia_smi(out.stdout)
    return {"nvidia": gpus, "detail": "ok" if gpus else (out.stderr.strip() or "no GPU reported")}


async def probe_health(backend: Backend, timeout_s: float) -> Health:
    """One backend's health within ``timeout_s`` (``TimeoutError`` past it); the backend is closed either way.

    The doctor and the TUI's Models screen both probe through this."""
    try:
        return await asyncio.wait_for(backend.health(), timeout=timeout_s)
    finally:
        with contextlib.suppress(SupervisorError, OSError):
            await backend.aclose()


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap`` CSV lines -> GPU dicts."""
    gpus = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 2 and parts[1].isdigit():
            gpus.append(
                {
                    "name": parts[0],
                    "memory_total_mb": int(parts[1]),
                    "driver_version": parts[2] if len(parts) > 2 and parts[2][:1].isdigit() else None,
                    "compute_capability": parts[3] if len(parts) > 3 and parts[3][:1].isdigit() else None,
                }
            )
    return gpus


def _proc_nvidia_gpus(root: Path) -> list[dict[str, Any]]:
    """GPUs the NVIDIA kernel driver lists under ``/proc/driver/nvidia`` (when nvidia-smi is not installed)."""
    try:
        version = (root / "version").read_text(errors="replace")
        boards = sorted((root / "gpus").iterdir())
    except OSError:
        return []
    driver = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+(?:\.\d+)+)", version)
    gpus = []
    for board in boards:
        try:
            info = (board / "information").read_text(errors="replace")
        except OSError:
            continue
        model = re.search(r"^Model:\s*(.+)$", info, re.MULTILINE)
        gpus.append(
            {
                "name": model.group(1).strip() if model else board.name,
                "memory_total_mb": None,
                "driver_version": driver.group(1) if driver else None,
                "compute_capability": None,
            }
        )
    return gpus


def _version(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    numbers = re.findall(r"\d+", text)
    return tuple(int(n) for n in numbers) if numbers else None


def recommended_mlx_build(system: str, machine: str, gpus: list[dict[str, Any]]) -> tuple[str, str]:
    """Which mlx build suits this machine, and why: ``metal`` (Apple Silicon), ``cuda13``, ``cuda12`` or ``cpu``.

    Pure: the machine is its arguments, so the choice is tested for machines this one is not."""
    if system == "Darwin" and machine == "arm64":
        return "metal", "Apple Silicon: mlx runs on the GPU with Metal"
    if system != "Linux":
        return "cpu", f"mlx has no GPU build for {system}"
    if not gpus:
        return "cpu", "no NVIDIA GPU: mlx runs on the CPU"
    gpu = gpus[0]
    name = gpu.get("name") or "NVIDIA GPU"
    compute = _version(gpu.get("compute_capability"))
    if compute is not None and compute < CUDA_MIN_COMPUTE:
        return "cpu", f"{name} has compute capability {gpu['compute_capability']}; mlx's CUDA build needs 7.5 or newer"
    driver = _version(gpu.get("driver_version"))
    if driver is None:
        return (
            "cuda12",
            f"{name}: driver version unknown; the CUDA 12 build needs driver 550.54.14+, CUDA 13 needs 580+",
        )
    if driver >= CUDA13_MIN_DRIVER:
        return "cuda13", f"{name} with driver {gpu['driver_version']}: mlx's CUDA 13 build runs on it"
    if driver >= CUDA12_MIN_DRIVER:
        return "cuda12", f"{name} with driver {gpu['driver_version']} (< 580): mlx's CUDA 12 build runs on it"
    return "cpu", f"{name}: driver {gpu['driver_version']} is older than 550.54.14, which mlx's CUDA build needs"


def installed_mlx_build(versions: Mapping[str, str | None] | None = None) -> tuple[str | None, str | None]:
    """The mlx build installed here (``cuda13``, ``cuda12``, ``cpu``, ``metal``) and its version, from the
    installed distributions (``mlx-cuda-13``...), without importing mlx."""
    found = versions if versions is not None else {name: _dist_version(name) for name in MLX_BUILDS}
    for dist, build in (
        ("mlx-cuda-13", "cuda13"),
        ("mlx-cuda-12", "cuda12"),
        ("mlx-metal", "metal"),
        ("mlx-cpu", "cpu"),
    ):
        if found.get(dist):
            return build, found[dist]
    return None, None


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def probe_mlx_device(build: str | None) -> dict[str, Any]:
    """The device mlx computes on. A CPU build can only use the CPU; a GPU build is asked in a child process
    (importing mlx here would load it into this process, and a broken CUDA install must not take us down)."""
    if build is None:
        return {"device": None, "detail": "mlx is not installed"}
    if build == "cpu":
        return {"device": "cpu", "detail": "mlx's CPU build"}
    code = (
        "import mlx.core as mx\n"
        "cuda = hasattr(mx, 'cuda') and mx.cuda.is_available()\n"
        "metal = hasattr(mx, 'metal') and mx.metal.is_available()\n"
        "gpu = cuda or metal\n"
        "print('gpu' if gpu else 'cpu', mx.default_device())\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=MLX_DEVICE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"device": None, "detail": f"could not ask mlx for its device: {exc}"}
    words = done.stdout.split()
    if done.returncode != 0 or not words:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"device": "cpu", "detail": f"mlx's {build} build did not start on the GPU ({last[:200]})"}
    return {"device": words[0], "detail": " ".join(words[1:])}


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


def probe_mlx(environ: Mapping[str, str], gpus: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Is mlx-lm importable (checked without importing it), which build is installed and on which device it
    computes, which build this machine should have, and is the embedded model on disk?"""
    importable = importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None
    from supervisor.models_pull import EMBEDDED_MODELS, embedded_model_path

    embedded = []
    for name in EMBEDDED_MODELS:
        path = embedded_model_path(name, environ)
        embedded.append({"name": name, "path": str(path), "present": path.exists()})
    detail = "importable" if importable else 'not installed (pip install "frugal-supervisor[mlx]")'
    build, version = installed_mlx_build()
    device = probe_mlx_device(build if importable else None)
    wanted, why = recommended_mlx_build(platform.system(), platform.machine(), gpus if gpus is not None else [])
    return {
        "importable": importable,
        "detail": detail,
        "build": build,
        "version": version,
        "device": device["device"],
        "device_detail": device["detail"],
        "recommended_build": wanted,
        "recommended_why": why,
        "recommended_install": None if wanted == build else INSTALL[wanted],
        "embedded_models": embedded,
    }


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
    gpu = probe_gpu()
    data: dict[str, Any] = {
        "version": __version__,
        "os": probe_os(),
        "cpu": probe_cpu(),
        "memory": probe_memory(),
        "gpu": gpu,
        "ollama": asyncio.run(probe_ollama(environ)),
        "mlx": probe_mlx(environ, gpu["nvidia"]),
        "api_keys": probe_api_keys(environ, extra_keys),
        "prices": probe_prices(),
        "ledger": probe_ledger(environ),
        "config": {"path": str(config), "exists": config.exists()},
    }
    return DoctorReport(data)
