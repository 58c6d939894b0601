"""A target far above what the pools hold costs one failed try per purchase kind, not one per replica."""

from __future__ import annotations

from overcast.placement.pool import Purchase
from overcast.serve.replicas import plan_replicas
from overcast.spec.models import ServiceSpec, SpotHedge
from tests.serve.test_replicas import pool

TARGET = 100_000  # above the spec's bound: plan_replicas takes the target from the autoscaler


def test_no_room_is_one_problem_not_one_per_replica() -> None:
    plan = plan_replicas(ServiceSpec(name="s"), TARGET, 1, [], [])
    assert plan.launch == [] and len(plan.problems) == 1, len(plan.problems)


def test_full_pools_stop_the_plan_at_their_room() -> None:
    pools = [pool("aws", Purchase.ON_DEMAND, free=2), pool("gcp", Purchase.ON_DEMAND, free=1)]
    plan = plan_replicas(ServiceSpec(name="s"), TARGET, 1, [], pools)
    assert len(plan.launch) == 3
    assert [p for p in plan.problems if p.startswith("no pool")] == [
        "no pool for a on-demand replica (on-demand base)"
    ]


def test_spot_hedge_falls_back_until_on_demand_is_full_too() -> None:
    spec = ServiceSpec(name="s", spot_hedge=SpotHedge(base_on_demand=0, dynamic_fallback=True))
    pools = [pool("aws", Purchase.SPOT, free=2), pool("aws", Purchase.ON_DEMAND, free=3)]
    plan = plan_replicas(spec, TARGET, 1, [], pools)
    kinds = sorted((launch.fallback, "spot" in launch.pool_id) for launch in plan.launch)
    assert kinds == [(False, True)] * 2 + [(True, False)] * 3  # every node either kind has
    assert len(plan.problems) < 10, plan.problems[:10]
