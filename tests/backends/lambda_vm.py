"""A stand-in for Lambda's hypervisor, for tests: the fake API has instances but no machines behind them.

``LambdaVmHost`` (a ``cloud_vm.VmHost``) watches the fake. For each instance that becomes ``active`` it
boots a "VM": it runs the instance's cloud-init user-data (plain text on Lambda) with bash, as a local
process session. For each instance that stops being active (terminated by the backend, by its agent, or
by a test playing a host failure) it kills every process of that VM at once. The user-data, agent and
backend run unchanged on top of it.

Lambda has no instance metadata service, so the VMs get none: the agent finds itself through the API.
The one thing a VM gets in its environment is nothing at all (``_vm_env`` is empty): where the key file
goes is the backend's ``key_path`` setting, pointed by the tests into their temporary folder.
"""

from __future__ import annotations

import base64
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.backends.cloud_vm import MetadataHandler, VmHost
from tests.fixtures.lambda_fake import FakeLambda


class LambdaVmHost(VmHost):
    def __init__(self, fake: FakeLambda, root: Path, interval: float = 0.1) -> None:
        self.fake = fake
        super().__init__(root, interval)

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        """The fake's instances (forgotten ones too) tagged ``overcast-<key>=value`` for each key, with
        their tags as a mapping under ``"tagmap"``."""
        wanted = {f"overcast-{k}": v for k, v in tags.items()}
        with self.fake.lock:
            found = [dict(self.fake.advance(i)) for i in self.fake.instances.values()]
        for inst in found:
            inst["tagmap"] = {t["key"]: t["value"] for t in inst["tags"]}
        return [i for i in found if wanted.items() <= i["tagmap"].items()]

    # -- the hypervisor -----------------------------------------------------------------------------

    def _running(self) -> list[str] | None:
        with self.fake.lock:
            found = self.fake.instances.items()
            return [iid for iid, i in found if self.fake.advance(i)["status"] == "active"]

    def _user_data(self, vm: str) -> str | None:
        return base64.b64encode(self.fake.instances[vm].user_data.encode()).decode()

    def _vm_env(self, vm: str) -> dict[str, str]:
        return {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        class NoMetadata(MetadataHandler):  # Lambda has no metadata service: every path is 404
            def do_GET(self) -> None:
                self._send(404, b"")

        return NoMetadata
