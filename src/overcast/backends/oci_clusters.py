"""Compute clusters: the RDMA network group of a multi-node OCI gang.

A gang of N > 1 nodes of an RDMA shape (``RDMA_SHAPES``) gets a compute cluster of its own, created in
the gang's availability domain before its first instance; each rank's ``launch_instance`` names it
(``compute_cluster_id``), so the nodes share one RDMA fabric. The cluster carries the gang's freeform tags
(backend, job, attempt, pool, nodes) and the display name ``overcast-<job>-<attempt>``:

- **Idempotent.** A second launch of the same attempt (a replay, or after a crash between creating the
  cluster and launching) finds the cluster by name and tags; the create call carries an
  ``opc-retry-token`` derived from the gang, so a retry whose reply was lost, or a listing that does not
  show the cluster yet, does not make a second one.
- **Deleted once the gang's instances are gone.** OCI refuses to delete a cluster that still has
  instances (they terminate in minutes on BM shapes), so deletion is the poll's: ``sweep`` lists our
  clusters and deletes every one whose gang has no instance left that is not TERMINATED, including a
  cluster whose gang never got an instance (a crash after the create) or is no longer listed at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import oci
from oci.core import models

from overcast.backends.base import LaunchRequest, ProviderDown
from overcast.backends.cloud_gangs import gang_key, head_of
from overcast.backends.oci_client import TAG, OciError, OciSettings, call, list_all

# The shapes OCI builds RDMA cluster networks / compute clusters for (of the catalog's: the 8-GPU A100,
# H100 and H200 bare-metal shapes). Others (VM.GPU.*, BM.GPU.A10.4, L40S, ...) have no RDMA fabric and
# launch plain, as before.
RDMA_SHAPES = frozenset(
    {
        "BM.GPU.A100-v2.8",
        "BM.GPU.B4.8",
        "BM.GPU4.8",
        "BM.GPU.H100.8",
        "BM.GPU.H200.8",
        "BM.GPU.B200.8",
        "BM.GPU.MI300X.8",
        "BM.HPC2.36",
        "BM.Optimized3.36",
    }
)
ACTIVE = "ACTIVE"
# DeleteComputeCluster: one try. The client's strategy retries 409 IncorrectState (OCI's answer while the
# cluster has instances) for up to 20 s, inside the poll; the next sweep tries again instead.
DELETE_RETRY = oci.retry.NoneRetryStrategy()


def wanted(settings: OciSettings, shape: str, nodes: int) -> bool:
    """Whether a gang of ``nodes`` instances of ``shape`` launches into a compute cluster."""
    return settings.compute_clusters and nodes > 1 and shape in RDMA_SHAPES


def cluster_name(job_id: str, attempt: int) -> str:
    return f"overcast-{job_id}-{attempt}"


def ours(compute: Any, settings: OciSettings, **filters: Any) -> list[Any]:
    """Our ACTIVE compute clusters of the compartment (deleted ones stay listed a while)."""
    found = list_all(compute, "list_compute_clusters", settings.compartment_id, **filters)
    return [
        c
        for c in found
        if c.lifecycle_state == ACTIVE and (c.freeform_tags or {}).get(TAG + "backend") == settings.owner
    ]


def key_of(cluster: Any) -> str | None:
    """The gang key of one of our clusters, from its tags (None: not tagged as a gang's)."""
    head = head_of(dict(cluster.freeform_tags or {}), TAG)
    return head.key if head is not None else None


def ensure(compute: Any, settings: OciSettings, request: LaunchRequest, pool_id: str, ad: str) -> str:
    """The id of the gang's cluster in ``ad``: the one that exists, else a new one."""
    name = cluster_name(request.job_id, request.attempt)
    key = gang_key(request.job_id, request.attempt)
    for cluster in ours(compute, settings, availability_domain=ad, display_name=name):
        if key_of(cluster) == key:
            return str(cluster.id)
    tags = {
        TAG + "backend": settings.owner,
        TAG + "job": request.job_id,
        TAG + "attempt": str(request.attempt),
        TAG + "pool": pool_id,
        TAG + "nodes": str(request.num_nodes),
    }
    details = models.CreateComputeClusterDetails(
        availability_domain=ad, compartment_id=settings.compartment_id, display_name=name, freeform_tags=tags
    )
    token = _retry_token(settings.owner, request.job_id, request.attempt)
    return str(call(compute, "create_compute_cluster", details, opc_retry_token=token).data.id)


def delete(compute: Any, cluster_id: str) -> bool:
    """Delete a cluster: True once it is gone, False while OCI refuses (instances still in it: 409 or
    400) or cannot be reached; the next sweep tries again."""
    try:
        call(compute, "delete_compute_cluster", cluster_id, retry_strategy=DELETE_RETRY)
    except OciError as exc:
        return exc.status == 404  # deleted already
    except ProviderDown:
        return False
    return True


def sweep(compute: Any, settings: OciSettings, busy: Iterable[str]) -> bool:
    """Delete our clusters whose gang (by key) is not in ``busy`` (the gangs with an instance that is
    not TERMINATED). Returns whether a cluster is left that should have gone (try again later)."""
    try:
        clusters = ours(compute, settings)
    except (OciError, ProviderDown):
        return True
    keep = set(busy)
    left = False
    for cluster in clusters:
        if key_of(cluster) not in keep:
            left |= not delete(compute, cluster.id)
    return left


def _retry_token(backend: str, job_id: str, attempt: int) -> str:
    """OCI's idempotency key (at most 64 characters), one per (backend, job, attempt)."""
    return hashlib.sha256(f"{backend}/{job_id}/{attempt}/compute-cluster".encode()).hexdigest()[:64]
