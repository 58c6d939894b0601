"""The serving twin on a small synthetic scenario (the real traces are exercised by bench/serve_twin.py)."""

import numpy as np

from overcast.serve.simulate import ServingScenario, compare, simulate


def scenario(spot_outage: bool) -> ServingScenario:
    ticks = 200
    zones = {"z-a": [4] * ticks, "z-b": [4] * ticks}
    if spot_outage:  # both zones lose their spot capacity for a while
        for z in zones:
            zones[z][50:120] = [0] * 70
    return ServingScenario(
        zones=zones,
        tick_seconds=150,
        rps=np.full(ticks, 35.0),
        spot_price={"z-a": 1.0, "z-b": 1.0},
        on_demand_price={"z-a": 3.0, "z-b": 3.0},
        target_rps_per_replica=10,
        min_replicas=2,
        max_replicas=8,
    )


def test_spot_outage_hurts_spot_only_but_not_overcast():
    on_demand, spot_only, overcast = compare(scenario(spot_outage=True))
    assert spot_only.availability < 0.8  # no replicas during the outage
    assert overcast.availability > 0.97  # on-demand fallback took over
    assert overcast.cost < on_demand.cost
    assert spot_only.preemptions > 0 and on_demand.preemptions == 0


def test_without_outage_overcast_costs_less_than_on_demand_at_full_availability():
    on_demand, spot_only, overcast = compare(scenario(spot_outage=False))
    assert abs(on_demand.availability - overcast.availability) < 0.005
    assert abs(on_demand.availability - spot_only.availability) < 0.005
    assert spot_only.cost < overcast.cost < on_demand.cost


def test_deterministic():
    a, b = simulate(scenario(True), "overcast"), simulate(scenario(True), "overcast")
    assert (a.cost, a.served, a.preemptions) == (b.cost, b.served, b.preemptions)
