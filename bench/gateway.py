"""Gateway overhead: the same requests sent straight to a loopback fake and through ``supervisor gateway``.

Run as ``python bench/gateway.py [--requests 2000] [--warmup 100] [--json PATH]``.

Four processes, so nobody competes for one GIL: the OpenAI-compatible fake (``tests.fakes.openai.OpenAIFake``,
TCP_NODELAY, streams that keep the connection open as real APIs do), a real ``supervisor gateway`` CLI process
with the whole path on (key lookup, routing, the reservation in ``BEGIN IMMEDIATE`` against agent and global
caps, the pass-through relay with its usage tee, pricing, settlement, the ledger row and the events), a bare
relay built from the gateway's own HTTP server and upstream client with nothing else (the floor: what the extra
Python hop alone costs here), and this client (httpx, keep-alive). Every request of the "gateway" arm is a real
priced call in the gateway's ledger.

Scenarios, each with the two arms interleaved (ABAB, the order drawn per round) after a warm-up:

1. non-streaming JSON, sequential: added latency p50 / p90 / p99;
2. streaming (20 SSE chunks): added time to first byte and the added time per chunk;
3. a paced stream (10 chunks 5 ms apart): a buffering detector (chunks must arrive spread out, not at the end);
4. non-streaming at 1, 8 and 32 concurrent clients: added p99.

Targets on a 2-core machine: p50 added <= 1.5 ms and p99 added <= 4 ms sequential, streaming TTFB added <= 2 ms,
no buffering. Anchors (same third-party harness): LiteLLM 4.3-5.9 ms, Portkey 2.4-2.7 ms, Bifrost 0.44-0.62 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import git_commit, machine, write_results  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH_DIR / "results" / "gateway.json"
TARGETS = {"p50_added_ms": 1.5, "p99_added_ms": 4.0, "ttfb_added_ms": 2.0}
ANCHOR = "LiteLLM 4.3-5.9 ms, Portkey 2.4-2.7 ms, Bifrost 0.44-0.62 ms added (one third-party harness)"

SERVER = """
import sys
sys.path.insert(0, {repo!r})
from tests.fakes.base import Reply
from tests.fakes.openai import OpenAIFake, RawStream


class KeepAliveFake(OpenAIFake):
    @staticmethod
    def start_stream(handler, content_type):
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()


CHUNK = (b'data: {{"id":"c","object":"chat.completion.chunk","created":1,"model":"deepseek-flash",'
         b'"choices":[{{"index":0,"delta":{{"content":"tick "}},"finish_reason":null}}]}}\\n\\n')
END = (b'data: {{"id":"c","object":"chat.completion.chunk","created":1,"model":"deepseek-flash","choices":[],'
       b'"usage":{{"prompt_tokens":40,"completion_tokens":10,"total_tokens":50}}}}\\n\\ndata: [DONE]\\n\\n')
fake = KeepAliveFake(dialect="openai", models=("deepseek-flash",))
reply = Reply(text="The build is green: 214 tests passed, 0 failed. Nothing needs a human today.",
              input_tokens=40, output_tokens=20, chunks=20)
paced = RawStream(tuple([CHUNK] * 10 + [END]), interval_s=0.005)
fake.responder = lambda request: paced if request.json.get("messages", [{{}}])[0].get("content") == "paced" else reply
fake.start()
print(fake.url, flush=True)
sys.stdin.read()
fake.stop()
"""

FLOOR = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from supervisor.gateway.http import HttpServer
from supervisor.gateway.upstream import UpstreamPool

UPSTREAM = {upstream!r}
pool = UpstreamPool()


async def relay(req, resp):
    headers = {{"content-type": "application/json", "authorization": "Bearer upstream-key"}}
    async with pool.stream("POST", UPSTREAM + "/chat/completions", content=req.body, headers=headers) as up:
        kind = up.headers.get("content-type", "application/json")
        if "json" in kind:
            resp.send(up.status_code, [("content-type", kind)], await up.aread())
            return
        resp.start(up.status_code, [("content-type", kind)])
        async for chunk in up.aiter_raw():
            resp.write(chunk)
            await resp.drain()
        resp.end()


async def main():
    server = HttpServer(relay)
    port = await server.listen("127.0.0.1", 0)
    print(f"http://127.0.0.1:{{port}}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


asyncio.run(main())
"""

