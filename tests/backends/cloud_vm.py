"""What the three test hypervisors (aws_vm, azure_vm, oci_vm) share: the cloud fakes have machines on
paper only, and ``VmHost`` plays the machines.

It watches the fake. For each machine that starts running it boots a "VM": it runs the machine's boot
script (user-data, custom data) with bash, as a local process session, with this test's interpreter first
on PATH and an instance metadata service of its own (one HTTP server; each VM's base URL is
``<imds_url>/<vm id>``). For each machine that stops running it kills every process of that VM at once,
as a hypervisor pulls the plug. A machine never boots twice. A provider subclass says which machines run,
what their boot script is, which environment points a VM at its metadata, and what the metadata says.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, Self


def session_members(sid: int) -> list[int]:
    """Processes of session ``sid``: a VM's processes (the job may make process groups of its own)."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(name)) == sid:
                    members.append(int(name))
    return members


class MetadataHandler(BaseHTTPRequestHandler):
    """A quiet HTTP handler; the provider's handler answers GET (and PUT) with ``_send``."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, data: bytes, content_type: str | None = None) -> None:
        self.send_response(code)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class VmHost:
    script_name: ClassVar[str] = "user-data"  # the boot script's file name in the VM's folder

    def __init__(self, root: Path, interval: float = 0.1) -> None:
        self.root = root
        self.interval = interval
        self.vms: dict[str, subprocess.Popen] = {}
        self._off: set[str] = set()  # VMs powered off (their processes killed)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.imds = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._threads = [
            threading.Thread(target=self.imds.serve_forever, daemon=True),
            threading.Thread(target=self._watch, daemon=True),
        ]

    # -- provider hooks -----------------------------------------------------------------------------

    def _running(self) -> list[str] | None:
        """The ids of the machines the fake says run now, in its order; None when it cannot be asked."""
        raise NotImplementedError

    def _user_data(self, vm: str) -> str | None:
        """The machine's boot script, base64 (None or empty: it boots nothing)."""
        raise NotImplementedError

    def _vm_env(self, vm: str) -> dict[str, str]:
        """What a VM's environment adds: where its metadata service is (called once, at boot)."""
        raise NotImplementedError

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    # -- test controls ------------------------------------------------------------------------------

    @property
    def imds_url(self) -> str:
        host, port = self.imds.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._threads[1].join(timeout=5)
        self.imds.shutdown()
        with self._lock:
            for vm in list(self.vms):
                self._power_off(vm)

    def console(self, vm: str) -> str:
        path = self.root / vm / "console.log"
        return path.read_text() if path.exists() else ""

    def booted(self) -> list[str]:
        with self._lock:
            return list(self.vms)

    def running_vms(self) -> list[str]:
        with self._lock:
            return [vm for vm, proc in self.vms.items() if proc.poll() is None]

    def wait_gone(self, timeout: float = 10.0) -> None:
        """Until no VM process is left (every machine ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(p.poll() is not None for p in self.vms.values()):
                    return
            time.sleep(0.05)
        raise AssertionError("VMs still running")

    # -- the hypervisor -----------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            found = self._running()
            if found is not None:
                running = set(found)
                with self._lock:
                    for vm in [vm for vm in found if vm not in self.vms]:
                        self._boot(vm)
                    for vm, proc in self.vms.items():
                        if vm not in running and vm not in self._off:
                            self._power_off(vm)
                        proc.poll()  # reap
            self._stop.wait(self.interval)

    def _boot(self, vm: str) -> None:
        vm_dir = self.root / vm
        vm_dir.mkdir(parents=True, exist_ok=True)
        extra = self._vm_env(vm)
        encoded = self._user_data(vm)
        if not encoded:
            self.vms[vm] = subprocess.Popen(["true"])
            return
        script = vm_dir / self.script_name
        script.write_bytes(base64.b64decode(encoded))
        # The image's python3 is the test's interpreter, with overcast installed.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        env = os.environ | {"PATH": path} | extra
        with open(vm_dir / "console.log", "ab") as log:
            self.vms[vm] = subprocess.Popen(
                ["bash", str(script)], cwd=vm_dir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def _power_off(self, vm: str) -> None:
        proc = self.vms[vm]
        for pid in session_members(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        self._off.add(vm)
