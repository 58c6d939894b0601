"""Large-neighbourhood search: free a few related pools, re-solve them exactly, keep what improves.

A neighbourhood starts at a random used pool; its pools are those where the classes placed there (and
left-out classes that could go there) also have columns, so moves can trade capacity between pools of
the same kind. The sub-MILP (milp.solve_milp) re-assigns the freed members and the left-out ones over
those pools, warm-started from the current solution, with the priority rule inside and ``must_place``
for classes that would break it in a pool outside the neighbourhood. A step is kept only if the
objective strictly drops, so the search never makes the solution worse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from overcast.placement.batch.classes import ClassModel
from overcast.placement.batch.fill import priority_ranks
from overcast.placement.batch.milp import solve_milp


@dataclass
class LnsStats:
    steps: int = 0
    accepted: int = 0


def improve(
    cm: ClassModel,
    y: np.ndarray,
    deadline: float,
    *,
    seed: int = 0,
    guide: np.ndarray | None = None,
    pools_per_step: int = 6,
    max_cols: int = 2000,
    step_limit: float = 0.3,
) -> tuple[np.ndarray, LnsStats]:
    """Improve integer class counts ``y`` until ``deadline`` (perf_counter). ``guide`` (the LP solution)
    steers the seed pools towards those whose use differs most from the LP's."""
    rng = np.random.default_rng(seed)
    y = y.copy()
    stats = LnsStats()
    cls = cm.col_class
    n_pools = cm.capacity.shape[0]
    rank, n_levels = priority_ranks(cm)
    pool_cols = np.argsort(cm.col_pool, kind="stable")
    pool_ptr = np.searchsorted(cm.col_pool[pool_cols], np.arange(n_pools + 1))
    nodes_col = cm.nodes[cls]
    density = cm.density()
    guide_use = (
        None if guide is None else np.bincount(cm.col_pool, weights=guide * nodes_col, minlength=n_pools)
    )
    while time.perf_counter() < deadline - 0.02:
        stats.steps += 1
        placed = np.bincount(cls, weights=y, minlength=cm.n_classes).astype(np.int64)
        left = cm.count - placed
        used = np.bincount(cm.col_pool, weights=y * nodes_col, minlength=n_pools)
        busy = np.flatnonzero(used > 0)
        if busy.size == 0:
            break
        if guide_use is not None and rng.random() < 0.7:
            diff = np.abs(used - guide_use)
            seed_pool = (
                int(rng.choice(n_pools, p=diff / diff.sum())) if diff.sum() > 0 else int(rng.choice(busy))
            )
        else:
            seed_pool = int(rng.choice(busy))
        # Classes touching the seed pool: placed there, or left out and able to go there.
        at_seed = pool_cols[pool_ptr[seed_pool] : pool_ptr[seed_pool + 1]]
        at_seed = at_seed[(y[at_seed] > 0) | (left[cls[at_seed]] > 0)]
        related = np.unique(cls[at_seed])
        if related.size == 0:
            continue
        if related.size > 64:
            related = rng.choice(related, 64, replace=False)
        # Pools where those classes have columns, sampled with weight = how many of them connect.
        their_cols = np.concatenate([np.arange(cm.col_indptr[k], cm.col_indptr[k + 1]) for k in related])
        cand_pools, weight = np.unique(cm.col_pool[their_cols], return_counts=True)
        cand_pools, weight = cand_pools[cand_pools != seed_pool], weight[cand_pools != seed_pool]
        k_more = min(pools_per_step - 1, cand_pools.size)
        extra = rng.choice(cand_pools, k_more, replace=False, p=weight / weight.sum()) if k_more else []
        hood = np.concatenate(([seed_pool], extra)).astype(np.int64)
        in_hood = np.zeros(n_pools, dtype=bool)
        in_hood[hood] = True
        cols = np.concatenate([pool_cols[pool_ptr[p] : pool_ptr[p + 1]] for p in hood.tolist()])
        in_s = np.bincount(cls[cols], weights=y[cols], minlength=cm.n_classes).astype(np.int64)
        take = (in_s[cls[cols]] > 0) | (left[cls[cols]] > 0)
        cols = cols[take]
        if cols.size > max_cols:
            # Keep every column in use (its members are freed, its capacity counted as free); fill up
            # with the most valuable other columns per node.
            used_col = y[cols] > 0
            score = np.where(used_col, np.inf, density[cls[cols]])
            keep = max(max_cols, int(used_col.sum()))
            cols = cols[np.argsort(-score, kind="stable")[:keep]]
        count = np.zeros(cm.n_classes, dtype=np.int64)
        sub_cls = np.unique(cls[cols])
        count[sub_cls] = in_s[sub_cls] + left[sub_cls]
        capacity = np.where(in_hood, cm.capacity, 0.0)
        must_place = _must_place(cm, y, sub_cls, in_hood, used, rank, n_levels, nodes_col)
        before = _sub_objective(cm, cols, y, count, sub_cls)
        res = solve_milp(
            cm,
            cols,
            count,
            capacity,
            time_limit=min(step_limit, max(deadline - time.perf_counter(), 0.01)),
            warm=y,
            must_place=must_place,
        )
        if res.y is None:
            continue
        after = _sub_objective(cm, cols, res.y, count, sub_cls)
        if after < before - 1e-9 * max(1.0, abs(before)):
            y[cols] = res.y[cols]
            stats.accepted += 1
    return y, stats


def _sub_objective(
    cm: ClassModel, cols: np.ndarray, y: np.ndarray, count: np.ndarray, sub_cls: np.ndarray
) -> float:
    cls = cm.col_class[cols]
    put = np.bincount(cls, weights=y[cols], minlength=cm.n_classes)
    return float(cm.col_cost[cols] @ y[cols] + (cm.penalty[sub_cls] * (count[sub_cls] - put[sub_cls])).sum())


def _must_place(
    cm: ClassModel,
    y: np.ndarray,
    sub_cls: np.ndarray,
    in_hood: np.ndarray,
    used: np.ndarray,
    rank: np.ndarray,
    n_levels: int,
    nodes_col: np.ndarray,
) -> np.ndarray:
    """Classes that must stay fully placed: some pool outside the neighbourhood would have room for a
    member (counting lower-priority usage), so leaving one out would break the priority rule there."""
    free = cm.capacity - used
    if n_levels > 1:
        nz = np.flatnonzero(y)
        level_use = np.zeros((cm.capacity.shape[0], n_levels))
        np.add.at(level_use, (cm.col_pool[nz], rank[cm.col_class[nz]]), (y * nodes_col)[nz])
        lower_cum = np.cumsum(level_use, axis=1) - level_use  # usage by strictly lower ranks
    must = np.zeros(cm.n_classes, dtype=bool)
    for k in sub_cls.tolist():
        a, b = cm.col_indptr[k], cm.col_indptr[k + 1]
        pools = cm.col_pool[a:b]
        pools = pools[~in_hood[pools]]
        if pools.size == 0:
            continue
        room = free[pools]
        if n_levels > 1:
            room = room + lower_cum[pools, rank[k]]
        must[k] = bool((room >= cm.nodes[k]).any())
    return must
