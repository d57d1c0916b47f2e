"""Context-growth benchmark: one scheduled agent woken many times, our runtime vs a naive re-send-the-thread loop.

Run as ``python bench/context.py [--wakes 200] [--json PATH]``.

One agent ("triage", ladder = cheap, a scripted backend priced as deepseek:deepseek-flash) is woken ``--wakes``
times by calling ``Runtime.run_agent(name, "schedule")`` directly (no clock to wait on). Before each wake the
benchmark writes that wake's new events to ``inbox.txt`` (seeded, about the same size every wake); the step reads
it and answers OK or ALERT, checked by a regex gate. Every wake is a fresh session: the runtime sends its fixed
preamble, the bounded memory digest, the context file and the task.

The baseline is the naive loop of an agent that keeps one conversation: on wake n it re-sends the whole
thread, i.e. the system prompt, every earlier wake's prompt and answer, and wake n's prompt. Its prompts are
the runtime's own (the same context block and task text, without the digest) and its answers the same scripted
answers, counted with the same estimator (``supervisor.backends.base.estimate_tokens``). Ours is what the
ledger recorded for each call.

Also priced (DeepSeek Flash catalog prices at a fixed instant): ours, the naive loop with no cache, and the
naive loop with ideal prefix caching (everything it sent before read back at the cache-read price), since
providers cache a re-sent prefix.

**The worker loop** (``--turns 30``): one step with tools runs ``--turns`` turns through the runtime (the same
scripted backend, JSON-in-text calls): it reads ~24 KB source files and runs a command with ~4 KB of output,
in turn, and never calls finish. Ours is each turn's input as the ledger recorded it (the lean transcript:
old tool outputs cut to a line past ``limits.tool_transcript_tokens``). The naive loop re-sends the whole
transcript: on turn n, the same head plus every earlier turn in full, each as it went over the wire when it was
the newest turn; same estimator. The stated bound (``runtime/transcript.py``) is checked against every turn.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from supervisor import __version__, paths
from supervisor.backends.base import Message, estimate_tokens
from supervisor.backends.scripted import ScriptedBackend
from supervisor.catalog import load_catalog
from supervisor.config import parse_config
from supervisor.cost import cost_of, format_usd
from supervisor.ledger import Ledger
from supervisor.runtime.prompt import ContextFile, build_messages
from supervisor.runtime.runtime import Runtime
from supervisor.usage import Usage

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import git_commit, machine, write_results  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "results" / "context.json"
AGENT = "triage"
CHEAP_MODEL = "deepseek:deepseek-flash"
DEFAULT_AT = "2026-11-17T12:00:00+00:00"  # off-peak for DeepSeek; prices as in the bundled catalog
EVENTS_PER_WAKE = 4
FLAT_TOLERANCE = 0.05
TARGET_TOTAL_RATIO = 50.0
REPORT_WAKES = (1, 50, 200)

HOSTS = ("api-1", "api-2", "db-1", "db-2", "cache", "worker")
MESSAGES = (
    ("info", "deploy finished, 0 errors"),
    ("info", "backup completed in 41 s"),
    ("info", "cert renewed for 90 days"),
    ("warn", "p95 latency above 800 ms"),
    ("warn", "disk 81% used on /data"),
    ("crit", "replica lag above 30 s"),
    ("crit", "5xx rate above 2% for 5m"),
)


def inbox(seed: int, wake: int) -> list[tuple[str, str, str, str]]:
    """``EVENTS_PER_WAKE`` events (id, host, level, text), about the same size every wake."""
    rnd = random.Random(f"{seed}:{wake}")
    events = []
    for i in range(EVENTS_PER_WAKE):
        level, text = rnd.choice(MESSAGES)
        events.append((f"#{wake:04d}{i}", rnd.choice(HOSTS), level, text))
    return events


def inbox_text(events: list[tuple[str, str, str, str]], wake: int) -> str:
    lines = [f"New events since the last check (wake {wake}):"]
    lines += [f"{eid} {level:<4} {host:<6} {text}" for eid, host, level, text in events]
    return "\n".join(lines) + "\n"


def answer_for(events: list[tuple[str, str, str, str]]) -> str:
    urgent = [e for e in events if e[2] == "crit"]
    if not urgent:
        return f"OK: {len(events)} events, nothing needs a human."
    eid, host, _level, text = urgent[0]
    more = f" (+{len(urgent) - 1} more)" if len(urgent) > 1 else ""
    return f"ALERT {eid} on {host}: {text}{more}"


AGENT_CONFIG: dict[str, Any] = {
    "goal": "Watch the service events and raise an alert when a human is needed.",
    "schedule": "every 15m",
    "ladder": ["cheap"],
    "frontier": "never",
    "attempts_per_tier": 1,
    "steps": [
        {
            "name": "check",
            "prompt": "Triage the new events in inbox.txt. Reply OK if none needs a human, else ALERT with the "
            "first critical event's id, host and text.",
            "context": ["inbox.txt"],
            "output": "triage",
            "max_output_tokens": 60,
            "verify": [{"regex": "^(OK|ALERT)"}],
        }
    ],
}


@dataclass
class Wake:
    wake: int
    ours_input: int
    ours_output: int
    ours_cost_micros: int
    naive_input: int
    naive_cached: int  # of naive_input: the previous wake's whole prompt (read back from an ideal prefix cache)
    outcome: str


def fixed_clock(at: datetime) -> Callable[[], datetime]:
    start = time.monotonic()
    return lambda: at + timedelta(seconds=time.monotonic() - start)


async def run(wakes: int, seed: int, work: Path, at: datetime) -> list[Wake]:
    home = work / "home"
    workspace = work / "ws"
    home.mkdir()
    workspace.mkdir()
    environ = {**os.environ, "SUPERVISOR_HOME": str(home)}
    data = {
        "providers": {"sim-cheap": {"kind": "scripted", "simulated_as": CHEAP_MODEL}},
        "tiers": {"cheap": ["sim-cheap:deepseek-flash"]},
        "agents": {AGENT: {**AGENT_CONFIG, "workspace": str(workspace)}},
    }
    config = parse_config(data, "bench/context.py", None, environ)
    cfg = config.agent(AGENT)
    step = cfg.steps[0]
    catalog = load_catalog([paths.bundled_models_dir()])
    current: dict[str, str] = {}
    backend = ScriptedBackend("sim-cheap", config.providers["sim-cheap"], environ, lambda _r: current["answer"])
    ledger = Ledger(home / "ledger.db")
    runtime = Runtime(
        config, catalog, ledger, environ=environ, backends={"sim-cheap": backend}, clock=fixed_clock(at), home=home
    )

    # The naive loop's thread: the static system prompt, then each wake's own prompt and answer.
    static = build_messages(AGENT, cfg, step, digest="", context=[], failure=None, failure_chars=2000)[0].content
    thread: list[Message] = [Message("system", static)]
    out: list[Wake] = []
    try:
        for wake in range(1, wakes + 1):
            events = inbox(seed, wake)
            text = inbox_text(events, wake)
            (workspace / "inbox.txt").write_text(text, encoding="utf-8")
            current["answer"] = answer_for(events)
            result = await runtime.run_agent(AGENT, "schedule", approval_timeout_s=0)
            calls = ledger.calls(run_id=result.run_id) if result.run_id else []
            if len(calls) != 1:
                raise SystemExit(f"wake {wake}: expected one call, the run made {len(calls)} ({result.reason})")
            call = calls[0]

            # The same prompt without the digest: the wake's context block and task, as a user message.
            system, task = build_messages(
                AGENT,
                cfg,
                step,
                digest="",
                context=[ContextFile("inbox.txt", text)],
                failure=None,
                failure_chars=2000,
            )
            assert system.content.startswith(static)
            user = Message("user", system.content[len(static) :].strip() + "\n\n" + task.content)
            cached = out[-1].naive_input if out else 0
            thread.append(user)
            naive_input = estimate_tokens(thread)
            thread.append(Message("assistant", current["answer"]))
            out.append(
                Wake(
                    wake=wake,
                    ours_input=int(call["input_uncached"] or 0) + int(call["cache_read"] or 0),
                    ours_output=int(call["output"] or 0),
                    ours_cost_micros=int(call["cost_micros"] or 0),
                    naive_input=naive_input,
                    naive_cached=cached,
                    outcome=result.outcome,
                )
            )
    finally:
        await runtime.aclose()
        ledger.close()
    # The backend saw exactly what the ledger recorded: the runtime's prompts, counted by the same estimator.
    assert [estimate_tokens(r.messages) for r in backend.calls] == [w.ours_input for w in out]
    return out


# ------------------------------------------------------------------------------------------------------------
# The built-in worker: input per turn over a long loop


WORKER_AGENT = "worker"
MODULES = 6


def module_text(index: int) -> str:
    """A ~24 KB Python module: big enough that one read is ~8,000 estimated tokens."""
    return "".join(f"value_{index}_{k} = {k * (index + 1)}  # {'setting ' * 5}\n" for k in range(400))


def worker_call(turn: int) -> str:
    """The scripted model's call on ``turn`` (1-based): two reads, then the noisy command, in a cycle."""
    import json

    if turn % 3 == 0:
        return json.dumps({"tool": "run_command", "arguments": {"name": "dump"}})
    return json.dumps({"tool": "read_file", "arguments": {"path": f"mod{turn % MODULES}.py"}})


