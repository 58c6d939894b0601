"""A local provider's nodes shared by the job loop and the services (``backends/local_share.py``): each side
counts the other's launches as used and is never given their nodes, but reports and cleans up only its
own. Real processes on the local backend."""

from __future__ import annotations

import fcntl
import json
import threading
from pathlib import Path

import pytest

from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.backends.local import LocalBackend, LocalCluster
from overcast.backends.local_procs import alive
from overcast.backends.local_share import share_nodes, split_for_services
from overcast.serve.upgrade import stop_old_replicas
from overcast.spec.models import JobSpec
from tests.serve.test_adoption import stop_leftovers, wait_for

SLEEPER = JobSpec(name="sleeper", run="sleep 60")


def launch(backend: LocalBackend, job_id: str, nodes: int = 1) -> None:
    pool = backend.pools()[0]
    backend.launch(LaunchRequest(job_id, 1, pool, nodes, SLEEPER, {}))


def node_ids(home: Path, cluster: LocalCluster) -> list[int]:
    launches = (home / "local" / cluster.name / "launches").glob("*/launch.json")
    return sorted(n for path in launches for n in json.loads(path.read_text())["node_ids"])


def test_each_side_counts_every_launch_and_reports_only_its_own(tmp_path: Path):
    cluster = LocalCluster("shared", nodes=3)
    jobs, replicas = share_nodes(LocalBackend(cluster, home=tmp_path))
    try:
        launch(jobs, "j-a")
        launch(replicas, "svc.s1.r0")
        assert jobs.pools()[0].used_nodes == replicas.pools()[0].used_nodes == 2
        assert node_ids(tmp_path, cluster) == [0, 1]  # a node each, so CUDA slots of their own
        with pytest.raises(CapacityError):  # 1 node left: a side is never given the other's nodes
            launch(jobs, "j-big", nodes=2)
        with pytest.raises(CapacityError):
            launch(replicas, "svc.s1.r1", nodes=2)
        assert jobs.active() == [("j-a", 1)]  # the job loop's reconcile never sees a replica to stop
        assert replicas.active() == [("svc.s1.r0", 1)]  # nor the services' adoption a job
        assert [(e.kind, e.job_id) for e in jobs.poll()] == [(EventKind.STARTED, "j-a")]
        assert [(e.kind, e.job_id) for e in replicas.poll()] == [(EventKind.STARTED, "svc.s1.r0")]

        jobs.stop("j-a", 1, grace_seconds=1.0)
        wait_for(lambda: jobs.pools()[0].used_nodes == 1, 10, "the job's node back")
        jobs.poll()  # cleans up the stopped job's launch, not the replica's
        assert replicas.active() == [("svc.s1.r0", 1)] and replicas.pools()[0].used_nodes == 1
        launch(jobs, "j-big", nodes=2)  # the 2 free nodes, not the replica's
        assert node_ids(tmp_path, cluster) == [0, 1, 2]
    finally:
        stop_leftovers(tmp_path, [cluster])


def test_launches_from_both_sides_at_once_never_share_a_node(tmp_path: Path):
    cluster = LocalCluster("race", nodes=4)
    jobs, replicas = share_nodes(LocalBackend(cluster, home=tmp_path))
    pool = jobs.pools()[0]
    start = threading.Barrier(8)
    refused: list[str] = []

    def go(i: int) -> None:
        side, job_id = (jobs, f"j-{i}") if i % 2 else (replicas, f"svc.s1.r{i}")
        start.wait(10)
        try:
            side.launch(LaunchRequest(job_id, 1, pool, 1, SLEEPER, {}))
        except CapacityError:
            refused.append(job_id)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(refused) == 4
        assert node_ids(tmp_path, cluster) == [0, 1, 2, 3]  # each node given once
    finally:
        stop_leftovers(tmp_path, [cluster])


def test_a_provider_taken_down_while_the_other_side_starts_a_launch_loses_it(tmp_path: Path, monkeypatch):
    """set_down() on the job loop's object while the services' object has picked nodes but not started
    them waits for the start and kills the replica (it used to kill nothing: a replica ran, and reported
    STARTED, on a provider that was down)."""
    cluster = LocalCluster("shared", nodes=2)
    jobs, replicas = share_nodes(LocalBackend(cluster, home=tmp_path))
    lost: list[tuple[str, int]] = []
    down = threading.Thread(target=lambda: lost.extend(jobs.set_down(True)))
    locking = threading.Event()
    flock = fcntl.flock

    def watched_flock(fd, operation):  # tells when set_down() asks for the folder's lock
        if threading.current_thread() is down:
            locking.set()
        return flock(fd, operation)

    start = replicas._start_nodes

    def start_while_going_down(request, path, nodes):
        down.start()
        wait_for(lambda: locking.is_set() or not down.is_alive(), 10, "set_down() to lock or to end")
        start(request, path, nodes)

    monkeypatch.setattr(fcntl, "flock", watched_flock)
    monkeypatch.setattr(replicas, "_start_nodes", start_while_going_down)
    try:
        launch(replicas, "svc.s1.r0")
        down.join(10)
        assert lost == [("svc.s1.r0", 1)] and jobs.faults()["down"] and replicas.faults()["down"]
        events: list = []  # STARTED first when a poll comes before the SIGKILL lands
        ended = lambda: events.extend(replicas.poll()) or replicas.active() == []  # noqa: E731
        wait_for(ended, 10, "the replica killed by set_down()")
        assert [(e.kind, e.job_id) for e in events][-1] == (EventKind.PROVIDER_DOWN, "svc.s1.r0")
        with pytest.raises(ProviderDown):  # the flag is the folder's: the other side sees it
            launch(replicas, "svc.s1.r1")
    finally:
        jobs.set_down(False)
        stop_leftovers(tmp_path, [cluster])


