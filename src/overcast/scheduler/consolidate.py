"""Consolidation: move running work onto cheaper capacity that nothing in the queue could use.

A job placed on on-demand or spot because the reservation was full keeps paying list price after
reserved nodes free up, and with nothing pending that fits them they sit idle (already paid for). When
that happens, stop the dear run gracefully (the job checkpoints and loses nothing, as preemption does)
and let the next cycle place it again: its slowdown tier puts it at the head of the queue, and the
cheapest pool with room is where it goes.

A move pays a restart (``score.RESTART_HOURS`` of the new pool's time, and that much delay) and is made
only when the expected remaining work, at the difference in expected cost per hour (price x preemption
risk), saves more than the restart costs at both pools' prices (paid on the new one, and a margin for
the delay on the old one). Remaining work is estimated from the job's ``expected_hours`` minus the time
this attempt has run; jobs without a ``checkpoint_dir`` are never moved (they would start over). A job
of a budgeted team moves only where its full expected cost (what it is priced at once pending again)
fits what the team has left with the job's own held cost released (budget.py): otherwise the budget
would keep it from starting again, and running jobs are never stopped for a budget.

Moves only pay when the cheap room is really spare. decide() asks for them only in a cycle where every
pending job was placed, and this module only when no running job started on a dearer pool within the
last hour (demand has not overflowed the cheap capacity lately). Otherwise the dear room a move frees is
taken by the next job and the cheap room it takes would have gone to the next arrival: the move only
pays a restart. Measured in the twin: moving while jobs wait raised cost on two of four scenarios;
moving whenever the queue was empty raised it 2% at 100,000 jobs over 3 days, where arrivals refill any
room within minutes. The nodes a move will use are held for this cycle, and each job moves at most once
per cycle, always to a strictly cheaper pool (no ping-pong).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import attrgetter

import numpy as np

from overcast.placement import score
from overcast.placement.filters import Request, request_key, run_filters
from overcast.placement.index import PoolIndex, Usage
from overcast.scheduler.budget import TeamBudgets
from overcast.scheduler.snapshot import RunningJob

MIN_REMAINING_HOURS = 1.0  # a job about to finish is not worth a restart, whatever it costs per hour
QUIET_SECONDS = 3600.0  # no job started on a dearer pool for this long: the cheap room is really spare

_started_at = attrgetter("started_at")  # read for every running job on a dear pool, every cycle


@dataclass(frozen=True, slots=True)
class Move:
    job: RunningJob
    position: int  # the cheaper pool's position in the index
    saving: float  # expected $ saved, restart paid


def find_moves(
    index: PoolIndex,
    usage: Usage,
    running_by_pool: dict[int, list[RunningJob]],
    *,
    now: float,
    skip: set[str],
    budgets: TeamBudgets | None = None,
) -> list[Move]:
    """Moves of running jobs to strictly cheaper pools with room, best saving first. Mutates ``usage``
    (holds the target nodes) and ``budgets`` (a move's cost). ``skip``: jobs already being stopped this
    cycle."""
    if not running_by_pool:
        return []
    everywhere = np.arange(len(index.pools))
    room = index.free_nodes(everywhere, usage) > 0
    if not room.any():
        return []
    cheapest_with_room = float(index.marginal[room].min())
    dear = [pos for pos in running_by_pool if index.marginal[pos] > cheapest_with_room]
    if not dear:
        return []
    # Demand overflowed onto list price within the last hour: the cheap room will be refilled by the next
    # arrivals, and a move would only hand them the dear room (measured at 1M jobs: +2% cost, 5x slower).
    last_overflow = max(map(_started_at, chain.from_iterable(running_by_pool[pos] for pos in dear)))
    if now - last_overflow < QUIET_SECONDS:
        return []
    options: list[tuple[float, int, RunningJob, float, float]] = []  # (value, pool, job, hours left, $/h)
    for pos in dear:
        here = 0.0
        for run in running_by_pool[pos]:
            spec = run.spec
            remaining = spec.expected_hours - max(now - run.started_at, 0.0) / 3600.0
            if run.id in skip or not spec.checkpoint_dir or remaining < MIN_REMAINING_HOURS:
                continue
            # checkpointed jobs all lose the same per preemption: one risk factor per pool
            here = here or float(index.marginal[pos] * score.risk_factor(index, np.array([pos]), spec)[0])
            options.append((remaining * here * run.nodes, pos, run, remaining, here))
    options.sort(key=lambda o: (-o[0], o[2].id))
    moves: list[Move] = []
    targets: dict[tuple, np.ndarray] = {}
    for _, pos, run, remaining, here in options:
        spec = run.spec
        key = request_key(spec)
        if key not in targets:  # the static filters are cached per index: this is cheap per shape
            trace, _ = run_filters(Request.of(spec), index, now=now, usage=None)
            targets[key] = trace.survivors_but_usage
        positions = targets[key]
        positions = positions[(positions != pos) & (index.free_nodes(positions, usage) >= run.nodes)]
        positions = positions[index.quota_gpus_left(positions, usage) >= run.nodes * index.gpus[positions]]
        if not len(positions):
            continue
        rate = index.marginal[positions] * score.risk_factor(index, positions, spec)
        best = int(np.lexsort((positions, index.price[positions], rate))[0])
        there = float(rate[best])
        saving = run.nodes * (remaining * (here - there) - score.RESTART_HOURS * (there + here))
        if saving <= 0:
            continue
        target = int(positions[best])
        if budgets is not None and not budgets.allows_move(run, index, target, now):
            continue  # pending again, its team could not afford to start it there: it keeps running
        usage.take(index, target, run.nodes)
        moves.append(Move(run, target, saving))
    return moves
