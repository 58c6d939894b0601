"""Generated GPU job queues and capacity pools for the batch placement benchmark.

Modelled on the generator described in /work/shared/notes/placement-solvers.md (section 2), re-implemented
from its description: several clouds (hyperscalers and neoclouds) with regions in US/EU/APAC; five GPU
types offered per region with different probabilities; pools sampled over (region, GPU type) with
on-demand / spot / committed flavours and log-uniform capacities; heavy-tailed gang sizes (1-256 GPUs);
accept sets of GPU types, geography and cloud restrictions, spot tolerance, priority weights and
durations. All parameters are assumptions, not data.

Capacity units are GPU slots, as in the notes: a job takes ``gpus`` units of one pool (whole gang in one
pool); sub-node jobs are not bin-packed into 8-GPU nodes. Objective coefficients:
cost = gpus x hours x price, penalty = V x weight x gpus x hours with V = $10 per weighted GPU-hour.
Priority levels (for the "never left out for a lower-priority job" rule) come from the weight:
weight <= 0.5 -> 0, weight 1 -> 1, weight >= 2 -> 2 (or all 0 with ``priority_levels=1``).

    python bench/queue_gen.py 10000 1000   # prints instance statistics
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from overcast.placement.batch import BatchProblem

TYPES = ("L40S", "A100", "H100", "H200", "B200")
REGION_OFFER_P = np.array([0.6, 0.7, 0.8, 0.5, 0.3])
BASE_PRICE = np.array([[1.0, 2.2], [1.3, 4.1], [2.0, 8.0], [3.0, 10.0], [4.5, 12.0]])  # $/GPU-h ranges
ACCEPT_SETS = (
    ("H100", "H200"),
    ("A100", "H100"),
    ("H100",),
    ("H200", "B200"),
    ("B200",),
    ("L40S",),
    ("L40S", "A100"),
    ("A100",),
    ("H100", "H200", "B200"),
)
SIZES = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])
SIZE_P = np.array([0.25, 0.15, 0.15, 0.20, 0.10, 0.07, 0.04, 0.025, 0.015])
WEIGHTS = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
WEIGHT_P = np.array([0.15, 0.25, 0.35, 0.15, 0.10])
VALUE_PER_GPU_HOUR = 10.0
GEOS = ("US", "EU", "APAC")


@dataclass(frozen=True)
class Queue:
    problem: BatchProblem
    gpus: np.ndarray  # GPUs per job
    hours: np.ndarray
    supply_gpus: float


def generate(
    n_jobs: int, n_pools: int, *, seed: int = 1, sweep: bool = False, priority_levels: int = 3
) -> Queue:
    rng = np.random.default_rng(seed)
    # Clouds and regions.
    n_clouds = int(rng.integers(4, 9))
    hyperscaler = np.arange(n_clouds) < 3
    cloud_factor = np.where(hyperscaler, rng.uniform(1.2, 1.25, n_clouds), rng.uniform(0.7, 0.8, n_clouds))
    regions_per_cloud = rng.integers(3, 11, n_clouds)
    region_cloud = np.repeat(np.arange(n_clouds), regions_per_cloud)
    n_regions = region_cloud.size
    region_geo = rng.choice(3, n_regions, p=[0.5, 0.3, 0.2])
    region_factor = rng.uniform(0.9, 1.15, n_regions)
    offered = rng.random((n_regions, len(TYPES))) < REGION_OFFER_P
    offered[np.arange(n_regions), 2] |= ~offered.any(axis=1)  # every region offers something
    # Pools: (region, type) with replacement; duplicates stand for other zones or SKUs.
    combos = np.argwhere(offered)
    pick = combos[rng.integers(0, len(combos), n_pools)]
    pool_region, pool_type = pick[:, 0], pick[:, 1]
    pool_cloud = region_cloud[pool_region]
    flavour = rng.choice(3, n_pools, p=[0.60, 0.28, 0.12])  # 0 on-demand, 1 spot, 2 committed
    lo, hi = BASE_PRICE[pool_type, 0], BASE_PRICE[pool_type, 1]
    price = rng.uniform(lo, hi) * cloud_factor[pool_cloud] * region_factor[pool_region]
    price = np.clip(price, 1.0, 12.0)
    price = np.where(flavour == 1, price * rng.uniform(0.3, 0.6, n_pools), price)
    price = np.where(flavour == 2, 0.01, price)
    capacity = 8.0 * np.floor(np.exp(rng.uniform(0, np.log(513), n_pools)))
    # Jobs (a sweep queue copies a group head with probability 0.5).
    gpus = rng.choice(SIZES, n_jobs, p=SIZE_P)
    accept = rng.integers(0, len(ACCEPT_SETS), n_jobs)
    big = gpus >= 64
    accept = np.where(big & (rng.random(n_jobs) < 0.7), len(ACCEPT_SETS) - 1, accept)
    u = rng.random(n_jobs)
    geo = np.select([u < 0.4, u < 0.52, u < 0.60], [0, 1, 2], -1)
    v = rng.random(n_jobs)
    cloud_mask = np.full(n_jobs, (1 << n_clouds) - 1, dtype=np.int64)
    one = rng.integers(0, n_clouds, n_jobs)
    two = (one + rng.integers(1, n_clouds, n_jobs)) % n_clouds
    cloud_mask = np.where(v < 0.2, 1 << one, cloud_mask)
    cloud_mask = np.where((v >= 0.2) & (v < 0.3), (1 << one) | (1 << two), cloud_mask)
    spot_p = np.where(gpus <= 8, 0.5, np.where(gpus <= 64, 0.2, 0.05))
    spot_ok = rng.random(n_jobs) < spot_p
    weight = rng.choice(WEIGHTS, n_jobs, p=WEIGHT_P)
    hours = np.clip(np.round(np.exp(rng.uniform(0, np.log(168), n_jobs))), 1, 168)
    if sweep:
        head = rng.random(n_jobs) < 0.5
        head[0] = True
        heads = np.flatnonzero(head)
        src = np.where(head, np.arange(n_jobs), heads[rng.integers(0, heads.size, n_jobs)])
        gpus, accept, geo, cloud_mask = gpus[src], accept[src], geo[src], cloud_mask[src]
        spot_ok, weight, hours = spot_ok[src], weight[src], hours[src]
    accept_mask = np.zeros((len(ACCEPT_SETS), len(TYPES)), dtype=bool)
    for i, names in enumerate(ACCEPT_SETS):
        accept_mask[i, [TYPES.index(n) for n in names]] = True
    # Compatibility, in chunks to bound memory.
    rows, cols = [], []
    pool_geo = region_geo[pool_region]
    for s in range(0, n_jobs, 4096):
        e = min(n_jobs, s + 4096)
        ok = accept_mask[accept[s:e]][:, pool_type]
        ok &= (geo[s:e, None] < 0) | (geo[s:e, None] == pool_geo[None, :])
        ok &= ((cloud_mask[s:e, None] >> pool_cloud[None, :]) & 1).astype(bool)
        ok &= spot_ok[s:e, None] | (flavour[None, :] != 1)
        r, c = np.nonzero(ok)
        rows.append(r + s)
        cols.append(c)
    row = np.concatenate(rows)
    col = np.concatenate(cols)
    indptr = np.concatenate(([0], np.cumsum(np.bincount(row, minlength=n_jobs))))
    gpu_hours = gpus * hours
    cost = gpu_hours[row] * price[col]
    penalty = VALUE_PER_GPU_HOUR * weight * gpu_hours
    priority = (
        np.select([weight <= 0.5, weight <= 1.0], [0, 1], 2) if priority_levels > 1 else np.zeros(n_jobs)
    )
    problem = BatchProblem(
        job_nodes=gpus.astype(np.int64),
        job_gpus=np.ones(n_jobs, dtype=np.int64),
        job_penalty=penalty,
        job_priority=priority.astype(np.int64),
        compat_indptr=indptr,
        compat_pool=col,
        compat_cost=cost,
        pool_capacity=capacity,
    )
    return Queue(problem, gpus, hours, float(capacity.sum()))


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python bench/queue_gen.py JOBS POOLS [--sweep]")
    q = generate(int(argv[0]), int(argv[1]), sweep="--sweep" in argv)
    p = q.problem
    demand = float(q.gpus.sum())
    print(
        f"jobs {p.n_jobs}  pools {p.n_pools}  pairs {p.n_pairs}  demand {demand:,.0f} GPUs  "
        f"supply {q.supply_gpus:,.0f} GPUs  load {demand / q.supply_gpus:.2f}  "
        f"compatible pools/job {p.n_pairs / max(p.n_jobs, 1) / max(p.n_pools, 1):.1%}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
