"""Slurm backend: jobs dispatched per second, and state-sync latency with 1,000 jobs in flight.

Starts a real local Slurm 22.05 cluster (scripts/slurm-cluster.sh, 8 nodes x 8 fake H100; needs root), then:

1. dispatch: ``SlurmBackend.launch`` of N one-node jobs (8 run, the rest wait: N in flight), against the
   baseline of plain ``sbatch --parsable`` with the same options, measured in the same run.
2. sync: with N in flight, a job's state is changed behind the backend's back (``scancel``: a job that
   disappears under it) and the backend polls back to back; latency = from ``scancel`` returning to the
   poll that reports the event, for both ways of reading the queue (``queue_query`` "text":
   ``squeue -O``, and "json": ``squeue --json``), taking turns. Baseline: the plain reads, interleaved,
   wall and client CPU time. A control loop polling every T seconds adds T/2 on average on top.

    .venv/bin/python bench/slurm_dispatch.py [--jobs 1000] [--baseline-jobs 200] [--changes 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures.slurm: the same local clusters the tests use

from overcast.backends.base import EventKind, LaunchRequest  # noqa: E402
from overcast.backends.slurm import SlurmBackend  # noqa: E402
from overcast.backends.slurm_states import is_live  # noqa: E402
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources  # noqa: E402
from tests.fixtures.slurm import SlurmUnavailable, start_clusters, stop_clusters  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "slurm_dispatch.json"
SPEC = JobSpec(
    name="bench",
    run="sleep 3600",
    resources=Resources(accelerators=(AcceleratorRequest(name="H100", count=8),)),
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cancel_all(backend: SlurmBackend) -> None:
    ids = [int(j["job_id"]) for j in backend.cli.squeue() if is_live(j)]
    for start in range(0, len(ids), 500):
        backend.cli.scancel(ids[start : start + 500])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(is_live(j) for j in backend.cli.squeue()):
        time.sleep(0.2)


def baseline_sbatch(backend: SlurmBackend, work: Path, count: int) -> float:
    """Plain sbatch with the options the backend uses: jobs/s."""
    (work / "raw").mkdir(parents=True, exist_ok=True)
    script = work / "raw" / "job.sh"
    script.write_text("#!/bin/bash\nsleep 3600\n")
    args = ["--nodes=1", "--exclusive", "--gres=gpu:h100:8", "--no-requeue", f"--output={work}/raw/out.log"]
    start = time.perf_counter()
    for i in range(count):
        backend.cli.sbatch(str(script), [f"--job-name=raw.{i}", *args])
    return count / (time.perf_counter() - start)


def dispatch(backend: SlurmBackend, count: int) -> float:
    (pool,) = backend.pools()
    start = time.perf_counter()
    for i in range(count):
        backend.launch(LaunchRequest(f"job-{i:05d}", 1, pool, 1, SPEC))
    return count / (time.perf_counter() - start)


def query_cost(backend: SlurmBackend, reps: int = 10) -> dict[str, tuple[float, float]]:
    """Plain queue reads, --json and -O interleaved (fair under a varying machine load):
    {kind: (median wall seconds, median client CPU seconds)}."""
    samples: dict[str, list[tuple[float, float]]] = {"json": [], "text": []}
    for _ in range(reps):
        for kind, read in (("json", backend.cli.squeue), ("text", backend.cli.squeue_text)):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            read()
            wall = time.perf_counter() - t
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            samples[kind].append((wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
    return {
        k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
        for k, v in samples.items()
    }


def sync_latency(
    backends: dict[str, SlurmBackend], changes: int
) -> dict[str, tuple[list[float], list[float]]]:
    """{queue_query: (event latencies, poll() durations)}, seconds; the backends take turns."""
    for backend in backends.values():
        backend.poll()  # learn everything in flight first
    first = next(iter(backends.values()))
    waiting = sorted(k for k in first.active() if first.slurm_job_id(*k) is not None)
    results: dict[str, tuple[list[float], list[float]]] = {kind: ([], []) for kind in backends}
    kinds = list(backends)
    for i, (job_id, attempt) in enumerate(waiting[-changes * len(kinds) :]):  # the last queued: pending
        kind = kinds[i % len(kinds)]
        backend, (latencies, polls) = backends[kind], results[kind]
        backend.cli.scancel([first.slurm_job_id(job_id, attempt)])  # type: ignore[list-item]
        changed = time.perf_counter()
        while True:
            t = time.perf_counter()
            events = backend.poll()
            polls.append(time.perf_counter() - t)
            if any(e.job_id == job_id and e.kind is EventKind.PREEMPTED for e in events):
                latencies.append(time.perf_counter() - changed)
                break
            if time.perf_counter() - changed > 30:
                raise RuntimeError(f"no event for {job_id} within 30s")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in flight")
    parser.add_argument("--baseline-jobs", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20, help="state changes to time per queue query kind")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ovc-bench-"))
    try:
        clusters = start_clusters(root, (("bench-hpc", 8, 16.0),))
    except SlurmUnavailable as e:
        print(f"cannot run: {e}", file=sys.stderr)
        return 2
    try:
        backend = SlurmBackend(clusters[0].cluster(root / "work", job_prefix="bench", pending_timeout_s=None))
        raw_rate = baseline_sbatch(backend, root / "work", args.baseline_jobs)
        cancel_all(backend)
        rate = dispatch(backend, args.jobs)
        in_flight = len(backend.active())
        cost = query_cost(backend)
        variants = {
            kind: SlurmBackend(dataclasses.replace(backend.cluster, queue_query=kind)) for kind in cost
        }
        sync = sync_latency(variants, args.changes)
        cancel_all(backend)
    finally:
        stop_clusters(clusters)
        shutil.rmtree(root, ignore_errors=True)
    ms = 1e3
    (json_lat, json_polls), (text_lat, text_polls) = sync["json"], sync["text"]
    rows = [
        ("dispatch (jobs/s)", rate, raw_rate, "plain sbatch"),
        ("queue read, -O (ms wall, median)", cost["text"][0] * ms, cost["json"][0] * ms, "squeue --json"),
        ("queue read, -O (ms client CPU)", cost["text"][1] * ms, cost["json"][1] * ms, "squeue --json"),
        ("poll(), text (ms, median)", statistics.median(text_polls) * ms, cost["text"][0] * ms,
         "squeue -O"),
        ("poll(), json (ms, median)", statistics.median(json_polls) * ms, cost["json"][0] * ms,
         "squeue --json"),
        ("state-sync latency, text (ms, p50)", percentile(text_lat, 0.5) * ms,
         percentile(json_lat, 0.5) * ms, "same, json"),
        ("state-sync latency, text (ms, p95)", percentile(text_lat, 0.95) * ms,
         percentile(json_lat, 0.95) * ms, "same, json"),
    ]  # fmt: skip
    load = os.getloadavg()[0]
    print(f"Slurm 22.05 local cluster, 8 nodes; {in_flight} overcast jobs in flight; {os.cpu_count()} cores, "
          f"load {load:.1f}")  # fmt: skip
    print(f"{'metric':40} {'backend':>10} {'baseline':>10} {'ratio':>7}  baseline is")
    for name, value, base, what in rows:
        print(f"{name:40} {value:10.1f} {base:10.1f} {value / base:7.2f}  {what}")
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": round(load, 2),
        },
        "jobs_in_flight": in_flight,
        "dispatch_jobs_per_s": round(rate, 1),
        "baseline_sbatch_jobs_per_s": round(raw_rate, 1),
        "squeue_text_ms": round(cost["text"][0] * ms, 1),
        "squeue_json_ms": round(cost["json"][0] * ms, 1),
        "squeue_text_client_cpu_ms": round(cost["text"][1] * ms, 1),
        "squeue_json_client_cpu_ms": round(cost["json"][1] * ms, 1),
        "poll_text_ms_median": round(statistics.median(text_polls) * ms, 1),
        "poll_json_ms_median": round(statistics.median(json_polls) * ms, 1),
        "sync_latency_text_ms_p50": round(percentile(text_lat, 0.5) * ms, 1),
        "sync_latency_text_ms_p95": round(percentile(text_lat, 0.95) * ms, 1),
        "sync_latency_json_ms_p50": round(percentile(json_lat, 0.5) * ms, 1),
        "sync_latency_json_ms_p95": round(percentile(json_lat, 0.95) * ms, 1),
        "changes_timed": len(json_lat) + len(text_lat),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