CONFIG = """
[gateway]
max_output_tokens = 256

[caps]
day_usd = 1000.0
month_usd = 10000.0

[providers.deepseek]
kind = "openai_compat"
base_url = "{url}"
api_key_env = "BENCH_DEEPSEEK_KEY"
max_retries = 0

[tiers]
cheap = ["deepseek:deepseek-flash"]

[agents.bench]
goal = "a benchmark client"
ladder = ["cheap"]
caps = {{ day_usd = 500.0, month_usd = 5000.0 }}
"""


def body(stream: bool, content: str = "Summarize the nightly build in one sentence.") -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": "deepseek-flash",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 64,
        "stream": stream,
    }
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": statistics.median(samples) * 1000,
        "p90_ms": pct(samples, 0.90),
        "p99_ms": pct(samples, 0.99),
        "max_ms": max(samples) * 1000,
    }


def added(via: list[float], direct: list[float]) -> dict[str, Any]:
    a, b = stats(via), stats(direct)
    return {
        "gateway": a,
        "direct": b,
        "p50_added_ms": a["p50_ms"] - b["p50_ms"],
        "p90_added_ms": a["p90_ms"] - b["p90_ms"],
        "p99_added_ms": a["p99_ms"] - b["p99_ms"],
        "ratio_p50": a["p50_ms"] / b["p50_ms"],
    }


