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
terminated instances), was lost: a host failure, or someone terminated it outside overcast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overcast.backends.base import BackendEvent
from overcast.backends.cloud_gangs import ENDED_AT, GangHead, Wording, by_gang, outcome
from overcast.backends.lambda_client import GONE_STATES, LIVE_STATES, STOP_NAME, TAG, tags_of

WORDING = Wording(lost="host failure or terminated outside overcast")

Instance = dict[str, Any]  # Lambda's instance object: id, name, status, tags, private_ip, ...


def rank_of(instance: Instance) -> int:
    try:
        return int(tags_of(instance).get(TAG + "rank", "0"))
    except ValueError:
        return 0


def launched_at(instance: Instance) -> float | None:
    try:
        return float(tags_of(instance)[TAG + "launched"])
    except (KeyError, ValueError):
        return None


def stop_asked(instance: Instance) -> bool:
    return str(instance.get("name") or "").startswith(STOP_NAME)


@dataclass(slots=True)
class Gang(GangHead):
    instances: list[Instance] = field(default_factory=list)

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
        ended: list[tuple[int, int, bool]] = []  # (rank, exit code, got SIGTERM)
        lost: list[str] = []
        for inst in sorted(self.instances, key=rank_of):
            t, rank, status = tags_of(inst), rank_of(inst), inst.get("status")
            if TAG + "exit" in t:
                try:
                    ended.append((rank, int(t[TAG + "exit"]), t.get(TAG + "sigterm") == "1"))
                except ValueError:
                    lost.append(f"{inst.get('id')} (rank {rank}) tagged a bad exit code")
            elif status in GONE_STATES:
                lost.append(f"{inst.get('id')} (rank {rank}) {status} without an exit code")
        missing = self.nodes - len({rank_of(i) for i in self.instances})
        if missing > 0:  # Lambda lists terminated instances for a short while only
            lost.append(f"{missing} instance(s) no longer listed by Lambda")
        stamps = [tags_of(i).get(TAG + ENDED_AT) for i in self.instances]
        launched = [t for t in map(launched_at, self.instances) if t is not None]
        return outcome(self, ended, lost, now, WORDING, stamps, launched)


def group(instances: list[Instance], owner: str) -> list[Gang]:
    """Gangs of the instances tagged with ``owner`` (others are ignored), in (job, attempt) order."""
    gangs = by_gang(instances, tags_of, TAG, owner)
    return [Gang(h.job_id, h.attempt, h.pool_id, h.nodes, items) for h, items in gangs]
