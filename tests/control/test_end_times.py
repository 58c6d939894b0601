"""A launch is billed to when its nodes ended, not to when the control loop got round to the end: a loop
that was away (a restart of `overcast up`, a crash, a lost lease) must not charge the time it was away.
Plain local backends, real processes, the real loop and store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.control.loop import ControlLoop
from overcast.store import JobState, Store
from overcast.store.tables import launches
from tests.control.harness import job, run_until, state


@pytest.mark.parametrize(
    ("run", "outcome"), [("sleep 0.5", JobState.SUCCEEDED), ("sleep 0.5; exit 2", JobState.FAILED)]
)
def test_a_job_that_ended_while_the_loop_was_away_is_billed_to_its_end(
    tmp_path: Path, run: str, outcome: JobState
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    backend = LocalBackend(LocalCluster("a", nodes=1), home=tmp_path)
    loop = ControlLoop(store, [backend], home=tmp_path, grace_seconds=1.0)
    record = store.submit("ml", job("t", run))
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING)
    time.sleep(4.0)  # the loop is away; the job ends after ~0.5 s
    came_back = time.time()
    run_until(loop, lambda: state(store, record.id).state.terminal)
    really_ended = next(tmp_path.rglob("node-0.exit")).stat().st_mtime
    done = state(store, record.id)
    with store.engine.connect() as conn:
        [launch] = conn.execute(select(launches).where(launches.c.job_id == record.id)).mappings().all()
    assert done.state is outcome
    assert came_back - really_ended > 3.0
    assert done.ended_at == launch["ended_at"] == pytest.approx(really_ended, abs=0.05)
    assert launch["ended_at"] - launch["launched_at"] < 2.0  # ~0.5 s, not the 4 s the loop was away
    [row] = store.usage(launch["launched_at"], time.time() + 1, by="job").rows
    assert row.gpu_hours * 3600 == pytest.approx(launch["ended_at"] - launch["launched_at"])
    store.close()
