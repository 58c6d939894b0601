"""Metrics of one run, and the cost lower bound every policy is measured against.

All figures are derived from the virtual run only, so the same scenario and seed give the same
numbers; wall-clock figures (decide() time, events/s) are kept apart in ``wall``.
"""

from __future__ import annotations

import numpy as np

from overcast.placement.pool import Pool, Purchase
from overcast.twin.bounds import (
    AT_RUN_PACE_RULE,
    LOWER_BOUND_RULE,
    TIME_BOUND_RULE,
    LowerBound,
    cost_lower_bound,
    time_indexed_lower_bound,
)
from overcast.twin.engine import Engine
from overcast.twin.jct_bound import mean_jct_lower_bound

MEAN_JCT_BOUND_MAX_JOBS = 20_000  # the LP sorts the finishable jobs per slot: bundled scenarios, not 1M

__all__ = [
    "AT_RUN_PACE_RULE",
    "LOWER_BOUND_RULE",
    "TIME_BOUND_RULE",
    "cost_lower_bound",
    "summarize",
    "time_indexed_lower_bound",
    "wall_metrics",
]


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


def summarize(engine: Engine, horizon_s: float) -> dict:
    """Deterministic metrics of one run (no wall-clock values)."""
    backend = engine.backend
    gpn = engine.gpus_per_node
    pools = list(engine.pools.values())
    ledger = backend.ledger
    end = engine.end_time
    finished = [r for r in engine.records.values() if r.end is not None]
    jct = np.array([r.end - r.job.submit for r in finished]) / 3600.0
    wait = (
        np.array(
            [r.first_launch - r.job.submit for r in engine.records.values() if r.first_launch is not None]
        )
        / 3600.0
    )
    useful_gpu_h = sum(r.job.work * r.job.nodes * gpn for r in finished) / 3600.0
    paid_by_pool = dict(ledger.paid_node_seconds)
    for s in backend.state.values():  # runs still going when the simulation stopped
        for run in s.runs.values():
            paid_by_pool[s.pool.id] = paid_by_pool.get(s.pool.id, 0.0) + (end - run.launched_at) * run.nodes
    paid_gpu_h = sum(v * engine.pools[k].gpus_per_node for k, v in paid_by_pool.items()) / 3600.0
    reserved_span = horizon_s  # the reservation's term: the whole simulated window, same for every policy
    reserved_fee = (
        sum(p.price_per_node_hour * (p.capacity_nodes or 0) for p in pools if p.purchase is Purchase.RESERVED)
        * reserved_span
        / 3600.0
    )
    usage_cost = sum(
        v / 3600.0 * engine.pools[k].marginal_price_per_node_hour for k, v in paid_by_pool.items()
    )
    # utilisation while there was work (up to the last job's end), not over the idle tail of the term
    reserved_cap_h = (
        sum((p.capacity_nodes or 0) * p.gpus_per_node for p in pools if p.purchase is Purchase.RESERVED)
        * max(end, 1.0)
        / 3600.0
    )
    reserved_used_h = (
        sum(
            v * engine.pools[k].gpus_per_node
            for k, v in paid_by_pool.items()
            if engine.pools[k].purchase is Purchase.RESERVED
        )
        / 3600.0
    )
    total = reserved_fee + usage_cost
    by_provider: dict[str, float] = {}
    for k, v in paid_by_pool.items():
        p = engine.pools[k]
        by_provider[p.provider] = by_provider.get(p.provider, 0.0) + v * p.gpus_per_node / 3600.0
    team_h: dict[str, float] = {}
    for r in finished:
        team_h[r.job.team] = team_h.get(r.job.team, 0.0) + r.job.work * r.job.nodes * gpn / 3600.0
    demand = {
        c: sum(r.job.work * r.job.nodes * gpn for r in finished if r.job.spot_ok == c) / 3600.0
        for c in (False, True)
    }
    offered = {pid: s.offered(end) * s.pool.gpus_per_node / 3600.0 for pid, s in backend.state.items()}
    timeless = cost_lower_bound(demand, pools, offered, reserved_fee)
    timed, at_pace = _time_bounds(engine, finished, pools, end, reserved_fee)
    at_jct = None
    if len(finished) == len(engine.records) and len(jct) <= MEAN_JCT_BOUND_MAX_JOBS:
        at_jct = _mean_jct_bound(engine, finished, pools, horizon_s, reserved_fee, float(jct.mean()))
    lb = timed or timeless
    lb = max(lb, timeless, key=lambda b: b.cost)  # both are valid: report the larger
    return {
        "jobs": len(engine.records),
        "finished": len(finished),
        "unfinished": len(engine.records) - len(finished),
        "simulated_hours": _r(end / 3600.0, 2),
        "cost_total": _r(total, 2),
        "cost_reserved_fee": _r(reserved_fee, 2),
        "cost_usage": _r(usage_cost, 2),
        "cost_per_useful_gpu_hour": _r(total / useful_gpu_h if useful_gpu_h else 0.0),
        "cost_lower_bound": _r(lb.cost, 2),
        "cost_lower_bound_timeless": _r(timeless.cost, 2),
        "cost_lower_bound_at_run_pace": _r(at_pace.cost, 2) if at_pace else None,
        "cost_over_bound_at_run_pace": _r(total / at_pace.cost) if at_pace and at_pace.cost else None,
        "cost_over_lower_bound": _r(total / lb.cost if lb.cost else 0.0),
        "cost_lower_bound_at_run_mean_jct": _r(at_jct.cost, 2) if at_jct else None,
        "jct_hours": {
            "mean": _r(jct.mean() if len(jct) else 0.0),
            "p50": _r(_pct(jct, 50)),
            "p99": _r(_pct(jct, 99)),
        },
        "queue_delay_hours": {
            "mean": _r(wait.mean() if len(wait) else 0.0),
            "p50": _r(_pct(wait, 50)),
            "p99": _r(_pct(wait, 99)),
        },
        "gpu_hours": {
            "useful": _r(useful_gpu_h, 2),
            "paid": _r(paid_gpu_h, 2),
            "lost_to_preemption": _r(ledger.lost_gpu_seconds / 3600.0, 2),
            "overhead": _r(ledger.overhead_gpu_seconds / 3600.0, 2),
        },
        "goodput": _r(useful_gpu_h / paid_gpu_h if paid_gpu_h else 0.0),
        "reserved_utilisation": _r(reserved_used_h / reserved_cap_h if reserved_cap_h else 0.0),
        "paid_gpu_hours_by_provider": {k: _r(v, 2) for k, v in sorted(by_provider.items())},
        "team_share": {k: _r(v / useful_gpu_h if useful_gpu_h else 0.0) for k, v in sorted(team_h.items())},
        "preemptions": {"provider": ledger.preemptions, "scheduler": engine.stats.scheduler_preemptions},
        "launch_failures": engine.stats.launch_failures,
        "max_overcommit_nodes": engine.stats.max_overcommit,
        "restarts": sum(max(0, r.attempts - 1) for r in engine.records.values()),
        "cycles": engine.stats.cycles,
        "decisions": engine.stats.decisions,
        "events": engine.clock.events_processed + engine.stats.arrivals,  # clock events + job arrivals
        "lower_bound_rule": lb.rule,
    }


