"""A stand-in for EC2's hypervisor, for tests: moto has instances but no machines behind them.

``VmEmulator`` watches the moto server. For each instance that becomes ``running`` it boots a "VM": it
runs the instance's user-data with bash, as a local process session, with the AWS endpoint of the moto
server and a metadata service (IMDSv2) of its own. For each instance that stops running (terminated by
the backend, by its agent, or by a test playing a spot reclaim) it kills every process of that VM at once,
as a hypervisor pulls the plug. It is test code: overcast's own code (user-data, agent, backend) runs
unchanged on top of it.

The metadata service answers, per instance (its URL is ``http://127.0.0.1:PORT/<instance-id>``):
``latest/api/token`` (PUT), ``meta-data/instance-id``, ``meta-data/tags/instance/<key>`` (read from moto)
and ``meta-data/spot/instance-action`` (after ``spot_notice``).
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

from tests.fixtures.moto import MotoEC2

TOKEN = "emulated-imds-token"


def session_members(sid: int) -> list[int]:
    """Processes of session ``sid``: a VM's processes (the job may make process groups of its own)."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(name)) == sid:
                    members.append(int(name))
    return members


class VmEmulator:
    def __init__(self, moto: MotoEC2, root: Path, interval: float = 0.1) -> None:
        self.moto = moto
        self.ec2 = moto.client()
        self.root = root
        self.interval = interval
        self.vms: dict[str, subprocess.Popen] = {}
        self.notices: dict[str, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._imds = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._threads = [
            threading.Thread(target=self._imds.serve_forever, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]

    # -- test controls ------------------------------------------------------------------------------

    def start(self) -> VmEmulator:
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

    def spot_notice(self, instance_id: str) -> None:
        """EC2's two-minute spot interruption notice, as the metadata service shows it."""
        self.notices[instance_id] = json.dumps({"action": "terminate", "time": time.time() + 120})

    def console(self, instance_id: str) -> str:
        path = self.root / instance_id / "console.log"
        return path.read_text() if path.exists() else ""

    def instances(self, **tags: str) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{k.replace('_', ':', 1)}", "Values": [v]} for k, v in tags.items()]
        reply = self.ec2.describe_instances(Filters=filters)
        return [i for r in reply["Reservations"] for i in r["Instances"]]

    # -- the hypervisor -----------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                reply = self.ec2.describe_instances()
            except Exception:  # the server is shutting down with the test
                time.sleep(self.interval)
                continue
            with self._lock:
                for inst in (i for r in reply["Reservations"] for i in r["Instances"]):
                    iid, state = inst["InstanceId"], inst["State"]["Name"]
                    if state == "running" and iid not in self.vms:
                        self._boot(iid)
                    elif state != "running" and iid in self.vms:
                        self._power_off(iid)
                for proc in self.vms.values():
                    proc.poll()  # reap
            self._stop.wait(self.interval)

    def _boot(self, iid: str) -> None:
        attr = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        encoded = (attr.get("UserData") or {}).get("Value")
        vm_dir = self.root / iid
        vm_dir.mkdir(parents=True, exist_ok=True)
        if not encoded:
            self.vms[iid] = subprocess.Popen(["true"])
            return
        script = vm_dir / "user-data"
        script.write_bytes(base64.b64decode(encoded))
        # The AMI's python3 is the test's interpreter, with overcast installed.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        host, port = self._imds.server_address[:2]
        env = os.environ | {"PATH": path, "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://{host}:{port}/{iid}"}
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
        self.vms[iid] = proc  # kept: an instance never boots twice

    def running_vms(self) -> list[str]:
        with self._lock:
            return [iid for iid, proc in self.vms.items() if proc.poll() is None]

    # -- the metadata service -----------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

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
