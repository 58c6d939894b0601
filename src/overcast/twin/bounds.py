"""Cost lower bounds: LPs (HiGHS via scipy) that no schedule of a run can beat.

Every bound here is a relaxation: any schedule of the run, written in the LP's variables, is a feasible
point, so the LP optimum is at most the schedule's cost. Tests check bound <= cost on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from overcast.placement.pool import Pool, Purchase

Job = tuple  # (submit s, GPU-seconds to occupy, spot allowed[, nodes]); nodes defaults to 1


@dataclass(frozen=True, slots=True)
class LowerBound:
    cost: float
    rule: str


TIME_BOUND_RULE = (
    "time-indexed fluid LP: the reservation fee over the run, plus the GPU-hours every finished job must "
    "occupy (its useful work and its first provisioning, at the shortest provisioning of a pool it may use) "
    "spread over pools at each pool's price in one-hour slots, where no work runs before its job was "
    "submitted, a job's work only goes to pools large enough for its whole gang, and a pool holds in each "
    "slot at most what any schedule could use (nominal size, the replayed spot share for spot pools, nothing "
    "while its provider is down); no gang packing, no lost work"
)
AT_RUN_PACE_RULE = (
    "the time-indexed LP with one more constraint: by the end of every slot, for each class of jobs (spot "
    "allowed or not, gang size), at least the work of the jobs this run had finished is done (no more "
    "backlog than the run had); the cheapest any schedule completing work as fast as this run could be. "
    "It is not a bound for slower schedules"
)
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


def _class_of(job: Job) -> tuple[bool, int]:
    return (bool(job[2]), int(job[3]) if len(job) > 3 else 1)


def _fits(cls: tuple[bool, int], pool: Pool) -> bool:
    """A job of this class may run on the pool at all: spot only when allowed, and the whole gang fits
    the pool's nominal size (a gang runs on one pool; no schedule can split it)."""
    spot, nodes = cls
    if pool.purchase is Purchase.SPOT and not spot:
        return False
    return pool.capacity_nodes is None or pool.capacity_nodes >= nodes


@dataclass(slots=True)
class _TimeLP:
    """The time-indexed LP's arrays: x = [y[c, p, t] for each (class, pool) column, then b[c, t]]."""

    price: np.ndarray
    a_eq: sparse.csr_array
    b_eq: np.ndarray
    a_ub: sparse.csr_array
    b_ub: np.ndarray
    upper: np.ndarray  # bounds on x (lower bounds are 0)
    classes: list[tuple[bool, int]]
    released: dict[tuple[bool, int], np.ndarray]  # GPU-hours released per class and slot
    n_y: int


