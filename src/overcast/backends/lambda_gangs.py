"""What Lambda says about overcast's instances, grouped by gang: one (job, attempt) = N launches.

Everything the backend needs after a crash is on the instances, as tags (set at launch, then written by
the node's agent only):

    overcast-backend   which LambdaBackend launched it (several fleet entries may share one account)
    overcast-job, overcast-attempt, overcast-pool, overcast-nodes, overcast-rank (set at launch)
    overcast-launch    a nonce of the launch request: how the agent finds its own instance (no IMDS)
    overcast-launched  when it was launched (epoch seconds; Lambda's instance has no creation time)
    overcast-agent     the node agent runs (STARTED waits for every rank's)
    overcast-exit      the job's exit code; overcast-sigterm: it got SIGTERM; overcast-ended-at: when

The backend's stop request is the instance's *name* (``overcast-stop``), not a tag: Lambda's update
replaces the whole tag list and has no etag, so the agent is the only writer of tags after launch and
neither side can undo the other's write.

An instance ``terminating``/``terminated`` without an exit tag, or no longer listed (Lambda forgets
terminated instances), was lost: a host failure, or someone terminated it outside overcast. Except a rank
whose exit an earlier poll read (``Gang.exits``, kept in the backend's local state): a rank that ended
long before the others may have terminated itself and been forgotten while the others still run.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from overcast.backends.base import BackendEvent
from overcast.backends.cloud_gangs import ENDED_AT, GangHead, Wording, by_gang, outcome
from overcast.backends.lambda_client import GONE_STATES, LIVE_STATES, STOP_NAME, TAG, tags_of

WORDING = Wording(lost="host failure or terminated outside overcast")

Instance = dict[str, Any]  # Lambda's instance object: id, name, status, tags, private_ip, ...
Exit = tuple[int, bool, str | None]  # a rank's exit code, whether it got SIGTERM, its ended-at tag


def rank_of(instance: Instance) -> int:
    try:
        return int(tags_of(instance).get(TAG + "rank", "0"))
    except ValueError:
        return 0


def launched_at(instance: Instance) -> float | None:
    return _epoch(instance, "launched")


def ended_at(instance: Instance) -> float | None:
    """When its job ended, as its agent tagged it (None: not ended, or no usable stamp)."""
    return _epoch(instance, ENDED_AT)


def _epoch(instance: Instance, key: str) -> float | None:
    try:
        return float(tags_of(instance)[TAG + key])
    except (KeyError, ValueError):
        return None


def exit_of(instance: Instance) -> Exit | None:
    """The end its agent tagged (None: not yet); ValueError when the exit code is not a number."""
    t = tags_of(instance)
    if TAG + "exit" not in t:
        return None
    return int(t[TAG + "exit"]), t.get(TAG + "sigterm") == "1", t.get(TAG + ENDED_AT)


def stop_asked(instance: Instance) -> bool:
    return str(instance.get("name") or "").startswith(STOP_NAME)


@dataclass(slots=True)
class Gang(GangHead):
    instances: list[Instance] = field(default_factory=list)
    exits: dict[int, Exit] = field(default_factory=dict)  # rank -> its end, as a poll once read it

    @property
    def live(self) -> list[Instance]:
        return [i for i in self.instances if i.get("status") in LIVE_STATES]

    @property
    def stop_requested(self) -> bool:
        return any(stop_asked(i) for i in self.instances)

    def all_running(self) -> bool:
        """Every rank's instance is active and its agent has come up."""
        up = [i for i in self.instances if i.get("status") == "active" and TAG + "agent" in tags_of(i)]
        return len({rank_of(i) for i in up}) == self.nodes

    def agent_missing_since(self) -> float | None:
        """The launch time of a gang whose instances are all active but some agent has not come up."""
        active = [i for i in self.instances if i.get("status") == "active"]
        if len({rank_of(i) for i in active}) < self.nodes or self.all_running():
            return None
        return max((launched_at(i) or 0.0) for i in active)

    def terminal_event(self, now: float) -> BackendEvent | None:
        """The gang's outcome, once it has one (``cloud_gangs.outcome``)."""
        exits = dict(self.exits)  # recorded by earlier polls: their instances may be gone since
        lost: list[str] = []
        stamps: list[str | None] = []
        for inst in sorted(self.instances, key=rank_of):
            rank, status = rank_of(inst), inst.get("status")
            stamps.append(tags_of(inst).get(TAG + ENDED_AT))
            try:
                found = exit_of(inst)
            except ValueError:
                lost.append(f"{inst.get('id')} (rank {rank}) tagged a bad exit code")
                continue
            if found is not None:
                exits[rank] = found
            elif status in GONE_STATES and rank not in exits:
                lost.append(f"{inst.get('id')} (rank {rank}) {status} without an exit code")
        listed = {rank_of(i) for i in self.instances}
        stamps += [stamp for rank, (_, _, stamp) in exits.items() if rank not in listed]
        missing = self.nodes - len(listed | set(exits))
        if missing > 0:  # Lambda lists terminated instances for a short while only
            lost.append(f"{missing} instance(s) no longer listed by Lambda")
        ended = [(rank, code, sigterm) for rank, (code, sigterm, _) in sorted(exits.items())]
        launched = [t for t in map(launched_at, self.instances) if t is not None]
        return outcome(self, ended, lost, now, WORDING, stamps, launched)


def group(instances: list[Instance], owner: str) -> list[Gang]:
    """Gangs of the instances tagged with ``owner`` (others are ignored), in (job, attempt) order."""
    gangs = by_gang(instances, tags_of, TAG, owner)
    return [Gang(h.job_id, h.attempt, h.pool_id, h.nodes, items) for h, items in gangs]


def remember_exits(gangs: list[Gang], saved: dict[str, Any]) -> dict[str, Any]:
    """Give each gang the exits of ``saved`` (the backend's record: gang key -> rank -> [code, sigterm,
    ended-at]) plus those its instances show now; the record of the listed gangs, to be saved again
    (a gang no longer listed at all has nothing left to report)."""
    record: dict[str, Any] = {}
    for gang in gangs:
        with contextlib.suppress(TypeError, ValueError, AttributeError):  # a damaged record: start over
            mine = dict(saved.get(gang.key) or {})
            gang.exits = {int(r): (int(c), bool(s), e) for r, (c, s, e) in mine.items()}
        for inst in gang.instances:
            with contextlib.suppress(ValueError):  # a bad exit code: terminal_event reports it
                found = exit_of(inst)
                if found is not None:
                    gang.exits.setdefault(rank_of(inst), found)
        if gang.exits:
            record[gang.key] = {str(rank): list(end) for rank, end in gang.exits.items()}
    return record
