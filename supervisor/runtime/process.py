"""Child processes for tier-0 commands and verify gates.

Each command runs in the workspace, in its own process group (its own session), with a timeout. On timeout or
cancellation the whole group is killed: SIGTERM, a grace period, then SIGKILL, so a gate that spawns children
cannot leave them behind. Output is captured up to a size limit (the rest is counted, not kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

TERM_GRACE_S = 2.0
DRAIN_GRACE_S = 1.0  # after the command exits, how long its output may keep arriving (from what it left running)
EXIT_POLL_S = 0.05
CHILDREN_FILE = "children"  # process groups a run started, so a recovery can stop what a crash left running


@dataclass(frozen=True, slots=True)
class CommandResult:
    command: str
    exit_code: int | None  # None when killed by us
    output: str  # stdout and stderr interleaved, up to the capture limit
    truncated_bytes: int
    timed_out: bool
    seconds: float
    stopped: bool = False  # ended early by the caller (``stop``), not by itself or a timeout

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.stopped

    def summary(self, limit: int = 2000) -> str:
        """The tail of the output (where errors usually are), with the exit status."""
        status = "timed out" if self.timed_out else "stopped" if self.stopped else f"exit {self.exit_code}"
        text = self.output.strip()
        if len(text) > limit:
            text = "…" + text[-limit:]
        return f"$ {self.command}\n[{status}]\n{text}".rstrip()


@dataclass
class ProcessRegistry:
    """Which child processes each agent has running now (the TUI samples their CPU and RSS)."""

    by_agent: dict[str, set[int]] = field(default_factory=dict)

    def add(self, agent: str, pid: int) -> None:
        self.by_agent.setdefault(agent, set()).add(pid)

    def remove(self, agent: str, pid: int) -> None:
        self.by_agent.get(agent, set()).discard(pid)


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run_command(
    command: str,
    cwd: Path,
    *,
    timeout_s: float,
    capture_bytes: int = 64_000,
    env: Mapping[str, str] | None = None,
    registry: ProcessRegistry | None = None,
    agent: str = "",
    group_file: Path | None = None,
    on_output: Callable[[bytes], None] | None = None,
    stop: asyncio.Event | None = None,
    on_start: Callable[[int], None] | None = None,
) -> CommandResult:
    """Run ``command`` with the shell in ``cwd``; never leaves a child behind, whatever happens to us.

    ``group_file`` records the child's process group, so that if we are killed outright (SIGKILL), the next
    start can stop whatever the command left running before it restores the workspace. ``on_output`` gets the
    output as it arrives (an agent step's live log); setting ``stop`` ends the command early (its group is
    stopped like on a timeout, and the result says ``stopped``); ``on_start`` gets the child's pid.
    """
    started = time.monotonic()
    proc = await asyncio.create_subprocess_shell(
        command,
        cwd=str(cwd),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env=dict(env) if env is not None else None,
    )
    if registry is not None:
        registry.add(agent, proc.pid)
    if group_file is not None:
        _record_group(group_file, proc.pid)
    if on_start is not None:
        on_start(proc.pid)
    kept = bytearray()
    dropped = 0

    async def read_all() -> None:
        nonlocal dropped
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            room = capture_bytes - len(kept)
            if room > 0:
                kept.extend(chunk[:room])
            dropped += max(0, len(chunk) - max(room, 0))
            if on_output is not None:
                on_output(chunk)

    async def exit_seen() -> None:
        # ``proc.wait()`` also waits for the pipe to close, which a descendant holding it delays for as long as it
        # lives; the exit status is known at once.
        while proc.returncode is None:
            await asyncio.sleep(EXIT_POLL_S)

    reader = asyncio.ensure_future(read_all())
    waiter = asyncio.ensure_future(proc.wait())
    exited = asyncio.ensure_future(exit_seen())
    stopper = asyncio.ensure_future(stop.wait()) if stop is not None else None
    timed_out = stopped = False
    try:
        try:
            async with asyncio.timeout(timeout_s):
                ends = {waiter, exited} | ({stopper} if stopper is not None else set())
                done, _ = await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
                if waiter in done or exited in done:
                    # Drain what it wrote. A descendant that keeps the pipe open (a daemonized grandchild) does not
                    # hold us past a short grace: the command itself has ended.
                    await asyncio.wait({reader}, timeout=DRAIN_GRACE_S)
                else:
                    stopped = True
        except TimeoutError:
            timed_out = True
        if (timed_out or stopped) and proc.returncode is None:
            await _terminate(proc)
    except asyncio.CancelledError:
        await _terminate(proc)
        raise
    finally:
        for task in (reader, waiter, exited, stopper):
            if task is not None and not task.done():
                task.cancel()
        if registry is not None:
            registry.remove(agent, proc.pid)
        # Whatever the command left running in its group goes too.
        _kill_group(proc.pid, signal.SIGKILL)
    return CommandResult(
        command=command,
        exit_code=None if timed_out or stopped else proc.returncode,
        output=kept.decode("utf-8", errors="replace"),
        truncated_bytes=dropped,
        timed_out=timed_out,
        seconds=time.monotonic() - started,
        stopped=stopped,
    )


def _record_group(path: Path, pgid: int) -> None:
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{pgid} {time.time():.3f}\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        return  # best effort: the snapshot directory may already be gone at the very end of a run


def kill_recorded_groups(path: Path) -> int:
    """SIGKILL every live process in the groups listed in ``path`` (started after they were recorded)."""
    import psutil

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    groups: dict[int, float] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            groups[int(parts[0])] = float(parts[1])
    if not groups:
        return 0
    killed = 0
    for proc in psutil.process_iter(["pid", "create_time"]):
        try:
            pgid = os.getpgid(proc.pid)
        except (ProcessLookupError, PermissionError):
            continue
        started = groups.get(pgid)
        if started is not None and proc.info["create_time"] >= started - 1.0 and proc.pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
    return killed


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the group, wait a little, then SIGKILL it."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=TERM_GRACE_S)
    except TimeoutError:
        _kill_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=TERM_GRACE_S)
