"""The node agent of an EC2 instance launched by overcast (started by the user-data):

    python -m overcast.backends.aws_agent --region R --job J --attempt A --nodes N -- bash job.sh

1. Asks the instance metadata service (IMDSv2) for its instance id.
2. Finds its gang (instances tagged with the job and attempt): its rank is its ``AmiLaunchIndex`` (one
   ``run_instances`` call per gang numbers them 0..N-1) and the head is rank 0's private IP. A rank
   whose job has already ended (tagged ``overcast:exit``) counts, even terminated. If rank 0 has already
   ended (a job of a second), it stops looking at once: see ``cloud_agent.HeadEnded`` (a failed head:
   exit ``HEAD_FAILED`` without running the job); if the gang was stopped, the job never starts.
3. Runs the job with the OVERCAST_* contract, as the leader of a process group and a child subreaper
   (the node ends when every process of the job has ended).
4. While it runs, watches two things in the metadata service, which cost no EC2 API calls:
   the instance tag ``overcast:stop`` (set by ``AwsBackend.stop``; needs InstanceMetadataTags, which the
   backend enables) and the spot interruption notice (``spot/instance-action``, two minutes before a
   reclaim). Either one sends SIGTERM to the job: it saves a checkpoint and exits.
5. When the job ends, tags its own instance ``overcast:exit=<code>`` (and ``overcast:sigterm=1``) and
   terminates it. The tag is how the backend tells a finished node from a lost one.

The instance needs an instance profile allowing ec2:DescribeInstances, and ec2:CreateTags and
ec2:TerminateInstances on itself. Set ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` to use another metadata
endpoint (botocore reads the same variable for the instance's credentials).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from overcast.backends.aws_gangs import LIVE_STATES, tags
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
GANG_WAIT_SECONDS = 600.0  # how long rank discovery waits for the whole gang to be running


class Metadata:
    """A small IMDSv2 client (token, then GETs)."""

    def __init__(self, endpoint: str | None = None) -> None:
        base = endpoint or os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or IMDS_DEFAULT
        self.base = base.rstrip("/")
        self._token = ""

    def _request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> str:
        req = urllib.request.Request(self.base + path, method=method, headers=headers or {})
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.read().decode()

    def get(self, path: str) -> str | None:
        """The value at latest/meta-data/<path>, None when there is none (404)."""
        if not self._token:
            ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}
            self._token = self._request("/latest/api/token", "PUT", ttl)
        try:
            return self._request(
                f"/latest/meta-data/{path}", headers={"X-aws-ec2-metadata-token": self._token}
            )
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401:  # the token expired: get a new one next time
                self._token = ""
            raise


def find_gang(ec2: object, job: str, attempt: str, nodes: int, me: str) -> tuple[int, str | HeadEnded | None]:
    """(my rank, the head's private IP), once every instance of my ``run_instances`` (my reservation) is
    listed live or has already ended (tagged its exit); or at once (my rank, how rank 0 ended) when rank
    0 has already ended; (my rank, None) when this gang was stopped first (the job never starts)."""
    filters = [  # every state: a rank may have ended (tagged its exit, terminated) before this one looks
        {"Name": "tag:overcast:job", "Values": [job]},
        {"Name": "tag:overcast:attempt", "Values": [attempt]},
    ]
    rank = 0

    def look() -> GangLook:
        nonlocal rank
        seen = GangLook()
        pages = ec2.get_paginator("describe_instances").paginate(Filters=filters)  # type: ignore[attr-defined]
        for gang in [r["Instances"] for page in pages for r in page["Reservations"]]:
            mine = next((i for i in gang if i["InstanceId"] == me), None)
            if mine is None:  # another launch of the same attempt (rolled back): not this gang
                continue
            rank, seen.stopped = mine["AmiLaunchIndex"], "overcast:stop" in tags(mine)
            for inst in gang:
                ip = inst.get("PrivateIpAddress", "")  # a terminated instance no longer has one
                live = inst["State"]["Name"] in LIVE_STATES and bool(ip)
                seen.add(inst["AmiLaunchIndex"], ip, tags(inst), "overcast:", live)
        return seen

    head = wait_for_gang(look, nodes, GANG_WAIT_SECONDS, 1.0, f"{job}/{attempt}")
    return rank, head


def main(argv: list[str]) -> int:
    module = "overcast.backends.aws_agent"
    parsed = parse_args(module, argv, 2.0, [("--region", True), ("--endpoint-url", False)])
    if parsed is None:
        return 2
    args, cmd = parsed

    import boto3

    from overcast.backends.aws_client import RETRIES

    meta = Metadata()
    me = meta.get("instance-id")
    if not me:
        print("overcast-agent: no instance id in the metadata service", file=sys.stderr)
        return 1
    ec2 = boto3.client("ec2", region_name=args.region, endpoint_url=args.endpoint_url, config=RETRIES)

    def start() -> tuple[int, bool]:
        # "the agent runs": the backend reports STARTED only once every rank says so
        ec2.create_tags(Resources=[me], Tags=[{"Key": "overcast:agent", "Value": "up"}])
        rank, head = find_gang(ec2, args.job, args.attempt, args.nodes, me)
        if head is None:
            say("stopped before the job started")
            return STOPPED_BEFORE_START, True

        def should_stop() -> str | None:
            return meta.get("tags/instance/overcast:stop") or meta.get("spot/instance-action")

        return run_rank(cmd, me, rank, args.nodes, head, should_stop, args.poll, args.logs)

    def tag(new: dict[str, str]) -> None:
        ec2.create_tags(Resources=[me], Tags=[{"Key": k, "Value": v} for k, v in new.items()])

    return serve(me, "overcast:", start, tag, lambda: ec2.terminate_instances(InstanceIds=[me]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
