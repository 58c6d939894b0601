"""Corrected runtime estimates with the real store (SQLite and PostgreSQL) and the real control loop on
the local backend: a team whose jobs ran far past their expected_hours no longer jumps an honest
team's job; honest teams and teams with too few finished jobs are left alone; a requeued job is
ordered by what is left of it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from overcast.backends.local import LocalCluster
from overcast.control.estimates import EstimateCache
from overcast.scheduler.snapshot import PendingJob
from overcast.store import JobState, Store
from tests.control.estimates_harness import (
    DAY,
    Clock,
    attempt,
    cancel_all,
    finished,
    history,
    past,
    snapshot,
    told,
)
from tests.control.harness import job, make_loop, run_until, state

__all__ = ["past"]  # the fixture


def _pending(store: Store, now: float, cache: EstimateCache | None = None) -> dict[str, PendingJob]:
    return {p.id: p for p in snapshot(store, now, cache).pending}


def test_runs_count_a_resuming_jobs_attempts_and_a_restarting_jobs_last_one(past) -> None:
    store, clock = past
    finished(store, clock, "ml", 2.0, [3.0, 5.0])  # restarts from zero: the last attempt, 5 h
    finished(store, clock, "ml", 2.0, [3.0, 5.0], checkpoint=True)  # resumes: 8 h in all
    finished(store, clock, "cv", 0.5, [1.0])
    runs = store.finished_runs(clock.now, days=30)
    assert {team: sorted(r) for team, r in runs.items()} == pytest.approx(
        {"ml": [(2.5, 5.0), (4.0, 8.0)], "cv": [(2.0, 1.0)]}
    )
    # less provisioning on each counted attempt: 4.5 h of the last; 2.5 + 4.5 h; 0.5 h
    runs = store.finished_runs(clock.now, days=30, allowance_h=0.5)
    assert {team: sorted(r) for team, r in runs.items()} == pytest.approx(
        {"ml": [(2.25, 4.5), (3.5, 7.0)], "cv": [(1.0, 0.5)]}
    )


def test_an_understating_team_is_ordered_as_its_jobs_really_ran(past) -> None:
    store, clock = past
    history(store, clock, "fast", 0.1, 4.0, 5)  # ran 40x what they declared
    history(store, clock, "honest", 2.0, 3.0, 5)  # 1.5x: trusted as written
    history(store, clock, "new", 0.1, 40.0, 4)  # four jobs: too few to judge
    cheat = store.submit("fast", job("cheat", "true", expected_hours=0.5))
    fair = store.submit("honest", job("fair", "true", expected_hours=2.0))
    few = store.submit("new", job("few", "true", expected_hours=0.5))
    pending = _pending(store, clock.now)
    assert pending[cheat.id].spec.expected_hours == pytest.approx(20.0)
    assert pending[fair.id].spec.expected_hours == 2.0
    assert pending[few.id].spec.expected_hours == 0.5
    assert state(store, cheat.id).spec.expected_hours == 0.5  # the stored spec is untouched
    assert told(store, cheat.id) == ["team fast's jobs ran 40x their expected_hours: ordered as 20 h"]
    assert not [e for e in store.events() if e.kind == "estimate" and e.job_id != cheat.id]


def test_a_correction_is_told_once_and_again_when_it_changes(past) -> None:
    store, clock = past
    history(store, clock, "fast", 0.1, 1.0, 5)
    cheat = store.submit("fast", job("cheat", "true", expected_hours=1.0))
    cache = EstimateCache(ttl=60.0)
    now = clock.now
    for tick in range(3):
        _pending(store, now + tick, cache)
    assert told(store, cheat.id) == ["team fast's jobs ran 10x their expected_hours: ordered as 10 h"]
    history(store, clock, "fast", 0.1, 3.0, 20)  # the 80th percentile is 30x now
    _pending(store, now + 59, cache)
    assert len(told(store, cheat.id)) == 1  # read again only after the ttl
    assert _pending(store, now + 60, cache)[cheat.id].spec.expected_hours == pytest.approx(30.0)
    assert told(store, cheat.id)[1:] == ["team fast's jobs ran 30x their expected_hours: ordered as 30 h"]


def test_a_requeued_job_is_ordered_by_what_is_left_of_it(past) -> None:
    """Restarting from zero: at least its longest attempt. Resuming: what is left of declared x
    factor, at least declared; never priced again for the hours it already ran."""
    store, clock = past
    history(store, clock, "fast", 0.1, 1.0, 5)  # factor 10
    jobs: dict[tuple[str, bool], str] = {}
    for team in ("ml", "fast"):
        for resumes in (False, True):
            spec = job("j", "true", expected_hours=1.0, checkpoint_dir="/ckpt" if resumes else None)
            jobs[team, resumes] = store.submit(team, spec).id
            attempt(store, clock, jobs[team, resumes], 1, 3.0, "preempted")
            attempt(store, clock, jobs[team, resumes], 2, 5.0, "preempted")
    short = store.submit("ml", job("short", "true", expected_hours=1.0))
    attempt(store, clock, short.id, 1, 0.5, "preempted")
    hours = {key: p.spec.expected_hours for key, p in _pending(store, clock.now).items()}
    assert hours[jobs["ml", False]] == pytest.approx(5.0)  # its longest attempt
    assert hours[jobs["ml", True]] == 1.0  # 8 h of work done: what is left is not known, declared
    assert hours[jobs["fast", False]] == pytest.approx(10.0)  # 1 h x 10 > its longest attempt
    assert hours[jobs["fast", True]] == pytest.approx(2.0)  # 10 h less the 8 h it already ran
    assert hours[short.id] == 1.0
    assert told(store, jobs["ml", False]) == ["it already ran 5 h (expected_hours 1 h): ordered as 5 h"]
    assert told(store, jobs["ml", True]) == []
    assert told(store, jobs["fast", True]) == [
        "team fast's jobs ran 10x their expected_hours, 8 h of it already run: ordered as 2 h"
    ]


@pytest.mark.parametrize("understated", [True, False])
def test_the_loop_places_the_honest_teams_job_before_the_understating_ones(
    tmp_path: Path, understated: bool
) -> None:
    """Without the history (``understated`` False) the shorter declared job goes first, as before."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    clock = Clock(time.time() - 2 * DAY)
    store.clock = clock
    history(store, clock, "fast", 0.1, 4.0 if understated else 0.1, 5)
    history(store, clock, "honest", 1.0, 1.0, 5)
    store.clock = time.time
    # one node: whichever the queue puts first runs, the other waits
    loop = make_loop(tmp_path, store, [LocalCluster("azure-local", nodes=1, price_per_node_hour=2.0)])
    cheat = store.submit("fast", job("cheat", "sleep 20", expected_hours=0.5))
    fair = store.submit("honest", job("fair", "sleep 20", expected_hours=2.0))
    first, second = (fair, cheat) if understated else (cheat, fair)
    try:
        run_until(loop, lambda: state(store, first.id).state is JobState.RUNNING)
        assert state(store, second.id).state is JobState.PENDING
        fixed = ["team fast's jobs ran 40x their expected_hours: ordered as 20 h"]
        assert told(store, cheat.id) == (fixed if understated else [])
    finally:
        cancel_all(loop, store, cheat, fair)


