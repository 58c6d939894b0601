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
import hashlib
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from overcast.backends.aws_client import AwsError, AwsSettings, ReplyLost, call, ec2_client, translate
from overcast.backends.aws_gangs import LIVE_STATES, Gang, group
from overcast.backends.aws_userdata import user_data
from overcast.backends.base import Allocation, CapacityError, LaunchRequest, ProviderDown
from overcast.backends.cloud_backend import CloudBackend
from overcast.catalog.offer import Offer
from overcast.placement.pool import Pool, Purchase

NO_AGENT = "the node agent never started (does the AMI have python3 and overcast? see the console output)"


class AwsBackend(CloudBackend):
    """Backend protocol for one AWS account + region (``aws:<name>``)."""

    provider = "aws"
    no_agent = NO_AGENT
    state_lists = ("started", "reported", "stopped", "cleaned")  # cleaned: placement group deleted

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
        self.ec2 = client if client is not None else ec2_client(settings)
        self._zone_names: dict[str, str] | None = None
        self._setup(settings, settings.instance_types, home, offers)

    def _in_account(self, pools: list[Pool]) -> list[Pool]:
        zones = self._zones()
        return [p for p in pools if p.zone in zones]  # zones this account has (no Local Zones)

    # -- launch -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Allocation:
        pool = self._own_pool(request)
        with self._lock:
            existing = self._gang(request.job_id, request.attempt)
            if existing is not None and existing.live:  # the same attempt again: launching is idempotent
                return self._allocation(existing)
            az = self._zone_name(pool.zone)
            group_name = self._placement_group(request) if request.num_nodes > 1 else None
            try:
                params = self._run_params(request, pool, az, group_name)
                instances = call(self.ec2, "run_instances", **params)["Instances"]
            except ReplyLost as lost:
                instances = self._after_lost_reply(request, group_name, lost)
            except Exception:  # nothing was launched: the group would be left empty
                self._delete_placement_group(group_name)
                raise
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

    def _after_lost_reply(
        self, request: LaunchRequest, group_name: str | None, lost: ReplyLost
    ) -> list[dict[str, Any]]:
        """run_instances' reply was lost: EC2 may have launched the gang. Its tags tell: every node there
        is the launch (adopted, not failed); else end what there is and raise (the loop requeues the job;
        anything EC2 lists later is a stale attempt, which the poll and reconcile stop)."""
        gang = self._gang(request.job_id, request.attempt)
        if gang is not None and len(gang.live) == request.num_nodes:
            return gang.live
        if gang is not None:
            self._end(gang)
        self._delete_placement_group(group_name)
        raise lost

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

    # stop() tags the gang ``overcast:stop``: the agents see it in the metadata service and SIGTERM the
    # job; at the end of the grace period what is left is terminated.

    def _ask_stop(self, gang: Gang) -> None:
        ids = [i["InstanceId"] for i in gang.live]
        call(self.ec2, "create_tags", Resources=ids, Tags=[{"Key": "overcast:stop", "Value": "1"}])

    def _end(self, gang: Gang) -> None:
        left = gang.live + gang.halted  # a stopped instance bills for its volumes: terminate it too
        if left:
            call(self.ec2, "terminate_instances", InstanceIds=[i["InstanceId"] for i in left])

    def _clean_up(self, gang: Gang, state: dict[str, Any]) -> None:
        """Terminate the gang's instances stopped outside overcast (each poll, until they are: the gang is
        listed while they exist), then delete its placement group once (EC2 refuses while an instance is
        in it)."""
        if gang.halted:
            with contextlib.suppress(AwsError, ProviderDown):  # the next poll tries again
                call(self.ec2, "terminate_instances", InstanceIds=[i["InstanceId"] for i in gang.halted])
        elif not gang.live and gang.key not in state["cleaned"]:
            self._delete_placement_group(self._group_of(gang))
            state["cleaned"].append(gang.key)

    # -- internals ----------------------------------------------------------------------------------

    def _gangs(self, state: dict[str, Any] | None = None) -> list[Gang]:
        return self._find(None)

    def _find(self, extra: list[dict] | None) -> list[Gang]:
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
        found = self._find(extra)
        return found[0] if found else None

    def _group_of(self, gang: Gang) -> str | None:
        return f"overcast-{gang.job_id}-{gang.attempt}" if gang.nodes > 1 else None

    def _allocation(self, gang: Gang) -> Allocation:
        ids = ",".join(i["InstanceId"] for i in gang.instances if i["State"]["Name"] in LIVE_STATES)
        return Allocation(gang.job_id, gang.attempt, self.name, handle=ids)


def _client_token(backend: str, job_id: str, attempt: int) -> str:
    """At most 64 ASCII characters, unique per (backend, job, attempt)."""
    return hashlib.sha256(f"{backend}/{job_id}/{attempt}".encode()).hexdigest()[:64]
