"""What one attempt's ``squeue`` record is news of, given what the backend saw of it before.

The backend keeps a :class:`Tracked` per attempt; :func:`attempt_events` compares a fresh record with it,
updates it and returns the events (at most one end per attempt, nothing after overcast's own stop).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from overcast.backends.base import BackendEvent, EventKind
from overcast.backends.slurm_config import SlurmCluster
from overcast.backends.slurm_states import (
    end_time,
    hopeless_reason,
    is_live,
    is_running,
    is_waiting,
    terminal_outcome,
    was_requeued,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Tracked:
    slurm_id: int
    submitted_at: float  # or the last time Slurm requeued it: the pending timeout counts from there
    started: bool = False
    finished: bool = False  # a terminal event was reported (or it is not ours to report any more)
    stopping: bool = False  # overcast asked to stop it: its end is not news
    restarts: int = 0
    odd_state: str = ""  # a state this version does not know, logged once


def event(
    kind: EventKind, key: tuple[str, int], at: float, detail: str, exit_code: int | None = None
) -> BackendEvent:
    return BackendEvent(kind, key[0], key[1], at, detail, exit_code)


def attempt_events(
    cluster: SlurmCluster,
    key: tuple[str, int],
    tracked: Tracked,
    job: dict[str, Any],
    now: float,
    to_cancel: list[int],
) -> list[BackendEvent]:
    """The events ``job`` (this attempt's record) means; Slurm job ids to cancel go to ``to_cancel``."""
    if tracked.finished:
        return []
    if tracked.stopping:  # overcast asked for its end: nothing it does is news any more
        tracked.finished = not is_live(job)
        return []
    events = []
    if is_running(job) and not tracked.started:
        tracked.started = True
        events.append(event(EventKind.STARTED, key, now, f"running on {job.get('nodes')}"))
    if was_requeued(job, tracked.restarts):
        tracked.restarts = int(job.get("restart_cnt") or 0)
        tracked.started = False
        tracked.submitted_at = now
        if not cluster.requeue:  # overcast owns restarts: end this attempt, relaunch elsewhere
            tracked.finished = True
            to_cancel.append(tracked.slurm_id)
            return [*events, event(EventKind.PREEMPTED, key, now, "requeued by Slurm")]
        return events
    outcome = terminal_outcome(job, tracked.stopping)
    if outcome is not None:
        tracked.finished = True
        at = min(end_time(job) or now, now)  # when it ended, not when we looked: a loop away is not billed
        return [*events, event(outcome.kind, key, at, outcome.detail, outcome.exit_code)]
    if not is_live(job):  # a state this version does not know: keep watching
        if tracked.odd_state != str(job.get("job_state")):
            tracked.odd_state = str(job.get("job_state"))
            log.warning(
                "slurm:%s: job %s in unknown state %s", cluster.name, tracked.slurm_id, tracked.odd_state
            )
        return events  # it changes, or slurmctld forgets it (then: "vanished", PREEMPTED)
    hopeless = hopeless_reason(job)
    waited = now - tracked.submitted_at
    timeout = cluster.pending_timeout_s
    if hopeless is None and is_waiting(job) and timeout is not None and waited > timeout:
        hopeless = f"still pending after {waited:.0f}s ({job.get('state_reason')})"
    if hopeless is not None:
        tracked.finished = tracked.stopping = True
        to_cancel.append(tracked.slurm_id)
        events.append(event(EventKind.CAPACITY_ERROR, key, now, f"cannot start here: {hopeless}"))
    return events


def vanished_event(key: tuple[str, int], record: dict[str, Any] | None, now: float) -> BackendEvent:
    """The end of an attempt slurmctld forgot (MinJobAge) before we saw it end: how and when accounting
    (sacct) says it ended, where the cluster keeps accounting; else lost, now."""
    outcome = terminal_outcome(record, stopped_by_us=False) if record else None
    if record is None or outcome is None:
        return event(EventKind.PREEMPTED, key, now, "job vanished from the Slurm queue")
    at = min(end_time(record) or now, now)
    return event(outcome.kind, key, at, f"{outcome.detail} (by accounting)", outcome.exit_code)
