"""What the three cloud backends (aws, azure, oci) share about a gang: one (job, attempt) = N machines.

Each provider's ``*_gangs`` module reads its own machines (states, tags, ranks); this module holds what is
the same for all of them: the tags that name a gang, the gang's key, and the rules that turn what the
nodes said (exit codes, SIGTERM, when they ended) and which nodes were lost into the gang's one outcome.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from overcast.backends.base import BackendEvent, EventKind

ENDED_AT = "ended-at"  # the agent's tag (after the provider's prefix): when its node ended, epoch seconds


@dataclass(slots=True)
class GangHead:
    """The part of a gang every provider has; the provider's Gang adds its machines."""

    job_id: str
    attempt: int
    pool_id: str
    nodes: int

    @property
    def key(self) -> str:
        return gang_key(self.job_id, self.attempt)


def gang_key(job_id: str, attempt: int) -> str:
    """The gang's name in the backend's local state (acked.json)."""
    return f"{job_id}--{attempt}"


def split_key(key: str) -> tuple[str, int]:
    job_id, _, attempt = key.rpartition("--")
    return job_id, int(attempt)


def head_of(tags: dict[str, str], prefix: str) -> GangHead | None:
    """The gang a machine belongs to, from its tags (``<prefix>job``, ``attempt``, ``pool``, ``nodes``);
    None for a machine without overcast's tags."""
    try:
        job_id, attempt = tags[prefix + "job"], int(tags[prefix + "attempt"])
        nodes = int(tags.get(prefix + "nodes", "1"))
    except (KeyError, ValueError):
        return None
    return GangHead(job_id, attempt, tags.get(prefix + "pool", ""), nodes)


def by_gang(
    items: Iterable[Any], tags_of: Callable[[Any], dict[str, str]], prefix: str, owner: str | None = None
) -> list[tuple[GangHead, list[Any]]]:
    """The machines grouped by gang, in (job, attempt) order: those of another backend (``<prefix>backend``
    is not ``owner``, when given) or without overcast's tags are left out."""
    gangs: dict[tuple[str, int], tuple[GangHead, list[Any]]] = {}
    for item in items:
        tags = tags_of(item)
        if owner is not None and tags.get(prefix + "backend") != owner:
            continue
        head = head_of(tags, prefix)
        if head is not None:
            gangs.setdefault((head.job_id, head.attempt), (head, []))[1].append(item)
    return [gangs[key] for key in sorted(gangs)]


@dataclass(frozen=True, slots=True)
class Wording:
    """How a provider explains a lost node and a SIGTERM (its words for spot reclaims and stops)."""

    lost: str  # e.g. "spot reclaim or terminated outside overcast"
    sigterm: str = ""  # e.g. "spot notice or stop"; empty: no explanation


def end_time(stamps: list[str | None], launched: list[float], lost: bool, now: float) -> float:
    """When a gang stopped, what it is billed to however late the poll: the latest ``ended-at`` of its
    listed nodes (``stamps``), no earlier than their last launch, no later than ``now``. ``now`` while a
    node runs (no stamp yet), and when a node was lost or wrote no usable stamp (a reclaim, a dead or
    older agent): then nothing better is known than that it was gone by this poll."""
    ends = []
    for stamp in stamps:
        try:
            ends.append(float(stamp if stamp is not None else "nan"))
        except ValueError:
            return now
    if lost or not ends or not all(math.isfinite(t) for t in ends):
        return now
    return min(max(ends + launched), now)


def outcome(
    head: GangHead,
    ended: list[tuple[int, int, bool]],
    lost: list[str],
    now: float,
    wording: Wording,
    stamps: list[str | None] | None = None,
    launched: list[float] | None = None,
) -> BackendEvent | None:
    """The gang's outcome, once it has one: lost > preempted by SIGTERM > failed > all succeeded.

    ``ended``: (rank, exit code, got SIGTERM) of each node that wrote its exit, in rank order;
    ``lost``: a line for each node gone without an exit code; ``stamps``, ``launched``: each listed
    node's ``ended-at`` tag and launch time, for the event's time (``end_time``; without: ``now``)."""
    job, attempt = head.job_id, head.attempt
    at = end_time(stamps or [], launched or [], bool(lost), now)
    if lost:
        why = f"node lost ({wording.lost}): {lost[0]}"
        return BackendEvent(EventKind.PREEMPTED, job, attempt, at, why)
    for rank, code, sigterm in ended:
        if code != 0 and sigterm:
            cause = f" ({wording.sigterm})" if wording.sigterm else ""
            why = f"node {rank} got SIGTERM{cause}, exit {code}"
            return BackendEvent(EventKind.PREEMPTED, job, attempt, at, why)
    for rank, code, _ in ended:
        if code != 0:
            return BackendEvent(EventKind.FAILED, job, attempt, at, f"node {rank} exited with {code}", code)
    if len(ended) == head.nodes:
        return BackendEvent(EventKind.SUCCEEDED, job, attempt, at, "", 0)
    return None
