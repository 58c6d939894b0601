"""Fluent builders for pools, jobs and snapshots (Kueue style): ``make_job().gpus("H100", 8).nodes(2)``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overcast.placement.pool import Health, Pool, Purchase
from overcast.scheduler.snapshot import PendingJob, Quota, RunningJob, Snapshot
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources, SpotPolicy


def make_pool(
    provider: str = "aws",
    region: str = "us-east-1",
    accelerator: str = "H100",
    gpus: int = 8,
    purchase: Purchase = Purchase.ON_DEMAND,
    price: float = 98.0,
    capacity: int | None = None,
    used: int = 0,
    zone: str | None = None,
    instance_type: str | None = None,
    **kwargs: Any,
) -> Pool:
    instance_type = instance_type or f"{accelerator.lower()}x{gpus}"
    pool_id = f"{provider}/{region}/{zone or '-'}/{instance_type}/{purchase.value}"
    return Pool(
        id=kwargs.pop("id", pool_id),
        provider=provider,
        region=region,
        zone=zone,
        instance_type=instance_type,
        accelerator=accelerator,
        gpus_per_node=gpus,
        purchase=purchase,
        price_per_node_hour=price,
        capacity_nodes=capacity,
        used_nodes=used,
        **kwargs,
    )


@dataclass
class JobBuilder:
    _name: str = "job"
    _accels: list[AcceleratorRequest] = field(default_factory=list)
    _nodes: int = 1
    _resources: dict[str, Any] = field(default_factory=dict)
    _spec: dict[str, Any] = field(default_factory=dict)

    def named(self, name: str) -> JobBuilder:
        self._name = name
        return self

    def gpus(self, name: str, count: int) -> JobBuilder:
        self._accels.append(AcceleratorRequest(name=name, count=count))
        return self

    def nodes(self, n: int) -> JobBuilder:
        self._nodes = n
        return self

    def priority(self, p: int) -> JobBuilder:
        self._spec["priority"] = p
        return self

    def team(self, team: str) -> JobBuilder:
        self._spec["team"] = team
        return self

    def hours(self, h: float) -> JobBuilder:
        self._spec["expected_hours"] = h
        return self

    def checkpoint(self, path: str = "s3://ckpt/job") -> JobBuilder:
        self._spec["checkpoint_dir"] = path
        return self

    def spot(self, policy: SpotPolicy) -> JobBuilder:
        self._resources["spot"] = policy
        return self

    def with_(self, **resources: Any) -> JobBuilder:
        self._resources.update(resources)
        return self

    def build(self) -> JobSpec:
        res = Resources(accelerators=tuple(self._accels), **self._resources)
        return JobSpec(name=self._name, resources=res, num_nodes=self._nodes, **self._spec)

    def pending(self, job_id: str | None = None, submitted_at: float = 0.0, **kwargs: Any) -> PendingJob:
        return PendingJob(id=job_id or self._name, spec=self.build(), submitted_at=submitted_at, **kwargs)

    def running(self, pool: Pool, job_id: str | None = None, started_at: float = 0.0) -> RunningJob:
        return RunningJob(
            id=job_id or self._name,
            spec=self.build(),
            pool_id=pool.id,
            nodes=self._nodes,
            attempt=1,
            started_at=started_at,
        )


def make_job(name: str = "job") -> JobBuilder:
    return JobBuilder(_name=name)


def make_snapshot(
    pools: list[Pool],
    pending: list[PendingJob],
    running: list[RunningJob] | None = None,
    quotas: list[Quota] | None = None,
    disabled: frozenset[str] = frozenset(),
    now: float = 1000.0,
) -> Snapshot:
    return Snapshot(
        now=now,
        pools=pools,
        pending=pending,
        running=running or [],
        quotas=quotas or [],
        disabled_providers=disabled,
    )


__all__ = ["Health", "Purchase", "SpotPolicy", "make_job", "make_pool", "make_snapshot"]
