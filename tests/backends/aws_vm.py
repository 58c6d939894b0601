"""A stand-in for EC2's hypervisor, for tests: moto has instances but no machines behind them.

``VmEmulator`` (a ``cloud_vm.VmHost``) watches the moto server. For each instance that becomes
``running`` it boots a "VM": it runs the instance's user-data with bash, as a local process session, with
the AWS endpoint of the moto server and a metadata service (IMDSv2) of its own. For each instance that
stops running (terminated by the backend, by its agent, or by a test playing a spot reclaim) it kills
every process of that VM at once, as a hypervisor pulls the plug. It is test code: overcast's own code
(user-data, agent, backend) runs unchanged on top of it.

The metadata service answers, per instance (its URL is ``http://127.0.0.1:PORT/<instance-id>``):
``latest/api/token`` (PUT), ``meta-data/instance-id``, ``meta-data/tags/instance/<key>`` (read from moto)
and ``meta-data/spot/instance-action`` (after ``spot_notice``).
"""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.backends.cloud_vm import MetadataHandler, VmHost
from tests.fixtures.moto import MotoEC2

TOKEN = "emulated-imds-token"


class VmEmulator(VmHost):
    def __init__(self, moto: MotoEC2, root: Path, interval: float = 0.1) -> None:
        self.moto = moto
        self.ec2 = moto.client()
        self.notices: dict[str, str] = {}
        super().__init__(root, interval)

    # -- test controls ------------------------------------------------------------------------------

    def spot_notice(self, instance_id: str) -> None:
        """EC2's two-minute spot interruption notice, as the metadata service shows it."""
        self.notices[instance_id] = json.dumps({"action": "terminate", "time": time.time() + 120})

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{k.replace('_', ':', 1)}", "Values": [v]} for k, v in tags.items()]
        reply = self.ec2.describe_instances(Filters=filters)
        return [i for r in reply["Reservations"] for i in r["Instances"]]

    # -- the hypervisor -----------------------------------------------------------------------------

    def _running(self) -> list[str] | None:
        try:
            reply = self.ec2.describe_instances()
        except Exception:  # the server is shutting down with the test
            return None
        found = [i for r in reply["Reservations"] for i in r["Instances"]]
        return [i["InstanceId"] for i in found if i["State"]["Name"] == "running"]

    def _user_data(self, vm: str) -> str | None:
        attr = self.ec2.describe_instance_attribute(InstanceId=vm, Attribute="userData")
        return (attr.get("UserData") or {}).get("Value")

    def _vm_env(self, vm: str) -> dict[str, str]:
        return {"AWS_EC2_METADATA_SERVICE_ENDPOINT": f"{self.imds_url}/{vm}"}

    # -- the metadata service -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(MetadataHandler):
            def _reply(self, code: int, body: str = "") -> None:
                self._send(code, body.encode())

            def do_PUT(self) -> None:
                ok = self.path.endswith("/latest/api/token")
                self._reply(200 if ok else 404, TOKEN if ok else "")

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    self._reply(401)
                    return
                iid, _, rest = self.path.lstrip("/").partition("/latest/meta-data/")
                value = emulator._metadata(iid, rest)
                self._reply(404) if value is None else self._reply(200, value)

        return Handler

    def _metadata(self, iid: str, path: str) -> str | None:
        if path == "instance-id":
            return iid
        if path == "spot/instance-action":
            return self.notices.get(iid)
        if path.startswith("tags/instance/"):
            key = path.removeprefix("tags/instance/")
            filters = [{"Name": "resource-id", "Values": [iid]}, {"Name": "key", "Values": [key]}]
            found = self.ec2.describe_tags(Filters=filters)["Tags"]
            return found[0]["Value"] if found else None
        return None