def _time_lp(
    jobs: list[Job], pools: list[Pool], usable_gpu_s: dict[str, np.ndarray], edges: np.ndarray
) -> _TimeLP | None:
    n_slots = len(edges) - 1
    classes = sorted({_class_of(j) for j in jobs})
    if not classes or n_slots < 1:
        return None
    released = {c: np.zeros(n_slots) for c in classes}
    for job in jobs:
        t = min(max(int(np.searchsorted(edges, job[0], side="right")) - 1, 0), n_slots - 1)
        released[_class_of(job)][t] += job[1] / 3600.0
    cols = [(c, p) for c in classes for p in pools if _fits(c, p)]
    if {c for c, _ in cols} != set(classes):
        return None  # a class fits no pool: it cannot have finished, so the caller passed bad input
    n_y = len(cols) * n_slots
    n_b = len(classes) * n_slots
    price = np.concatenate(
        [np.full(n_slots, p.marginal_price_per_node_hour / p.gpus_per_node) for _, p in cols]
        + [np.zeros(n_b)]
    )
    ci = {c: i for i, c in enumerate(classes)}
    t = np.arange(n_slots)
    # backlog equalities: sum_p y[c,p,t] + b[c,t] - b[c,t-1] = released[c,t]
    rows, colx, vals = [], [], []
    for k, (c, _) in enumerate(cols):
        rows.append(ci[c] * n_slots + t)
        colx.append(k * n_slots + t)
        vals.append(np.ones(n_slots))
    for i in range(len(classes)):
        rows += [i * n_slots + t, i * n_slots + t[1:]]
        colx += [n_y + i * n_slots + t, n_y + i * n_slots + t[:-1]]
        vals += [np.ones(n_slots), -np.ones(n_slots - 1)]
    a_eq = sparse.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(colx))), shape=(n_b, n_y + n_b)
    )
    b_eq = np.concatenate([released[c] for c in classes])
    # pool capacity per slot: sum_c y[c,p,t] <= usable
    pos = {p.id: i for i, p in enumerate(pools)}
    rows, colx = [], []
    for k, (_, p) in enumerate(cols):
        rows.append(pos[p.id] * n_slots + t)
        colx.append(k * n_slots + t)
    a_ub = sparse.csr_array(
        (np.ones(n_y), (np.concatenate(rows), np.concatenate(colx))), shape=(len(pools) * n_slots, n_y + n_b)
    )
    b_ub = np.concatenate([usable_gpu_s[p.id] / 3600.0 for p in pools])
    upper = np.full(n_y + n_b, np.inf)
    upper[n_y + n_slots - 1 :: n_slots] = 0.0  # every class: everything done by the end
    return _TimeLP(price, a_eq, b_eq, a_ub, b_ub, upper, classes, released, n_y)


def time_indexed_lower_bound(
    jobs: list[Job],
    pools: list[Pool],
    usable_gpu_s: dict[str, np.ndarray],
    edges: np.ndarray,
    reserved_fee: float,
    ends: list[float] | None = None,
) -> LowerBound | None:
    """``jobs``: (submit, GPU-seconds to occupy, spot allowed[, nodes]); ``usable_gpu_s``: per pool, the
    most GPU-seconds any schedule could use in each slot between ``edges``. Jobs fall into classes
    (spot allowed, gang size); a class may use the pools its gangs fit. Variables: y[c, p, t] GPU-hours of
    class c in pool p in slot t, and backlog b[c, t] (released, not yet done, at the end of slot t):
    b[c, t] = b[c, t-1] + released[c, t] - sum_p y[c, p, t], b >= 0, b[c, T-1] = 0. Any schedule gives a
    feasible point (work cannot run before its submit; a gang runs in one pool; pools hold what they can),
    so the optimum is a valid bound. None when the LP fails (the caller falls back to the timeless bound).

    With ``ends`` (when each job finished in the run), each class's backlog at each slot's end may not
    exceed the run's (work of jobs submitted but not yet finished): the cheapest schedule that completes
    work at least as fast as this run did (``AT_RUN_PACE_RULE``)."""
    lp = _time_lp(jobs, pools, usable_gpu_s, edges)
    if lp is None:
        return None
    n_slots = len(edges) - 1
    if ends is not None:
        done = {c: np.zeros(n_slots) for c in lp.classes}
        for job, end in zip(jobs, ends, strict=True):
            # done by the end of slot k: edges[k] < end <= edges[k+1]
            k = min(max(int(np.searchsorted(edges, end, side="left")) - 1, 0), n_slots - 1)
            done[_class_of(job)][k] += job[1] / 3600.0
        for i, c in enumerate(lp.classes):
            cap = np.maximum(np.cumsum(lp.released[c]) - np.cumsum(done[c]), 0.0) + 1e-6
            cols = lp.n_y + i * n_slots + np.arange(n_slots)
            lp.upper[cols] = np.minimum(lp.upper[cols], cap)
    res = linprog(
        lp.price, A_ub=lp.a_ub, b_ub=lp.b_ub, A_eq=lp.a_eq, b_eq=lp.b_eq,
        bounds=np.stack([np.zeros(len(lp.price)), lp.upper], 1), method="highs",
    )  # fmt: skip
    if not res.success:
        return None
    return LowerBound(reserved_fee + float(res.fun), AT_RUN_PACE_RULE if ends else TIME_BOUND_RULE)
