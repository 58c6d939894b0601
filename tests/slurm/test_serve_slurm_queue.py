"""Services and jobs on one Slurm cluster, as `overcast up` wires them, while Slurm queues: what one side
launched and Slurm has not started yet holds its nodes for the other side too (the store's records), and
a replica program listening where the controller says is reached at its node's address.

The partition is set DOWN while a launch is made (as a reservation or a priority hold would keep it
queued): Slurm takes the job and starts nothing, so ``sinfo`` shows no node used."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from overcast.backends.local_share import split_for_services
from overcast.backends.slurm import SlurmBackend
from overcast.backends.slurm_cli import SlurmCommands
from overcast.control.health import Backoff
from overcast.control.loop import ControlLoop
from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer
from overcast.spec.models import Autoscaling, ReadinessProbe, ServiceSpec
from overcast.store import JobState, Store
from tests.fixtures.slurm import LocalSlurm
from tests.serve.test_adoption import wait_for
from tests.slurm.helpers import shell_spec
from tests.slurm.test_serve_slurm import NODE_ADDR, after, oci  # noqa: F401

MODEL_SERVER = Path(__file__).resolve().parents[2] / "examples" / "serve" / "model_server.py"


class Wiring:
    """A job loop and one service (1 replica) over the two sides of oci-hpc, one SQLite store."""

    def __init__(self, backend: SlurmBackend, tmp_path: Path, run: str = "sleep 300") -> None:
        self.store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
        jobs_side, (services_side,) = split_for_services([backend])
        spec = ServiceSpec(
            name="llm", run=run, replicas=Autoscaling(min_replicas=1),
            readiness_probe=ReadinessProbe(path="/health", initial_delay_seconds=0, period_seconds=0.2,
                                           timeout_seconds=1.0, timeout_to_ready_seconds=600),
        )  # fmt: skip
        self.logs: list[str] = []
        self.ctl = ServiceController(
            spec, [services_side], LoadBalancer("llm"), store=self.store, log=self.logs.append
        )
        self.loop = ControlLoop(
            self.store, jobs_side, home=tmp_path, grace_seconds=1.0, backoff=Backoff(base_seconds=60),
            reconcile_every=1,
        )  # fmt: skip

    def close(self) -> None:
        try:
            self.ctl.shutdown()
        finally:
            self.store.close()


@pytest.fixture
def held(slurm_clusters: dict[str, LocalSlurm]) -> Iterator[LocalSlurm]:
    """oci-hpc with its partition DOWN (UP again after the test): what is submitted stays queued."""
    cluster = slurm_clusters["oci-hpc"]
    cluster.command("scontrol", "update", "partitionname=gpu", "state=down")
    try:
        yield cluster
    finally:
        cluster.command("scontrol", "update", "partitionname=gpu", "state=up")


@pytest.mark.slurm
def test_the_job_loop_leaves_the_node_a_queued_replica_waits_for(
    slurm_backends: dict[str, SlurmBackend], held: LocalSlurm, tmp_path: Path
) -> None:
    wiring = Wiring(slurm_backends["oci-hpc"], tmp_path)
    try:
        wiring.ctl.tick()  # r0 is submitted, and queued
        assert list(wiring.ctl.replicas) == ["r0"]
        assert "PENDING" in held.command("squeue", "-h", "-o", "%T")
        gang = wiring.store.submit("default", shell_spec("gang", "sleep 300", nodes=len(held.node_names)))
        wiring.loop.tick()
        rec = wiring.store.get(gang.id)
        # before: placed on the nodes sinfo called free, then queued behind the replica
        assert rec.state is JobState.PENDING, (rec.state, rec.pool_id)
    finally:
        wiring.close()


@pytest.mark.slurm
def test_the_replica_plan_leaves_the_nodes_a_queued_job_holds(
    slurm_backends: dict[str, SlurmBackend], held: LocalSlurm, tmp_path: Path
) -> None:
    wiring = Wiring(slurm_backends["oci-hpc"], tmp_path)
    try:
        gang = wiring.store.submit("default", shell_spec("gang", "sleep 300", nodes=len(held.node_names)))
        wiring.loop.tick()
        assert wiring.store.get(gang.id).pool_id == "slurm/oci-hpc"  # submitted, queued by Slurm
        wiring.ctl.tick()
        # before: a replica queued behind the gang (billed meanwhile), replaced every pending_timeout_s
        assert not wiring.ctl.replicas, wiring.logs
    finally:
        wiring.close()


@pytest.mark.slurm
def test_the_example_model_server_is_reached_on_a_slurm_node_without_a_host_flag(
    oci: SlurmBackend,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The controller exports OVERCAST_REPLICA_HOST=0.0.0.0 to a Slurm replica; model_server.py listens
    there by default. Nodes are at 127.0.0.2: a server on 127.0.0.1 (before) is never ready."""
    wiring = Wiring(oci, tmp_path, run=f"exec {sys.executable} {MODEL_SERVER} --warmup 0")
    try:
        wait_for(after(wiring.ctl.tick, lambda: wiring.ctl.ready_count() == 1), 40, "r0 ready")
        assert wiring.ctl.replicas["r0"].url.startswith(f"http://{NODE_ADDR}:")
    finally:
        wiring.close()


class Booting(SlurmCommands):
    """slurmctld's answers about a job whose node is still powering up (CONFIGURING)."""

    def run(self, *args: str, stdin: str | None = None) -> str:
        if args[0] == "squeue":
            return "CONFIGURING|node1\n"
        return "NodeName=node1 Arch=x86_64 NodeAddr=10.0.0.99 NodeHostName=node1\n"


def test_a_booting_nodes_address_is_not_taken() -> None:
    # a powering-up node's NodeAddr can be a placeholder, and the controller never asks again once it has one
    assert Booting().node_address(7) is None  # before: 10.0.0.99