def test_a_launch_that_fails_half_started_is_undone_and_frees_the_lock(tmp_path: Path, monkeypatch):
    cluster = LocalCluster("shared", nodes=2)
    jobs, replicas = share_nodes(LocalBackend(cluster, home=tmp_path))
    devices = replicas._visible_devices
    started: list[dict] = []

    def second_node_fails(node_id: int) -> str:
        if node_id == 1:  # node 0 runs by now
            started.extend(json.loads(p.read_text()) for p in replicas.launches_dir.glob("*/node-0.pid"))
            raise OSError("no such device")
        return devices(node_id)

    monkeypatch.setattr(replicas, "_visible_devices", second_node_fails)
    try:
        with pytest.raises(RuntimeError, match="no such device"):
            launch(replicas, "svc.s1.r0", nodes=2)
        assert replicas.active() == [] and node_ids(tmp_path, cluster) == []  # the record is gone
        assert len(started) == 1 and not alive(started[0]["pid"], started[0]["start"])  # and node 0 stopped
        launch(jobs, "j-a", nodes=2)  # both nodes free, and the folder's lock was let go
        assert jobs.active() == [("j-a", 1)]
    finally:
        stop_leftovers(tmp_path, [cluster])


def test_the_server_shares_local_providers_and_keeps_other_backends_for_jobs(tmp_path: Path):
    local = LocalBackend(LocalCluster("a", nodes=2), home=tmp_path / "a-home")
    other = object()  # a cluster or cloud backend: jobs only (a replica is reached at 127.0.0.1)
    jobs, services = split_for_services([local, other])  # type: ignore[list-item]
    assert jobs[1] is other and len(services) == 1
    assert isinstance(jobs[0], LocalBackend) and jobs[0].dir == services[0].dir == local.dir
    assert jobs[0].name == services[0].name == local.name


def test_an_older_servers_replicas_are_stopped_and_a_standalone_services_are_not(tmp_path: Path):
    cluster = LocalCluster("a", nodes=3)
    old = LocalBackend(cluster, home=tmp_path / "serve")  # where an older `overcast up` ran replicas
    try:
        launch(old, "svc.s-stored.r0")  # a stored service's: its server now runs it on the shared nodes
        launch(old, "svc.tiny-llm.r0")  # `overcast serve FILE` on its own still runs there
        _, replicas = share_nodes(LocalBackend(cluster, home=tmp_path))
        said: list[str] = []
        assert stop_old_replicas([replicas], {"s-stored"}, said.append) == ["svc.s-stored.r0"]
        assert old.active() == [("svc.tiny-llm.r0", 1)] and len(said) == 1
        elsewhere = LocalBackend(cluster, home=tmp_path / "new")
        assert stop_old_replicas([elsewhere], {"s-stored"}, said.append) == []
        assert not (tmp_path / "new" / "serve").exists()  # nothing created where nothing ran
    finally:
        stop_leftovers(tmp_path / "serve", [cluster])


class _GapLock:
    """An object's ``_lock`` that runs ``hook`` in another thread right after its next release, once armed:
    a poll() from the tick's thread landing just after launch()'s locked part."""

    def __init__(self, inner: threading.RLock, hook: object) -> None:
        self.inner, self.hook, self.armed = inner, hook, False

    def __enter__(self) -> bool:
        return self.inner.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)
        if self.armed:
            self.armed = False
            thread = threading.Thread(target=self.hook)  # type: ignore[arg-type]
            thread.start()
            thread.join(10)


def test_a_poll_right_after_a_failed_launch_never_reports_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the undo of a half-started launch once ran after this object's lock was let go: a poll in that gap
    # reported STARTED for a launch whose launch() then raised
    cluster = LocalCluster("shared", nodes=2)
    _, replicas = share_nodes(LocalBackend(cluster, home=tmp_path))
    seen: list = []
    lock = _GapLock(replicas._lock, lambda: seen.extend(replicas.poll()))
    replicas._lock = lock  # type: ignore[assignment]
    devices = replicas._visible_devices

    def second_node_fails(node_id: int) -> str:
        if node_id == 1:
            lock.armed = True  # the next release of the lock ends launch()'s locked part
            raise OSError("no such device")
        return devices(node_id)

    monkeypatch.setattr(replicas, "_visible_devices", second_node_fails)
    try:
        with pytest.raises(RuntimeError, match="no such device"):
            launch(replicas, "svc.s1.r0", nodes=2)
        assert (EventKind.STARTED, "svc.s1.r0") not in [(e.kind, e.job_id) for e in seen]
    finally:
        stop_leftovers(tmp_path, [cluster])
