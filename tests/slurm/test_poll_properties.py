"""Invariants of the backend's event logic over any sequence of what squeue may show for a job
(Hypothesis): one attempt ends at most once, nothing is reported after its end or after overcast
stopped it, STARTED comes once, active() lists it until its end is reported. The queue is an in-memory
stand-in for the Slurm commands."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overcast.backends.base import EventKind
from overcast.backends.slurm import SlurmBackend, SlurmCluster
from tests.slurm.helpers import MemoryQueue

TERMINAL = {EventKind.SUCCEEDED, EventKind.FAILED, EventKind.PREEMPTED, EventKind.PROVIDER_DOWN,
            EventKind.CAPACITY_ERROR}  # fmt: skip
STEPS = st.sampled_from(
    [
        ("PENDING", "Priority"), ("PENDING", "Resources"), ("PENDING", "PartitionNodeLimit"),
        ("RUNNING", "None"), ("COMPLETING", "None"), ("COMPLETED", "None"), ("FAILED", "NonZeroExitCode"),
        ("NODE_FAIL", "NodeDown"), ("CANCELLED", "None"), ("TIMEOUT", "TimeLimit"), ("REQUEUE", "None"),
        ("VANISH", ""), ("DOWN", ""), ("STOP", ""), ("WAIT", ""),
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(STEPS, max_size=25))
def test_an_attempt_ends_once_and_never_speaks_after_its_end(steps: list[tuple[str, str]]) -> None:
    now = [1000.0]
    backend = SlurmBackend(SlurmCluster("c", down_retry_s=0, lost_after_s=0, pending_timeout_s=300),
                           clock=lambda: now[0])  # fmt: skip
    queue = MemoryQueue()
    backend.cli = queue  # type: ignore[assignment]
    queue.jobs = [{"job_id": 1, "name": "ovc.1.j", "job_state": "PENDING", "state_reason": "Priority",
                   "exit_code": 0, "restart_cnt": 0, "submit_time": 1000}]  # fmt: skip
    events, stopped_at = [], None
    backend.poll()  # it is tracked from here on, as after launch()
    for state, reason in steps:
        queue.down = state == "DOWN"
        if state == "VANISH":
            queue.jobs = []
        elif state == "STOP":
            backend.stop("j", 1, grace_seconds=0)
            stopped_at = len(events)
        elif state == "WAIT":
            now[0] += 400
        elif state == "REQUEUE" and queue.jobs:
            queue.jobs[0] |= {"job_state": "PENDING", "state_reason": "BeginTime"}
            queue.jobs[0]["restart_cnt"] += 1
        elif state not in ("DOWN", "REQUEUE") and queue.jobs:
            queue.jobs[0] |= {"job_state": state, "state_reason": reason}
        if not queue.down and stopped_at is None and not TERMINAL.intersection(events):
            # Until its end is reported, the attempt runs as far as a reconcile can tell, else the loop
            # would requeue it as lost (rerun a finished job, or not count a restart).
            assert backend.active() == [("j", 1)], (steps, queue.jobs)
        events.extend(e.kind for e in backend.poll())
    ends = [i for i, kind in enumerate(events) if kind in TERMINAL]
    assert len(ends) <= 1, events
    if ends:
        assert ends[0] == len(events) - 1, events  # nothing after the end
    assert events.count(EventKind.STARTED) <= 1, events
    if stopped_at is not None:
        assert not [k for k in events[stopped_at:] if k in TERMINAL], (steps, events)
