"""CUDA machines: which mlx build suits a machine, what the doctor reports, what `init` says. This machine has no
GPU, so the choice is tested on described machines; the last test runs only where an NVIDIA GPU is present."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from supervisor.doctor import (
    _proc_nvidia_gpus,
    installed_mlx_build,
    parse_nvidia_smi,
    probe_gpu,
    probe_mlx,
    probe_mlx_device,
    recommended_mlx_build,
)
from supervisor.init import EMBEDDED, fake_report, starter_config


def gpu(driver: str | None = "580.95.05", compute: str | None = "8.9", name: str = "NVIDIA L4") -> dict[str, object]:
    return {"name": name, "memory_total_mb": 23034, "driver_version": driver, "compute_capability": compute}


@pytest.mark.parametrize(
    ("system", "machine", "gpus", "build"),
    [
        ("Linux", "x86_64", [gpu()], "cuda13"),
        ("Linux", "x86_64", [gpu(driver="580.0")], "cuda13"),
        ("Linux", "x86_64", [gpu(driver="570.124.06")], "cuda12"),
        ("Linux", "x86_64", [gpu(driver="550.54.14")], "cuda12"),
        ("Linux", "x86_64", [gpu(driver="550.54.13")], "cpu"),
        ("Linux", "x86_64", [gpu(driver="535.104.05")], "cpu"),
        ("Linux", "x86_64", [gpu(driver=None)], "cuda12"),  # found by /proc only: the safer build
        ("Linux", "x86_64", [gpu(compute="7.0", name="Tesla V100")], "cpu"),  # mlx's CUDA build needs sm 7.5+
        ("Linux", "aarch64", [gpu(compute="9.0", name="GH200")], "cuda13"),
        ("Linux", "x86_64", [], "cpu"),
        ("Darwin", "arm64", [], "metal"),
        ("Darwin", "x86_64", [], "cpu"),
    ],
)
def test_recommended_mlx_build(system: str, machine: str, gpus: list[dict[str, object]], build: str) -> None:
    chosen, why = recommended_mlx_build(system, machine, gpus)
    assert chosen == build
    assert why


def test_nvidia_smi_csv_is_parsed() -> None:
    text = "NVIDIA L4, 23034, 580.95.05, 8.9\nNVIDIA GeForce RTX 3090, 24576, 580.95.05, 8.6\n"
    assert parse_nvidia_smi(text) == [
        {"name": "NVIDIA L4", "memory_total_mb": 23034, "driver_version": "580.95.05", "compute_capability": "8.9"},
        {
            "name": "NVIDIA GeForce RTX 3090",
            "memory_total_mb": 24576,
            "driver_version": "580.95.05",
            "compute_capability": "8.6",
        },
    ]
    # An older nvidia-smi that does not know compute_cap answers "[N/A]" for it.
    assert parse_nvidia_smi("Tesla T4, 15360, 550.54.15, [N/A]\n")[0]["compute_capability"] is None


def test_the_kernel_driver_finds_a_gpu_without_nvidia_smi(tmp_path: Path) -> None:
    root = tmp_path / "nvidia"
    (root / "gpus" / "0000:00:1e.0").mkdir(parents=True)
    (root / "version").write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U22)\n"
        "GCC version:  gcc version 12.2.0\n"
    )
    (root / "gpus" / "0000:00:1e.0" / "information").write_text("Model: \t\t NVIDIA L4\nIRQ:   \t\t 40\n")
    found = _proc_nvidia_gpus(root)
    assert found == [
        {"name": "NVIDIA L4", "memory_total_mb": None, "driver_version": "580.95.05", "compute_capability": None}
    ]
    assert recommended_mlx_build("Linux", "x86_64", found)[0] == "cuda13"
    assert _proc_nvidia_gpus(tmp_path / "absent") == []


def test_installed_build_comes_from_the_distributions() -> None:
    assert installed_mlx_build({"mlx-cuda-13": "0.32.4", "mlx-cpu": None}) == ("cuda13", "0.32.4")
    assert installed_mlx_build({"mlx-cuda-12": "0.32.4"}) == ("cuda12", "0.32.4")
    assert installed_mlx_build({"mlx-cpu": "0.32.4"}) == ("cpu", "0.32.4")
    assert installed_mlx_build({}) == (None, None)


def test_this_machine_without_a_gpu() -> None:
    """The real probes here: no NVIDIA GPU, mlx's CPU build, computing on the CPU, nothing to install."""
    if probe_gpu()["nvidia"]:
        pytest.skip("this machine has an NVIDIA GPU: the GPU test below covers it")
    build, version = installed_mlx_build()
    assert build == "cpu"
    assert version
    assert probe_mlx_device("cpu")["device"] == "cpu"
    mlx = probe_mlx({"SUPERVISOR_HOME": "/nonexistent"}, [])
    assert mlx["build"] == "cpu"
    assert mlx["device"] == "cpu"
    assert mlx["recommended_build"] == "cpu"
    assert mlx["recommended_install"] is None


