"""What Compute Engine says about overcast's instances, grouped by gang: one (job, attempt) = one bulkInsert
of N instances named ``oc-<hash>-<rank>``.

Everything the GCP backend needs after a crash is on the instances. GCP label values are limited to
[a-z0-9_-] (63 characters), so the exact identity is in the instance metadata and the labels carry its
label-safe form (for the list filter):

    overcast-backend   which GcpBackend created it (metadata: exact; label: ``label_value`` of it)
    overcast-job, overcast-attempt, overcast-nodes (labels and metadata), overcast-pool (metadata)
    rank               the instance name's suffix: a bulkInsert gives every instance the same labels
    overcast-agent     label: the node agent runs (STARTED waits for every rank's)
    overcast-exit      label: the job's exit code, set by the agent just before it stops its instance
    overcast-sigterm   label: the job got SIGTERM (a stop request or a spot preemption) before it exited
    overcast-ended-at  label: when the job ended (epoch seconds, digits): the gang is billed to its last
    overcast-stop      label: the control loop stopped this gang: no events, the agent sends SIGTERM

Like ARM, Compute forgets a deleted instance at once (a spot preemption with action DELETE, or someone
deleting it): an instance of the gang that is no longer listed, or stopped without an exit label, was
lost. That is why the agent stops its instance instead of deleting it: the exit label must outlive the
job until the backend has read it (the backend deletes the instances once the outcome is delivered).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from overcast.backends.base import BackendEvent
from overcast.backends.cloud_gangs import ENDED_AT, GangHead, Wording, by_gang, outcome, split_key
from overcast.backends.gcp_client import GONE_STATES, LIVE_STATES

TAG = "overcast-"
WORDING = Wording(lost="spot preemption or deleted outside overcast", sigterm="preemption notice or stop")


def instance_name(owner: str, job_id: str, attempt: int, rank: int) -> str:
    """The name of one rank's instance (RFC 1035, unique per backend, job and attempt)."""
    return f"{gang_name(owner, job_id, attempt)}-{rank}"


def gang_name(owner: str, job_id: str, attempt: int) -> str:
    """The gang's name: its instances' prefix and its compact placement policy's name."""
    return "oc-" + hashlib.sha256(f"{owner}/{job_id}/{attempt}".encode()).hexdigest()[:16]


def tags(instance: Any) -> dict[str, str]:
    """The instance's labels, with the exact values of overcast's metadata items over them."""
    items = instance.metadata.items if instance.metadata else []
    return dict(instance.labels) | {i.key: i.value for i in items if i.key.startswith(TAG)}


def rank_of(instance: Any) -> int:
    return rank_from_name(instance.name)


def rank_from_name(name: str) -> int:
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def created_at(instance: Any) -> float:
    return dt.datetime.fromisoformat(instance.creation_timestamp).timestamp()


def private_ip(instance: Any) -> str:
    nics = list(instance.network_interfaces)
    return str(nics[0].network_i_p) if nics else ""


@dataclass(slots=True)
class Gang(GangHead):
    instances: list[Any] = field(default_factory=list)  # google.cloud.compute_v1.Instance
    pending: bool = False  # none listed, but its bulkInsert may still create them: neither lost nor gone

    @property
    def live(self) -> list[Any]:
        """Instances that may still run the job: not ended (exit label), not stopped or stopping."""
        return [i for i in self.instances if TAG + "exit" not in i.labels and i.status in LIVE_STATES]

    @property
    def stop_requested(self) -> bool:
        return any(TAG + "stop" in i.labels for i in self.instances)

    def all_running(self) -> bool:
        """Every rank's instance runs and its agent has come up."""
        up = [i for i in self.instances if i.status == "RUNNING" and TAG + "agent" in i.labels]
        return len({rank_of(i) for i in up}) == self.nodes

    def agent_missing_since(self) -> float | None:
        """The creation time of a gang whose instances all run but some agent has not come up."""
        running = [i for i in self.instances if i.status == "RUNNING"]
        if len(running) < self.nodes or self.all_running():
            return None
        return max(created_at(i) for i in running)

    def terminal_event(self, now: float) -> BackendEvent | None:
        """The gang's outcome, once it has one (``cloud_gangs.outcome``)."""
        if self.pending:
            return None
        ended: list[tuple[int, int, bool]] = []  # (rank, exit code, got SIGTERM)
        lost: list[str] = []
        for inst in sorted(self.instances, key=rank_of):
            labels = inst.labels
            if TAG + "exit" in labels:
                ended.append((rank_of(inst), int(labels[TAG + "exit"]), labels.get(TAG + "sigterm") == "1"))
            elif inst.status in GONE_STATES:
                lost.append(f"{inst.name} (rank {rank_of(inst)}) {inst.status} without an exit code")
        missing = self.nodes - len({rank_of(i) for i in self.instances})
        if missing > 0:  # preempted (spot, action DELETE) or deleted outside overcast: GCP forgets it
            lost.append(f"{missing} instance(s) no longer listed by GCP")
        stamps = [i.labels.get(TAG + ENDED_AT) for i in self.instances]
        launched = [created_at(i) for i in self.instances if i.creation_timestamp]
        return outcome(self, ended, lost, now, WORDING, stamps, launched)


def group(instances: list[Any], owner: str, launched: dict[str, int] | None = None) -> list[Gang]:
    """Gangs of ``owner``'s instances, in (job, attempt) order. ``launched`` (key -> nodes) adds the gangs
    this backend created whose instances are all gone: GCP no longer lists them, but their loss must be
    reported."""
    gangs = {(h.job_id, h.attempt): Gang(h.job_id, h.attempt, h.pool_id, h.nodes, items)
             for h, items in by_gang(instances, tags, TAG, owner)}  # fmt: skip
    for key, nodes in (launched or {}).items():
        job, attempt = split_key(key)
        gangs.setdefault((job, attempt), Gang(job, attempt, "", nodes))
    return [gangs[key] for key in sorted(gangs)]
