"""How many of a Slurm pool's used nodes overcast's own started jobs hold (``started_nodes``): the part of
sinfo's count the store's records also count, so that only queued or unsubmitted work is added to it."""

from __future__ import annotations

from typing import Any

from overcast.backends.slurm import SlurmBackend, SlurmCluster
from overcast.backends.slurm_pools import expand_hostlist
from tests.slurm.helpers import MemoryQueue


class Cluster(MemoryQueue):
    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        super().__init__()
        self.nodes = nodes

    def sinfo_nodes(self) -> list[dict[str, Any]]:
        return [dict(n) for n in self.nodes]


def node(name: str, partition: str, state: str = "allocated") -> dict[str, Any]:
    return {"name": name, "state": state, "partitions": [partition], "gres": "gpu:h100:8"}


def job(slurm_id: int, name: str, state: str, nodes: str) -> dict[str, Any]:
    return {"job_id": slurm_id, "name": name, "job_state": state, "state_reason": "None", "exit_code": 0,
            "restart_cnt": 0, "submit_time": 0, "nodes": nodes}  # fmt: skip


def test_started_nodes_counts_either_sides_started_jobs_per_pool_not_queued_or_others() -> None:
    cluster = Cluster(
        [node(f"a{i:02d}", "a") for i in range(1, 5)] + [node("b1", "b"), node("b2", "b", "idle")]
    )
    cluster.jobs = [
        job(1, "ovc.1.j1", "RUNNING", "a[01-02]"),  # the job loop's
        job(2, "ovc.1.svc.llm.r0", "RUNNING", "b1"),  # a services' replica: the other side's, same prefix
        job(3, "ovc.1.j2", "PENDING", ""),  # queued: not in sinfo's count
        job(4, "someone", "RUNNING", "a03"),  # another user's
        job(5, "ovc.1.j0", "COMPLETED", "a04"),  # ended: its nodes are not overcast's any more
    ]
    backend = SlurmBackend(
        SlurmCluster("c", down_retry_s=0), owns=lambda job_id: not job_id.startswith("svc.")
    )
    backend.cli = cluster  # type: ignore[assignment]
    pools = {p.id: p for p in backend.pools()}
    assert {i: p.used_nodes for i, p in pools.items()} == {"slurm/c/a": 4, "slurm/c/b": 1}
    assert backend.started_nodes() == {"slurm/c/a": 0, "slurm/c/b": 0}  # no queue read yet
    backend.poll()
    assert backend.started_nodes() == {"slurm/c/a": 2, "slurm/c/b": 1}


def test_expand_hostlist() -> None:
    assert expand_hostlist("gpu[01-03,07],cpu1") == ["gpu01", "gpu02", "gpu03", "gpu07", "cpu1"]
    assert expand_hostlist("rack-[8-10]-ib") == ["rack-8-ib", "rack-9-ib", "rack-10-ib"]
    assert expand_hostlist("") == expand_hostlist("(null)") == []


def test_a_stopped_or_completing_job_is_not_counted_as_started() -> None:
    """Their store records have ended (or are ending): counted as started, they would cancel out queued
    work in the store's holds and the pool would look emptier than it is."""
    cluster = Cluster([node(f"a{i:02d}", "a") for i in range(1, 5)])
    cluster.jobs = [
        job(1, "ovc.1.j1", "RUNNING", "a01"),
        job(2, "ovc.1.j2", "RUNNING", "a02"),  # overcast stops it below; squeue still shows it running
        job(3, "ovc.1.j3", "COMPLETING", "a03"),
    ]
    backend = SlurmBackend(SlurmCluster("c", down_retry_s=0))
    backend.cli = cluster  # type: ignore[assignment]
    backend.pools()
    backend.poll()
    backend.stop("j2", 1, 0)
    for record in cluster.jobs:  # the cancel not seen yet by the next squeue
        if record["job_id"] == 2:
            record["job_state"] = "RUNNING"
    backend.poll()
    assert backend.started_nodes() == {"slurm/c": 1}  # before: 3 (j2 and j3 too)
