"""Job state changes shared by event handling, apply and reconcile: requeue within limits, or give up.

Every change is a compare-and-set on the store, so a stale loop or a replayed event changes nothing.
"""

from __future__ import annotations

from overcast.api import metrics
from overcast.control.runtime import Runtime
from overcast.store import JobRecord, JobState


def requeue_after_loss(rt: Runtime, job: JobRecord, from_states: tuple[JobState, ...], why: str) -> None:
    """Preemption, node or provider loss: not the job's fault. Restart elsewhere up to max_restarts."""
    if job.restarts < job.spec.max_restarts:
        done = rt.store.transition(
            job.id, from_states, JobState.PENDING, restarts=job.restarts + 1, reason=f"requeued: {why}"
        )
        if done is not None:
            used = f"restart {job.restarts + 1} of {job.spec.max_restarts}"
            rt.store.add_event(job.id, "requeued", f"attempt {job.attempt}: {why} ({used})")
            metrics.FAILOVERS.labels(reason=why.split(" ", 1)[0]).inc()  # "preempted on ..." -> "preempted"
        return
    done = rt.store.transition(
        job.id, from_states, JobState.FAILED, reason=f"{why}; out of restarts ({job.spec.max_restarts})"
    )
    if done is not None:
        rt.store.add_event(job.id, "failed", f"{why}; max_restarts={job.spec.max_restarts} used up")


def retry_after_failure(rt: Runtime, job: JobRecord, from_states: tuple[JobState, ...], why: str) -> None:
    """The job itself failed: retry only up to max_retries_on_failure."""
    if job.failures < job.spec.max_retries_on_failure:
        done = rt.store.transition(
            job.id, from_states, JobState.PENDING, failures=job.failures + 1, reason=f"retrying: {why}"
        )
        if done is not None:
            used = f"retry {job.failures + 1} of {job.spec.max_retries_on_failure}"
            rt.store.add_event(job.id, "retry", f"attempt {job.attempt}: {why} ({used})")
        return
    done = rt.store.transition(job.id, from_states, JobState.FAILED, reason=why)
    if done is not None:
        rt.store.add_event(job.id, "failed", f"attempt {job.attempt}: {why}")


def finish_stop(rt: Runtime, job: JobRecord, why: str) -> None:
    """A STOPPING job whose processes are gone: cancelled if the user asked, else back in the queue."""
    rt.store.end_launch(job.id, job.attempt, "cancelled" if job.cancel_requested else "stopped")
    if job.cancel_requested:
        if rt.store.transition(job.id, [JobState.STOPPING], JobState.CANCELLED, reason="cancelled by user"):
            rt.store.add_event(job.id, "cancelled", f"attempt {job.attempt} stopped")
    elif rt.store.transition(job.id, [JobState.STOPPING], JobState.PENDING, reason=f"requeued: {why}"):
        rt.store.add_event(job.id, "requeued", f"attempt {job.attempt}: {why}")
