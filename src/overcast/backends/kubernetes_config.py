"""Settings of one Kubernetes cluster overcast may use, and how a fleet file's ``kubernetes:`` cluster
maps to them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from overcast.catalog.fleet import Cluster as FleetCluster
from overcast.placement.pool import Purchase

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class KubeCluster:
    """One Kubernetes cluster (one namespace of it): where its API is, its size and internal price."""

    name: str  # the fleet's cluster name; the backend is "kubernetes:<name>"
    api: str  # http(s)://host:port, or a kubeconfig context name
    namespace: str = "default"
    nodes: int = 1  # the fleet's size; the node list (when readable) can only lower it
    gpus_per_node: int = 0
    accelerator: str = ""
    price_per_node_hour: float = 0.0
    purchase: Purchase = Purchase.RESERVED
    provider: str | None = None  # default: name
    region: str | None = None  # default: name
    kubeconfig: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    image: str = "python:3.12-slim"
    node_selector: tuple[tuple[str, str], ...] = ()
    service_account: str | None = None
    volume_claim: str | None = None
    mount_path: str = "/overcast"
    schedule_timeout_s: float = 300.0  # a gang with a pod still unscheduled by then: CAPACITY_ERROR
    start_timeout_s: float = 1800.0  # all scheduled but not all running by then (image pulls): same
    job_prefix: str = "ovc"  # Job names and the owner label: separates our Jobs from everyone else's
    scope: str = ""  # the overcast home's ownership scope: part of the owner label (see owner())
    logs_dir: str | None = None  # pod logs are copied to <logs_dir>/<job>/<attempt>/node-<rank>.log
    termination_grace_s: int = 30  # the pods' default grace (GC deletions); stop() passes its own
    request_timeout_s: float = 10.0  # per API call
    down_retry_s: float = 5.0  # after a failed call, treat the API as down this long
    lost_after_s: float = 60.0  # unreachable this long: its jobs are lost (PROVIDER_DOWN)

    def __post_init__(self) -> None:
        if not _DNS_LABEL.match(self.namespace):
            raise ValueError(
                f"Kubernetes cluster {self.name}: namespace {self.namespace!r} is not a DNS label"
            )
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?", self.job_prefix):
            raise ValueError(f"job_prefix {self.job_prefix!r}: 1-10 lower-case letters, digits, '-'")
        if self.nodes <= 0 or self.gpus_per_node < 0 or self.price_per_node_hour < 0:
            raise ValueError(f"Kubernetes cluster {self.name}: nodes > 0, gpus and price >= 0")

    @property
    def is_url(self) -> bool:
        return self.api.startswith(("http://", "https://"))


def kube_cluster_from_fleet(cluster: FleetCluster, home: Path, scope: str = "") -> KubeCluster:
    """A fleet file's ``kubernetes:`` cluster as the backend's settings; pod logs are copied where the API
    serves node logs ($OVERCAST_HOME/logs/<job>/<attempt>/node-<rank>.log). ``scope``: the home's
    ownership scope (control/setup.py's ``_scope``)."""
    k = cluster.kubernetes
    if k is None:
        raise ValueError(f"cluster {cluster.name} is not a Kubernetes cluster")

    def path(p: Path | None) -> str | None:
        return str(p.expanduser()) if p is not None else None

    return KubeCluster(
        name=cluster.name,
        api=k.api,
        namespace=k.namespace,
        nodes=cluster.nodes,
        gpus_per_node=cluster.gpus_per_node,
        accelerator=cluster.accelerator,
        price_per_node_hour=cluster.node_price,
        purchase=Purchase(cluster.purchase),
        provider=cluster.provider,
        region=cluster.region,
        kubeconfig=path(k.kubeconfig),
        token_file=path(k.token_file),
        ca_file=path(k.ca_file),
        image=k.image,
        node_selector=tuple(sorted(k.node_selector.items())),
        service_account=k.service_account,
        volume_claim=k.volume_claim,
        mount_path=k.mount_path,
        schedule_timeout_s=k.schedule_timeout_s,
        start_timeout_s=k.start_timeout_s,
        job_prefix=k.job_prefix,
        scope=scope,
        logs_dir=str(home / "logs"),
    )
