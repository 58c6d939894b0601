"""Metrics of one run, and the cost lower bound every policy is measured against.

All figures are derived from the virtual run only, so the same scenario and seed give the same
numbers; wall-clock figures (decide() time, events/s) are kept apart in ``wall``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog

from overcast.placement.pool import Pool, Purchase
from overcast.twin.engine import Engine


def _pct(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else 0.0


def _r(x: float, nd: int = 4) -> float:
    return round(float(x), nd)


@dataclass(frozen=True, slots=True)
class LowerBound:
    cost: float
    rule: str


LOWER_BOUND_RULE = (
    "fluid LP relaxation: the reservation fee over the run, plus the useful GPU-hours of finished jobs "
    "(split by whether they allow spot) spread over pools at each pool's price, where a pool can take at "
    "most the node-hours its provider offered during the run (replayed spot share, stock-outs; no gangs, no "
    "queueing, no provisioning, no lost work)"
)


def cost_lower_bound(
    demand_gpu_h: dict[bool, float], pools: list[Pool], offered_gpu_h: dict[str, float], reserved_fee: float
) -> LowerBound:
    """A bound no schedule of this run can beat; see ``LOWER_BOUND_RULE``."""
    classes = [c for c in (False, True) if demand_gpu_h.get(c, 0.0) > 0]
    if not classes:
        return LowerBound(reserved_fee, LOWER_BOUND_RULE)
    cols = [(c, p) for c in classes for p in pools if c or p.purchase is not Purchase.SPOT]
    price = [p.marginal_price_per_node_hour / p.gpus_per_node for _, p in cols]
    a_eq = [[1.0 if c == cls else 0.0 for c, _ in cols] for cls in classes]
    b_eq = [demand_gpu_h[c] for c in classes]
    a_ub = [[1.0 if p.id == pool.id else 0.0 for _, p in cols] for pool in pools]
    b_ub = [offered_gpu_h.get(pool.id, 0.0) for pool in pools]
    res = linprog(price, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if not res.success:  # cannot happen for work that was really done; fall back to the fee alone
        return LowerBound(reserved_fee, LOWER_BOUND_RULE + " [LP infeasible: fee only]")
    return LowerBound(reserved_fee + float(res.fun), LOWER_BOUND_RULE)


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
    lb = cost_lower_bound(demand, pools, offered, reserved_fee)
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
        "cost_over_lower_bound": _r(total / lb.cost if lb.cost else 0.0),
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
