"""Inference services on a real Slurm cluster: replicas are Slurm jobs, reached at their node's NodeAddr.

Every node of the test cluster is set to NodeAddr 127.0.0.2 for these tests (the replica binds it), so a
replica is reached only where Slurm says it runs: the old 127.0.0.1 never answers. Probes and the load
balancer reach the replicas over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from overcast.backends.base import Backend, BackendEvent, EventKind
from overcast.backends.local import LocalBackend, LocalCluster
from overcast.backends.local_share import split_for_services
from overcast.backends.slurm import SlurmBackend
from overcast.control.health import Backoff
from overcast.control.loop import ControlLoop
from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer, serve
from overcast.serve.ledger import ServiceLedger, replica_job_id
from overcast.serve.supervisor import ServiceSupervisor
from overcast.spec.models import Autoscaling, ReadinessProbe, ServiceSpec
from overcast.store import JobState, Store
from tests.fixtures.slurm import LocalSlurm
from tests.serve.test_adoption import wait_for
from tests.slurm.helpers import shell_spec

REPLICA = Path(__file__).resolve().parents[1] / "serve" / "health_replica.py"
NODE_ADDR = "127.0.0.2"  # where the test cluster's nodes are "reached": not this host's 127.0.0.1
T = TypeVar("T")


@pytest.fixture
def oci(
    slurm_backends: dict[str, SlurmBackend], slurm_clusters: dict[str, LocalSlurm]
) -> Iterator[SlurmBackend]:
    """oci-hpc with every node at NodeAddr 127.0.0.2 (set back to 127.0.0.1 after the test)."""
    cluster = slurm_clusters["oci-hpc"]

    def set_addr(addr: str) -> None:  # one node at a time: a list takes as many addresses as names
        for node in cluster.node_names:
            cluster.command("scontrol", "update", f"nodename={node}", f"nodeaddr={addr}")

    set_addr(NODE_ADDR)
    try:
        yield slurm_backends["oci-hpc"]
    finally:
        set_addr("127.0.0.1")


def spec(tmp_path: Path, replicas: int, host: str = NODE_ADDR, to_ready: float = 60) -> ServiceSpec:
    """health_replica.py on NODE_ADDR; each replica writes its probes and requests to <tmp>/<rid>/hits."""
    run = f'd={tmp_path}/$OVERCAST_REPLICA_ID; mkdir -p "$d" && exec {sys.executable} {REPLICA} "$d"'
    return ServiceSpec(
        name="llm", run=run, env={"OVERCAST_REPLICA_HOST": host},
        replicas=Autoscaling(min_replicas=replicas),
        readiness_probe=ReadinessProbe(path="/health", initial_delay_seconds=0, period_seconds=0.2,
                                       timeout_seconds=1.0, timeout_to_ready_seconds=to_ready),
    )  # fmt: skip


def after(step: Callable[[], object], check: Callable[[], T]) -> Callable[[], T]:
    """``check`` after one ``step`` (a tick): a condition for wait_for."""

    def run() -> T:
        step()
        return check()

    return run


class Service:
    """A controller over the services' side of one Slurm backend, its load balancer on its own loop."""

    def __init__(self, backend: SlurmBackend, tmp_path: Path, replicas: int) -> None:
        self.logs: list[str] = []
        self.lb = LoadBalancer("llm")
        self.home = tmp_path / "serve"
        self.spec = spec(tmp_path, replicas)
        self.ctl = self.controller(backend)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.runner, port = asyncio.run_coroutine_threadsafe(serve(self.lb), self.loop).result(10)
        self.url = f"http://127.0.0.1:{port}"
        self.closed = False

    def controller(self, backend: SlurmBackend) -> ServiceController:
        _, (services,) = split_for_services([backend])
        return ServiceController(self.spec, [services], self.lb, log=self.logs.append, home=self.home)

    def ready(self, n: int) -> dict[str, str] | None:
        urls = {
            rid: live.url for rid, live in self.ctl.replicas.items() if str(live.replica.state) == "ready"
        }
        return urls if len(urls) == n and len(self.ctl.replicas) == n else None

    def wait(self, check: Callable[[], T], what: str) -> T:
        return wait_for(after(self.ctl.tick, check), 40, what)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.ctl.shutdown()
        finally:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)


def running(cluster: LocalSlurm, backend: SlurmBackend) -> set[str]:
    """The overcast job ids of ``backend``'s prefix that Slurm runs (or queues) now."""
    names = cluster.command("squeue", "-h", "-t", "PENDING,RUNNING", "-o", "%j").split()
    return {key[0] for name in names if (key := backend.parse_job_name(name))}


def close(loop: ControlLoop) -> None:
    """Stop a loop as `overcast up` does: stops in flight end, the lease is released."""
    done = threading.Event()
    done.set()
    loop.run(done)


