"""Exact class MILP with HiGHS, passed as numpy CSC arrays (no per-variable Python objects).

Variables: y_c in [0, ub_c] integer per class column, and for classes that need the priority rule a binary
z_k (1 = every member placed). Rows:
  class       sum_c y_c <= count_k                      (and sum_c y_c - count_k z_k >= 0 where z_k exists)
  pool        sum n_k y_c <= capacity_p
  priority    for a column (k, p) where a lower-priority class can use p: unless class k is fully placed,
              p must not have room for one more member even with lower-priority jobs removed:
              sum_{l: prio_l >= prio_k} n_l y_lp + (cap_p - n_k + 1) z_k >= cap_p - n_k + 1
Objective: min sum (cost_c - penalty_k) y_c, plus the constant sum penalty_k count_k.

The same builder serves the whole problem and the LNS neighbourhoods (a subset of columns, counts and
capacities; ``must_place`` marks classes whose members would otherwise break the rule outside it).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from overcast.placement.batch.classes import ClassModel
from overcast.placement.batch.fill import priority_ranks


@dataclass(frozen=True)
class MilpResult:
    y: np.ndarray | None  # class counts over all columns (None: no incumbent)
    optimal: bool
    dual_bound: float  # HiGHS' bound on the objective of this (sub)model
    status: str


def solve_milp(
    cm: ClassModel,
    cols: np.ndarray,
    count: np.ndarray,
    capacity: np.ndarray,
    *,
    time_limit: float,
    warm: np.ndarray | None = None,
    must_place: np.ndarray | None = None,
    gap: float = 1e-4,
    priority: bool = True,
) -> MilpResult:
    """Solve over ``cols`` with ``count`` jobs per class and ``capacity`` per pool available to them.
    ``warm`` is a feasible y over all columns (only ``cols`` are read). ``priority=False`` leaves the
    priority rows out (a relaxation: if its optimum keeps the rule, it is the optimum)."""
    cols = np.asarray(cols, dtype=np.int64)
    cls_all = cm.col_class
    cls = cls_all[cols]
    pools = cm.col_pool[cols]
    n = cm.nodes[cls]
    cap_fin = np.isfinite(capacity)
    fit = np.where(cap_fin[pools], np.floor(np.where(cap_fin[pools], capacity[pools], 0) / n), np.inf)
    ub = np.minimum(count[cls], fit)
    n_cols = cols.size
    # Classes present, renumbered 0..k-1.
    used_cls, cls_loc = np.unique(cls, return_inverse=True)
    n_k = used_cls.size
    rank, _ = priority_ranks(cm)
    # Priority rows: column (k, p) with p finite and some lower-priority column at p.
    p_min_rank = np.full(capacity.shape[0], np.iinfo(np.int64).max)
    np.minimum.at(p_min_rank, pools, rank[cls])
    prio_cols = np.flatnonzero(cap_fin[pools] & (p_min_rank[pools] < rank[cls]) & priority)
    z_cls = np.unique(cls_loc[prio_cols])
    if must_place is not None:
        z_cls = np.union1d(z_cls, np.flatnonzero(must_place[used_cls]))
    z_of = np.full(n_k, -1, dtype=np.int64)
    z_of[z_cls] = n_cols + np.arange(z_cls.size)
    # One auxiliary u_(p,r) = nodes used at p by ranks >= r, shared by all priority rows at (p, r).
    pr_key = pools[prio_cols] * (int(rank.max(initial=0)) + 1) + rank[cls[prio_cols]]
    pr_unique, pr_of = np.unique(pr_key, return_inverse=True)
    u_base = n_cols + z_cls.size
    n_var = u_base + pr_unique.size
    rows, vcols, vals = [], [], []
    lo, hi = [], []
    # Class rows.
    rows.append(cls_loc)
    vcols.append(np.arange(n_cols))
    vals.append(np.ones(n_cols))
    lo.append(np.full(n_k, -np.inf))
    hi.append(count[used_cls].astype(np.float64))
    r0 = n_k
    # Full-class rows for z: sum y - count z >= 0.
    if z_cls.size:
        zr = r0 + np.arange(z_cls.size)
        row_of = np.full(n_k, -1, dtype=np.int64)
        row_of[z_cls] = zr
        sel = row_of[cls_loc] >= 0
        rows += [row_of[cls_loc][sel], zr]
        vcols += [np.flatnonzero(sel), z_of[z_cls]]
        vals += [np.ones(int(sel.sum())), -count[used_cls[z_cls]].astype(np.float64)]
        lo.append(np.zeros(z_cls.size))
        hi.append(np.full(z_cls.size, np.inf))
        r0 += z_cls.size
    # Pool rows (finite capacity only).
    fin_pools = np.unique(pools[cap_fin[pools]])
    prow = np.full(capacity.shape[0], -1, dtype=np.int64)
    prow[fin_pools] = r0 + np.arange(fin_pools.size)
    sel = prow[pools] >= 0
    rows.append(prow[pools][sel])
    vcols.append(np.flatnonzero(sel))
    vals.append(n[sel].astype(np.float64))
    lo.append(np.full(fin_pools.size, -np.inf))
    hi.append(capacity[fin_pools].astype(np.float64))
    r0 += fin_pools.size
    # Definition rows u_(p,r) - sum_{c at p, rank >= r} n_c y_c = 0, then priority rows
    # u_(p, r_k) + big z_k >= big with big = cap_p - n_k + 1.
    if prio_cols.size:
        n_levels = int(rank.max(initial=0)) + 1
        u_pool, u_rank = pr_unique // n_levels, pr_unique % n_levels
        u_index = np.full((capacity.shape[0], n_levels), -1, dtype=np.int64)
        u_index[u_pool, u_rank] = np.arange(pr_unique.size)
        for r in np.unique(u_rank).tolist():
            at = np.flatnonzero((u_index[pools, r] >= 0) & (rank[cls] >= r))
            rows.append(r0 + u_index[pools[at], r])
            vcols.append(at)
            vals.append(n[at].astype(np.float64))
        rows.append(r0 + np.arange(pr_unique.size))
        vcols.append(u_base + np.arange(pr_unique.size))
        vals.append(-np.ones(pr_unique.size))
        lo.append(np.zeros(pr_unique.size))
        hi.append(np.zeros(pr_unique.size))
        r0 += pr_unique.size
        big = capacity[pools[prio_cols]] - n[prio_cols] + 1
        pr_rows = r0 + np.arange(prio_cols.size)
        rows += [pr_rows, pr_rows]
        vcols += [u_base + pr_of, z_of[cls_loc[prio_cols]]]
        vals += [np.ones(prio_cols.size), big.astype(np.float64)]
        lo.append(big.astype(np.float64))
        hi.append(np.full(prio_cols.size, np.inf))
        r0 += prio_cols.size
    n_rows = r0
    a_mat = sp.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(vcols))), shape=(n_rows, n_var)
    )
    a_mat.sort_indices()
    col_lower = np.zeros(n_var)
    col_upper = np.concatenate((ub, np.ones(z_cls.size), np.full(pr_unique.size, np.inf)))
    if must_place is not None and z_cls.size:
        col_lower[n_cols : n_cols + z_cls.size] = must_place[used_cls[z_cls]].astype(np.float64)
    cost = np.concatenate((cm.col_cost[cols] - cm.penalty[cls], np.zeros(n_var - n_cols)))
    lp = highspy.HighsLp()
    lp.num_col_ = n_var
    lp.num_row_ = n_rows
    lp.col_cost_ = cost
    lp.col_lower_ = col_lower
    lp.col_upper_ = col_upper
    lp.row_lower_ = np.concatenate(lo)
    lp.row_upper_ = np.concatenate(hi)
    lp.offset_ = float((cm.penalty[used_cls] * count[used_cls]).sum())
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = a_mat.indptr.astype(np.int32)
    lp.a_matrix_.index_ = a_mat.indices.astype(np.int32)
    lp.a_matrix_.value_ = a_mat.data
    lp.a_matrix_.num_col_ = n_var
    lp.a_matrix_.num_row_ = n_rows
    lp.integrality_ = [highspy.HighsVarType.kInteger] * (n_var - pr_unique.size) + [
        highspy.HighsVarType.kContinuous
    ] * pr_unique.size
    h = new_highs()
    h.setOptionValue("time_limit", max(float(time_limit), 0.01))
    h.setOptionValue("mip_rel_gap", gap)
    h.setOptionValue("threads", 1)
    h.passModel(lp)
    if warm is not None:
        start = highspy.HighsSolution()
        yw = warm[cols].astype(np.float64)
        full = np.bincount(cls_loc, weights=yw, minlength=n_k) >= count[used_cls]
        u_warm = np.zeros(pr_unique.size)
        if prio_cols.size:
            n_levels = int(rank.max(initial=0)) + 1
            u_pool, u_rank = pr_unique // n_levels, pr_unique % n_levels
            for r in np.unique(u_rank).tolist():
                m = rank[cls] >= r
                use_r = np.bincount(pools[m], weights=(yw * n)[m], minlength=capacity.shape[0])
                u_warm[u_rank == r] = use_r[u_pool[u_rank == r]]
        start.col_value = list(np.concatenate((yw, full[z_cls].astype(np.float64), u_warm)))
        h.setSolution(start)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    if info.primal_solution_status != 2:  # 2 = feasible
        return MilpResult(None, False, float(info.mip_dual_bound), status)
    x = np.asarray(h.getSolution().col_value)[:n_cols]
    y = np.zeros(cm.n_cols, dtype=np.int64)
    y[cols] = np.rint(x).astype(np.int64)
    optimal = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return MilpResult(y, optimal, float(info.mip_dual_bound), status)


_banner_shown = False


def new_highs() -> highspy.Highs:
    """A silent Highs instance. The first construction in a process prints a licence banner from C++
    straight to file descriptor 1; swallow it so CLI tables and benchmark output stay clean."""
    global _banner_shown
    if _banner_shown:
        h = highspy.Highs()
    else:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 1)
                h = highspy.Highs()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        _banner_shown = True
    h.setOptionValue("output_flag", False)
    return h
