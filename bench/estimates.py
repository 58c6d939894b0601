"""What corrected estimates cost the control loop (control/estimates.py), with the real store and loop.

1. The factor query (Store.finished_runs) over a history of finished jobs (a fifth failed or
   cancelled) with their launch records (spread over teams and 60 days, so the 30-day window cuts:
   half of them are read, every one in the window, however many a team has); the control loop's full
   read (control/estimates.py's Evidence from scratch: the query and the factors, what a restarted loop
   does, then once an hour) and its incremental read a minute later, after the jobs that ended in that
   minute at the history's rate (at least one).
2. A tick (ms, wall and this process's CPU) with N pending jobs that do not fit, a tenth of them
   requeued (so the per-tick run-hours query runs) and half from a team whose history gives it a
   factor, against the baseline of the same loop with corrections off, in the same run; also with the
   factors read every tick (ttl 0, the worst case).

    nice .venv/bin/python bench/estimates.py [--history 10000 100000] [--pending 1000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from overcast.backends.local import LocalBackend
from overcast.control.demo import DEMO_CLUSTERS
from overcast.control.estimates import EstimateCache, Evidence
from overcast.control.loop import ControlLoop
from overcast.scheduler.estimates import PROVISIONING_HOURS, WINDOW_DAYS
from overcast.scheduler.snapshot import PendingJob, RunningJob
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobState, Store
from overcast.store.tables import jobs, launches

H = 3600.0
TEAMS = 20

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "estimates.json"


class Off(EstimateCache):
    """The baseline: pending and running jobs as stored, no query."""

    def correct(
        self, store: Store, now: float, pending: list[PendingJob], running: list[RunningJob]
    ) -> tuple[list[PendingJob], list[RunningJob]]:
        return pending, running


def spec(team: str, hours: float, nodes: int = 1) -> JobSpec:
    gpu = Resources(accelerators=(AcceleratorRequest(name="H100", count=1),))
    return JobSpec(name="j", run="true", num_nodes=nodes, resources=gpu, team=team, expected_hours=hours)


def add_history(store: Store, n: int, now: float, first: int = 0, days: float = 60.0) -> None:
    """``n`` finished jobs (team t0 under-states 20x; one in ten failed, one in ten cancelled) with one
    ended launch each on 8 GPUs, ended over the ``days`` before ``now``, written in bulk; ``first``: the
    first one's number (job ids are h-<number>)."""
    job_rows, launch_rows = [], []
    for i in range(first, first + n):
        team = f"t{i % TEAMS}"
        ended = now - ((i - first) / n) * days * 24 * H
        ran = 2.0 * H * (20 if team == "t0" else 1)
        job_id = f"h-{i}"
        end = {3: "failed", 7: "cancelled"}.get(i % 10, "succeeded")
        job_rows.append({
            "id": job_id, "team": team, "name": "h", "spec": spec(team, 2.0).model_dump_json(),
            "state": end, "priority": 0, "attempt": 1, "restarts": 0, "failures": 0,
            "submitted_at": ended - ran, "updated_at": ended, "started_at": ended - ran, "ended_at": ended,
            "cancel_requested": False,
        })  # fmt: skip
        launch_rows.append({
            "job_id": job_id, "attempt": 1, "pool_id": "p", "backend": "b", "handle": "h",
            "launched_at": ended - ran, "ended": True, "ended_at": ended, "outcome": end,
            "team": team, "nodes": 1, "gpus_per_node": 8,
        })  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(insert(jobs), job_rows)
        conn.execute(insert(launches), launch_rows)


