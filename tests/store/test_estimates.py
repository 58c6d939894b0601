"""Store.finished_runs and finished_jobs, the factor's evidence, on SQLite and PostgreSQL: every finished
job of the window, however many a team has (no count limit to push under-stated jobs out), each with its
hours; only those that ended since a time, or by id, for the incremental reads."""

from __future__ import annotations

import pytest

from overcast.store import JobState
from tests.control.estimates_harness import DAY, TERMS, H, history, past
from tests.control.harness import job

__all__ = ["past"]  # the fixture


def test_every_job_in_the_window_counts_however_many(past) -> None:
    store, clock = past
    history(store, clock, "ml", 1.0, 9.0, 3)  # ended first: beyond the 50 the old rule read
    history(store, clock, "ml", 1.0, 0.5, 60)
    history(store, clock, "cv", 2.0, 1.0, 2)
    failed = store.submit("ml", job("f", "true", expected_hours=0.1))  # never ran: no evidence
    assert store.transition(failed.id, [JobState.PENDING], JobState.FAILED)
    runs = store.finished_runs(clock.now, days=30, allowance_h=0.25)
    assert sorted(runs["ml"]) == pytest.approx([(0.5, 0.5)] * 60 + [(9.0, 9.0)] * 3)
    assert runs["cv"] == pytest.approx([(0.5, 1.0)] * 2)
    assert runs.keys() == {"ml", "cv"}


def test_only_jobs_that_ended_within_the_window_count(past) -> None:
    store, clock = past
    history(store, clock, "ml", 1.0, 9.0, 1)
    first = clock.now
    history(store, clock, "ml", 1.0, 1.0, 1)  # ends 1.25 h after the first
    runs = store.finished_runs(first + 30 * DAY, days=30, allowance_h=0.25)
    assert sorted(runs["ml"]) == pytest.approx([(1.0, 1.0), (9.0, 9.0)])
    runs = store.finished_runs(first + 30 * DAY + 1.0, days=30, allowance_h=0.25)
    assert runs["ml"] == pytest.approx([(1.0, 1.0)])
    assert store.finished_runs(clock.now + 30 * DAY + 1.0, days=30) == {}


def test_finished_jobs_since_an_end_or_by_id_and_whether_their_run_is_all_ended(past) -> None:
    store, clock = past
    history(store, clock, "ml", 1.0, 2.0, 2)
    since = clock.now
    history(store, clock, "ml", 1.0, 3.0, 1)
    open_id = store.submit("cv", job("o", "true", expected_hours=1.0)).id
    assert store.transition(open_id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id="p")
    store.record_launch(open_id, 1, "p", "local", "h", team="cv", terms=TERMS)
    assert store.transition(open_id, [JobState.LAUNCHING], JobState.SUCCEEDED)  # its launch still open
    rows = store.finished_jobs(clock.now, days=30, allowance_h=0.25)
    assert len(rows) == 4 and {r.job_id for r in rows if r.unended} == {open_id}
    recent = store.finished_jobs(clock.now, days=30, allowance_h=0.25, ended_since=since + 1.0)
    assert sorted((r.team, r.run, r.unended) for r in recent) == [
        ("cv", None, True),
        ("ml", (3.0, 3.0), False),
    ]
    clock.now += H
    store.end_launch(open_id, 1, "succeeded")
    (row,) = store.finished_jobs(clock.now, days=30, job_ids=[open_id])
    assert (row.run, row.unended, row.ended_at) == ((1.0, 1.0), False, clock.now - H)
