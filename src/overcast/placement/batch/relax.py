"""The LP relaxation as a min-cost flow (transportation problem), solved by OR-Tools.

Written in node units the class LP is a flow: each class supplies count x nodes units; a unit goes to a
pool (unit cost = cost per job / nodes, arc capacity nodes x min(count, floor(capacity / nodes)), which
makes the flow LP exactly as tight as the class LP) or straight to the sink (unit cost = penalty / nodes).
Pools drain into the sink up to their capacity.

Large models are solved by column generation: a min-cost flow over the cheapest columns of each class,
then node potentials (shortest distances to the sink in the residual graph, by vectorised Bellman-Ford)
price every left-out column; columns with negative reduced cost join and the flow is solved again. When
none is left the restricted optimum is the optimum of the full LP.

Costs must be integers: they are scaled and rounded DOWN, so the flow optimum is a rigorous lower bound
on the true LP value (and so on every integer solution). The scale is as coarse as a relative loss of at
most ``BOUND_TOL`` allows: the cost-scaling algorithm needs one phase per factor 5 of the cost range, so a
coarse scale is 1.6x faster than a fine one (10k jobs x 1k pools).

Column generation stops as soon as the Lagrangian bound of the full LP at the restricted flow's
potentials d (``sum_v d_v supply_v + sum_arcs cap_a min(0, reduced cost_a)``, a valid lower bound for
any d by weak duality) is within ``BOUND_TOL`` of the restricted optimum: the last rounds add a few
hundred columns and change nothing that matters, yet each one is a full re-solve. That bound is the one
reported; the restricted flow is the primal solution.

Handover (``split_tol``): once the Lagrangian bound is within ``split_tol`` (1%) of the restricted
optimum, that flow is already a near-optimal primal (0.03% above the LP at 10k x 1k) and good enough to
round; only the bound still needs the last flows. A forked child (background.py) finishes them while the
caller rounds and repairs; the caller collects the child's bound at the end (``final_bound``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from ortools.graph.python import min_cost_flow

from overcast.placement.batch.background import Background
from overcast.placement.batch.classes import ClassModel

# Largest scaled unit cost x sqrt(total flow); keeps cost scaling (which multiplies costs by about the
# node count) and the objective sum inside int64.
_COST_RANGE = 2.0**43
FULL_LP_MAX_COLS = 150_000  # below this, one flow over all columns beats column generation
_START_COLS = 5  # cheapest columns per class in the first restricted flow
_ADD_COLS = 10  # most negative reduced-cost columns added per class and round
# Rounds with column deletion, only above LARGE_COLS: at 50k jobs x 1k pools it keeps the later flows
# small (6 flows instead of 8+); at 10k x 1k, without it, 3 flows instead of 4-6 (LP 0.9 s instead of 1.3 s).
_DROP_ROUNDS = 6
BOUND_TOL = 1e-4  # most relative bound loss from cost rounding, and from stopping column generation early
# Above LARGE_COLS allowed columns column generation stops once the Lagrangian bound is within
# LARGE_STOP_TOL of the restricted optimum: 50k jobs x 1k pools (4.2M columns) then solves 5 flows instead
# of 6 (-1 s CPU) for a bound 0.09% lower; the reported bound is that Lagrangian one, so it stays valid.
LARGE_COLS = 2_000_000
LARGE_STOP_TOL = 1.5e-3


class RelaxationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Relaxation:
    y: np.ndarray  # (N,) fractional class counts per column
    bound: float  # rigorous lower bound on the objective of the restricted problem
    rounds: int = 1  # flows solved (column generation rounds)
    cols: int = 0  # columns in the last flow
    # A child process finishing column generation for the bound (``bound`` is then the Lagrangian one).
    pending: Background | None = field(default=None, compare=False, repr=False)
    # Column generation: the columns of the last flow plus those it priced out (None: every column).
    active: np.ndarray | None = field(default=None, compare=False, repr=False)

    def final_bound(self, timeout: float) -> float:
        """The best bound known: the child's full-LP bound if it arrives within ``timeout`` seconds."""
        if self.pending is None:
            return self.bound
        child = self.pending.next(timeout)
        self.pending.cancel()
        return self.bound if child is None else max(self.bound, float(child))


