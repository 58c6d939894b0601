"""Policies the twin compares on the same scenario and seed.

``overcast`` is the production scheduler, ``overcast.scheduler.decide.decide``, called unchanged. The
baselines are deliberately simple stand-ins for how labs place work today; they see the same snapshot
and go through the same backend, so only the deciding differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from overcast.placement.pool import Pool, Purchase
from overcast.scheduler.snapshot import Decisions, PendingJob, Place, Snapshot
from overcast.spec.models import JobSpec, SpotPolicy


class Policy(Protocol):
    name: str

    def decide(self, snapshot: Snapshot) -> Decisions: ...


class OvercastPolicy:
    """The production decide(): the point of the twin is that this is the same code path. Its options
    are read through the same model as a fleet file's ``scheduler:`` section (scheduler/options.py), so a
    bad name or value fails when the policy is made, in one line, not mid-run."""

    def __init__(self, options: Mapping[str, object] | None = None, name: str = "overcast") -> None:
        self.name = name
        from overcast.scheduler.options import parse_options

        self.options = parse_options(options or {})
        try:
            self._decide: Callable[[Snapshot], Decisions] = self.options.decide()
        except ImportError as err:  # the scheduler module is missing from this install
            raise RuntimeError(f"policy 'overcast' needs overcast.scheduler.decide ({err})") from None

    def decide(self, snapshot: Snapshot) -> Decisions:
        return self._decide(snapshot)


def compatible(pool: Pool, spec: JobSpec) -> bool:
    """Same accelerator and count per node; spot only when the job allows it."""
    want = spec.resources.accelerators[0]
    if pool.accelerator != want.name or pool.gpus_per_node != want.count:
        return False
    if pool.purchase is Purchase.SPOT:
        return spec.resources.spot is not SpotPolicy.NEVER
    return spec.resources.spot is not SpotPolicy.REQUIRED


def _first_fit(
    snapshot: Snapshot, ordered: Callable[[PendingJob], list[Pool]], use_capacity: bool, reason: str
) -> Decisions:
    """FIFO over the queue; each job takes the first pool in its order with room (no global view)."""
    start = time.perf_counter()
    free = {p.id: p.free_nodes for p in snapshot.pools}
    out = Decisions()
    for job in sorted(snapshot.pending, key=lambda j: (j.submitted_at, j.id)):
        for pool in ordered(job):
            room = free[pool.id]
            if use_capacity and room is not None and room < job.spec.num_nodes:
                continue
            out.place.append(Place(job.id, pool.id, job.spec.num_nodes, reason))
            if room is not None:
                free[pool.id] = room - job.spec.num_nodes
            break
        else:
            out.unplaced[job.id] = "no pool with room in this policy's order"
    out.seconds = time.perf_counter() - start
    return out


def _candidates(snapshot: Snapshot, job: PendingJob, *, honour_health: bool) -> list[Pool]:
    return [
        p
        for p in snapshot.pools
        if compatible(p, job.spec)
        and p.provider not in snapshot.disabled_providers
        and p.id not in job.avoid_pools
        and (p.usable(snapshot.now) if honour_health else p.health != "down")
    ]


class SingleProvider:
    """Everything on the home provider: reservation first, then its on-demand (and spot if allowed)."""

    name = "single-provider"

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def decide(self, snapshot: Snapshot) -> Decisions:
        def order(job: PendingJob) -> list[Pool]:
            pools = [p for p in _candidates(snapshot, job, honour_health=True) if p.provider == self.provider]
            return sorted(
                pools, key=lambda p: (p.purchase is not Purchase.RESERVED, p.price_per_node_hour, p.id)
            )

        return _first_fit(snapshot, order, True, f"single provider {self.provider}")


class Spillover:
    """MultiKueue-style incremental dispatch: reserved/on-prem first, then the next cloud in a fixed
    order; within a cloud, on-demand before spot. Price plays no part."""

    name = "spillover"

    def __init__(self, order: list[str]) -> None:
        self.rank = {p: i for i, p in enumerate(order)}

    def decide(self, snapshot: Snapshot) -> Decisions:
        def order(job: PendingJob) -> list[Pool]:
            pools = [p for p in _candidates(snapshot, job, honour_health=True) if p.provider in self.rank]
            return sorted(
                pools,
                key=lambda p: (
                    p.purchase is not Purchase.RESERVED,
                    self.rank[p.provider],
                    p.purchase is Purchase.SPOT,
                    p.id,
                ),
            )

        return _first_fit(snapshot, order, True, "fixed-order spillover")


class CheapestFirst:
    """SkyPilot-launcher style: each job on its own tries the cheapest pool it may use (reserved
    counts as free) and fails over to the next on a capacity error; no queue-wide view of capacity
    or of what other jobs learned (only the job's own blocklist)."""

    name = "cheapest-first"

    def decide(self, snapshot: Snapshot) -> Decisions:
        def order(job: PendingJob) -> list[Pool]:
            pools = _candidates(snapshot, job, honour_health=False)
            return sorted(pools, key=lambda p: (p.marginal_price_per_node_hour, p.id))

        return _first_fit(snapshot, order, False, "cheapest available, per job")


POLICY_NAMES = ("overcast", "overcast-burst", "single-provider", "spillover", "cheapest-first")


def make_policy(
    name: str,
    home_provider: str,
    spillover_order: list[str],
    decide_options: Mapping[str, object] | None = None,
    burst_limit_node_hours: float = 8.0,
) -> Policy:
    """``overcast-burst``: the same decide() with its burst limit on (``scheduler/burst.py``)."""
    if name == "overcast":
        return OvercastPolicy(decide_options)
    if name == "overcast-burst":
        options = {**(decide_options or {}), "burst_limit_node_hours": burst_limit_node_hours}
        return OvercastPolicy(options, name=name)
    if name == "single-provider":
        return SingleProvider(home_provider)
    if name == "spillover":
        return Spillover(spillover_order)
    if name == "cheapest-first":
        return CheapestFirst()
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
