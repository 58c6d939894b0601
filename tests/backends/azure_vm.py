"""A stand-in for Azure's hypervisor, for tests: the fake ARM has VMs but no machines behind them.

``VmEmulator`` watches the fake ARM. For each VM that is provisioned and running it boots a "VM": it runs
the VM's custom data with bash (cloud-init's job), as a local process session, with an instance metadata
service (IMDS) of its own. For each VM that is deallocated or gone (deleted by the backend, evicted, or
deleted by a test) it kills every process of that VM at once, as a hypervisor pulls the plug. overcast's
own code (custom data, agent, backend) runs unchanged on top of it.

The IMDS answers, per VM (its base URL is ``http://127.0.0.1:PORT/<vm name>``), only with the header
``Metadata: true``: ``/metadata/instance`` (compute: name, resource group, subscription, zone, tags;
network: a private IP), ``/metadata/scheduledevents`` (a ``Preempt`` event after ``evict_notice``), and
``/metadata/identity/oauth2/token`` (the managed identity's token, for azure-identity).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.backends.aws_vm import session_members
from tests.fixtures.azure_fake import RESOURCE_GROUP, SUBSCRIPTION, FakeArm


class VmEmulator:
    def __init__(self, arm: FakeArm, root: Path, interval: float = 0.1) -> None:
        self.arm = arm
        self.root = root
        self.interval = interval
        self.vms: dict[str, subprocess.Popen] = {}
        self.ips: dict[str, str] = {}
        self.notices: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.imds = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._threads = [
            threading.Thread(target=self.imds.serve_forever, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]

    @property
    def imds_url(self) -> str:
        host, port = self.imds.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> VmEmulator:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._threads[1].join(timeout=5)
        self.imds.shutdown()
        with self._lock:
            for name in list(self.vms):
                self._power_off(name)

    def evict_notice(self, name: str) -> None:
        """Azure's spot eviction notice: a Preempt scheduled event, 30 s ahead."""
        not_before = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
        self.notices[name] = {
            "EventId": str(uuid.uuid4()), "EventType": "Preempt", "ResourceType": "VirtualMachine",
            "Resources": [name], "EventStatus": "Scheduled", "NotBefore": not_before,
        }  # fmt: skip

    def console(self, name: str) -> str:
        path = self.root / name / "console.log"
        return path.read_text() if path.exists() else ""

    def booted(self) -> list[str]:
        with self._lock:
            return list(self.vms)

    # -- the hypervisor -----------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self.arm.lock:
                running = {
                    vm["name"]
                    for key, vm in self.arm.vms.items()
                    if vm["properties"]["provisioningState"] == "Succeeded"
                    and self.arm.power.get(key) == "running"
                }
                data = {vm["name"]: self.arm.custom_data.get(key, "") for key, vm in self.arm.vms.items()}
            with self._lock:
                for name in running - set(self.vms):
                    self._boot(name, data.get(name, ""))
                for name, proc in self.vms.items():
                    if name not in running and proc.poll() is None:
                        self._power_off(name)
            self._stop.wait(self.interval)

    def _boot(self, name: str, encoded: str) -> None:
        vm_dir = self.root / name
        vm_dir.mkdir(parents=True, exist_ok=True)
        self.ips[name] = f"10.0.0.{len(self.ips) + 4}"  # Azure keeps .1-.3 of a subnet for itself
        if not encoded:
            self.vms[name] = subprocess.Popen(["true"])
            return
        script = vm_dir / "custom-data"
        script.write_bytes(base64.b64decode(encoded))
        # The image's python3 is the test's interpreter, with overcast installed.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        base = f"{self.imds_url}/{name}"
        env = os.environ | {
            "PATH": path,
            "OVERCAST_AZURE_IMDS": base,
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": base,
        }
        with open(vm_dir / "console.log", "ab") as log:
            self.vms[name] = subprocess.Popen(
                ["bash", str(script)], cwd=vm_dir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def _power_off(self, name: str) -> None:
        proc = self.vms[name]
        for pid in session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    # -- the instance metadata service --------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
