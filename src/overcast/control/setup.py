"""Backends from a fleet file: each ``local:`` cluster becomes a LocalBackend with one pool, each
``slurm:`` cluster a SlurmBackend, each ``kubernetes:`` cluster a KubernetesBackend, each ``aws:`` /
``azure:`` / ``oci:`` / ``gcp:`` / ``lambda:`` / ``nebius:`` account a cloud backend (pools from the
catalog)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, TypeVar

from overcast.backends.base import Backend
from overcast.backends.local import LocalBackend, LocalCluster
from overcast.catalog.fleet import (
    AwsAccount,
    AzureAccount,
    Cluster,
    Fleet,
    GcpAccount,
    LambdaAccount,
    NebiusAccount,
    OciAccount,
)
from overcast.placement.pool import Purchase
from overcast.store.engine import overcast_home

T = TypeVar("T")


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


def _scope(home: Path) -> str:
    """ "" for $OVERCAST_HOME itself, "serve" for $OVERCAST_HOME/serve (the services' backends): the same
    on every host, so a loop that takes over on another machine finds the instances of the one it replaces."""
    try:
        rel = home.resolve().relative_to(overcast_home().resolve()).as_posix()
        return "" if rel == "." else rel
    except ValueError:  # a home elsewhere (tests, a second deployment): its own scope
        return hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]


def _settings(cls: type[T], account: Any, home: Path) -> T:
    """A cloud backend's settings from its fleet entry: the fields of the same name (lists as tuples,
    mappings as sorted pairs, so the settings stay hashable), plus the ownership scope of ``home``."""
    values: dict[str, Any] = {"scope": _scope(home)}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name == "scope" or not hasattr(account, field.name):
            continue
        value = getattr(account, field.name)
        if isinstance(value, list):
            value = tuple(value)
        elif isinstance(value, dict):
            value = tuple(sorted(value.items()))
        values[field.name] = value
    return cls(**values)


def aws_backend(account: AwsAccount, home: Path) -> Backend:
    from overcast.backends.aws import AwsBackend  # boto3 is only imported by fleets that use AWS
    from overcast.backends.aws_client import AwsSettings

    return AwsBackend(_settings(AwsSettings, account, home), home=home)


def oci_backend(account: OciAccount, home: Path) -> Backend:
    from overcast.backends.oci import OciBackend  # the oci SDK is only imported by fleets that use OCI
    from overcast.backends.oci_client import OciSettings

    return OciBackend(_settings(OciSettings, account, home), home=home)


def azure_backend(account: AzureAccount, home: Path) -> Backend:
    from overcast.backends.azure import AzureBackend  # the Azure SDK is only imported by fleets that use it
    from overcast.backends.azure_client import AzureSettings

    return AzureBackend(_settings(AzureSettings, account, home), home=home)  # DefaultAzureCredential


def gcp_backend(account: GcpAccount, home: Path) -> Backend:
    # google-cloud-compute is only imported by fleets that use GCP
    from overcast.backends.gcp import GcpBackend
    from overcast.backends.gcp_client import GcpSettings

    return GcpBackend(_settings(GcpSettings, account, home), home=home)  # key file or ADC


def lambda_backend(account: LambdaAccount, home: Path) -> Backend:
    from overcast.backends.lambda_client import LambdaSettings
    from overcast.backends.lambda_cloud import LambdaBackend

    return LambdaBackend(_settings(LambdaSettings, account, home), home=home)  # key from env or file


def nebius_backend(account: NebiusAccount, home: Path) -> Backend:
    # the nebius SDK is only imported by fleets that use Nebius
    from overcast.backends.nebius import NebiusBackend
    from overcast.backends.nebius_client import DEFAULT_TOKEN_ENDPOINT, NebiusSettings

    settings = _settings(NebiusSettings, account, home)
    if account.token_endpoint is None:  # the field is optional in the file: Nebius's own endpoint
        settings = dataclasses.replace(settings, token_endpoint=DEFAULT_TOKEN_ENDPOINT)
    return NebiusBackend(settings, home=home)  # the SDK's credentials, or credentials_file


def kubernetes_backend(cluster: Cluster, home: Path) -> Backend:
    # the kubernetes client is only imported by fleets that use Kubernetes
    from overcast.backends.kubernetes import KubernetesBackend, kube_cluster_from_fleet

    # the home's scope in the owner label: another deployment's Jobs in the namespace are not ours
    return KubernetesBackend(kube_cluster_from_fleet(cluster, home, scope=_scope(home)))


def local_backends(fleet: Fleet, home: Path, sub: str | None = None) -> list[LocalBackend]:
    """A LocalBackend for every ``local:`` cluster of the fleet; ``sub``: a folder of its own inside each
    cluster's home (``overcast serve FILE``'s replicas; under ``overcast up`` jobs and replicas share each
    cluster's folder through ``backends/local_share.py``)."""
    return [_local_backend(c, home, sub) for c in fleet.clusters if c.local is not None]


def _local_backend(cluster: Cluster, home: Path, sub: str | None = None) -> LocalBackend:
    assert cluster.local is not None
    base = cluster.local.home or home
    return LocalBackend(local_cluster(cluster), home=base / sub if sub else base)


def backends_from_fleet(fleet: Fleet, home: Path) -> list[Backend]:
    """The backends this process can run jobs on: every ``local:``, ``slurm:`` and ``kubernetes:``
    cluster and every ``aws:``, ``azure:``, ``oci:``, ``gcp:``, ``lambda:`` and ``nebius:`` account of the
    fleet. Other providers and reservations have no launching backend yet."""
    backends: list[Backend] = []
    for cluster in fleet.clusters:  # in the file's order
        if cluster.local is not None:
            backends.append(_local_backend(cluster, home))
        elif cluster.slurm is not None:
            from overcast.backends.slurm import SlurmBackend
            from overcast.backends.slurm_config import slurm_cluster_from_fleet

            backends.append(SlurmBackend(slurm_cluster_from_fleet(cluster, home)))
        elif cluster.kubernetes is not None:
            backends.append(kubernetes_backend(cluster, home))
    backends += [aws_backend(account, home) for account in fleet.aws]
    backends += [oci_backend(account, home) for account in fleet.oci]
    backends += [azure_backend(account, home) for account in fleet.azure]
    backends += [gcp_backend(account, home) for account in fleet.gcp]
    backends += [lambda_backend(account, home) for account in fleet.lambda_]
    backends += [nebius_backend(account, home) for account in fleet.nebius]
    return backends
