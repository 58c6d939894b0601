"""What Nebius says about overcast's instances, grouped by gang: one (job, attempt) = N instances named
``oc-<hash>-<rank>`` (and, for N > 1, the GPU cluster ``oc-<hash>`` they share).

Everything the backend needs after a crash is on the instances, as labels:

    overcast-backend   which NebiusBackend created it (``label_value`` of its owner)
    overcast-job, overcast-attempt, overcast-nodes, overcast-rank (set at creation)
    overcast-agent     the node agent runs (STARTED waits for every rank's)
    overcast-exit      the job's exit code, set by the agent just before it stops its instance
    overcast-sigterm   the job got SIGTERM (a stop request or a preemption) before it exited
    overcast-ended-at  when the job ended (epoch seconds): the gang is billed to its last
    overcast-stop      the control loop stopped this gang: no events, the agent sends SIGTERM

The pool is read from the spec (platform, preset, preemptible), not a label: a pool id has ``/`` in it.
Nebius forgets a deleted instance; a preemptible instance is *stopped* when preempted (its labels stay).
So an instance stopped (or in ERROR) without an exit label, or no longer listed, was lost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from overcast.backends.base import BackendEvent
from overcast.backends.cloud_gangs import ENDED_AT, GangHead, Wording, by_gang, outcome, split_key
from overcast.backends.nebius_client import GONE_STATES, LIVE_STATES, TAG, state_of
from overcast.catalog.pools import pool_id
from overcast.placement.pool import Purchase

WORDING = Wording(lost="preempted, or stopped or deleted outside overcast", sigterm="preemption or stop")


def gang_name(owner: str, job_id: str, attempt: int) -> str:
    """The gang's name: its instances' prefix and its GPU cluster's name."""
    return "oc-" + hashlib.sha256(f"{owner}/{job_id}/{attempt}".encode()).hexdigest()[:16]


def instance_name(owner: str, job_id: str, attempt: int, rank: int) -> str:
    return f"{gang_name(owner, job_id, attempt)}-{rank}"


def labels_of(instance: Any) -> dict[str, str]:
    return dict(instance.metadata.labels) if instance.metadata else {}


def tags(instance: Any, region: str) -> dict[str, str]:
    """The instance's labels, with its pool (from the spec) as ``overcast-pool``."""
    res = instance.spec.resources
    purchase = Purchase.SPOT if instance.spec.HasField("preemptible") else Purchase.ON_DEMAND
    pool = pool_id("nebius", region, None, f"{res.platform}_{res.preset}", purchase)
    return labels_of(instance) | {TAG + "pool": pool}


def rank_of(instance: Any) -> int:
    try:
        return int(labels_of(instance).get(TAG + "rank", "0"))
    except ValueError:
        return 0


def created_at(instance: Any) -> float:
    stamp = instance.metadata.created_at
    return stamp.timestamp() if stamp is not None else 0.0


def private_ip(instance: Any) -> str:
    nics = list(instance.status.network_interfaces) if instance.status else []
    address = nics[0].ip_address.address if nics and nics[0].ip_address else ""
    return str(address).split("/", 1)[0]  # Nebius gives the address with its prefix length


@dataclass(slots=True)
class Gang(GangHead):
    instances: list[Any] = field(default_factory=list)  # nebius.api.nebius.compute.v1.Instance

    @property
    def live(self) -> list[Any]:
        """Instances that may still run the job: not ended (exit label), not stopped or going."""
        return [i for i in self.instances if TAG + "exit" not in labels_of(i) and state_of(i) in LIVE_STATES]

    @property
    def stop_requested(self) -> bool:
        return any(TAG + "stop" in labels_of(i) for i in self.instances)

    @property
    def cluster_ids(self) -> set[str]:
        return {i.spec.gpu_cluster.id for i in self.instances if i.spec.gpu_cluster.id}

    def all_running(self) -> bool:
        """Every rank's instance runs and its agent has come up."""
        up = [i for i in self.instances if state_of(i) == "RUNNING" and TAG + "agent" in labels_of(i)]
        return len({rank_of(i) for i in up}) == self.nodes

    def agent_missing_since(self) -> float | None:
        """The creation time of a gang whose instances all run but some agent has not come up."""
        running = [i for i in self.instances if state_of(i) == "RUNNING"]
        if len({rank_of(i) for i in running}) < self.nodes or self.all_running():
            return None
        return max(created_at(i) for i in running)

    def terminal_event(self, now: float) -> BackendEvent | None:
        """The gang's outcome, once it has one (``cloud_gangs.outcome``)."""
        ended: list[tuple[int, int, bool]] = []  # (rank, exit code, got SIGTERM)
        lost: list[str] = []
        for inst in sorted(self.instances, key=rank_of):
            labels, rank, state = labels_of(inst), rank_of(inst), state_of(inst)
            if TAG + "exit" in labels:
                try:
                    ended.append((rank, int(labels[TAG + "exit"]), labels.get(TAG + "sigterm") == "1"))
                except ValueError:
                    lost.append(f"{inst.metadata.name} (rank {rank}) labelled a bad exit code")
            elif state in GONE_STATES:
                lost.append(f"{inst.metadata.name} (rank {rank}) {state} without an exit code")
        missing = self.nodes - len({rank_of(i) for i in self.instances})
        if missing > 0:  # deleted outside overcast: Nebius forgets it
            lost.append(f"{missing} instance(s) no longer listed by Nebius")
        stamps = [labels_of(i).get(TAG + ENDED_AT) for i in self.instances]
        launched = [created_at(i) for i in self.instances]
        return outcome(self, ended, lost, now, WORDING, stamps, launched)


def group(
    instances: list[Any], owner: str, region: str, launched: dict[str, int] | None = None
) -> list[Gang]:
    """Gangs of ``owner``'s instances (its label value), in (job, attempt) order. ``launched`` (key ->
    nodes) adds the gangs this backend created whose instances are all gone: their loss is reported."""
    from overcast.backends.nebius_client import label_value

    found = by_gang(instances, lambda i: tags(i, region), TAG, label_value(owner))
    gangs = {
        (h.job_id, h.attempt): Gang(h.job_id, h.attempt, h.pool_id, h.nodes, items) for h, items in found
    }
    for key, nodes in (launched or {}).items():
        job, attempt = split_key(key)
        gangs.setdefault((job, attempt), Gang(job, attempt, "", nodes))
    return [gangs[key] for key in sorted(gangs)]
