"""The Launcher: a backlog of launches does not starve a backend's poll; launches are billed from when
`launch()` began, a deferred one bills nothing; a loop whose run() returned can tick again."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from overcast.store import JobState
from tests.control.harness import job, run_until, state
from tests.control.test_launcher import AZURE, slow_azure


def test_a_backlog_of_launches_does_not_hold_back_the_backends_events(tmp_path: Path) -> None:
    store, loop, _slow = slow_azure(tmp_path, delay=1.0, azure_nodes=5)
    x = store.submit("default", job("x", "sleep 0.3"))
    run_until(loop, lambda: state(store, x.id).state is JobState.RUNNING)
    ids = [store.submit("default", job(f"b{i}", "sleep 30")).id for i in range(4)]
    loop.tick()  # 4 launches queued on azure's one worker: ~4 s of launch() back to back
    assert {state(store, i).pool_id for i in ids} == {AZURE}
    t0 = time.monotonic()
    run_until(loop, lambda: state(store, x.id).state is JobState.SUCCEEDED, timeout=20)
    seen = time.monotonic() - t0
    for i in ids:
        store.request_cancel(i)
    run_until(loop, lambda: all(state(store, i).state.terminal for i in ids), timeout=30)
    assert seen < 2.0, f"poll of azure skipped for {seen:.1f}s while launches were queued"


def _billed(tmp_path: Path) -> dict[tuple[str, int], tuple[float, float | None, str | None]]:
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        rows = conn.execute("select job_id, attempt, launched_at, ended_at, outcome from launches")
        return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def test_a_deferred_launch_bills_nothing(tmp_path: Path) -> None:
    store, loop, slow = slow_azure(tmp_path, delay=2.0, azure_nodes=2, launch_wait_s=0.0)
    slow.inner.set_capacity_error(True)
    ids = [store.submit("default", job(name, "true")).id for name in ("a", "b")]
    assert loop.tick().placed == 2
    run_until(loop, lambda: all(state(store, i).state is JobState.SUCCEEDED for i in ids), timeout=30)
    billed = _billed(tmp_path)
    deferred = [(s, e) for (s, e, o) in billed.values() if o == "deferred"]
    assert len(deferred) == 1
    start, end = deferred[0]
    assert end - start < 0.5, f"a launch never tried was billed {end - start:.2f}s"


def test_a_queued_launch_is_billed_from_when_its_launch_began(tmp_path: Path) -> None:
    store, loop, slow = slow_azure(tmp_path, delay=1.5, azure_nodes=2, launch_wait_s=0.0)
    entered: dict[str, float] = {}
    inner_launch = slow.launch

    def launch(request):  # type: ignore[no-untyped-def]
        entered[request.job_id] = time.time()
        return inner_launch(request)

    slow.launch = launch  # type: ignore[method-assign]
    ids = [store.submit("default", job(name, "sleep 30")).id for name in ("a", "b")]
    assert loop.tick().placed == 2
    # the poll can see a job running before the tick handled its launch (which moves the billing start)
    run_until(
        loop,
        lambda: all(state(store, i).state is JobState.RUNNING and not loop.launcher.busy(i) for i in ids),
        timeout=30,
    )
    billed = _billed(tmp_path)
    gaps = {i: entered[i] - billed[(i, 1)][0] for i in ids}
    for i in ids:
        store.request_cancel(i)
    run_until(loop, lambda: all(state(store, i).state.terminal for i in ids), timeout=30)
    assert max(gaps.values()) < 0.5, f"billed {max(gaps.values()):.2f}s before launch() was even called"


def test_a_loop_ticks_again_after_run_returned(tmp_path: Path) -> None:
    store, loop, _slow = slow_azure(tmp_path, delay=0.1)
    stop = threading.Event()
    stop.set()
    loop.run(stop, 0.01)  # returns at once: launcher.shutdown() shuts the (empty) workers down
    first = store.submit("default", job("a", "true"))
    loop.tick()  # creates azure's worker
    run_until(loop, lambda: state(store, first.id).state is JobState.SUCCEEDED)
    loop.run(stop, 0.01)  # a second run (e.g. a restarted loop thread) shuts azure's worker down
    record = store.submit("default", job("b", "true"))
    run_until(loop, lambda: state(store, record.id).state is JobState.SUCCEEDED)
    assert not loop.launcher.busy(record.id)
