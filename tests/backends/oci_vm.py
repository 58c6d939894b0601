"""A stand-in for OCI's hypervisor, for tests: the fake API has instances but no machines behind them.

``OciVmEmulator`` watches the fake. For each instance that becomes RUNNING it boots a "VM": it runs the
instance's cloud-init user-data (``metadata["user_data"]``, base64) with bash, as a local process
session, with an SDK config file (``OVERCAST_OCI_CONFIG_FILE``, standing in for instance principals)
and an instance metadata service of its own (``OVERCAST_OCI_METADATA_URL``). For each instance that
stops running (terminated by the backend, by its agent, or by a test playing a preemption) it kills
every process of that VM at once. The user-data, agent and backend run unchanged on top of it.

The metadata service answers IMDS v2 (``Authorization: Bearer Oracle`` required, else 401) under
``http://127.0.0.1:PORT/<instance-id>/opc/v2/``: ``instance/`` (id, AD, shape, freeformTags...) and
``vnics/`` (a private IP per instance, 10.0.0.<n>).
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.backends.aws_vm import session_members
from tests.fixtures.oci_fake import FakeOci


class OciVmEmulator:
    def __init__(self, fake: FakeOci, config_file: Path, root: Path, interval: float = 0.1) -> None:
        self.fake = fake
        self.config_file = config_file
        self.root = root
        self.interval = interval
        self.vms: dict[str, subprocess.Popen] = {}
        self.ips: dict[str, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._imds = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._threads = [
            threading.Thread(target=self._imds.serve_forever, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]

    def start(self) -> OciVmEmulator:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._threads[1].join(timeout=5)
        self._imds.shutdown()
        with self._lock:
            for iid in list(self.vms):
                self._power_off(iid)

    def console(self, instance_id: str) -> str:
        path = self.root / instance_id / "console.log"
        return path.read_text() if path.exists() else ""

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        """The fake's instances whose freeform tags include ``overcast-<key>=value`` for each key."""
        wanted = {f"overcast-{k}": v for k, v in tags.items()}
        with self.fake.lock:
            found = [self.fake.advance(i) for i in self.fake.instances.values()]
        return [dict(i) for i in found if wanted.items() <= i["freeformTags"].items()]

    # -- the hypervisor -----------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self.fake.lock:
                states = {
                    iid: self.fake.advance(i)["lifecycleState"] for iid, i in self.fake.instances.items()
                }
            with self._lock:
                for iid, state in states.items():
                    if state == "RUNNING" and iid not in self.vms:
                        self._boot(iid)
                    elif state != "RUNNING" and iid in self.vms:
                        self._power_off(iid)
                for proc in self.vms.values():
                    proc.poll()  # reap
            self._stop.wait(self.interval)

    def _boot(self, iid: str) -> None:
        inst = self.fake.instances[iid]
        self.ips[iid] = f"10.0.0.{len(self.ips) + 2}"
        encoded = inst.data["metadata"].get("user_data")
        vm_dir = self.root / iid
        vm_dir.mkdir(parents=True, exist_ok=True)
        if not encoded:
            self.vms[iid] = subprocess.Popen(["true"])
            return
        script = vm_dir / "user-data"
        script.write_bytes(base64.b64decode(encoded))
        # The image's python3 is the test's interpreter, with overcast installed.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        host, port = self._imds.server_address[:2]
        env = os.environ | {
            "PATH": path,
            "OVERCAST_OCI_METADATA_URL": f"http://{host}:{port}/{iid}/opc/v2",
            "OVERCAST_OCI_CONFIG_FILE": str(self.config_file),
        }
        with open(vm_dir / "console.log", "ab") as log:
            self.vms[iid] = subprocess.Popen(
                ["bash", str(script)], cwd=vm_dir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def _power_off(self, iid: str) -> None:
        proc = self.vms[iid]
        for pid in session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def wait_gone(self, timeout: float = 10.0) -> None:
        """Until no VM process is left (every instance ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(p.poll() is not None for p in self.vms.values()):
                    return
            time.sleep(0.05)
        raise AssertionError("VMs still running")

    # -- the metadata service -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: Any = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
