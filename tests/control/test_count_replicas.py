"""The store's view of a pool's use: replicas' open launch records (the job loop's snapshot) and live jobs
(the services' replica plan), on the pools replicas share with jobs: local providers and Slurm clusters. A
Slurm pool's use is sinfo's plus what overcast's started jobs there do not account for (queued, or claimed
and not yet submitted)."""

from __future__ import annotations

import pytest

from overcast.control.snapshot import count_replicas, hold_stored
from overcast.placement.pool import Pool, Purchase
from overcast.scheduler.snapshot import RunningJob
from overcast.serve.shared import SharedBackend
from overcast.store import JobState, Store
from overcast.store.records import LaunchTerms
from tests.slurm.helpers import shell_spec

TERMS = LaunchTerms("c1", "reserved", 1, 1, "H100", 1.0)


def pool(pool_id: str, backend: str, labels: dict[str, str], used: int = 0) -> Pool:
    return Pool(pool_id, "p", "r", None, "t", "H100", 1, Purchase.RESERVED, 1.0, capacity_nodes=2,
                used_nodes=used, backend=backend, labels=labels)  # fmt: skip


def slurm_pool(used: int = 0, capacity: int = 2) -> Pool:
    p = pool("slurm/c1", "slurm:c1", {"cluster": "c1"}, used)
    p.capacity_nodes = capacity
    return p


@pytest.mark.parametrize("local_too", [False, True])
def test_a_queued_replica_on_a_slurm_pool_holds_its_node(store_url: str, local_too: bool) -> None:
    store = Store(store_url)
    try:
        slurm = slurm_pool()
        pools = [slurm] + ([pool("local/a", "local:a", {"local": "true"})] if local_too else [])
        store.record_launch("svc.llm.r0", 1, slurm.id, slurm.backend, "", team="default", terms=TERMS)
        count_replicas(store, pools, [], [])
        assert slurm.used_nodes == 1  # before: 0 unless the fleet also had a local pool
        job = RunningJob("j1", shell_spec("j", "true"), slurm.id, 1, 1, 0.0, None)
        count_replicas(store, pools, [job], [])
        assert slurm.used_nodes == 2  # a job and a replica together
        count_replicas(store, pools, [job, job], [])
        assert slurm.used_nodes == 2  # never more than it holds
    finally:
        store.close()


def test_cloud_pools_are_left_alone(store_url: str) -> None:
    store = Store(store_url)
    try:
        cloud = pool("aws/x", "aws:main", {})
        store.record_launch("svc.llm.r0", 1, cloud.id, cloud.backend, "", team="default", terms=TERMS)
        count_replicas(store, [cloud], [], [])
        assert cloud.used_nodes == 0
    finally:
        store.close()


def test_the_replica_plan_sees_a_slurm_pools_claimed_jobs_and_queued_replicas(store_url: str) -> None:
    store = Store(store_url)
    try:
        slurm, local = slurm_pool(), pool("local/a", "local:a", {"local": "true"})
        store.record_launch("svc.other.r0", 1, slurm.id, slurm.backend, "", team="default", terms=TERMS)
        store.record_launch("svc.other.r1", 1, local.id, local.backend, "", team="default", terms=TERMS)
        hold_stored(store, [slurm, local], [])
        assert (slurm.used_nodes, local.used_nodes) == (1, 0)  # a local provider counts its launches itself
        job = store.submit("default", shell_spec("gang", "sleep 1"))
        # claimed by the job loop, not yet submitted to Slurm: sinfo does not count it
        store.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id=slurm.id, nodes=1)
        slurm.used_nodes = 0
        hold_stored(store, [slurm, local], [])
        assert slurm.used_nodes == 2  # before: the replica plan read sinfo only
    finally:
        store.close()


class Started:
    """A Slurm backend's ``started_nodes``: how many of a pool's nodes overcast's started jobs hold."""

    def __init__(self, **by_pool: int) -> None:
        self.by_pool = {f"slurm/{k}": v for k, v in by_pool.items()}

    def started_nodes(self) -> dict[str, int]:
        return self.by_pool


