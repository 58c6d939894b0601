"""decide() cycle time for 100 / 1,000 / 10,000 pending jobs over the full bundled catalog.

The snapshot: every catalog pool, each given a seeded log-uniform stock of 1-64 nodes (so jobs compete;
public clouds do run out), plus 10% of those nodes already held by running jobs of priority 0-1. Pending
jobs draw a request from common shapes (H100:8, A100:8, L4:1, ...; 1-16 nodes, priority 0-3, 30% spot
allowed). Each size runs decide() two ways in the same process: single-job placement in queue order
(the baseline) and the per-priority-level batch solver; the table shows cycle time, the time per step,
jobs placed and the expected cost of what was placed.

    .venv/bin/python bench/decide.py [--sizes 100 1000 10000] [--budget 2.0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "decide.json"

from overcast.catalog.load import load_offers  # noqa: E402
from overcast.catalog.pools import build_pools  # noqa: E402
from overcast.placement.pool import Pool  # noqa: E402
from overcast.scheduler.decide import decide  # noqa: E402
from overcast.scheduler.snapshot import PendingJob, RunningJob, Snapshot  # noqa: E402
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources, SpotPolicy  # noqa: E402

SHAPES = [
    ("H100", 8),
    ("H100", 8),
    ("A100", 8),
    ("A100-80GB", 8),
    ("H200", 8),
    ("L4", 1),
    ("A10G", 1),
    ("T4", 1),
]
NODES = [1, 1, 1, 2, 2, 4, 8, 16]


def make_spec(rng: random.Random, name: str, priority: int) -> JobSpec:
    accel, count = rng.choice(SHAPES)
    spot = SpotPolicy.ALLOWED if rng.random() < 0.3 else SpotPolicy.NEVER
    return JobSpec(
        name=name,
        num_nodes=rng.choice(NODES),
        priority=priority,
        expected_hours=rng.choice([1.0, 4.0, 24.0]),
        resources=Resources(accelerators=(AcceleratorRequest(name=accel, count=count),), spot=spot),
    )


def make_snapshot(pools: list[Pool], n_pending: int, seed: int = 0) -> Snapshot:
    rng = random.Random(seed)
    stocked, running = [], []
    for p in pools:
        capacity = round(2 ** rng.uniform(0, 6))
        pool = Pool(**{f: getattr(p, f) for f in p.__slots__})  # a copy: the catalog list stays untouched
        pool.capacity_nodes = capacity
        stocked.append(pool)
        held = capacity // 10
        if held:
            spec = make_spec(rng, f"run-{p.id}", rng.choice([0, 1]))
            running.append(RunningJob(f"run-{p.id}", spec, p.id, held, 1, started_at=rng.uniform(0, 1e6)))
    pending = [
        PendingJob(f"job{i}", make_spec(rng, f"job{i}", rng.choice([0, 1, 2, 3])), submitted_at=float(i))
        for i in range(n_pending)
    ]
    return Snapshot(now=1e6, pools=stocked, pending=pending, running=running)


def run(snapshot: Snapshot, mode: str, budget: float) -> dict:
    threshold = 10**9 if mode == "single-job" else 0
    start = time.perf_counter()
    d = decide(snapshot, batch_threshold=threshold, time_budget_s=budget)
    wall = time.perf_counter() - start
    specs = {j.id: j.spec for j in snapshot.pending}
    prices = {p.id: p.marginal_price_per_node_hour for p in snapshot.pools}
    cost = sum(prices[x.pool_id] * x.nodes * specs[x.job_id].expected_hours for x in d.place)
    return {
        "mode": mode,
        "cycle_s": wall,
        "steps_s": d.step_seconds,
        "placed": len(d.place),
        "preempted": len(d.preempt),
        "placed_gpu_hours": sum(
            x.nodes * specs[x.job_id].resources.accelerators[0].count * specs[x.job_id].expected_hours
            for x in d.place
        ),
        "placed_cost": cost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--budget", type=float, default=2.0, help="batch solver time budget per cycle (s)")
    args = parser.parse_args()
    pools = build_pools(load_offers(), now=1e6)
    rows = []
    for n in args.sizes:
        snapshot = make_snapshot(pools, n)
        for mode in ("single-job", "batch"):
            row = run(snapshot, mode, args.budget)
            row["pending"] = n
            rows.append(row)
    print(f"{len(pools):,} pools; batch time budget {args.budget:g} s; load average {os.getloadavg()[0]:.1f}")
    head = f"{'pending':>8} {'mode':<11} {'cycle s':>8} {'capacity':>9} {'place':>8} {'preempt':>8}"
    print(f"{head} {'placed':>7} {'GPU-h placed':>13} {'$ placed':>11}")
    for r in rows:
        s = r["steps_s"]
        print(
            f"{r['pending']:>8,} {r['mode']:<11} {r['cycle_s']:>8.3f} {s.get('2-free-capacity', 0):>9.3f} "
            f"{s.get('3-place', 0):>8.3f} {s.get('4-preempt', 0):>8.3f} {r['placed']:>7,} "
            f"{r['placed_gpu_hours']:>13,.0f} {r['placed_cost']:>11,.0f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "command": "bench/decide.py " + " ".join(sys.argv[1:]),
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load": os.getloadavg(),
                },
                "pools": len(pools),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
