"""Shared by the estimates tests (tests/control/test_estimates*.py): a store clock that only moves when
told, finished and requeued jobs written through the real store, and the pending/running jobs that
build_snapshot hands decide()."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overcast.control.estimates import EstimateCache
from overcast.control.loop import ControlLoop
from overcast.control.runtime import Runtime
from overcast.control.snapshot import build_snapshot
from overcast.scheduler.estimates import PROVISIONING_HOURS
from overcast.scheduler.snapshot import Snapshot
from overcast.store import JobRecord, JobState, LaunchTerms, Store
from tests.control.harness import job, run_until, state

H = 3600.0
DAY = 24 * H
TERMS = LaunchTerms("local", "on-demand", 1, 1, "H100", 2.0)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def attempt(
    store: Store, clock: Clock, job_id: str, n: int, hours: float, outcome: str, end: JobState | None = None
) -> None:
    """Attempt ``n`` of ``job_id``, billed ``hours``, ended with ``outcome``; the job then goes to
    ``end`` (default: succeeded for a success, else requeued)."""
    team = state(store, job_id).team
    assert store.transition(job_id, [JobState.PENDING], JobState.LAUNCHING, attempt=n, pool_id="p")
    store.record_launch(job_id, n, "p", "local", "h", team=team, terms=TERMS)
    assert store.transition(job_id, [JobState.LAUNCHING], JobState.RUNNING)
    clock.now += hours * H
    store.end_launch(job_id, n, outcome)
    if end is None:
        end = JobState.SUCCEEDED if outcome == "succeeded" else JobState.PENDING
    assert store.transition(job_id, [JobState.RUNNING], end)


def finished(
    store: Store, clock: Clock, team: str, declared: float, runs: list[float], checkpoint: bool = False
) -> str:
    """A succeeded job of ``team`` that declared ``declared`` hours; ``runs``: its attempts' billed
    hours (all but the last preempted)."""
    spec = job("done", "true", expected_hours=declared, checkpoint_dir="/ckpt" if checkpoint else None)
    record = store.submit(team, spec)
    for n, hours in enumerate(runs, 1):
        attempt(store, clock, record.id, n, hours, "succeeded" if n == len(runs) else "preempted")
    return record.id


def history(
    store: Store, clock: Clock, team: str, declared: float, ran: float, n: int, end: str = "succeeded"
) -> None:
    """``n`` finished jobs of ``team`` that each worked ``ran`` hours (billed with provisioning) and
    ended ``end`` (succeeded, failed or cancelled)."""
    for _ in range(n):
        record = store.submit(team, job("done", "true", expected_hours=declared))
        attempt(store, clock, record.id, 1, ran + PROVISIONING_HOURS, end, JobState(end))


@pytest.fixture
def past(store_url: str) -> Iterator[tuple[Store, Clock]]:
    """A store (SQLite and PostgreSQL) whose clock starts 10 days ago."""
    clock = Clock(time.time() - 10 * DAY)
    store = Store(store_url, clock=clock)
    yield store, clock
    store.close()


def snapshot(store: Store, now: float, cache: EstimateCache | None = None) -> Snapshot:
    return build_snapshot(Runtime(store, {}, Path(".")), now, {}, None, cache or EstimateCache(ttl=0.0))


def told(store: Store, job_id: str) -> list[str]:
    """The estimate lines on ``job_id``'s timeline, oldest first."""
    return [e.detail for e in store.events(job_id=job_id) if e.kind == "estimate"]


def cancel_all(loop: ControlLoop, store: Store, *records: JobRecord) -> None:
    """Cancel ``records``, run ``loop`` until they end, close ``store``: a test's cleanup."""
    for record in records:
        store.request_cancel(record.id)
    run_until(loop, lambda: all(state(store, r.id).state.terminal for r in records))
    store.close()
