"""One backend shared by several service controllers in one process (the server's supervisor).

A backend's ``poll()`` hands each event out once, so controllers polling one backend object would steal
each other's events. ``SharedBackend`` polls the real backend and queues each event for the service its
replica belongs to (``svc.<key>.<rid>``); each controller gets a ``view`` whose ``poll()`` returns its own.
Everything else (pools, launch, stop, active, address, replica_host) goes straight to the backend.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from overcast.backends.base import Allocation, Backend, BackendEvent, LaunchRequest
from overcast.placement.pool import Pool
from overcast.serve.ledger import parse_replica_job_id


def address_of(backend: Backend, job_id: str, attempt: int) -> str | None:
    """Where a launch runs (``Addressed.address``); a backend without the method runs it on this host."""
    address = getattr(backend, "address", None)
    return "127.0.0.1" if address is None else address(job_id, attempt)


def replica_host(backend: Backend) -> str:
    """Where a replica listens (``OVERCAST_REPLICA_HOST``): the backend's ``replica_host`` (Slurm: 0.0.0.0,
    reached at its node's NodeAddr from the controller's host); else 127.0.0.1, a process on this host."""
    return getattr(backend, "replica_host", None) or "127.0.0.1"


class SharedBackend:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = backend.name
        self._lock = threading.Lock()
        self._queues: defaultdict[str, list[BackendEvent]] = defaultdict(list)
        self._keys: set[str] = set()

    def view(self, key: str) -> BackendView:
        with self._lock:
            self._keys.add(key)
        return BackendView(self, key)

    def release(self, key: str) -> None:
        with self._lock:
            self._keys.discard(key)
            self._queues.pop(key, None)

    def poll_for(self, key: str) -> list[BackendEvent]:
        with self._lock:
            for event in self.backend.poll():
                parsed = parse_replica_job_id(event.job_id)
                if parsed is not None and parsed[0] in self._keys:  # nobody else's: dropped
                    self._queues[parsed[0]].append(event)
            return self._queues.pop(key, [])


class BackendView:
    """The Backend protocol for one service over a SharedBackend."""

    def __init__(self, shared: SharedBackend, key: str) -> None:
        self.shared = shared
        self.key = key
        self.name = shared.name

    def pools(self) -> list[Pool]:
        return self.shared.backend.pools()

    def started_nodes(self) -> dict[str, int]:
        """The backend's (control/snapshot.hold_stored subtracts them from the store's holds)."""
        of = getattr(self.shared.backend, "started_nodes", None)
        return of() if callable(of) else {}

    def launch(self, request: LaunchRequest) -> Allocation:
        return self.shared.backend.launch(request)

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        self.shared.backend.stop(job_id, attempt, grace_seconds)

    def address(self, job_id: str, attempt: int) -> str | None:
        return address_of(self.shared.backend, job_id, attempt)

    @property
    def replica_host(self) -> str:
        return replica_host(self.shared.backend)

    def poll(self) -> list[BackendEvent]:
        return self.shared.poll_for(self.key)

    def active(self) -> list[tuple[str, int]]:
        return self.shared.backend.active()