def solve_relaxation(
    cm: ClassModel,
    count: np.ndarray | None = None,
    capacity: np.ndarray | None = None,
    cols: np.ndarray | None = None,
    *,
    start: np.ndarray | None = None,
    split_tol: float = 0.0,
    bound_in_child: bool = True,
) -> Relaxation:
    """LP relaxation for ``count`` jobs per class and ``capacity`` nodes per pool (defaults: the model's)
    over the columns ``cols`` (default: all). ``start`` (column indices) seeds column generation, e.g.
    with the columns of a greedy solution. Returns y over all columns (0 outside ``cols``). With
    ``split_tol`` > the stop tolerance, column generation hands over to a child process once its
    Lagrangian bound is that close (see ``_column_generation``); with ``bound_in_child`` False it just
    stops there (the Lagrangian bound, valid but looser, is the bound: for callers that never read it)."""
    count = cm.count if count is None else np.asarray(count, dtype=np.int64)
    capacity = cm.capacity if capacity is None else np.asarray(capacity, dtype=np.float64)
    net = _Network(cm, count, capacity)
    if net.total == 0:
        return Relaxation(np.zeros(cm.n_cols), 0.0, 0, 0)
    cls = cm.col_class
    allowed = np.zeros(cm.n_cols, dtype=bool)
    if cols is None:
        allowed[:] = True
    else:
        allowed[np.asarray(cols, dtype=np.int64)] = True
    allowed &= count[cls] > 0
    if np.count_nonzero(allowed) <= FULL_LP_MAX_COLS:
        flow, cost = net.solve(np.flatnonzero(allowed))
        return Relaxation(net.y(flow), cost, 1, int(np.count_nonzero(allowed)))
    # Column generation.
    rank = np.arange(cm.n_cols) - cm.col_indptr[cls]
    active = allowed & (rank < _START_COLS)
    if start is not None:
        active[np.asarray(start, dtype=np.int64)] = True
        active &= allowed
    stop_tol = LARGE_STOP_TOL if np.count_nonzero(allowed) > LARGE_COLS else BOUND_TOL
    split = split_tol if split_tol > stop_tol else None
    return _column_generation(net, allowed, active, stop_tol, split, child=bound_in_child)


def _column_generation(
    net: _Network,
    allowed: np.ndarray,
    active: np.ndarray,
    stop_tol: float,
    split_tol: float | None,
    rounds: int = 0,
    child: bool = True,
) -> Relaxation:
    """Re-solve the flow over ``active`` columns, adding priced-out ones, until the Lagrangian bound is
    within ``stop_tol``. Once it is within ``split_tol``, a forked child finishes the loop (for the
    bound only) and this returns the current flow as the primal, with the child as ``pending``."""
    cm, cls = net.cm, net.cls
    allowed_count = int(np.count_nonzero(allowed))
    while True:
        rounds += 1
        use = np.flatnonzero(active)
        flow, cost = net.solve(use)
        dist = net.potentials(net.distances_to_sink(use, flow))
        reduced = net.w_col + dist[net.n_cls + cm.col_pool] - dist[cls]
        neg = np.flatnonzero(reduced < 0)
        neg = neg[allowed[neg]]
        new = neg[~active[neg]]
        if new.size == 0:
            return Relaxation(net.y(flow), cost, rounds, int(use.size), active=use)
        lagrange = net.lagrangian_bound(dist, neg, reduced)
        if lagrange >= cost - stop_tol * abs(cost):
            return Relaxation(net.y(flow), min(lagrange, cost), rounds, int(use.size), active=use)
        if rounds <= _DROP_ROUNDS and allowed_count > LARGE_COLS:
            # Column deletion: a column without flow whose reduced cost is positive cannot improve the
            # next flow; dropping them keeps the restricted flows small (the current flow stays feasible,
            # so the objective never rises). Only in the first rounds, so it cannot cycle.
            idle = use[(flow[: use.size] == 0) & (reduced[use] > 0)]
            active[idle] = False
        order = np.lexsort((reduced[new], cls[new]))
        new = new[order]
        first = np.searchsorted(cls[new], cls[new])
        active[new[np.arange(new.size) - first < _ADD_COLS]] = True
        if split_tol is not None and lagrange >= cost - split_tol * abs(cost):
            y = net.y(flow)
            seen = np.flatnonzero(active)
            if not child:
                return Relaxation(y, lagrange, rounds, int(use.size), active=seen)

            def finish(done: int = rounds) -> Iterator[float]:
                yield _column_generation(net, allowed, active, stop_tol, None, done).bound

            return Relaxation(y, lagrange, rounds, int(use.size), pending=Background(finish), active=seen)


