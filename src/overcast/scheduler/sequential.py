"""Single-job placement of a list of jobs, one after the other, in the order given.

Used by decide() when few jobs are pending, and for whatever the batch solver left out.
"""

from __future__ import annotations

from overcast.placement.filters import request_key
from overcast.placement.index import PoolIndex, Usage
from overcast.placement.single import place_job
from overcast.scheduler.burst import BurstLimit
from overcast.scheduler.snapshot import PendingJob, Place


def place_in_order(
    jobs: list[PendingJob],
    index: PoolIndex,
    usage: Usage,
    *,
    now: float,
    misses: dict[tuple, str],
    burst: BurstLimit | None = None,
) -> tuple[list[Place], list[tuple[PendingJob, str]]]:
    """Single-job placement, one job after the other. Mutates ``usage`` and ``misses`` (request key ->
    why it fits nowhere: capacity only shrinks within a cycle, so a later job asking the same misses too).
    ``burst``: jobs it limits wait rather than start on list-price pools (``burst.py``)."""
    placed: list[Place] = []
    unplaced: list[tuple[PendingJob, str]] = []
    for job in jobs:
        key = request_key(job.spec)
        if key in misses:
            unplaced.append((job, misses[key]))
            continue
        result = place_job(
            job.spec, index, now=now, usage=usage, avoid=job.avoid_pools, top=1, explain_ranks=False
        )
        best = result.best
        if best is None:
            misses[key] = result.summary()
            unplaced.append((job, misses[key]))
            continue
        if burst is not None and not burst.allowed(job, index, best.position):
            unplaced.append((job, burst.reason(job)))  # not a miss: a smaller job of this shape may go
            continue
        usage.take(index, best.position, best.nodes)
        placed.append(Place(job.id, best.pool.id, best.nodes, best.reason))
    return placed, unplaced
