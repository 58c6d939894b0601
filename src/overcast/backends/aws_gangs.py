"""What EC2 says about overcast's instances, grouped by gang: one (job, attempt) = one ``run_instances``.

Everything the AWS backend needs to know after a crash is on the instances themselves, as tags:

    overcast:backend   which AwsBackend launched it (several accounts or regions may share one API)
    overcast:job, overcast:attempt, overcast:pool, overcast:nodes, overcast:rank
    overcast:agent     the node agent runs (STARTED waits for every rank's)
    overcast:exit      the job's exit code, set by the node agent just before it terminates the instance
    overcast:sigterm   the job got SIGTERM (a stop request or a spot notice) before it exited
    overcast:stop      the control loop stopped this gang: no events, the agent sends SIGTERM

An instance that is gone (shutting-down, terminated, stopped, or no longer listed) without an exit tag
was lost: a spot reclaim, a hardware failure, or someone terminated it outside overcast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from overcast.backends.base import BackendEvent, EventKind

LIVE_STATES = frozenset({"pending", "running"})
GONE_STATES = frozenset({"shutting-down", "terminated", "stopping", "stopped"})


def tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


@dataclass(slots=True)
class Gang:
    job_id: str
    attempt: int
    pool_id: str
    nodes: int
    instances: list[dict[str, Any]]

    @property
    def key(self) -> str:
        return f"{self.job_id}--{self.attempt}"

    def state(self, instance: dict[str, Any]) -> str:
        return instance["State"]["Name"]

    @property
    def live(self) -> list[dict[str, Any]]:
        return [i for i in self.instances if self.state(i) in LIVE_STATES]

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
        """The gang's outcome, once it has one: lost > preempted by notice > failed > all succeeded."""
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
        job, attempt = self.job_id, self.attempt
        if lost:
            why = f"node lost (spot reclaim or terminated outside overcast): {lost[0]}"
            return BackendEvent(EventKind.PREEMPTED, job, attempt, now, why)
        for rank, code, sigterm in ended:
            if code != 0 and sigterm:
                why = f"node {rank} got SIGTERM (spot notice or stop), exit {code}"
                return BackendEvent(EventKind.PREEMPTED, job, attempt, now, why)
        for rank, code, _ in ended:
            if code != 0:
                return BackendEvent(
                    EventKind.FAILED, job, attempt, now, f"node {rank} exited with {code}", code
                )
        if len(ended) == self.nodes:
            return BackendEvent(EventKind.SUCCEEDED, job, attempt, now, "", 0)
        return None


def group(instances: list[dict[str, Any]]) -> list[Gang]:
    """Gangs of the instances (those without overcast's tags are ignored), in (job, attempt) order."""
    gangs: dict[tuple[str, int], Gang] = {}
    for inst in instances:
        t = tags(inst)
        try:
            key = (t["overcast:job"], int(t["overcast:attempt"]))
            nodes = int(t.get("overcast:nodes", "1"))
        except (KeyError, ValueError):
            continue
        gang = gangs.setdefault(key, Gang(key[0], key[1], t.get("overcast:pool", ""), nodes, []))
        gang.instances.append(inst)
    return [gangs[key] for key in sorted(gangs)]
