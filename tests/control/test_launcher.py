"""Launches run on a background thread per backend: a slow launch does not hold up other jobs' events and
placements, and its outcome (failover, a cancel, a reconcile, a lost lease) is handled as before."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from overcast.backends.local import LocalBackend
from overcast.control.health import Backoff
from overcast.control.loop import ControlLoop
from overcast.spec.models import JobSpec
from overcast.store import JobState, Store
from tests.control.harness import SlowLaunch, clusters, job, run_until, state
from tests.control.test_lease import SlowCloud

AZURE = "local/azure-local"  # the cheaper pool: placed first


def slow_azure(
    tmp_path: Path, delay: float, azure_nodes: int = 1, **kw: float
) -> tuple[Store, ControlLoop, SlowLaunch]:
    """One node on oci-local, ``azure_nodes`` on azure-local, whose launches take ``delay`` seconds."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    azure, oci = (LocalBackend(c, home=tmp_path) for c in clusters(azure_nodes=azure_nodes, oci_nodes=1))
    slow = SlowLaunch(azure, delay)
    kw.setdefault("launch_wait_s", 0.1)
    loop = ControlLoop(
        store, [slow, oci], home=tmp_path, grace_seconds=1.0, backoff=Backoff(60.0, 600.0), **kw
    )  # type: ignore[list-item]
    return store, loop, slow


def kinds(store: Store, job_id: str) -> list[str]:
    return [e.kind for e in store.events(job_id=job_id, limit=1000)]


def test_a_slow_launch_does_not_delay_another_backends_job(tmp_path: Path) -> None:
    store, loop, slow = slow_azure(tmp_path, delay=3.0)
    first = store.submit("default", job("slow", "true"))
    second = store.submit("default", job("fast", "sleep 30"))
    report = loop.tick()  # both placed: the first on azure-local, the second on oci-local
    # a tick that waited for the slow launch would take >= 3 s; a loaded CI machine takes up to ~2 s without
    assert report.placed == 2 and report.seconds < 2.5
    assert state(store, first.id).pool_id == AZURE and state(store, first.id).state is JobState.LAUNCHING
    ticks = []
    while state(store, second.id).state is not JobState.RUNNING:
        ticks.append(loop.tick().seconds)
        time.sleep(0.05)
    assert not slow.returned.is_set()  # running before the slow launch came back
    assert max(ticks) < 2.5
    # the poll can see it succeed before the tick handled its launch (which writes "launched")
    run_until(
        loop, lambda: state(store, first.id).state is JobState.SUCCEEDED and not loop.launcher.busy(first.id)
    )
    assert kinds(store, first.id).count("launched") == 1 and state(store, first.id).attempt == 1
    store.request_cancel(second.id)
    run_until(loop, lambda: state(store, second.id).state.terminal)


def test_a_slow_launch_refused_for_capacity_fails_over(tmp_path: Path) -> None:
    store, loop, slow = slow_azure(tmp_path, delay=1.0)
    slow.inner.set_capacity_error(True)
    record = store.submit("default", job("a", "true"))
    loop.tick()
    assert state(store, record.id).state is JobState.LAUNCHING and not slow.returned.is_set()
    run_until(loop, lambda: state(store, record.id).state is JobState.SUCCEEDED)
    final = state(store, record.id)
    assert (final.pool_id, final.attempt) == ("local/oci-local", 2)
    assert store.pool_health()[AZURE].failures == 1
    assert kinds(store, record.id).count("capacity-error") == 1


def test_one_refusal_is_one_failure_when_launches_return_after_their_tick(tmp_path: Path) -> None:
    # room for both jobs on azure-local: both are placed there in one tick
    store, loop, slow = slow_azure(tmp_path, delay=0.5, azure_nodes=2, launch_wait_s=0.0)
    slow.inner.set_capacity_error(True)
    ids = [store.submit("default", job(name, "true")).id for name in ("a", "b")]
    assert loop.tick().placed == 2
    assert {state(store, i).pool_id for i in ids} == {AZURE}
    run_until(loop, lambda: all(state(store, i).state is JobState.SUCCEEDED for i in ids))
    assert store.pool_health()[AZURE].failures == 1  # the second launch waited for the next plan
    assert sorted(k for i in ids for k in kinds(store, i) if k.startswith("launch-")) == ["launch-deferred"]


def test_a_cancel_during_a_launch_stops_the_job_once_launched(tmp_path: Path) -> None:
    store, loop, slow = slow_azure(tmp_path, delay=1.5)
    record = store.submit("default", job("a", "sleep 60"))
    loop.tick()
    store.request_cancel(record.id)
    run_until(loop, lambda: state(store, record.id).state.terminal)
    assert slow.returned.is_set()
    assert state(store, record.id).state is JobState.CANCELLED
    assert slow.active() == [] and not [r for r in store.launches() if r.job_id == record.id]


def test_reconcile_leaves_a_launch_in_flight_alone(tmp_path: Path) -> None:
    store, loop, slow = slow_azure(tmp_path, delay=1.5, reconcile_every=1)
    record = store.submit("default", job("a", "true"))
    reconciled = 0
    while not slow.returned.is_set():
        reconciled += loop.tick().reconciled is not None
        time.sleep(0.05)
    assert reconciled > 3 and state(store, record.id).attempt == 1
    run_until(loop, lambda: state(store, record.id).state is JobState.SUCCEEDED)
    assert "requeued" not in kinds(store, record.id) and state(store, record.id).attempt == 1


