"""What a service controller must remember across a crash: its replicas, version and target.

A replica is a backend launch whose job id is ``svc.<service>.<rid>`` (see ``replica_job_id``): store job
ids are ``j-...``, so no job can ever be taken for a replica, and the rid after the last dot never holds a
dot, so the service name is read back exactly even when it has dots of its own. The backends' ``active()``
says which replicas still run; the ledger adds what a launch does not carry (its port, pool, version).

The ledger is one JSON file per service, ``<home>/services/<name>/ledger.json``, replaced atomically. A
replica is recorded *before* it is launched and forgotten only *after* it is stopped, so a crash at any
point leaves either a record without a launch (dropped at adoption) or a launch with its record, never a
running replica nobody can find. An exclusive ``flock`` on ``<dir>/lock`` keeps two controllers off one
service; the kernel drops it when the holder dies, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from overcast.backends.base import REPLICA_PREFIX
from overcast.placement.pool import Purchase
from overcast.serve.replicas import Replica, ReplicaState
from overcast.spec.models import STORED, ServiceSpec

SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RID = re.compile(r"r[0-9]{1,9}")


class ServiceBusy(RuntimeError):
    """Another controller (another ``overcast serve`` or the server) runs this service."""


def check_service_name(name: str) -> None:
    """Raise ValueError unless ``name`` can name a service (1-64 letters, digits, '_', '.', '-')."""
    if not SERVICE_NAME.fullmatch(name):
        raise ValueError(f"invalid service name {name!r}: use 1-64 letters, digits, '_', '.', '-'")


def replica_job_id(service: str, rid: str) -> str:
    return f"{REPLICA_PREFIX}{service}.{rid}"


def parse_replica_job_id(job_id: str) -> tuple[str, str] | None:
    """(service, rid) of a replica launch's job id, None for anything else (a job, a malformed id)."""
    if not job_id.startswith(REPLICA_PREFIX):
        return None
    service, dot, rid = job_id[len(REPLICA_PREFIX) :].rpartition(".")
    if not dot or not _RID.fullmatch(rid) or not SERVICE_NAME.fullmatch(service):
        return None
    return service, rid


def rid_number(rid: str) -> int:
    return int(rid[1:])


def same_spec(saved: str, spec: ServiceSpec) -> bool:
    """Compared as models: a field added since (at its default) does not roll every replica."""
    try:
        return ServiceSpec.model_validate_json(saved, context=STORED) == spec
    except ValueError:  # a field gone since: it cannot be the same spec
        return False


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    backend: str
    attempt: int
    pool_id: str
    provider: str
    purchase: str
    url: str
    version: int
    fallback: bool
    launched_at: float
    port: int = 0  # OVERCAST_REPLICA_PORT: the url ("" until the backend says where it runs) ends with it

    def replica(self, rid: str) -> Replica:
        """The recorded replica as the plan sees it before a probe has passed: launching."""
        return Replica(
            rid, self.pool_id, self.provider, Purchase(self.purchase), ReplicaState.LAUNCHING, self.version,
            self.fallback,
        )  # fmt: skip


@dataclass(slots=True)
class LedgerState:
    spec: str | None = None  # the spec (JSON) of ``version``
    version: int = 0
    target: int | None = None
    next_rid: int = 0  # rids are never reused, even for replicas whose record is gone
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)


class ServiceLedger:
    def __init__(self, home: Path, name: str) -> None:
        check_service_name(name)
        self.dir = home / "services" / name
        self.path = self.dir / "ledger.json"
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Take the service's lock or raise ServiceBusy."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ServiceBusy(f"service {self.dir.name} is already run by another controller") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> LedgerState:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return LedgerState()
        replicas = {rid: ReplicaRecord(**rec) for rid, rec in raw.get("replicas", {}).items()}
        return LedgerState(
            raw.get("spec"), raw.get("version", 0), raw.get("target"), raw.get("next_rid", 0), replicas
        )

    def save(self, state: LedgerState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {
            "spec": state.spec,
            "version": state.version,
            "target": state.target,
            "next_rid": state.next_rid,
            "replicas": {rid: asdict(rec) for rid, rec in state.replicas.items()},
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as out:
            out.write(json.dumps(data))
            out.flush()
            os.fsync(out.fileno())  # the record must be on disk before the launch it describes
        os.replace(tmp, self.path)
