"""Start-up benchmark: ``supervisor --help`` and the TUI's first paint, against bare Python in the same run.

Run as ``python bench/startup.py [--runs 30] [--json PATH]``.

(a) ``supervisor --help`` (the installed console script, else ``python -m supervisor``) vs ``python -c pass``:
    subprocesses, interleaved, a few warm-up runs discarded (they fill the page cache and write .pyc files);
    median and p95 of each and the difference. The heaviest imports of ``--help`` (``-X importtime``) are
    listed, as they are what lazy imports would cut.
(b) TUI first paint: ``supervisor tui`` on a pseudo-terminal (120x40, TERM=xterm-256color) with a throwaway
    config (two agents, scripted tiers) and data dir, timed from spawn until the first full frame has been
    written: after the switch to the alternate screen, at least half of the screen's cells drawn. The floor is
    the same measure for a minimal Textual app (one Static widget). The app is then quit (ctrl+q, then ctrl+c,
    then SIGTERM).

Every figure is paired with its baseline measured in the same run, so the differences mean something across
machines.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from supervisor import __version__

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import git_commit, machine, write_results  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "results" / "startup.json"
TARGET_HELP_MS = 300.0
COLS, ROWS = 120, 40
FRAME_SHARE = 0.5
TUI_TIMEOUT_S = 30.0

ALT_SCREEN = b"\x1b[?1049h"
_ANSI = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|P[^\x1b]*\x1b\\|[@-Z\\-_])")

MINIMAL_APP = """
from textual.app import App, ComposeResult
from textual.widgets import Static


