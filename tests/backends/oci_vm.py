"""A stand-in for OCI's hypervisor, for tests: the fake API has instances but no machines behind them.

``OciVmEmulator`` (a ``cloud_vm.VmHost``) watches the fake. For each instance that becomes RUNNING it
boots a "VM": it runs the instance's cloud-init user-data (``metadata["user_data"]``, base64) with bash,
as a local process session, with an SDK config file (``OVERCAST_OCI_CONFIG_FILE``, standing in for
instance principals) and an instance metadata service of its own (``OVERCAST_OCI_METADATA_URL``). For
each instance that stops running (terminated by the backend, by its agent, or by a test playing a
preemption) it kills every process of that VM at once. The user-data, agent and backend run unchanged on
top of it.

The metadata service answers IMDS v2 (``Authorization: Bearer Oracle`` required, else 401) under
``http://127.0.0.1:PORT/<instance-id>/opc/v2/``: ``instance/`` (id, AD, shape, freeformTags...) and
``vnics/`` (a private IP per instance, 10.0.0.<n>).
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.backends.cloud_vm import MetadataHandler, VmHost
from tests.fixtures.oci_fake import FakeOci


class OciVmEmulator(VmHost):
    def __init__(self, fake: FakeOci, config_file: Path, root: Path, interval: float = 0.1) -> None:
        self.fake = fake
        self.config_file = config_file
        self.ips: dict[str, str] = {}
        super().__init__(root, interval)

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        """The fake's instances whose freeform tags include ``overcast-<key>=value`` for each key."""
        wanted = {f"overcast-{k}": v for k, v in tags.items()}
        with self.fake.lock:
            found = [self.fake.advance(i) for i in self.fake.instances.values()]
        return [dict(i) for i in found if wanted.items() <= i["freeformTags"].items()]

    # -- the hypervisor -----------------------------------------------------------------------------

    def _running(self) -> list[str] | None:
        with self.fake.lock:
            found = self.fake.instances.items()
            return [iid for iid, i in found if self.fake.advance(i)["lifecycleState"] == "RUNNING"]

    def _user_data(self, vm: str) -> str | None:
        return self.fake.instances[vm].data["metadata"].get("user_data")

    def _vm_env(self, vm: str) -> dict[str, str]:
        self.ips[vm] = f"10.0.0.{len(self.ips) + 2}"
        return {
            "OVERCAST_OCI_METADATA_URL": f"{self.imds_url}/{vm}/opc/v2",
            "OVERCAST_OCI_CONFIG_FILE": str(self.config_file),
        }

    # -- the metadata service -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(MetadataHandler):
            def _reply(self, code: int, body: Any = None) -> None:
                self._send(code, json.dumps(body).encode() if body is not None else b"")

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != "Bearer Oracle":  # IMDS v2 only
                    return self._reply(401)
                iid, _, rest = self.path.lstrip("/").partition("/opc/v2/")
                inst = emulator.fake.get(iid)
                if inst is None:
                    return self._reply(404)
                if rest == "instance/":
                    keys = ("id", "displayName", "compartmentId", "availabilityDomain", "region", "shape",
                            "freeformTags", "definedTags", "timeCreated")  # fmt: skip
                    return self._reply(200, {k: inst.data[k] for k in keys})
                if rest == "vnics/":
                    return self._reply(200, [{"vnicId": f"vnic-{iid}", "privateIp": emulator.ips[iid]}])
                self._reply(404)

        return Handler
