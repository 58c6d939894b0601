"""The control loop: the only place with side effects. Each tick:

0. lease: only the holder of the ``control-loop`` lease goes on (renewed by a heartbeat while the tick
   runs, and checked before every launch: ``lease.py``);
   a loop that just became leader reconciles the store with what backends run first
a. poll backends -> events -> store transitions (started, succeeded, failed, preempted...)
b. cancel requests -> stop with grace -> cancelled
c. snapshot: pools from backends + learned health from the store; pending and running jobs; what
   budgeted teams have left this month (spend read every 30 s, running use added in between); jobs'
   expected_hours corrected by what their team's jobs really ran (read every 60 s)
d. decide(snapshot) -> decisions (the pure scheduler; ``overcast up`` passes the fleet file's
   ``scheduler:`` options, scheduler/options.py)
e. apply: place (CAS PENDING -> LAUNCHING, record, launch on the backend's launch thread; failover on
   capacity errors), preempt; launches that return later are handled at the start of a later tick
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from overcast.api import metrics  # the counters /metrics exposes; updated where things happen
from overcast.backends.base import Backend
from overcast.control.apply import apply_decisions, finish_launch
from overcast.control.estimates import EstimateCache
from overcast.control.events import poll_all
from overcast.control.health import Backoff
from overcast.control.launcher import Launcher, LaunchResult
from overcast.control.lease import LeaseHeartbeat
from overcast.control.reconcile import ReconcileReport, reconcile
from overcast.control.runtime import Runtime
from overcast.control.snapshot import TeamBudgetCache, build_snapshot
from overcast.control.stopper import Stopper
from overcast.scheduler.snapshot import Decisions, Snapshot
from overcast.store import JobState, Store

log = logging.getLogger(__name__)

LEASE_NAME = "control-loop"


@dataclass
class TickReport:
    leader: bool
    events: int = 0
    placed: int = 0
    preempted: int = 0
    unplaced: dict[str, str] = field(default_factory=dict)
    reconciled: ReconcileReport | None = None
    seconds: float = 0.0


class ControlLoop:
    def __init__(
        self,
        store: Store,
        backends: Iterable[Backend],
        *,
        home: Path,
        grace_seconds: float = 10.0,
        backoff: Backoff | None = None,
        lease_ttl: float = 15.0,
        reconcile_every: int = 20,
        launch_wait_s: float = 5.0,
        holder: str | None = None,
        decide: Callable[[Snapshot], Decisions] | None = None,  # default: decide() with its defaults
        clock: Callable[[], float] = time.time,
    ) -> None:
        if decide is None:
            from overcast.scheduler.decide import decide
        self.rt = Runtime(
            store, {b.name: b for b in backends}, home, grace_seconds, backoff or Backoff(), clock=clock
        )
        self.decide = decide
        self.stopper = Stopper(self.rt)
        self.launcher = Launcher(self.rt, wait_s=launch_wait_s)  # how long a tick waits for its launches
        self.lease_ttl = lease_ttl
        self.reconcile_every = reconcile_every
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader = False
        self.ticks = 0
        self._reasons: dict[str, str] = {}
        self.budgets = TeamBudgetCache()  # what teams have left: read every 30 s
        self.estimates = EstimateCache()  # teams' estimate factors: read every 60 s
        self._lock = threading.Lock()  # one tick at a time (the API thread may ask for one)

    @property
    def store(self) -> Store:
        return self.rt.store

    @property
    def backends(self) -> dict[str, Backend]:
        return self.rt.backends

    def renew_lease(self) -> bool:
        self.leader = self.store.try_acquire_lease(LEASE_NAME, self.holder, self.lease_ttl)
        return self.leader

    def tick(self) -> TickReport:
        with self._lock:
            return self._tick()

    def _tick(self) -> TickReport:
        start = time.perf_counter()
        was_leader = self.leader
        # Launches that returned since the last tick, leader or not: one that another loop overtook
        # meanwhile must be stopped (finish_launch), whoever leads now.
        self.launcher.drain(self._finish_launch)
        if not self.renew_lease():
            return TickReport(leader=False)
        with LeaseHeartbeat(self.renew_lease, self.lease_ttl) as heartbeat:
            return self._lead(start, was_leader, heartbeat)

    def _lead(self, start: float, was_leader: bool, heartbeat: LeaseHeartbeat) -> TickReport:
        """The tick's work, while ``heartbeat`` keeps the lease (``lease.py``)."""
        report = TickReport(leader=True)
        report.events = poll_all(self.rt, skip=self.launcher.launching_on)  # (a)
        self.ticks += 1
        if not was_leader or self.ticks % self.reconcile_every == 0:
            report.reconciled = reconcile(
                self.rt, in_flight=self.stopper.busy, launching=self.launcher.busy,
                skip=self.launcher.launching_on,
            )  # fmt: skip
        self._cancels()  # (b)
        now = self.rt.clock()
        health = self.store.pool_health()
        snapshot = build_snapshot(self.rt, now, health, self.budgets, self.estimates)  # (c)
        self._forget_avoids({job.id for job in snapshot.pending})
        with metrics.DECISION_SECONDS.time():
            decisions = self.decide(snapshot)  # (d)
        pools = {pool.id: pool for pool in snapshot.pools}

        def still_leader() -> bool:
            return not heartbeat.lost.is_set() and self.renew_lease()

        stop = self.stopper.stop
        apply_decisions(self.rt, decisions, pools, health, still_leader, stop, self.launcher)  # (e)
        self._note_unplaced(decisions.unplaced)
        report.placed, report.preempted = len(decisions.place), len(decisions.preempt)
        report.unplaced = dict(decisions.unplaced)
        report.seconds = time.perf_counter() - start
        return report

    def _cancels(self) -> None:
        store = self.store
        flagged = [JobState.LAUNCHING, JobState.RUNNING, JobState.PENDING]
        for job in store.list(states=flagged, limit=1_000_000, cancel_requested=True):
            if self.launcher.busy(job.id):
                continue  # stopped once its launch has returned (a stop now could come before it)
            if job.state is JobState.PENDING:  # the store cancels these at once; this is a safety net
                cancelled = JobState.CANCELLED
                store.transition(
                    job.id, [JobState.PENDING], cancelled, reason="cancelled by user",
                    event=("cancelled", "while pending"),
                )  # fmt: skip
                continue
            stopping = store.transition(
                job.id, [job.state], JobState.STOPPING, reason="cancel requested", attempt_was=job.attempt,
                event=("stopping", f"attempt {job.attempt}: cancel requested"),
            )  # fmt: skip
            if stopping is None:
                continue
            self.stopper.stop(stopping, "cancelled")

    def _finish_launch(self, result: LaunchResult) -> None:
        """A launch handled outside apply: pool health as the store has it now."""
        finish_launch(self.rt, result, self.store.pool_health())

    def _forget_avoids(self, pending: set[str]) -> None:
        """Pools a job should avoid matter only while it waits; ended jobs must not pile up here."""
        for job_id in set(self.rt.avoid) - pending:
            del self.rt.avoid[job_id]

    def _note_unplaced(self, unplaced: dict[str, str]) -> None:
        """Say why a job waits, once per change of reason (not every tick)."""
        for job_id, why in unplaced.items():
            if self._reasons.get(job_id) != why:
                self._reasons[job_id] = why
                self.store.transition(
                    job_id, [JobState.PENDING], JobState.PENDING, reason=why, event=("waiting", why)
                )
        for job_id in set(self._reasons) - set(unplaced):
            del self._reasons[job_id]

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Tick until ``stop`` is set; a failing tick is logged and retried, never fatal."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("control loop tick failed")
            stop.wait(interval)
        self.launcher.shutdown(self._finish_launch)  # bounded: a hung launch is left to reconcile
        self.stopper.shutdown()  # let stops in flight finish (each bounded by the grace period)
        if self.leader:
            self.store.release_lease(LEASE_NAME, self.holder)
            self.leader = False
