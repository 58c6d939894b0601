"""An attempt a listing missed ("lost", its job requeued) but that kept running is billed until it is
stopped as an orphan, through the real loop and a real local process (review repro)."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.control.loop import ControlLoop
from overcast.store import JobState, Store
from overcast.store.tables import launches
from tests.control.harness import job, run_until, state


class Lagging(LocalBackend):
    """A backend whose next ``miss`` listings leave everything out (a listing that lagged)."""

    miss = 0

    def active(self) -> list[tuple[str, int]]:
        found = super().active()
        if self.miss:
            self.miss -= 1
            return []
        return found


def test_a_lost_attempt_stopped_later_as_an_orphan_is_billed_until_the_stop(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    backend = Lagging(LocalCluster("a", nodes=1), home=tmp_path)
    loop = ControlLoop(store, [backend], home=tmp_path, grace_seconds=1.0, reconcile_every=1)
    try:
        record = store.submit("ml", job("t", "sleep 600"))
        run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING)
        backend.miss = 1
        loop.tick()  # reconcile: attempt 1 "lost", the job requeued
        lost_at = time.time()
        time.sleep(1.5)  # attempt 1 keeps running (its node is busy: attempt 2 cannot start here)
        run_until(loop, lambda: all(a != 1 for _, a in backend.active()), timeout=10)
        stopped_at = time.time()
        query = select(launches).where(launches.c.job_id == record.id, launches.c.attempt == 1)
        with store.engine.connect() as conn:
            one = conn.execute(query).mappings().one()
        assert one["outcome"] == "orphan"
        assert lost_at + 1.5 <= one["ended_at"] <= stopped_at
    finally:
        for job_id, attempt in backend.active():
            backend.stop(job_id, attempt, 0.0)
        store.close()
