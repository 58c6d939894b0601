"""The twin's control loop: events -> snapshot -> policy.decide -> apply, on a virtual clock.

This mirrors what ``overcast.control`` does against real backends: arrivals and backend events
(succeeded, preempted) update the queue; every cycle with something new builds a ``Snapshot`` and
applies the ``Decisions``; a capacity error on a launch teaches the pool's health (cool-down) and the
job's own blocklist (``avoid_pools``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.placement.pool import Health, Pool
from overcast.scheduler.snapshot import PendingJob, RunningJob, Snapshot
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources, SpotPolicy
from overcast.twin.backend import TwinBackend
from overcast.twin.clock import VirtualClock
from overcast.twin.policies import Policy
from overcast.twin.workload import SimJob


@dataclass(slots=True)
class JobRecord:
    job: SimJob
    first_launch: float | None = None
    end: float | None = None
    attempts: int = 0
    pools: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Sample:
    t: float
    cost: float
    queued: int
    gpus_by_provider: dict[str, int]


@dataclass(slots=True)
class EngineStats:
    cycles: int = 0
    decide_seconds: list[float] = field(default_factory=list)
    decisions: int = 0
    launch_failures: int = 0
    scheduler_preemptions: int = 0
    successes: int = 0
    arrivals: int = 0
    max_overcommit: int = 0  # most nodes a pool ever held beyond its nominal capacity (must stay 0)


class Engine:
    def __init__(
        self,
        clock: VirtualClock,
        backend: TwinBackend,
        policy: Policy,
        jobs: list[SimJob],
        *,
        accelerator: str,
        gpus_per_node: int,
        cycle_seconds: float,
        cooldown_seconds: float,
        arrivals_end: float,
        horizon: float,
        sample_seconds: float,
    ) -> None:
        self.clock, self.backend, self.policy = clock, backend, policy
        self.jobs = sorted(jobs, key=lambda j: (j.submit, j.id))
        self.accelerator, self.gpus_per_node = accelerator, gpus_per_node
        self.cycle, self.cooldown = cycle_seconds, cooldown_seconds
        self.arrivals_end, self.horizon, self.sample_every = arrivals_end, horizon, sample_seconds
        self.pools: dict[str, Pool] = {p.id: p for p in backend.pools()}
        self.records = {j.id: JobRecord(j) for j in self.jobs}
        self.pending: dict[str, PendingJob] = {}
        self.running: dict[str, RunningJob] = {}
        self.avoid: dict[str, dict[str, float]] = {}  # job -> pool -> until
        self.samples: list[Sample] = []
        self.stats = EngineStats()
        self._specs: dict[tuple[int, bool, str, float], JobSpec] = {}
        self._next_arrival = 0
        self._requeued = False  # the last cycle stopped jobs: the next tick must place them again
        self.reserved_per_second = (
            sum(
                p.price_per_node_hour * (p.capacity_nodes or 0)
                for p in self.pools.values()
                if p.purchase == "reserved"
            )
            / 3600.0
        )

    # -- specs: shared per shape, so a million jobs do not mean a million pydantic models -------------

    def spec_for(self, job: SimJob) -> JobSpec:
        # users estimate runtimes roughly: to the nearest power of two hours
        hours = 2.0 ** round(math.log2(max(job.work / 3600.0, 1 / 64)))
        key = (job.nodes, job.spot_ok, job.team, hours)
        spec = self._specs.get(key)
        if spec is None:
            spec = JobSpec(
                name=f"{job.team}-{job.nodes}x{self.gpus_per_node}{self.accelerator}",
                resources=Resources(
                    accelerators=(AcceleratorRequest(name=self.accelerator, count=self.gpus_per_node),),
                    spot=SpotPolicy.ALLOWED if job.spot_ok else SpotPolicy.NEVER,
                ),
                num_nodes=job.nodes,
                team=job.team,
                checkpoint_dir="twin://checkpoints",
                max_restarts=1000,
                expected_hours=hours,
            )
            self._specs[key] = spec
        return spec

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> None:
        t = 0.0
        next_sample = 0.0
        while t <= self.horizon:
            self.clock.run_until(t)
            changed = self._arrivals(t) | self._events() | self._health_expired(t) | self._requeued
            self._requeued = False
            if self.pending and changed:
                self._cycle(t)
            if t >= next_sample:
                self._sample(t)
                next_sample = t + self.sample_every
            if progress is not None:
                progress(t)
            if self._next_arrival >= len(self.jobs) and not self.pending and not self.running:
                break
            t = self._next_tick(t)
        self.end_time = min(t, self.horizon)
        self.backend.ledger.accrue(self.clock.now)
        self._sample(self.clock.now)

    def _next_tick(self, t: float) -> float:
        """The next cycle boundary at which something can happen (skip idle cycles)."""
        nxt = t + self.cycle
        if self._requeued or (self.pending and self._any_cooling()):
            return nxt
        candidates = [self.horizon + self.cycle]
        if self._next_arrival < len(self.jobs):
            candidates.append(self.jobs[self._next_arrival].submit)
        if (when := self.clock.next_time()) is not None:
            candidates.append(when)
        soonest = min(candidates)
        return max(nxt, math.ceil(soonest / self.cycle) * self.cycle)

    def _any_cooling(self) -> bool:
        return any(p.health is Health.OUT_OF_CAPACITY for p in self.pools.values()) or bool(self.avoid)

    def _health_expired(self, now: float) -> bool:
        expired = False
        for p in self.pools.values():
            if (
                p.health is Health.OUT_OF_CAPACITY
                and p.unhealthy_until is not None
                and now >= p.unhealthy_until
            ):
                p.health, p.unhealthy_until = Health.OK, None
                expired = True
        for job_id in list(self.avoid):
            pools = {k: v for k, v in self.avoid[job_id].items() if v > now}
            if len(pools) != len(self.avoid[job_id]):
                expired = True
                self._set_avoid(job_id, pools)
        return expired

    def _set_avoid(self, job_id: str, pools: dict[str, float]) -> None:
        if pools:
            self.avoid[job_id] = pools
        else:
            self.avoid.pop(job_id, None)
        if job_id in self.pending:
            self.pending[job_id].avoid_pools = frozenset(pools)

    def _arrivals(self, now: float) -> bool:
        start = self._next_arrival
        jobs = self.jobs
        while self._next_arrival < len(jobs) and jobs[self._next_arrival].submit <= now:
            job = jobs[self._next_arrival]
            self.pending[job.id] = PendingJob(job.id, self.spec_for(job), job.submit)
            self.backend.work[job.id] = job.work
            self._next_arrival += 1
        self.stats.arrivals += self._next_arrival - start
        return self._next_arrival > start

    def _events(self) -> bool:
        events = self.backend.poll()
        for ev in events:
            if ev.kind is EventKind.SUCCEEDED:
                self.running.pop(ev.job_id, None)
                rec = self.records[ev.job_id]
                if rec.end is not None:  # conservation: a job ends exactly once
                    raise RuntimeError(f"job {ev.job_id} succeeded twice")
                rec.end = ev.at
                self.stats.successes += 1
            elif ev.kind is EventKind.PREEMPTED:
                self._requeue(ev.job_id)
        return bool(events)

    def _requeue(self, job_id: str) -> None:
        run = self.running.pop(job_id)
        rec = self.records[job_id]
        self.pending[job_id] = PendingJob(
            job_id,
            run.spec,
            rec.job.submit,
            attempt=rec.attempts,
            avoid_pools=frozenset(self.avoid.get(job_id, ())),
        )

    def _cycle(self, now: float) -> None:
        snap = Snapshot(
            now=now,
            pools=list(self.pools.values()),
            pending=list(self.pending.values()),
            running=list(self.running.values()),
            disabled_providers=frozenset(self.backend.down),
        )
        started = time.perf_counter()
        decisions = self.policy.decide(snap)
        self.stats.decide_seconds.append(time.perf_counter() - started)
        self.stats.cycles += 1
        self.stats.decisions += len(decisions.place) + len(decisions.preempt)
        for pre in decisions.preempt:
            run = self.running.get(pre.job_id)
            if run is None:
                continue
            self.backend.stop(run.id, run.attempt, grace_seconds=30.0)
            self.stats.scheduler_preemptions += 1
            self._requeue(run.id)
            self._requeued = True
        for place in decisions.place:
            job = self.pending.get(place.job_id)
            pool = self.pools.get(place.pool_id)
            if job is None or pool is None:
                continue  # a decision about a job that is no longer pending: ignore, as the loop would
            self._launch(job, pool, place.nodes, now)

    def _launch(self, job: PendingJob, pool: Pool, nodes: int, now: float) -> None:
        rec = self.records[job.id]
        attempt = rec.attempts + 1
        known_room = pool.free_nodes is None or pool.free_nodes >= nodes
        try:
            self.backend.launch(LaunchRequest(job.id, attempt, pool, nodes, job.spec))
        except (CapacityError, ProviderDown):
            self.stats.launch_failures += 1
            if known_room:  # the provider refused room we thought it had: learn it (cool-down)
                pool.health, pool.unhealthy_until = Health.OUT_OF_CAPACITY, now + self.cooldown
            self._set_avoid(job.id, {**self.avoid.get(job.id, {}), pool.id: now + self.cooldown})
            return
        if pool.capacity_nodes is not None:
            over = pool.used_nodes - pool.capacity_nodes
            self.stats.max_overcommit = max(self.stats.max_overcommit, over)
        rec.attempts = attempt
        rec.pools.append(pool.id)
        if rec.first_launch is None:
            rec.first_launch = now
        del self.pending[job.id]
        self.avoid.pop(job.id, None)
        self.running[job.id] = RunningJob(job.id, job.spec, pool.id, nodes, attempt, now)

    def _sample(self, t: float) -> None:
        ledger = self.backend.ledger
        live = ledger.spent + ledger.burn_per_second * (t - ledger.accrued_to)
        gpus: dict[str, int] = {}
        for p in self.pools.values():
            gpus[p.provider] = gpus.get(p.provider, 0) + p.used_nodes * p.gpus_per_node
        self.samples.append(Sample(t, live + self.reserved_per_second * t, len(self.pending), gpus))