def _bound_jobs(engine: Engine, finished: list) -> tuple[list[tuple], list[float]]:
    """Per finished job: (submit, GPU-seconds it must occupy, spot allowed, nodes) and its shortest
    duration; both count its work plus the shortest provisioning of a pool it may use."""
    states = engine.backend.state
    prov = {
        c: min(
            (s.provision_seconds for s in states.values() if c or s.pool.purchase is not Purchase.SPOT),
            default=0.0,
        )
        for c in (False, True)
    }
    gpn = engine.gpus_per_node
    jobs = [
        (r.job.submit, (r.job.work + prov[r.job.spot_ok]) * r.job.nodes * gpn, r.job.spot_ok, r.job.nodes)
        for r in finished
    ]
    return jobs, [r.job.work + prov[r.job.spot_ok] for r in finished]


def _time_bounds(
    engine: Engine, finished: list, pools: list[Pool], end: float, fee: float, *, pace: bool = True
) -> tuple[LowerBound | None, LowerBound | None]:
    """The time-indexed bound and the bound at this run's pace (one-hour slots, at most 2,000)."""
    states = engine.backend.state
    slot = max(3600.0, end / 2000.0)
    edges = np.append(np.arange(0.0, end, slot), end) if end > 0 else np.array([0.0])
    jobs, _ = _bound_jobs(engine, finished)
    usable = {pid: s.usable_node_seconds(edges) * s.pool.gpus_per_node for pid, s in states.items()}
    at_pace = None
    if pace:
        at_pace = time_indexed_lower_bound(jobs, pools, usable, edges, fee, ends=[r.end for r in finished])
    return time_indexed_lower_bound(jobs, pools, usable, edges, fee), at_pace


def _mean_jct_bound(
    engine: Engine, finished: list, pools: list[Pool], horizon: float, fee: float, mean_jct_h: float
) -> LowerBound | None:
    """The cheapest any schedule finishing these jobs within the scenario window at this run's mean JCT
    or better could be (``jct_bound.MEAN_JCT_RULE``; one-hour slots)."""
    states = engine.backend.state
    edges = np.append(np.arange(0.0, horizon, max(3600.0, horizon / 2000.0)), horizon)
    jobs, durations = _bound_jobs(engine, finished)
    usable = {pid: s.usable_node_seconds(edges) * s.pool.gpus_per_node for pid, s in states.items()}
    return mean_jct_lower_bound(jobs, durations, pools, usable, edges, fee, mean_jct_h)


def wall_metrics(engine: Engine, wall_seconds: float) -> dict:
    """Wall-clock figures: they vary run to run, so they live apart from the deterministic ones."""
    times = np.array(engine.stats.decide_seconds) * 1000.0
    return {
        "wall_seconds": _r(wall_seconds, 3),
        "decide_ms_per_cycle": {
            "mean": _r(times.mean() if len(times) else 0.0),
            "p50": _r(_pct(times, 50)),
            "p99": _r(_pct(times, 99)),
            "max": _r(times.max() if len(times) else 0.0),
        },
        "decide_seconds_total": _r(times.sum() / 1000.0, 3),
        "events_per_second": _r(
            (engine.clock.events_processed + engine.stats.arrivals) / wall_seconds if wall_seconds else 0.0, 1
        ),
        "decisions_per_second": _r(engine.stats.decisions / wall_seconds if wall_seconds else 0.0, 1),
    }
