"""Stops with a grace period run in background threads, so a job that takes its time to save after
SIGTERM does not hold up the loop. Used for cancels and scheduler preemptions; the job is STOPPING
meanwhile (its nodes stay counted as used), and a crash mid-stop is finished by reconcile."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from overcast.control.requeue import finish_stop
from overcast.control.runtime import Runtime
from overcast.store import JobRecord

log = logging.getLogger(__name__)


class Stopper:
    def __init__(self, rt: Runtime, workers: int = 4) -> None:
        self.rt = rt
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="overcast-stop")
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()

    def stop(self, job: JobRecord, why: str) -> None:
        """Stop the job's current attempt (SIGTERM, grace, SIGKILL), then finish: cancelled or requeued."""
        with self._lock:
            if job.id in self._in_flight:
                return
            self._in_flight.add(job.id)
        self._pool.submit(self._run, job, why)

    def _run(self, job: JobRecord, why: str) -> None:
        try:
            self.rt.stop(job.backend, job.id, job.attempt)
            finish_stop(self.rt, job, why)
        except Exception:  # the job stays STOPPING; the next reconcile finishes it
            log.exception("stopping %s attempt %d failed", job.id, job.attempt)
        finally:
            with self._lock:
                self._in_flight.discard(job.id)

    def busy(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._in_flight

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
