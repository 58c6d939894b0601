"""Job lifecycle states, shared by the store, the control loop and the API."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"  # waiting for a placement (new, or requeued after preemption/failure)
    LAUNCHING = "launching"  # a launch of (job, attempt) is being applied to a backend
    RUNNING = "running"
    STOPPING = "stopping"  # cancel requested or preempted; backend stop in progress
    SUCCEEDED = "succeeded"  # terminal
    FAILED = "failed"  # terminal (out of restarts/retries, or unplaceable and given up)
    CANCELLED = "cancelled"  # terminal

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES: frozenset[JobState] = frozenset(JobState) - TERMINAL_STATES
