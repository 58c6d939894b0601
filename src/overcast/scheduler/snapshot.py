"""Snapshot in, Decisions out: the scheduler's only inputs and outputs.

``scheduler.decide(snapshot) -> Decisions`` is a pure function. The control loop builds snapshots from
the store and backends; the digital twin builds them from simulated providers. Same code path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overcast.placement.pool import Pool
from overcast.spec.models import JobSpec


@dataclass(slots=True)
class PendingJob:
    id: str
    spec: JobSpec
    submitted_at: float
    attempt: int = 0  # attempts so far; the next launch is attempt + 1
    avoid_pools: frozenset[str] = frozenset()  # pools that just failed this job (soft blocklist)


@dataclass(slots=True)
class RunningJob:
    id: str
    spec: JobSpec
    pool_id: str
    nodes: int
    attempt: int
    started_at: float  # when this attempt started (launched, while it is still launching)
    # $/node-hour this attempt is billed at, frozen at its launch (0: reserved, already paid); None:
    # not known, its pool's current marginal price. Budgets hold it even when the pool is not listed.
    launch_price: float | None = None


@dataclass(slots=True)
class Quota:
    """At most ``max_gpus`` in use at once for a provider (and region, when given)."""

    provider: str
    region: str | None
    max_gpus: int


@dataclass(slots=True)
class Snapshot:
    now: float
    pools: list[Pool]
    pending: list[PendingJob]
    running: list[RunningJob] = field(default_factory=list)
    quotas: list[Quota] = field(default_factory=list)
    disabled_providers: frozenset[str] = frozenset()
    # team -> list-price dollars it has left this month (budget.py); a team absent is unlimited
    team_budgets: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Place:
    job_id: str
    pool_id: str
    nodes: int
    reason: str  # one line: why this pool


@dataclass(frozen=True, slots=True)
class Preempt:
    job_id: str
    reason: str  # e.g. "make room for train-big (priority 100) on oci/.../reserved"
    for_job: str | None = None  # the job it makes room for; None for a move (the reason may not name it)


@dataclass(slots=True)
class Decisions:
    place: list[Place] = field(default_factory=list)
    preempt: list[Preempt] = field(default_factory=list)
    unplaced: dict[str, str] = field(default_factory=dict)  # job id -> why it stays pending
    seconds: float = 0.0  # time the decide step took
    step_seconds: dict[str, float] = field(default_factory=dict)  # time per numbered step of decide()