def hits(tmp_path: Path, rid: str) -> int:
    path = tmp_path / rid / "hits"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def two_ready(oci: SlurmBackend, tmp_path: Path) -> Iterator[tuple[Service, dict[str, str]]]:
    """A service of 2 replicas on oci-hpc, both ready: (the service, each replica's url)."""
    service = Service(oci, tmp_path, replicas=2)
    try:
        yield service, service.wait(lambda: service.ready(2), "2 ready replicas")
    finally:
        service.close()


@pytest.mark.slurm
def test_two_replicas_on_slurm_become_ready_at_their_node_address_and_serve_through_the_lb(
    oci: SlurmBackend, two_ready: tuple[Service, dict[str, str]], slurm_clusters: dict[str, LocalSlurm],
    tmp_path: Path,
) -> None:  # fmt: skip
    service, urls = two_ready
    assert all(url.startswith(f"http://{NODE_ADDR}:") for url in urls.values()), urls  # before: 127.0.0.1
    squeue = slurm_clusters["oci-hpc"].command("squeue", "-h", "-o", "%j %T")
    for rid in urls:
        assert f"{oci.job_name(replica_job_id('llm', rid), 1)} RUNNING" in squeue  # each a Slurm job
    recorded = ServiceLedger(service.home, "llm").load().replicas
    assert {rid: rec.url for rid, rec in recorded.items()} == urls  # a restart adopts them there
    before = {rid: hits(tmp_path, rid) for rid in urls}
    answers = [httpx.get(service.url + "/generate", timeout=5).status_code for _ in range(10)]
    assert answers == [200] * 10
    assert all(hits(tmp_path, rid) > before[rid] for rid in urls)  # both replicas served
    service.close()
    assert not running(slurm_clusters["oci-hpc"], oci)  # shutdown() cancelled them


@pytest.mark.slurm
def test_a_restarted_controller_adopts_the_replicas_at_their_recorded_address(
    oci: SlurmBackend, two_ready: tuple[Service, dict[str, str]], slurm_clusters: dict[str, LocalSlurm]
) -> None:
    service, urls = two_ready
    jobs = running(slurm_clusters["oci-hpc"], oci)
    service.ctl.detach()  # the controller's process ends; its replicas run on
    service.logs.clear()
    service.ctl = service.controller(SlurmBackend(oci.cluster))  # a new process: fresh backend objects
    service.ctl.tick()
    assert service.ready(2) == urls  # ready from its first tick, where they run
    assert sum("adopted" in line for line in service.logs) == 2, service.logs
    assert not [line for line in service.logs if "launching" in line]
    assert running(slurm_clusters["oci-hpc"], oci) == jobs  # none launched again, none stopped
    assert httpx.get(service.url + "/", timeout=5).status_code == 200


@pytest.mark.slurm
def test_a_replica_cancelled_from_outside_is_replaced(
    oci: SlurmBackend, two_ready: tuple[Service, dict[str, str]], slurm_clusters: dict[str, LocalSlurm]
) -> None:
    service, first = two_ready
    victim = min(first)
    slurm_clusters["oci-hpc"].command("scancel", "-n", oci.job_name(replica_job_id("llm", victim), 1))
    now = service.wait(lambda: (ready := service.ready(2)) and victim not in ready and ready, "a replacement")
    assert set(now) == (set(first) - {victim}) | {"r2"}
    assert any(f"replica {victim} lost: preempted" in line for line in service.logs), service.logs
    assert httpx.get(service.url + "/", timeout=5).status_code == 200


