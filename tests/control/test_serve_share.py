"""Jobs and services' replicas on one local provider's nodes, as `overcast up` runs them: the job loop
counts the nodes replicas hold (no job placed on them, `overcast pools` shows them used), the services
never launch a replica on a job's node, and a restart adopts both with nothing stopped. Real store (SQLite
and PostgreSQL), real processes, a real model-server replica."""

from __future__ import annotations

import sys
from pathlib import Path

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.backends.local_share import share_nodes
from overcast.control.controller import LoopController
from overcast.control.loop import ControlLoop
from overcast.control.runtime import Runtime
from overcast.control.snapshot import build_snapshot
from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer
from overcast.spec.models import Autoscaling, ReadinessProbe, ServiceSpec
from overcast.store import JobState, LaunchTerms, Store
from tests.control.harness import job, run_until, state
from tests.serve.replica_procs import MODEL_SERVER
from tests.serve.test_adoption import stop_leftovers, wait_for

CLUSTER = LocalCluster("azure-local", nodes=2, price_per_node_hour=2.0)


def service(replicas: int) -> ServiceSpec:
    return ServiceSpec(
        name="llm", team="ml", replicas=Autoscaling(min_replicas=replicas),
        run=f"exec {sys.executable} {MODEL_SERVER} --port $OVERCAST_REPLICA_PORT --warmup 0.2",
        readiness_probe=ReadinessProbe(path="/health", initial_delay_seconds=0.1, timeout_seconds=1.0),
    )  # fmt: skip


class Server:
    """The job loop and one service's controller over one provider, as a fresh `overcast up` makes them."""

    def __init__(self, store: Store, home: Path) -> None:
        jobs, replicas = share_nodes(LocalBackend(CLUSTER, home=home))
        self.loop = ControlLoop(store, [jobs], home=home, grace_seconds=2.0, holder="up")
        self.ctl = ServiceController(
            service(2), [replicas], LoadBalancer("llm"), home=home / "serve", key="s-llm", store=store
        )

    def used(self) -> int:
        return LoopController(self.loop).pools()[0]["used"]  # what GET /v1/pools shows


def test_jobs_and_replicas_never_share_a_node_and_a_restart_adopts_both(store_url: str, tmp_path: Path):
    store = Store(store_url)
    server = Server(store, tmp_path)
    try:
        first = store.submit("ml", job("first", "sleep 600"))
        run_until(server.loop, lambda: state(store, first.id).state is JobState.RUNNING)

        # the service wants 2 replicas; 1 node is free: one replica, none on the job's node
        wait_for(lambda: server.ctl.tick() or server.ctl.ready_count() >= 1, 30, "the replica")
        for _ in range(3):
            server.ctl.tick()
        assert sorted(server.ctl.replicas) == ["r0"] and server.ctl.status()["target"] == 2
        assert server.used() == 2

        # the job loop sees the replica's node: the next job waits (it was placed there before)
        second = store.submit("ml", job("second", "sleep 600"))
        for _ in range(3):
            report = server.loop.tick()
        assert state(store, second.id).state is JobState.PENDING, report
        assert second.id in report.unplaced

        launches = sorted(p.parent.name for p in (tmp_path / "local").glob("*/launches/*/node-0.pid"))
        assert launches == [f"{first.id}--1", "svc.s-llm.r0--1"]
        server.ctl.detach()  # the server dies: a new one over fresh backend objects
        server = Server(store, tmp_path)
        report = server.loop.tick()
        assert report.reconciled is not None  # a new leader reconciles first: neither side's orphan
        assert report.reconciled.stopped == [] and report.reconciled.requeued == []
        server.ctl.tick()
        assert sorted(server.ctl.replicas) == ["r0"]  # adopted, not launched again
        assert state(store, first.id).state is JobState.RUNNING and state(store, first.id).attempt == 1
        assert state(store, second.id).state is JobState.PENDING
        again = sorted(p.parent.name for p in (tmp_path / "local").glob("*/launches/*/node-0.pid"))
        assert again == launches
    finally:
        server.ctl.detach()
        stop_leftovers(tmp_path, [CLUSTER])
        store.close()


def test_the_snapshot_counts_a_replica_recorded_but_not_yet_on_its_backend(store_url: str, tmp_path: Path):
    store = Store(store_url)
    jobs, _ = share_nodes(LocalBackend(CLUSTER, home=tmp_path))
    try:
        terms = LaunchTerms("azure-local", "on-demand", 1, 1, "H100", 2.0)
        # recorded before the backend is asked (serve/billing.py): for a moment it is nowhere on disk
        store.record_launch("svc.s-llm.r0", 1, "local/azure-local", jobs.name, "", team="ml", terms=terms)
        store.record_launch("svc.s-llm.r1", 1, "local/other", "local:other", "", team="ml", terms=terms)
        snapshot = build_snapshot(Runtime(store, {jobs.name: jobs}, tmp_path), 0.0, {})
        assert [(p.id, p.used_nodes) for p in snapshot.pools] == [("local/azure-local", 1)]
        store.end_launch("svc.s-llm.r0", 1, "retired")
        snapshot = build_snapshot(Runtime(store, {jobs.name: jobs}, tmp_path), 0.0, {})
        assert snapshot.pools[0].used_nodes == 0
    finally:
        store.close()