def test_a_launch_returning_after_the_lease_passed_on_is_stopped(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    running: dict = {}
    slow = SlowCloud(running, delay=1.5)
    first = ControlLoop(store, [slow], home=tmp_path, lease_ttl=0.5, holder="a", launch_wait_s=0.0)
    second = ControlLoop(store, [SlowCloud(running)], home=tmp_path, lease_ttl=0.5, holder="b")
    record = store.submit("ml", JobSpec(name="train", run="true"))  # no GPU: the fake pool
    assert first.tick().leader and first.launcher.busy(record.id)
    time.sleep(0.7)  # the first loop does not tick: its lease runs out
    assert second.tick().leader  # reconciles: attempt 1 runs nowhere yet, so attempt 2 is launched
    assert state(store, record.id).attempt == 2
    while first.launcher.busy(record.id):
        first.tick()  # not the leader: it still handles its launch as it returns
        time.sleep(0.05)
    assert slow.stopped == [(record.id, 1)] and list(running) == [(record.id, 2)]
    assert "superseded-stopped" in kinds(store, record.id)


class SlowReturn(SlowLaunch):
    """A create call that returns ``delay`` seconds after the nodes started: a short job ends first."""

    def launch(self, request):  # type: ignore[no-untyped-def]
        try:
            allocation = self.inner.launch(request)
            time.sleep(self.delay)
            return allocation
        finally:
            self.returned.set()


def test_a_job_that_ended_before_its_launch_returned_was_launched_not_superseded(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    azure, oci = (LocalBackend(c, home=tmp_path) for c in clusters(azure_nodes=1, oci_nodes=1))
    slow = SlowReturn(azure, 1.0)
    loop = ControlLoop(store, [slow, oci], home=tmp_path, launch_wait_s=0.0)  # type: ignore[list-item]
    record = store.submit("default", job("quick", "true"))
    run_until(loop, lambda: state(store, record.id).state is JobState.SUCCEEDED)
    assert loop.launcher.busy(record.id)  # the poll saw it end while its launch() still ran
    run_until(loop, lambda: not loop.launcher.busy(record.id))
    # before: handled as if another loop had taken the job over ("superseded-stopped", no "launched")
    seen = kinds(store, record.id)
    assert seen.count("launched") == 1 and "superseded-stopped" not in seen, seen
    assert state(store, record.id).state is JobState.SUCCEEDED


def test_run_waits_for_launches_in_flight_before_it_returns(tmp_path: Path) -> None:
    store, loop, slow = slow_azure(tmp_path, delay=1.0)
    record = store.submit("default", job("a", "true"))
    stop = threading.Event()
    running = threading.Thread(target=loop.run, args=(stop, 0.05))
    running.start()
    while state(store, record.id).state is not JobState.LAUNCHING:
        time.sleep(0.02)
    stop.set()
    running.join(10)
    assert not running.is_alive() and slow.returned.is_set() and not loop.launcher.busy(record.id)
    assert "launched" in kinds(store, record.id)
    run_until(loop, lambda: state(store, record.id).state is JobState.SUCCEEDED)


class LockedSlowLaunch(SlowLaunch):
    """Like the cloud backends: a launch holds the backend's lock the whole time, and so would a poll."""

    launch_holds_lock = True

    def __init__(self, inner: LocalBackend, delay: float) -> None:
        super().__init__(inner, delay)
        self.lock = threading.RLock()

    def launch(self, request):  # type: ignore[no-untyped-def]
        with self.lock:
            return super().launch(request)

    def poll(self):  # type: ignore[no-untyped-def]
        with self.lock:
            return self.inner.poll()

    def active(self):  # type: ignore[no-untyped-def]
        with self.lock:
            return self.inner.active()


def test_a_backend_whose_launch_holds_its_lock_is_not_polled_meanwhile(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    azure, oci = (LocalBackend(c, home=tmp_path) for c in clusters(azure_nodes=1, oci_nodes=1))
    slow = LockedSlowLaunch(azure, 3.0)
    loop = ControlLoop(
        store, [slow, oci], home=tmp_path, grace_seconds=1.0, reconcile_every=1, launch_wait_s=0.1
    )  # type: ignore[list-item]
    first = store.submit("default", job("slow", "true"))
    second = store.submit("default", job("fast", "sleep 30"))
    loop.tick()
    ticks = []
    while state(store, second.id).state is not JobState.RUNNING:
        ticks.append(loop.tick().seconds)  # polls and reconciles every tick, but not the busy backend
        time.sleep(0.05)
    assert not slow.returned.is_set() and max(ticks) < 1.0
    run_until(loop, lambda: state(store, first.id).state is JobState.SUCCEEDED)
    assert state(store, first.id).attempt == 1  # nothing judged lost while its launch ran
    store.request_cancel(second.id)
    run_until(loop, lambda: state(store, second.id).state.terminal)
