"""Leadership: only the lease holder applies, a stale leader cannot double-launch (the CAS), and two
control-loop processes on one PostgreSQL never launch the same job twice, even when the leader dies."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from overcast.control.apply import apply_place
from overcast.scheduler.snapshot import Place
from overcast.store import JobState, Store
from tests.control.harness import job, make_loop, run_until, state
from tests.control.loop_process import start_loop, stop_loop
from tests.control.markers import completions, marker_run, overlapping_attempts, read_marks


def test_only_the_lease_holder_launches_and_a_stale_leader_cannot(store_url: str, tmp_path: Path) -> None:
    store = Store(store_url)
    first = make_loop(tmp_path, store)
    second = make_loop(tmp_path, Store(store_url))
    record = store.submit("default", job("one", "sleep 30"))
    assert first.tick().leader and not second.tick().leader
    run_until(first, lambda: state(store, record.id).state is JobState.RUNNING)
    assert second.tick().placed == 0
    # A stale leader that still believes the job is pending: the compare-and-set refuses it.
    pools = {p.id: p for b in second.backends.values() for p in b.pools()}
    apply_place(second.rt, Place(record.id, "local/oci-local", 1, "stale"), pools, {})
    assert state(store, record.id).attempt == 1
    assert [b.active() for b in first.backends.values()] == [[(record.id, 1)], []]
    store.request_cancel(record.id)
    run_until(first, lambda: state(store, record.id).state.terminal)


@pytest.mark.postgres
def test_two_loop_processes_on_postgres_never_launch_a_job_twice(postgres_url: str, tmp_path: Path) -> None:
    store = Store(postgres_url)
    shared = tmp_path / "marks.txt"
    ids = [
        store.submit("default", job(f"j{i}", marker_run(shared, 0.3 + 0.1 * (i % 5)), nodes=1 + i % 2)).id
        for i in range(14)
    ]
    log = tmp_path / "loops.log"
    procs = [start_loop(postgres_url, tmp_path, log) for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sum(store.get(i).state.terminal for i in ids) < 4:
            time.sleep(0.1)
        holder = None
        deadline = time.monotonic() + 10  # under heavy load the 1 s lease may be between holders
        while holder is None and time.monotonic() < deadline:
            holder = store.lease_holder("control-loop")
            time.sleep(0.05)
        assert holder is not None, log.read_text()[-2000:]
        leader = next(p for p in procs if p.pid == int(holder.split(":")[1]))
        stop_loop(leader, signal.SIGKILL)  # the other one takes over when the lease expires
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(store.get(i).state.terminal for i in ids):
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_loop(proc, signal.SIGTERM)
    states = {i: (store.get(i).state, store.get(i).reason) for i in ids}
    assert {s for s, _ in states.values()} == {JobState.SUCCEEDED}, (states, log.read_text()[-2000:])
    starts = [(j, a, r) for j, a, r, what, _at, _nodes in read_marks(shared) if what == "start"]
    assert len(starts) == len(set(starts))  # no (job, attempt, node) started twice
    assert overlapping_attempts(shared) == []
    assert completions(shared) == dict.fromkeys(ids, 1)
