"""The yield option in the twin (azure-lab-oci): the room a stopped gang yields is held for the jobs
that wait for it, they all start, no pool is overcommitted and no gang is stopped by yield twice; a bad
burst_yield fails when the policy is made, not mid-run."""

from __future__ import annotations

import pytest
import yaml

from overcast.scheduler.snapshot import Decisions, Snapshot
from overcast.twin.clock import VirtualClock
from overcast.twin.engine import Engine
from overcast.twin.policies import OvercastPolicy, Policy, make_policy
from overcast.twin.runner import build_world, world_backend
from overcast.twin.scenario import Scenario, parse_scenario
from tests.twin.helpers import EXAMPLES, needs_data


class _Watch:
    """The policy, watched: which jobs wait for yielded room, and where they start after."""

    def __init__(self, inner: Policy) -> None:
        self.inner, self.name = inner, inner.name
        self.waiting: set[str] = set()
        self.started: dict[str, float] = {}  # job that waited -> marginal price of the pool it started on
        self.stops: list[str] = []  # gangs stopped by yield, once per stop

    def decide(self, snapshot: Snapshot) -> Decisions:
        d = self.inner.decide(snapshot)
        price = {p.id: p.marginal_price_per_node_hour for p in snapshot.pools}
        for p in d.place:
            if p.job_id in self.waiting:
                self.waiting.discard(p.job_id)
                self.started[p.job_id] = price[p.pool_id]
        self.waiting |= {j for j, why in d.unplaced.items() if "room yielded by" in why}
        self.stops += [p.job_id for p in d.preempt if p.reason.startswith("yields ")]
        return d


def _run(scenario: Scenario) -> tuple[Engine, _Watch]:
    world = build_world(scenario, scenario.seed)
    clock = VirtualClock()
    policy = _Watch(
        make_policy(
            "overcast-burst", scenario.home_provider, scenario.spillover_order,
            scenario.decide_options, scenario.burst_limit_node_hours,
        )
    )  # fmt: skip
    duration = scenario.duration_days * 86400.0
    engine = Engine(
        clock, world_backend(scenario, world, scenario.seed, clock), policy, world.jobs,
        accelerator=scenario.workload.accelerator, gpus_per_node=scenario.workload.gpus_per_node,
        cycle_seconds=scenario.cycle_seconds, cooldown_seconds=scenario.capacity_cooldown_minutes * 60.0,
        arrivals_end=duration, horizon=duration + scenario.drain_days * 86400.0, sample_seconds=duration,
    )  # fmt: skip
    engine.run()
    return engine, policy


@needs_data
def test_jobs_waiting_for_yielded_room_start_there_and_no_pool_is_overcommitted() -> None:
    data = yaml.safe_load((EXAMPLES / "azure-lab-oci.yaml").read_text())
    # as a scenario file writes it: decide_options are flat
    data.update(burst_limit_node_hours=64, decide_options={"burst_yield": "min_nodes=8 min_hours_left=40"})
    engine, watch = _run(parse_scenario(data, "azure-lab-oci.yaml"))
    assert watch.stops and watch.started and not watch.waiting  # every job that waited started
    assert engine.stats.max_overcommit == 0
    assert all(r.end is not None for r in engine.records.values())
    # bounded: yield stops a gang at most once (the engine lists a stopped job as gone at once)
    assert len(watch.stops) == len(set(watch.stops))
    # some start in the held room; others pay list price when a gang that is no longer fresh retakes it
    assert any(price == 0 for price in watch.started.values())


@pytest.mark.parametrize("value", [1, "max_per_cycle=inf", "min_nodes=eight", "min_nodes=8.7"])
def test_a_bad_burst_yield_fails_when_the_policy_is_made(value: object) -> None:
    with pytest.raises(ValueError, match=r"^burst_yield: "):
        OvercastPolicy({"burst_yield": value})
