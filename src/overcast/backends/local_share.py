"""One local provider's nodes shared by the job loop and the services under ``overcast up``.

A backend's ``poll()`` hands each event out once and cleans up what it reported, so the two sides cannot
poll one backend object. Each gets its own object over the same folder instead: both count every launch
there as used nodes (``pools()``, so the scheduler and ``overcast pools`` see replicas, and the replica
plan sees jobs) and pick nodes under one file lock (``launch()``: a node is never given twice, whichever
side asks), but each reports and cleans up only its own launches (``poll()``, ``active()``), so neither
side's reconcile or adoption ever takes the other's processes for orphans.
"""

from __future__ import annotations

from overcast.backends.base import Backend, is_replica_launch
from overcast.backends.local import LocalBackend


def is_job_launch(job_id: str) -> bool:
    return not is_replica_launch(job_id)


def share_nodes(backend: LocalBackend) -> tuple[LocalBackend, LocalBackend]:
    """(the job loop's, the services') backends over ``backend``'s nodes: its cluster, home, head address."""
    cluster, home, head = backend.cluster, backend.home, backend.head_addr
    jobs = LocalBackend(cluster, home=home, head_addr=head, owns=is_job_launch)
    return jobs, LocalBackend(cluster, home=home, head_addr=head, owns=is_replica_launch)


def split_for_services(backends: list[Backend]) -> tuple[list[Backend], list[LocalBackend]]:
    """The job loop's backends (each local one replaced by its jobs' side) and the services' (the local
    ones' replicas' sides: a replica is reached at 127.0.0.1:<port>, so one on a cloud VM or a cluster
    would bill and never be ready)."""
    jobs: list[Backend] = []
    services: list[LocalBackend] = []
    for backend in backends:
        if isinstance(backend, LocalBackend):
            backend, replicas = share_nodes(backend)
            services.append(replicas)
        jobs.append(backend)
    return jobs, services