@dataclass
class TurnSize:
    turn: int
    ours_input: int
    naive_input: int


async def run_worker(turns: int, work: Path, at: datetime) -> tuple[list[TurnSize], int, str]:
    """``turns`` turns of one worker step; (sizes per turn, the stated bound, how the loop ended)."""
    from supervisor.runtime.events import WorkerFinished

    home = work / "worker-home"
    workspace = work / "worker-ws"
    home.mkdir()
    workspace.mkdir()
    for index in range(MODULES):
        (workspace / f"mod{index}.py").write_text(module_text(index), encoding="utf-8")
    environ = {**os.environ, "SUPERVISOR_HOME": str(home)}
    data = {
        "providers": {"sim-cheap": {"kind": "scripted", "simulated_as": CHEAP_MODEL}},
        "tiers": {"cheap": ["sim-cheap:deepseek-flash"]},
        "agents": {
            WORKER_AGENT: {
                "goal": "Keep the settings modules consistent.",
                "workspace": str(workspace),
                "ladder": ["cheap"],
                "frontier": "never",
                "attempts_per_tier": 1,
                "steps": [
                    {
                        "name": "review",
                        "prompt": "Review every settings module and the dump of all of them; call finish when done.",
                        "tools": ["read_file", "run_command", "finish"],
                        "commands": {"dump": "cat mod*.py"},
                        "max_turns": turns,
                        "max_output_tokens": 200,
                        "verify": ["true"],
                    }
                ],
            }
        },
    }
    config = parse_config(data, "bench/context.py", None, environ)

    def respond(request: Any) -> str:
        turn = sum(1 for m in request.messages if m.role == "assistant")
        task = request.messages[1].content
        turn += len(re.findall(r"^- turn \d+:", task, re.MULTILINE))
        turn += sum(int(b) - int(a) + 1 for a, b in re.findall(r"^- turns (\d+)-(\d+):", task, re.MULTILINE))
        return worker_call(turn + 1)

    backend = ScriptedBackend("sim-cheap", config.providers["sim-cheap"], environ, respond)
    catalog = load_catalog([paths.bundled_models_dir()])
    ledger = Ledger(home / "ledger.db")
    runtime = Runtime(
        config, catalog, ledger, environ=environ, backends={"sim-cheap": backend}, clock=fixed_clock(at), home=home
    )
    finished: list[WorkerFinished] = []
    runtime.bus.subscribe(lambda e: finished.append(e) if isinstance(e, WorkerFinished) else None)
    try:
        await runtime.run_agent(WORKER_AGENT, "bench", approval_timeout_s=0)
    finally:
        await runtime.aclose()
    rows = ledger.query("SELECT turn, input_uncached, cache_read FROM calls ORDER BY id")
    ledger.close()
    ours = [int(r["input_uncached"] or 0) + int(r["cache_read"] or 0) for r in rows]
    # The naive loop: the same head, then every earlier turn in full, as it was sent when it was the newest turn
    # (the last two messages of the next request: the call and its result).
    head = estimate_tokens(backend.calls[0].messages)
    naive = [head]
    for request in backend.calls[1:]:
        naive.append(naive[-1] + estimate_tokens(request.messages[-2:]) - estimate_tokens(()))
    sizes = [TurnSize(n + 1, o, v) for n, (o, v) in enumerate(zip(ours, naive, strict=True))]
    [end] = finished
    return sizes, int(end.input_bound_tokens or 0), end.end


