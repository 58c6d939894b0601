"""Event handling edge cases: replays, stale attempts, a success that raced a requeue, a job that cannot
start."""

from __future__ import annotations

import time
from pathlib import Path

from overcast.backends.base import BackendEvent, EventKind, LaunchRequest
from overcast.control.events import handle_event
from overcast.store import JobState, Store
from tests.control.harness import job, make_loop, run_until, state


def test_replayed_and_stale_events_change_nothing(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("quick", "exit 0"))
    run_until(loop, lambda: state(store, record.id).state is JobState.SUCCEEDED)
    before = len(store.events(job_id=record.id))
    for kind in (EventKind.SUCCEEDED, EventKind.FAILED, EventKind.PREEMPTED):
        handle_event(loop.rt, "local:azure-local", BackendEvent(kind, record.id, 1, time.time()))
    handle_event(loop.rt, "local:azure-local", BackendEvent(EventKind.SUCCEEDED, record.id, 7, time.time()))
    assert state(store, record.id).state is JobState.SUCCEEDED
    assert len(store.events(job_id=record.id)) == before


def test_a_success_that_raced_a_requeue_is_kept(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("raced", "exit 0"))
    store.transition(record.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, backend="local:oci-local")
    store.transition(record.id, [JobState.LAUNCHING], JobState.PENDING, reason="requeued by reconcile")
    handle_event(loop.rt, "local:oci-local", BackendEvent(EventKind.SUCCEEDED, record.id, 1, time.time()))
    assert state(store, record.id).state is JobState.SUCCEEDED  # not run a second time


def test_a_job_that_cannot_start_fails_with_the_reason(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("nowhere", "true", workdir=str(tmp_path / "missing")))
    run_until(loop, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert final.state is JobState.FAILED and "could not start" in (final.reason or "")
    assert all(not b.active() for b in loop.backends.values())


def test_an_end_whose_event_a_crash_lost_is_logged_once_on_replay(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("cut", "exit 0"))
    store.transition(record.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, backend="local:oci-local")
    store.transition(record.id, [JobState.LAUNCHING], JobState.SUCCEEDED)  # the loop died right here
    replay = BackendEvent(EventKind.SUCCEEDED, record.id, 1, time.time())
    for _ in range(2):
        handle_event(loop.rt, "local:oci-local", replay)
    assert [e.kind for e in store.events(job_id=record.id)].count("succeeded") == 1


def test_the_job_loop_leaves_a_service_replica_on_a_shared_backend_alone(tmp_path: Path) -> None:
    """A replica launch (job id svc.<service>.<rid>) is not a stored job: neither reconcile nor the
    event handler may stop it as an orphan; its service controller owns it."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    backend = loop.backends["local:azure-local"]
    pool = backend.pools()[0]
    replica = job("replica", "sleep 30")
    backend.launch(LaunchRequest("svc.llm.r1", 1, pool, 1, replica))
    record = store.submit("default", job("other", "sleep 0.2"))
    run_until(loop, lambda: state(store, record.id).state is JobState.SUCCEEDED)  # reconcile + events ran
    assert ("svc.llm.r1", 1) in backend.active()
    assert not [e for e in store.events() if e.job_id == "svc.llm.r1"]
    backend.stop("svc.llm.r1", 1, 0.5)


def test_a_success_after_a_lost_guess_bills_until_the_success(tmp_path: Path) -> None:
    # reconcile guessed "lost" (one listing missed the attempt) and requeued it; the backend then reports
    # it succeeded: it ran until that event, so its launch is billed to it, not to the guess
    from sqlalchemy import select

    from overcast.store import LaunchTerms
    from overcast.store.tables import launches

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("raced", "exit 0"))
    store.transition(record.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, backend="local:oci-local")
    terms = LaunchTerms("oci", "on-demand", 1, 1, "H100", 10.0)
    store.record_launch(record.id, 1, "pool", "local:oci-local", "h", team="default", terms=terms)
    start = time.time()
    store.end_launch(record.id, 1, "lost", at=start + 0.01)
    store.transition(record.id, [JobState.LAUNCHING], JobState.PENDING, reason="requeued by reconcile")
    time.sleep(0.05)
    done_at = time.time()
    handle_event(loop.rt, "local:oci-local", BackendEvent(EventKind.SUCCEEDED, record.id, 1, done_at))
    with store.engine.connect() as conn:
        row = conn.execute(select(launches.c.ended_at, launches.c.outcome)).one()
    assert row.outcome == "succeeded" and abs(row.ended_at - done_at) < 1e-3


def test_an_older_attempt_guessed_lost_is_billed_to_its_own_end(tmp_path: Path) -> None:
    # attempt 1 was guessed lost and the job relaunched as attempt 2; attempt 1 then reports it failed:
    # it ran until then, so its record ends there, not at the guess
    from sqlalchemy import select

    from overcast.store import LaunchTerms
    from overcast.store.tables import launches

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("twice", "exit 0"))
    terms = LaunchTerms("oci", "on-demand", 1, 1, "H100", 10.0)
    store.transition(record.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, backend="local:oci-local")
    store.record_launch(record.id, 1, "pool", "local:oci-local", "h1", team="default", terms=terms)
    store.end_launch(record.id, 1, "lost", at=time.time())
    store.transition(record.id, [JobState.LAUNCHING], JobState.PENDING, reason="requeued by reconcile")
    store.transition(record.id, [JobState.PENDING], JobState.LAUNCHING, attempt=2, backend="local:oci-local")
    time.sleep(0.05)
    ended = time.time()
    handle_event(loop.rt, "local:oci-local", BackendEvent(EventKind.FAILED, record.id, 1, ended))
    with store.engine.connect() as conn:
        first = select(launches.c.ended_at, launches.c.outcome).where(launches.c.attempt == 1)
        row = conn.execute(first).one()
    assert row.outcome == "failed" and abs(row.ended_at - ended) < 1e-3
    assert state(store, record.id).state is JobState.LAUNCHING  # attempt 2 goes on
