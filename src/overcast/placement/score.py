"""Score: the expected cost of running a job in each candidate pool (lower is better).

    expected_cost = nodes x marginal_price x expected_hours x (1 + preemptions_per_hour x lost_hours)

- ``marginal_price`` is what one more node-hour costs now: 0 for reserved capacity (already paid),
  the list price for on-demand and spot.
- ``lost_hours`` is what one preemption costs in wall time: the restart (re-provision, re-load)
  plus the work since the last checkpoint, on average half a checkpoint interval; without a
  checkpoint_dir the job restarts from zero, losing on average half its run.
- ``preemptions_per_hour`` comes from the pool (learned from events, or assumed by the catalog for
  spot). Each preemption adds ``lost_hours`` of paid time, so the expected extra hours are
  ``expected_hours x preemptions_per_hour x lost_hours`` (first order; fine while that is small).
"""

from __future__ import annotations

import numpy as np

from overcast.placement.index import PoolIndex
from overcast.spec.models import JobSpec

RESTART_HOURS = 0.25  # re-provision nodes, pull the image, load the checkpoint
CHECKPOINT_INTERVAL_HOURS = 1.0  # assumed when a job has a checkpoint_dir


def lost_hours_per_preemption(job: JobSpec) -> float:
    work_lost = CHECKPOINT_INTERVAL_HOURS / 2 if job.checkpoint_dir else job.expected_hours / 2
    return RESTART_HOURS + work_lost


def risk_factor(index: PoolIndex, positions: np.ndarray, job: JobSpec) -> np.ndarray:
    """1 + expected extra hours per hour of work, per pool."""
    return 1.0 + index.preemptions_per_hour[positions] * lost_hours_per_preemption(job)


def expected_cost(index: PoolIndex, positions: np.ndarray, job: JobSpec) -> np.ndarray:
    hourly = index.marginal[positions] * job.num_nodes
    return hourly * job.expected_hours * risk_factor(index, positions, job)


def rank(
    index: PoolIndex, positions: np.ndarray, alternative: np.ndarray, cost: np.ndarray, *, ordered: bool
) -> np.ndarray:
    """Order of ``positions`` from best to worst: (preference when ordered), expected cost, list price,
    then pool id (positions follow id order within an accelerator) so ties break the same way."""
    keys = [positions, index.price[positions], cost]
    if ordered:
        keys.append(alternative)
    return np.lexsort(keys)
