"""What OCI says about overcast's instances, grouped by gang: one (job, attempt) = N ``launch_instance``.

Everything the OCI backend needs after a crash is on the instances, as freeform tags:

    overcast-backend   which OciBackend launched it (several compartments or regions may share one API)
    overcast-job, overcast-attempt, overcast-pool, overcast-nodes, overcast-rank (set at launch)
    overcast-agent     the node agent runs (STARTED waits for every rank's); overcast-addr its private IP
    overcast-exit      the job's exit code, set by the node agent just before it terminates the instance
    overcast-sigterm   the job got SIGTERM (a stop request) before it exited
    overcast-ended-at  when the job ended (epoch seconds): the gang's end, billed to it, is its last node's
    overcast-stop      the control loop stopped this gang: no events, the agent sends SIGTERM

An instance that is gone (STOPPING, STOPPED, TERMINATING, TERMINATED, or no longer listed) without an
exit tag was lost: a preemption, a host failure, or someone terminated it outside overcast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overcast.backends.base import BackendEvent
from overcast.backends.cloud_gangs import ENDED_AT, GangHead, Wording, by_gang, outcome
from overcast.backends.oci_client import GONE_STATES, HALTED_STATES, LIVE_STATES, TAG

WORDING = Wording(lost="preempted or terminated outside overcast")


def tags(instance: Any) -> dict[str, str]:
    return dict(instance.freeform_tags or {})


def rank_of(instance: Any) -> int:
    try:
        return int(tags(instance).get(TAG + "rank", "0"))
    except ValueError:
        return 0


@dataclass(slots=True)
class Gang(GangHead):
    instances: list[Any] = field(default_factory=list)  # oci.core.models.Instance

    @property
    def live(self) -> list[Any]:
        return [i for i in self.instances if i.lifecycle_state in LIVE_STATES]

    @property
    def halted(self) -> list[Any]:
        return [i for i in self.instances if i.lifecycle_state in HALTED_STATES]

    @property
    def stop_requested(self) -> bool:
        return any(TAG + "stop" in tags(i) for i in self.instances)

    def all_running(self) -> bool:
        """Every rank's instance runs and its agent has come up."""
        up = [i for i in self.instances if i.lifecycle_state == "RUNNING" and TAG + "agent" in tags(i)]
        return len({rank_of(i) for i in up}) == self.nodes

    def agent_missing_since(self) -> float | None:
        """The launch time of a gang whose instances all run but some agent has not come up, else None."""
        running = [i for i in self.instances if i.lifecycle_state == "RUNNING"]
        if len(running) < self.nodes or self.all_running():
            return None
        return max(i.time_created.timestamp() for i in running)

    def terminal_event(self, now: float) -> BackendEvent | None:
        """The gang's outcome, once it has one (``cloud_gangs.outcome``)."""
        ended: list[tuple[int, int, bool]] = []  # (rank, exit code, got SIGTERM)
        lost: list[str] = []
        for inst in sorted(self.instances, key=rank_of):
            t, rank, st = tags(inst), rank_of(inst), inst.lifecycle_state
            if TAG + "exit" in t:
                ended.append((rank, int(t[TAG + "exit"]), t.get(TAG + "sigterm") == "1"))
            elif st in GONE_STATES:
                lost.append(f"{inst.id} (rank {rank}) {st} without an exit code")
        missing = self.nodes - len({rank_of(i) for i in self.instances})
        if missing > 0:  # terminated long ago (OCI lists terminated instances for a while only)
            lost.append(f"{missing} instance(s) no longer listed by OCI")
        stamps = [tags(i).get(TAG + ENDED_AT) for i in self.instances]
        launched = [i.time_created.timestamp() for i in self.instances if i.time_created]
        return outcome(self, ended, lost, now, WORDING, stamps, launched)


def group(instances: list[Any], owner: str) -> list[Gang]:
    """Gangs of the instances tagged with ``owner`` (others are ignored), in (job, attempt) order."""
    gangs = by_gang(instances, tags, TAG, owner)
    return [Gang(h.job_id, h.attempt, h.pool_id, h.nodes, items) for h, items in gangs]
