"""Exact reductions: drop pairs that never pay off, merge identical jobs into classes.

A pair (j, p) with cost >= penalty never improves the objective, and a pool smaller than the gang can
never host it, so both are dropped. Jobs with the same nodes, penalty, priority and the same surviving
(pool, cost) row are interchangeable: the class model has one integer column y_kp per (class, pool),
bounded by min(class size, floor(capacity / nodes)). Both reductions keep every optimum.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from overcast.placement.batch.problem import BatchProblem

_SEGMENT_SORT_MIN_LEN = 32  # mean columns per class from which _sort_within sorts class by class


@dataclass(frozen=True)
class ClassModel:
    count: np.ndarray  # (K,) jobs in the class
    nodes: np.ndarray  # (K,) nodes per job
    penalty: np.ndarray  # (K,) penalty per job
    priority: np.ndarray  # (K,)
    col_indptr: np.ndarray  # (K+1,) columns of class k: col_indptr[k]:col_indptr[k+1]
    col_pool: np.ndarray  # (N,) pool of each column (cheapest first within a class)
    col_cost: np.ndarray  # (N,) cost per job of each column
    col_ub: np.ndarray  # (N,) most jobs of the class the pool can take
    capacity: np.ndarray  # (P,) pool capacity (inf: unlimited)
    member_indptr: np.ndarray  # (K+1,) members of class k: members[member_indptr[k]:member_indptr[k+1]]
    members: np.ndarray  # (J,) job indices grouped by class

    @property
    def n_classes(self) -> int:
        return int(self.count.shape[0])

    @property
    def n_cols(self) -> int:
        return int(self.col_pool.shape[0])

    @cached_property
    def col_class(self) -> np.ndarray:
        """Class of every column."""
        return np.repeat(np.arange(self.n_classes, dtype=np.int64), np.diff(self.col_indptr))

    def density(self) -> np.ndarray:
        """Penalty per node of capacity: what a node given to this class is worth."""
        return self.penalty / self.nodes

    def objective(self, y: np.ndarray) -> float:
        """Min-form objective of integer class counts y (one per column)."""
        placed = np.bincount(self.col_class, weights=y, minlength=self.n_classes)
        return float(y @ self.col_cost + ((self.count - placed) * self.penalty).sum())

    def usage(self, y: np.ndarray) -> np.ndarray:
        """Nodes used per pool by class counts y."""
        return np.bincount(
            self.col_pool, weights=y * self.nodes[self.col_class], minlength=self.capacity.shape[0]
        )

    def to_assignment(self, y: np.ndarray, n_jobs: int) -> np.ndarray:
        """Hand out each class's columns to its member jobs (members are interchangeable)."""
        assignment = np.full(n_jobs, -1, dtype=np.int64)
        y = np.asarray(np.rint(y), dtype=np.int64)
        cls = self.col_class
        # Within a class, columns take consecutive member slots (exclusive running sum of y).
        before = np.cumsum(y) - y
        start = before - before[self.col_indptr[cls]] if self.n_cols else before
        nz = np.flatnonzero(y > 0)
        slots = np.repeat(self.member_indptr[cls[nz]] + start[nz], y[nz]) + _ranges(y[nz])
        assignment[self.members[slots]] = np.repeat(self.col_pool[nz], y[nz])
        return assignment


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges: [0..l0), [0..l1), ..."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) - np.repeat(ends - lengths, lengths)


def _sort_within(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Permutation sorting ``values`` stably within each segment indptr[k]:indptr[k+1] (the segments
    stay in place). One argsort per segment when they are long: 3-4x faster than a lexsort by
    (segment, value) at 10k-50k jobs x 1k pools (0.155 -> 0.053 s, 0.80 -> 0.22 s; same permutation);
    short segments would pay more in Python calls than they save, so those use the lexsort."""
    n_seg = indptr.shape[0] - 1
    if n_seg == 0 or values.shape[0] < _SEGMENT_SORT_MIN_LEN * n_seg:
        return np.lexsort((values, np.repeat(np.arange(n_seg), np.diff(indptr))))
    order = np.empty(values.shape[0], dtype=np.int64)
    bounds = indptr.tolist()
    for a, b in itertools.pairwise(bounds):
        order[a:b] = np.argsort(values[a:b], kind="stable") + a
    return order


def profitable_pairs(problem: BatchProblem) -> np.ndarray:
    """Mask over CSR pairs that can pay off: cheaper than leaving the job out, and the pool is big enough."""
    rows = problem.pair_rows()
    return (problem.compat_cost < problem.job_penalty[rows]) & (
        problem.pool_capacity[problem.compat_pool] >= problem.job_nodes[rows]
    )


def build_classes(problem: BatchProblem) -> ClassModel:
    keep = profitable_pairs(problem)
    indptr = problem.compat_indptr
    kept_before = np.concatenate(([0], np.cumsum(keep)))
    new_indptr = kept_before[indptr]
    pools = problem.compat_pool[keep]
    costs = problem.compat_cost[keep]
    nodes, penalty, priority = problem.job_nodes, problem.job_penalty, problem.job_priority
    # Group jobs by an exact key: scalars plus the raw bytes of their pruned row.
    index: dict[tuple, int] = {}
    job_class = np.empty(problem.n_jobs, dtype=np.int64)
    pool_bytes, cost_bytes = pools.tobytes(), costs.tobytes()
    ptr = new_indptr.tolist()
    n_list, pen_list, pri_list = nodes.tolist(), penalty.tolist(), priority.tolist()
    for j in range(problem.n_jobs):
        a, b = ptr[j] * 8, ptr[j + 1] * 8
        key = (pri_list[j], n_list[j], pen_list[j], pool_bytes[a:b], cost_bytes[a:b])
        job_class[j] = index.setdefault(key, len(index))
    n_cls = len(index)
    members = np.argsort(job_class, kind="stable")
    count = np.bincount(job_class, minlength=n_cls)
    member_indptr = np.concatenate(([0], np.cumsum(count)))
    rep = members[member_indptr[:-1]]  # first member represents the class
    row_len = (new_indptr[1:] - new_indptr[:-1])[rep]
    col_indptr = np.concatenate(([0], np.cumsum(row_len)))
    src = np.repeat(new_indptr[rep], row_len) + _ranges(row_len)
    # Columns of a class sorted by cost: greedy and repair scan them cheapest first.
    src = src[_sort_within(costs[src], col_indptr)]
    col_pool = pools[src]
    col_cost = costs[src]
    cls_nodes = nodes[rep]
    col_nodes = np.repeat(cls_nodes, row_len)
    cap = problem.pool_capacity[col_pool]
    fit = np.where(np.isfinite(cap), np.floor(np.where(np.isfinite(cap), cap, 0) / col_nodes), np.inf)
    col_ub = np.minimum(np.repeat(count, row_len), fit).astype(np.int64)
    return ClassModel(
        count=count.astype(np.int64),
        nodes=cls_nodes.astype(np.int64),
        penalty=penalty[rep].astype(np.float64),
        priority=priority[rep].astype(np.int64),
        col_indptr=col_indptr.astype(np.int64),
        col_pool=col_pool.astype(np.int64),
        col_cost=col_cost.astype(np.float64),
        col_ub=col_ub,
        capacity=problem.pool_capacity,
        member_indptr=member_indptr.astype(np.int64),
        members=members.astype(np.int64),
    )
