"""A stand-in for Compute Engine's hypervisor, for tests: the fake API has instances but no machines.

``GceVmEmulator`` (a ``cloud_vm.VmHost``) watches the fake. For each instance that becomes RUNNING it
boots a "VM": it runs the instance's ``startup-script`` metadata with bash, as a local process session,
with ``GCE_METADATA_HOST`` pointing at a metadata server of its own (google-auth's variable, so the
agent's ``google.auth.compute_engine.Credentials`` get their token there, as on a real instance). For each
instance that stops running (stopped by its agent, deleted by the backend, or deleted/preempted by a test)
it kills every process of that VM at once. The startup script, agent and backend run unchanged on top.

The metadata server answers ``Metadata-Flavor: Google`` requests (403 without the header) under
``http://127.0.0.1:PORT/<instance name>/computeMetadata/v1/``: ``instance/name``, ``instance/zone``,
``instance/preempted``, ``instance/network-interfaces/0/ip``, ``project/project-id`` and the instance's
service account (``?recursive=true`` and ``token``: a token the fake API accepts). Like GCP, an instance
created without a service account has none: 404 for those, so its agent gets no token.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.backends.cloud_vm import MetadataHandler, VmHost
from tests.fixtures.gcp_fake import PROJECT, FakeGce


class GceVmEmulator(VmHost):
    script_name = "startup-script"

    def __init__(self, fake: FakeGce, root: Any, interval: float = 0.1) -> None:
        self.fake = fake
        super().__init__(root, interval)

    def instances(self, **labels: str) -> list[dict[str, Any]]:
        """The fake's instances whose labels include ``overcast-<key>=value`` for each key."""
        wanted = {f"overcast-{k}": v for k, v in labels.items()}
        return [i for i in self.fake.listed() if wanted.items() <= i["labels"].items()]

    # -- the hypervisor -----------------------------------------------------------------------------

    def _running(self) -> list[str] | None:
        return [i["name"] for i in self.fake.listed() if i["status"] == "RUNNING"]

    def _user_data(self, vm: str) -> str | None:
        inst = self.fake.find(vm)
        items = {i["key"]: i["value"] for i in (inst or {}).get("metadata", {}).get("items", [])}
        script = items.get("startup-script")
        return base64.b64encode(script.encode()).decode() if script else None

    def _vm_env(self, vm: str) -> dict[str, str]:
        host, port = self.imds.server_address[:2]
        return {"GCE_METADATA_HOST": f"{host}:{port}/{vm}", "GCE_METADATA_IP": f"{host}:{port}"}

    # -- the metadata server ------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self.fake

        class Handler(MetadataHandler):
            def _reply(self, code: int, body: Any = "") -> None:
                text = body if isinstance(body, str) else json.dumps(body)
                self.send_response(code)
                self.send_header("Metadata-Flavor", "Google")
                ctype = "application/text" if isinstance(body, str) else "application/json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(text.encode())))
                self.end_headers()
                self.wfile.write(text.encode())

            def do_GET(self) -> None:
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self._reply(403, "Missing Metadata-Flavor:Google header.")
                url = urllib.parse.urlsplit(self.path)
                vm, _, rest = url.path.lstrip("/").partition("/computeMetadata/v1/")
                inst = fake.find(vm)
                if inst is None:
                    return self._reply(404, "Not Found")
                accounts = inst.get("serviceAccounts") or []
                answers: dict[str, Any] = {
                    "instance/name": vm,
                    "instance/zone": f"projects/123456789/zones/{inst['zone'].rsplit('/', 1)[-1]}",
                    "instance/preempted": "TRUE" if vm in fake.preempted else "FALSE",
                    "instance/network-interfaces/0/ip": inst["networkInterfaces"][0]["networkIP"],
                    "project/project-id": PROJECT,
                }
                if accounts:
                    answers["instance/service-accounts/default/"] = {
                        "aliases": ["default"],
                        "email": accounts[0]["email"],
                        "scopes": accounts[0]["scopes"],
                    }
                if rest == "instance/service-accounts/default/token" and accounts:
                    token = {"access_token": fake.issue_token(), "expires_in": 3600, "token_type": "Bearer"}
                    return self._reply(200, token)
                if rest in answers:
                    return self._reply(200, answers[rest])
                self._reply(404, "Not Found")

        return Handler
