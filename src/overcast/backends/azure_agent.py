"""The node agent of an Azure VM created by overcast (started by the custom data):

    python -m overcast.backends.azure_agent --job J --attempt A --nodes N -- bash job.sh

1. Asks the instance metadata service (IMDS, ``GET /metadata/instance`` with ``Metadata: true``) who it
   is: subscription, resource group, VM name, rank (its ``overcast-rank`` tag) and private IP. It signs
   in with the VM's managed identity (azure-identity's ManagedIdentityCredential, also through IMDS) and
   tags its VM ``overcast-agent=up`` and ``overcast-ip=<private IP>``.
2. Finds its gang (the resource group's VMs tagged with the job and attempt): the head is rank 0's
   ``overcast-ip``. It waits until all N agents are up (a rank whose job has already ended counts: its
   deallocated VM keeps its tags). If rank 0 has already ended (tagged ``overcast-exit``: a job of a
   second), it stops waiting at once: see ``cloud_agent.HeadEnded`` (a failed head: exit
   ``HEAD_FAILED`` without running the job); if the gang was stopped, the job never starts.
3. Runs the job through ``node_agent.run_job`` (a process group, SIGTERM on request).
4. While it runs, watches IMDS, which costs no ARM calls: its own tags (``overcast-stop``, set by
   ``AzureBackend.stop``) and scheduled events (``/metadata/scheduledevents``: a ``Preempt`` event is
   Azure's 30-second spot eviction notice). Either one sends SIGTERM to the job.
5. When the job ends, tags its VM ``overcast-exit=<code>`` (and ``overcast-sigterm=1``) and deallocates
   it: compute billing stops, and the tag stays readable until the backend deletes the VM (ARM would
   forget a deleted VM, tag and all, at once).

``OVERCAST_AZURE_IMDS`` sets another metadata endpoint (``AZURE_POD_IDENTITY_AUTHORITY_HOST`` does the
same for azure-identity's token requests).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from typing import Any

from overcast.backends.cloud_agent import (
    STOPPED_BEFORE_START,
    GangLook,
    HeadEnded,
    parse_args,
    run_rank,
    say,
    serve,
    wait_for_gang,
)

IMDS_DEFAULT = "http://169.254.169.254"
IMDS_VERSION = "2021-02-01"
EVENTS_VERSION = "2020-07-01"
GANG_WAIT_SECONDS = 600.0  # how long rank discovery waits for the whole gang's agents
NOTICE_TYPES = frozenset({"Preempt", "Terminate"})


class Imds:
    """A small client of Azure's instance metadata service."""

    def __init__(self, endpoint: str | None = None) -> None:
        self.base = (endpoint or os.environ.get("OVERCAST_AZURE_IMDS") or IMDS_DEFAULT).rstrip("/")

    def get(self, path: str, version: str) -> Any:
        url = f"{self.base}/metadata/{path}?api-version={version}"
        req = urllib.request.Request(url, headers={"Metadata": "true"})  # IMDS refuses requests without it
        with urllib.request.urlopen(req, timeout=2) as resp:
            return json.loads(resp.read().decode() or "null")

    def instance(self) -> dict[str, Any]:
        return self.get("instance", IMDS_VERSION)

    def my_tags(self) -> dict[str, str]:
        return {t["name"]: t["value"] for t in self.instance()["compute"].get("tagsList", [])}

    def notice(self, vm_name: str) -> str | None:
        """A scheduled Preempt (spot eviction) or Terminate event for this VM, as a reason, or None."""
        for event in self.get("scheduledevents", EVENTS_VERSION).get("Events", []):
            if event.get("EventType") in NOTICE_TYPES and vm_name in event.get("Resources", []):
                return f"scheduled event {event['EventType']} not before {event.get('NotBefore', '?')}"
        return None


def private_ip(instance: dict[str, Any]) -> str:
    try:
        return instance["network"]["interface"][0]["ipv4"]["ipAddress"][0]["privateIpAddress"]
    except (KeyError, IndexError):
        return ""


def find_head(compute: Any, rg: str, name: str, job: str, attempt: str, nodes: int) -> str | HeadEnded | None:
    """Rank 0's private IP, once every rank's agent of the gang has come up (a deallocated VM keeps its
    tags, so a rank that has already ended still counts); how rank 0 ended, at once, when it already has
    (tagged its exit); None when the gang was stopped before that (the job never starts)."""

    def look() -> GangLook:
        seen = GangLook()
        for vm in compute.virtual_machines.list(rg):
            t = vm.tags or {}
            seen.stopped = seen.stopped or (vm.name == name and "overcast-stop" in t)
            if t.get("overcast-job") == job and t.get("overcast-attempt") == attempt:
                ip = t.get("overcast-ip", "")
                seen.add(t.get("overcast-rank", ""), ip, t, "overcast-", "overcast-agent" in t)
        return seen

    return wait_for_gang(look, nodes, GANG_WAIT_SECONDS, 1.0, f"{job}/{attempt}")


def main(argv: list[str]) -> int:
    parsed = parse_args("overcast.backends.azure_agent", argv, 2.0, [("--arm-endpoint", False)])
    if parsed is None:
        return 2
    args, cmd = parsed

    from azure.identity import ManagedIdentityCredential

    from overcast.backends.azure_client import AzureSettings, add_tags, compute_client

    imds = Imds()
    me = imds.instance()["compute"]
    name, rg, sub = me["name"], me["resourceGroupName"], me["subscriptionId"]
    rank = {t["name"]: t["value"] for t in me.get("tagsList", [])}.get("overcast-rank", "0")
    where = AzureSettings(name="node", subscription_id=sub, resource_group=rg, region=me.get("location", ""),
                          vm_sizes=(), image="", subnet_id="", identity_id="", endpoint=args.arm_endpoint,
                          lro_poll_seconds=1.0)  # fmt: skip
    compute = compute_client(where, ManagedIdentityCredential())

    def start() -> tuple[int, bool]:
        # "the agent runs" (the backend reports STARTED once every rank says so) and where it listens
        add_tags(compute, rg, name, {"overcast-agent": "up", "overcast-ip": private_ip(imds.instance())})
        head = find_head(compute, rg, name, args.job, args.attempt, args.nodes)
        if head is None:
            say("stopped before the job started")
            return STOPPED_BEFORE_START, True

        def should_stop() -> str | None:
            return ("stop tag" if "overcast-stop" in imds.my_tags() else None) or imds.notice(name)

        return run_rank(cmd, name, rank, args.nodes, head, should_stop, args.poll, args.logs)

    def tag(tags: dict[str, str]) -> None:
        add_tags(compute, rg, name, tags)

    def deallocate() -> None:  # not delete: the exit tag must outlive the job (see azure_gangs)
        compute.virtual_machines.begin_deallocate(rg, name).result()

    return serve(name, "overcast-", start, tag, deallocate, how="deallocating")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
