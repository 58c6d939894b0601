"""What counts as evidence of a team's under-stated expected_hours (store.finished_runs, through
build_snapshot): failed and cancelled jobs that ran past their estimate, each attempt less its
provisioning, never a job whose run is not all ended yet, and each job by the hours it ran (many short
honest jobs do not wash out long under-stated ones). SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from overcast.store import JobState, Store
from tests.control.estimates_harness import TERMS, H, attempt, history, past, snapshot
from tests.control.harness import job

__all__ = ["past"]  # the fixture


@pytest.mark.parametrize("end", ["failed", "cancelled"])
def test_jobs_that_ran_past_their_estimate_count_whatever_their_end(past, end: str) -> None:
    store, clock = past
    history(store, clock, "fast", 0.1, 4.0, 10, end=end)  # each ran 4 h against a declared 0.1 h
    history(store, clock, "early", 1.0, 0.0, 10, end=end)  # stopped at once: says nothing
    history(store, clock, "early", 0.1, 0.4, 4)  # four succeeded at 4x: too few alone
    cheat = store.submit("fast", job("cheat", "true", expected_hours=0.1))
    other = store.submit("early", job("other", "true", expected_hours=0.1))
    pending = {p.id: p for p in snapshot(store, clock.now).pending}
    assert pending[cheat.id].spec.expected_hours == pytest.approx(4.0)
    assert pending[other.id].spec.expected_hours == 0.1


def test_failures_that_ran_short_do_not_push_a_teams_successes_out(past) -> None:
    store, clock = past
    history(store, clock, "fast", 0.1, 1.0, 5)  # 10x
    history(store, clock, "fast", 1.0, 0.0, 50, end="failed")  # the latest 50, none evidence
    runs = store.finished_runs(clock.now, days=30, allowance_h=0.25)
    assert runs == {"fast": [pytest.approx((10.0, 1.0))] * 5}


def test_provisioning_does_not_inflate_a_short_honest_teams_long_job(past) -> None:
    store, clock = past
    history(store, clock, "honest", 0.1, 0.1, 10)  # 6-minute jobs, billed 21 min with provisioning
    long = store.submit("honest", job("long", "true", expected_hours=10.0))
    assert {p.id: p for p in snapshot(store, clock.now).pending}[long.id].spec.expected_hours == 10.0


def test_a_succeeded_job_whose_counted_launch_is_still_open_is_skipped(past) -> None:
    store, clock = past
    for resumes in (False, True):
        spec = job("j", "true", expected_hours=1.0, checkpoint_dir="/ckpt" if resumes else None)
        rec = store.submit("ml", spec)
        attempt(store, clock, rec.id, 1, 3.0, "preempted")
        assert store.transition(rec.id, [JobState.PENDING], JobState.LAUNCHING, attempt=2, pool_id="p")
        store.record_launch(rec.id, 2, "p", "local", "h", team="ml", terms=TERMS)
        assert store.transition(rec.id, [JobState.LAUNCHING], JobState.RUNNING)
        clock.now += 5 * H
        assert store.transition(rec.id, [JobState.RUNNING], JobState.SUCCEEDED)  # launch 2 left open
    assert store.finished_runs(clock.now, days=30) == {}


def test_many_short_honest_jobs_do_not_wash_out_under_stated_long_ones(past) -> None:
    """Under the rule this replaced (the last 50 jobs, by count) the fifty 6-minute jobs gave the team
    a factor of 1 back; now honest jobs lower it only once they ran 80% of the team's hours."""
    store, clock = past
    history(store, clock, "wash", 0.2, 4.0, 5)  # 20 h of jobs declared at a twentieth of it
    history(store, clock, "wash", 0.1, 0.1, 50)  # then fifty honest 6-minute jobs: 5 h
    cheat = store.submit("wash", job("cheat", "true", expected_hours=0.5))
    assert _hours(store, clock.now, cheat.id) == pytest.approx(10.0)
    history(store, clock, "wash", 10.0, 10.0, 7)  # honest: 75 h of 95 h, 79%
    assert _hours(store, clock.now, cheat.id) == pytest.approx(10.0)
    history(store, clock, "wash", 10.0, 10.0, 1)  # 85 h of 105 h, 81%
    assert _hours(store, clock.now, cheat.id) == 0.5


def _hours(store: Store, now: float, job_id: str) -> float:
    """The job's expected_hours as decide() sees it."""
    return {p.id: p for p in snapshot(store, now).pending}[job_id].spec.expected_hours
