"""Restart and retry limits, and cancellation, through the real loop."""

from __future__ import annotations

import time
from pathlib import Path

from overcast.store import JobState, Store
from tests.control.harness import job, make_loop, run_until, state


def test_max_restarts_is_honoured(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("spot", "sleep 30", max_restarts=1))
    for _ in range(2):
        run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING)
        running = state(store, record.id)
        loop.backends[running.backend].preempt(record.id, notice_seconds=0.2)
        run_until(loop, lambda: state(store, record.id).state is not JobState.RUNNING)
    run_until(loop, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert (final.state, final.restarts, final.attempt) == (JobState.FAILED, 1, 2)
    assert "out of restarts" in (final.reason or "")
    assert all(not b.active() for b in loop.backends.values())


def test_max_retries_on_failure_is_honoured(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("flaky", "exit 3", max_retries_on_failure=1, max_restarts=5))
    run_until(loop, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert (final.state, final.failures, final.restarts, final.attempt) == (JobState.FAILED, 1, 0, 2)
    assert "exited with 3" in (final.reason or "")
    assert [e.kind for e in store.events(job_id=record.id)].count("attempt-failed") == 2


def test_cancel_stops_a_running_job_and_a_pending_one(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    running = store.submit("default", job("long", "sleep 30", nodes=2))
    run_until(loop, lambda: state(store, running.id).state is JobState.RUNNING)
    store.request_cancel(running.id)
    run_until(loop, lambda: state(store, running.id).state.terminal)
    assert state(store, running.id).state is JobState.CANCELLED
    assert all(not b.active() for b in loop.backends.values())
    too_big = store.submit("default", job("huge", "true", nodes=3))  # fits no pool: stays pending
    run_until(loop, lambda: bool(state(store, too_big.id).reason))
    store.request_cancel(too_big.id)
    assert state(store, too_big.id).state is JobState.CANCELLED


def test_a_slow_stop_does_not_hold_up_the_loop(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store, grace_seconds=3.0)
    stubborn = store.submit("default", job("stubborn", "trap '' TERM; echo ready; sleep 30"))
    log = tmp_path / "logs" / stubborn.id / "1" / "node-0.log"
    run_until(loop, lambda: log.exists() and "ready" in log.read_text())  # SIGTERM is ignored from now
    store.request_cancel(stubborn.id)
    start = time.monotonic()
    loop.tick()
    assert time.monotonic() - start < 1.5 and state(store, stubborn.id).state is JobState.STOPPING
    other = store.submit("default", job("other", "exit 0"))
    run_until(loop, lambda: state(store, other.id).state is JobState.SUCCEEDED)  # served meanwhile
    run_until(loop, lambda: state(store, stubborn.id).state is JobState.CANCELLED, timeout=15)
    assert time.monotonic() - start >= 3.0  # it got its grace period, then SIGKILL
