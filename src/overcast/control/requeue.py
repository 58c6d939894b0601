"""Job state changes shared by event handling, apply and reconcile: requeue within limits, or give up.

Every change is a compare-and-set on the store, so a stale loop or a replayed event changes nothing; each
carries its timeline event in the same transaction.
"""

from __future__ import annotations

from overcast.api import metrics
from overcast.control.runtime import Runtime
from overcast.store import JobRecord, JobState


def requeue_after_loss(rt: Runtime, job: JobRecord, from_states: tuple[JobState, ...], why: str) -> None:
    """Preemption, node or provider loss: not the job's fault. Restart elsewhere up to max_restarts."""
    if job.restarts < job.spec.max_restarts:
        used = f"restart {job.restarts + 1} of {job.spec.max_restarts}"
        done = rt.store.transition(
            job.id, from_states, JobState.PENDING, restarts=job.restarts + 1, reason=f"requeued: {why}",
            attempt_was=job.attempt,
            event=("requeued", f"attempt {job.attempt}: {why} ({used})"),
        )  # fmt: skip
        if done is not None:
            metrics.FAILOVERS.labels(reason=why.split(" ", 1)[0]).inc()  # "preempted on ..." -> "preempted"
        return
    rt.store.transition(
        job.id, from_states, JobState.FAILED, reason=f"{why}; out of restarts ({job.spec.max_restarts})",
        attempt_was=job.attempt,
        event=("failed", f"{why}; max_restarts={job.spec.max_restarts} used up"),
    )  # fmt: skip


def retry_after_failure(rt: Runtime, job: JobRecord, from_states: tuple[JobState, ...], why: str) -> None:
    """The job itself failed: retry only up to max_retries_on_failure."""
    if job.failures < job.spec.max_retries_on_failure:
        used = f"retry {job.failures + 1} of {job.spec.max_retries_on_failure}"
        rt.store.transition(
            job.id, from_states, JobState.PENDING, failures=job.failures + 1, reason=f"retrying: {why}",
            attempt_was=job.attempt,
            event=("retry", f"attempt {job.attempt}: {why} ({used})"),
        )  # fmt: skip
        return
    rt.store.transition(
        job.id, from_states, JobState.FAILED, reason=why, event=("failed", f"attempt {job.attempt}: {why}"),
        attempt_was=job.attempt,
    )  # fmt: skip


def finish_stop(rt: Runtime, job: JobRecord, why: str) -> None:
    """A STOPPING job whose processes are gone: cancelled if the user asked, else back in the queue."""
    rt.store.end_launch(job.id, job.attempt, "cancelled" if job.cancel_requested else "stopped")
    if job.cancel_requested:
        rt.store.transition(
            job.id, [JobState.STOPPING], JobState.CANCELLED, reason="cancelled by user",
            attempt_was=job.attempt, event=("cancelled", f"attempt {job.attempt} stopped"),
        )  # fmt: skip
    else:
        rt.store.transition(
            job.id, [JobState.STOPPING], JobState.PENDING, reason=f"requeued: {why}", attempt_was=job.attempt,
            event=("requeued", f"attempt {job.attempt}: {why}"),
        )  # fmt: skip
