"""Team budgets: a team keeps within its monthly list-price budget.

``Snapshot.team_budgets`` holds the dollars each budgeted team has left this month (its budget minus
what it spent so far; a team absent from it is unlimited). decide() first takes off what the team's
running jobs on list-price pools are still expected to cost (nodes x price x the hours left of their
``expected_hours``, with the preemption risk factor, as ``placement.score`` prices a placement), so
consecutive cycles cannot overspend either. A job may then start on a list-price pool only where its
expected cost there fits what is left; each placement (or room held for a preemption) takes its
expected cost off at once, so one cycle cannot overspend. Zero-marginal-price pools (reservations,
own clusters) are always allowed: that use is already paid for. A job that fits no such pool waits,
with a reason naming the team's money left and what the job would cost. Running jobs are never
stopped for a budget, nor moved by consolidation to where the budget would keep them from restarting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from overcast.placement import score
from overcast.placement.index import PoolIndex
from overcast.scheduler.snapshot import PendingJob, RunningJob


@dataclass(slots=True)
class TeamBudgets:
    left: dict[str, float]  # team -> dollars it may still commit this cycle

    @classmethod
    def build(
        cls, budgets: Mapping[str, float], index: PoolIndex, running: Iterable[RunningJob], now: float
    ) -> TeamBudgets | None:
        """What each team has left once its running list-price jobs' expected remaining cost is taken
        off; None without budgets (nothing to check)."""
        if not budgets:
            return None
        left = dict(budgets)
        for job in running:
            if job.spec.team in left:
                left[job.spec.team] -= held(job, index, now)
        return cls(left)

    def usable(
        self, job: PendingJob, index: PoolIndex, positions: np.ndarray, cost: np.ndarray
    ) -> np.ndarray:
        left = self.left.get(job.spec.team)
        if left is None:
            return np.ones(len(positions), dtype=bool)
        return _affordable(index.marginal[positions], cost, left)

    def restricted(self, job: PendingJob, index: PoolIndex) -> bool:
        return job.spec.team in self.left

    def reason(self, job: PendingJob, index: PoolIndex, cost: float) -> str:
        team = job.spec.team
        return (
            f"team {team} budget: {dollars(self.left[team])} left this month, job would cost ~{dollars(cost)}"
        )

    def took(self, job: PendingJob, index: PoolIndex, position: int, cost: float) -> None:
        team = job.spec.team
        if team in self.left and index.marginal[position] > 0:
            self.left[team] -= cost

    def allows_move(self, run: RunningJob, index: PoolIndex, position: int, now: float) -> bool:
        """May consolidation stop ``run`` to move it to ``position``? Stopped, it is pending next cycle
        and priced at its full expected cost there: a budgeted team's job moves only where that fits
        what is left once its own held cost is released, or a move would strand it (running jobs are
        never stopped for a budget). A yes takes the new cost off."""
        team = run.spec.team
        if team not in self.left:
            return True
        freed = self.left[team] + held(run, index, now)
        cost = float(score.expected_cost(index, np.array([position]), run.spec)[0])
        if not _affordable(index.marginal[position], cost, freed):
            return False
        self.left[team] = freed - cost
        return True


def _affordable(marginal: np.ndarray | float, cost: np.ndarray | float, left: float) -> np.ndarray | bool:
    """Already paid for (zero marginal price), or its expected ``cost`` fits the money ``left``."""
    return (marginal == 0) | ((cost <= left) & (left > 0))


def held(job: RunningJob, index: PoolIndex, now: float) -> float:
    """What ``job`` is still expected to cost its team: nodes x the $/node-hour its attempt is billed
    at (frozen at launch; else its pool's marginal price) x the hours left of its expected_hours x
    the pool's preemption risk. Its pool need not be listed this tick (a backend's pools() failed):
    the frozen price still holds it, at risk 1."""
    position = index.position_of.get(job.pool_id)
    price = job.launch_price
    if price is None:
        price = 0.0 if position is None else float(index.marginal[position])
    if price <= 0:
        return 0.0
    hours = max(job.spec.expected_hours - max(now - job.started_at, 0.0) / 3600.0, 0.0)
    risk = 1.0 if position is None else float(score.risk_factor(index, np.array([position]), job.spec)[0])
    return job.nodes * price * hours * risk


def dollars(x: float) -> str:
    """$1,234 (cents below $100), with the sign in front: -$50 is money a team overspent."""
    text = f"{abs(x):,.0f}" if abs(x) >= 100 else f"{abs(x):,.2f}"
    return f"{'-' if x <= -0.005 else ''}${text}"
