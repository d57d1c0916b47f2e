"""Overhead benchmark: a model call through the full supervisor path vs a bare httpx request, same fake, same run.

Run as ``python bench/overhead.py [--iterations 2000] [--warmup 200] [--json PATH]``.

The server is ``tests.fakes.openai.OpenAIFake`` (a loopback OpenAI-compatible SSE server with TCP_NODELAY, in its
DeepSeek dialect), run in a child process so that its work never competes with the client for our GIL, and with
its streams keeping the connection open as real APIs do. Both clients reuse their keep-alive connection and read
the whole stream:

- supervisor: a priced model (provider ``deepseek``, kind ``openai_compat``, catalog model
  ``deepseek:deepseek-flash``, a dummy key) through the full path: routing (``Router.candidates``), then
  ``ModelCaller.call``: token count, window check, cap reservation in ``BEGIN IMMEDIATE`` (agent and global caps
  configured), send with retry, SSE parsing, pricing, settlement, the ledger row and the events, on a real
  SQLite ledger file;
- baseline: ``httpx.AsyncClient.stream`` POSTing the very same JSON body (``chat_body`` of the same request) to
  the same URL and reading every line; a third series does the same on a new connection each time, to show
  what connection reuse is worth.

Iterations alternate which client goes first; the warm-up is discarded. Reported: median and p95 of each, the
added milliseconds (median - median, p95 - p95, and the median of paired differences) and the ratio of medians.
A smaller second measure times a whole one-step ``run_agent`` (workspace snapshot, a regex gate, digest and run
record included) against the same baseline, for perspective.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from supervisor import __version__, paths
from supervisor.backends.base import Request
from supervisor.backends.openai_compat import chat_body
from supervisor.catalog import load_catalog
from supervisor.clock import iso, local_month_start, utcnow
from supervisor.config import parse_config
from supervisor.ledger import Ledger
from supervisor.runtime.budget import cap_limits
from supervisor.runtime.prompt import ContextFile, build_messages
from supervisor.runtime.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import git_commit, machine, write_results  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_JSON = BENCH_DIR / "results" / "overhead.json"
KEY_ENV = "BENCH_DEEPSEEK_KEY"
TARGET_MEDIAN_MS = 2.0
ANCHOR = "LiteLLM publishes 2-12 ms median proxy overhead"
ANSWER = "The build is green: 214 tests passed, 0 failed, coverage 91%. Nothing needs a human today."
CONTEXT = "\n".join(f"{i:03d} tests/test_module_{i}.py::test_case PASSED" for i in range(24))

# The child process: start the fake, print its URL, serve until stdin closes. Its streams keep the connection
# open (the test fake closes it after each stream), as real APIs do, so both clients reuse one connection.
SERVER = """
import sys
sys.path.insert(0, {repo!r})
from tests.fakes.base import Reply
from tests.fakes.openai import OpenAIFake


class KeepAliveFake(OpenAIFake):
    @staticmethod
    def start_stream(handler, content_type):
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()


fake = KeepAliveFake(dialect="deepseek")
reply = Reply(text={answer!r}, input_tokens=300, output_tokens=24, chunks=6)
fake.responder = lambda _request: reply
fake.start()
print(fake.url, flush=True)
sys.stdin.read()
fake.stop()
"""

AGENT: dict[str, Any] = {
    "goal": "Report on the nightly build.",
    "ladder": ["cheap"],
    "frontier": "never",
    "attempts_per_tier": 1,
    "caps": {"day_usd": 50.0, "month_usd": 500.0},
    "steps": [
        {
            "name": "report",
            "prompt": "Summarize test-report.txt in one sentence for the on-call.",
            "context": ["test-report.txt"],
            "output": "summary",
            "max_output_tokens": 120,
            "verify": [{"regex": "tests passed"}],
        }
    ],
}


class FakeServer:
    """The loopback fake in a child process."""

    def __init__(self) -> None:
        code = SERVER.format(repo=str(REPO), answer=ANSWER)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            self.close()
            raise SystemExit("the fake server did not start")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def preload(ledger: Ledger, rows: int, agent: str) -> None:
    """``rows`` settled calls' reservations spread over this month so far (a third of them by ``agent``)."""
    now = utcnow()
    start = local_month_start(now)
    span = (now - start).total_seconds()
    params = []
    for i in range(rows):
        at = iso(start + (now - start) * (i / max(rows, 1))) if span > 0 else iso(now)
        params.append((agent if i % 3 == 0 else "other", "deepseek", "deepseek-flash", at, 400, 300, at, 1, 1.0))
    with ledger.immediate() as conn:
        conn.executemany(
            """INSERT INTO reservations (agent, provider, model, created_at, amount_micros, tokens, state, sent,
                 actual_micros, actual_tokens, settled_at, owner_pid, owner_started)
               VALUES (?, ?, ?, ?, ?, ?, 'settled', 1, 60, 250, ?, ?, ?)""",
            params,
        )


def pooled_connections(backend: object) -> list[str] | None:
    """The idle connections in an HTTP backend's pool (httpx internals: ``None`` if they cannot be read)."""
    try:
        return [str(c) for c in backend.client()._transport._pool.connections]  # type: ignore[attr-defined]
    except AttributeError:
        return None


