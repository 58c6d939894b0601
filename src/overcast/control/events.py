"""Step (a) of a tick: what backends report becomes store transitions and timeline events."""

from __future__ import annotations

import logging
from collections.abc import Callable

from overcast.backends.base import BackendEvent, EventKind, is_replica_launch
from overcast.control.health import record_failure
from overcast.control.requeue import requeue_after_loss, retry_after_failure
from overcast.control.runtime import Runtime
from overcast.placement.pool import Health
from overcast.store import JobRecord, JobState

log = logging.getLogger(__name__)

ACTIVE = (JobState.LAUNCHING, JobState.RUNNING)


def poll_all(rt: Runtime, skip: Callable[[str], bool] = lambda name: False) -> int:
    """Poll every backend (but those ``skip`` names: one busy launching) and handle its events;
    returns how many were handled."""
    handled = 0
    for name, backend in rt.backends.items():
        if skip(name):
            continue
        try:
            events = backend.poll()
        except Exception as exc:  # one broken backend must not stop the loop for the others
            log.warning("poll of %s failed: %s", name, exc)
            continue
        try:
            for event in events:
                handle_event(rt, name, event)
                handled += 1
        except Exception:
            redeliver = getattr(backend, "redeliver", None)
            if redeliver is not None:  # not acknowledged: the next poll reports them again
                redeliver()
            raise
    return handled


def handle_event(rt: Runtime, backend_name: str, event: BackendEvent) -> None:
    store = rt.store
    if is_replica_launch(event.job_id):
        return  # a service replica's launch: its service controller watches it, not the job loop
    job = store.get(event.job_id)
    current = job is not None and job.attempt == event.attempt and job.backend == backend_name
    if current and job is not None and job.state is JobState.PENDING and event.kind is EventKind.SUCCEEDED:
        # Requeued (e.g. by a reconcile that raced the exit) but not relaunched: the work is done.
        done = ("succeeded", f"attempt {job.attempt} (after a requeue)")
        if store.transition(
            job.id, [JobState.PENDING], JobState.SUCCEEDED, reason=None, event=done, event_at=event.at,
            attempt_was=job.attempt,
        ):  # fmt: skip
            # it ran until this event, so a reconcile's "lost" guess moves later to it
            store.end_launch(job.id, job.attempt, "succeeded", at=event.at, seen_running=True)
        return
    if current and job is not None and job.state.terminal and event.kind is not EventKind.STARTED:
        _log_end_once(rt, job, event)
        return
    if job is None or not current or job.state not in ACTIVE:
        # A stale attempt (or one being stopped): whatever it does, it must not run.
        being_stopped = current and job is not None and job.state is JobState.STOPPING
        if event.kind is EventKind.STARTED and not being_stopped:
            rt.stop(backend_name, event.job_id, event.attempt, grace=0.0)
            store.end_launch(event.job_id, event.attempt, "stale", seen_running=True)
            store.add_event(event.job_id, "stale-stopped", f"attempt {event.attempt} on {backend_name}")
        elif not current and event.kind is not EventKind.STARTED:
            # an older attempt ended (e.g. one a reconcile guessed lost while it ran on): bill it to its end
            store.end_launch(event.job_id, event.attempt, event.kind.value, at=event.at, seen_running=True)
        return
    where = job.pool_id or backend_name
    detail = f"attempt {job.attempt} on {where}" + (f": {event.detail}" if event.detail else "")
    if event.kind is EventKind.STARTED:
        store.transition(
            job.id,
            [JobState.LAUNCHING],
            JobState.RUNNING,
            reason=None,
            event=("started", detail),
            event_at=event.at,
            attempt_was=job.attempt,
        )
    elif event.kind is EventKind.SUCCEEDED:
        if store.transition(
            job.id, ACTIVE, JobState.SUCCEEDED, reason=None, event=("succeeded", detail), event_at=event.at,
            attempt_was=job.attempt,
        ):  # fmt: skip
            store.end_launch(job.id, job.attempt, "succeeded", at=event.at)
    elif event.kind is EventKind.FAILED:
        rt.stop(backend_name, job.id, job.attempt, grace=0.0)  # the rest of the gang
        store.end_launch(job.id, job.attempt, "failed", at=event.at)
        store.add_event(job.id, "attempt-failed", detail, at=event.at)
        retry_after_failure(rt, job, ACTIVE, event.detail or "failed")
    elif event.kind in (EventKind.PREEMPTED, EventKind.PROVIDER_DOWN):
        rt.stop(backend_name, job.id, job.attempt, grace=rt.grace_seconds)
        store.end_launch(job.id, job.attempt, event.kind.value, at=event.at)
        store.add_event(job.id, event.kind.value, detail, at=event.at)
        if job.pool_id:
            rt.avoid.setdefault(job.id, set()).add(job.pool_id)
        requeue_after_loss(rt, job, ACTIVE, f"{event.kind.value} on {where}")
    elif event.kind is EventKind.CAPACITY_ERROR:  # an asynchronous refusal (e.g. a queued cloud request)
        store.end_launch(job.id, job.attempt, "capacity-error", at=event.at)
        if job.pool_id:
            rt.avoid.setdefault(job.id, set()).add(job.pool_id)
            # the pool cools down as after a refused launch: the next gangs do not wait it out too
            why = event.detail or "capacity error"
            record_failure(store, job.pool_id, Health.OUT_OF_CAPACITY, why, rt.clock(), rt.backoff)
        store.transition(
            job.id, ACTIVE, JobState.PENDING, reason=f"capacity error on {where}",
            event=("capacity-error", detail), event_at=event.at, attempt_was=job.attempt,
        )  # fmt: skip


def _log_end_once(rt: Runtime, job: JobRecord, event: BackendEvent) -> None:
    """The outcome of a job that has already ended, delivered again: the loop crashed after the job's
    transition and before its timeline event (two writes, not one transaction). Write the missing event."""
    kind = job.state.value  # succeeded, failed or cancelled: the event kinds that end a job
    if not any(e.kind == kind for e in rt.store.events(job_id=job.id, limit=100_000)):
        detail = f"attempt {job.attempt} (logged after a restart of the control loop)"
        rt.store.add_event(job.id, kind, detail, at=job.ended_at or event.at)
