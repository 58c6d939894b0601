"""The store's view of a pool's use: replicas' open launch records (the job loop's snapshot) and live jobs
(the services' replica plan), on the pools replicas share with jobs: local providers and Slurm clusters."""

from __future__ import annotations

import pytest

from overcast.control.snapshot import count_replicas, hold_stored
from overcast.placement.pool import Pool, Purchase
from overcast.scheduler.snapshot import RunningJob
from overcast.store import JobState, Store
from overcast.store.records import LaunchTerms
from tests.slurm.helpers import shell_spec

TERMS = LaunchTerms("c1", "reserved", 1, 1, "H100", 1.0)


def pool(pool_id: str, backend: str, labels: dict[str, str], used: int = 0) -> Pool:
    return Pool(pool_id, "p", "r", None, "t", "H100", 1, Purchase.RESERVED, 1.0, capacity_nodes=2,
                used_nodes=used, backend=backend, labels=labels)  # fmt: skip


def slurm_pool(used: int = 0) -> Pool:
    return pool("slurm/c1", "slurm:c1", {"cluster": "c1"}, used)


@pytest.mark.parametrize("local_too", [False, True])
def test_a_queued_replica_on_a_slurm_pool_holds_its_node(store_url: str, local_too: bool) -> None:
    store = Store(store_url)
    try:
        slurm = slurm_pool()
        pools = [slurm] + ([pool("local/a", "local:a", {"local": "true"})] if local_too else [])
        store.record_launch("svc.llm.r0", 1, slurm.id, slurm.backend, "", team="default", terms=TERMS)
        count_replicas(store, pools, [])
        assert slurm.used_nodes == 1  # before: 0 unless the fleet also had a local pool
        job = RunningJob("j1", shell_spec("j", "true"), slurm.id, 1, 1, 0.0, None)
        count_replicas(store, pools, [job])
        assert slurm.used_nodes == 2  # a job and a replica together
        count_replicas(store, pools, [job, job])
        assert slurm.used_nodes == 2  # never more than it holds
    finally:
        store.close()


def test_cloud_pools_are_left_alone(store_url: str) -> None:
    store = Store(store_url)
    try:
        cloud = pool("aws/x", "aws:main", {})
        store.record_launch("svc.llm.r0", 1, cloud.id, cloud.backend, "", team="default", terms=TERMS)
        count_replicas(store, [cloud], [])
        assert cloud.used_nodes == 0
    finally:
        store.close()


def test_the_replica_plan_sees_a_slurm_pools_claimed_jobs_and_queued_replicas(store_url: str) -> None:
    store = Store(store_url)
    try:
        slurm, local = slurm_pool(), pool("local/a", "local:a", {"local": "true"})
        store.record_launch("svc.other.r0", 1, slurm.id, slurm.backend, "", team="default", terms=TERMS)
        store.record_launch("svc.other.r1", 1, local.id, local.backend, "", team="default", terms=TERMS)
        hold_stored(store, [slurm, local])
        assert (slurm.used_nodes, local.used_nodes) == (1, 0)  # a local provider counts its launches itself
        job = store.submit("default", shell_spec("gang", "sleep 1"))
        # claimed by the job loop, not yet submitted to Slurm: sinfo does not count it
        store.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id=slurm.id, nodes=1)
        slurm.used_nodes = 0
        hold_stored(store, [slurm, local])
        assert slurm.used_nodes == 2  # before: the replica plan read sinfo only
    finally:
        store.close()
