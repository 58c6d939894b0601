"""The twin backend: simulated providers behind the same Backend protocol as the real ones.

It keeps the truth the scheduler cannot see: how much spot capacity a provider would give right now
(replayed from a real trace), on-demand stock-outs, outages, provisioning delays, and how much work
each job has left. Launches beyond that truth raise ``CapacityError`` / ``ProviderDown`` exactly as a
cloud API would; spot reclaims and outages come back from ``poll()`` as PREEMPTED events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from overcast.backends.base import (
    Allocation,
    BackendEvent,
    CapacityError,
    EventKind,
    LaunchRequest,
    ProviderDown,
)
from overcast.placement.pool import Health, Pool
from overcast.twin.availability import AvailabilityTrace
from overcast.twin.clock import VirtualClock


@dataclass(slots=True)
class Run:
    """One attempt of a job on a pool: billing starts at launch, work after provisioning + restart."""

    job_id: str
    attempt: int
    pool: Pool
    nodes: int
    launched_at: float
    work_from: float  # when useful work starts (after provisioning and restart overhead)
    remaining: float  # work left at launch, seconds


@dataclass(slots=True)
class PoolState:
    pool: Pool
    nodes: int  # nominal capacity (reservation, quota, spot at full availability)
    available: int  # what the provider would give now
    provision_seconds: float
    runs: dict[str, Run] = field(default_factory=dict)
    offered_node_seconds: float = 0.0  # integral of ``available`` over time, up to ``offered_to``
    offered_to: float = 0.0
    changes: list[tuple[float, int, bool]] = field(default_factory=list)  # (time, available, down)

    def offered(self, now: float) -> float:
        """Node-seconds the provider would have given from time 0 to ``now``."""
        return self.offered_node_seconds + self.available * max(0.0, now - self.offered_to)

    def usable_node_seconds(self, edges: np.ndarray) -> np.ndarray:
        """Most node-seconds any schedule could have used in each slot [edges[i], edges[i+1]): none
        while the provider is down (everything is stopped, launches fail); a spot pool never holds more
        than the provider offers (it reclaims the rest); an on-demand or reserved pool keeps what runs
        through a stock-out, so only its nominal size bounds it."""
        times, caps = [0.0], [float(self.nodes)]
        for t, available, down in self.changes:
            times.append(t)
            caps.append(0.0 if down else float(available if self.pool.purchase == "spot" else self.nodes))
        times_a, caps_a = np.array(times), np.array(caps)
        # integral of the step function up to each edge
        starts = np.clip(times_a, edges[0], edges[-1])
        cum_at = np.concatenate(([0.0], np.cumsum(caps_a[:-1] * np.diff(starts))))
        k = np.searchsorted(starts, edges, side="right") - 1
        integral = cum_at[k] + caps_a[k] * (edges - starts[k])
        return np.diff(integral)


@dataclass(slots=True)
class Ledger:
    """What was paid and what was lost, for metrics."""

    paid_node_seconds: dict[str, float] = field(default_factory=dict)  # pool id -> node-seconds
    lost_gpu_seconds: float = 0.0
    overhead_gpu_seconds: float = 0.0  # provisioning and restart time, paid but not useful
    preemptions: int = 0
    capacity_errors: int = 0
    spent: float = 0.0  # $ on non-reserved pools, accrued up to ``accrued_to``
    burn_per_second: float = 0.0  # $/s of everything non-reserved running now
    accrued_to: float = 0.0

    def accrue(self, now: float) -> None:
        self.spent += self.burn_per_second * (now - self.accrued_to)
        self.accrued_to = now


class TwinBackend:
    name = "twin"

    def __init__(
        self,
        clock: VirtualClock,
        pools: list[tuple[Pool, int, float]],  # (pool, nominal nodes, provisioning seconds)
        *,
        checkpoint_seconds: float,
        restart_overhead_seconds: float,
    ) -> None:
        self.clock = clock
        self.checkpoint = checkpoint_seconds
        self.restart_overhead = restart_overhead_seconds
        self.state = {p.id: PoolState(p, n, n, prov) for p, n, prov in pools}
        self.by_provider: dict[str, list[PoolState]] = {}
        for s in self.state.values():
            self.by_provider.setdefault(s.pool.provider, []).append(s)
        self.down: set[str] = set()
        self.work: dict[str, float] = {}  # job id -> seconds of work left (set by the driver)
        self.where: dict[str, PoolState] = {}  # job id -> pool it runs on
        self.ledger = Ledger()
        self._events: list[BackendEvent] = []

    # -- the Backend protocol ------------------------------------------------------------------

    def pools(self) -> list[Pool]:
        return [s.pool for s in self.state.values()]

    def launch(self, request: LaunchRequest) -> Allocation:
        s = self.state[request.pool.id]
        if s.pool.provider in self.down:
            raise ProviderDown(f"{s.pool.provider} is down")
        used = s.pool.used_nodes
        if used + request.num_nodes > s.available:
            self.ledger.capacity_errors += 1
            raise CapacityError(f"{s.pool.id}: {s.available - used} of {request.num_nodes} nodes available")
        now = self.clock.now
        overhead = self.restart_overhead if request.attempt > 1 else 0.0
        run = Run(
            request.job_id,
            request.attempt,
            s.pool,
            request.num_nodes,
            now,
            now + s.provision_seconds + overhead,
            self.work[request.job_id],
        )
        s.runs[request.job_id] = run
        s.pool.used_nodes = used + request.num_nodes
        self.ledger.accrue(now)
        self.ledger.burn_per_second += self._rate(s.pool) * request.num_nodes
        self.where[request.job_id] = s
        self.clock.at(run.work_from + run.remaining, self._finish, run)
        return Allocation(request.job_id, request.attempt, self.name, f"{s.pool.id}#{request.attempt}")

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        """A scheduler preemption: SIGTERM and a grace period, so the job checkpoints and loses nothing."""
        s = self.where.get(job_id)
        if s is None or s.runs[job_id].attempt != attempt:
            return
        self._end(s, s.runs[job_id], graceful=True)

    def poll(self) -> list[BackendEvent]:
        events, self._events = self._events, []
        return events

    def active(self) -> list[tuple[str, int]]:
        return [(r.job_id, r.attempt) for s in self.state.values() for r in s.runs.values()]

    @staticmethod
    def _rate(pool: Pool) -> float:
        return pool.marginal_price_per_node_hour / 3600.0

    # -- the simulated world -------------------------------------------------------------------

    def _finish(self, run: Run) -> None:
        s = self.where.get(run.job_id)
        if s is None or s.runs.get(run.job_id) is not run:
            return  # this attempt was preempted earlier
        self._release(s, run, self.clock.now)
        self.work[run.job_id] = 0.0
        self._events.append(BackendEvent(EventKind.SUCCEEDED, run.job_id, run.attempt, self.clock.now))

    def _release(self, s: PoolState, run: Run, now: float) -> None:
        del s.runs[run.job_id]
        del self.where[run.job_id]
        s.pool.used_nodes -= run.nodes
        self.ledger.accrue(now)
        self.ledger.burn_per_second -= self._rate(s.pool) * run.nodes
        node_seconds = (now - run.launched_at) * run.nodes
        pid = s.pool.id
        self.ledger.paid_node_seconds[pid] = self.ledger.paid_node_seconds.get(pid, 0.0) + node_seconds
        gpus = run.nodes * s.pool.gpus_per_node
        self.ledger.overhead_gpu_seconds += (min(now, run.work_from) - run.launched_at) * gpus

    def _end(self, s: PoolState, run: Run, *, graceful: bool, detail: str = "") -> None:
        now = self.clock.now
        progress = max(0.0, now - run.work_from)
        if graceful or progress >= run.remaining:
            saved = min(progress, run.remaining)
        elif self.checkpoint > 0:
            saved = math.floor(progress / self.checkpoint) * self.checkpoint
        else:
            saved = 0.0
        self.ledger.lost_gpu_seconds += (progress - saved) * run.nodes * s.pool.gpus_per_node
        self.work[run.job_id] = run.remaining - saved
        self._release(s, run, now)
        if not graceful:
            self.ledger.preemptions += 1
            self._events.append(BackendEvent(EventKind.PREEMPTED, run.job_id, run.attempt, now, detail))

    def set_available(self, pool_id: str, share: float) -> None:
        """Spot or stock-out change: the provider gives ``share`` of nominal capacity; reclaim the rest."""
        s = self.state[pool_id]
        now = self.clock.now
        s.offered_node_seconds, s.offered_to = s.offered(now), now
        s.available = math.floor(s.nodes * share + 1e-9)
        s.changes.append((now, s.available, s.pool.provider in self.down))
        if s.pool.purchase != "spot":
            return  # on-demand instances already running are not taken back in a stock-out
        # newest runs are reclaimed first (a deterministic stand-in for the provider's choice)
        while s.pool.used_nodes > s.available and s.runs:
            run = max(s.runs.values(), key=lambda r: (r.launched_at, r.job_id))
            self._end(s, run, graceful=False, detail=f"spot reclaim on {pool_id}")

    def set_down(self, provider: str, down: bool) -> None:
        for s in self.by_provider[provider]:
            s.changes.append((self.clock.now, s.available, down))
        if down:
            self.down.add(provider)
            for s in self.by_provider[provider]:
                s.pool.health = Health.DOWN
                for run in sorted(s.runs.values(), key=lambda r: r.job_id):
                    self._end(s, run, graceful=False, detail=f"{provider} outage")
            self._events.append(BackendEvent(EventKind.PROVIDER_DOWN, "", 0, self.clock.now, provider))
        else:
            self.down.discard(provider)
            for s in self.by_provider[provider]:
                s.pool.health = Health.OK

    def schedule_trace(self, pool_id: str, trace: AvailabilityTrace, offset: float, horizon: float) -> None:
        """Replay ``trace`` (looped) from ``offset`` seconds into it, up to ``horizon``."""
        t0 = -(offset % trace.period)
        loops = math.ceil((horizon - t0) / trace.period) + 1
        for k in range(loops):
            base = t0 + k * trace.period
            for t, share in zip(trace.times, trace.share, strict=True):
                when = base + float(t)
                if when > horizon:
                    break
                if when >= 0 or (k == 0 and when + trace.period > 0):
                    self.clock.at(max(0.0, when), self.set_available, pool_id, float(share))

    def schedule_stockouts(
        self,
        pool_id: str,
        per_day: float,
        mean_hours: float,
        share_left: float,
        horizon: float,
        rng: np.random.Generator,
    ) -> None:
        t = 0.0
        while per_day > 0:
            t += rng.exponential(86400.0 / per_day)
            if t >= horizon:
                break
            length = rng.exponential(mean_hours * 3600.0)
            self.clock.at(t, self.set_available, pool_id, share_left)
            self.clock.at(t + length, self.set_available, pool_id, 1.0)
            t += length
