"""The cheapest any schedule could be at a given mean JCT: a lower bound on cost under a service level.

Why: "cost <= a baseline that waits" and "mean JCT <= the fastest baseline" can conflict. This LP says
how much any schedule with mean JCT <= J must cost at least, so a target that asks for both can be shown
out of reach (when the bound exceeds the cheap baseline's cost) or not ruled out (when it does not).

The LP is the time-indexed one (``bounds._time_lp``: work after submit, gangs only on pools they fit,
pool capacity per slot, everything done by the window's end) plus a count of finished jobs F[t] per
slot. Any schedule that finishes every job by the window's end with mean JCT <= J is a feasible point:

- F[t] (jobs finished by the end of slot t) is at most the number of jobs that could have finished by
  then (submit + shortest duration <= the slot's end), and never decreases;
- the work done by the end of slot t is at least the sum of the F[t] smallest jobs among those (the sum
  of the k smallest is convex in k; it is imposed as ``pieces`` supporting lines per slot, each below
  it, so fewer pieces only loosen the bound);
- each job finishing in slot t ended after the slot's start, so
  sum_t start(t) * (F[t] - F[t-1]) - sum(submit) <= N * J.

What it leaves out, so it can only be lower than the truth: gang packing, lost work, restarts, each
job's own speed limit (its gang size), and up to one slot of each job's completion time.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from overcast.placement.pool import Pool
from overcast.twin.bounds import Job, LowerBound, _time_lp

MEAN_JCT_RULE = (
    "the time-indexed LP over the scenario's whole window plus finished-job counts per slot (work done >= "
    "the smallest jobs that could have finished; completions counted from the start of their slot; mean "
    "JCT <= the given one): the cheapest any schedule with that mean JCT or better could be"
)


def mean_jct_lower_bound(
    jobs: list[Job],
    durations_s: list[float],
    pools: list[Pool],
    usable_gpu_s: dict[str, np.ndarray],
    edges: np.ndarray,
    reserved_fee: float,
    mean_jct_h: float,
    pieces: int = 48,
) -> LowerBound | None:
    """``jobs`` as in ``bounds.time_indexed_lower_bound``; ``durations_s``: each job's shortest time from
    submit to end (its runtime plus the shortest provisioning). None when the LP fails, or is infeasible
    (no schedule, even in the relaxation, reaches ``mean_jct_h``)."""
    lp = _time_lp(jobs, pools, usable_gpu_s, edges)
    if lp is None:
        return None
    n_slots, n_jobs, n_x = len(edges) - 1, len(jobs), len(lp.price)
    n_classes = len(lp.classes)
    f0 = n_x  # F[t] columns follow the time-indexed LP's own
    n_all = n_x + n_slots
    done_total = sum(np.cumsum(lp.released[c]) for c in lp.classes)  # released GPU-h by each slot's end
    gpu_h = np.array([j[1] for j in jobs]) / 3600.0
    ready = np.array([j[0] for j in jobs]) + np.asarray(durations_s, dtype=float)
    order = np.argsort(ready, kind="stable")
    eligible = np.searchsorted(ready[order], edges[1:], side="right")  # jobs that could be done per slot
    rows, cols, vals, rhs = [], [], [], []
    for t in range(n_slots):
        m = int(eligible[t])
        if m == 0:
            continue
        w = np.sort(gpu_h[order[:m]])
        prefix = np.concatenate(([0.0], np.cumsum(w)))
        for k in _pieces(prefix, pieces):
            # done(t) = released(t) - sum_c b[c, t] >= prefix[k] + w[k] * (F[t] - k)
            r = len(rhs)
            rows += [r] * (n_classes + 1)
            cols += [lp.n_y + i * n_slots + t for i in range(n_classes)] + [f0 + t]
            vals += [1.0] * n_classes + [float(w[k])]
            rhs.append(float(done_total[t] - prefix[k] + w[k] * k))
    work_rows = sparse.csr_array((vals, (rows, cols)), shape=(len(rhs), n_all))
    # mean JCT: sum_t edges[t] * (F[t] - F[t-1]) <= N * J + sum(submit)
    coef = np.append(edges[:-2] - edges[1:-1], edges[-2])
    jct_row = sparse.csr_array(
        (coef, (np.zeros(n_slots, dtype=np.int64), f0 + np.arange(n_slots))), shape=(1, n_all)
    )
    jct_rhs = n_jobs * mean_jct_h * 3600.0 + float(sum(j[0] for j in jobs))
    # F never decreases: F[t-1] - F[t] <= 0
    t = np.arange(1, n_slots)
    mono = sparse.csr_array(
        (np.concatenate([np.ones(n_slots - 1), -np.ones(n_slots - 1)]),
         (np.concatenate([t - 1, t - 1]), np.concatenate([f0 + t - 1, f0 + t]))),
        shape=(n_slots - 1, n_all),
    )  # fmt: skip
    pad_ub = sparse.hstack([lp.a_ub, sparse.csr_array((lp.a_ub.shape[0], n_slots))])
    a_ub = sparse.vstack([pad_ub, work_rows, jct_row, mono]).tocsr()
    b_ub = np.concatenate([lp.b_ub, rhs, [jct_rhs], np.zeros(n_slots - 1)])
    a_eq = sparse.hstack([lp.a_eq, sparse.csr_array((lp.a_eq.shape[0], n_slots))]).tocsr()
    f_lower = np.zeros(n_slots)
    f_lower[-1] = n_jobs  # every job is done by the window's end
    bounds = np.stack(
        [np.concatenate([np.zeros(n_x), f_lower]), np.concatenate([lp.upper, eligible.astype(float)])], 1
    )
    res = linprog(
        np.concatenate([lp.price, np.zeros(n_slots)]), A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=lp.b_eq,
        bounds=bounds, method="highs",
    )  # fmt: skip
    if not res.success:
        return None
    return LowerBound(reserved_fee + float(res.fun), MEAN_JCT_RULE)


def _pieces(prefix: np.ndarray, pieces: int) -> np.ndarray:
    """Which supporting lines to impose: k evenly spaced in count and in cumulative work (the function
    is steep where the big jobs are), at most 2 x ``pieces``; any subset keeps the bound valid."""
    m = len(prefix) - 1
    by_count = np.linspace(0, m - 1, min(pieces, m)).round().astype(np.int64)
    by_work = np.searchsorted(prefix, np.linspace(0, prefix[-1], pieces), side="right") - 1
    return np.unique(np.clip(np.concatenate([by_count, by_work]), 0, m - 1))
