"""Queue order: who gets capacity first.

Priority descending, then submit time (FIFO), then id so the order is total and repeatable. With
``fair_share`` on, jobs of equal priority are interleaved between teams, each team's next job
ranked by how many GPUs the team already runs plus what it was given earlier in the cycle
(a dominant-resource share with one resource: GPUs), so one team's burst cannot starve another.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from itertools import groupby

from overcast.scheduler.snapshot import PendingJob


def queue_key(job: PendingJob) -> tuple[int, float, str]:
    return (-job.spec.priority, job.submitted_at, job.id)


def job_gpus(job: PendingJob) -> int:
    per_node = max((a.count for a in job.spec.resources.accelerators), default=0)
    return per_node * job.spec.num_nodes


def order_queue(
    pending: Iterable[PendingJob], *, fair_share: bool = False, team_gpus: Mapping[str, int] | None = None
) -> list[PendingJob]:
    """Pending jobs in the order the scheduler considers them. ``team_gpus``: GPUs each team runs now."""
    ordered = sorted(pending, key=queue_key)
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
            # the team with the smallest share goes next; ties: whose head job was submitted first
            team = min(heads, key=lambda t: (share[t], queue_key(by_team[t][heads[t]])))
            job = by_team[team][heads[team]]
            out.append(job)
            share[team] += job_gpus(job)
            heads[team] += 1
            if heads[team] == len(by_team[team]):
                del heads[team]
    return out
