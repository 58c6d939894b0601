"""What every control-loop step works with: the store, the backends, and the loop's settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from overcast.backends.base import Backend
from overcast.control.health import Backoff
from overcast.store import JobState, Store

# The states in which a job holds its pool's nodes: what backends should be running.
LIVE = (JobState.LAUNCHING, JobState.RUNNING, JobState.STOPPING)


@dataclass
class Runtime:
    store: Store
    backends: dict[str, Backend]  # by Backend.name, which is Pool.backend
    home: Path
    grace_seconds: float = 10.0  # SIGTERM -> SIGKILL when stopping a job
    backoff: Backoff = field(default_factory=Backoff)
    clock: Callable[[], float] = time.time
    # job -> pools that just failed it (a soft blocklist for decide(); in memory: the store's pool
    # cooldowns carry the lesson across restarts)
    avoid: dict[str, set[str]] = field(default_factory=dict)

    def backend(self, name: str | None) -> Backend | None:
        return self.backends.get(name or "")

    def stop(self, backend_name: str | None, job_id: str, attempt: int, grace: float | None = None) -> None:
        backend = self.backend(backend_name)
        if backend is not None:
            backend.stop(job_id, attempt, self.grace_seconds if grace is None else grace)
