"""Load balancer overhead: requests/s and added latency (p50, p99) over a direct call to a replica.

Real processes on loopback: 2 model-server replicas, the LB in its own process, and an aiohttp load
generator. The baseline (direct to one replica) runs in the same invocation, so the ratio is what counts.

    .venv/bin/python bench/lb_overhead.py [--requests 4000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serve.replica_procs import ReplicaProcess, free_port  # noqa: E402


def run_lb(port: int, replicas: list[str]) -> None:
    from aiohttp import web

    from overcast.serve.lb import LoadBalancer

    lb = LoadBalancer("bench")
    lb.set_ready(dict(r.split("=", 1) for r in replicas))
    web.run_app(lb.app(), host="127.0.0.1", port=port, access_log=None, print=None)


async def load(url: str, n: int, concurrency: int) -> tuple[float, np.ndarray]:
    latencies: list[float] = []
    body = {"prompt": "benchmark", "max_tokens": 8}
    queue = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            t = time.perf_counter()
            async with session.post(url + "/generate", json=body) as r:
                await r.read()
                assert r.status == 200, r.status
            latencies.append(time.perf_counter() - t)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        for _ in range(50):  # warm-up connections
            async with session.post(url + "/generate", json=body) as r:
                await r.read()
        start = time.perf_counter()
        await asyncio.gather(*[worker(session) for _ in range(concurrency)])
        wall = time.perf_counter() - start
    return n / wall, np.array(latencies) * 1000


def wait_http(url: str, timeout: float = 15) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/-/replicas", timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(url)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--lb-port", type=int, default=0)
    ap.add_argument("--replica", action="append", default=[])
    args = ap.parse_args()
    if args.lb_port:  # child mode: be the load balancer
        run_lb(args.lb_port, args.replica)
        return
    reps = [ReplicaProcess(f"r{i}") for i in range(2)]
    lb_port = free_port()
    lb = None
    try:
        for r in reps:
            r.wait_ready()
        cmd = [sys.executable, __file__, "--lb-port", str(lb_port)]
        for r in reps:
            cmd += ["--replica", f"{r.id}={r.url}"]
        lb = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_http(f"http://127.0.0.1:{lb_port}")
        rows = {}
        for name, url in (("direct", reps[0].url), ("via LB", f"http://127.0.0.1:{lb_port}")):
            rps, lat = asyncio.run(load(url, args.requests, args.concurrency))
            rows[name] = {
                "rps": rps,
                "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)),
            }
    finally:
        if lb is not None:
            lb.kill()
        for r in reps:
            r.kill()
    d, v = rows["direct"], rows["via LB"]
    added = {"p50_ms": v["p50_ms"] - d["p50_ms"], "p99_ms": v["p99_ms"] - d["p99_ms"]}
    print(f"{'path':<8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in rows.items():
        print(f"{name:<8} {row['rps']:>8.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}")
    print(
        f"added latency: p50 {added['p50_ms']:+.2f} ms, p99 {added['p99_ms']:+.2f} ms; "
        f"throughput ratio LB/direct {v['rps'] / d['rps']:.2f}"
        f" (concurrency {args.concurrency}, 2 cores shared)"
    )
    out = ROOT / "bench" / "results" / "lb_overhead.json"
    out.write_text(json.dumps({"rows": rows, "added": added, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
