"""A control loop in its own process, for crash and leadership tests:
``python -m tests.control.loop_process DB_URL HOME`` (SIGTERM: stop cleanly; SIGKILL: crash)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from overcast.backends.local import LocalBackend
from overcast.control.health import Backoff
from overcast.control.loop import ControlLoop
from overcast.store import Store
from tests.control.harness import ROOT, clusters

LEASE_TTL = 1.0  # short, so a successor takes over soon after a SIGKILL
INTERVAL = 0.05


def main(url: str, home: Path) -> None:
    store = Store(url)
    backends = [LocalBackend(c, home=home) for c in clusters()]
    loop = ControlLoop(
        store, backends, home=home, grace_seconds=2.0, lease_ttl=LEASE_TTL, backoff=Backoff(1.0, 4.0)
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"holder {loop.holder}", flush=True)
    loop.run(stop, interval=INTERVAL)


def start_loop(url: str, home: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.control.loop_process", url, str(home)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )  # fmt: skip


def stop_loop(proc: subprocess.Popen, sig: int) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
