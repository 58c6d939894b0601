"""stop() runs in the control loop's stopper threads while the loop thread polls, lists and launches: the
backend's bookkeeping must hold up (no "dictionary changed size during iteration", no lost stop)."""

from __future__ import annotations

import sys
import threading
import time

from overcast.backends.slurm import SlurmBackend, SlurmCluster
from tests.slurm.helpers import MemoryQueue


def test_stops_from_other_threads_while_the_loop_polls() -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up at once
    try:
        backend = SlurmBackend(SlurmCluster("c", down_retry_s=0, pending_timeout_s=None))
        queue = MemoryQueue()
        backend.cli = queue  # type: ignore[assignment]
        record = {"job_state": "RUNNING", "state_reason": "None", "exit_code": 0, "restart_cnt": 0}
        queue.jobs = [{"job_id": i, "name": f"ovc.1.j{i}", **record} for i in range(3000)]
        backend.poll()  # tracks the first half ...
        queue.jobs += [{"job_id": i, "name": f"ovc.1.j{i}", **record} for i in range(3000, 3300)]
        errors: list[BaseException] = []

        def stop_some() -> None:  # ... the stopper finds the others by name (as after a restart)
            try:
                for i in range(3000, 3300):
                    backend.stop(f"j{i}", 1, grace_seconds=0)
            except BaseException as e:
                errors.append(e)

        stopper = threading.Thread(target=stop_some)
        stopper.start()
        deadline = time.monotonic() + 60
        while stopper.is_alive() and time.monotonic() < deadline:
            backend.active()
            backend.poll()
            time.sleep(
                0.001
            )  # let go of the lock now and then: Python's lock is not fair, a tight loop starves
        stopper.join(10)
        assert not stopper.is_alive(), "the stopper thread never got through"
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert backend.active() == [(f"j{i}", 1) for i in sorted(range(3000), key=lambda i: f"j{i}")]
