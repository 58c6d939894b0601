"""The Backend protocol: the adapter for one kind of provider.

Every launch carries (job_id, attempt), so after a crash the control loop can ask a backend what is
really running and reconcile: nothing lost, nothing running twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from overcast.placement.pool import Pool
from overcast.spec.models import JobSpec

# overcast's own credentials: the server may hold them, a job must never get them (not even from its spec).
SERVER_SECRETS = frozenset({"OVERCAST_TOKEN", "OVERCAST_DATABASE_URL"})

# What a job inherits from the server's environment: what programs need to start and find their tools,
# nothing that grants access. An allow-list, because the server's environment holds cloud keys
# (AWS_SECRET_ACCESS_KEY, AZURE_CLIENT_SECRET...), database passwords (PGPASSWORD) and OVERCAST_HOME
# (where the admin token lives); a job gets what it needs through its spec's env and secrets.
INHERITED = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TERM", "TZ", "TMPDIR",
        "LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX",
    }
)  # fmt: skip
INHERITED_PREFIXES = ("LC_", "CUDA_", "NVIDIA_", "NCCL_", "OMP_")


def inherited_environ() -> dict[str, str]:
    """The part of this process's environment every backend gives a job (``INHERITED``)."""
    return {
        k: v
        for k, v in os.environ.items()
        if (k in INHERITED or k.startswith(INHERITED_PREFIXES)) and k not in SERVER_SECRETS
    }


# Launches of inference-service replicas carry job ids "svc.<service>.<rid>" (serve/ledger.py); stored
# jobs are "j-...". The job loop leaves replica launches alone on a backend the two share.
REPLICA_PREFIX = "svc."


def is_replica_launch(job_id: str) -> bool:
    return job_id.startswith(REPLICA_PREFIX)


class CapacityError(Exception):
    """The provider said "out of capacity" for this pool (learned health: cooldown with backoff)."""


class ProviderDown(Exception):
    """The provider cannot be reached at all."""


class JobRejected(ValueError):
    """This backend cannot start the job as specified (its script makes user data larger than the provider
    takes...), found before any provider call: nothing is wrong with the pool, so it gets no cooldown, and
    trying again on this backend cannot help; another backend may take the job."""


def check_gang(backend: str, request: LaunchRequest) -> None:
    """A cluster backend's launch guard: the pool is its own, and the whole gang fits its usable nodes."""
    pool = request.pool
    if pool.backend != backend:
        raise ValueError(f"pool {pool.id} belongs to backend {pool.backend!r}, not {backend!r}")
    if pool.capacity_nodes is not None and request.num_nodes > pool.capacity_nodes:
        raise CapacityError(
            f"{backend}: a gang of {request.num_nodes} nodes does not fit in {pool.id} "
            f"({pool.capacity_nodes} usable nodes)"
        )


class EventKind(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the job itself failed (non-zero exit, not preempted)
    PREEMPTED = "preempted"  # spot reclaim, node loss, drain: not the job's fault
    PROVIDER_DOWN = "provider-down"
    CAPACITY_ERROR = "capacity-error"


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    job_id: str
    attempt: int
    pool: Pool
    num_nodes: int
    spec: JobSpec
    env: dict[str, str] = field(default_factory=dict)  # the OVERCAST_* contract, filled by the loop


@dataclass(frozen=True, slots=True)
class Allocation:
    job_id: str
    attempt: int
    backend: str
    handle: str  # backend's own id: process group ids, a Slurm job id, instance ids...


@dataclass(frozen=True, slots=True)
class BackendEvent:
    kind: EventKind
    job_id: str
    attempt: int
    at: float
    detail: str = ""
    exit_code: int | None = None


class Backend(Protocol):
    name: str

    def pools(self) -> list[Pool]:
        """Capacity this backend knows about, with current use."""
        ...

    def launch(self, request: LaunchRequest) -> Allocation:
        """Start every node of the gang or none; raise CapacityError / ProviderDown."""
        ...

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        """SIGTERM (or the provider's equivalent), wait up to the grace period, then kill."""
        ...

    def poll(self) -> list[BackendEvent]:
        """Events since the last poll."""
        ...

    def active(self) -> list[tuple[str, int]]:
        """(job_id, attempt) of everything this backend is running now: the truth after a crash."""
        ...


class Addressed(Protocol):
    """Optional: where a launch runs, for services (a replica is reached at ``http://<address>:<port>``).
    A backend without it runs everything on this host (127.0.0.1)."""

    def address(self, job_id: str, attempt: int) -> str | None:
        """The host (name or IP) of the launch's first node, once it is placed; None while it is not
        (queued), or if it is unknown here."""
        ...
