"""Job state changes shared by event handling, apply and reconcile: requeue within limits, or give up;
fail over after a launch error.

Every change is a compare-and-set on the store, so a stale loop or a replayed event changes nothing; each
carries its timeline event in the same transaction.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from overcast.api import metrics
from overcast.backends.base import JobRejected
from overcast.control.health import LAUNCH_ERROR_FACTOR, record_failure
from overcast.control.runtime import Runtime
from overcast.placement.filters import Request, run_filters
from overcast.placement.index import PoolIndex
from overcast.placement.pool import Health, Pool
from overcast.store import JobRecord, JobState, PoolHealthRecord, Store


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


def try_elsewhere(rt: Runtime, job_id: str, attempt: int, pool_id: str, exc: Exception, kind: str) -> None:
    """A launch on ``pool_id`` failed (``kind``: capacity-error, provider-down, launch-error...): back to
    PENDING, for the next tick to place the job on another pool."""
    if rt.store.transition(
        job_id, [JobState.LAUNCHING], JobState.PENDING, reason=f"{pool_id}: {exc}", attempt_was=attempt,
        event=(kind, f"attempt {attempt} on {pool_id}: {exc}; trying elsewhere"),
    ):  # fmt: skip
        metrics.FAILOVERS.labels(reason=kind).inc()


# A job whose launches failed on this many pools fails: by then the job itself is the likelier cause.
LAUNCH_ERROR_POOLS = 3
_LAUNCH_ERRORS = ("launch-error", "launch-rejected")  # the event kinds of a failed launch() call
_ON_POOL = re.compile(r"^attempt \d+ on (\S+): ")  # the pool in such an event's detail


def after_launch_error(
    rt: Runtime,
    job: JobRecord,
    attempt: int,
    pool: Pool,
    pools: dict[str, Pool],
    health: dict[str, PoolHealthRecord],
    exc: Exception,
) -> None:
    """``launch()`` raised neither a capacity error nor an outage: provisioning on this pool failed (a
    missing security group, subnet, image or IAM policy, a rejected parameter), not the job's code, which
    fails later as a FAILED event. The pool cools down (``JobRejected``: only this job is refused there),
    the job avoids the backend and is requeued; it fails once it has hit launch errors on
    ``LAUNCH_ERROR_POOLS`` pools, or when no pool that fits it is left."""
    store = rt.store
    rejected = isinstance(exc, JobRejected)
    kind = _LAUNCH_ERRORS[1] if rejected else _LAUNCH_ERRORS[0]
    store.end_launch(job.id, attempt, kind)
    if not rejected:  # every job placed on this pool would hit it: the next ones go elsewhere
        detail = f"launch error: {exc}"
        health[pool.id] = record_failure(
            store, pool.id, Health.DOWN, detail, rt.clock(), rt.backoff, LAUNCH_ERROR_FACTOR
        )
    # soft: the scheduler comes back to this backend's other pools only when nothing else fits
    siblings = {p.id for p in pools.values() if p.backend == pool.backend}
    rt.avoid.setdefault(job.id, set()).update(siblings)
    tried, failed = _failed_pools(store, job.id, pools)
    tried.add(pool.id)
    failed |= siblings if rejected else {pool.id}
    what = f"attempt {attempt} on {pool.id}: {exc}"
    if len(tried) >= LAUNCH_ERROR_POOLS:
        give_up = f"launch errors on {len(tried)} pools"
    elif not _fits_elsewhere(job, pools.values(), failed):
        give_up = "no other pool that fits the job is left"
    else:
        try_elsewhere(rt, job.id, attempt, pool.id, exc, kind)
        return
    why = f"launch failed on {pool.id}: {exc} ({give_up})"
    store.transition(
        job.id, [JobState.LAUNCHING], JobState.FAILED, reason=why, attempt_was=attempt,
        event=("failed", f"{what}; {give_up}"),
    )  # fmt: skip


def _failed_pools(store: Store, job_id: str, pools: dict[str, Pool]) -> tuple[set[str], set[str]]:
    """From the job's timeline (it survives restarts): the pools where its launches failed, and those
    plus every pool of a backend that rejected the job (``JobRejected``)."""
    tried: set[str] = set()
    failed: set[str] = set()
    for event in store.events(job_id=job_id, limit=100_000):
        found = _ON_POOL.match(event.detail) if event.kind in _LAUNCH_ERRORS else None
        if found is None:
            continue
        tried.add(found[1])
        failed.add(found[1])
        where = pools.get(found[1])
        if event.kind == _LAUNCH_ERRORS[1] and where is not None:
            failed |= {p.id for p in pools.values() if p.backend == where.backend}
    return tried, failed


def _fits_elsewhere(job: JobRecord, pools: Iterable[Pool], failed: set[str]) -> bool:
    """Whether a pool outside ``failed`` could ever take the job: the scheduler's hard filters, with every
    pool healthy and empty (a cooldown ends, running jobs end)."""
    fresh = [
        dataclasses.replace(p, health=Health.OK, unhealthy_until=None, used_nodes=0)
        for p in pools
        if p.id not in failed
    ]
    if not fresh:
        return False
    trace, _ = run_filters(Request.of(job.spec), PoolIndex.build(fresh), now=0.0)
    return len(trace.survivors) > 0
