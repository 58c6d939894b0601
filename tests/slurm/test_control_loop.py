"""The real control loop over two real Slurm clusters: a 2-node training job runs on the cheaper cluster,
loses a node, and finishes on the other cluster from its checkpoint with the uninterrupted result."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from overcast.backends.slurm import SlurmBackend
from overcast.control.health import Backoff
from overcast.control.loop import ControlLoop
from overcast.store import JobRecord, JobState, Store
from tests.fixtures.slurm import LocalSlurm
from tests.slurm.helpers import node_log, reference_result, train_spec

pytestmark = pytest.mark.slurm


def run_until(loop: ControlLoop, done: Callable[[], bool], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loop.tick()
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"not done after {timeout}s; events: {[e.detail for e in loop.store.events()]}")


def test_training_job_survives_a_node_failure_by_resuming_on_the_other_cluster(
    slurm_backends: dict[str, SlurmBackend], slurm_clusters: dict[str, LocalSlurm], tmp_path: Path
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    oci, azure = slurm_backends["oci-hpc"], slurm_backends["azure-hpc"]
    loop = ControlLoop(
        store, [oci, azure], home=tmp_path, grace_seconds=2.0, backoff=Backoff(base_seconds=60)
    )
    spec = train_spec("train", nodes=2, ckpt=None, steps=150, step_seconds=0.02)
    record = store.submit("default", spec)
    ckpt = tmp_path / "checkpoints" / record.id / "checkpoint.npz"  # the loop's default checkpoint dir

    def job() -> JobRecord:
        found = store.get(record.id)
        assert found is not None
        return found

    run_until(loop, lambda: job().state is JobState.RUNNING and ckpt.exists())
    assert job().pool_id == "slurm/oci-hpc"  # the cheaper cluster
    assert oci.active() == [(record.id, 1)]  # visible in squeue under overcast's name
    nodes = slurm_clusters["oci-hpc"].command("squeue", "-h", "-n", oci.job_name(record.id, 1), "-o", "%N")
    node = slurm_clusters["oci-hpc"].command("scontrol", "show", "hostnames", nodes.strip()).split()[0]
    slurm_clusters["oci-hpc"].command("scontrol", "update", f"nodename={node}", "state=down", "reason=test")
    run_until(loop, lambda: job().state.terminal)
    final = job()
    assert (final.state, final.pool_id, final.attempt, final.restarts) == (
        JobState.SUCCEEDED, "slurm/azure-hpc", 2, 1,
    )  # fmt: skip
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("preempted") < kinds.index("requeued") < kinds.index("succeeded")
    log = node_log(azure, record.id, 2, 0)
    assert "resumed from checkpoint at step" in log
    assert reference_result(tmp_path / "ref", steps=150) in log
