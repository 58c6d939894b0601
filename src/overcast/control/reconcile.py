"""Crash safety: make the store and what backends really run agree.

Run when a loop becomes leader (after a crash or a failover) and every few ticks. The backends' events
are handled first (a job that ended while nobody watched is finished, not requeued). Then:
  - a LAUNCHING/RUNNING job whose (job, attempt) no backend runs is requeued: nothing is lost;
  - a (job, attempt) a backend runs that the store does not expect there is stopped: nothing runs twice;
  - a STOPPING job (a stop interrupted by the crash) is stopped again and finished;
  - launch records of attempts that are no longer current are closed (not service replicas' records).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from overcast.backends.base import is_replica_launch
from overcast.control.requeue import finish_stop
from overcast.control.runtime import LIVE, Runtime
from overcast.store import JobState

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    requeued: list[str] = field(default_factory=list)
    stopped: list[tuple[str, int]] = field(default_factory=list)
    finished_stops: list[str] = field(default_factory=list)


def reconcile(
    rt: Runtime,
    in_flight: Callable[[str], bool] = lambda job_id: False,
    launching: Callable[[str], bool] = lambda job_id: False,
    skip: Callable[[str], bool] = lambda backend: False,
) -> ReconcileReport:
    """``in_flight``: jobs whose stop is under way in this process (left to it); ``launching``: jobs
    whose launch is under way in this process (``backend.active()`` may not list them yet)."""
    report = ReconcileReport()
    store = rt.store
    active: dict[str, set[tuple[str, int]]] = {}
    for name, backend in rt.backends.items():
        if skip(name):  # busy launching (holds its lock): judged at a later reconcile
            continue
        try:
            active[name] = set(backend.active())
        except Exception as exc:  # unknown truth: leave this backend's jobs alone this time
            log.warning("active() of %s failed: %s", name, exc)
    jobs = store.list(states=LIVE, limit=1_000_000)
    expected: set[tuple[str, str, int]] = set()  # (backend, job, attempt) that should run
    keep: set[tuple[str, int]] = set()  # launch records still current
    for job in jobs:
        if job.backend not in active:  # backend unknown or it failed to answer: cannot judge now
            keep.add((job.id, job.attempt))
            continue
        live = (job.id, job.attempt) in active[job.backend]
        if job.state is not JobState.STOPPING and launching(job.id):  # the tick handles its outcome
            expected.add((job.backend, job.id, job.attempt))
            keep.add((job.id, job.attempt))
        elif job.state is JobState.STOPPING:
            if in_flight(job.id):
                expected.add((job.backend, job.id, job.attempt))
                keep.add((job.id, job.attempt))
                continue
            if live:
                rt.stop(job.backend, job.id, job.attempt)
            finish_stop(rt, job, job.reason or "stopped")
            report.finished_stops.append(job.id)
        elif live:
            expected.add((job.backend, job.id, job.attempt))
            keep.add((job.id, job.attempt))
        else:
            store.end_launch(job.id, job.attempt, "lost")
            why = f"attempt {job.attempt} not running on {job.backend}"
            if store.transition(
                job.id, [job.state], JobState.PENDING, reason=f"requeued: {why}", attempt_was=job.attempt,
                event=("requeued", f"{why} (found by reconcile)"),
            ):  # fmt: skip
                report.requeued.append(job.id)
    for name, pairs in active.items():
        for job_id, attempt in sorted(pairs):
            if is_replica_launch(job_id):
                continue  # a service replica: its service controller adopts or stops it
            if (name, job_id, attempt) not in expected:
                rt.stop(name, job_id, attempt)
                report.stopped.append((job_id, attempt))
                # It ran until now, so a "lost" end (a listing that missed it) moves here, also when
                # the requeued job ended meanwhile (e.g. cancelled while pending).
                job = store.get(job_id)
                if job is not None and job.state.terminal and job.attempt == attempt:
                    # the attempt that ended the job, its end not yet acknowledged: no orphan
                    store.end_launch(job_id, attempt, job.state.value, seen_running=True)
                    continue
                store.end_launch(job_id, attempt, "orphan", seen_running=True)
                store.add_event(job_id, "orphan-stopped", f"attempt {attempt} on {name}: not expected there")
    for launch in store.launches(active_only=True):
        if is_replica_launch(launch.job_id):
            continue  # a service replica's bill: its service controller ends it
        if (launch.job_id, launch.attempt) not in keep:
            store.end_launch(launch.job_id, launch.attempt, "stale")
    return report
