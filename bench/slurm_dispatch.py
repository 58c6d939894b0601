"""Slurm backend: jobs dispatched per second, and state-sync latency with 1,000 jobs in flight.

Starts a real local Slurm 22.05 cluster (scripts/slurm-cluster.sh, 8 nodes x 8 fake H100; needs root), then:

1. dispatch: ``SlurmBackend.launch`` of N one-node jobs (8 run, the rest wait: N in flight), against the
   baseline of plain ``sbatch --parsable`` with the same options, measured in the same run.
2. sync: with N in flight, a job's state is changed behind the backend's back (``scancel``: a job that
   disappears under it) and the backend polls back to back; latency = from ``scancel`` returning to the
   poll that reports the event. Baseline: one plain ``squeue --json`` of the same queue. A control loop
   polling every T seconds adds T/2 on average on top. The same again with ``queue_query="text"``
   (``squeue -O``), against the --json figures.

    .venv/bin/python bench/slurm_dispatch.py [--jobs 1000] [--baseline-jobs 200] [--changes 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fixtures.slurm: the same local clusters the tests use

from overcast.backends.base import EventKind, LaunchRequest  # noqa: E402
from overcast.backends.slurm import SlurmBackend  # noqa: E402
from overcast.backends.slurm_states import is_running, is_waiting  # noqa: E402
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
    ids = [int(j["job_id"]) for j in backend.cli.squeue() if is_running(j) or is_waiting(j)]
    for start in range(0, len(ids), 500):
        backend.cli.scancel(ids[start : start + 500])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(is_running(j) or is_waiting(j) for j in backend.cli.squeue()):
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


def sync_latency(backend: SlurmBackend, changes: int) -> tuple[list[float], list[float], list[float]]:
    """(event latencies, poll() durations, durations of the plain query poll() makes), seconds."""
    query = backend.cli.squeue_text if backend.cluster.queue_query == "text" else backend.cli.squeue
    backend.poll()  # learn everything in flight first
    raw, polls, latencies = [], [], []
    for _ in range(5):
        t = time.perf_counter()
        query()
        raw.append(time.perf_counter() - t)
    waiting = sorted(k for k in backend.active() if backend.slurm_job_id(*k) is not None)
    for job_id, attempt in waiting[-changes:]:  # the last ones queued: certainly still pending
        backend.cli.scancel([backend.slurm_job_id(job_id, attempt)])  # type: ignore[list-item]
        changed = time.perf_counter()
        while True:
            t = time.perf_counter()
            events = backend.poll()
            polls.append(time.perf_counter() - t)
            hit = [e for e in events if e.job_id == job_id and e.kind is EventKind.PREEMPTED]
            if hit:
                latencies.append(time.perf_counter() - changed)
                break
            if time.perf_counter() - changed > 30:
                raise RuntimeError(f"no event for {job_id} within 30s")
    return latencies, polls, raw


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs in flight")
    parser.add_argument("--baseline-jobs", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20, help="state changes to time")
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
        latencies, polls, raw = sync_latency(backend, args.changes)
        text = SlurmBackend(dataclasses.replace(backend.cluster, queue_query="text"))
        text_latencies, text_polls, text_raw = sync_latency(text, args.changes)
        cancel_all(backend)
    finally:
        stop_clusters(clusters)
    rows = [
        ("dispatch (jobs/s)", rate, raw_rate, "plain sbatch"),
        ("poll() with N in flight (ms, median)", statistics.median(polls) * 1e3,
         statistics.median(raw) * 1e3, "plain squeue --json"),
        ("state-sync latency (ms, p50)", percentile(latencies, 0.5) * 1e3, statistics.median(raw) * 1e3,
         "plain squeue --json"),
        ("state-sync latency (ms, p95)", percentile(latencies, 0.95) * 1e3, statistics.median(raw) * 1e3,
         "plain squeue --json"),
        ("poll(), queue_query=text (ms, median)", statistics.median(text_polls) * 1e3,
         statistics.median(polls) * 1e3, "poll() with --json"),
        ("state-sync latency, text (ms, p50)", percentile(text_latencies, 0.5) * 1e3,
         percentile(latencies, 0.5) * 1e3, "latency with --json"),
        ("state-sync latency, text (ms, p95)", percentile(text_latencies, 0.95) * 1e3,
         percentile(latencies, 0.95) * 1e3, "latency with --json"),
    ]  # fmt: skip
    print(f"Slurm 22.05 local cluster, 8 nodes; {in_flight} overcast jobs in flight; {os.cpu_count()} cores")
    print(f"{'metric':40} {'backend':>10} {'baseline':>10} {'ratio':>7}  baseline is")
    for name, value, base, what in rows:
        print(f"{name:40} {value:10.1f} {base:10.1f} {value / base:7.2f}  {what}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "jobs_in_flight": in_flight,
                "dispatch_jobs_per_s": round(rate, 1),
                "baseline_sbatch_jobs_per_s": round(raw_rate, 1),
                "poll_ms_median": round(statistics.median(polls) * 1e3, 1),
                "squeue_json_ms_median": round(statistics.median(raw) * 1e3, 1),
                "sync_latency_ms_p50": round(percentile(latencies, 0.5) * 1e3, 1),
                "sync_latency_ms_p95": round(percentile(latencies, 0.95) * 1e3, 1),
                "text_poll_ms_median": round(statistics.median(text_polls) * 1e3, 1),
                "squeue_text_ms_median": round(statistics.median(text_raw) * 1e3, 1),
                "text_sync_latency_ms_p50": round(percentile(text_latencies, 0.5) * 1e3, 1),
                "text_sync_latency_ms_p95": round(percentile(text_latencies, 0.95) * 1e3, 1),
                "changes_timed": len(latencies),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
