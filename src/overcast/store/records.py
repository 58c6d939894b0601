"""What the store returns: plain immutable values, never ORM objects or rows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Row

from overcast.spec.models import STORED, JobSpec, ServiceSpec
from overcast.store.states import JobState


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    team: str
    name: str
    spec: JobSpec
    state: JobState
    priority: int
    attempt: int  # attempts launched so far (0 before the first launch)
    pool_id: str | None
    backend: str | None
    nodes: int | None
    restarts: int  # preemption-type restarts used
    failures: int  # self-failure retries used
    submitted_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    cancel_requested: bool
    reason: str | None  # last reason (why pending, why failed)


class EventRecord(NamedTuple):
    id: int
    job_id: str | None
    at: float
    kind: str
    detail: str


class LaunchRecord(NamedTuple):
    job_id: str
    attempt: int
    pool_id: str
    backend: str
    handle: str
    ended: bool


@dataclass(frozen=True, slots=True)
class LaunchTerms:
    """What billing needs about a launch, frozen when it is made: a later catalog or price change
    must not rewrite what past launches cost."""

    provider: str
    purchase: str  # a placement.pool.Purchase value: reserved / on-demand / spot
    nodes: int
    gpus_per_node: int
    accelerator: str
    price_per_node_hour: float  # list price at launch time


class OpenLaunch(NamedTuple):
    """An open launch as budgets see it: when it began billing, and its frozen $/node-hour."""

    launched_at: float
    billed_per_node_hour: float | None  # list price at launch, 0 when reserved; None: recorded before 0004


class PoolHealthRecord(NamedTuple):
    health: str  # a placement.pool.Health value
    until: float | None
    failures: int
    detail: str


def job_record(row: Mapping[str, Any] | Row[Any], spec: JobSpec | None = None) -> JobRecord:
    """A JobRecord from a ``jobs`` row (or the dict that was inserted); ``spec`` skips re-parsing it."""
    m = row if isinstance(row, Mapping) else row._mapping
    return JobRecord(
        id=m["id"],
        team=m["team"],
        name=m["name"],
        spec=spec if spec is not None else JobSpec.model_validate_json(m["spec"], context=STORED),
        state=JobState(m["state"]),
        priority=m["priority"],
        attempt=m["attempt"],
        pool_id=m["pool_id"],
        backend=m["backend"],
        nodes=m["nodes"],
        restarts=m["restarts"],
        failures=m["failures"],
        submitted_at=m["submitted_at"],
        updated_at=m["updated_at"],
        started_at=m["started_at"],
        ended_at=m["ended_at"],
        cancel_requested=bool(m["cancel_requested"]),
        reason=m["reason"],
    )


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    id: str  # "s-..." : names the service's replica launches and its controller's ledger
    team: str
    name: str
    spec: ServiceSpec
    version: int  # +1 for every accepted change of the spec
    state: str  # "active" | "deleting"
    lb_port: int | None
    status: dict[str, Any]  # what its controller last reported (ready replicas, target, load balancer)
    submitted_at: float
    updated_at: float


def service_record(row: Mapping[str, Any] | Row[Any]) -> ServiceRecord:
    m = row if isinstance(row, Mapping) else row._mapping
    return ServiceRecord(
        id=m["id"],
        team=m["team"],
        name=m["name"],
        spec=ServiceSpec.model_validate_json(m["spec"], context=STORED),
        version=m["version"],
        state=m["state"],
        lb_port=m["lb_port"],
        status=json.loads(m["status"] or "{}"),
        submitted_at=m["submitted_at"],
        updated_at=m["updated_at"],
    )
