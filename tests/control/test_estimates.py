"""Corrected runtime estimates with the real store (SQLite and PostgreSQL) and the real control loop on
the local backend: a team whose jobs ran far past their expected_hours no longer jumps an honest
team's job; honest teams and teams with too few finished jobs are left alone; a requeued job that ran
past its estimate is ordered as at least what it ran."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from overcast.backends.local import LocalCluster
from overcast.control.estimates import EstimateCache
from overcast.control.runtime import Runtime
from overcast.control.snapshot import build_snapshot
from overcast.scheduler.snapshot import PendingJob
from overcast.store import JobState, LaunchTerms, Store
from tests.control.harness import job, make_loop, run_until, state

H = 3600.0
DAY = 24 * H
TERMS = LaunchTerms("local", "on-demand", 1, 1, "H100", 2.0)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _attempt(store: Store, clock: Clock, job_id: str, attempt: int, hours: float, outcome: str) -> None:
    """One attempt of ``job_id`` that ran ``hours`` and ended with ``outcome`` (requeued unless it
    succeeded)."""
    team = state(store, job_id).team
    assert store.transition(job_id, [JobState.PENDING], JobState.LAUNCHING, attempt=attempt, pool_id="p")
    store.record_launch(job_id, attempt, "p", "local", "h", team=team, terms=TERMS)
    assert store.transition(job_id, [JobState.LAUNCHING], JobState.RUNNING)
    clock.now += hours * H
    store.end_launch(job_id, attempt, outcome)
    to = JobState.SUCCEEDED if outcome == "succeeded" else JobState.PENDING
    assert store.transition(job_id, [JobState.RUNNING], to)


def _finished(
    store: Store, clock: Clock, team: str, declared: float, runs: list[float], checkpoint: bool = False
) -> str:
    """A succeeded job of ``team`` that declared ``declared`` hours; ``runs``: its attempts' hours (all
    but the last preempted)."""
    spec = job("done", "true", expected_hours=declared, checkpoint_dir="/ckpt" if checkpoint else None)
    record = store.submit(team, spec)
    for attempt, hours in enumerate(runs, 1):
        _attempt(
            store, clock, record.id, attempt, hours, "succeeded" if attempt == len(runs) else "preempted"
        )
    return record.id


def _history(store: Store, clock: Clock, team: str, declared: float, ran: float, n: int) -> None:
    for _ in range(n):
        _finished(store, clock, team, declared, [ran])


@pytest.fixture
def history(store_url: str) -> Iterator[tuple[Store, Clock]]:
    clock = Clock(time.time() - 10 * DAY)
    store = Store(store_url, clock=clock)
    yield store, clock
    store.close()


def _pending(store: Store, now: float, cache: EstimateCache | None = None) -> dict[str, PendingJob]:
    snap = build_snapshot(Runtime(store, {}, Path(".")), now, {}, None, cache or EstimateCache(ttl=0.0))
    return {p.id: p for p in snap.pending}


def test_ratios_count_a_resuming_jobs_attempts_and_a_restarting_jobs_last_one(history) -> None:
    store, clock = history
    _finished(store, clock, "ml", 2.0, [3.0, 5.0])  # restarts from zero: the last attempt, 5 h
    _finished(store, clock, "ml", 2.0, [3.0, 5.0], checkpoint=True)  # resumes: 8 h in all
    _finished(store, clock, "cv", 0.5, [1.0])
    ratios = store.finished_ratios(clock.now, days=30, per_team=50)
    assert {team: sorted(r) for team, r in ratios.items()} == pytest.approx({"ml": [2.5, 4.0], "cv": [2.0]})


def test_only_the_latest_succeeded_jobs_within_the_window_count(history) -> None:
    store, clock = history
    _history(store, clock, "ml", 1.0, 9.0, 3)  # ended first: beyond per_team
    _history(store, clock, "ml", 1.0, 1.0, 4)
    failed = store.submit("ml", job("f", "true", expected_hours=0.1))
    assert store.transition(failed.id, [JobState.PENDING], JobState.FAILED)
    ratios = store.finished_ratios(clock.now, days=30, per_team=4)
    assert ratios == pytest.approx({"ml": [1.0] * 4})
    assert store.finished_ratios(clock.now + 31 * DAY, days=30, per_team=50) == {}


def test_an_understating_team_is_ordered_as_its_jobs_really_ran(history) -> None:
    store, clock = history
    _history(store, clock, "fast", 0.1, 4.0, 5)  # ran 40x what they declared
    _history(store, clock, "honest", 2.0, 3.0, 5)  # 1.5x: trusted as written
    _history(store, clock, "new", 0.1, 40.0, 4)  # four jobs: too few to judge
    cheat = store.submit("fast", job("cheat", "true", expected_hours=0.5))
    fair = store.submit("honest", job("fair", "true", expected_hours=2.0))
    few = store.submit("new", job("few", "true", expected_hours=0.5))
    pending = _pending(store, clock.now)
    assert pending[cheat.id].spec.expected_hours == pytest.approx(20.0)
    assert pending[fair.id].spec.expected_hours == 2.0
    assert pending[few.id].spec.expected_hours == 0.5
    assert state(store, cheat.id).spec.expected_hours == 0.5  # the stored spec is untouched
    [told] = [e for e in store.events(job_id=cheat.id) if e.kind == "estimate"]
    assert told.detail == "team fast's jobs ran 40x their expected_hours: ordered as 20 h"
    assert not [e for e in store.events() if e.kind == "estimate" and e.job_id != cheat.id]


def test_a_correction_is_told_once_and_again_when_it_changes(history) -> None:
    store, clock = history
    _history(store, clock, "fast", 0.1, 1.0, 5)
    cheat = store.submit("fast", job("cheat", "true", expected_hours=1.0))
    cache = EstimateCache(ttl=60.0)

    def told() -> list[str]:
        return [e.detail for e in store.events(job_id=cheat.id) if e.kind == "estimate"]

    now = clock.now
    for tick in range(3):
        _pending(store, now + tick, cache)
    assert told() == ["team fast's jobs ran 10x their expected_hours: ordered as 10 h"]
    _history(store, clock, "fast", 0.1, 3.0, 20)  # the 80th percentile is 30x now
    _pending(store, now + 59, cache)
    assert len(told()) == 1  # read again only after the ttl
    assert _pending(store, now + 60, cache)[cheat.id].spec.expected_hours == pytest.approx(30.0)
    assert told()[1:] == ["team fast's jobs ran 30x their expected_hours: ordered as 30 h"]


def test_a_requeued_job_that_ran_past_its_estimate_is_not_short(history) -> None:
    store, clock = history
    plain = store.submit("ml", job("plain", "true", expected_hours=1.0))
    _attempt(store, clock, plain.id, 1, 3.0, "preempted")
    _attempt(store, clock, plain.id, 2, 5.0, "preempted")
    resumes = store.submit("ml", job("resumes", "true", expected_hours=1.0, checkpoint_dir="/ckpt"))
    _attempt(store, clock, resumes.id, 1, 3.0, "preempted")
    _attempt(store, clock, resumes.id, 2, 5.0, "preempted")
    short = store.submit("ml", job("short", "true", expected_hours=1.0))
    _attempt(store, clock, short.id, 1, 0.5, "preempted")
    pending = _pending(store, clock.now)
    # restarts from zero: at least its longest attempt; resumes: at least all it ran
    assert pending[plain.id].spec.expected_hours == pytest.approx(5.0)
    assert pending[resumes.id].spec.expected_hours == pytest.approx(8.0)
    assert pending[short.id].spec.expected_hours == 1.0
    [told] = [e.detail for e in store.events(job_id=plain.id) if e.kind == "estimate"]
    assert told == "it already ran 5 h (expected_hours 1 h): ordered as 5 h"


@pytest.mark.parametrize("understated", [True, False])
def test_the_loop_places_the_honest_teams_job_before_the_understating_ones(
    tmp_path: Path, understated: bool
) -> None:
    """Without the history (``understated`` False) the shorter declared job goes first, as before."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = Clock(time.time() - 2 * DAY)
    store.clock = clock
    _history(store, clock, "fast", 0.1, 4.0 if understated else 0.1, 5)
    _history(store, clock, "honest", 1.0, 1.0, 5)
    store.clock = time.time
    # one node: whichever the queue puts first runs, the other waits
    loop = make_loop(tmp_path, store, [LocalCluster("azure-local", nodes=1, price_per_node_hour=2.0)])
    cheat = store.submit("fast", job("cheat", "sleep 20", expected_hours=0.5))
    fair = store.submit("honest", job("fair", "sleep 20", expected_hours=2.0))
    first, second = (fair, cheat) if understated else (cheat, fair)
    try:
        run_until(loop, lambda: state(store, first.id).state is JobState.RUNNING)
        assert state(store, second.id).state is JobState.PENDING
        told = [e.detail for e in store.events(job_id=cheat.id) if e.kind == "estimate"]
        fixed = ["team fast's jobs ran 40x their expected_hours: ordered as 20 h"]
        assert told == (fixed if understated else [])
    finally:
        for record in (cheat, fair):
            store.request_cancel(record.id)
        run_until(loop, lambda: all(state(store, r.id).state.terminal for r in (cheat, fair)))
        store.close()