def test_a_gpu_build_that_cannot_start_reports_the_cpu(tmp_path: Path) -> None:
    """Asking a broken GPU build happens in a child process and never takes the doctor down."""
    assert probe_mlx_device(None)["device"] is None
    # The real mlx here is the CPU build, asked as if it were a CUDA build: it answers "cpu".
    device = probe_mlx_device("cuda13")
    assert device["device"] == "cpu"


def test_init_on_a_cuda_machine() -> None:
    nvidia = {"nvidia": [gpu()], "detail": "ok"}
    on_gpu = {"build": "cuda13", "device": "gpu", "recommended_build": "cuda13", "recommended_install": None}
    text, choices = starter_config(fake_report(gpu=nvidia, mlx=on_gpu), {})
    assert choices.local == [EMBEDDED]
    assert any("NVIDIA GPU (NVIDIA L4) with mlx's cuda13 build" in r for r in choices.reasons)
    assert "run on it" in text

    # The CPU build on a GPU machine: init says how to use the GPU.
    on_cpu = {
        "build": "cpu",
        "device": "cpu",
        "recommended_build": "cuda13",
        "recommended_why": "NVIDIA L4 with driver 580.95.05: mlx's CUDA 13 build runs on it",
        "recommended_install": 'pip install "frugal-supervisor[cuda]"',
    }
    _, choices = starter_config(fake_report(gpu=nvidia, mlx=on_cpu), {})
    assert any('`pip install "frugal-supervisor[cuda]"` runs MLX models on the GPU' in r for r in choices.reasons)

    # Ollama's pulled models come first when its server answers; the GPU note stays.
    ollama = {
        "reachable": True,
        "host": "http://127.0.0.1:11434",
        "models": [{"name": "qwen3:4b", "size_bytes": 2_500_000_000}],
    }
    _, choices = starter_config(fake_report(gpu=nvidia, mlx=on_gpu, ollama=ollama), {})
    assert choices.local[0] == "ollama:qwen3:4b"
    assert any("NVIDIA GPU" in r for r in choices.reasons)


@pytest.mark.gpu
def test_mlx_models_run_on_the_gpu(tmp_path: Path) -> None:
    """Where an NVIDIA GPU and mlx's CUDA build are present: the tiny model generates on the GPU."""
    from supervisor.backends.base import Message, Request
    from supervisor.backends.mlx import MLXBackend
    from supervisor.config import ProviderConfig
    from tests.fakes.tiny_model import build_tiny_llama

    build, _ = installed_mlx_build()
    assert build in ("cuda13", "cuda12"), f"an NVIDIA GPU is here but mlx's {build} build is installed"
    assert probe_mlx_device(build)["device"] == "gpu"
    model = build_tiny_llama(tmp_path / "tiny")
    backend = MLXBackend("mlx", ProviderConfig(kind="mlx", local=True, models={"tiny": str(model)}), dict(os.environ))

    async def go() -> str:
        try:
            result = await backend.complete(
                Request(model="tiny", messages=(Message("user", "hi"),), max_output_tokens=8)
            )
            return str(result.finish_reason)
        finally:
            await backend.aclose()

    assert asyncio.run(go()) == "length"
    import mlx.core as mx

    assert mx.default_device() == mx.gpu
    assert mx.cuda.is_available()
