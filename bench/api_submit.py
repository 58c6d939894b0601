"""API submission throughput: jobs/s and p50/p99 latency through a real uvicorn server.

For SQLite and PostgreSQL (a throwaway server, as in the tests): store 10,000 jobs first, start
``uvicorn overcast.api.app:app_from_env`` in a subprocess, then a few concurrent clients submit over
HTTP keep-alive. Baselines measured in the same run: the same submissions straight into the Store
(no HTTP) and ``GET /healthz`` (HTTP and framework only). Target on a 2-core machine: >= 500
submissions/s with p99 <= 50 ms (Slurm's sbatch takes ~250 jobs/s on the same machine).

    .venv/bin/python bench/api_submit.py [--jobs 3000] [--clients 4] [--prefill 10000] [--backends sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures.postgres: the same throwaway PostgreSQL the tests use

from overcast.spec.models import AcceleratorRequest, JobSpec, Resources  # noqa: E402
from overcast.store import Store  # noqa: E402
from tests.fixtures.postgres import PostgresServer, free_port  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "api_submit.json"
SPEC = {
    "name": "bench-train",
    "resources": {"accelerators": [{"name": "H100", "count": 8}], "spot": "allowed"},
    "num_nodes": 2,
    "run": "python train.py",
    "checkpoint_dir": "s3://ckpt/bench",
}
START_TIMEOUT_S = 30
WARM_UP = 50


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (uvicorn workers): a cost per request
    that depends much less on machine load than wall time does."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent pid
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def database(backend: str):  # type: ignore[no-untyped-def]
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="overcast-bench-") as tmp:
            yield f"sqlite:///{tmp}/overcast.db"
        return
    server = PostgresServer().start()
    try:
        yield server.create_database("bench")
    finally:
        server.stop()


def prefill(url: str, count: int) -> tuple[Store, str]:
    store = Store(url)
    token = store.create_team("bench")
    spec = JobSpec.model_validate(SPEC)
    for start in range(0, count, 1000):
        store.submit_many(f"team{start // 1000 % 7}", [spec] * min(1000, count - start))
    return store, token


def direct_rate(store: Store, n: int) -> float:
    spec = JobSpec(
        name="direct", resources=Resources(accelerators=(AcceleratorRequest(name="H100", count=8),))
    )
    t0 = time.perf_counter()
    for _ in range(n):
        store.submit("direct", spec)
    return n / (time.perf_counter() - t0)


@contextmanager
def uvicorn_server(url: str, log: Path, workers: int):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "OVERCAST_DATABASE_URL": url}
    app = "overcast.api.app:app_from_env"
    cmd = [sys.executable, "-m", "uvicorn", "--factory", app, "--host", "127.0.0.1", "--port", str(port),
           "--no-access-log", "--log-level", "warning", "--workers", str(workers)]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not answer within {START_TIMEOUT_S}s")
            time.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def load(base: str, token: str, method: str, path: str, total: int, clients: int) -> dict[str, float]:
    """``total`` requests from ``clients`` concurrent keep-alive connections; rate and latency.

    aiohttp rather than httpx as the load generator: it costs about a third of httpx's CPU per
    request, and on a 2-core machine the client shares the CPUs with the server it measures.
    """
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps(SPEC).encode() if method == "POST" else None
    latencies: list[float] = []

    async def client(http: aiohttp.ClientSession, todo: Iterator[int]) -> None:
        for _ in todo:
            t0 = time.perf_counter()
            async with http.request(method, base + path, data=body, headers=headers) as resp:
                text = await resp.read()
            latencies.append(time.perf_counter() - t0)
            if resp.status not in (200, 201):
                raise RuntimeError(f"{method} {path} -> {resp.status}: {text[:200]!r}")

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        warm_up = iter(range(WARM_UP))  # open every connection and warm caches before timing
        await asyncio.gather(*(client(http, warm_up) for _ in range(clients)))
        latencies.clear()
        todo = iter(range(total))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http, todo) for _ in range(clients)))
        elapsed = time.perf_counter() - t0
    return {
        "requests": total,
        "per_s": total / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies),
    }


def run_backend(backend: str, args: argparse.Namespace) -> dict:
    with database(backend) as url:
        store, token = prefill(url, args.prefill)
        direct = direct_rate(store, min(args.jobs, 1000))
        with (
            tempfile.TemporaryDirectory() as tmp,
            uvicorn_server(url, Path(tmp) / "uvicorn.log", args.workers) as (base, pid),
        ):
            health = asyncio.run(load(base, token, "GET", "/healthz", min(args.jobs, 2000), args.clients))
            cpu0, client0 = cpu_seconds(pid), time.process_time()
            submit = asyncio.run(load(base, token, "POST", "/v1/jobs", args.jobs, args.clients))
            submit["client_cpu_ms"] = 1000 * (time.process_time() - client0) / (args.jobs + WARM_UP)
            # includes the warm-up requests: a slight overestimate
            submit["server_cpu_ms"] = 1000 * (cpu_seconds(pid) - cpu0) / (args.jobs + WARM_UP)
        stored = len(store.list(team="bench", limit=args.jobs + 2 * WARM_UP))
        store.close()
    if stored != args.jobs + WARM_UP:
        raise RuntimeError(f"{backend}: {stored} jobs stored, {args.jobs + WARM_UP} submitted")
    return {
        "backend": backend,
        "prefilled": args.prefill,
        "submit": submit,
        "healthz": health,
        "direct_per_s": direct,
    }


# (title, width, value of a result row as text)
COLUMNS = [
    ("backend", 11, lambda r: r["backend"]),
    ("submit/s", 10, lambda r: f"{r['submit']['per_s']:.0f}"),
    ("p50 ms", 9, lambda r: f"{r['submit']['p50_ms']:.1f}"),
    ("p99 ms", 9, lambda r: f"{r['submit']['p99_ms']:.1f}"),
    ("max ms", 9, lambda r: f"{r['submit']['max_ms']:.1f}"),
    ("srv cpu ms", 12, lambda r: f"{r['submit']['server_cpu_ms']:.2f}"),
    ("cli cpu ms", 12, lambda r: f"{r['submit']['client_cpu_ms']:.2f}"),
    ("healthz/s", 11, lambda r: f"{r['healthz']['per_s']:.0f}"),
    ("direct/s", 10, lambda r: f"{r['direct_per_s']:.0f}"),
    ("api/direct", 12, lambda r: f"{r['ratio_api_to_direct']:.2f}"),
    ("/sbatch", 9, lambda r: f"{r['ratio_to_sbatch_250']:.2f}"),
    ("target", 8, lambda r: "yes" if r["meets_target"] else "NO"),
]


def print_table(rows: list[dict]) -> None:
    print("".join(title.ljust(w) if i == 0 else title.rjust(w) for i, (title, w, _) in enumerate(COLUMNS)))
    for r in rows:
        print("".join(f(r).ljust(w) if i == 0 else f(r).rjust(w) for i, (_, w, f) in enumerate(COLUMNS)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="submissions measured per backend")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--prefill", type=int, default=10_000, help="jobs stored before measuring")
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rows = [run_backend(b, args) for b in args.backends]
    loadavg = (load_before, os.getloadavg()[0])
    print(f"{args.jobs} submissions, {args.clients} clients, {args.workers} uvicorn worker(s), "
          f"{args.prefill} jobs already stored; load average {loadavg[0]:.1f} -> {loadavg[1]:.1f} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    for r in rows:
        s = r["submit"]
        r["ratio_api_to_direct"] = s["per_s"] / r["direct_per_s"]
        r["ratio_to_sbatch_250"] = s["per_s"] / 250.0
        r["meets_target"] = s["per_s"] >= 500 and s["p99_ms"] <= 50
    print_table(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "clients": args.clients,
        "workers": args.workers,
        "target": {"per_s": 500, "p99_ms": 50},
        "sbatch_reference_per_s": 250,
        "load_average": loadavg,
    }
    RESULTS.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
