"""Launches run in background threads, so a slow cloud launch (a GCP bulkInsert or an Azure VM takes
minutes) does not hold up other jobs' events and placements.

One worker thread per backend: launches on one backend stay serial (as inside the tick before), launches
on different backends run in parallel. A worker only calls ``backend.launch``; its outcome goes back to
the tick thread through a queue, and the tick handles it (``apply.finish_launch``), so every store write,
the ``health`` dict and ``rt.avoid`` stay on the tick thread. The tick drains the queue at its start and,
after submitting its own launches, waits up to ``wait_s`` for them: launches that take a few seconds
(local, Slurm, Kubernetes, EC2) still finish within their tick; longer ones are handled by a later tick.
The job stays LAUNCHING meanwhile, so its nodes count as used, reconcile leaves it alone and a cancel or
a preemption waits until the launch has returned (``busy``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from overcast.backends.base import Allocation, JobRejected, LaunchRequest
from overcast.control.runtime import Runtime
from overcast.placement.pool import Pool
from overcast.store import JobRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingLaunch:
    """A claimed (LAUNCHING, recorded) attempt whose ``backend.launch`` is still to run."""

    job: JobRecord  # as read before the claim
    attempt: int
    pool: Pool
    pools: dict[str, Pool]  # the tick's pools: a launch error looks at the backend's other pools
    request: LaunchRequest
    planned_at: float  # monotonic: what the plan knew of refusals (``Launcher.known_at``)


@dataclass(frozen=True)
class LaunchResult:
    launch: PendingLaunch
    allocation: Allocation | None = None
    error: Exception | None = None
    deferred: bool = False  # not tried: the pool refused a launch the plan did not know of yet
    started_at: float | None = None  # wall clock when ``backend.launch`` began (or the deferral): billing


def refuses_pool(exc: Exception) -> bool:
    """Errors after which every job placed on the pool would fail too: capacity, an outage, a launch
    error (``after_launch_error``); not ``JobRejected``, which refuses only this job."""
    return not isinstance(exc, JobRejected)


class Launcher:
    def __init__(self, rt: Runtime, wait_s: float = 5.0) -> None:
        self.rt = rt
        self.wait_s = wait_s
        self._workers: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # jobs whose launch has not been handled by the tick yet
        self._launching: dict[str, int] = {}  # backend -> launches inside backend.launch right now
        self._skipping: dict[str, float] = {}  # backend -> since when its poll has been skipped
        self.max_skip_s = 60.0
        self._results: queue.SimpleQueue[LaunchResult] = queue.SimpleQueue()
        # pool -> when a launch there was last refused; each pool is written only by its backend's worker
        self._refused: dict[str, float] = {}
        self.known_at = time.monotonic()  # refusals before this are handled: set when a drain begins

    def submit(self, launch: PendingLaunch) -> None:
        name = launch.pool.backend
        with self._lock:
            self._busy.add(launch.job.id)
            worker = self._workers.get(name)
            if worker is None:
                worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"overcast-launch-{name}")
                self._workers[name] = worker
        worker.submit(self._run, launch)

    def _run(self, launch: PendingLaunch) -> None:
        backend = self.rt.backend(launch.pool.backend)
        refused = self._refused.get(launch.pool.id)
        if backend is None or (refused is not None and refused >= launch.planned_at):
            # An earlier launch on this pool was refused after this one was planned: as inside the
            # tick before, the job waits for the next plan instead of doubling the pool's cooldown.
            self._results.put(LaunchResult(launch, deferred=True, started_at=time.time()))
            return
        name = launch.pool.backend
        with self._lock:
            self._launching[name] = self._launching.get(name, 0) + 1
        started = time.time()  # a launch queued behind others is billed from here, not from its claim
        try:
            result = LaunchResult(launch, allocation=backend.launch(launch.request), started_at=started)
        except Exception as exc:  # handled on the tick thread (apply.finish_launch)
            result = LaunchResult(launch, error=exc, started_at=started)
        finally:
            with self._lock:
                self._launching[name] -= 1
        self._results.put(result)
        if result.error is not None and refuses_pool(result.error):
            # after the put: a refusal timed before a drain's ``known_at`` is in the queue by then
            self._refused[launch.pool.id] = time.monotonic()

    def busy(self, job_id: str) -> bool:
        """Whether the job's launch is in flight, or returned but not handled by the tick yet."""
        with self._lock:
            return job_id in self._busy

    def launching_on(self, backend: str) -> bool:
        """Whether the tick should skip this backend's poll and reconcile now: it is inside
        ``backend.launch`` and holds its lock for the whole launch (the cloud backends: minutes), so a
        poll would wait on the lock. Not for more than ``max_skip_s`` in a row: with launches queued back
        to back the backend would never be polled, so then the tick waits on the lock once."""
        target = self.rt.backend(backend)
        now = time.monotonic()
        with self._lock:
            busy = self._launching.get(backend, 0) > 0 and getattr(target, "launch_holds_lock", False)
            if not busy:
                self._skipping.pop(backend, None)
                return False
            since = self._skipping.setdefault(backend, now)
            if now - since > self.max_skip_s:
                self._skipping.pop(backend, None)  # poll this time, then skip again
                return False
            return True

    def drain(self, handle: Callable[[LaunchResult], None]) -> int:
        """Handle every launch that has returned (on the calling thread: the tick's)."""
        self.known_at = time.monotonic()
        handled = 0
        while True:
            try:
                result = self._results.get_nowait()
            except queue.Empty:
                return handled
            self._handle(result, handle)
            handled += 1

    def settle(self, job_ids: set[str], handle: Callable[[LaunchResult], None], timeout: float) -> None:
        """Handle returning launches until those of ``job_ids`` are all handled, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while any(self.busy(job_id) for job_id in job_ids):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                result = self._results.get(timeout=left)
            except queue.Empty:
                return
            self._handle(result, handle)

    def _handle(self, result: LaunchResult, handle: Callable[[LaunchResult], None]) -> None:
        try:
            handle(result)
        except Exception:  # the job stays LAUNCHING; reconcile finds what runs (or not) and fixes it
            launch = result.launch
            log.exception("handling the launch of %s attempt %d failed", launch.job.id, launch.attempt)
        finally:
            with self._lock:
                self._busy.discard(result.launch.job.id)

    def shutdown(self, handle: Callable[[LaunchResult], None], timeout: float = 60.0) -> None:
        """Wait (bounded) for launches in flight and handle them; a launch still hung after ``timeout``
        is left to its thread, and to the next loop's reconcile."""
        with self._lock:
            busy = set(self._busy)
        self.drain(handle)
        self.settle(busy, handle, timeout)
        with self._lock:  # a later tick (a loop started again) gets fresh workers
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.shutdown(wait=False)
