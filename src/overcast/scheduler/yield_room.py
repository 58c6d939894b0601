"""Yield: a wide, long gang on the reservation steps aside for jobs that would start at list price.

An option of decide() (``burst_yield``), off by default, that only acts with the burst limit. With the
limit, jobs above it wait for the reservation and jobs below it start at list price when the
reservation is full. In a long peak the reservation is full throughout, so list-price spend is set by
how much work runs in the peak at all; it falls only when work is pushed past the peak, into room that
would otherwise idle. Yielding picks wide gangs: a gang of n nodes pushed back by D hours moves n x D
node-hours out of the peak for D hours of one job's completion time.

The rule, in a cycle that places jobs on list-price pools ("movers"): a checkpointed gang on a
zero-marginal-price pool, of at least ``min_nodes`` nodes, above the burst limit, with at least
``min_hours_left`` expected hours left, gives its nodes to the movers when they (with the pool's free
room) fill at least ``fill`` of them (movers of its priority or higher, whose constraints allow the
pool). Back in the queue it is above the limit: it waits for the reservation. Two kinds of gang yield:

- one this cycle was about to start there: it is not started, and the movers start in its room now;
- one running there for at least ``min_run_hours``: it is stopped gracefully (at most ``max_per_cycle``
  per cycle, the most node-hours left first). As with priority preemption, the stop takes time: the
  movers are not started elsewhere at list price but wait ("waiting for <pool>: room yielded by ..."),
  the free nodes they will use are held for them, and the gang's nodes stay counted as used while it
  runs. A later cycle places them. While the gang is still stopping the same rule holds the room again
  (unit tests only: the twin's engine requeues a stopped job at once). Once it is gone, what the queue
  puts first in its room is often a held-back gang about to start there, which yields it by the first
  kind; otherwise the movers take it only if they come first, and some pay list price after all.

The extra wait is bounded: a gang yields only while fresh. One about to start yields only if it has
never run (attempt 0) and has waited less than its own expected hours (slowdown tier 0, queue.py), so
yield holds it back at most that long; a running one is stopped only in its first attempt, so yield
stops a gang at most once and never again after any restart.

Who calls it: decide(burst_yield=..., burst_limit_node_hours=...): the twin (a scenario's
``decide_options``) and the control loop when the fleet file's ``scheduler:`` section sets both
(scheduler/options.py); off otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import numpy as np

from overcast.placement.filters import Request, request_key, run_filters
from overcast.placement.index import PoolIndex, Usage
from overcast.scheduler.queue import slowdown_tier
from overcast.scheduler.snapshot import Decisions, PendingJob, Place, Preempt, RunningJob
from overcast.spec.models import JobSpec


@dataclass(frozen=True, slots=True)
class YieldRule:
    min_nodes: int = 8  # a gang narrower than this keeps its room
    min_hours_left: float = 32.0  # expected hours left (of the whole run, for one not started)
    min_run_hours: float = 0.5  # into its attempt, before a running gang is stopped
    fill: float = 0.5  # the movers must fill this share of its nodes
    max_per_cycle: int = 1  # running gangs stopped per cycle

    def __post_init__(self) -> None:
        if self.min_nodes < 1 or self.max_per_cycle < 0 or not 0 < self.fill <= 1:
            raise ValueError(f"burst_yield: min_nodes >= 1, max_per_cycle >= 0, 0 < fill <= 1 ({self})")
        if not all(math.isfinite(getattr(self, f.name)) for f in fields(self)):
            raise ValueError(f"burst_yield: every option must be finite ({self})")

    @classmethod
    def of(cls, value: YieldOption) -> YieldRule | None:
        """The rule from decide()'s option: a rule, a mapping of its fields, True (the defaults), or a
        string "min_nodes=8 min_hours_left=40" (a scenario's flat ``decide_options``); None/False: off.
        Anything else, or a value that is not a finite number (an integer for the integer fields), is a
        ValueError that names burst_yield."""
        if value is None or value is False:
            return None
        if isinstance(value, YieldRule):
            return value
        if value is True:
            return cls()
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in value.replace(",", " ").split()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(f"burst_yield: expected 'name=value ...', got {value!r}")
            value = {k.strip(): v.strip() for k, v in pairs}
        if not isinstance(value, Mapping):
            raise ValueError(f"burst_yield: expected true, a mapping or 'name=value ...', got {value!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(map(str, value)) - names)
        if unknown:
            raise ValueError(f"burst_yield: no option {unknown[0]!r} (it takes {sorted(names)})")
        return cls(**{k: _number(k, v) for k, v in value.items()})


def _number(name: str, raw: object) -> float | int:
    """``raw`` as the field's number: finite, and whole for the integer fields (8.0 and "8" are 8)."""
    try:
        if isinstance(raw, bool):
            raise TypeError
        number = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"burst_yield: {name} must be a number, got {raw!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"burst_yield: {name} must be finite, got {raw!r}")
    if name in _INTS:
        if number != int(number):
            raise ValueError(f"burst_yield: {name} must be a whole number, got {raw!r}")
        return int(number)
    return number


_INTS = ("min_nodes", "max_per_cycle")


YieldOption = YieldRule | Mapping[str, float] | bool | str | None  # what decide(burst_yield=...) takes


@dataclass(frozen=True, slots=True)
class _Gang:
    """A gang that may yield: running (``run``) or placed this cycle (``place``)."""

    job_id: str
    spec: JobSpec
    position: int
    nodes: int
    left: float  # expected hours left
    run: RunningJob | None = None
    place: Place | None = None


def apply_yield(
    rule: YieldRule,
    decisions: Decisions,
    index: PoolIndex,
    usage: Usage,
    pending: Mapping[str, PendingJob],
    running: list[RunningJob],
    *,
    limit_node_hours: float,
    now: float,
    skip: set[str],
) -> None:
    """Rewrite ``decisions`` (and ``usage``): list-price placements take the room of gangs that yield."""
    pos = index.position_of
    if not any(index.marginal[pos[p.pool_id]] > 0 for p in decisions.place):
        return
    fits = _Fits(index, now)
    # gangs about to start first: they yield without losing any work
    for place in list(decisions.place):
        at, job = pos[place.pool_id], pending[place.job_id]
        long = job.spec.expected_hours >= rule.min_hours_left
        fresh = job.attempt == 0 and slowdown_tier(job, now) == 0
        if (
            long
            and fresh
            and index.marginal[at] == 0
            and _may_yield(rule, job.spec, place.nodes, limit_node_hours)
        ):
            gang = _Gang(job.id, job.spec, at, place.nodes, job.spec.expected_hours, place=place)
            _yield(rule, gang, decisions, index, usage, pending, fits)
    stopped = 0
    for gang in _running_gangs(rule, index, running, limit_node_hours, now, skip):
        if stopped >= rule.max_per_cycle:
            break
        if _yield(rule, gang, decisions, index, usage, pending, fits):
            skip.add(gang.job_id)
            stopped += 1


def _may_yield(rule: YieldRule, spec: JobSpec, nodes: int, limit_node_hours: float) -> bool:
    """Checkpointed (a stop loses no work), wide, above the burst limit (it waits for the reservation)."""
    big = spec.num_nodes * spec.expected_hours > limit_node_hours
    return bool(spec.checkpoint_dir) and nodes >= rule.min_nodes and big


def _running_gangs(
    rule: YieldRule,
    index: PoolIndex,
    running: list[RunningJob],
    limit_node_hours: float,
    now: float,
    skip: set[str],
) -> list[_Gang]:
    """Running gangs that may yield, the most node-hours left first."""
    gangs: list[_Gang] = []
    for run in running:
        at = index.position_of.get(run.pool_id)
        if at is None or index.marginal[at] > 0 or run.id in skip or run.attempt > 1:
            continue
        if not _may_yield(rule, run.spec, run.nodes, limit_node_hours):
            continue
        ran = max(now - run.started_at, 0.0) / 3600.0
        left = run.spec.expected_hours - ran
        if left >= rule.min_hours_left and ran >= rule.min_run_hours:
            gangs.append(_Gang(run.id, run.spec, at, run.nodes, left, run=run))
    gangs.sort(key=lambda g: (-g.left * g.nodes, g.job_id))
    return gangs


class _Fits:
    """Whether a job's hard constraints (all but free room and quota) allow a pool; cached per request."""

    def __init__(self, index: PoolIndex, now: float) -> None:
        self.index, self.now = index, now
        self._allowed: dict[tuple, np.ndarray] = {}

    def __call__(self, job: PendingJob, position: int) -> bool:
        if self.index.pools[position].id in job.avoid_pools:
            return False
        key = request_key(job.spec)
        allowed = self._allowed.get(key)
        if allowed is None:
            trace, _ = run_filters(Request.of(job.spec), self.index, now=self.now, usage=None)
            allowed = self._allowed[key] = trace.survivors_but_usage
        return bool(np.isin(position, allowed))


def _yield(
    rule: YieldRule,
    gang: _Gang,
    decisions: Decisions,
    index: PoolIndex,
    usage: Usage,
    pending: Mapping[str, PendingJob],
    fits: _Fits,
) -> bool:
    """Give ``gang``'s room to this cycle's list-price placements if they fill enough of it."""
    at, pos = gang.position, index.position_of
    if gang.place is not None:
        usage.take(index, at, -gang.nodes)  # not started: its room is free again
    # a running gang's nodes (and quota GPUs) come free when it is gone
    freed = gang.nodes if gang.run is not None else 0
    gpus = int(index.gpus[at])
    room = int(min(index.free_nodes(np.array([at]), usage)[0], 10**9)) + freed
    quota = float(index.quota_gpus_left(np.array([at]), usage)[0]) + freed * gpus
    dear = [p for p in decisions.place if index.marginal[pos[p.pool_id]] > 0]
    movers: list[Place] = []
    used = 0
    # the dearest placements first (expected list-price node-hours)
    for p in sorted(dear, key=lambda p: (-p.nodes * pending[p.job_id].spec.expected_hours, p.job_id)):
        job = pending[p.job_id]
        if job.spec.priority < gang.spec.priority:
            continue  # a gang never steps aside for lower-priority work
        if used + p.nodes <= room and (used + p.nodes) * gpus <= quota and fits(job, at):
            movers.append(p)
            used += p.nodes
    if not movers or used < rule.fill * gang.nodes:
        if gang.place is not None:
            usage.take(index, at, gang.nodes)
        return False
    pool = index.pools[at]
    moved = {p.job_id for p in movers}
    for p in movers:
        usage.take(index, pos[p.pool_id], -p.nodes)  # no longer on its list-price pool
    if gang.place is not None:  # the movers start in its room now; it waits for the reservation
        by = _by(gang, pending)
        decisions.place = [
            Place(p.job_id, pool.id, p.nodes, f"{pool.id}: room yielded by {by(p)}")
            if p.job_id in moved
            else p
            for p in decisions.place
            if p.job_id != gang.job_id
        ]
        usage.take(index, at, used)
        decisions.unplaced[gang.job_id] = (
            f"waiting for {pool.id}: yields its room to {len(movers)} job(s) that would start at list price"
        )
        return True
    # running: stopped gracefully; the movers wait for its nodes, the free ones they will use are held
    decisions.preempt.append(
        Preempt(gang.job_id, f"yields {gang.nodes} nodes of {pool.id} to jobs that would start at list price")
    )
    usage.take(index, at, max(used - gang.nodes, 0))
    decisions.place = [p for p in decisions.place if p.job_id not in moved]
    by = _by(gang, pending)
    for p in movers:
        decisions.unplaced[p.job_id] = f"waiting for {pool.id}: room yielded by {by(p)}"
    return True


def _by(gang: _Gang, pending: Mapping[str, PendingJob]) -> Callable[[Place], str]:
    """Who yielded, as a mover's team may read it (reasons land in each team's own timeline): the
    gang's id for its own team, no id for another."""
    return lambda p: gang.job_id if pending[p.job_id].spec.team == gang.spec.team else "a job of another team"
