"""Step (c) of a tick: the scheduler's input, built from backends (pools, use) and the store (jobs,
learned pool health)."""

from __future__ import annotations

import logging

from overcast.control.health import apply_learned
from overcast.control.runtime import LIVE, Runtime
from overcast.placement.pool import Pool
from overcast.scheduler.snapshot import PendingJob, RunningJob, Snapshot
from overcast.store import JobState, PoolHealthRecord

log = logging.getLogger(__name__)

MAX_JOBS = 1_000_000


def backend_pools(rt: Runtime) -> list[Pool]:
    pools: list[Pool] = []
    for name, backend in rt.backends.items():
        try:
            pools.extend(backend.pools())
        except Exception as exc:  # a backend that cannot answer offers nothing this tick
            log.warning("pools() of %s failed: %s", name, exc)
    return pools


def build_snapshot(rt: Runtime, now: float, health: dict[str, PoolHealthRecord]) -> Snapshot:
    pools = backend_pools(rt)
    apply_learned(pools, health, now)
    store = rt.store
    pending = [
        PendingJob(j.id, j.spec, j.submitted_at, j.attempt, frozenset(rt.avoid.get(j.id, ())))
        for j in store.list(states=[JobState.PENDING], limit=MAX_JOBS)
        if not j.cancel_requested
    ]
    running = [
        RunningJob(
            j.id, j.spec, j.pool_id, j.nodes or j.spec.num_nodes, j.attempt, j.started_at or j.updated_at
        )
        for j in store.list(states=LIVE, limit=MAX_JOBS)
        if j.pool_id is not None
    ]
    return Snapshot(now=now, pools=pools, pending=pending, running=running)
