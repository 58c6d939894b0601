"""Preemption: make room for a job that cannot be placed by stopping lower-priority running jobs.

Only pools that pass every hard filter of the job except free capacity and quota are considered, and
only running jobs of strictly lower priority can be victims (equal priority never preempts, so two jobs
cannot preempt each other in a loop). Per pool, victims are taken lowest priority first, newest first
(least work lost), until the gang fits; then any victim not needed is given back (minimal set). The
pool whose victims have the lowest top priority wins, then the one losing the fewest nodes, then the
cheapest. The preemptor waits for its victims to stop; their nodes stay counted as used this cycle.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass

import numpy as np

from overcast.placement import score
from overcast.placement.filters import Request, run_filters
from overcast.placement.index import PoolIndex, Usage
from overcast.scheduler.snapshot import PendingJob, RunningJob


@dataclass(frozen=True, slots=True)
class Eviction:
    position: int  # pool position in the index
    victims: tuple[RunningJob, ...]
    free_before: int  # free nodes in the pool before the victims stop (capped at the gang size)


def victim_key(job: RunningJob) -> tuple[int, float, str]:
    """Preempt the lowest priority first; among equals the newest (it has done the least work)."""
    return (job.spec.priority, -job.started_at, job.id)


def find_eviction(
    job: PendingJob,
    index: PoolIndex,
    running_by_pool: Mapping[int, list[RunningJob]],
    *,
    now: float,
    usage: Usage | None,
    already_preempted: Set[str],
) -> Eviction | None:
    """The cheapest way to free room for ``job`` by preempting lower-priority jobs, or None."""
    request = Request.of(job.spec)
    trace, _ = run_filters(request, index, now=now, usage=usage)
    positions = trace.survivors_but_usage
    positions = positions[np.isin(positions, list(running_by_pool))]
    if not len(positions):
        return None
    costs = score.expected_cost(index, positions, job.spec)
    free = index.free_nodes(positions, usage)  # negative when the pool is over capacity: free that too
    quota_left = index.quota_gpus_left(positions, usage)
    best: tuple | None = None
    for pos, cost, free_now, quota in zip(positions.tolist(), costs, free, quota_left, strict=True):
        eligible = sorted(
            (
                r
                for r in running_by_pool[pos]
                if r.spec.priority < job.spec.priority and r.id not in already_preempted
            ),
            key=victim_key,
        )
        # nodes to free: for the pool's capacity, and for the quota (victims' GPUs count against it too)
        need = job.spec.num_nodes - free_now  # -inf for a pool without a known limit
        gpus = int(index.gpus[pos])
        if gpus and np.isfinite(quota):
            need = max(need, np.ceil((job.spec.num_nodes * gpus - quota) / gpus))
        victims = _minimal_victims(eligible, need)
        if victims is None:
            continue
        avoided = index.pools[pos].id in job.avoid_pools
        key = (
            avoided,
            max((v.spec.priority for v in victims), default=-(10**9)),
            sum(v.nodes for v in victims),
            len(victims),
            float(cost),
            pos,
        )
        if best is None or key < best[0]:
            best = (key, Eviction(pos, tuple(victims), int(max(min(free_now, job.spec.num_nodes), 0))))
    return None if best is None else best[1]


def _minimal_victims(eligible: list[RunningJob], need: float) -> list[RunningJob] | None:
    """Shortest prefix of ``eligible`` freeing ``need`` nodes, then drop any victim not needed
    (trying the most valuable first). None when all of them together are not enough."""
    if need <= 0:
        return None  # it fits without preempting: nothing to gain here
    taken: list[RunningJob] = []
    freed = 0
    for victim in eligible:
        if freed >= need:
            break
        taken.append(victim)
        freed += victim.nodes
    if freed < need:
        return None
    for victim in sorted(taken, key=victim_key, reverse=True):
        if freed - victim.nodes >= need:
            taken.remove(victim)
            freed -= victim.nodes
    return taken
