"""The lease is kept while a tick is inside a slow backend call, and a launch that another loop
overtook anyway is stopped: a job never runs twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from overcast.backends.base import Allocation, LaunchRequest
from overcast.control.lease import LeaseHeartbeat
from overcast.control.loop import ControlLoop
from overcast.placement.pool import Pool, Purchase
from overcast.spec.models import JobSpec
from overcast.store import JobState, Store


class SlowCloud:
    """One pool on a shared fake provider; a launch takes ``delay`` seconds, and runs ``during`` meanwhile."""

    name = "fake:cloud"

    def __init__(self, running: dict, delay: float = 0.0, during=None) -> None:  # type: ignore[no-untyped-def]
        self.running, self.delay, self.during = running, delay, during
        self.stopped: list[tuple[str, int]] = []

    def pools(self) -> list[Pool]:
        pool = Pool("fake/p", "fake", "r", None, "t", "", 0, Purchase.ON_DEMAND, 1.0, capacity_nodes=8)
        pool.backend = self.name
        return [pool]

    def launch(self, request: LaunchRequest) -> Allocation:
        if self.during is not None:
            self.during(request)
        time.sleep(self.delay)
        self.running[(request.job_id, request.attempt)] = True
        return Allocation(request.job_id, request.attempt, self.name, f"h{request.attempt}")

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        self.stopped.append((job_id, attempt))
        self.running.pop((job_id, attempt), None)

    def poll(self) -> list:
        return []

    def active(self) -> list[tuple[str, int]]:
        return list(self.running)


def test_a_slow_launch_keeps_the_lease_so_no_second_loop_launches_again(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    running: dict = {}
    first = ControlLoop(store, [SlowCloud(running, delay=2.0)], home=tmp_path, lease_ttl=0.6, holder="a")
    second = ControlLoop(store, [SlowCloud(running)], home=tmp_path, lease_ttl=0.6, holder="b")
    record = store.submit("ml", JobSpec(name="train", run="true"))
    ticking = threading.Thread(target=first.tick)
    ticking.start()
    time.sleep(1.2)  # two lease lengths into the first loop's launch
    assert not second.tick().leader
    ticking.join()
    assert list(running) == [(record.id, 1)]
    assert store.get(record.id).attempt == 1
    assert [(r.attempt, r.handle) for r in store.launches() if r.job_id == record.id] == [(1, "h1")]


def test_a_launch_overtaken_by_another_loop_is_stopped(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    running: dict = {}

    def other_loop_requeues(request: LaunchRequest) -> None:  # what a loop that took over would do
        store.end_launch(request.job_id, request.attempt, "lost")
        store.transition(request.job_id, [JobState.LAUNCHING], JobState.PENDING, attempt_was=request.attempt)

    cloud = SlowCloud(running, during=other_loop_requeues)
    loop = ControlLoop(store, [cloud], home=tmp_path)
    record = store.submit("ml", JobSpec(name="train", run="true"))
    loop.tick()
    assert cloud.stopped == [(record.id, 1)] and not running
    assert store.get(record.id).state is JobState.PENDING
    assert not [r for r in store.launches() if r.job_id == record.id]  # the record stays closed
    assert "superseded-stopped" in [e.kind for e in store.events(job_id=record.id)]


def test_the_heartbeat_reports_a_lost_lease_and_gives_up_after_its_hold_limit() -> None:
    answers = iter([True, False])
    with LeaseHeartbeat(lambda: next(answers), ttl_s=0.15) as beat:
        assert beat.lost.wait(2.0)
    with LeaseHeartbeat(lambda: True, ttl_s=0.15, max_hold_s=0.2) as beat:
        assert beat.lost.wait(2.0)
    with LeaseHeartbeat(lambda: True, ttl_s=0.15) as beat:
        time.sleep(0.3)
        assert not beat.lost.is_set()
