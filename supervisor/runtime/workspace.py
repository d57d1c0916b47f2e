"""Workspace safety: paths that cannot escape, and snapshots that restore a workspace byte-for-byte.

A run copies its workspace before the first step (``Snapshot.take``); each model attempt takes an incremental
snapshot that hard-links unchanged files to the previous copy. A failed attempt restores its snapshot; a
failed run restores the run's. Snapshots live under the data dir, so after a crash the next start can restore
the workspace of a run that never finished.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisor.atomic_file import atomic_write_text
from supervisor.errors import SupervisorError

MANIFEST = "manifest.json"
FILES = "files"


class WorkspaceError(SupervisorError):
    """A path would leave the workspace, or the workspace is too big to snapshot."""


def resolve_inside(workspace: Path, relative: str) -> Path:
    """``workspace / relative``, refusing absolute paths, ``..``, and symlinks that lead outside."""
    root = workspace.resolve()
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise WorkspaceError(f"{relative!r} is outside the workspace {root}", "use a path relative to the workspace")
    target = (root / candidate).resolve()
    if target != root and root not in target.parents:
        raise WorkspaceError(
            f"{relative!r} resolves to {target}, outside the workspace {root} (a symlink?)",
            "point the step at a file inside the workspace",
        )
    return target


@dataclass(frozen=True, slots=True)
class Entry:
    size: int
    mtime_ns: int
    mode: int


def _walk(root: Path, ignore: Sequence[str]) -> Iterator[tuple[str, os.stat_result]]:
    ignored = set(ignore)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in ignored)
        for name in sorted(filenames):
            full = Path(dirpath) / name
            st = full.lstat()
            yield full.relative_to(root).as_posix(), st


@dataclass
class Snapshot:
    """A copy of a workspace's files (regular files and symlinks) with a manifest."""

    workspace: Path
    directory: Path
    entries: dict[str, Entry]
    ignore: tuple[str, ...]

    @classmethod
    def take(
        cls,
        workspace: Path,
        directory: Path,
        *,
        ignore: Sequence[str] = (),
        max_bytes: int = 256_000_000,
        base: Snapshot | None = None,
    ) -> Snapshot:
        """Copy ``workspace`` into ``directory``; files unchanged since ``base`` are hard-linked to its copy."""
        workspace = workspace.resolve()
        files_dir = directory / FILES
        files_dir.mkdir(parents=True, exist_ok=True)
        entries: dict[str, Entry] = {}
        total = 0
        for rel, st in _walk(workspace, ignore):
            src = workspace / rel
            dst = files_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            entry = Entry(st.st_size, st.st_mtime_ns, st.st_mode)
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            else:
                total += st.st_size
                if total > max_bytes:
                    shutil.rmtree(directory, ignore_errors=True)
                    raise WorkspaceError(
                        f"workspace {workspace} is larger than the snapshot limit ({max_bytes:,} bytes)",
                        "point the agent at a smaller directory, add big directories to limits.snapshot_ignore, "
                        "or raise limits.max_snapshot_bytes",
                    )
                previous = base.entries.get(rel) if base is not None else None
                if base is not None and previous == entry and (base.directory / FILES / rel).exists():
                    os.link(base.directory / FILES / rel, dst)
                else:
                    shutil.copy2(src, dst, follow_symlinks=False)
            entries[rel] = entry
        snapshot = cls(workspace, directory, entries, tuple(ignore))
        # The manifest is written last and atomically: its presence means every copy is in place.
        manifest = json.dumps(
            {
                "workspace": str(workspace),
                "ignore": list(ignore),
                "entries": {k: [e.size, e.mtime_ns, e.mode] for k, e in entries.items()},
            }
        )
        atomic_write_text(directory / MANIFEST, manifest)
        return snapshot

    @classmethod
    def load(cls, directory: Path) -> Snapshot | None:
        """The snapshot in ``directory``, or None when it is incomplete (no manifest: taking or discarding it
        was interrupted; the workspace was not touched by the run in the first case, and was restored or
        kept on purpose in the second)."""
        try:
            data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return cls(
            Path(data["workspace"]),
            directory,
            {k: Entry(*v) for k, v in data["entries"].items()},
            tuple(data["ignore"]),
        )

    def changes(self) -> tuple[list[str], list[str]]:
        """(files that differ from the snapshot or are missing, files that are new)."""
        current = dict(_walk(self.workspace, self.ignore)) if self.workspace.exists() else {}
        changed = []
        for rel, entry in self.entries.items():
            st = current.get(rel)
            if st is None or self._differs(rel, entry, st):
                changed.append(rel)
        new = [rel for rel in current if rel not in self.entries]
        return changed, new

    def _differs(self, rel: str, entry: Entry, st: os.stat_result) -> bool:
        saved = self.directory / FILES / rel
        current = self.workspace / rel
        if not saved.is_symlink() and not saved.exists():
            raise WorkspaceError(
                f"snapshot {self.directory} is incomplete: {rel} is missing", "it cannot be restored from"
            )
        if os.path.islink(saved) or os.path.islink(current):
            return not (
                os.path.islink(saved) and os.path.islink(current) and os.readlink(saved) == os.readlink(current)
            )
        if st.st_size != entry.size or st.st_mode != entry.mode:
            return True
        # Same size: compare bytes, since a rewrite can keep the size and land in the same mtime tick.
        return not filecmp.cmp(saved, current, shallow=False)

    def restore(self) -> tuple[int, int]:
        """Put the workspace back exactly as it was; returns (files restored, files removed)."""
        changed, new = self.changes()
        for rel in new:
            path = self.workspace / rel
            if path.is_symlink() or path.is_file():
                path.unlink()
        self._remove_empty_dirs(new)
        for rel in changed:
            src = self.directory / FILES / rel
            dst = self.workspace / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                if dst.is_dir() and not dst.is_symlink():
                    shutil.rmtree(dst)
                else:
                    dst.unlink()
            if os.path.islink(src):
                os.symlink(os.readlink(src), dst)
            else:
                tmp = dst.with_name(f".{dst.name}.supervisor-restore")
                shutil.copy2(src, tmp, follow_symlinks=False)
                os.replace(tmp, dst)
        return len(changed), len(new)

    def _remove_empty_dirs(self, removed: list[str]) -> None:
        known_dirs = {str(Path(rel).parent) for rel in self.entries}
        for rel in sorted(removed, key=lambda r: -r.count("/")):
            parent = Path(rel).parent
            while str(parent) not in (".", "") and str(parent) not in known_dirs:
                path = self.workspace / parent
                try:
                    path.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def discard(self) -> None:
        # Manifest first: a crash halfway through leaves an incomplete snapshot that is never restored from.
        (self.directory / MANIFEST).unlink(missing_ok=True)
        shutil.rmtree(self.directory, ignore_errors=True)
