"""decide(snapshot) -> Decisions: the scheduler's one pure step, used by the control loop and the twin.

No side effects, no clock, no I/O: the same snapshot always gives the same decisions. The cycle is a
numbered recipe (Kueue style); each step's time lands in ``Decisions.step_seconds``.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import groupby
from operator import attrgetter
from time import perf_counter

import numpy as np

from overcast.placement import score
from overcast.placement.filters import request_key
from overcast.placement.index import PoolIndex, Usage
from overcast.scheduler.batch_adapter import place_level
from overcast.scheduler.budget import TeamBudgets
from overcast.scheduler.burst import BurstLimit, ListPriceGate
from overcast.scheduler.consolidate import find_moves
from overcast.scheduler.preemption import find_eviction
from overcast.scheduler.queue import order_queue
from overcast.scheduler.sequential import place_in_order
from overcast.scheduler.snapshot import Decisions, PendingJob, Preempt, RunningJob, Snapshot
from overcast.scheduler.yield_room import YieldOption, YieldRule, apply_yield

BATCH_THRESHOLD = 200  # more pending jobs than this compete for capacity: use the batch solver
TIME_BUDGET_S = 2.0  # for the batch solver


def decide(
    snapshot: Snapshot,
    *,
    batch_threshold: int = BATCH_THRESHOLD,
    time_budget_s: float = TIME_BUDGET_S,
    fair_share: bool = False,
    queue_order: str = "slowdown",
    consolidate: bool = True,
    burst_limit_node_hours: float | None = None,
    burst_yield: YieldOption = None,
) -> Decisions:
    start = perf_counter()
    decisions = Decisions()
    timer = _StepTimer(decisions.step_seconds)

    # 1. Order the queue: priority desc, then (queue.py) slowdown tier, shorter first, submit time;
    #    optionally fair share between teams.
    #    A job already running, or listed twice, is considered once.
    running_ids = {r.id for r in snapshot.running}
    queue: list[PendingJob] = []
    seen: set[str] = set()
    team_gpus = _team_gpus(snapshot) if fair_share else None
    for job in order_queue(
        snapshot.pending, fair_share=fair_share, team_gpus=team_gpus, order=queue_order, now=snapshot.now
    ):
        if job.id in running_ids:
            decisions.unplaced[job.id] = "already running"
        elif job.id not in seen:
            seen.add(job.id)
            queue.append(job)
    timer.lap("1-order-queue")

    # 2. Free capacity: pool capacity minus running use (the larger of what the pool reports and
    #    what our running jobs hold, so neither convention double counts), and quota GPUs left.
    #    Team budgets: what each budgeted team has left once its running jobs' expected cost is
    #    counted (budget.py); with the burst limit, the gate on list-price pools (burst.py).
    index, running_by_pool = _index(snapshot)
    usage = index.new_usage()
    budgets = TeamBudgets.build(snapshot.team_budgets, index, snapshot.running, snapshot.now)
    burst = None if burst_limit_node_hours is None else BurstLimit(burst_limit_node_hours, snapshot.now)
    gate = ListPriceGate.of(burst, budgets)
    timer.lap("2-free-capacity")

    # 3. Place, one priority level at a time (highest first): few pending jobs -> single-job placement
    #    in queue order; many competing jobs -> the batch solver for the level.
    # 4. Preempt, right after each level, so the lower levels cannot take what it frees or holds:
    #    a job that could not be placed may stop strictly lower-priority running jobs in one pool
    #    where that frees enough nodes. It waits for them to stop; the free nodes it will use are
    #    held for it this cycle, and the victims' nodes stay counted as used until they are gone.
    #    Within a cycle capacity only shrinks and victims only get fewer, so a request that found no
    #    pool (or no eviction, at some priority) finds none later either: remember and skip those.
    levels = [list(jobs) for _, jobs in groupby(queue, key=lambda j: j.spec.priority)]
    use_batch = len(queue) > batch_threshold
    preempted: set[str] = set()
    misses: dict[tuple, str] = {}  # request_key -> why it fits nowhere
    no_eviction: dict[tuple, int] = {}  # request_key -> highest priority that found no eviction
    lowest: int | None = None  # lowest priority among running jobs (worked out when first needed)
    deadline = perf_counter() + time_budget_s
    for done, jobs in enumerate(levels):
        if use_batch:
            budget = max(deadline - perf_counter(), 0.0) / (len(levels) - done)  # what is left, shared
            placed, unplaced = place_level(
                jobs, index, usage, now=snapshot.now, time_budget_s=budget, misses=misses,
                order=queue_order, gate=gate,
            )  # fmt: skip
        else:
            placed, unplaced = place_in_order(jobs, index, usage, now=snapshot.now, misses=misses, gate=gate)
        decisions.place.extend(placed)
        timer.lap("3-place", add=True)
        for job, why in unplaced:
            decisions.unplaced[job.id] = why
            if not running_by_pool:
                continue
            if lowest is None:  # once per cycle, and only in a cycle that leaves a job out
                lowest = min(r.spec.priority for jobs in running_by_pool.values() for r in jobs)
            if job.spec.priority <= lowest:
                continue  # no running job has a lower priority: there is no one to preempt for it
            key = request_key(job.spec)
            if no_eviction.get(key, -(10**9)) >= job.spec.priority:
                continue
            now = snapshot.now
            found = _preempt_for(job, index, running_by_pool, usage, now, preempted, decisions, gate)
            if not found and (gate is None or not gate.restricted(job, index)):
                no_eviction[key] = job.spec.priority  # (a gated job's miss says nothing of other jobs)
        timer.lap("4-preempt", add=True)

    # 4b. Yield (yield_room.py, off unless set; needs the burst limit): a wide, long, checkpointed gang
    #     on the reservation gives its room to jobs this cycle would start at list price. One about to
    #     start is not started; a running one is stopped and, as in step 4, the jobs wait for its nodes.
    #     Only a fresh gang yields (never run and waited under its own hours; running: first attempt).
    #     Set by a twin scenario's decide_options or the fleet file's scheduler: section.
    rule = YieldRule.of(burst_yield)
    if rule is not None and burst_limit_node_hours is not None:
        apply_yield(
            rule, decisions, index, usage, {j.id: j for j in queue}, snapshot.running,
            limit_node_hours=burst_limit_node_hours, now=snapshot.now, skip=preempted,
        )  # fmt: skip
        timer.lap("4b-yield")

    # 5. Consolidate (consolidate.py): room no pending job could use, on a pool cheaper than where a
    #    running job pays list price, takes that job: it is stopped gracefully and placed again next
    #    cycle, when the saving over its expected remaining hours outweighs the restart (and, for a
    #    budgeted team, its full expected cost there fits what the team has left).
    if consolidate and not any(j.id in decisions.unplaced for j in queue):
        for move in find_moves(
            index, usage, running_by_pool, now=snapshot.now, skip=preempted, budgets=budgets
        ):
            target = index.pools[move.position]
            decisions.preempt.append(
                Preempt(move.job.id, f"move to cheaper {target.id}: saves ~${move.saving:,.0f} expected")
            )
    timer.lap("5-consolidate")

    # 6. Decisions: places, preemptions and why each other job stays pending.
    decisions.seconds = perf_counter() - start
    return decisions


def _preempt_for(
    job: PendingJob,
    index: PoolIndex,
    running_by_pool: dict[int, list[RunningJob]],
    usage: Usage,
    now: float,
    preempted: set[str],
    decisions: Decisions,
    gate: ListPriceGate | None,
) -> bool:
    """Preempt for ``job`` if some pool allows it; False when none does (or only one the list-price
    gate keeps it off). The room held for it also holds its expected cost against its team's budget."""
    if gate is not None and gate.restricted(job, index):  # only pools it may start on
        positions = np.fromiter(running_by_pool, dtype=np.int64, count=len(running_by_pool))
        allowed = gate.usable(job, index, positions, score.expected_cost(index, positions, job.spec))
        running_by_pool = {p: running_by_pool[p] for p in positions[allowed].tolist()}
    eviction = find_eviction(job, index, running_by_pool, now=now, usage=usage, already_preempted=preempted)
    if eviction is None:
        return False
    if gate is not None:
        cost = float(score.expected_cost(index, np.array([eviction.position]), job.spec)[0])
        gate.took(job, index, eviction.position, cost)
    pool = index.pools[eviction.position]
    # Reasons end up in each team's own timeline: another team's job is told by its priority only.
    team, priority = job.spec.team, job.spec.priority
    for victim in eviction.victims:
        preempted.add(victim.id)
        if victim.spec.team == team:
            preemptor = f"{job.id} (priority {priority})"
        else:
            preemptor = f"a priority-{priority} job of another team"
        decisions.preempt.append(
            Preempt(
                victim.id,
                f"make room for {preemptor} on {pool.id}; {victim.id} has priority {victim.spec.priority}",
                for_job=job.id,
            )
        )
    hold = min(eviction.free_before, job.spec.num_nodes)
    if hold > 0:
        usage.take(index, eviction.position, hold)
    decisions.unplaced[job.id] = f"waiting for {pool.id}: preempting {_victims(eviction.victims, team)}"
    return True


