"""Step (e) of a tick: apply decide()'s decisions to backends and the store.

Place: CAS PENDING -> LAUNCHING (the guard against double launches, even by a stale leader), record the
launch, then ``backend.launch`` on the backend's launch thread (``launcher.py``); ``finish_launch`` handles
its outcome on the tick thread. A capacity error puts the pool on cooldown and the job back in the
queue with that pool avoided, so the next tick places it on the next best pool: failover across zones,
regions and providers. Any other launch error fails over too, with a longer cooldown
(``requeue.after_launch_error``). Preempt: stop with the grace period, then requeue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from overcast.api import metrics
from overcast.backends.base import CapacityError, LaunchRequest, ProviderDown
from overcast.control.env import job_env
from overcast.control.health import record_failure, record_success
from overcast.control.launcher import Launcher, LaunchResult, PendingLaunch
from overcast.control.requeue import after_launch_error, try_elsewhere
from overcast.control.runtime import Runtime
from overcast.placement.pool import Health, Pool
from overcast.scheduler.snapshot import Decisions, Place, Preempt
from overcast.store import JobRecord, JobState, LaunchTerms, PoolHealthRecord

log = logging.getLogger(__name__)

# States a launched attempt may be in when its launch comes back. SUCCEEDED too: a poll saw it succeed
# first (a short job, a slow create call); nothing of it runs to stop (its record is closed: no handle)
_LAUNCHED = (JobState.LAUNCHING, JobState.RUNNING, JobState.STOPPING, JobState.SUCCEEDED)


def apply_decisions(
    rt: Runtime,
    decisions: Decisions,
    pools: dict[str, Pool],
    health: dict[str, PoolHealthRecord],
    still_leader: Callable[[], bool],
    stop_job: Callable[[JobRecord, str], None],
    launcher: Launcher | None = None,
) -> None:
    for preempt in decisions.preempt:
        if not still_leader():
            return
        if launcher is not None and launcher.busy(preempt.job_id):
            continue  # stopped once its launch has returned, if the next plan still wants it
        apply_preempt(rt, preempt, stop_job)
    submitted: set[str] = set()
    for place in decisions.place:
        if not still_leader():  # renewed before every launch: a stale leader stops here
            break
        if apply_place(rt, place, pools, health, launcher):
            submitted.add(place.job_id)
    if launcher is not None and submitted:  # short launches still end within their tick
        launcher.settle(submitted, lambda result: finish_launch(rt, result, health), launcher.wait_s)


def apply_place(
    rt: Runtime,
    place: Place,
    pools: dict[str, Pool],
    health: dict[str, PoolHealthRecord],
    launcher: Launcher | None = None,
) -> bool:
    """Claim the job and launch it: through ``launcher`` (in the background), else here. Returns
    whether a launch was handed to ``launcher``."""
    store = rt.store
    pool = pools.get(place.pool_id)
    backend = rt.backend(pool.backend if pool else None)
    job = store.get(place.job_id)
    if pool is None or backend is None or job is None or job.state is not JobState.PENDING:
        return False
    refused = health.get(pool.id)
    if refused is not None and refused.until is not None and refused.until > rt.clock():
        return False  # the pool refused a job since the plan: this one waits for the next tick's plan
    attempt = job.attempt + 1
    claimed = store.transition(
        job.id, [JobState.PENDING], JobState.LAUNCHING, attempt_was=job.attempt,
        attempt=attempt, pool_id=pool.id, backend=pool.backend, nodes=place.nodes, reason=place.reason,
        event=("placed", f"attempt {attempt} on {pool.id} ({place.nodes} nodes): {place.reason}"),
    )  # fmt: skip
    if claimed is None:
        return False  # someone else moved it (cancelled, or another loop took it)
    terms = LaunchTerms(
        pool.provider, str(pool.purchase), place.nodes, pool.gpus_per_node, pool.accelerator,
        pool.price_per_node_hour,
    )  # fmt: skip
    store.record_launch(job.id, attempt, pool.id, pool.backend, handle="", team=job.team, terms=terms)
    env = job_env(job.id, attempt, place.nodes, job.spec, rt.home)
    request = LaunchRequest(job.id, attempt, pool, place.nodes, job.spec, env)
    planned_at = launcher.known_at if launcher is not None else 0.0
    pending = PendingLaunch(job, attempt, pool, pools, request, planned_at)
    if launcher is not None:
        launcher.submit(pending)
        return True
    try:
        result = LaunchResult(pending, allocation=backend.launch(request))
    except Exception as exc:
        result = LaunchResult(pending, error=exc)
    finish_launch(rt, result, health)
    return False


def finish_launch(rt: Runtime, result: LaunchResult, health: dict[str, PoolHealthRecord]) -> None:
    """What follows ``backend.launch``, on the tick thread: fail over, or note the launch."""
    store = rt.store
    launch = result.launch
    job, attempt, pool = launch.job, launch.attempt, launch.pool
    exc = result.error
    if result.started_at is not None:  # billed from when launch() began, not from the claim
        store.start_launch(job.id, attempt, result.started_at)
    if result.deferred:
        store.end_launch(job.id, attempt, "deferred", at=result.started_at)  # never tried: bills nothing
        store.transition(
            job.id, [JobState.LAUNCHING], JobState.PENDING, reason=f"{pool.id} refused a launch just now",
            attempt_was=attempt,
            event=("launch-deferred", f"attempt {attempt} on {pool.id}: the pool refused a launch just now"),
        )  # fmt: skip
        return
    if isinstance(exc, CapacityError | ProviderDown):
        kind = Health.DOWN if isinstance(exc, ProviderDown) else Health.OUT_OF_CAPACITY
        health[pool.id] = record_failure(store, pool.id, kind, str(exc), rt.clock(), rt.backoff)
        outcome = "capacity-error" if kind is Health.OUT_OF_CAPACITY else "provider-down"
        store.end_launch(job.id, attempt, outcome)
        rt.avoid.setdefault(job.id, set()).add(pool.id)
        try_elsewhere(rt, job.id, attempt, pool.id, exc, outcome)
        return
    if exc is not None:  # provisioning on this pool failed (a missing subnet...): fail over
        log.warning("launch of %s attempt %d on %s failed: %s", job.id, attempt, pool.id, exc)
        after_launch_error(rt, job, attempt, pool, launch.pools, health, exc)
        return
    assert result.allocation is not None
    now = store.get(job.id)
    if now is None or now.attempt != attempt or now.state not in _LAUNCHED:
        # Another loop took over while this launch ran (this loop lost the lease) and requeued or
        # ended the job: this attempt must not run beside whatever it started.
        rt.stop(pool.backend, job.id, attempt)
        store.end_launch(job.id, attempt, "superseded")
        store.add_event(job.id, "superseded-stopped", f"attempt {attempt} on {pool.id}: the job moved on")
        return
    store.set_launch_handle(job.id, attempt, result.allocation.handle)
    store.add_event(job.id, "launched", f"attempt {attempt} on {pool.id}")
    metrics.PLACEMENTS.labels(provider=pool.provider).inc()
    record_success(store, pool.id, health)
    rt.avoid.pop(job.id, None)


def apply_preempt(rt: Runtime, preempt: Preempt, stop_job: Callable[[JobRecord, str], None]) -> None:
    store = rt.store
    job = store.get(preempt.job_id)
    if job is None:
        return
    live = [JobState.LAUNCHING, JobState.RUNNING]
    stopping = store.transition(
        job.id, live, JobState.STOPPING, reason=f"preempted: {preempt.reason}", attempt_was=job.attempt,
        event=("preempting", f"attempt {job.attempt}: {preempt.reason}"),
    )  # fmt: skip
    if stopping is None:
        return
    stop_job(stopping, f"preempted by the scheduler: {preempt.reason}")
