"""What the GCP backend asks Compute Engine for: the bulkInsert of a gang (instance properties, one name
per rank, ``minCount = count``: all or nothing), its compact placement policy, and the startup script.

The catalog names N1 machines with attached GPUs ``n1-highmem-8+1xT4``: that is machine type
``n1-highmem-8`` with one ``nvidia-tesla-t4`` guest accelerator. A2/A3/G2 machine types carry their GPUs.
"""

from __future__ import annotations

import re
from typing import Any

from overcast.backends.base import JobRejected, LaunchRequest
from overcast.backends.cloud_agent import agent_command
from overcast.backends.gcp_client import GcpSettings, label_value
from overcast.backends.gcp_gangs import TAG, gang_name, instance_name
from overcast.backends.node_boot import boot_script
from overcast.placement.pool import Pool, Purchase

METADATA_VALUE_LIMIT = 256 * 1024  # GCP: one metadata value
ACCELERATOR_TYPES = {"T4": "nvidia-tesla-t4", "V100": "nvidia-tesla-v100", "P100": "nvidia-tesla-p100",
                     "P4": "nvidia-tesla-p4"}  # fmt: skip
_ATTACHED = re.compile(r"^(?P<machine>[a-z0-9-]+)\+(?P<count>\d+)x(?P<gpu>[A-Za-z0-9]+)$")


def machine(instance_type: str) -> tuple[str, list[dict[str, Any]]]:
    """(machine type, guest accelerators) of a catalog instance type."""
    m = _ATTACHED.fullmatch(instance_type)
    if m is None:
        return instance_type, []
    gpu = ACCELERATOR_TYPES.get(m["gpu"])
    if gpu is None:
        raise ValueError(f"no GCP accelerator type known for {m['gpu']!r} ({instance_type})")
    return m["machine"], [{"accelerator_type": gpu, "accelerator_count": int(m["count"])}]


def startup_script(settings: GcpSettings, request: LaunchRequest) -> str:
    """The ``startup-script`` metadata value: the boot script that hands over to ``gcp_agent``."""
    first = ["--project", settings.project]
    last = ["--endpoint", settings.endpoint] if settings.endpoint else []
    module = "overcast.backends.gcp_agent"
    agent = agent_command(
        settings.python, module, request, settings.agent_poll_seconds, first, last, settings.logs_url
    )
    text = boot_script(request, settings.bootstrap, agent)
    if len(text.encode()) > METADATA_VALUE_LIMIT:
        raise JobRejected(f"startup script is {len(text.encode())} bytes, a GCP metadata value takes 256 KiB")
    return text


def bulk_body(settings: GcpSettings, request: LaunchRequest, pool: Pool, policy: str | None) -> dict:
    """The BulkInsertInstanceResource (snake_case, as the SDK's proto-plus types take it)."""
    s, n = settings, request.num_nodes
    identity = {"backend": s.owner, "job": request.job_id, "attempt": str(request.attempt), "nodes": str(n)}
    labels = {TAG + key: label_value(value) for key, value in identity.items()}
    items = {TAG + key: value for key, value in identity.items()} | {TAG + "pool": pool.id}
    items["startup-script"] = startup_script(s, request)
    machine_type, accelerators = machine(pool.instance_type)
    scheduling: dict[str, Any] = {"on_host_maintenance": "TERMINATE", "automatic_restart": False}
    if pool.purchase is Purchase.SPOT:
        scheduling |= {"provisioning_model": "SPOT", "instance_termination_action": "DELETE"}
    nic: dict[str, Any] = (
        {"subnetwork": s.subnetwork} if s.subnetwork else {"network": "global/networks/default"}
    )
    properties: dict[str, Any] = {
        "machine_type": machine_type,
        "labels": labels,
        "metadata": {"items": [{"key": k, "value": v} for k, v in sorted(items.items())]},
        "scheduling": scheduling,
        "guest_accelerators": accelerators,
        "network_interfaces": [nic],  # no access config: no public IP
        "disks": [{"boot": True, "auto_delete": True,
                   "initialize_params": {"source_image": s.image, "disk_size_gb": s.disk_size_gb}}],
    }  # fmt: skip
    # without a service account the metadata server has no token for the agent; "default" is GCP's alias
    # for the project's default compute service account (IAM decides what the token may do)
    scopes = ["https://www.googleapis.com/auth/cloud-platform"]
    properties["service_accounts"] = [{"email": s.service_account or "default", "scopes": scopes}]
    if policy:
        properties["resource_policies"] = [policy]
    names = [instance_name(s.owner, request.job_id, request.attempt, r) for r in range(n)]
    return {
        "count": n,
        "min_count": n,  # all or nothing: GCP creates none unless it can create every one
        "per_instance_properties": {name: {"name": name} for name in names},
        "instance_properties": properties,
    }


def policy_body(settings: GcpSettings, request: LaunchRequest) -> dict:
    """The gang's compact placement policy (its instances on one network spine of the zone)."""
    return {
        "name": gang_name(settings.owner, request.job_id, request.attempt),
        "description": f"overcast {settings.owner} {request.job_id}/{request.attempt}",
        "group_placement_policy": {"collocation": "COLLOCATED", "vm_count": request.num_nodes},
    }
