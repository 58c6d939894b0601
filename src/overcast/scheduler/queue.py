"""Queue order: who gets capacity first.

Priority descending always comes first. Within a priority level (``order="slowdown"``, the default) a
job's place is set by its **slowdown tier**, ``floor(log2(1 + hours waited / expected_hours))`` — one
tier per doubling of how long it has waited measured in its own expected runtime — highest tier first,
then the shorter expected runtime, then submit time (FIFO), then id so the order is total and
repeatable. Short jobs therefore go first (what minimises mean completion time when the queue is long),
and a long job climbs a tier every time its wait doubles relative to its length, so it is never starved:
a 32 h job that has waited 32 h ranks with a 1 h job that has waited 1 h. ``order="fifo"`` is the plain
priority-then-submit order. With ``fair_share`` on, jobs of equal priority are interleaved between teams,
each team's next job ranked by how many GPUs the team already runs plus what it was given earlier in the
cycle (a dominant-resource share with one resource: GPUs), so one team's burst cannot starve another.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from itertools import groupby

from overcast.scheduler.snapshot import PendingJob

ORDERS = ("slowdown", "fifo")
MAX_TIER = 64  # 2**64 times its own length waited: beyond any real queue


def queue_key(job: PendingJob) -> tuple[int, float, str]:
    """FIFO within a priority level."""
    return (-job.spec.priority, job.submitted_at, job.id)


def slowdown_tier(job: PendingJob, now: float) -> int:
    """One tier per doubling of (1 + hours waited / expected hours); 0 for a job that just arrived."""
    waited_h = max(now - job.submitted_at, 0.0) / 3600.0
    return min(int(math.log2(1.0 + waited_h / max(job.spec.expected_hours, 1e-6))), MAX_TIER)


def slowdown_key(job: PendingJob, now: float) -> tuple[int, int, float, float, str]:
    """Priority, then slowdown tier (highest first), then the shorter job, then FIFO."""
    spec = job.spec
    return (-spec.priority, -slowdown_tier(job, now), spec.expected_hours, job.submitted_at, job.id)


def key_for(order: str, now: float) -> Callable[[PendingJob], tuple]:
    if order == "slowdown":
        return lambda job: slowdown_key(job, now)
    if order == "fifo":
        return queue_key
    raise ValueError(f"unknown queue order {order!r}; choose from {', '.join(ORDERS)}")


def job_gpus(job: PendingJob) -> int:
    per_node = max((a.count for a in job.spec.resources.accelerators), default=0)
    return per_node * job.spec.num_nodes


def order_queue(
    pending: Iterable[PendingJob],
    *,
    fair_share: bool = False,
    team_gpus: Mapping[str, int] | None = None,
    order: str = "slowdown",
    now: float = 0.0,
) -> list[PendingJob]:
    """Pending jobs in the order the scheduler considers them. ``team_gpus``: GPUs each team runs now."""
    key = key_for(order, now)
    ordered = sorted(pending, key=key)
    if not fair_share:
        return ordered
    share = defaultdict(int, team_gpus or {})
    out: list[PendingJob] = []
    for _, same_priority in groupby(ordered, key=lambda j: j.spec.priority):
        by_team: dict[str, list[PendingJob]] = defaultdict(list)
        for job in same_priority:
            by_team[job.spec.team].append(job)
        heads = {team: 0 for team in by_team}
        while heads:
            # the team with the smallest share goes next; ties: whose head job comes first in the order
            team = min(heads, key=lambda t: (share[t], key(by_team[t][heads[t]])))
            job = by_team[team][heads[team]]
            out.append(job)
            share[team] += job_gpus(job)
            heads[team] += 1
            if heads[team] == len(by_team[team]):
                del heads[team]
    return out
