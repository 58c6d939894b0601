"""What the Azure backend sends to ARM: VM and proximity placement group names, and a VM's JSON body.

ARM's PUT is idempotent by name, so every name derives from (backend, job, attempt[, rank]): a retried
create makes no second VM or group.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from overcast.backends.azure_client import AzureSettings
from overcast.backends.base import LaunchRequest
from overcast.placement.pool import Pool, Purchase


def gang_name(owner: str, job_id: str, attempt: int) -> str:
    """The gang's prefix (and its PPG's name): [a-z0-9-], short enough for a 64-character host name."""
    slug = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")[:32] or "job"
    digest = hashlib.sha256(f"{owner}/{job_id}/{attempt}".encode()).hexdigest()[:8]
    return f"oc-{slug}-{attempt}-{digest}"


def vm_name(owner: str, job_id: str, attempt: int, rank: int) -> str:
    """A VM (and Linux host) name: at most 64 characters of [a-z0-9-], unique per (owner, job, attempt)."""
    return f"{gang_name(owner, job_id, attempt)}-{rank}"


def group_body(s: AzureSettings, pool: Pool) -> dict[str, Any]:
    """A Standard proximity placement group in the pool's zone, meant for the pool's VM size."""
    body: dict[str, Any] = {
        "location": s.region,
        "tags": {"overcast-backend": s.owner},
        "properties": {
            "proximityPlacementGroupType": "Standard",
            "intent": {"vmSizes": [pool.instance_type]},
        },
    }
    if pool.zone:
        body["zones"] = [pool.zone]
    return body


def vm_body(
    s: AzureSettings, request: LaunchRequest, pool: Pool, rank: int, data: str, group_id: str | None
) -> dict[str, Any]:
    """The ARM JSON of rank ``rank``'s VM (``data``: the custom data; ``group_id``: the gang's PPG)."""
    name = vm_name(s.owner, request.job_id, request.attempt, rank)
    vm_tags = {
        "overcast-backend": s.owner,
        "overcast-job": request.job_id,
        "overcast-attempt": str(request.attempt),
        "overcast-pool": pool.id,
        "overcast-nodes": str(request.num_nodes),
        "overcast-rank": str(rank),
    }
    linux: dict[str, Any] = {"disablePasswordAuthentication": True}
    if s.ssh_public_key:
        path = f"/home/{s.admin_username}/.ssh/authorized_keys"
        linux["ssh"] = {"publicKeys": [{"path": path, "keyData": s.ssh_public_key}]}
    nic = {
        "name": f"{name}-nic",
        "properties": {
            "primary": True,
            "deleteOption": "Delete",  # the NIC goes with the VM: nothing left to clean up
            "enableAcceleratedNetworking": True,
            "ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": s.subnet_id}}}],
        },
    }
    props: dict[str, Any] = {
        "hardwareProfile": {"vmSize": pool.instance_type},
        "storageProfile": {
            "imageReference": _image_reference(s.image),
            "osDisk": {
                "createOption": "FromImage",
                "deleteOption": "Delete",
                "managedDisk": {"storageAccountType": "Premium_LRS"},
            },
        },
        "osProfile": {
            "computerName": name,
            "adminUsername": s.admin_username,
            "customData": data,
            "linuxConfiguration": linux,
        },
        # VM-level NIC configurations: ARM creates (and deletes) the NIC, no Microsoft.Network calls
        "networkProfile": {"networkApiVersion": "2020-11-01", "networkInterfaceConfigurations": [nic]},
    }
    if group_id:  # the gang's proximity placement group: its VMs close together, on one network spine
        props["proximityPlacementGroup"] = {"id": group_id}
    if pool.purchase is Purchase.SPOT:
        props |= {"priority": "Spot", "evictionPolicy": "Delete", "billingProfile": {"maxPrice": -1}}
    body: dict[str, Any] = {
        "location": s.region,
        "tags": vm_tags,
        "identity": {"type": "UserAssigned", "userAssignedIdentities": {s.identity_id: {}}},
        "properties": props,
    }
    if pool.zone:
        body["zones"] = [pool.zone]
    return body


def _image_reference(image: str) -> dict[str, str]:
    """An image resource id (a gallery or managed image), or a marketplace URN publisher:offer:sku:version."""
    if image.startswith("/"):
        return {"id": image}
    parts = image.split(":")
    if len(parts) != 4:
        raise ValueError(f"image {image!r}: give a resource id or publisher:offer:sku:version")
    return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))