def _victims(victims: tuple[RunningJob, ...], team: str) -> str:
    """The team's own victims by id, other teams' by count: "r1, r2", "3 running jobs of other teams"."""
    own = [v.id for v in victims if v.spec.team == team]
    others = len(victims) - len(own)
    if others:
        own.append(f"{others} running jobs of other teams" if others > 1 else "1 running job of another team")
    return ", ".join(own)


def _index(snapshot: Snapshot) -> tuple[PoolIndex, dict[int, list[RunningJob]]]:
    # one pass over the running jobs (thousands at scale, every cycle): group them by pool, then sum
    by_id: dict[str, list[RunningJob]] = defaultdict(list)
    for r in snapshot.running:
        by_id[r.pool_id].append(r)
    held = {pool_id: sum(map(_nodes, jobs)) for pool_id, jobs in by_id.items()}
    used = {p.id: max(p.used_nodes, held.get(p.id, 0)) for p in snapshot.pools}
    index = PoolIndex.build(
        snapshot.pools,
        quotas=snapshot.quotas,
        disabled_providers=snapshot.disabled_providers,
        used_nodes=used,
    )
    by_pool = {index.position_of[i]: jobs for i, jobs in by_id.items() if i in index.position_of}
    return index, by_pool


_nodes = attrgetter("nodes")


def _team_gpus(snapshot: Snapshot) -> dict[str, int]:
    gpus_per_node = {p.id: p.gpus_per_node for p in snapshot.pools}
    teams: dict[str, int] = defaultdict(int)
    for r in snapshot.running:
        teams[r.spec.team] += r.nodes * gpus_per_node.get(r.pool_id, 0)
    return teams


class _StepTimer:
    def __init__(self, into: dict[str, float]) -> None:
        self.into = into
        self.last = perf_counter()

    def lap(self, step: str, *, add: bool = False) -> None:
        now = perf_counter()
        self.into[step] = (self.into.get(step, 0.0) if add else 0.0) + now - self.last
        self.last = now
