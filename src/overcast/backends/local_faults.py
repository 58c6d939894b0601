"""Fault injection for the local backend (``LocalBackend`` mixes this in): take a provider down, make it
refuse launches for capacity, reclaim one node of a launch as a spot reclaim does. Faults are files in
the provider's folder, so every backend object over its nodes (the job loop's, the services') sees them,
and are written under the folder's ``nodes.lock``, which ``launch()`` holds from its fault check until its
processes exist: a provider taken down by one object never misses a launch another object is starting."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overcast.backends.local_procs import file_lock, signal_group, terminate_groups
from overcast.backends.local_runner import write_json_atomic


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class LocalFaults:
    # owned by LocalBackend
    cluster: Any
    dir: Path
    _lock: threading.RLock
    _children: dict[Path, list[subprocess.Popen]]
    _launches: Callable[[], list[Any]]
    _stopped: Callable[[Any], bool]
    _live_nodes: Callable[[Any], dict[int, int | None]]
    _running_pgids: Callable[[Any], list[int]]

    @property
    def _nodes_lock(self) -> Path:
        return self.dir / "nodes.lock"

    def faults(self) -> dict[str, bool]:
        found = read_json(self.dir / "faults.json") or {}
        until = found.get("capacity_until")
        capacity = bool(found.get("capacity")) and (until is None or time.time() < until)
        return {"down": bool(found.get("down")), "capacity": capacity}

    def _set_fault(self, key: str, value: bool, until: float | None = None) -> None:
        faults = read_json(self.dir / "faults.json") or {}
        faults[key] = value
        if key == "capacity":
            faults["capacity_until"] = until
        write_json_atomic(self.dir / "faults.json", faults)

    def set_down(self, down: bool) -> list[tuple[str, int]]:
        """Take the provider down (every process is killed at once, no notice) or bring it back.

        Returns the (job, attempt) launches that were lost (every object's: the nodes are shared)."""
        with self._lock, file_lock(self._nodes_lock):  # SIGKILL does not wait: the lock stays short
            self._set_fault("down", down)
            if not down:
                return []
            lost = []
            for launch in self._launches():
                if self._stopped(launch) or not self._live_nodes(launch):
                    continue
                (launch.path / "provider-down").touch()
                for pgid in self._running_pgids(launch):
                    signal_group(pgid, signal.SIGKILL)
                lost.append((launch.job_id, launch.attempt))
            return lost

    def set_capacity_error(self, on: bool, until: float | None = None) -> None:
        """Make launches fail with "out of capacity" (as a cloud API does when a zone is sold out),
        until the epoch time ``until`` (None: until turned off)."""
        with self._lock, file_lock(self._nodes_lock):  # faults.json is read, changed and written back
            self._set_fault("capacity", on, until)

    def preempt(self, job_id: str, rank: int = 0, notice_seconds: float = 2.0) -> int:
        """Reclaim one node of the job's running launch, as a spot reclaim does: SIGTERM, a short notice,
        then SIGKILL. Returns the attempt preempted; KeyError when the job runs nowhere here."""
        with self._lock:
            running = [
                launch
                for launch in self._launches()
                if launch.job_id == job_id and not self._stopped(launch) and self._live_nodes(launch)
            ]
            if not running:
                raise KeyError(f"job {job_id} is not running on {self.cluster.name}")
            launch = max(running, key=lambda item: item.attempt)
            if not 0 <= rank < launch.num_nodes:
                raise KeyError(f"job {job_id} has no node {rank} (it has {launch.num_nodes})")
            pid = (read_json(launch.path / f"node-{rank}.pid") or {}).get("pid")
            children = self._children.get(launch.path, [])
        if pid is not None:
            reap = [proc for proc in children if proc.pid == pid]
            terminate_groups([pid], notice_seconds, reap=reap)
            if not (launch.path / f"node-{rank}.exit").exists():  # SIGKILLed: record when it ended
                (launch.path / f"node-{rank}.killed").touch()
        return launch.attempt
