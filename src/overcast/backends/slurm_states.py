"""Slurm job states -> overcast events. Pure functions over one ``squeue --json`` job record.

Who is at fault decides the event: the job's own exit (FAILED, OUT_OF_MEMORY) is FAILED and counts
against ``max_retries_on_failure`` (0 by default); a lost node, preemption, an admin's scancel/requeue or
the site's time limit (TIMEOUT: a long training run on a partition with a MaxTime) is PREEMPTED, and the
control loop restarts the job from its checkpoint, up to ``max_restarts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from overcast.backends.base import EventKind
from overcast.backends.slurm_cli import decode_exit_status

# Alive on its nodes (STOPPED: SIGSTOPped by ``scontrol suspend``-like tools; SUSPENDED: gang scheduling).
RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "STAGE_OUT", "SIGNALING", "RESIZING"}
)
WAITING_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
)
LIVE_STATES = RUNNING_STATES | WAITING_STATES

# state -> (event, detail). CANCELLED is handled apart: it depends on who cancelled.
_TERMINAL: dict[str, tuple[EventKind, str]] = {
    "COMPLETED": (EventKind.SUCCEEDED, "completed"),
    "FAILED": (EventKind.FAILED, "job exited non-zero"),
    "OUT_OF_MEMORY": (EventKind.FAILED, "out of memory"),
    "TIMEOUT": (EventKind.PREEMPTED, "Slurm time limit reached"),
    "DEADLINE": (EventKind.FAILED, "Slurm deadline reached"),
    "PREEMPTED": (EventKind.PREEMPTED, "preempted by Slurm"),
    "NODE_FAIL": (EventKind.PREEMPTED, "node failure"),
    "BOOT_FAIL": (EventKind.PREEMPTED, "node boot failure"),
    "SPECIAL_EXIT": (EventKind.FAILED, "special exit"),
}

# PENDING reasons that will not clear by waiting: the job can never start in this cluster as asked.
_HOPELESS_REASONS = (
    "PartitionNodeLimit",
    "PartitionConfig",
    "PartitionDown",
    "PartitionInactive",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "QOSMaxNodePerJobLimit",
    "QOSMaxGRESPerJob",
    "QOSMaxGRESPerNode",
    "QOSMaxWallDurationPerJobLimit",
    "AssocMaxNodePerJobLimit",
    "AssocMaxGRESPerJob",
    "AssocMaxWallDurationPerJobLimit",
    "AccountNotAllowed",
    "QOSNotAllowed",
    "DependencyNeverSatisfied",
    "JobHeldAdmin",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: EventKind
    detail: str
    exit_code: int | None = None


def base_state(job: dict[str, Any]) -> str:
    """``job_state`` without flags ("CANCELLED by 0" style suffixes appear in some tools)."""
    state = job.get("job_state") or "UNKNOWN"
    if isinstance(state, list):  # Slurm 23.02+ JSON: ["RUNNING", "COMPLETING"]
        state = state[0] if state else "UNKNOWN"
    return str(state).split()[0].upper()


def is_running(job: dict[str, Any]) -> bool:
    return base_state(job) in RUNNING_STATES


def is_waiting(job: dict[str, Any]) -> bool:
    return base_state(job) in WAITING_STATES


def is_live(job: dict[str, Any]) -> bool:
    """Queued or running: it holds (or waits for) nodes, and it has not ended."""
    return base_state(job) in LIVE_STATES


def terminal_outcome(job: dict[str, Any], stopped_by_us: bool) -> Outcome | None:
    """The event a finished job means, or None while it is not finished (or we stopped it ourselves)."""
    if stopped_by_us:
        return None  # however SIGTERM left it (a clean exit 0 included): the loop asked for this stop
    state = base_state(job)
    exit_code = decode_exit_status(job.get("exit_code"))
    if state == "CANCELLED":
        return Outcome(EventKind.PREEMPTED, "cancelled on the cluster outside overcast")
    if state not in _TERMINAL:
        return None
    kind, detail = _TERMINAL[state]
    reason = job.get("state_reason")
    if reason and reason not in ("None", "NonZeroExitCode"):
        detail = f"{detail} ({reason})"
    if kind is EventKind.FAILED and exit_code is not None:
        detail = f"{detail}, exit code {exit_code}"
    return Outcome(kind, detail, exit_code if kind is not EventKind.PREEMPTED else None)


def end_time(job: dict[str, Any]) -> float | None:
    """When a finished job ended, by slurmctld (the same End sacct reports); None when not known. Only
    for a finished job: a live one's end_time is when its time limit would end it."""
    value = job.get("end_time")
    if isinstance(value, dict):  # Slurm 23.02+: {"set": true, "infinite": false, "number": 1700000000}
        value = value.get("number") if value.get("set", True) and not value.get("infinite") else None
    try:
        return float(value) or None
    except (TypeError, ValueError):
        return None


def hopeless_reason(job: dict[str, Any]) -> str | None:
    """Why a PENDING job can never start here as asked (e.g. more nodes than the partition has)."""
    if base_state(job) != "PENDING":
        return None
    reason = str(job.get("state_reason") or "")
    return reason if reason.startswith(_HOPELESS_REASONS) else None


def was_requeued(job: dict[str, Any], restarts_seen: int) -> bool:
    """Slurm put the job back in the queue (node failure with --requeue, ``scontrol requeue``)."""
    state = base_state(job)
    if state in ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
        return True
    return int(job.get("restart_cnt") or 0) > restarts_seen
