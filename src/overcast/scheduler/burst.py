"""Burst limit: which jobs may start on list-price capacity while capacity already paid for exists.

With ``decide(burst_limit_node_hours=L)``, a job whose expected size (nodes x expected_hours) exceeds L
does not start on a pool with a marginal price (on-demand, spot) when some pool it could use costs
nothing more per hour (a reservation) and is large enough for its whole gang: it waits for that pool,
and its slowdown tier moves it up the queue while it waits. Jobs that fit no such pool (larger than
every reservation, or whose constraints exclude them, or while the reservation's provider is down) are
not limited, so every job can still run.

Why: list-price capacity buys the most completion time per dollar on small jobs. A job's completion
time counts once whatever its size, but its list-price cost grows with nodes x hours, so spending the
on-demand budget on short, narrow work and keeping the big work on the reservation cuts cost a lot and
mean JCT a little (it is a trade: the big jobs wait longer). Off by default: the right L is the lab's
price for an hour of completion time, not something the scheduler can know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from overcast.placement.filters import Request, request_key, run_filters
from overcast.placement.index import PoolIndex
from overcast.scheduler.snapshot import PendingJob


class ListPriceRule(Protocol):
    """A rule on which list-price (marginal price > 0) pools a job may start on; zero-price pools
    (reservations, own clusters) are always allowed. The burst limit and team budgets are two."""

    def usable(
        self, job: PendingJob, index: PoolIndex, positions: np.ndarray, cost: np.ndarray
    ) -> np.ndarray:
        """Mask over ``positions`` (``cost``: the job's expected cost on each) of pools it may start on."""
        ...

    def restricted(self, job: PendingJob, index: PoolIndex) -> bool:
        """True when the rule may keep ``job`` off some pool (its misses then say nothing of others)."""
        ...

    def reason(self, job: PendingJob, index: PoolIndex, cost: float) -> str: ...

    def took(self, job: PendingJob, index: PoolIndex, position: int, cost: float) -> None:
        """``job`` starts (or holds room) on ``position`` at expected ``cost``."""
        ...


@dataclass(slots=True)
class ListPriceGate:
    """Every rule at once: what decide() and its placement steps ask."""

    rules: tuple[ListPriceRule, ...]

    @classmethod
    def of(cls, *rules: ListPriceRule | None) -> ListPriceGate | None:
        kept = tuple(r for r in rules if r is not None)
        return cls(kept) if kept else None

    def usable(
        self, job: PendingJob, index: PoolIndex, positions: np.ndarray, cost: np.ndarray
    ) -> np.ndarray:
        mask = np.ones(len(positions), dtype=bool)
        for rule in self.rules:
            mask &= rule.usable(job, index, positions, cost)
        return mask

    def why_not(self, job: PendingJob, index: PoolIndex, position: int, cost: float) -> str | None:
        """None when ``job`` may start on ``position``, else the first refusing rule's reason."""
        at, price = np.array([position]), np.array([cost])
        for rule in self.rules:
            if not rule.usable(job, index, at, price)[0]:
                return rule.reason(job, index, cost)
        return None

    def restricted(self, job: PendingJob, index: PoolIndex) -> bool:
        return any(rule.restricted(job, index) for rule in self.rules)

    def took(self, job: PendingJob, index: PoolIndex, position: int, cost: float) -> None:
        for rule in self.rules:
            rule.took(job, index, position, cost)


@dataclass(slots=True)
class BurstLimit:
    node_hours: float
    now: float
    _homes: dict[tuple, np.ndarray] = field(default_factory=dict)  # request key -> zero-price pools

    def limited(self, job: PendingJob, index: PoolIndex) -> bool:
        """True when ``job`` may only start on pools that cost nothing more per hour."""
        spec = job.spec
        if spec.num_nodes * spec.expected_hours <= self.node_hours:
            return False
        return len(self.homes(job, index)) > 0

    def homes(self, job: PendingJob, index: PoolIndex) -> np.ndarray:
        """Usable zero-marginal-price pools the job may use whose nominal size holds its gang (free room
        aside: waiting for room there is the point)."""
        key = request_key(job.spec)
        found = self._homes.get(key)
        if found is None:
            trace, _ = run_filters(Request.of(job.spec), index, now=self.now, usage=None)
            positions = trace.survivors_but_usage
            positions = positions[index.marginal[positions] == 0]
            sizes = [index.pools[p].capacity_nodes for p in positions.tolist()]
            big_enough = np.array([s is None or s >= job.spec.num_nodes for s in sizes], dtype=bool)
            found = self._homes[key] = positions[big_enough] if len(positions) else positions
        return found

    def usable(
        self, job: PendingJob, index: PoolIndex, positions: np.ndarray, cost: np.ndarray
    ) -> np.ndarray:
        if not self.limited(job, index):
            return np.ones(len(positions), dtype=bool)
        return index.marginal[positions] == 0

    def restricted(self, job: PendingJob, index: PoolIndex) -> bool:
        return self.limited(job, index)

    def reason(self, job: PendingJob, index: PoolIndex, cost: float) -> str:
        size = job.spec.num_nodes * job.spec.expected_hours
        return f"burst limit: {size:g} node-hours > {self.node_hours:g}; waits for reserved capacity"

    def took(self, job: PendingJob, index: PoolIndex, position: int, cost: float) -> None:
        pass  # the limit is per job: nothing to count
