"""A Job and its pods (as the API returns them) -> overcast events. Pure functions over JSON dicts.

Who is at fault decides the event: a container's own non-zero exit is FAILED; a pod disrupted by the
cluster (evicted, preempted, its node lost or drained: the ``DisruptionTarget`` condition, on the pod or
recorded on the Job by its pod failure policy) or the Job's deadline is PREEMPTED, and overcast resumes
the job from its checkpoint, elsewhere if need be.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from overcast.backends.base import EventKind
from overcast.backends.kubernetes_manifest import ATTEMPT, INDEX, JOB_ID

# pod status.reason values that mean "the node or the cluster ended it" (older clusters set no condition)
_DISRUPTED_REASONS = frozenset({"Evicted", "NodeLost", "Shutdown", "NodeShutdown", "Preempting"})


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: EventKind
    detail: str
    exit_code: int | None = None


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def job_key(job: dict[str, Any]) -> tuple[str, int] | None:
    """(job id, attempt) of one of overcast's Jobs; None for anything else."""
    m = meta(job)
    job_id = (m.get("annotations") or {}).get(JOB_ID)
    attempt = (m.get("labels") or {}).get(ATTEMPT)
    if not job_id or not str(attempt or "").isdigit():
        return None
    return str(job_id), int(str(attempt))


def deleting(obj: dict[str, Any]) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def epoch(stamp: object, default: float) -> float:
    """An RFC 3339 time of the API ("2026-01-02T03:04:05Z") as epoch seconds; ``default`` if absent or bad."""
    if not stamp:
        return default
    try:
        return dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


def created_at(obj: dict[str, Any], default: float) -> float:
    return epoch(meta(obj).get("creationTimestamp"), default)


def ended_at(job: dict[str, Any], pods: list[dict[str, Any]], now: float) -> float:
    """When an ended gang stopped running (what it is billed to, however late overcast polls): the last
    ``finishedAt`` of its containers; now while one still runs. With no container left to tell (pods
    deleted), when the Job's end condition was set; else now."""
    ends = []
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state = cs.get("state") or {}
            if "running" in state:
                return now
            if "terminated" in state:
                ends.append(epoch(state["terminated"].get("finishedAt"), now))
    if not ends:
        end = next(
            (c for t, c in _conditions(job).items() if t in ("Complete", "Failed", "FailureTarget")), {}
        )
        ends.append(epoch(end.get("lastTransitionTime"), now))
    return min(max(ends), now)


def rank(pod: dict[str, Any]) -> int | None:
    m = meta(pod)
    value = (m.get("labels") or {}).get(INDEX) or (m.get("annotations") or {}).get(INDEX)
    return int(value) if str(value or "").isdigit() else None


def phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        c.get("type"): c
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }


def all_started(pods: list[dict[str, Any]], nodes: int) -> bool:
    """Every rank of the gang has run (is running, or already ended): the gang started."""
    ranks = {rank(p) for p in pods if phase(p) in ("Running", "Succeeded", "Failed")}
    return all(r in ranks for r in range(nodes))


def disruption(pods: list[dict[str, Any]]) -> str | None:
    """Why the cluster ended one of these pods (not the job's fault); None if it did not."""
    for pod in pods:
        status = pod.get("status") or {}
        target = _conditions(pod).get("DisruptionTarget")
        where = f"pod {meta(pod).get('name')} on {(pod.get('spec') or {}).get('nodeName') or '?'}"
        if target is not None:
            return f"{where}: {target.get('reason') or 'disrupted'} {target.get('message') or ''}".strip()
        if status.get("reason") in _DISRUPTED_REASONS:
            return f"{where}: {status['reason']} {status.get('message') or ''}".strip()
    return None


def _exit_code(pods: list[dict[str, Any]]) -> tuple[int | None, str]:
    """The first non-zero exit of a pod the job itself ended (not one killed by the gang's end)."""
    for pod in sorted(pods, key=lambda p: rank(p) or 0):
        if phase(pod) != "Failed" or deleting(pod):
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("exitCode"):
                return int(term["exitCode"]), f"pod {meta(pod).get('name')} exited {term['exitCode']}"
    return None, ""


def terminal_outcome(job: dict[str, Any], pods: list[dict[str, Any]]) -> Outcome | None:
    """The event an ended (or ending) gang means; None while it runs or waits."""
    conditions = _conditions(job)
    if "Complete" in conditions:
        return Outcome(EventKind.SUCCEEDED, "completed")
    why = disruption(pods)
    if why is not None:  # reported at once: the rest of the gang cannot go on without this pod
        return Outcome(EventKind.PREEMPTED, why)
    failed = conditions.get("Failed") or conditions.get("FailureTarget")
    if failed is None:
        return None
    reason, message = str(failed.get("reason") or ""), str(failed.get("message") or "")
    if reason == "PodFailurePolicy" and "DisruptionTarget" in message:
        return Outcome(EventKind.PREEMPTED, f"pod disrupted: {message}")
    if reason == "DeadlineExceeded":
        return Outcome(EventKind.PREEMPTED, "Job deadline reached")
    code, where = _exit_code(pods)
    detail = "job exited non-zero"
    if where or reason:
        detail += f" ({where or reason + (': ' + message if message else '')})"
    return Outcome(EventKind.FAILED, detail, code)


def unscheduled(pods: list[dict[str, Any]], nodes: int) -> bool:
    """Some rank of the gang is not on a node yet (its pod not created, or not bound by the scheduler)."""
    bound = {rank(p) for p in pods if (p.get("spec") or {}).get("nodeName")}
    return not all(r in bound for r in range(nodes))


def pending_reason(pods: list[dict[str, Any]]) -> str:
    """The scheduler's word on a waiting pod ("0/4 nodes are available: 4 Insufficient nvidia.com/gpu"),
    else the kubelet's on a container not started yet ("ImagePullBackOff: ...")."""
    for pod in pods:
        scheduled = next(
            (c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") == "PodScheduled"),
            None,
        )
        if scheduled is not None and scheduled.get("status") == "False":
            return str(scheduled.get("message") or scheduled.get("reason") or "unschedulable")
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            wait = (cs.get("state") or {}).get("waiting") or {}
            if wait.get("reason"):
                return f"pod {meta(pod).get('name')}: {wait['reason']} {wait.get('message') or ''}".strip()
    waiting = sum(1 for p in pods if phase(p) == "Pending")
    return f"{waiting} of the gang's pods still pending" if pods else "no pods created yet"