def test_a_restarted_loop_does_not_tell_the_same_correction_again(past) -> None:
    """Each loop process (a restart, a new leader) has its own cache: it reads what the timeline
    last told instead of telling it again."""
    store, clock = past
    history(store, clock, "fast", 0.1, 1.0, 5)
    cheat = store.submit("fast", job("cheat", "true", expected_hours=1.0))
    for restart in range(3):
        cache = EstimateCache()
        for tick in range(3):
            _pending(store, clock.now + restart * 100 + tick, cache)
    assert told(store, cheat.id) == ["team fast's jobs ran 10x their expected_hours: ordered as 10 h"]


def test_a_correction_that_ends_is_told_once(past) -> None:
    store, clock = past
    history(store, clock, "fast", 0.1, 1.0, 5)
    cheat = store.submit("fast", job("cheat", "true", expected_hours=1.0))
    cache = EstimateCache(ttl=0.0)
    assert _pending(store, clock.now, cache)[cheat.id].spec.expected_hours == pytest.approx(10.0)
    history(store, clock, "fast", 1.0, 1.0, 45)  # the team now states honestly: factor 1
    for tick in range(2):
        assert _pending(store, clock.now + tick, cache)[cheat.id].spec.expected_hours == 1.0
    _pending(store, clock.now + 2, EstimateCache())  # nor again by a restarted loop
    assert told(store, cheat.id) == [
        "team fast's jobs ran 10x their expected_hours: ordered as 10 h",
        "estimate no longer corrected: ordered as written (1 h) again",
    ]
