"""Builders for control-loop tests: real store, real local backends, real processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overcast.backends.base import Allocation, LaunchRequest
from overcast.backends.local import LocalBackend, LocalCluster
from overcast.control.health import Backoff
from overcast.control.loop import ControlLoop
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobRecord, Store

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "train" / "train.py"


def clusters(azure_nodes: int = 2, oci_nodes: int = 2) -> list[LocalCluster]:
    return [
        LocalCluster("azure-local", nodes=azure_nodes, price_per_node_hour=2.0),
        LocalCluster("oci-local", nodes=oci_nodes, price_per_node_hour=3.0),
    ]


def make_loop(home: Path, store: Store, cluster_list: list[LocalCluster] | None = None, **kw) -> ControlLoop:
    backends = [LocalBackend(c, home=home) for c in cluster_list or clusters()]
    kw.setdefault("grace_seconds", 2.0)
    kw.setdefault("backoff", Backoff(base_seconds=60.0, cap_seconds=600.0))
    return ControlLoop(store, backends, home=home, **kw)


def job(name: str, run: str, nodes: int = 1, **fields) -> JobSpec:
    resources = Resources(accelerators=(AcceleratorRequest(name="H100", count=1),))
    return JobSpec(name=name, run=run, num_nodes=nodes, resources=resources, **fields)


def train_command(steps: int = 120, step_seconds: float = 0.02, every: int = 10) -> str:
    args = f"--steps {steps} --step-seconds {step_seconds} --checkpoint-every {every}"
    return f"{sys.executable} {TRAIN} {args}"


def reference_result(tmp: Path, steps: int = 120) -> str:
    """The uninterrupted run's RESULT line."""
    args = ["--steps", str(steps), "--step-seconds", "0", "--checkpoint-dir", str(tmp)]
    done = subprocess.run([sys.executable, str(TRAIN), *args], capture_output=True, text=True, timeout=60)
    out = done.stdout
    return next(line for line in out.splitlines() if line.startswith("RESULT"))


def run_until(
    loop: ControlLoop, done: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        loop.tick()
        if done():
            return
        time.sleep(interval)
    raise AssertionError(f"not done after {timeout}s")


def state(store: Store, job_id: str) -> JobRecord:
    found = store.get(job_id)
    assert found is not None
    return found


def result_lines(home: Path, job_id: str) -> list[str]:
    logs = sorted((home / "logs" / job_id).glob("*/node-*.log"))
    return [line for log in logs for line in log.read_text().splitlines() if line.startswith("RESULT")]


class SlowLaunch:
    """A real backend whose launches first wait ``delay`` seconds (a cloud's slow create call);
    ``returned`` is set when a launch has returned or raised."""

    def __init__(self, inner: LocalBackend, delay: float) -> None:
        self.inner, self.delay = inner, delay
        self.name = inner.name
        self.returned = threading.Event()

    def launch(self, request: LaunchRequest) -> Allocation:
        time.sleep(self.delay)
        try:
            return self.inner.launch(request)
        finally:
            self.returned.set()

    def __getattr__(self, attr: str) -> Any:  # pools, stop, poll, active, faults...: the real backend's
        return getattr(self.inner, attr)