def start_columns(cm: ClassModel, y: np.ndarray, per_class: int = 3) -> np.ndarray:
    """Columns to seed column generation with: those of the integer solution ``y`` (the greedy's) and
    each class's ``per_class`` cheapest columns in pools where ``y`` leaves room for one more member.
    The cheapest columns alone point at the contested cheap pools, so the first flow is far off
    (10k jobs x 1k pools: 17% above the LP); with pools that have room it is 7% above, and column
    generation needs 3 flows instead of 4 (0.9 s CPU instead of 1.9 s)."""
    cls = cm.col_class
    free = cm.capacity - cm.usage(y)
    roomy = np.flatnonzero(free[cm.col_pool] >= cm.nodes[cls])
    first = np.searchsorted(cls[roomy], cls[roomy])
    return np.union1d(np.flatnonzero(y), roomy[np.arange(roomy.size) - first < per_class])


class _Network:
    """Nodes: classes 0..K-1, pools K..K+P-1, sink K+P. Arcs: chosen columns, then K unplaced arcs
    (class -> sink), then P drain arcs (pool -> sink)."""

    def __init__(self, cm: ClassModel, count: np.ndarray, capacity: np.ndarray) -> None:
        self.cm = cm
        self.n_cls, self.n_pools = cm.n_classes, capacity.shape[0]
        self.sink = self.n_cls + self.n_pools
        cls = cm.col_class
        self.cls = cls
        nodes = cm.nodes.astype(np.int64)
        self.supply = count * nodes
        self.total = int(self.supply.sum())
        cap_fin = np.where(np.isfinite(capacity), np.maximum(capacity, 0), self.total)
        fit = np.floor(cap_fin[cm.col_pool] / nodes[cls]).astype(np.int64)
        self.col_cap = nodes[cls] * np.minimum(count[cls], fit)
        self.drain_cap = np.minimum(cap_fin, self.total).astype(np.int64)
        unit_col = cm.col_cost / nodes[cls]
        unit_pen = cm.penalty / nodes
        top = max(float(unit_col.max(initial=0.0)), float(unit_pen.max(initial=0.0)), 1e-12)
        fine = min(_COST_RANGE / top / max(self.total, 1) ** 0.5, 1e9)
        # Every unit of class k costs at least its cheapest option, so floor() loses at most
        # total / scale <= BOUND_TOL / 2 x (that sum <= the LP value).
        cheapest = unit_pen
        if cm.n_cols:
            row_min = np.minimum.reduceat(unit_col, np.minimum(cm.col_indptr[:-1], cm.n_cols - 1))
            cheapest = np.where(np.diff(cm.col_indptr) > 0, np.minimum(row_min, unit_pen), unit_pen)
        floor_value = float((self.supply * cheapest).sum())
        coarse = 2.0 * self.total / (BOUND_TOL * floor_value) if floor_value > 0 else fine
        self.scale = min(fine, coarse)
        self.w_col = np.floor(unit_col * self.scale)
        self.w_pen = np.floor(unit_pen * self.scale)
        self.seconds = 0.0

    def arcs(self, use: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n_cls, n_pools, sink = self.n_cls, self.n_pools, self.sink
        tails = np.concatenate((self.cls[use], np.arange(n_cls), n_cls + np.arange(n_pools)))
        heads = np.concatenate((n_cls + self.cm.col_pool[use], np.full(n_cls, sink), np.full(n_pools, sink)))
        caps = np.concatenate((self.col_cap[use], self.supply, self.drain_cap))
        costs = np.concatenate((self.w_col[use], self.w_pen, np.zeros(n_pools))).astype(np.int64)
        return tails, heads, caps, costs

    def solve(self, use: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        tails, heads, caps, costs = self.arcs(use)
        solver = min_cost_flow.SimpleMinCostFlow()
        arcs = solver.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
        supplies = np.concatenate((self.supply, np.zeros(self.n_pools, dtype=np.int64), [-self.total]))
        solver.set_nodes_supplies(np.arange(self.sink + 1), supplies)
        status = solver.solve()
        if status != solver.OPTIMAL:
            raise RelaxationError(f"min-cost flow returned status {status}")
        flow = solver.flows(arcs)
        self.use = use
        self.seconds += time.perf_counter() - t0
        return flow, float(solver.optimal_cost()) / self.scale

    def y(self, flow: np.ndarray) -> np.ndarray:
        y = np.zeros(self.cm.n_cols)
        y[self.use] = flow[: self.use.size] / self.cm.nodes[self.cls[self.use]]
        return y

    def potentials(self, dist: np.ndarray) -> np.ndarray:
        """Distances made finite: a class that cannot reach the sink (every unit left out, no active
        column) gets its unit penalty, an unreachable pool 0. Any finite values price columns validly."""
        n_cls = self.n_cls
        dist = dist.copy()
        dist[:n_cls] = np.where(np.isfinite(dist[:n_cls]), dist[:n_cls], self.w_pen)
        dist[n_cls:] = np.where(np.isfinite(dist[n_cls:]), dist[n_cls:], 0.0)
        return dist

    def lagrangian_bound(self, dist: np.ndarray, neg: np.ndarray, reduced: np.ndarray) -> float:
        """Weak-duality bound on the LP over the allowed columns for finite potentials ``dist``
        (d_sink = 0) and the columns' ``reduced`` costs under them; ``neg`` indexes every allowed column
        with a negative reduced cost (the others add nothing)."""
        n_cls = self.n_cls
        d_cls, d_pool = dist[:n_cls], dist[n_cls : self.sink]
        value = float(self.supply @ d_cls)
        value += float(self.col_cap[neg].astype(np.float64) @ reduced[neg])
        value += float((self.supply * np.minimum(self.w_pen - d_cls, 0.0)).sum())
        value += float((self.drain_cap * np.minimum(-d_pool, 0.0)).sum())
        return value / self.scale

    def distances_to_sink(self, use: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """Shortest distance from every node to the sink in the residual graph (no negative cycles at
        an optimum). Vectorised Bellman-Ford: a few dozen sweeps on these shallow graphs."""
        tails, heads, caps, costs = self.arcs(use)
        fwd, bwd = flow < caps, flow > 0
        src = np.concatenate((tails[fwd], heads[bwd]))
        dst = np.concatenate((heads[fwd], tails[bwd]))
        w = np.concatenate((costs[fwd], -costs[bwd])).astype(np.float64)
        dist = np.full(self.sink + 1, np.inf)
        dist[self.sink] = 0.0
        for _ in range(self.sink + 1):
            nxt = dist.copy()
            np.minimum.at(nxt, src, w + dist[dst])
            if np.array_equal(nxt, dist):
                break
            dist = nxt
        return dist
