"""One provider's nodes shared by the job loop and the services under ``overcast up``.

A backend's ``poll()`` hands each event out once and cleans up what it reported, so the two sides cannot
poll one backend object. Each gets its own object over the same nodes instead, and each reports, adopts
and cleans up only its own launches (``poll()``, ``active()``), so neither side's reconcile or adoption
ever takes the other's for orphans.

- A local provider: both objects count every launch in its folder as used nodes (``pools()``, so the
  scheduler and ``overcast pools`` see replicas, and the replica plan sees jobs) and pick nodes under one
  file lock (``launch()``: a node is never given twice, whichever side asks).
- A Slurm cluster: a replica is a Slurm job of the same prefix; slurmctld counts its node as allocated
  for both sides (``sinfo``) and gives a node to one job at a time (``--exclusive``); what Slurm still
  queues holds no node, so each side also counts the store's records of the other's queued launches
  (``control/snapshot.count_replicas``, ``hold_stored``). A replica there is reached at its node's NodeAddr
  (``SlurmBackend.address``).

Other backends (clouds, Kubernetes) get no services: they cannot yet say where a replica runs.
"""

from __future__ import annotations

from overcast.backends.base import Backend, is_replica_launch
from overcast.backends.local import LocalBackend
from overcast.backends.slurm import SlurmBackend


def is_job_launch(job_id: str) -> bool:
    return not is_replica_launch(job_id)


def share_nodes(backend: LocalBackend) -> tuple[LocalBackend, LocalBackend]:
    """(the job loop's, the services') backends over ``backend``'s nodes: its cluster, home, head address."""
    cluster, home, head = backend.cluster, backend.home, backend.head_addr
    jobs = LocalBackend(cluster, home=home, head_addr=head, owns=is_job_launch)
    return jobs, LocalBackend(cluster, home=home, head_addr=head, owns=is_replica_launch)


def share_cluster(backend: SlurmBackend) -> tuple[SlurmBackend, SlurmBackend]:
    """(the job loop's, the services') backends over ``backend``'s Slurm cluster and job prefix."""
    clock = backend._clock
    jobs = SlurmBackend(backend.cluster, clock, owns=is_job_launch)
    return jobs, SlurmBackend(backend.cluster, clock, owns=is_replica_launch)


def split_for_services(backends: list[Backend]) -> tuple[list[Backend], list[Backend]]:
    """The job loop's backends (each local and Slurm one replaced by its jobs' side) and the services'
    (their replicas' sides). Other backends are the job loop's only."""
    jobs: list[Backend] = []
    services: list[Backend] = []
    for backend in backends:
        if isinstance(backend, LocalBackend):
            backend, replicas = share_nodes(backend)
            services.append(replicas)
        elif isinstance(backend, SlurmBackend):
            backend, cluster_replicas = share_cluster(backend)
            services.append(cluster_replicas)
        jobs.append(backend)
    return jobs, services
