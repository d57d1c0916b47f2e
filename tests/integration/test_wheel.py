"""The built wheel ships the catalog and assets as package data, and an installed copy finds them there."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from supervisor import __version__

REPO = Path(__file__).resolve().parents[2]
PROVIDERS = ("anthropic", "openai", "deepseek", "gemini", "ollama", "mlx")
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel once from the working tree (no isolation: no network, hatchling is in the venv)."""
    outdir = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(outdir), str(REPO)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = outdir.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unzipped: what an installer would put in site-packages."""
    target = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_the_wheel_ships_one_catalog_file_per_provider_and_the_assets(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    catalog_files = {n for n in names if n.startswith("supervisor/_data/models/") and n.endswith(".toml")}
    assert {f"supervisor/_data/models/{p}.toml" for p in PROVIDERS} <= catalog_files
    assert any(n.startswith("supervisor/_data/assets/") for n in names)
    for source in (REPO / "assets").rglob("*"):
        if source.is_file():
            assert f"supervisor/_data/assets/{source.relative_to(REPO / 'assets').as_posix()}" in names
    assert "supervisor/__main__.py" in names
    assert "supervisor/ledger/migrations.py" in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_the_wheel_declares_the_console_script_and_its_version(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        dist_info = next(n.split("/")[0] for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
        metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
    scripts = configparser.ConfigParser()
    scripts.read_string(entry_points)
    assert scripts["console_scripts"]["supervisor"] == "supervisor.cli:main"
    assert metadata["Name"] == "frugal-supervisor"
    assert metadata["Version"] == __version__


PROBE = r"""
import json
import supervisor
from supervisor import paths
from supervisor.catalog import load_catalog

catalog = load_catalog([paths.bundled_models_dir()])
print(json.dumps({
    "package": supervisor.__file__,
    "models_dir": str(paths.bundled_models_dir()),
    "assets_dir": str(paths.assets_dir()),
    "providers": sorted({m.provider for m in catalog}),
    "files": [str(f) for f in catalog.files],
}))
"""


def run_installed(unpacked: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run Python with only the unpacked wheel ahead of site-packages (cwd elsewhere, so no checkout leaks in)."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        check=False,
    )


def test_an_installed_wheel_finds_its_bundled_catalog(unpacked: Path, tmp_path: Path) -> None:
    done = run_installed(unpacked, tmp_path, "-c", PROBE)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    data = unpacked / "supervisor" / "_data"
    assert Path(found["package"]).is_relative_to(unpacked)
    assert Path(found["models_dir"]) == data / "models"
    assert Path(found["assets_dir"]) == data / "assets"
    assert set(PROVIDERS) <= set(found["providers"])
    assert found["files"]
    assert all(Path(f).is_relative_to(data / "models") for f in found["files"])


def test_the_installed_cli_prices_from_the_bundled_catalog(unpacked: Path, tmp_path: Path) -> None:
    done = run_installed(
        unpacked,
        tmp_path,
        "-m",
        "supervisor",
        "catalog",
        "price",
        "anthropic:claude-opus-5-5",
        "--input",
        "2000",
        "--output",
        "1500",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total_micros"] == 38_000
    listing = run_installed(unpacked, tmp_path, "-m", "supervisor", "catalog", "--json")
    assert listing.returncode == 0, listing.stderr
    catalog_files = {m["catalog_file"] for m in json.loads(listing.stdout)}
    assert all(Path(f).is_relative_to(unpacked / "supervisor" / "_data" / "models") for f in catalog_files)
