"""What ARM says about overcast's VMs, grouped by gang: one (job, attempt) = N VMs created together.

Everything the Azure backend needs to know after a crash is on the VMs themselves, as tags (Azure tag
names may not contain ``/``, so they use ``-``):

    overcast-backend   which AzureBackend created it (several subscriptions or regions may share an RG)
    overcast-job, overcast-attempt, overcast-pool, overcast-nodes, overcast-rank
    overcast-agent     the node agent runs (STARTED waits for every rank's); overcast-ip: its private IP
    overcast-exit      the job's exit code, set by the agent just before it deallocates its VM
    overcast-sigterm   the job got SIGTERM (a stop request or a Preempt event) before it exited
    overcast-ended-at  when the job ended (epoch seconds): the gang's end, billed to it, is its last VM's
    overcast-stop      the control loop stopped this gang: no events, the agent sends SIGTERM

Unlike EC2, ARM forgets a deleted VM at once (a spot eviction with policy Delete, or someone deleting it):
a VM of the gang that is no longer listed, or listed as ``Deleting`` or ``Failed`` without an exit tag,
was lost. That is why the agent deallocates its VM instead of deleting it: the exit tag must outlive the
job until the backend has read it (the backend deletes the VMs once the outcome is delivered). A VM
stopped or deallocated without an exit tag (in the portal, by Azure) was lost too: ARM's VM list shows no
power state, so the backend reads it from a status-only list (``power``: VM id -> "running", ...).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from overcast.backends.base import BackendEvent
from overcast.backends.cloud_gangs import ENDED_AT, GangHead, Wording, by_gang, outcome, split_key

GONE_STATES = frozenset({"Deleting", "Failed"})
HALTED_POWER = frozenset({"stopping", "stopped", "deallocating", "deallocated"})  # runs nothing
WORDING = Wording(lost="spot eviction or deleted outside overcast", sigterm="Preempt event or stop")


def tags(vm: Any) -> dict[str, str]:
    return dict(vm.tags or {})


def provisioning(vm: Any) -> str:
    return str(vm.properties.provisioning_state or "") if vm.properties else ""


def rank(vm: Any) -> int:
    return int(tags(vm).get("overcast-rank", "0"))


def power_state(vm: Any) -> str:
    """The power state in a VM's instance view ("running", "deallocated", ...), "" when it has none."""
    view = vm.properties.instance_view if vm.properties else None
    codes = [str(s.code or "") for s in (view.statuses or [])] if view else []
    return next((c.split("/", 1)[1] for c in codes if c.startswith("PowerState/")), "")


@dataclass(slots=True)
class Gang(GangHead):
    vms: list[Any] = field(default_factory=list)
    power: dict[str, str] = field(default_factory=dict)  # VM id (lower case) -> power state; may be empty

    def halted(self, vm: Any) -> str:
        """The power state of a VM stopped or deallocated without an exit tag (outside overcast), else "".
        A VM absent from the power list (read before the VM list: created since, or a 403) is unknown,
        hence live: only a listed halted state makes it lost."""
        state = self.power.get(str(vm.id).lower(), "")
        return state if state in HALTED_POWER and "overcast-exit" not in tags(vm) else ""

    @property
    def live(self) -> list[Any]:
        """VMs that may still run the job: not ended (exit tag), not being deleted, not failed, not
        stopped or deallocated."""
        return [
            v
            for v in self.vms
            if "overcast-exit" not in tags(v) and provisioning(v) not in GONE_STATES and not self.halted(v)
        ]

    @property
    def stop_requested(self) -> bool:
        return any("overcast-stop" in tags(v) for v in self.vms)

    def all_running(self) -> bool:
        """Every rank's VM is provisioned and its agent has come up."""
        up = [v for v in self.vms if provisioning(v) == "Succeeded" and "overcast-agent" in tags(v)]
        return len(up) == self.nodes

    def agent_missing_since(self) -> float | None:
        """The creation time of a gang whose VMs are all provisioned but some agent has not come up."""
        ready = [v for v in self.vms if provisioning(v) == "Succeeded"]
        if len(ready) < self.nodes or self.all_running():
            return None
        times = [v.properties.time_created for v in ready if v.properties.time_created]
        return max(times).timestamp() if times else dt.datetime.now(dt.UTC).timestamp()

    def terminal_event(self, now: float) -> BackendEvent | None:
        """The gang's outcome, once it has one (``cloud_gangs.outcome``)."""
        ended: list[tuple[int, int, bool]] = []  # (rank, exit code, got SIGTERM)
        lost: list[str] = []
        for vm in sorted(self.vms, key=rank):
            t = tags(vm)
            if "overcast-exit" in t:
                ended.append((rank(vm), int(t["overcast-exit"]), t.get("overcast-sigterm") == "1"))
            elif provisioning(vm) in GONE_STATES or self.halted(vm):
                state = self.halted(vm) or provisioning(vm)
                lost.append(f"{vm.name} (rank {rank(vm)}) {state} without an exit code")
        missing = self.nodes - len(self.vms)
        if missing > 0:  # evicted (spot, policy Delete) or deleted outside overcast: ARM forgets it
            lost.append(f"{missing} VM(s) no longer listed by Azure")
        stamps = [tags(vm).get("overcast-" + ENDED_AT) for vm in self.vms]
        made = [vm.properties.time_created for vm in self.vms if vm.properties]
        launched = [t.timestamp() for t in made if t]
        return outcome(self, ended, lost, now, WORDING, stamps, launched)


def group(
    vms: list[Any], owner: str, launched: dict[str, int] | None = None, power: dict[str, str] | None = None
) -> list[Gang]:
    """Gangs of ``owner``'s VMs, in (job, attempt) order. ``launched`` (key -> nodes) adds the gangs this
    backend created whose VMs are all gone: ARM no longer lists them, but their loss must be reported.
    ``power``: VM id (lower case) -> power state."""
    gangs = {(h.job_id, h.attempt): Gang(h.job_id, h.attempt, h.pool_id, h.nodes, items, power or {})
             for h, items in by_gang(vms, tags, "overcast-", owner)}  # fmt: skip
    for gang_key, nodes in (launched or {}).items():
        job, attempt = split_key(gang_key)
        gangs.setdefault((job, attempt), Gang(job, attempt, "", nodes))
    return [gangs[key] for key in sorted(gangs)]
