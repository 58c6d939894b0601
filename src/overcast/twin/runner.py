"""Run a scenario under several policies with the same seed, world and workload."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from overcast.catalog.offer import Offer
from overcast.placement.pool import Pool
from overcast.twin.arrivals import shape_arrivals
from overcast.twin.availability import AvailabilityTrace, load_availability
from overcast.twin.backend import TwinBackend
from overcast.twin.clock import VirtualClock
from overcast.twin.engine import Engine
from overcast.twin.loaders import load_trace
from overcast.twin.metrics import summarize, wall_metrics
from overcast.twin.policies import make_policy
from overcast.twin.pools import build_pools
from overcast.twin.scenario import PoolSpec, Scenario
from overcast.twin.workload import SimJob, scale_jobs, to_sim_jobs

Progress = Callable[[str, float], None]  # (policy, fraction done)


@dataclass
class PolicyRun:
    policy: str
    metrics: dict
    series: dict
    wall: dict


@dataclass
class World:
    """Everything the policies share: priced pools, replayed traces, the workload."""

    pools: list[tuple[Pool, PoolSpec]]
    traces: dict[str, AvailabilityTrace]
    jobs: list[SimJob]


def build_world(scenario: Scenario, seed: int, offers: list[Offer] | None = None) -> World:
    if offers is None:
        from overcast.catalog.load import load_offers

        offers = load_offers()
    pools = build_pools(scenario, offers)
    traces = {
        pool.id: load_availability(spec.spot_trace.source, spec.spot_trace.series)
        for pool, spec in pools
        if spec.spot_trace is not None
    }
    for pool in (p for p, _ in pools):
        if pool.id in traces:  # what the scheduler may assume: the trace's reclaim rate
            t = traces[pool.id]
            drops = int(np.sum(np.diff(t.share) < 0))
            pool.preemptions_per_hour = round(drops / (t.period / 3600.0), 4)
    w = scenario.workload
    rng = np.random.default_rng(seed)
    raw = load_trace(w.trace, w.files, rng)
    duration = scenario.duration_days * 86400.0
    raw = scale_jobs(raw, w.jobs or len(raw), duration, rng)
    raw = shape_arrivals(raw, w.arrivals, duration, rng)
    jobs = to_sim_jobs(
        raw,
        gpu_scale=w.gpu_scale,
        gpus_per_node=w.gpus_per_node,
        speedup=w.speedup,
        spot_fraction=w.spot_fraction,
        max_hours=w.max_job_hours,
        max_nodes=w.max_nodes,
        teams=w.teams,
        rng=rng,
    )
    return World(pools, traces, jobs)


def run_policy(
    scenario: Scenario,
    world: World,
    policy_name: str,
    seed: int,
    progress: Callable[[float], None] | None = None,
) -> PolicyRun:
    duration = scenario.duration_days * 86400.0
    horizon = duration + scenario.drain_days * 86400.0
    clock = VirtualClock()
    backend = world_backend(scenario, world, seed, clock)
    policy = make_policy(
        policy_name,
        scenario.home_provider,
        scenario.spillover_order,
        scenario.decide_options,
        scenario.burst_limit_node_hours,
    )
    engine = Engine(
        clock,
        backend,
        policy,
        world.jobs,
        accelerator=scenario.workload.accelerator,
        gpus_per_node=scenario.workload.gpus_per_node,
        cycle_seconds=scenario.cycle_seconds,
        cooldown_seconds=scenario.capacity_cooldown_minutes * 60.0,
        arrivals_end=duration,
        horizon=horizon,
        sample_seconds=max(scenario.cycle_seconds, duration / 400.0),
    )
    started = time.perf_counter()
    engine.run(None if progress is None else lambda t: progress(min(1.0, t / duration)))
    wall = time.perf_counter() - started
    series = {
        "hours": [round(s.t / 3600.0, 3) for s in engine.samples],
        "cost": [round(s.cost, 2) for s in engine.samples],
        "queued": [s.queued for s in engine.samples],
        "gpus_by_provider": {
            prov: [s.gpus_by_provider.get(prov, 0) for s in engine.samples]
            for prov in sorted({p.provider for p, _ in world.pools})
        },
        "jct_hours": sorted(
            round((r.end - r.job.submit) / 3600.0, 4) for r in engine.records.values() if r.end is not None
        ),
    }
    return PolicyRun(policy_name, summarize(engine, horizon), series, wall_metrics(engine, wall))


def world_backend(scenario: Scenario, world: World, seed: int, clock: VirtualClock) -> TwinBackend:
    """The simulated providers with their replayed traces, stock-outs and outages on ``clock``: the same
    for every policy run of one scenario and seed."""
    horizon = (scenario.duration_days + scenario.drain_days) * 86400.0
    pools = [(copy.deepcopy(p), spec) for p, spec in world.pools]  # pools are mutable state
    backend = TwinBackend(
        clock,
        [(p, spec.nodes, spec.provision_minutes * 60.0) for p, spec in pools],
        checkpoint_seconds=scenario.checkpoint_minutes * 60.0,
        restart_overhead_seconds=scenario.restart_overhead_minutes * 60.0,
    )
    rng = np.random.default_rng([seed, 1])  # the world's randomness: identical for every policy
    for pool, spec in pools:
        if spec.spot_trace is not None:
            backend.schedule_trace(
                pool.id, world.traces[pool.id], spec.spot_trace.offset_hours * 3600, horizon
            )
        if spec.stockouts is not None:
            s = spec.stockouts
            backend.schedule_stockouts(pool.id, s.per_day, s.mean_hours, s.share_left, horizon, rng)
    for outage in scenario.outages:
        clock.at(outage.start_hour * 3600.0, backend.set_down, outage.provider, True)
        clock.at((outage.start_hour + outage.hours) * 3600.0, backend.set_down, outage.provider, False)
    return backend


def capacity_timeline(scenario: Scenario, world: World, seed: int) -> TwinBackend:
    """The world with no jobs, played to the window's end: each pool's ``changes`` say what any schedule
    could have used when (for the bounds that need no policy run)."""
    clock = VirtualClock()
    backend = world_backend(scenario, world, seed, clock)
    clock.run_until((scenario.duration_days + scenario.drain_days) * 86400.0)
    return backend


def run_scenario(
    scenario: Scenario,
    policies: list[str] | None = None,
    seed: int | None = None,
    progress: Progress | None = None,
    offers: list[Offer] | None = None,
) -> list[PolicyRun]:
    seed = scenario.seed if seed is None else seed
    world = build_world(scenario, seed, offers)
    runs = []
    for name in policies or scenario.policies:
        cb = None if progress is None else (lambda f, n=name: progress(n, f))
        runs.append(run_policy(scenario, world, name, seed, cb))
    return runs
