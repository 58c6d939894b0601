"""Backends from a fleet file: each ``local:`` cluster becomes a LocalBackend with one pool."""

from __future__ import annotations

from pathlib import Path

from overcast.backends.base import Backend
from overcast.backends.local import LocalBackend, LocalCluster
from overcast.catalog.fleet import Cluster, Fleet
from overcast.placement.pool import Purchase


def local_cluster(cluster: Cluster) -> LocalCluster:
    return LocalCluster(
        name=cluster.name,
        nodes=cluster.nodes,
        gpus_per_node=cluster.gpus_per_node,
        accelerator=cluster.accelerator,
        price_per_node_hour=cluster.node_price,
        purchase=Purchase(cluster.purchase),
        region=cluster.region or "local",
        provider=cluster.provider,
    )


def backends_from_fleet(fleet: Fleet, home: Path) -> list[Backend]:
    """The backends this process can run jobs on: every ``local:`` and ``slurm:`` cluster of the fleet.
    Public-cloud pools (catalog offers, reservations) have no launching backend here yet."""
    backends: list[Backend] = []
    for cluster in fleet.clusters:
        if cluster.local is not None:
            backends.append(LocalBackend(local_cluster(cluster), home=cluster.local.home or home))
        elif cluster.slurm is not None:
            from overcast.backends.slurm import SlurmBackend
            from overcast.backends.slurm_config import slurm_cluster_from_fleet

            backends.append(SlurmBackend(slurm_cluster_from_fleet(cluster, home)))
    return backends
