"""A stand-in for Azure's hypervisor, for tests: the fake ARM has VMs but no machines behind them.

``VmEmulator`` (a ``cloud_vm.VmHost``) watches the fake ARM. For each VM that is provisioned and running
it boots a "VM": it runs the VM's custom data with bash (cloud-init's job), as a local process session,
with an instance metadata service (IMDS) of its own. For each VM that is deallocated or gone (deleted by
the backend, evicted, or deleted by a test) it kills every process of that VM at once, as a hypervisor
pulls the plug. overcast's own code (custom data, agent, backend) runs unchanged on top of it.

The IMDS answers, per VM (its base URL is ``http://127.0.0.1:PORT/<vm name>``), only with the header
``Metadata: true``: ``/metadata/instance`` (compute: name, resource group, subscription, zone, tags;
network: a private IP), ``/metadata/scheduledevents`` (a ``Preempt`` event after ``evict_notice``), and
``/metadata/identity/oauth2/token`` (the managed identity's token, for azure-identity).
"""

from __future__ import annotations

import json
import time
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.backends.cloud_vm import MetadataHandler, VmHost
from tests.fixtures.azure_fake import RESOURCE_GROUP, SUBSCRIPTION, FakeArm


class VmEmulator(VmHost):
    script_name = "custom-data"

    def __init__(self, arm: FakeArm, root: Path, interval: float = 0.1) -> None:
        self.arm = arm
        self.ips: dict[str, str] = {}
        self.notices: dict[str, dict[str, Any]] = {}
        super().__init__(root, interval)

    def evict_notice(self, name: str) -> None:
        """Azure's spot eviction notice: a Preempt scheduled event, 30 s ahead."""
        not_before = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
        self.notices[name] = {
            "EventId": str(uuid.uuid4()), "EventType": "Preempt", "ResourceType": "VirtualMachine",
            "Resources": [name], "EventStatus": "Scheduled", "NotBefore": not_before,
        }  # fmt: skip

    # -- the hypervisor -----------------------------------------------------------------------------

    def _running(self) -> list[str] | None:
        """VMs provisioned and powered on (a deallocated or deleted VM is off)."""
        with self.arm.lock:
            return [
                vm["name"]
                for key, vm in self.arm.vms.items()
                if vm["properties"]["provisioningState"] == "Succeeded"
                and self.arm.power.get(key) == "running"
            ]

    def _user_data(self, vm: str) -> str | None:
        with self.arm.lock:
            return next(
                (self.arm.custom_data.get(k, "") for k, v in self.arm.vms.items() if v["name"] == vm), ""
            )

    def _vm_env(self, vm: str) -> dict[str, str]:
        self.ips[vm] = f"10.0.0.{len(self.ips) + 4}"  # Azure keeps .1-.3 of a subnet for itself
        base = f"{self.imds_url}/{vm}"
        return {"OVERCAST_AZURE_IMDS": base, "AZURE_POD_IDENTITY_AUTHORITY_HOST": base}

    # -- the instance metadata service --------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(MetadataHandler):
            def _reply(self, code: int, body: Any) -> None:
                self._send(code, json.dumps(body).encode(), "application/json")

            def do_GET(self) -> None:
                if self.headers.get("Metadata") != "true":
                    self._reply(400, {"error": "Bad request. Required metadata header not specified"})
                    return
                name, _, path = urlsplit(self.path).path.lstrip("/").partition("/metadata/")
                value = emulator._metadata(name, path)
                self._reply(404, {"error": "Not found"}) if value is None else self._reply(200, value)

        return Handler

    def _metadata(self, name: str, path: str) -> Any:
        vm = self.arm.vm(name)
        if path == "identity/oauth2/token":
            expires = str(int(time.time()) + 3600)
            return {"access_token": f"mi-token-{name}", "expires_in": "3600", "expires_on": expires,
                    "resource": "https://management.azure.com/", "token_type": "Bearer"}  # fmt: skip
        if vm is None:
            return None
        if path == "scheduledevents":
            notice = self.notices.get(name)
            return {"DocumentIncarnation": 1 if notice else 0, "Events": [notice] if notice else []}
        if path == "instance":
            tags = dict(vm.get("tags") or {})
            compute = {
                "name": name, "resourceGroupName": RESOURCE_GROUP, "subscriptionId": SUBSCRIPTION,
                "location": vm["location"], "zone": (vm.get("zones") or [""])[0],
                "vmId": vm["properties"]["vmId"], "vmSize": vm["properties"]["hardwareProfile"]["vmSize"],
                "tagsList": [{"name": k, "value": v} for k, v in tags.items()],
                "tags": ";".join(f"{k}:{v}" for k, v in tags.items()),
            }  # fmt: skip
            ip = {"privateIpAddress": self.ips.get(name, ""), "publicIpAddress": ""}
            return {"compute": compute, "network": {"interface": [{"ipv4": {"ipAddress": [ip]}}]}}
        return None