class Minimal(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("hello")


Minimal().run()
"""

TUI_CONFIG = """
[providers.sim-cheap]
kind = "scripted"
script = "cheap.toml"
simulated_as = "deepseek:deepseek-flash"

[tiers]
cheap = ["sim-cheap:deepseek-flash"]

[agents.triage]
goal = "Triage the inbox."
workspace = "ws"
schedule = "every 1h"
ladder = ["cheap"]
frontier = "never"
[[agents.triage.steps]]
name = "check"
prompt = "Reply OK."
output = "status"
verify = [{ regex = "^OK" }]

[agents.tidy]
goal = "Keep the notes tidy."
workspace = "ws"
[[agents.tidy.steps]]
name = "sort"
run = "true"
"""


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stats_ms(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples) * 1000,
        "p95_ms": percentile(samples, 0.95) * 1000,
        "min_ms": min(samples) * 1000,
    }


def supervisor_command() -> list[str]:
    script = Path(sys.executable).parent / "supervisor"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("supervisor")
    return [found] if found else [sys.executable, "-m", "supervisor"]


def run_quiet(args: list[str], env: Mapping[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, env=dict(env), check=False)
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr.decode(errors='replace')}")
    return elapsed


def interleaved(commands: list[Callable[[], float]], runs: int, warmup: int) -> list[list[float]]:
    samples: list[list[float]] = [[] for _ in commands]
    for i in range(warmup + runs):
        for k in range(len(commands)):
            index = (i + k) % len(commands)
            elapsed = commands[index]()
            if i >= warmup:
                samples[index].append(elapsed)
    return samples


def heaviest_imports(args: list[str], env: Mapping[str, str], top: int = 8) -> list[dict[str, Any]]:
    """The modules with the largest cumulative import time under ``-X importtime`` (top-level packages)."""
    if args[0] == sys.executable:
        cmd = [sys.executable, "-X", "importtime", *args[1:]]
    else:
        cmd = [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            "import sys; from supervisor.cli import main; sys.exit(main())",
            *args[1:],
        ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(env), check=False)
    rows: list[dict[str, Any]] = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if match and len(match.group(3)) <= 1:  # top-level imports only (cumulative includes their children)
            rows.append({"module": match.group(4), "cumulative_ms": int(match.group(2)) / 1000})
    rows.sort(key=lambda r: -float(r["cumulative_ms"]))
    return rows[:top]


# ------------------------------------------------------------------------------------------------------------
# First paint on a pseudo-terminal


@dataclass
class Paint:
    seconds: float | None  # spawn -> first full frame; None if it never painted
    exit_code: int | None
    error: str = ""


def first_paint(args: list[str], env: Mapping[str, str], cwd: Path, timeout_s: float = TUI_TIMEOUT_S) -> Paint:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    full_env = {**env, "TERM": "xterm-256color", "COLUMNS": str(COLS), "LINES": str(ROWS)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args, stdin=slave, stdout=slave, stderr=slave, env=full_env, cwd=cwd, start_new_session=True, close_fds=True
    )
    os.close(slave)
    buffer = b""
    painted: float | None = None
    need = int(COLS * ROWS * FRAME_SHARE)
    try:
        while time.perf_counter() - t0 < timeout_s:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                buffer += chunk
                start = buffer.find(ALT_SCREEN)
                if start >= 0:
                    drawn = _ANSI.sub(b"", buffer[start + len(ALT_SCREEN) :])
                    if len(drawn.replace(b"\r", b"").replace(b"\n", b"")) >= need:
                        painted = time.perf_counter() - t0
                        break
            elif proc.poll() is not None:
                break
        exit_code = quit_app(proc, master)
    finally:
        os.close(master)
    error = ""
    if painted is None:
        text = _ANSI.sub(b"", buffer).decode(errors="replace").strip()
        error = " | ".join(line.strip() for line in text.splitlines()[-4:] if line.strip()) or "no output"
    return Paint(painted, exit_code, error)


def quit_app(proc: subprocess.Popen[bytes], master: int) -> int | None:
    """ctrl+q, then ctrl+c, then SIGTERM, then SIGKILL: only our own child (and its session)."""
    for key in (b"\x11", b"\x03"):
        if proc.poll() is not None:
            break
        try:
            os.write(master, key)
        except OSError:
            break
        _wait(proc, master, 2.0)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        _wait(proc, master, 2.0)
    try:
        return proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        return None


def _wait(proc: subprocess.Popen[bytes], master: int, seconds: float) -> None:
    """Wait for the child to exit, reading (and dropping) what it writes so it never blocks on the terminal."""
    deadline = time.perf_counter() + seconds
    while proc.poll() is None and time.perf_counter() < deadline:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                os.read(master, 65536)
            except OSError:  # the child closed its side; keep polling for its exit
                time.sleep(0.02)


def tui_figures(runs: int, env: Mapping[str, str], work: Path) -> dict[str, Any]:
    (work / "ws").mkdir(exist_ok=True)
    (work / "cheap.toml").write_text('default = "OK"\n')
    config = work / "supervisor.toml"
    config.write_text(TUI_CONFIG)
    tui = [*supervisor_command(), "tui", "--config", str(config)]
    minimal = [sys.executable, "-c", MINIMAL_APP]
    probe = first_paint(tui, env, work)
    if probe.seconds is None:
        return {
            "available": False,
            "error": probe.error,
            "command": tui,
            "note": "`supervisor tui` did not paint a frame (is supervisor.tui there yet?)",
        }
    first_paint(minimal, env, work)  # warm the minimal app's .pyc files too
    samples: list[list[float]] = [[], []]
    failures: list[str] = []
    for i in range(runs):
        order = [(0, tui), (1, minimal)] if i % 2 == 0 else [(1, minimal), (0, tui)]
        for index, args in order:
            paint = first_paint(args, env, work)
            if paint.seconds is None:
                failures.append(paint.error)
            else:
                samples[index].append(paint.seconds)
    if not samples[0] or not samples[1]:
        return {"available": False, "error": "; ".join(failures[:3]), "command": tui}
    a, b = stats_ms(samples[0]), stats_ms(samples[1])
    return {
        "available": True,
        "command": tui,
        "supervisor_tui": a,
        "minimal_textual_app": b,
        "added_median_ms": a["median_ms"] - b["median_ms"],
        "failures": failures,
    }


# ------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30, help="measured runs of each command (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="runs of each discarded first (default 3)")
    parser.add_argument("--tui-runs", type=int, default=10, help="TUI first-paint runs (default 10; 0: skip)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write the results")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("SUPERVISOR_CONFIG", "SUPERVISOR_OFFLINE")}
        env["SUPERVISOR_HOME"] = str(home)
        help_cmd = [*supervisor_command(), "--help"]
        bare_cmd = [sys.executable, "-c", "pass"]
        print(f"(a) {' '.join(help_cmd)} vs python -c pass, {args.runs} runs each ...", flush=True)
        help_s, bare_s = interleaved(
            [lambda: run_quiet(help_cmd, env), lambda: run_quiet(bare_cmd, env)], args.runs, args.warmup
        )
        imports = heaviest_imports(help_cmd, env)
        tui: dict[str, Any] = {"available": False, "note": "skipped (--tui-runs 0)"}
        if args.tui_runs:
            print(f"(b) TUI first paint on a {COLS}x{ROWS} pseudo-terminal, {args.tui_runs} runs ...", flush=True)
            tui = tui_figures(args.tui_runs, env, work)

    h, b = stats_ms(help_s), stats_ms(bare_s)
    added = h["median_ms"] - b["median_ms"]
    met = added <= TARGET_HELP_MS
    results: dict[str, Any] = {
        "benchmark": "startup",
        "version": __version__,
        "commit": git_commit(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "cpus": os.cpu_count()},
        "help": {
            "command": help_cmd,
            "supervisor_help": h,
            "python_pass": b,
            "added_median_ms": added,
            "added_p95_ms": h["p95_ms"] - b["p95_ms"],
            "heaviest_imports": imports,
        },
        "tui_first_paint": tui,
        "target": {"help_added_median_ms_max": TARGET_HELP_MS, "met": met},
    }
    lines = [
        "",
        f"{'start-up, ms':<46} {'median':>9} {'p95':>9}",
        "-" * 66,
        f"{'supervisor --help':<46} {h['median_ms']:>9.1f} {h['p95_ms']:>9.1f}",
        f"{'python -c pass':<46} {b['median_ms']:>9.1f} {b['p95_ms']:>9.1f}",
        f"{'added by supervisor --help':<46} {added:>9.1f} {h['p95_ms'] - b['p95_ms']:>9.1f}",
    ]
    if tui.get("available"):
        t, m = tui["supervisor_tui"], tui["minimal_textual_app"]
        lines += [
            f"{'supervisor tui, first full frame':<46} {t['median_ms']:>9.1f} {t['p95_ms']:>9.1f}",
            f"{'minimal Textual app, first full frame':<46} {m['median_ms']:>9.1f} {m['p95_ms']:>9.1f}",
            f"{'added by the supervisor TUI':<46} {tui['added_median_ms']:>9.1f}",
        ]
    else:
        lines.append(f"TUI first paint: not measured: {tui.get('note', '')} {tui.get('error', '')}".rstrip())
    lines += [
        "",
        f"ratio --help / python -c pass: {h['median_ms'] / b['median_ms']:.1f}x; heaviest imports of --help: "
        + ", ".join(f"{r['module']} {r['cumulative_ms']:.1f} ms" for r in imports[:5]),
        f"target: --help within {TARGET_HELP_MS:.0f} ms of bare Python: {'met' if met else 'MISSED'} (+{added:.1f} ms)",
    ]
    print("\n".join(lines))
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
