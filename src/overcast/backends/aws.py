"""The AWS EC2 backend: each gang is one ``run_instances(MinCount=N, MaxCount=N)`` through boto3.

- **Pools.** The bundled catalog's AWS offers for the configured region and instance types: one pool per
  (instance type, availability zone, on-demand | spot), with the ids the catalog uses, ``max_nodes`` as
  capacity and our running instances as use.
- **Launch.** All N instances or none (EC2's MinCount), in one AZ, in a cluster placement group when
  N > 1, as spot through InstanceMarketOptions for spot pools. The user-data starts the node agent
  (``aws_agent``), which finds its rank and the head address and runs the job.
- **The end of a job** is written on the instance by the agent (tag ``overcast:exit``) before it
  terminates its own instance. An instance gone without that tag was lost (see ``aws_gangs``).
- **Stop.** Tag the gang ``overcast:stop``; the agent reads it from the metadata service and sends the
  job SIGTERM. Wait up to the grace period for the nodes to end by themselves, then terminate the rest.
- **Crash safety.** What runs is read from EC2 by tag (``active()``), so a restarted loop reconciles.
  Only the acknowledgement of events is kept on local disk (``$OVERCAST_HOME/aws/<name>/acked.json``);
  losing it replays the last outcomes, which the loop ignores as stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from overcast.backends.aws_client import AwsError, AwsSettings, call, ec2_client, translate
from overcast.backends.aws_gangs import LIVE_STATES, Gang, group
from overcast.backends.aws_userdata import user_data
from overcast.backends.base import (
    Allocation,
    BackendEvent,
    CapacityError,
    EventKind,
    LaunchRequest,
    ProviderDown,
)
from overcast.backends.local_runner import write_json_atomic
from overcast.catalog.offer import Offer
from overcast.catalog.pools import offer_pools
from overcast.placement.pool import Health, Pool, Purchase
from overcast.store.engine import overcast_home

NO_AGENT = "the node agent never started (does the AMI have python3 and overcast? see the console output)"
STOP_POLL_SECONDS = 0.2  # how often stop() looks whether the gang has ended within its grace period


class AwsBackend:
    """Backend protocol for one AWS account + region (``aws:<name>``)."""

    def __init__(
        self,
        settings: AwsSettings,
        *,
        home: Path | None = None,
        offers: list[Offer] | None = None,
        client: Any = None,
    ) -> None:
        if settings.max_nodes < 1 or not settings.instance_types:
            raise ValueError(f"aws {settings.name!r}: needs instance_types and max_nodes >= 1")
        self.settings = settings
        self.name = f"aws:{settings.name}"
        self.ec2 = client if client is not None else ec2_client(settings)
        if offers is None:
            from overcast.catalog.load import load_offers

            offers = load_offers()
        self._pools = {p.id: p for p in self._catalog_pools(offers)}
        self.dir = (home or overcast_home()) / "aws" / settings.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._unacked: list[tuple[str, str]] = []  # (what, gang key) delivered by the last poll
        self._zone_names: dict[str, str] | None = None

    # -- pools --------------------------------------------------------------------------------------

    def _catalog_pools(self, offers: list[Offer]) -> list[Pool]:
        s = self.settings
        mine = [
            o
            for o in offers
            if o.provider == "aws" and o.region == s.region and o.instance_type in s.instance_types
        ]
        missing = sorted(set(s.instance_types) - {o.instance_type for o in mine})
        if missing:
            raise ValueError(f"aws {s.name!r}: no catalog offer for {', '.join(missing)} in {s.region}")
        pools = [p for p in offer_pools(mine) if p.purchase.value in s.purchases]
        for pool in pools:
            pool.capacity_nodes = s.max_nodes
            pool.backend = self.name
            pool.labels = {"aws": "true"}
        return pools

    def pools(self) -> list[Pool]:
        try:
            used: dict[str, int] = {}
            for gang in self._gangs():
                used[gang.pool_id] = used.get(gang.pool_id, 0) + len(gang.live)
            health = Health.OK
        except ProviderDown:
            used, health = {}, Health.DOWN
        cap = self.settings.max_nodes
        zones = self._zones() if health is Health.OK else {}
        return [
            dataclasses.replace(
                p, used_nodes=min(used.get(p.id, 0), cap), health=health, labels=dict(p.labels)
            )
            for p in self._pools.values()
            if health is Health.DOWN or p.zone in zones  # zones this account has (no Local Zones)
        ]

    # -- launch -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Allocation:
        pool = self._pools.get(request.pool.id)
        if pool is None:
            raise ValueError(f"pool {request.pool.id} does not belong to backend {self.name}")
        with self._lock:
            existing = self._gang(request.job_id, request.attempt)
            if existing is not None and existing.live:  # the same attempt again: launching is idempotent
                return self._allocation(existing)
            az = self._zone_name(pool.zone)
            group_name = self._placement_group(request) if request.num_nodes > 1 else None
            try:
                reply = call(self.ec2, "run_instances", **self._run_params(request, pool, az, group_name))
            except Exception:  # nothing was launched: the group would be left empty
                self._delete_placement_group(group_name)
                raise
            instances = reply["Instances"]
            ids = [i["InstanceId"] for i in instances]
            try:
                if len(instances) != request.num_nodes:  # MinCount makes this impossible; be sure anyway
                    raise CapacityError(f"EC2 gave {len(instances)} of {request.num_nodes} instances")
                for (
                    inst
                ) in instances:  # the rank, for people reading the console (the agent does not need it)
                    rank = {"Key": "overcast:rank", "Value": str(inst.get("AmiLaunchIndex", 0))}
                    call(self.ec2, "create_tags", Resources=[inst["InstanceId"]], Tags=[rank])
            except Exception:
                call(self.ec2, "terminate_instances", InstanceIds=ids)  # all nodes or none
                raise
            return Allocation(request.job_id, request.attempt, self.name, handle=",".join(ids))

    def _run_params(self, request: LaunchRequest, pool: Pool, az: str, group_name: str | None) -> dict:
        s = self.settings
        tags = {
            "Name": f"overcast-{request.job_id}-{request.attempt}",
            "overcast:backend": self.settings.owner,
            "overcast:job": request.job_id,
            "overcast:attempt": str(request.attempt),
            "overcast:pool": pool.id,
            "overcast:nodes": str(request.num_nodes),
        }
        placement: dict[str, str] = {"AvailabilityZone": az}
        if group_name:
            placement["GroupName"] = group_name
        params: dict[str, Any] = {
            "ImageId": s.image_id,
            "InstanceType": pool.instance_type,
            "MinCount": request.num_nodes,
            "MaxCount": request.num_nodes,
            "UserData": user_data(s, request),
            "Placement": placement,
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
            # the node agent ends by terminating its instance; a plain OS shutdown terminates it too
            "InstanceInitiatedShutdownBehavior": "terminate",
            # IMDSv2 only; tags in the metadata service let the agent see a stop request for free
            "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
            # EC2's idempotency key: a retried call (botocore, or a loop replaying its apply) launches once
            "ClientToken": _client_token(self.settings.owner, request.job_id, request.attempt),
        }
        if pool.purchase is Purchase.SPOT:
            spot = {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot}
        subnets = dict(s.subnet_ids)
        if az in subnets:
            params["SubnetId"] = subnets[az]
        if s.security_group_ids:
            params["SecurityGroupIds"] = list(s.security_group_ids)
        if s.iam_instance_profile:
            params["IamInstanceProfile"] = {"Name": s.iam_instance_profile}
        if s.key_name:
            params["KeyName"] = s.key_name
        return params

    def _zone_name(self, zone_id: str | None) -> str:
        """The catalog names AZs by id (use1-az1, the same in every account); run_instances wants the
        account's AZ name (us-east-1b), so map one to the other once."""
        zones = self._zones()
        if zone_id not in zones:
            raise CapacityError(f"zone {zone_id} is not available to this account in {self.settings.region}")
        return zones[zone_id]

    def _zones(self) -> dict[str, str]:
        """Zone id -> AZ name of the zones this account can use (Local Zones need an opt-in)."""
        if self._zone_names is None:
            found = call(self.ec2, "describe_availability_zones")["AvailabilityZones"]
            usable = [z for z in found if z.get("State", "available") == "available"]
            self._zone_names = {z["ZoneId"]: z["ZoneName"] for z in usable}
        return self._zone_names

    def _placement_group(self, request: LaunchRequest) -> str:
        name = f"overcast-{request.job_id}-{request.attempt}"
        try:
            call(self.ec2, "create_placement_group", GroupName=name, Strategy="cluster")
        except AwsError as exc:
            if exc.code != "InvalidPlacementGroup.Duplicate":
                raise
        return name

    def _delete_placement_group(self, name: str | None) -> None:
        if name is None:
            return
        # still in use (EC2 refuses) or gone already: the next poll after the gang's end tries again
        with contextlib.suppress(AwsError, ProviderDown):
            call(self.ec2, "delete_placement_group", GroupName=name)

    # -- stop, poll, active -------------------------------------------------------------------------

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        """Ask the agents to SIGTERM the job (tag ``overcast:stop``), wait up to the grace period for the
        nodes to end and terminate themselves, then terminate what is left."""
        with self._lock:  # only the state file: polls and other stops go on while this one waits
            state = self._state()
            key = f"{job_id}--{attempt}"
            if key not in state["stopped"]:
                state["stopped"].append(key)
                self._save(state)
        gang = self._gang(job_id, attempt)
        if gang is None or not gang.live:
            return
        ids = [i["InstanceId"] for i in gang.live]
        if grace_seconds > 0:
            call(self.ec2, "create_tags", Resources=ids, Tags=[{"Key": "overcast:stop", "Value": "1"}])
            deadline = time.monotonic() + grace_seconds
            while time.monotonic() < deadline:
                time.sleep(STOP_POLL_SECONDS)
                gang = self._gang(job_id, attempt)
                if gang is None or not gang.live:
                    return
            ids = [i["InstanceId"] for i in gang.live]
        call(self.ec2, "terminate_instances", InstanceIds=ids)

    def poll(self) -> list[BackendEvent]:
        with self._lock:
            state = self._state()
            for what, key in self._unacked:  # the loop handled last poll's events: acknowledge them
                if key not in state[what]:
                    state[what].append(key)
            self._unacked = []
            gangs = self._gangs()
            events: list[BackendEvent] = []
            now = time.time()
            for gang in gangs:
                if gang.key in state["stopped"] or gang.key in state["reported"] or gang.stop_requested:
                    if not gang.live and gang.key not in state["cleaned"]:
                        self._delete_placement_group(self._group_of(gang))
                        state["cleaned"].append(gang.key)
                    continue
                event = gang.terminal_event(now)
                if event is not None:
                    events.append(event)
                    self._unacked.append(("reported", gang.key))
                elif gang.all_running() and gang.key not in state["started"]:
                    events.append(BackendEvent(EventKind.STARTED, gang.job_id, gang.attempt, now))
                    self._unacked.append(("started", gang.key))
                elif self._agent_missing(gang, now):
                    # a broken AMI or user-data: without an agent nothing would ever end these instances
                    events.append(BackendEvent(EventKind.FAILED, gang.job_id, gang.attempt, now, NO_AGENT))
                    self._unacked.append(("reported", gang.key))
            visible = {gang.key for gang in gangs}  # EC2 forgets terminated instances after about an hour
            for what in state:
                state[what] = [key for key in state[what] if key in visible]
            self._save(state)
            return events

    def active(self) -> list[tuple[str, int]]:
        """Gangs with a live instance, and ended ones whose outcome has not been delivered yet."""
        with self._lock:
            state = self._state()
            done = set(state["stopped"]) | set(state["reported"])
            return [
                (gang.job_id, gang.attempt)
                for gang in self._gangs()
                if gang.live or not (gang.key in done or gang.stop_requested)
            ]

    def redeliver(self) -> None:
        """The caller could not handle the last poll's events: the next poll reports them again."""
        with self._lock:
            self._unacked = []

    # -- internals ----------------------------------------------------------------------------------

    def _gangs(self, extra: list[dict] | None = None) -> list[Gang]:
        filters = [{"Name": "tag:overcast:backend", "Values": [self.settings.owner]}, *(extra or [])]
        try:
            pages = list(self.ec2.get_paginator("describe_instances").paginate(Filters=filters))
        except (ClientError, BotoCoreError) as exc:
            raise translate("describe_instances", exc) from exc
        return group([i for page in pages for r in page["Reservations"] for i in r["Instances"]])

    def _gang(self, job_id: str, attempt: int) -> Gang | None:
        extra = [
            {"Name": "tag:overcast:job", "Values": [job_id]},
            {"Name": "tag:overcast:attempt", "Values": [str(attempt)]},
        ]
        found = self._gangs(extra)
        return found[0] if found else None

    def _agent_missing(self, gang: Gang, now: float) -> bool:
        since = gang.agent_missing_since()
        return since is not None and now - since > self.settings.agent_timeout_seconds

    def _group_of(self, gang: Gang) -> str | None:
        return f"overcast-{gang.job_id}-{gang.attempt}" if gang.nodes > 1 else None

    def _allocation(self, gang: Gang) -> Allocation:
        ids = ",".join(i["InstanceId"] for i in gang.instances if i["State"]["Name"] in LIVE_STATES)
        return Allocation(gang.job_id, gang.attempt, self.name, handle=ids)

    def _state(self) -> dict[str, list[str]]:
        try:
            found = json.loads((self.dir / "acked.json").read_text())
        except (OSError, ValueError):
            found = {}
        return {what: list(found.get(what, [])) for what in ("started", "reported", "stopped", "cleaned")}

    def _save(self, state: dict[str, list[str]]) -> None:
        write_json_atomic(self.dir / "acked.json", state)


def _client_token(backend: str, job_id: str, attempt: int) -> str:
    """At most 64 ASCII characters, unique per (backend, job, attempt)."""
    return hashlib.sha256(f"{backend}/{job_id}/{attempt}".encode()).hexdigest()[:64]
