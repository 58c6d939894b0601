"""Greedy fill with priority repair, on class counts.

Classes are visited by priority (high first), then value density (penalty per node), then size. Each
left-out member goes to the cheapest column with free room. If none has room but some pool would have
room after removing lower-priority jobs, those jobs are evicted (lowest priority, lowest density first)
and re-queued; they are visited later because they rank lower. At the end no left-out job fits a pool
that pays off for it, even counting capacity held by lower-priority jobs (the checker's rule).

From y = 0 this is the fallback greedy; from a rounded LP or an LNS result it is the repair step.
"""

from __future__ import annotations

import numpy as np

from overcast.placement.batch.classes import ClassModel

# The (pool x priority level) usage matrix is dense; beyond this many cells, callers use the greedy from 0
# (which never needs to evict) instead of repairing.
MAX_LEVEL_CELLS = 20_000_000
_SCAN = 8  # columns tried one by one before switching to numpy


def visit_order(cm: ClassModel) -> np.ndarray:
    return np.lexsort((-cm.nodes, -cm.density(), -cm.priority))


def priority_ranks(cm: ClassModel) -> tuple[np.ndarray, int]:
    levels, rank = np.unique(cm.priority, return_inverse=True)
    return rank.astype(np.int64), max(int(levels.size), 1)


def fill(
    cm: ClassModel,
    y: np.ndarray | None = None,
    prefer: np.ndarray | None = None,
    order: str = "density",
    col_cap: np.ndarray | None = None,
) -> np.ndarray:
    """Return integer class counts: ``y`` (or zeros) completed and repaired as described above.
    ``prefer`` (one value per column, e.g. the LP solution) makes each class try its columns in
    decreasing preference before cost; ``order="value"`` visits classes by penalty, not density;
    ``col_cap`` caps each column's count (and switches eviction off: a later pass completes the job)."""
    y = np.zeros(cm.n_cols, dtype=np.int64) if y is None else np.asarray(y, dtype=np.int64).copy()
    cls = cm.col_class
    rank, n_levels = priority_ranks(cm)
    n_pools = cm.capacity.shape[0]
    evict = n_levels > 1 and n_pools * n_levels <= MAX_LEVEL_CELLS and col_cap is None
    placed = np.bincount(cls, weights=y, minlength=cm.n_classes).astype(np.int64)
    used = cm.usage(y)
    free = cm.capacity - used
    if evict:
        level_use = np.zeros((n_pools, n_levels))
        np.add.at(level_use, (cm.col_pool, rank[cls]), y * cm.nodes[cls])
        pool_cols = np.argsort(cm.col_pool, kind="stable")
        pool_ptr = np.searchsorted(cm.col_pool[pool_cols], np.arange(n_pools + 1))
        density = cm.density()
    indptr, nodes, count = cm.col_indptr, cm.nodes, cm.count
    if prefer is None:
        perm = np.arange(cm.n_cols)
    else:
        perm = np.lexsort((np.arange(cm.n_cols), -np.round(prefer, 9), cls))
    if col_cap is not None:
        # Only columns below their cap can take anyone: scanning the others (most of them, in the
        # LP-capped rounding pass) would change nothing and cost a vectorised pass per class.
        perm = perm[col_cap[perm] > y[perm]]
        indptr = np.concatenate(([0], np.cumsum(np.bincount(cls[perm], minlength=cm.n_classes))))
    col_pool = cm.col_pool[perm]
    # Python lists of only the first _SCAN columns of each class (what the scalar loop reads): converting
    # all columns cost 0.05 s per call at 1M columns.
    n_head = np.minimum(np.diff(indptr), _SCAN)
    head_ptr = np.concatenate(([0], np.cumsum(n_head)))
    head_idx = np.repeat(indptr[:-1], n_head) + (
        np.arange(int(head_ptr[-1])) - np.repeat(head_ptr[:-1], n_head)
    )
    col_pool_l, perm_l = col_pool[head_idx].tolist(), perm[head_idx].tolist()
    head_ptr_l = head_ptr.tolist()
    visit = visit_order(cm) if order == "density" else np.lexsort((-cm.penalty, -cm.priority))
    for k in visit.tolist():
        rem = int(count[k] - placed[k])
        if rem <= 0:
            continue
        a, b = indptr[k], indptr[k + 1]
        if a == b:
            continue
        n = nodes[k]
        # The first few columns in plain Python (usually enough: early exit), the rest vectorised.
        head = min(b, a + _SCAN)
        for h in range(head_ptr_l[k], head_ptr_l[k + 1]):
            p = col_pool_l[h]
            f = free[p]
            m = rem if f == np.inf else min(rem, int(f // n))
            c = perm_l[h]
            if m > 0 and col_cap is not None:
                m = min(m, int(col_cap[c] - y[c]))
            if m > 0:
                y[c] += m
                free[p] -= m * n
                placed[k] += m
                rem -= m
                if evict:
                    level_use[p, rank[k]] += m * n
                if rem == 0:
                    break
        if rem > 0 and head < b:
            pools = col_pool[head:b]
            fits = np.floor(free[pools] / n)
            if col_cap is not None:
                cols = perm[head:b]
                fits = np.minimum(fits, col_cap[cols] - y[cols])
            # Usually one or two columns take the rest: a scalar loop over those beats array passes.
            for i in np.flatnonzero(fits >= 1).tolist():
                f = fits[i]
                m = rem if f == np.inf else min(rem, int(f))
                c, p = perm[head + i], pools[i]
                y[c] += m
                free[p] -= m * n
                placed[k] += m
                rem -= m
                if evict:
                    level_use[p, rank[k]] += m * n
                if rem == 0:
                    break
        if rem <= 0 or not evict or rank[k] == 0:
            continue
        # Evict lower-priority jobs, one member at a time, in the cheapest pool where that makes room.
        pools = col_pool[a:b]
        while rem > 0:
            lower = level_use[pools, : rank[k]].sum(axis=1)
            ok = np.flatnonzero(free[pools] + lower >= n)
            if ok.size == 0:
                break
            i = int(ok[0])
            p = int(pools[i])
            cols = pool_cols[pool_ptr[p] : pool_ptr[p + 1]]
            cols = cols[(y[cols] > 0) & (rank[cls[cols]] < rank[k])]
            cols = cols[np.lexsort((density[cls[cols]], rank[cls[cols]]))]
            for c in cols.tolist():
                if free[p] >= n:
                    break
                victim = cls[c]
                need = int(np.ceil((n - free[p]) / nodes[victim]))
                out = min(need, int(y[c]))
                y[c] -= out
                placed[victim] -= out
                free[p] += out * nodes[victim]
                level_use[p, rank[victim]] -= out * nodes[victim]
            y[perm[a + i]] += 1
            placed[k] += 1
            free[p] -= n
            level_use[p, rank[k]] += n
            rem -= 1
    return y