def price_turns(at: datetime, sizes: list[TurnSize]) -> dict[str, int]:
    """Input cost of the worker loop: ours, the naive loop uncached, and with every earlier turn read from cache."""
    catalog = load_catalog([paths.bundled_models_dir()])
    spec = catalog.get(CHEAP_MODEL)
    assert spec is not None
    ours = naive = cached = 0
    previous = 0
    for t in sizes:
        ours += cost_of(Usage(t.ours_input, 0, 0, 0, 0), spec, at).total_micros or 0
        naive += cost_of(Usage(t.naive_input, 0, 0, 0, 0), spec, at).total_micros or 0
        cached += cost_of(Usage(t.naive_input - previous, previous, 0, 0, 0), spec, at).total_micros or 0
        previous = t.naive_input
    return {"ours_micros": ours, "naive_micros": naive, "naive_ideal_cache_micros": cached}


def price(at: datetime, wakes: list[Wake]) -> dict[str, int]:
    catalog = load_catalog([paths.bundled_models_dir()])
    spec = catalog.get(CHEAP_MODEL)
    assert spec is not None
    naive = cached = 0
    for w in wakes:
        plain = Usage(w.naive_input, 0, 0, 0, w.ours_output)
        warm = Usage(w.naive_input - w.naive_cached, w.naive_cached, 0, 0, w.ours_output)
        naive += cost_of(plain, spec, at).total_micros or 0
        cached += cost_of(warm, spec, at).total_micros or 0
    return {
        "ours_micros": sum(w.ours_cost_micros for w in wakes),
        "naive_micros": naive,
        "naive_ideal_cache_micros": cached,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--wakes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--at", default=DEFAULT_AT, help="price calls at this instant (ISO 8601)")
    parser.add_argument("--turns", type=int, default=30, help="turns of the worker loop (0: skip it)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write the results")
    args = parser.parse_args(argv)
    if args.wakes < 2:
        parser.error("--wakes must be at least 2")
    at = datetime.fromisoformat(args.at).astimezone(UTC)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-context-") as tmp:
        wakes = asyncio.run(run(args.wakes, args.seed, Path(tmp), at))
        worker = asyncio.run(run_worker(args.turns, Path(tmp), at)) if args.turns else None
    seconds = time.perf_counter() - started

    ours = [w.ours_input for w in wakes]
    naive = [w.naive_input for w in wakes]
    steady = ours[1:]
    spread = max(steady) / min(steady) - 1
    total_ratio = sum(naive) / sum(ours)
    last_ratio = naive[-1] / ours[-1]
    failed = [w.wake for w in wakes if w.outcome != "success"]
    marks = [n for n in REPORT_WAKES if n <= args.wakes]
    if args.wakes not in marks:
        marks.append(args.wakes)
    money = price(at, wakes)
    flat_ok = spread <= FLAT_TOLERANCE
    ratio_ok = total_ratio >= TARGET_TOTAL_RATIO
    results: dict[str, Any] = {
        "benchmark": "context",
        "version": __version__,
        "commit": git_commit(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "wakes": args.wakes,
        "seed": args.seed,
        "estimator": "supervisor.backends.base.estimate_tokens: ceil(UTF-8 bytes / 3) + 4 per message + 3",
        "input_tokens_at": {str(n): {"ours": ours[n - 1], "naive": naive[n - 1]} for n in marks},
        "ours_total": sum(ours),
        "naive_total": sum(naive),
        "total_ratio": total_ratio,
        "last_wake_ratio": last_ratio,
        "ours_from_wake_2": {
            "min": min(steady),
            "max": max(steady),
            "mean": statistics.fmean(steady),
            "spread": spread,
        },
        "cost": money,
        "failed_wakes": failed,
        "seconds": seconds,
        "targets": {
            "flat_within": FLAT_TOLERANCE,
            "total_ratio_min": TARGET_TOTAL_RATIO,
            "flat_met": flat_ok,
            "total_ratio_met": ratio_ok,
        },
        "per_wake": [w.__dict__ for w in wakes],
    }
    worker_lines: list[str] = []
    if worker is not None:
        sizes, bound, end = worker
        ours_t = [t.ours_input for t in sizes]
        naive_t = [t.naive_input for t in sizes]
        settled = ours_t[len(ours_t) // 3 :]
        results["worker"] = {
            "turns": len(sizes),
            "end": end,
            "bound_tokens": bound,
            "within_bound": max(ours_t) <= bound,
            "ours_max": max(ours_t),
            "ours_total": sum(ours_t),
            "naive_total": sum(naive_t),
            "naive_last": naive_t[-1],
            "total_ratio": sum(naive_t) / sum(ours_t),
            "ours_last_third": {"min": min(settled), "max": max(settled), "mean": statistics.fmean(settled)},
            "cost": price_turns(at, sizes),
            "per_turn": [t.__dict__ for t in sizes],
        }
        w = results["worker"]
        marks_t = sorted({1, 10, 20, len(sizes)} & set(range(1, len(sizes) + 1)))
        worker_lines = [
            "",
            f"worker loop: one step with tools, {len(sizes)} turns of ~24 KB file reads and a ~4 KB command output; "
            "input tokens per turn",
            "",
            f"{'input tokens':<28} {'ours':>12} {'naive loop':>12} {'naive / ours':>13}",
            "-" * 68,
        ]
        for n in marks_t:
            o, v = ours_t[n - 1], naive_t[n - 1]
            worker_lines.append(f"{f'turn {n}':<28} {o:>12,} {v:>12,} {v / o:>12.1f}x")
        worker_lines += [
            f"{f'total over {len(sizes)} turns':<28} {sum(ours_t):>12,} {sum(naive_t):>12,} {w['total_ratio']:>12.1f}x",
            "",
            f"ours: at most {max(ours_t):,} tokens in any turn, stated bound {bound:,} "
            f"({'held' if w['within_bound'] else 'EXCEEDED'}); last {len(settled)} turns "
            f"{min(settled):,} to {max(settled):,} (they vary with the newest result's size, and do not grow)",
            f"input cost at {CHEAP_MODEL} prices: ours {format_usd(w['cost']['ours_micros'], places=4)}, naive "
            f"{format_usd(w['cost']['naive_micros'], places=4)} uncached, "
            f"{format_usd(w['cost']['naive_ideal_cache_micros'], places=4)} with ideal prefix caching",
        ]

    lines = [
        "",
        f"context growth: one agent, {args.wakes} scheduled wakes (seed {args.seed}); input tokens per wake, "
        "same estimator for both",
        "",
        f"{'input tokens':<28} {'ours':>12} {'naive loop':>12} {'naive / ours':>13}",
        "-" * 68,
    ]
    for n in marks:
        lines.append(f"{f'wake {n}':<28} {ours[n - 1]:>12,} {naive[n - 1]:>12,} {naive[n - 1] / ours[n - 1]:>12.1f}x")
    lines += [
        f"{f'total over {args.wakes} wakes':<28} {sum(ours):>12,} {sum(naive):>12,} {total_ratio:>12.1f}x",
        "",
        f"ours from wake 2 on: {min(steady):,} to {max(steady):,} tokens (spread {spread:.1%}); "
        f"wake 1 (no digest yet): {ours[0]:,}",
        f"cost at {CHEAP_MODEL} prices: ours {format_usd(money['ours_micros'], places=4)}, naive "
        f"{format_usd(money['naive_micros'], places=4)} uncached, "
        f"{format_usd(money['naive_ideal_cache_micros'], places=4)} with ideal prefix caching",
        f"{args.wakes} runs in {seconds:.1f} s; "
        + (f"FAILED wakes: {failed}" if failed else "every wake passed its gate"),
        f"targets: ours flat within {FLAT_TOLERANCE:.0%} from wake 2: {'met' if flat_ok else 'MISSED'}; "
        f"total >= {TARGET_TOTAL_RATIO:.0f}x smaller: {'met' if ratio_ok else 'MISSED'} ({total_ratio:.1f}x)",
    ]
    print("\n".join(lines + worker_lines))
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
