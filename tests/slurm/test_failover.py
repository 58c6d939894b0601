"""Placement across two real Slurm clusters and failover between them: a gang too big for one, a node
lost mid-job, a whole cluster lost. Training resumes from its checkpoint with the uninterrupted result."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from overcast.backends.base import CapacityError, EventKind, ProviderDown
from overcast.backends.slurm import SlurmBackend
from overcast.placement.pool import Health
from overcast.scheduler.decide import decide
from overcast.scheduler.snapshot import PendingJob, Snapshot
from overcast.spec.models import JobSpec
from tests.fixtures.slurm import LocalSlurm
from tests.slurm.helpers import (
    Events,
    node_log,
    pool_of,
    reference_result,
    request,
    shell_spec,
    train_spec,
    wait_until,
)

pytestmark = pytest.mark.slurm


def place(backends: list[SlurmBackend], spec: JobSpec) -> str | None:
    """The pool the production scheduler picks for ``spec`` from what the clusters report now."""
    pools = [p for b in backends for p in b.pools()]
    decisions = decide(Snapshot(now=0.0, pools=pools, pending=[PendingJob("j", spec, 0.0)]))
    return decisions.place[0].pool_id if decisions.place else None


def test_placement_prefers_the_cheaper_cluster_until_it_is_full(
    slurm_backends: dict[str, SlurmBackend],
) -> None:
    oci, azure = slurm_backends["oci-hpc"], slurm_backends["azure-hpc"]
    two_nodes = shell_spec("two", "sleep 1", nodes=2)
    assert place([oci, azure], two_nodes) == "slurm/oci-hpc"  # 16 $/node-h beats 24
    filler = shell_spec("filler", "sleep 60", nodes=7)
    oci.launch(request(oci, "filler", 1, filler))
    Events([oci]).wait(EventKind.STARTED, "filler", 1)
    assert pool_of(oci).free_nodes == 1
    assert place([oci, azure], two_nodes) == "slurm/azure-hpc"  # only one node left on oci


def test_a_gang_too_big_for_one_cluster_goes_to_the_other(slurm_backends: dict[str, SlurmBackend]) -> None:
    oci, azure = slurm_backends["oci-hpc"], slurm_backends["azure-hpc"]
    gang = shell_spec("gang", "true", nodes=6)  # azure-hpc has 4 nodes, oci-hpc 8
    assert place([azure, oci], gang) == "slurm/oci-hpc"
    with pytest.raises(CapacityError, match="6 nodes does not fit"):
        azure.launch(request(azure, "gang", 1, gang))
    # With a stale pool (capacity unknown) Slurm itself takes the job and parks it as hopeless:
    # the backend reports a capacity error and cancels it, so the loop can move it.
    stale = request(azure, "gang", 2, gang)
    stale.pool.capacity_nodes = None
    azure.launch(stale)
    event = Events([azure]).wait(EventKind.CAPACITY_ERROR, "gang", 2)
    assert "Partition" in event.detail  # PartitionConfig or PartitionNodeLimit
    wait_until(lambda: azure.active() == [], timeout=10, what="hopeless job cancelled")
    oci.launch(request(oci, "gang", 3, gang))
    Events([oci]).wait(EventKind.SUCCEEDED, "gang", 3)


def test_node_down_mid_job_is_a_preemption_and_attempt_2_resumes_on_the_other_cluster(
    slurm_backends: dict[str, SlurmBackend], slurm_clusters: dict[str, LocalSlurm], tmp_path: Path
) -> None:
    oci, azure = slurm_backends["oci-hpc"], slurm_backends["azure-hpc"]
    spec = train_spec("train", nodes=2, ckpt=tmp_path / "ckpt", steps=150, step_seconds=0.02)
    oci.launch(request(oci, "train", 1, spec))
    events = Events([oci, azure])
    started = events.wait(EventKind.STARTED, "train", 1)
    wait_until(lambda: (tmp_path / "ckpt" / "checkpoint.npz").exists(), what="first checkpoint")
    oci_hpc = slurm_clusters["oci-hpc"]
    nodelist = started.detail.rsplit(" ", 1)[-1]  # "running on ocihpc[01-02]"
    node = oci_hpc.command("scontrol", "show", "hostnames", nodelist).split()[-1]
    oci_hpc.command("scontrol", "update", f"nodename={node}", "state=down", "reason=test")
    lost = events.wait(EventKind.PREEMPTED, "train", 1)
    assert "node failure" in lost.detail
    oci.stop("train", 1, grace_seconds=2)  # what the control loop does on PREEMPTED
    azure.launch(request(azure, "train", 2, spec))
    events.wait(EventKind.SUCCEEDED, "train", 2, timeout=40)
    log = node_log(azure, "train", 2, 0)
    assert "job=train attempt=2 rank=0/2" in log
    assert "resumed from checkpoint at step" in log
    assert reference_result(tmp_path / "ref", steps=150) in log


def test_a_lost_cluster_reports_provider_down_and_the_job_resumes_on_the_other(
    slurm_backends: dict[str, SlurmBackend], slurm_clusters: dict[str, LocalSlurm], tmp_path: Path
) -> None:
    oci, azure = slurm_backends["oci-hpc"], slurm_backends["azure-hpc"]
    # Attempt 1 runs slowly, so it still runs on azure's nodes when azure is back (the step time does not
    # change the trainer's result). A job that ended while slurmctld was away stays COMPLETING there.
    slow = train_spec("survivor", nodes=2, ckpt=tmp_path / "ckpt", steps=150, step_seconds=0.2)
    spec = train_spec("survivor", nodes=2, ckpt=tmp_path / "ckpt", steps=150, step_seconds=0.02)
    azure.launch(request(azure, "survivor", 1, slow))
    events = Events([oci, azure])
    events.wait(EventKind.STARTED, "survivor", 1)
    started = time.time()
    wait_until(lambda: (tmp_path / "ckpt" / "checkpoint.npz").exists(), what="first checkpoint")
    slurm_clusters["azure-hpc"].kill_controller(saved_after=started)
    down = events.wait(EventKind.PROVIDER_DOWN, "survivor", 1, timeout=20)
    assert "azure-hpc unreachable" in down.detail
    (pool,) = azure.pools()
    assert pool.health is Health.DOWN
    with pytest.raises(ProviderDown):
        azure.launch(request(azure, "other", 1, shell_spec("other", "true")))
    azure.stop("survivor", 1, grace_seconds=2)  # the loop stops it: remembered for when azure is back
    oci.launch(request(oci, "survivor", 2, spec))
    events.wait(EventKind.SUCCEEDED, "survivor", 2, timeout=40)
    log = node_log(oci, "survivor", 2, 0)
    assert "resumed from checkpoint at step" in log
    assert reference_result(tmp_path / "ref", steps=150) in log
    # The cluster comes back with the old attempt still queued or running: it is cancelled, not resumed.
    slurm_clusters["azure-hpc"].start()

    def old_attempt_gone() -> bool:
        events.poll()
        return azure.reachable and azure.active() == [] and slurm_clusters["azure-hpc"].idle()

    wait_until(old_attempt_gone, timeout=30, what="old attempt cancelled after the cluster came back")
    assert events.kinds("survivor").count((EventKind.PROVIDER_DOWN, 1)) == 1
