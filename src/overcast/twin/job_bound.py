"""The cheapest any schedule could be at a given mean JCT, job by job: a tighter bound than ``jct_bound``.

Why: the class-level LP (``jct_bound``) lets work run at any width and counts completions in bulk, so it
finishes many small jobs at once and its bound sits far below every real schedule. Here every job is its
own column block, which rules that out:

- y[j, p, t]: node-hours job j runs on pool p in slot t (only pools its gang fits, only after its submit);
- all of its work (runtime plus the shortest provisioning, times its nodes) is done by the window's end;
- it runs at most its gang's width: sum_p y[j, p, t] <= nodes x the part of slot t after its submit;
- pools hold at most what any schedule could use per slot (as in the time-indexed bound);
- its completion C_j >= submit + duration, and C_j >= its mean busy time + duration / 2 (a job that runs at
  most at its own width spends >= its duration doing its work, so its last moment is at least half a
  duration after the mean moment). The mean busy time is bounded below per slot: the share w of the job
  done in slot t starts no earlier than the slot's start (or the submit) and lasts >= w x duration, so its
  mean moment is >= start + w x duration / 2; w^2 is replaced by supporting lines below it (q >= tangent),
  which keeps the bound valid;
- sum_j (C_j - submit_j) <= N x mean JCT.

Any schedule that finishes every job in the window with that mean JCT or better gives a feasible point
(preemption, moving between pools and lost work only add to it), so the optimum is a lower bound on its
cost. Left out, so still below the truth: gang packing inside a pool, restarts and lost work, provisioning
beyond the shortest, and that work within one slot may overlap other jobs' starts in the same slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np
from scipy import sparse

from overcast.placement.batch.milp import new_highs
from overcast.placement.pool import Pool, Purchase
from overcast.twin.bounds import LowerBound
from overcast.twin.runner import World, capacity_timeline
from overcast.twin.scenario import Scenario

PER_JOB_JCT_RULE = (
    "per-job time-indexed LP over the scenario's window: each job's work after its submit at most at its "
    "gang's width on pools its gang fits, pool capacity per slot, each completion >= submit + duration and "
    ">= its mean busy time + half its duration, mean JCT <= the given one: the cheapest any schedule with "
    "that mean JCT or better could be"
)


@dataclass(frozen=True, slots=True)
class BoundJob:
    submit_h: float
    nodes: int
    hours: float  # runtime plus the shortest provisioning of a pool it may use
    spot_ok: bool


def _fits(job: BoundJob, pool: Pool) -> bool:
    if pool.purchase is Purchase.SPOT and not job.spot_ok:
        return False
    return pool.capacity_nodes is None or pool.capacity_nodes >= job.nodes


class _Builder:
    """Columns and rows in COO form; rows are added as (coefficients, lower, upper)."""

    def __init__(self) -> None:
        self.cost: list[np.ndarray] = []
        self.col_lo: list[np.ndarray] = []
        self.col_hi: list[np.ndarray] = []
        self.n_cols = 0
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.row_lo: list[np.ndarray] = []
        self.row_hi: list[np.ndarray] = []
        self.n_rows = 0

    def columns(self, cost: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        idx = np.arange(self.n_cols, self.n_cols + len(cost))
        self.cost.append(cost)
        self.col_lo.append(lo)
        self.col_hi.append(hi)
        self.n_cols += len(cost)
        return idx

    def rows_of(self, n: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        idx = np.arange(self.n_rows, self.n_rows + n)
        self.row_lo.append(np.broadcast_to(lo, n).astype(float))
        self.row_hi.append(np.broadcast_to(hi, n).astype(float))
        self.n_rows += n
        return idx

    def entries(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        self.rows.append(np.asarray(rows, dtype=np.int64))
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.broadcast_to(np.asarray(vals, dtype=float), len(rows)).copy())

    def model(self) -> highspy.Highs:
        a = sparse.csc_array(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(self.n_rows, self.n_cols),
        )
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.n_cols, self.n_rows
        lp.col_cost_ = np.concatenate(self.cost)
        lp.col_lower_, lp.col_upper_ = np.concatenate(self.col_lo), np.concatenate(self.col_hi)
        lp.row_lower_, lp.row_upper_ = np.concatenate(self.row_lo), np.concatenate(self.row_hi)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = a.indptr, a.indices, a.data
        h = new_highs()
        h.setOptionValue("solver", "simplex")  # measured: IPM took 3x longer on these
        h.passModel(lp)
        return h


def per_job_jct_lower_bound(
    jobs: list[BoundJob],
    pools: list[Pool],
    usable_node_h: dict[str, np.ndarray],
    edges_h: np.ndarray,
    reserved_fee: float,
    mean_jct_h: float,
) -> LowerBound | None:
    """One mean JCT: ``per_job_jct_lower_bounds``."""
    return per_job_jct_lower_bounds(jobs, pools, usable_node_h, edges_h, reserved_fee, [mean_jct_h])[0]


def per_job_jct_lower_bounds(
    jobs: list[BoundJob],
    pools: list[Pool],
    usable_node_h: dict[str, np.ndarray],
    edges_h: np.ndarray,
    reserved_fee: float,
    mean_jct_hs: list[float],
) -> list[LowerBound | None]:
    """``usable_node_h``: per pool, the most node-hours any schedule could use in each slot between
    ``edges_h`` (hours). None when the LP is infeasible (no schedule, even in the relaxation, finishes
    every job in the window at that mean JCT) or fails."""
    b = _Builder()
    n_slots = len(edges_h) - 1
    c_cols = b.columns(
        np.zeros(len(jobs)),
        np.array([j.submit_h + j.hours for j in jobs]),
        np.full(len(jobs), np.inf),
    )
    # jobs that may use the same pools share per-slot columns y[class, pool, t]; each job's own column is
    # u[j, t] = its node-hours in slot t, and sum_{j in class} u[j, t] = sum_p y[class, p, t]
    classes: dict[tuple[str, ...], list[int]] = {}
    for k, job in enumerate(jobs):
        fit = tuple(p.id for p in pools if _fits(job, p))
        if not fit:
            return None
        classes.setdefault(fit, []).append(k)
    link = {c: b.rows_of(n_slots, 0.0, 0.0) for c in classes}
    by_id = {p.id: p for p in pools}
    cap_terms: dict[str, list[np.ndarray]] = {p.id: [] for p in pools}
    for fit, rows in link.items():
        for pid in fit:
            price = by_id[pid].marginal_price_per_node_hour
            y = b.columns(np.full(n_slots, price), np.zeros(n_slots), np.full(n_slots, np.inf))
            b.entries(rows, y, -1.0)
            cap_terms[pid].append(y)
    for fit, members in classes.items():
        for k in members:
            job = jobs[k]
            first = max(int(np.searchsorted(edges_h, job.submit_h, side="right")) - 1, 0)
            slots = np.arange(first, n_slots)
            if len(slots) == 0:
                return None
            start = np.maximum(edges_h[slots], job.submit_h)
            length = edges_h[slots + 1] - start
            work = job.nodes * job.hours
            # u[t] <= nodes x length[t]: the job runs at most at its gang's width, only after its submit
            u = b.columns(np.zeros(len(slots)), np.zeros(len(slots)), job.nodes * length)
            b.entries(link[fit][slots], u, 1.0)
            r = b.rows_of(1, work, work)  # all of its work
            b.entries(np.full(len(u), r[0]), u, 1.0)
            # q[t] >= w[t]^2 by tangents at m and m/2, w = u / work, m = the most w can be
            q = b.columns(np.zeros(len(slots)), np.zeros(len(slots)), np.full(len(slots), np.inf))
            m = np.minimum(1.0, length / job.hours)
            for alpha in (m, m / 2):
                tan = b.rows_of(len(slots), -np.inf, alpha**2)  # 2 alpha w - q <= alpha^2
                b.entries(tan, u, 2 * alpha / work)
                b.entries(tan, q, -1.0)
            # C >= sum_t w[t] start[t] + hours/2 sum_t q[t] + hours/2
            row = b.rows_of(1, -np.inf, -job.hours / 2)
            b.entries(np.full(len(u), row[0]), u, start / work)
            b.entries(np.full(len(q), row[0]), q, job.hours / 2)
            b.entries(row, c_cols[k : k + 1], -1.0)
    for p in pools:
        if cap_terms[p.id]:
            cap = b.rows_of(n_slots, -np.inf, usable_node_h[p.id])
            for y in cap_terms[p.id]:
                b.entries(cap, y, 1.0)
    submits = sum(j.submit_h for j in jobs)
    jct = b.rows_of(1, -np.inf, np.inf)  # bounded below, per mean JCT asked
    b.entries(np.full(len(jobs), jct[0]), c_cols, 1.0)
    h = b.model()
    found: list[LowerBound | None] = []
    for mean_jct_h in mean_jct_hs:  # only the JCT row's bound changes: each solve starts from the last
        h.changeRowBounds(int(jct[0]), -np.inf, len(jobs) * mean_jct_h + submits)
        h.run()
        ok = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
        usage = float(h.getInfo().objective_function_value) if ok else None
        found.append(None if usage is None else LowerBound(reserved_fee + usage, PER_JOB_JCT_RULE))
    return found


def scenario_jct_bounds(
    scenario: Scenario, world: World, seed: int, mean_jct_hs: list[float], slot_hours: float = 1.0
) -> list[LowerBound | None]:
    """``per_job_jct_lower_bounds`` for a scenario's whole workload and window (no policy run needed):
    the cheapest any schedule finishing all of it within the window at each mean JCT could be."""
    backend = capacity_timeline(scenario, world, seed)
    states = list(backend.state.values())
    prov = {  # the shortest provisioning of a pool the job may use, spot allowed or not
        ok: min([s.provision_seconds for s in states if ok or s.pool.purchase != "spot"], default=0)
        for ok in (False, True)
    }
    hours = {j.id: (j.work + prov[j.spot_ok]) / 3600 for j in world.jobs}
    jobs = [BoundJob(j.submit / 3600, j.nodes, hours[j.id], j.spot_ok) for j in world.jobs]
    horizon_h = (scenario.duration_days + scenario.drain_days) * 24.0
    edges = np.append(np.arange(0.0, horizon_h, slot_hours), horizon_h)
    usable = {s.pool.id: s.usable_node_seconds(edges * 3600.0) / 3600.0 for s in states}
    pools = [s.pool for s in states]
    fee = horizon_h * sum(
        p.price_per_node_hour * (p.capacity_nodes or 0) for p in pools if p.purchase is Purchase.RESERVED
    )
    return per_job_jct_lower_bounds(jobs, pools, usable, edges, fee, mean_jct_hs)
