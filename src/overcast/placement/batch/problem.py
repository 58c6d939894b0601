"""Plain-array data model of the batch placement problem and its solution.

Units: a job needs ``nodes`` nodes (of ``gpus`` GPUs each) in ONE pool (a gang); a pool holds ``capacity``
nodes. Placing job j in pool p costs ``cost[j, p]`` (for the whole job, e.g. nodes x price x hours);
leaving it out costs ``penalty[j]`` (value weight x GPU-hours). The solver minimises
``sum cost of placed pairs + sum penalty of unplaced jobs``, i.e. maximises value minus cost.
Compatibility (accelerator, allow/deny lists, region, spot policy) is computed by the caller: a job
may only go to the pools listed in its row of the CSR compatibility matrix, and only where that pays off
(cost < penalty); a listed pair that costs at least the penalty is treated as incompatible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

UNLIMITED = np.inf


class BatchProblemError(ValueError):
    """The problem arrays are malformed; the message names the field and the offending index."""


def _as_int(name: str, values: object, size: int | None = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise BatchProblemError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if size is not None and arr.shape[0] != size:
        raise BatchProblemError(f"{name} has {arr.shape[0]} entries, expected {size}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype.kind not in "fb":
            raise BatchProblemError(f"{name} must hold numbers, got dtype {arr.dtype}")
        wrong = ~np.isfinite(arr) | (arr != np.round(arr))
        if np.any(wrong):
            bad = int(np.flatnonzero(wrong)[0])
            raise BatchProblemError(f"{name}[{bad}] = {arr[bad].item()!r} is not an integer")
    return arr.astype(np.int64, copy=False)


def _as_float(name: str, values: object, size: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (size,):
        raise BatchProblemError(f"{name} has shape {arr.shape}, expected ({size},)")
    return arr


@dataclass(frozen=True)
class BatchProblem:
    """J jobs, P pools, and the compatible (job, pool) pairs in CSR form (rows sorted by pool)."""

    job_nodes: np.ndarray  # (J,) int64 >= 1: capacity units the gang takes in its pool
    job_gpus: np.ndarray  # (J,) int64 >= 0: GPUs per node (for reports and density order)
    job_penalty: np.ndarray  # (J,) float64 >= 0: cost of leaving the job out
    job_priority: np.ndarray  # (J,) int64: higher is more important
    compat_indptr: np.ndarray  # (J+1,) int64
    compat_pool: np.ndarray  # (nnz,) int64 pool index of each compatible pair
    compat_cost: np.ndarray  # (nnz,) float64 >= 0 cost of placing the job in that pool
    pool_capacity: np.ndarray  # (P,) float64 nodes, np.inf when unlimited

    def __post_init__(self) -> None:
        nodes = _as_int("job_nodes", self.job_nodes)
        n_jobs = nodes.shape[0]
        gpus = _as_int("job_gpus", self.job_gpus, n_jobs)
        penalty = _as_float("job_penalty", self.job_penalty, n_jobs)
        priority = _as_int("job_priority", self.job_priority, n_jobs)
        indptr = _as_int("compat_indptr", self.compat_indptr, n_jobs + 1)
        cap = np.asarray(self.pool_capacity, dtype=np.float64)
        if cap.ndim != 1:
            raise BatchProblemError(f"pool_capacity must be a 1-D array, got shape {cap.shape}")
        cap = np.where(cap < 0, UNLIMITED, cap)  # -1 means unlimited
        n_pools = cap.shape[0]
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise BatchProblemError("compat_indptr must start at 0 and never decrease")
        nnz = int(indptr[-1])
        pool = _as_int("compat_pool", self.compat_pool, nnz)
        cost = _as_float("compat_cost", self.compat_cost, nnz)
        _require(nodes >= 1, "job_nodes", nodes, "must be >= 1")
        _require(gpus >= 0, "job_gpus", gpus, "must be >= 0")
        _require(np.isfinite(penalty) & (penalty >= 0), "job_penalty", penalty, "must be finite and >= 0")
        _require(np.isfinite(cost) & (cost >= 0), "compat_cost", cost, "must be finite and >= 0")
        _require(
            (pool >= 0) & (pool < n_pools), "compat_pool", pool, f"is not a pool index in [0, {n_pools})"
        )
        finite = np.isfinite(cap)
        _require(~finite | (cap == np.floor(cap)), "pool_capacity", cap, "must be a whole number of nodes")
        # Sort each row by pool so (job, pool) keys are globally sorted; reject duplicate pairs.
        rows = np.repeat(np.arange(n_jobs, dtype=np.int64), np.diff(indptr))
        order = np.lexsort((pool, rows))
        pool, cost = pool[order], cost[order]
        dup = (np.diff(rows) == 0) & (np.diff(pool) == 0)
        if np.any(dup):
            k = int(np.flatnonzero(dup)[0])
            raise BatchProblemError(f"job {rows[k]} lists pool {pool[k]} twice in its compatibility row")
        for name, arr in (
            ("job_nodes", nodes),
            ("job_gpus", gpus),
            ("job_penalty", penalty),
            ("job_priority", priority),
            ("compat_indptr", indptr),
            ("compat_pool", pool),
            ("compat_cost", cost),
            ("pool_capacity", cap),
        ):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def n_jobs(self) -> int:
        return int(self.job_nodes.shape[0])

    @property
    def n_pools(self) -> int:
        return int(self.pool_capacity.shape[0])

    @property
    def n_pairs(self) -> int:
        return int(self.compat_indptr[-1])

    def pair_rows(self) -> np.ndarray:
        """Job index of every compatible pair."""
        return np.repeat(np.arange(self.n_jobs, dtype=np.int64), np.diff(self.compat_indptr))

    def pair_index(self, jobs: np.ndarray, pools: np.ndarray) -> np.ndarray:
        """Position of each (job, pool) in the CSR arrays, or -1 where the pair is not compatible."""
        jobs = np.asarray(jobs, dtype=np.int64)
        pools = np.asarray(pools, dtype=np.int64)
        keys = self.pair_rows() * self.n_pools + self.compat_pool
        want = jobs * self.n_pools + pools
        pos = np.searchsorted(keys, want)
        pos_c = np.minimum(pos, max(keys.shape[0] - 1, 0))
        ok = (pos < keys.shape[0]) & (keys[pos_c] == want) if keys.shape[0] else np.zeros(want.shape, bool)
        return np.where(ok, pos_c, -1)

    def objective(self, assignment: np.ndarray) -> float:
        """Cost of placed pairs plus penalty of unplaced jobs. Assumes compatible pairs (see check)."""
        assignment = np.asarray(assignment, dtype=np.int64)
        placed = assignment >= 0
        idx = self.pair_index(np.flatnonzero(placed), assignment[placed])
        if np.any(idx < 0):
            raise BatchProblemError("assignment uses an incompatible (job, pool) pair")
        return float(self.compat_cost[idx].sum() + self.job_penalty[~placed].sum())

    @classmethod
    def from_lists(
        cls,
        *,
        nodes: Sequence[int],
        penalty: Sequence[float],
        compat: Sequence[Mapping[int, float]],
        capacity: Sequence[float | None],
        priority: Sequence[int] | None = None,
        gpus: Sequence[int] | None = None,
    ) -> BatchProblem:
        """Build from Python lists. ``compat[j]`` maps pool index -> cost of job j there; ``capacity[p]``
        is None (or -1) for an unlimited pool. Priority defaults to 0, GPUs per node to 1."""
        n = len(nodes)
        if len(compat) != n:
            raise BatchProblemError(f"compat has {len(compat)} rows, expected one per job ({n})")
        lengths = [len(row) for row in compat]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        pools = np.fromiter((p for row in compat for p in row), dtype=np.int64, count=int(indptr[-1]))
        costs = np.fromiter(
            (c for row in compat for c in row.values()), dtype=np.float64, count=int(indptr[-1])
        )
        cap = np.array([UNLIMITED if c is None else c for c in capacity], dtype=np.float64)
        return cls(
            job_nodes=np.asarray(nodes),
            job_gpus=np.ones(n, dtype=np.int64) if gpus is None else np.asarray(gpus),
            job_penalty=np.asarray(penalty, dtype=np.float64),
            job_priority=np.zeros(n, dtype=np.int64) if priority is None else np.asarray(priority),
            compat_indptr=indptr,
            compat_pool=pools,
            compat_cost=costs,
            pool_capacity=cap,
        )


def _require(ok: np.ndarray, name: str, arr: np.ndarray, what: str) -> None:
    if not np.all(ok):
        bad = int(np.flatnonzero(~ok)[0])
        raise BatchProblemError(f"{name}[{bad}] = {arr[bad].item()!r} {what}")


@dataclass
class BatchSolution:
    """Pool index per job (-1: left out), its objective and the LP lower bound it is measured against."""

    assignment: np.ndarray  # (J,) int64
    objective: float
    lower_bound: float  # LP relaxation value (valid bound); nan when not computed
    status: str  # "optimal" (proved within 0.01%), "feasible", "fallback" (a stage failed), "empty"
    method: str  # which stage produced it, e.g. "milp", "lp-round+lns", "greedy"
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    total_penalty: float = 0.0  # objective if nothing were placed (for the value gap)

    @property
    def placed(self) -> int:
        return int(np.count_nonzero(self.assignment >= 0))

    @property
    def gap(self) -> float:
        """(objective - LB) / objective, the usual MIP gap of the min-form objective."""
        if not np.isfinite(self.lower_bound) or self.objective <= 0:
            return 0.0 if self.objective <= 0 else float("nan")
        return (self.objective - self.lower_bound) / self.objective

    @property
    def value_gap(self) -> float:
        """Share of the achievable net value (penalty avoided minus cost) that was lost."""
        room = self.total_penalty - self.lower_bound
        if not np.isfinite(self.lower_bound) or room <= 0:
            return 0.0
        return (self.objective - self.lower_bound) / room
