"""Replica planning: which replicas to launch and which to retire, as a pure function.

Given the target count, the replicas that exist and the ranked pools a replica may use, the plan keeps
the spread (no provider above ``max_share_per_provider`` of the target), SpotHedge (a base of on-demand
replicas; spot for the rest; an on-demand fallback for every spot replica that is lost or not yet ready),
and rolling updates (new-version replicas come up before old ones are retired, so traffic never drops).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from overcast.placement.pool import Pool, Purchase
from overcast.spec.models import ServiceSpec


class ReplicaState(StrEnum):
    LAUNCHING = "launching"  # started, readiness probe not yet passed
    READY = "ready"
    FAILED = "failed"  # crashed, preempted or its provider went down: to be replaced


@dataclass(frozen=True, slots=True)
class Replica:
    id: str
    pool_id: str
    provider: str
    purchase: Purchase
    state: ReplicaState
    version: int
    fallback: bool = False  # an on-demand stand-in for a lost spot replica


@dataclass(frozen=True, slots=True)
class LiveReplica:
    replica: Replica
    backend: str
    job_id: str
    url: str
    launched_at: float
    ready_by: float  # not ready by then: replaced (the spec's readiness_probe.timeout_to_ready_seconds)
    next_probe: float = 0.0  # probes run every period_seconds, not every tick
    failures: int = 0  # consecutive failed probes of a ready replica


@dataclass(frozen=True, slots=True)
class Launch:
    pool_id: str
    version: int
    fallback: bool
    reason: str


@dataclass(slots=True)
class Plan:
    launch: list[Launch] = field(default_factory=list)
    retire: list[str] = field(default_factory=list)  # replica ids
    problems: list[str] = field(default_factory=list)  # why the target cannot be met


def _provider_cap(spec: ServiceSpec, target: int) -> int:
    return max(1, math.floor(spec.max_share_per_provider * target + 1e-9))


def plan_replicas(
    spec: ServiceSpec, target: int, version: int, replicas: list[Replica], pools: list[Pool]
) -> Plan:
    """``pools``: the pools a replica may use, best first (already filtered by the placement engine)."""
    plan = Plan()
    plan.retire.extend(r.id for r in replicas if r.state is ReplicaState.FAILED)
    live = [r for r in replicas if r.state is not ReplicaState.FAILED]
    current = [r for r in live if r.version == version]
    old = [r for r in live if r.version != version]
    hedge = spec.spot_hedge
    base_od = min(target, hedge.base_on_demand) if hedge else target

    # Primary replicas (not fallbacks) of the current version, by purchase kind.
    primary = [r for r in current if not r.fallback]
    primary_od = [r for r in primary if r.purchase is not Purchase.SPOT]
    primary_spot = [r for r in primary if r.purchase is Purchase.SPOT]
    want_od = base_od if hedge else target
    want_spot = target - want_od
    per_provider = Counter(r.provider for r in current)  # spread counts the current version only
    cap = _provider_cap(spec, target)
    taken: Counter[str] = Counter()  # nodes this plan takes per pool

    def choose(spot: bool, reason: str, fallback: bool = False) -> bool:
        # Spread first; if every pool that still has room is on a provider at its share (the others are
        # down or full), availability wins over spread and the plan says so.
        for relax in (False, True):
            for pool in pools:
                if (pool.purchase is Purchase.SPOT) != spot:
                    continue
                if not relax and per_provider[pool.provider] >= cap:
                    continue
                if pool.free_nodes is not None and pool.free_nodes - taken[pool.id] <= 0:
                    continue
                per_provider[pool.provider] += 1
                taken[pool.id] += 1
                plan.launch.append(Launch(pool.id, version, fallback, reason))
                if relax:
                    plan.problems.append(f"spread relaxed: {pool.provider} above its share ({reason})")
                return True
        plan.problems.append(f"no pool for a {'spot' if spot else 'on-demand'} replica ({reason})")
        return False

    # Taken nodes only grow, so once choose() fails for a purchase kind every later try fails too: each
    # loop stops there, or a big target would cost one pass over the pools (and a problem) per replica.
    for _ in range(want_od - len(primary_od)):
        if not choose(False, "on-demand base"):
            break
    missing_spot = want_spot - len(primary_spot)
    spot_room = True
    for _ in range(missing_spot):
        if spot_room and choose(True, "spot replica"):
            continue
        spot_room = False
        fallback = hedge is not None and hedge.dynamic_fallback
        if not (fallback and choose(False, "on-demand fallback: spot unavailable", fallback=True)):
            break

    # SpotHedge's dynamic fallback: one on-demand stand-in per spot replica not yet ready.
    fallbacks = [r for r in current if r.fallback]
    spot_not_ready = sum(1 for r in primary_spot if r.state is not ReplicaState.READY)
    if hedge and hedge.dynamic_fallback:
        need_fb = spot_not_ready + max(0, missing_spot)
        planned_fb = sum(1 for launch in plan.launch if launch.fallback)
        for _ in range(need_fb - len(fallbacks) - planned_fb):
            if not choose(False, "on-demand fallback while spot replicas come up", fallback=True):
                break
        surplus_fb = len(fallbacks) - need_fb
        # retire fallbacks no longer needed, not-ready ones first
        for r in sorted(fallbacks, key=lambda r: r.state is ReplicaState.READY)[: max(0, surplus_fb)]:
            plan.retire.append(r.id)
    else:
        plan.retire.extend(r.id for r in fallbacks)

    # Too many primaries (scale down): retire the not-ready ones first.
    extra_od = len(primary_od) - want_od
    extra_spot = len(primary_spot) - want_spot
    for group, extra in ((primary_od, extra_od), (primary_spot, extra_spot)):
        for r in sorted(group, key=lambda r: r.state is ReplicaState.READY)[: max(0, extra)]:
            plan.retire.append(r.id)

    # Rolling update: retire an old-version replica only once enough current ones are ready.
    ready_current = sum(1 for r in current if r.state is ReplicaState.READY and r.id not in plan.retire)
    removable = max(0, ready_current + len(old) - target)
    for r in sorted(old, key=lambda r: r.state is ReplicaState.READY)[:removable]:
        plan.retire.append(r.id)
    return plan
