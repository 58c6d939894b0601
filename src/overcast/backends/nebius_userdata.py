"""What one rank of a gang is on Nebius: its ``CreateInstanceRequest`` (labels, platform/preset, boot disk,
network interface, GPU cluster, preemptible for spot, service account) and its cloud-init user-data (a
bash script: the account's bootstrap, the job's environment and script, then the node agent).

Each rank gets its own script only in ``--instance-name``: the agent finds its own instance by name (no
metadata service needed), and gets its credentials from the instance's service account through the
token endpoint (``--token-endpoint``), so no key is ever written to the node.
"""

from __future__ import annotations

from typing import Any

from overcast.backends.base import JobRejected, LaunchRequest
from overcast.backends.cloud_agent import agent_command
from overcast.backends.nebius_client import TAG, NebiusSettings, label_value, split_type
from overcast.backends.nebius_gangs import instance_name
from overcast.backends.node_boot import boot_script
from overcast.placement.pool import Pool, Purchase

USER_DATA_LIMIT = 32_768  # cloud-init user-data kept small: it travels in every Get and List of the instance


def user_data(settings: NebiusSettings, request: LaunchRequest, name: str) -> str:
    """The script (plain text)."""
    first = ["--project", settings.project_id, "--instance-name", name,
             "--token-endpoint", settings.token_endpoint]  # fmt: skip
    if settings.endpoint:
        first += ["--api", settings.endpoint] + (["--insecure", "1"] if settings.insecure else [])
    module = "overcast.backends.nebius_agent"
    agent = agent_command(
        settings.python, module, request, settings.agent_poll_seconds, first, [], settings.logs_url
    )
    text = boot_script(request, settings.bootstrap, agent)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise JobRejected(
            f"user-data is {len(text.encode())} bytes, overcast sends at most {USER_DATA_LIMIT}"
        )
    return text


def create_request(
    settings: NebiusSettings, request: LaunchRequest, pool: Pool, rank: int, cluster_id: str
) -> Any:
    """The ``CreateInstanceRequest`` of one rank."""
    from nebius.api.nebius.common.v1 import ResourceMetadata
    from nebius.api.nebius.compute.v1 import (
        AttachedDiskSpec,
        CreateInstanceRequest,
        DiskSpec,
        InstanceGpuClusterSpec,
        InstanceSpec,
        ManagedDisk,
        NetworkInterfaceSpec,
        PreemptibleSpec,
        ResourcesSpec,
        SourceImageFamily,
    )

    name = instance_name(settings.owner, request.job_id, request.attempt, rank)
    platform, preset = split_type(pool.instance_type)
    labels = {
        TAG + "backend": label_value(settings.owner),
        TAG + "job": request.job_id,
        TAG + "attempt": str(request.attempt),
        TAG + "nodes": str(request.num_nodes),
        TAG + "rank": str(rank),
    }
    disk = DiskSpec(size_gibibytes=settings.disk_size_gb, type=DiskSpec.DiskType.NETWORK_SSD,
                    source_image_family=SourceImageFamily(image_family=settings.image_family))  # fmt: skip
    spec = InstanceSpec(
        resources=ResourcesSpec(platform=platform, preset=preset),
        boot_disk=AttachedDiskSpec(attach_mode=AttachedDiskSpec.AttachMode.READ_WRITE,
                                   managed_disk=ManagedDisk(name=f"{name}-boot", spec=disk)),
        network_interfaces=[NetworkInterfaceSpec(name="eth0", subnet_id=settings.subnet_id)],
        cloud_init_user_data=user_data(settings, request, name),
        service_account_id=settings.service_account_id,
    )  # fmt: skip
    if cluster_id:
        spec.gpu_cluster = InstanceGpuClusterSpec(id=cluster_id)
    if pool.purchase is Purchase.SPOT:  # Nebius stops a preempted instance: the agent's labels survive
        spec.preemptible = PreemptibleSpec(on_preemption=PreemptibleSpec.PreemptionPolicy.STOP)
    meta = ResourceMetadata(parent_id=settings.project_id, name=name, labels=labels)
    return CreateInstanceRequest(metadata=meta, spec=spec)