def test_queued_work_on_a_shared_slurm_cluster_adds_to_other_users_allocation(store_url: str) -> None:
    store = Store(store_url)
    try:
        slurm = slurm_pool(used=6, capacity=10)  # sinfo: 6 nodes allocated to other users
        for i in range(3):  # three replicas submitted, still queued by Slurm (not in sinfo's count)
            store.record_launch(f"svc.llm.r{i}", 1, slurm.id, slurm.backend, "", team="default", terms=TERMS)
        hold_stored(store, [slurm], [Started(c1=0)])
        assert slurm.used_nodes == 9  # before: max(6, 3) = 6, so 4 looked free where 1 is
        slurm.used_nodes = 6
        count_replicas(store, [slurm], [], [Started(c1=0)])
        assert slurm.used_nodes == 9  # the job loop's snapshot alike
    finally:
        store.close()


def test_a_started_job_or_replica_is_not_counted_twice(store_url: str) -> None:
    store = Store(store_url)
    try:
        slurm = slurm_pool(used=3, capacity=10)  # sinfo: 1 node of other users, 2 of overcast's
        store.record_launch("svc.llm.r0", 1, slurm.id, slurm.backend, "", team="default", terms=TERMS)
        store.record_launch("svc.llm.r1", 1, slurm.id, slurm.backend, "", team="default", terms=TERMS)
        running = store.submit("default", shell_spec("running", "sleep 1"))
        store.transition(
            running.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id=slurm.id, nodes=1
        )
        claimed = store.submit("default", shell_spec("claimed", "sleep 1", nodes=2))
        store.transition(
            claimed.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id=slurm.id, nodes=2
        )
        # started: replica r0 and job "running" (2 nodes, in sinfo); r1 queued, "claimed" not submitted
        hold_stored(store, [slurm], [Started(c1=2)])
        assert slurm.used_nodes == 3 + 1 + 2
        slurm.used_nodes = 3
        jobs = [RunningJob(j.id, j.spec, slurm.id, n, 1, 0.0, None) for j, n in ((running, 1), (claimed, 2))]
        count_replicas(store, [slurm], jobs, [Started(c1=2)])
        assert slurm.used_nodes == 6
        slurm.used_nodes = 9
        hold_stored(store, [slurm], [Started(c1=2)])
        assert slurm.used_nodes == 10  # never more than it holds
    finally:
        store.close()


def test_the_services_view_of_a_slurm_backend_says_what_it_started(store_url: str) -> None:
    """Each service's controller reads the backend through a SharedBackend view: the view must pass on
    ``started_nodes``, or a started replica counts twice (sinfo's and the store's) for the services."""
    store = Store(store_url)
    try:
        slurm = slurm_pool(used=2, capacity=10)  # sinfo: 1 node of another user's, replica r0's
        store.record_launch("svc.llm.r0", 1, slurm.id, slurm.backend, "", team="default", terms=TERMS)
        backend = Started(c1=1)
        backend.name = "slurm:c1"  # type: ignore[attr-defined]
        hold_stored(store, [slurm], [SharedBackend(backend).view("llm")])  # type: ignore[arg-type]
        assert slurm.used_nodes == 2  # before: 3 (the view had no started_nodes)
    finally:
        store.close()


def test_pool_holds_sums_per_pool_in_the_store(store_url: str) -> None:
    store = Store(store_url)
    try:
        for name, nodes, pool_id in (("a", 2, "slurm/c1"), ("b", 3, "slurm/c1"), ("c", 1, "local/a")):
            job = store.submit("default", shell_spec(name, "true", nodes=nodes))
            store.transition(
                job.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id=pool_id, nodes=nodes
            )
        store.submit("default", shell_spec("pending", "true"))  # no pool yet
        store.record_launch("svc.llm.r0", 1, "slurm/c1", "slurm:c1", "", team="default", terms=TERMS)
        store.record_launch("j_other", 1, "slurm/c1", "slurm:c1", "", team="default", terms=TERMS)
        store.record_launch("svc.llm.r1", 1, "slurm/c1", "slurm:c1", "", team="default", terms=TERMS)
        store.end_launch("svc.llm.r1", 1, "succeeded")
        assert store.pool_holds([JobState.LAUNCHING], "svc.") == (
            {"slurm/c1": 5, "local/a": 1},
            {"slurm/c1": 1},
        )
        assert store.pool_holds([], "svc.")[0] == {}
    finally:
        store.close()
