"""Races: concurrent transition() calls and lease holders; exactly one wins."""

from __future__ import annotations

import threading

from overcast.spec.models import JobSpec
from overcast.store import JobState, Store

RACERS = 6


def race(fn, n: int = RACERS) -> list:  # type: ignore[no-untyped-def]
    """Run fn(i) in n threads released together; return their results."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_exactly_one_racer_launches_each_job(store_url: str) -> None:
    stores = [Store(store_url) for _ in range(RACERS)]  # separate engines, like separate processes
    try:
        job_ids = [stores[0].submit("ml", JobSpec(name=f"j{i}")).id for i in range(10)]
        for job_id in job_ids:
            won = race(
                lambda i, job_id=job_id: stores[i].transition(
                    job_id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id=f"pool-{i}"
                )
            )
            winners = [rec for rec in won if rec is not None]
            assert len(winners) == 1
            assert stores[0].get(job_id).pool_id == winners[0].pool_id
    finally:
        for s in stores:
            s.close()


def test_lease_is_exclusive_until_it_expires(store_url: str) -> None:
    stores = [Store(store_url) for _ in range(RACERS)]
    try:
        won = race(lambda i: stores[i].try_acquire_lease("control", f"holder-{i}", 60.0))
        assert won.count(True) == 1
        winner = won.index(True)
        holder = f"holder-{winner}"
        assert stores[0].lease_holder("control") == holder
        assert stores[winner].try_acquire_lease("control", holder, 60.0)  # renewal
        other = (winner + 1) % RACERS
        assert not stores[other].try_acquire_lease("control", f"holder-{other}", 60.0)
        stores[winner].release_lease("control", holder)
        assert stores[other].try_acquire_lease("control", f"holder-{other}", 60.0)
    finally:
        for s in stores:
            s.close()


def test_expired_lease_can_be_taken_over(store_url: str) -> None:
    now = [100.0]
    a = Store(store_url, clock=lambda: now[0])
    b = Store(store_url, clock=lambda: now[0])
    try:
        assert a.try_acquire_lease("control", "a", 10.0)
        now[0] = 109.0
        assert not b.try_acquire_lease("control", "b", 10.0)
        now[0] = 110.5
        assert b.try_acquire_lease("control", "b", 10.0)
        assert not a.try_acquire_lease("control", "a", 10.0)  # the stale leader has lost it
    finally:
        a.close()
        b.close()