@pytest.mark.slurm
def test_jobs_and_replicas_share_the_cluster_and_the_job_loop_never_stops_a_replica(
    oci: SlurmBackend, slurm_clusters: dict[str, LocalSlurm], tmp_path: Path
) -> None:
    """As `overcast up` wires them: the job loop and the services over one Slurm cluster, one SQLite store."""
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    jobs_side, services_side = split_for_services([oci])
    assert len(services_side) == 1  # before: a Slurm cluster got no services
    job = store.submit("default", shell_spec("sleeper", "sleep 120"))
    service, _ = store.put_service("default", spec(tmp_path, 2))
    supervisor = ServiceSupervisor(store, services_side, tmp_path / "serve", interval=0.2)
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop, 0.2), daemon=True)
    thread.start()

    def loop_over(backends: list[Backend]) -> ControlLoop:
        return ControlLoop(
            store,
            backends,
            home=tmp_path,
            grace_seconds=1.0,
            backoff=Backoff(base_seconds=60),
            reconcile_every=1,
        )

    try:
        loop = loop_over(jobs_side)

        def serving() -> dict | None:
            status = store.service(service.id).status
            return status if status.get("ready") == 2 and status.get("url") else None

        status = wait_for(after(loop.tick, serving), 40, "2 ready replicas")
        wait_for(after(loop.tick, lambda: store.get(job.id).state is JobState.RUNNING), 40, "the job running")
        replica_jobs = {replica_job_id(service.id, r["id"]) for r in status["replicas"]}
        (pool,) = jobs_side[0].pools()
        assert pool.used_nodes == 3  # the job's node and the replicas': one count for both sides
        # a restart of the loop over the whole cluster (no split): its reconcile sees the replicas too
        for backends in (jobs_side, [SlurmBackend(oci.cluster)]):
            close(loop)  # a restart: the next loop leads (and reconciles) from its first tick
            loop = loop_over(backends)
            reports = [loop.tick() for _ in range(5)]
            assert all(r.reconciled is not None and not r.reconciled.stopped for r in reports), reports
        close(loop)  # any stop it began has ended
        # nothing stopped: not a replica, not the job
        assert running(slurm_clusters["oci-hpc"], oci) == replica_jobs | {job.id}
        assert store.get(job.id).attempt == 1
        assert not [e for e in store.events() if e.kind == "orphan-stopped"]
        open_records = {r.job_id for r in store.launches(active_only=True)}
        assert replica_jobs <= open_records  # their bills stay open (the service ends them)
        now = store.service(service.id).status
        assert [r["id"] for r in now["replicas"]] == [r["id"] for r in status["replicas"]]
        assert all(r["url"].startswith(f"http://{NODE_ADDR}:") for r in now["replicas"])
        assert httpx.get(str(status["url"]) + "/", timeout=5).status_code == 200
    finally:
        stop.set()
        thread.join(60)


def listens(port: int) -> bool:
    """A connection to 127.0.0.1:port is accepted (no request: the replica counts none)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


class Unplaced(LocalBackend):
    """A local provider that cannot say where its launches run until ``placed`` (a queued Slurm job)."""

    placed = False

    def address(self, job_id: str, attempt: int) -> str | None:
        return "127.0.0.1" if self.placed else None


def test_a_replica_is_probed_only_once_placed_and_its_deadline_runs_meanwhile(tmp_path: Path) -> None:
    backend = Unplaced(LocalCluster("a", nodes=2), home=tmp_path)
    now = [time.time()]
    service = spec(tmp_path, 1, host="127.0.0.1", to_ready=5)
    logs: list[str] = []
    ctl = ServiceController(service, [backend], LoadBalancer("llm"), clock=lambda: now[0], log=logs.append)
    try:
        ctl.tick()
        port = ctl._state.replicas["r0"].port
        wait_for(lambda: listens(port), 20, "r0 listening")  # it runs, but nobody knows where
        for _ in range(4):
            now[0] += 1
            ctl.tick()
        assert hits(tmp_path, "r0") == 0 and ctl.ready_count() == 0  # before: probed at 127.0.0.1, ready
        assert ctl.status()["replicas"][0]["url"] == ""
        now[0] += 2  # past timeout_to_ready_seconds with no address: replaced
        ctl.tick()
        assert set(ctl.replicas) == {"r1"}, logs
        assert any("r0 lost: not running 5 s after its launch" in line for line in logs), logs
        backend.placed = True

        def step() -> None:
            now[0] += 0.2  # one probe period
            ctl.tick()

        wait_for(after(step, lambda: ctl.ready_count() == 1), 20, "r1 ready once placed")
        assert ctl.replicas["r1"].url.startswith("http://127.0.0.1:")
    finally:
        ctl.shutdown()


class GivesUp(Unplaced):
    """A cluster that gives up on a queued replica (Slurm's pending_timeout_s: CAPACITY_ERROR)."""

    give_up: tuple[str, ...] = ()  # job ids it gives up on at its next poll

    def poll(self) -> list[BackendEvent]:
        events = super().poll()
        events += [BackendEvent(EventKind.CAPACITY_ERROR, j, 1, time.time(), "pending") for j in self.give_up]
        self.give_up = ()
        return events


def test_a_replica_the_cluster_gave_up_on_is_replaced_and_its_pool_skipped(tmp_path: Path) -> None:
    backend = GivesUp(LocalCluster("a", nodes=2), home=tmp_path)
    now = [time.time()]
    logs: list[str] = []
    service = spec(tmp_path, 1, host="127.0.0.1")
    ctl = ServiceController(service, [backend], LoadBalancer("llm"), clock=lambda: now[0], log=logs.append)
    try:
        ctl.tick()
        backend.give_up = (ctl.replicas["r0"].job_id,)
        now[0] += 1
        ctl.tick()  # before: the event was dropped and r0 waited for its deadline
        assert any("r0 lost: capacity-error" in line for line in logs), logs
        assert "r1" not in ctl.replicas  # its only pool is skipped for 30 s
        now[0] += 31
        ctl.tick()
        assert "r1" in ctl.replicas, logs
    finally:
        ctl.shutdown()