class Timer:
    """Median wall and CPU (this process's: SQLite runs in it) ms of the timed calls."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, fn: Callable[[], object]) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        self.cpu.append(time.process_time() - cpu)
        self.wall.append(time.perf_counter() - wall)

    def ms(self) -> dict[str, float]:
        return {"wall": statistics.median(self.wall) * 1e3, "cpu": statistics.median(self.cpu) * 1e3}


def query_ms(store: Store, now: float, repeat: int) -> dict[str, float]:
    timer = Timer()
    for _ in range(repeat):
        timer(lambda: store.finished_runs(now, days=WINDOW_DAYS, allowance_h=PROVISIONING_HOURS))
    return timer.ms()


def evidence_ms(store: Store, n: int, now: float, repeat: int) -> tuple[dict[str, float], dict[str, float]]:
    """Evidence's full read, and its incremental read a minute after the last one, with the jobs that
    ended in that minute (the history's rate, at least one) written before it."""
    full, inc = Timer(), Timer()
    per_minute = max(1, round(n / (60 * 24 * 60)))
    for _ in range(repeat):
        full(lambda: Evidence().factors(store, now))
    evidence = Evidence()
    evidence.factors(store, now)
    for k in range(repeat):
        now += 60.0
        add_history(store, per_minute, now, first=n + k * per_minute, days=60.0 / (24 * 60 * 60))
        inc(lambda: evidence.factors(store, now))  # noqa: B023 (called at once)
    return full.ms(), inc.ms()


def tick_ms(
    loop: ControlLoop,
    configs: dict[str, EstimateCache],
    repeat: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median tick per estimates config, the configs interleaved tick by tick (load drifts); ``clock``:
    perf_counter (wall) or process_time (this process's CPU, less moved by other work on the machine)."""
    for cache in configs.values():  # warm: lease, reconcile, the waiting reasons, the estimate events
        loop.estimates = cache
        loop.tick()
        loop.tick()
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(repeat):
        for name, cache in configs.items():
            loop.estimates = cache
            start = clock()
            loop.tick()
            times[name].append(clock() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def run_hours_ms(store: Store, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        store.pending_run_hours()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    head = (
        "history",
        "query ms",
        "query cpu",
        "full ms",
        "full cpu",
        "read ms",
        "read cpu",
        "ran ms",
        "tick off",
        "tick on",
        "tick ttl0",
        "cpu off",
        "cpu on",
        "cpu ttl0",
    )
    head += ("on/off", "cpu on/off")
    print(" ".join(f"{h:>9}" for h in head))
    rows: list[dict[str, Any]] = []
    for n in args.history:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            store = Store(f"sqlite:///{home / 'db.sqlite'}")
            now = time.time()
            add_history(store, n, now)
            # too wide for the demo clusters: every tick re-decides all of them
            store.submit_many("t0", [spec("t0", 0.5, nodes=3)] * (args.pending // 2))
            store.submit_many("t1", [spec("t1", 1.0, nodes=3)] * (args.pending - args.pending // 2))
            with store.engine.begin() as conn:  # a tenth requeued: they already ran an attempt
                requeued = [r.id for r in store.list(states=[JobState.PENDING], limit=args.pending)][::10]
                conn.execute(update(jobs).where(jobs.c.id.in_(requeued)).values(attempt=1))
                conn.execute(insert(launches), [
                    {"job_id": j, "attempt": 1, "pool_id": "p", "backend": "b", "handle": "h",
                     "launched_at": now - 3 * H, "ended": True, "ended_at": now - H, "outcome": "preempted"}
                    for j in requeued
                ])  # fmt: skip
            q = query_ms(store, now, args.repeat)
            full, inc = evidence_ms(store, n, now, args.repeat)
            backends = [LocalBackend(c, home=home) for c in DEMO_CLUSTERS]
            loop = ControlLoop(store, backends, home=home)
            configs = {"off": Off(), "on": EstimateCache(), "ttl0": EstimateCache(ttl=0.0)}
            ticks = tick_ms(loop, configs, args.repeat)
            cpu = tick_ms(loop, configs, args.repeat, time.process_time)
            r = run_hours_ms(store, args.repeat)
            assert any(e.kind == "estimate" for e in store.events(limit=10**6)), "nothing was corrected"
            store.close()
        off, on, worst = ticks["off"], ticks["on"], ticks["ttl0"]
        cpu_ratio = cpu["on"] / cpu["off"]
        values = " ".join(
            f"{v:>9.1f}"
            for v in (
                *q.values(),
                *full.values(),
                *inc.values(),
                r,
                off,
                on,
                worst,
                cpu["off"],
                cpu["on"],
                cpu["ttl0"],
            )
        )
        print(f"{n:>9} {values} {on / off:>9.2f} {cpu_ratio:>9.2f}")
        rows.append(
            {"history": n, "pending": args.pending, "query_ms": q, "full_read_ms": full, "read_ms": inc}
            | {"run_hours_ms": r, "tick_ms": ticks}
            | {"tick_cpu_ms": cpu, "tick_on_over_off": on / off, "cpu_on_over_off": cpu_ratio}
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"machine": platform.platform(), "python": sys.version.split()[0], "load": os.getloadavg()}
    RESULTS.write_text(json.dumps(report | {"rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