class Arm:
    def __init__(self, client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> None:
        self.client, self.url, self.headers = client, url, headers

    async def json_call(self, payload: bytes) -> float:
        t0 = time.perf_counter()
        response = await self.client.post(self.url, content=payload, headers=self.headers)
        elapsed = time.perf_counter() - t0
        if response.status_code != 200:
            raise SystemExit(f"{self.url} answered {response.status_code}: {response.text[:300]}")
        return elapsed

    async def stream_call(self, payload: bytes) -> tuple[float, float, list[float]]:
        """(time to the first byte, total, arrival time of each data piece)."""
        t0 = time.perf_counter()
        arrivals: list[float] = []
        async with self.client.stream("POST", self.url, content=payload, headers=self.headers) as response:
            if response.status_code != 200:
                raise SystemExit(f"{self.url} answered {response.status_code}")
            async for chunk in response.aiter_raw():
                if chunk:
                    arrivals.append(time.perf_counter() - t0)
        return arrivals[0], arrivals[-1], arrivals


async def interleaved(n: int, warmup: int, *arms: Any) -> list[list[Any]]:
    """Each round calls every arm once, in an order drawn per round."""
    rng = random.Random(20261205)
    outs: list[list[Any]] = [[] for _ in arms]
    for i in range(warmup + n):
        order = list(zip(arms, outs, strict=True))
        rng.shuffle(order)
        for call, sink in order:
            value = await call()
            if i >= warmup:
                sink.append(value)
    return outs


async def concurrent(n: int, workers: int, call: Any) -> list[float]:
    samples: list[float] = []
    per_worker = max(1, n // workers)

    async def worker() -> None:
        for _ in range(per_worker):
            samples.append(await call())

    await asyncio.gather(*(worker() for _ in range(workers)))
    return samples


def cpu_s(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def measure(
    fake_url: str, gateway_url: str, floor_url: str, key: str, n: int, warmup: int, gateway_pid: int, fake_pid: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        json_headers = {"content-type": "application/json", "authorization": "Bearer upstream-key"}
        direct = Arm(client, fake_url + "/chat/completions", json_headers)
        via = Arm(client, gateway_url + "/v1/chat/completions", {**json_headers, "authorization": f"Bearer {key}"})
        floor = Arm(client, floor_url + "/v1/chat/completions", json_headers)
        plain = json.dumps(body(False)).encode()
        streamed = json.dumps(body(True)).encode()
        paced = json.dumps(body(True, "paced")).encode()
        results: dict[str, Any] = {}

        print(f"non-streaming, sequential: {n} requests per arm, interleaved ...", flush=True)
        gateway_cpu, fake_cpu = cpu_s(gateway_pid), cpu_s(fake_pid)
        d, v, f = await interleaved(
            n, warmup, lambda: direct.json_call(plain), lambda: via.json_call(plain), lambda: floor.json_call(plain)
        )
        results["json_sequential"] = added(v, d)
        results["json_sequential"]["floor"] = added(f, d)
        # CPU time is what a loaded machine cannot inflate: the gateway's own work per request, and the fake's
        # per request (it serves all three arms: 3 requests per round).
        results["json_sequential"]["gateway_cpu_ms_per_request"] = (
            (cpu_s(gateway_pid) - gateway_cpu) * 1000 / (n + warmup)
        )
        results["json_sequential"]["fake_cpu_ms_per_request"] = (cpu_s(fake_pid) - fake_cpu) * 1000 / (3 * (n + warmup))

        print(f"streaming (20 chunks), sequential: {n} requests per arm, interleaved ...", flush=True)
        d, v, f = await interleaved(
            n,
            warmup,
            lambda: direct.stream_call(streamed),
            lambda: via.stream_call(streamed),
            lambda: floor.stream_call(streamed),
        )
        ttfb = added([x[0] for x in v], [x[0] for x in d])
        ttfb["floor"] = added([x[0] for x in f], [x[0] for x in d])
        total = added([x[1] for x in v], [x[1] for x in d])
        body_span_direct = statistics.median(x[1] - x[0] for x in d)
        body_span_via = statistics.median(x[1] - x[0] for x in v)
        results["stream_sequential"] = {
            "ttfb": ttfb,
            "total": total,
            "per_chunk_added_ms": (body_span_via - body_span_direct) * 1000 / 20,
        }

        print("paced stream (10 chunks, 5 ms apart): buffering check ...", flush=True)
        d, v = await interleaved(min(100, n), 5, lambda: direct.stream_call(paced), lambda: via.stream_call(paced))

        def buffered(sample: tuple[float, float, list[float]]) -> bool:
            first, last, arrivals = sample
            # Buffered: the data arrives in a lump at the end instead of spread over the ~50 ms of the stream.
            return len(arrivals) < 4 or (last - first) < 0.02

        results["buffering"] = {
            "requests": len(v),
            "buffered_gateway": sum(buffered(x) for x in v),
            "buffered_direct": sum(buffered(x) for x in d),
            "median_span_gateway_ms": statistics.median(x[1] - x[0] for x in v) * 1000,
            "median_span_direct_ms": statistics.median(x[1] - x[0] for x in d) * 1000,
        }

        results["concurrency"] = {}
        for workers in (1, 8, 32):
            print(f"non-streaming at {workers} concurrent: {n} requests per arm ...", flush=True)
            await concurrent(min(n, 200), workers, lambda: via.json_call(plain))  # warm the pools
            rounds = 4
            d_all: list[float] = []
            v_all: list[float] = []
            for _ in range(rounds):  # blocks of each arm alternate, so drift hits both
                d_all += await concurrent(n // rounds, workers, lambda: direct.json_call(plain))
                v_all += await concurrent(n // rounds, workers, lambda: via.json_call(plain))
            results["concurrency"][str(workers)] = added(v_all, d_all)
        return results


def start_fake() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(repo=str(ROOT))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        raise SystemExit("the fake did not start")
    return proc, url


def start_floor(upstream: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", FLOOR.format(repo=str(ROOT), upstream=upstream)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        raise SystemExit("the bare relay did not start")
    return proc, url


def start_gateway(config: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], str]:
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "gateway", "--config", str(config), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            text=True,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("gateway listening on "):
        raise SystemExit(f"the gateway did not start: {line} {log.read_text()[-2000:]}")
    return proc, line.removeprefix("gateway listening on ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per arm per scenario (default 2000)")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "SUPERVISOR_HOME": str(work / "home"), "BENCH_DEEPSEEK_KEY": "sk-bench-0123456789"}
        env.pop("SUPERVISOR_OFFLINE", None)
        fake, fake_url = start_fake()
        floor, floor_url = start_floor(fake_url)
        gateway: subprocess.Popen[str] | None = None
        try:
            config = work / "supervisor.toml"
            config.write_text(CONFIG.format(url=fake_url))
            created = subprocess.run(
                [sys.executable, "-m", "supervisor", "keys", "create", "bench", "--json", "--config", str(config)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            key = json.loads(created.stdout)["key"]
            gateway, gateway_url = start_gateway(config, env, work / "gateway.log")
            results = asyncio.run(
                measure(fake_url, gateway_url, floor_url, key, args.requests, args.warmup, gateway.pid, fake.pid)
            )
            ledger_rows = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import sqlite3; print(sqlite3.connect({str(work / 'home' / 'ledger.db')!r}).execute('select count(*), sum(priced) from calls').fetchone())",
                ],
                capture_output=True,
                text=True,
            ).stdout.strip()
        finally:
            if gateway is not None:
                gateway.terminate()
                gateway.wait(30)
            for proc in (floor, fake):
                if proc.stdin is not None:
                    proc.stdin.close()
                proc.wait(10)
    seq = results["json_sequential"]
    ttfb = results["stream_sequential"]["ttfb"]
    buf = results["buffering"]
    print()
    print(
        f"non-streaming: direct p50 {seq['direct']['p50_ms']:.2f} ms, via the gateway {seq['gateway']['p50_ms']:.2f} ms"
    )
    print(
        f"  gateway CPU per request {seq['gateway_cpu_ms_per_request']:.2f} ms "
        f"(the fake's {seq['fake_cpu_ms_per_request']:.2f} ms); load average at the end {os.getloadavg()[0]:.1f}"
    )
    print(
        f"  added p50 {seq['p50_added_ms']:+.2f} ms (target <= {TARGETS['p50_added_ms']}), "
        f"p99 {seq['p99_added_ms']:+.2f} ms (target <= {TARGETS['p99_added_ms']}); ratio {seq['ratio_p50']:.2f}x"
    )
    print(
        f"  the floor (a bare relay: the same HTTP server and upstream client, no gateway logic): added p50 "
        f"{seq['floor']['p50_added_ms']:+.2f} ms, p99 {seq['floor']['p99_added_ms']:+.2f} ms"
    )
    print(
        f"streaming: TTFB added p50 {ttfb['p50_added_ms']:+.2f} ms (target <= {TARGETS['ttfb_added_ms']}), "
        f"p99 {ttfb['p99_added_ms']:+.2f} ms; per chunk {results['stream_sequential']['per_chunk_added_ms']:+.3f} ms; "
        f"the floor's TTFB added p50 {ttfb['floor']['p50_added_ms']:+.2f} ms"
    )
    print(
        f"buffering: {buf['buffered_gateway']} of {buf['requests']} paced streams buffered through the gateway "
        f"(direct {buf['buffered_direct']}); median span {buf['median_span_gateway_ms']:.1f} ms vs "
        f"{buf['median_span_direct_ms']:.1f} ms direct"
    )
    for workers, row in results["concurrency"].items():
        print(
            f"concurrency {workers:>2}: p99 direct {row['direct']['p99_ms']:.2f} ms, gateway {row['gateway']['p99_ms']:.2f} ms, "
            f"added {row['p99_added_ms']:+.2f} ms; p50 added {row['p50_added_ms']:+.2f} ms"
        )
    print(f"gateway ledger (calls, priced): {ledger_rows}")
    print(f"anchors: {ANCHOR}")
    verdicts = {
        "p50_added": seq["p50_added_ms"] <= TARGETS["p50_added_ms"],
        "p99_added": seq["p99_added_ms"] <= TARGETS["p99_added_ms"],
        "ttfb_added": ttfb["p50_added_ms"] <= TARGETS["ttfb_added_ms"],
        "no_buffering": buf["buffered_gateway"] == 0,
    }
    print("targets: " + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in verdicts.items()))
    out = {
        "benchmark": "gateway",
        "commit": git_commit(),
        "machine": {**machine(), "cpus": os.cpu_count(), "httpx": httpx.__version__},
        "requests_per_arm": args.requests,
        "targets": TARGETS,
        "verdicts": verdicts,
        "results": results,
        "gateway_ledger": ledger_rows,
        "load_average_1m": os.getloadavg()[0],
    }
    write_results(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
