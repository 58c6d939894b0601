"""Backends from a fleet file: each ``local:`` cluster becomes a LocalBackend with one pool, each
``slurm:`` cluster a SlurmBackend, each ``aws:`` account an AwsBackend (EC2, pools from the catalog)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from overcast.backends.base import Backend
from overcast.backends.local import LocalBackend, LocalCluster
from overcast.catalog.fleet import AwsAccount, AzureAccount, Cluster, Fleet, OciAccount
from overcast.placement.pool import Purchase
from overcast.store.engine import overcast_home


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


def aws_backend(account: AwsAccount, home: Path) -> Backend:
    from overcast.backends.aws import AwsBackend  # boto3 is only imported by fleets that use AWS
    from overcast.backends.aws_client import AwsSettings

    settings = AwsSettings(
        name=account.name,
        region=account.region,
        instance_types=tuple(account.instance_types),
        image_id=account.image_id,
        max_nodes=account.max_nodes,
        endpoint_url=account.endpoint_url,
        purchases=tuple(account.purchases),
        subnet_ids=tuple(sorted(account.subnet_ids.items())),
        security_group_ids=tuple(account.security_group_ids),
        iam_instance_profile=account.iam_instance_profile,
        key_name=account.key_name,
        python=account.python,
        bootstrap=account.bootstrap,
        scope=_scope(home),
    )
    return AwsBackend(settings, home=home)


def oci_backend(account: OciAccount, home: Path) -> Backend:
    from overcast.backends.oci import OciBackend  # the oci SDK is only imported by fleets that use OCI
    from overcast.backends.oci_client import OciSettings

    settings = OciSettings(
        name=account.name,
        region=account.region,
        compartment_id=account.compartment_id,
        shapes=tuple(account.shapes),
        image_id=account.image_id,
        subnet_id=account.subnet_id,
        max_nodes=account.max_nodes,
        endpoint=account.endpoint,
        config_file=account.config_file,
        profile=account.profile,
        ssh_authorized_keys=account.ssh_authorized_keys,
        python=account.python,
        bootstrap=account.bootstrap,
        scope=_scope(home),
    )
    return OciBackend(settings, home=home)


def azure_backend(account: AzureAccount, home: Path) -> Backend:
    from overcast.backends.azure import AzureBackend  # the Azure SDK is only imported by fleets that use it
    from overcast.backends.azure_client import AzureSettings

    settings = AzureSettings(
        name=account.name,
        subscription_id=account.subscription_id,
        resource_group=account.resource_group,
        region=account.region,
        vm_sizes=tuple(account.vm_sizes),
        image=account.image,
        subnet_id=account.subnet_id,
        identity_id=account.identity_id,
        zones=tuple(account.zones),
        max_nodes=account.max_nodes,
        endpoint=account.endpoint,
        purchases=tuple(account.purchases),
        admin_username=account.admin_username,
        ssh_public_key=account.ssh_public_key,
        python=account.python,
        bootstrap=account.bootstrap,
        scope=_scope(home),
    )
    return AzureBackend(settings, home=home)  # credentials: DefaultAzureCredential


def backends_from_fleet(fleet: Fleet, home: Path) -> list[Backend]:
    """The backends this process can run jobs on: every ``local:`` and ``slurm:`` cluster and every
    ``aws:`` account of the fleet. Other public clouds and reservations have no launching backend yet."""
    backends: list[Backend] = []
    for cluster in fleet.clusters:
        if cluster.local is not None:
            backends.append(LocalBackend(local_cluster(cluster), home=cluster.local.home or home))
        elif cluster.slurm is not None:
            from overcast.backends.slurm import SlurmBackend
            from overcast.backends.slurm_config import slurm_cluster_from_fleet

            backends.append(SlurmBackend(slurm_cluster_from_fleet(cluster, home)))
    backends += [aws_backend(account, home) for account in fleet.aws]
    backends += [oci_backend(account, home) for account in fleet.oci]
    backends += [azure_backend(account, home) for account in fleet.azure]
    return backends
