"""Races: concurrent transition() calls, cancels and lease holders; exactly one wins."""

from __future__ import annotations

import threading

from alembic.script import ScriptDirectory
from sqlalchemy import event

from overcast.spec.models import JobSpec
from overcast.store import JobRecord, JobState, Store, migrate

RACERS = 6


def race(fn, n: int = RACERS) -> list:  # type: ignore[no-untyped-def]
    """Run fn(i) in n threads released together; return their results (a racer's error is raised)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # a crashed racer must fail the test, not count as a loser
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a racer is still running after 30 s"
    if errors:
        raise errors[0]
    return results


def test_stores_opened_together_migrate_once(store_url: str) -> None:
    stores = race(lambda _i: Store(store_url))  # each runs the migrations on a fresh database
    try:
        head = ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()
        assert {migrate.current_revision(s.engine) for s in stores} == {head}
        assert stores[0].submit("ml", JobSpec(name="j")) is not None
    finally:
        for s in stores:
            s.close()


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


def test_exactly_one_racer_takes_over_an_expired_lease(store_url: str) -> None:
    now = [100.0]
    stores = [Store(store_url, clock=lambda: now[0]) for _ in range(RACERS)]
    try:
        assert stores[0].try_acquire_lease("control", "old", 10.0)
        now[0] = 200.0  # expired: every racer's conditional UPDATE matches the row it read
        won = race(lambda i: stores[i].try_acquire_lease("control", f"holder-{i}", 60.0))
        assert won.count(True) == 1
        assert stores[0].lease_holder("control") == f"holder-{won.index(True)}"
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


def test_cancel_cannot_overwrite_a_launch_that_won_the_race(store_url: str) -> None:
    """The loop moves the job PENDING -> LAUNCHING between request_cancel's read and its write."""
    canceller, loop = Store(store_url), Store(store_url)
    try:
        job = loop.submit("ml", JobSpec(name="j"))
        launched: list[JobRecord | None] = []
        racer = threading.Thread(
            target=lambda: launched.append(
                loop.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1)
            )
        )

        def launch_in_between(conn, cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
            if statement.lstrip().upper().startswith("UPDATE JOBS") and not racer.is_alive():
                racer.start()
                racer.join(timeout=1.0)  # it blocks here if the canceller holds the row (it should)

        event.listen(canceller.engine, "before_cursor_execute", launch_in_between)
        cancelled = canceller.request_cancel(job.id)
        racer.join(timeout=30)
        final = loop.get(job.id)
        if launched[0] is not None:  # the launch went first: the job must stay launched, only flagged
            assert final.state is JobState.LAUNCHING and final.cancel_requested
        else:  # the cancel went first: the launch's compare-and-set must have failed
            assert final.state is JobState.CANCELLED
        assert cancelled is not None and cancelled.state is final.state
    finally:
        canceller.close()
        loop.close()


def test_an_in_memory_store_shared_by_threads_keeps_every_acknowledged_job() -> None:
    # One SQLite connection serves every thread (engine.py); without turns, one thread's rollback
    # undid another's committed submit (11-18 of 900 lost, or a segfault).
    store = Store("sqlite://")
    acknowledged = race(lambda i: [store.submit("t", JobSpec(name=f"j{i}-{k}")).id for k in range(60)], n=3)
    ids = {job_id for batch in acknowledged for job_id in batch}
    assert len(ids) == 180
    assert {j.id for j in store.list(limit=1000)} == ids
