"""A Kubernetes cluster's one pool: the fleet entry's node shape and price, its capacity lowered to the
nodes the API shows ready, schedulable and with enough GPUs (when overcast may list nodes at all).

The pool counts whole nodes, as every overcast pool does; a gang's pod asks for all the GPUs of its node
shape. Other tenants' pods are not counted (overcast may only see its namespace): when they hold nodes,
a gang waits, and the gang timeout turns that into a capacity error.
"""

from __future__ import annotations

from typing import Any

from overcast.backends.kubernetes_config import KubeCluster
from overcast.backends.kubernetes_manifest import GPU
from overcast.catalog.accelerators import memory_gib
from overcast.placement.pool import Pool


def _quantity(value: Any) -> int:
    """An integer resource quantity ("8", 8); anything else (e.g. "500m") as 0."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def node_usable(node: dict[str, Any], gpus_per_node: int) -> bool:
    spec, status = node.get("spec") or {}, node.get("status") or {}
    if spec.get("unschedulable"):
        return False
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return ready and _quantity((status.get("allocatable") or {}).get(GPU, 0)) >= gpus_per_node


def cluster_pool(cluster: KubeCluster, backend: str, nodes: list[dict[str, Any]] | None, used: int) -> Pool:
    capacity = cluster.nodes
    if nodes is not None:
        capacity = min(capacity, sum(1 for n in nodes if node_usable(n, cluster.gpus_per_node)))
    acc = cluster.accelerator if cluster.gpus_per_node else ""
    return Pool(
        id=f"kubernetes/{cluster.name}",
        provider=cluster.provider or cluster.name,
        region=cluster.region or cluster.name,
        zone=None,  # a cluster is one network: the pool itself
        instance_type=f"kubernetes-{cluster.gpus_per_node}x{acc}" if acc else "kubernetes-cpu",
        accelerator=acc,
        gpus_per_node=cluster.gpus_per_node,
        purchase=cluster.purchase,
        price_per_node_hour=cluster.price_per_node_hour,
        capacity_nodes=capacity,
        used_nodes=min(used, capacity),
        backend=backend,
        accelerator_memory_gib=memory_gib(acc) if acc else None,
        labels={"kubernetes": "true", "namespace": cluster.namespace},
    )