def summarize(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000,
        "mean_ms": statistics.fmean(ordered) * 1000,
        "min_ms": ordered[0] * 1000,
    }


def compare(ours: list[float], bare: list[float]) -> dict[str, Any]:
    a, b = summarize(ours), summarize(bare)
    differences = [x - y for x, y in zip(ours, bare, strict=True)]
    paired = summarize(differences)
    tenth = max(1, len(differences) // 10)
    return {
        # The ledger grows as the calls go: the added time over the first and the last tenth of them.
        "added_paired_median_first_tenth_ms": statistics.median(differences[:tenth]) * 1000,
        "added_paired_median_last_tenth_ms": statistics.median(differences[-tenth:]) * 1000,
        "supervisor": a,
        "bare_httpx": b,
        "added_median_ms": a["median_ms"] - b["median_ms"],
        "added_p95_ms": a["p95_ms"] - b["p95_ms"],
        "added_paired_median_ms": paired["median_ms"],
        "ratio_median": a["median_ms"] / b["median_ms"],
    }


async def measure(
    iterations: int, warmup: int, run_iterations: int, url: str, work: Path, profile: bool, preloaded: int = 0
) -> dict[str, Any]:
    home, workspace = work / "home", work / "ws"
    home.mkdir()
    workspace.mkdir()
    (workspace / "test-report.txt").write_text(CONTEXT + "\n", encoding="utf-8")
    environ = {**os.environ, "SUPERVISOR_HOME": str(home), KEY_ENV: "sk-bench-dummy"}
    data = {
        "providers": {"deepseek": {"kind": "openai_compat", "base_url": f"{url}/v1", "api_key_env": KEY_ENV}},
        "tiers": {"cheap": ["deepseek:deepseek-flash"]},
        "caps": {"day_usd": 100.0, "month_usd": 1000.0},
        "agents": {"reporter": {**AGENT, "workspace": str(workspace)}},
    }
    config = parse_config(data, "bench/overhead.py", None, environ)
    cfg = config.agent("reporter")
    step = cfg.steps[0]
    catalog = load_catalog([paths.bundled_models_dir()])
    ledger = Ledger(home / "ledger.db")
    if preloaded:
        preload(ledger, preloaded, "reporter")
    runtime = Runtime(config, catalog, ledger, environ=environ, home=home)
    limits = cap_limits(config, cfg)
    run_id = ledger.start_run("reporter", "bench")
    messages = build_messages(
        "reporter",
        cfg,
        step,
        digest="",
        context=[ContextFile("test-report.txt", CONTEXT)],
        failure=None,
        failure_chars=2000,
    )
    attempt = 0

    async def supervisor_call() -> None:
        nonlocal attempt
        attempt += 1
        candidates, _skipped = runtime.router.candidates("cheap")
        candidate = candidates[0]
        request = Request(
            model=candidate.model_id,
            messages=messages,
            max_output_tokens=min(step.max_output_tokens, candidate.spec.max_output_tokens),
            temperature=step.temperature,
            timeout_s=step.timeout_s,
            context_window=candidate.spec.context_window,
        )
        outcome = await runtime.caller.call(
            agent="reporter",
            run_id=run_id,
            step=step.name,
            step_id=None,
            attempt=attempt,
            candidate=candidate,
            request=request,
            limits=limits,
        )
        if getattr(outcome, "result", None) is None:
            raise SystemExit(f"the supervisor call failed: {outcome}")

    candidates, _ = runtime.router.candidates("cheap")
    body = chat_body(
        Request(
            model=candidates[0].model_id,
            messages=messages,
            max_output_tokens=step.max_output_tokens,
            timeout_s=step.timeout_s,
        )
    )
    headers = {"Authorization": f"Bearer {environ[KEY_ENV]}"}
    client = httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0))

    async def bare_call() -> None:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as response:
            response.raise_for_status()
            async for _line in response.aiter_lines():
                pass

    async def run_agent_call() -> None:
        result = await runtime.run_agent("reporter", "bench", approval_timeout_s=0)
        if result.outcome != "success":
            raise SystemExit(f"the one-step run failed: {result.reason}")

    fresh = httpx.AsyncClient(
        timeout=httpx.Timeout(120.0, connect=5.0), limits=httpx.Limits(max_keepalive_connections=0)
    )

    async def bare_fresh_call() -> None:
        async with fresh.stream("POST", f"{url}/v1/chat/completions", json=body, headers=headers) as response:
            response.raise_for_status()
            async for _line in response.aiter_lines():
                pass

    async def interleave(series: list[Callable[[], Awaitable[None]]], count: int, skip: int) -> list[list[float]]:
        """Each iteration runs every series once, in an order rotated from the last."""
        samples: list[list[float]] = [[] for _ in series]
        for i in range(skip + count):
            for k in range(len(series)):
                index = (i + k) % len(series)
                t0 = time.perf_counter()
                await series[index]()
                elapsed = time.perf_counter() - t0
                if i >= skip:
                    samples[index].append(elapsed)
        return samples

    try:
        ours, bare, bare_fresh = await interleave([supervisor_call, bare_call, bare_fresh_call], iterations, warmup)
        calls = (ours, bare)
        profile_text = ""
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(min(iterations, 500)):
                await supervisor_call()
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            profile_text = out.getvalue()
        reused = pooled_connections(runtime.pool.get("deepseek"))
        ledger.finish_run(run_id, "success")
        if run_iterations:
            run_ours, run_bare = await interleave([run_agent_call, bare_call], run_iterations, min(10, run_iterations))
            runs: tuple[list[float], list[float]] | None = (run_ours, run_bare)
        else:
            runs = None
        ledger_rows = int(ledger.scalar("SELECT count(*) FROM calls"))
    finally:
        await client.aclose()
        await fresh.aclose()
        await runtime.aclose()
        ledger.close()
    results: dict[str, Any] = {
        "call": compare(*calls),
        "bare_httpx_new_connection": summarize(bare_fresh),
        "backend_pool_after_calls": reused,
        "ledger_call_rows": ledger_rows,
    }
    if runs is not None:
        results["run_agent"] = compare(*runs)
    if profile_text:
        results["profile"] = profile_text
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--iterations", type=int, default=2000, help="measured calls of each kind (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="calls of each kind discarded first (default 200)")
    parser.add_argument("--run-iterations", type=int, default=200, help="one-step agent runs (default 200; 0: skip)")
    parser.add_argument("--profile", action="store_true", help="also print where the supervisor path spends time")
    parser.add_argument(
        "--preload",
        type=int,
        default=0,
        metavar="N",
        help="start from a ledger holding N settled calls made earlier this month (43200: a month at one a minute)",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write the results")
    args = parser.parse_args(argv)

    server = FakeServer()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
            measured = asyncio.run(
                measure(
                    args.iterations, args.warmup, args.run_iterations, server.url, Path(tmp), args.profile, args.preload
                )
            )
    finally:
        server.close()

    call = measured["call"]
    met = call["added_median_ms"] < TARGET_MEDIAN_MS
    results: dict[str, Any] = {
        "benchmark": "overhead",
        "version": __version__,
        "commit": git_commit(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "cpus": os.cpu_count(), "httpx": httpx.__version__},
        "iterations": args.iterations,
        "warmup": args.warmup,
        "preloaded_calls_this_month": args.preload,
        **measured,
        "anchor": ANCHOR,
        "target": {"added_median_ms_max": TARGET_MEDIAN_MS, "met": met},
    }
    s, b = call["supervisor"], call["bare_httpx"]
    fresh = measured["bare_httpx_new_connection"]
    lines = [
        "",
        f"overhead: {args.iterations} calls of each kind after {args.warmup} warm-up, interleaved, "
        "loopback OpenAI-compatible fake in a child process; ledger "
        + (f"preloaded with {args.preload:,} calls made earlier this month" if args.preload else "new"),
        "",
        f"{'per call, ms':<44} {'median':>9} {'p95':>9}",
        "-" * 64,
        f"{'supervisor (full call path)':<44} {s['median_ms']:>9.2f} {s['p95_ms']:>9.2f}",
        f"{'bare httpx, same body, same server':<44} {b['median_ms']:>9.2f} {b['p95_ms']:>9.2f}",
        f"{'added':<44} {call['added_median_ms']:>9.2f} {call['added_p95_ms']:>9.2f}",
        f"{'bare httpx, a new connection per call':<44} {fresh['median_ms']:>9.2f} {fresh['p95_ms']:>9.2f}",
        "",
        f"ratio of medians {call['ratio_median']:.2f}x; median of paired differences "
        f"{call['added_paired_median_ms']:.2f} ms (first tenth of the calls "
        f"{call['added_paired_median_first_tenth_ms']:.2f} ms, last tenth {call['added_paired_median_last_tenth_ms']:.2f} ms, "
        f"with {args.preload + measured['ledger_call_rows']:,} calls in the ledger by the end)",
    ]
    if "run_agent" in measured:
        r = measured["run_agent"]
        lines.append(
            f"a whole one-step run_agent (snapshot, gate, digest, run record): median {r['supervisor']['median_ms']:.2f} ms, "
            f"p95 {r['supervisor']['p95_ms']:.2f} ms; added {r['added_median_ms']:.2f} ms median, "
            f"{r['added_p95_ms']:.2f} ms p95 ({args.run_iterations} runs)"
        )
    if measured["backend_pool_after_calls"] == []:
        lines.append(
            "note: the backend's connection pool was empty after its calls: each supervisor call opened a new "
            "connection (the stream is left before its end, so httpx cannot reuse the connection)"
        )
    lines += [
        f"anchor: {ANCHOR}",
        f"target: under {TARGET_MEDIAN_MS:g} ms median added per call: {'met' if met else 'MISSED'} "
        f"({call['added_median_ms']:.2f} ms)",
    ]
    print("\n".join(lines))
    if args.profile:
        print("\n" + measured["profile"])
    write_results(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
