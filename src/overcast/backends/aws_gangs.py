"""What EC2 says about overcast's instances, grouped by gang: one (job, attempt) = one ``run_instances``.

Everything the AWS backend needs to know after a crash is on the instances themselves, as tags:

    overcast:backend   which AwsBackend launched it (several accounts or regions may share one API)
    overcast:job, overcast:attempt, overcast:pool, overcast:nodes, overcast:rank
    overcast:agent     the node agent runs (STARTED waits for every rank's)
    overcast:exit      the job's exit code, set by the node agent just before it terminates the instance
    overcast:sigterm   the job got SIGTERM (a stop request or a spot notice) before it exited
    overcast:ended-at  when the job ended (epoch seconds): the gang's end, billed to it, is its last node's
    overcast:stop      the control loop stopped this gang: no events, the agent sends SIGTERM

An instance that is gone (shutting-down, terminated, stopped, or no longer listed) without an exit tag
was lost: a spot reclaim, a hardware failure, or someone terminated it outside overcast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overcast.backends.base import BackendEvent
from overcast.backends.cloud_gangs import ENDED_AT, GangHead, Wording, by_gang, outcome

LIVE_STATES = frozenset({"pending", "running"})
GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})
# stopped outside overcast (the console, a host retirement): it runs nothing, but its EBS volumes bill and
# it may be started again, so ending a gang terminates these too
HALTED_STATES = frozenset({"stopping", "stopped"})
WORDING = Wording(lost="spot reclaim or terminated outside overcast", sigterm="spot notice or stop")


def tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


@dataclass(slots=True)
class Gang(GangHead):
    instances: list[dict[str, Any]] = field(default_factory=list)

    def state(self, instance: dict[str, Any]) -> str:
        return instance["State"]["Name"]

    @property
    def live(self) -> list[dict[str, Any]]:
        return [i for i in self.instances if self.state(i) in LIVE_STATES]

    @property
    def halted(self) -> list[dict[str, Any]]:
        return [i for i in self.instances if self.state(i) in HALTED_STATES]

    @property
    def stop_requested(self) -> bool:
        return any("overcast:stop" in tags(i) for i in self.instances)

    def all_running(self) -> bool:
        """Every rank's instance runs and its agent has come up."""
        up = [i for i in self.instances if self.state(i) == "running" and "overcast:agent" in tags(i)]
        return len(up) == self.nodes

    def agent_missing_since(self) -> float | None:
        """The launch time of a gang whose instances all run but some agent has not come up, else None."""
        running = [i for i in self.instances if self.state(i) == "running"]
        if len(running) < self.nodes or self.all_running():
            return None
        return max(i["LaunchTime"].timestamp() for i in running)

    def terminal_event(self, now: float) -> BackendEvent | None:
        """The gang's outcome, once it has one (``cloud_gangs.outcome``)."""
        ended: list[tuple[int, int, bool]] = []  # (rank, exit code, got SIGTERM)
        lost: list[str] = []
        for inst in sorted(self.instances, key=lambda i: i.get("AmiLaunchIndex", 0)):
            t, rank = tags(inst), inst.get("AmiLaunchIndex", 0)
            if "overcast:exit" in t:
                ended.append((rank, int(t["overcast:exit"]), t.get("overcast:sigterm") == "1"))
            elif self.state(inst) in GONE_STATES:
                reason = (inst.get("StateReason") or {}).get("Message") or inst.get("StateTransitionReason")
                lost.append(f"{inst['InstanceId']} (rank {rank}) {self.state(inst)} without an exit code"
                            + (f": {reason}" if reason else ""))  # fmt: skip
        missing = self.nodes - len(self.instances)  # terminated long ago: EC2 no longer lists it
        if missing > 0:
            lost.append(f"{missing} instance(s) no longer listed by EC2")
        stamps = [tags(i).get("overcast:" + ENDED_AT) for i in self.instances]
        launched = [i["LaunchTime"].timestamp() for i in self.instances if i.get("LaunchTime")]
        return outcome(self, ended, lost, now, WORDING, stamps, launched)


def group(instances: list[dict[str, Any]]) -> list[Gang]:
    """Gangs of the instances (those without overcast's tags are ignored), in (job, attempt) order."""
    gangs = by_gang(instances, tags, "overcast:")
    return [Gang(h.job_id, h.attempt, h.pool_id, h.nodes, items) for h, items in gangs]
