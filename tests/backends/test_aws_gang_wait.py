"""The gang wait the other way round from tests/backends/test_cloud_head_ended.py: rank 0 is the slow one,
and by the time it looks for its gang, rank 1 has run a job of a moment, tagged its exit and terminated
its instance. Rank 0 must count that rank as there (it ended; it did not vanish) and run its own part at
once, instead of waiting out GANG_WAIT_SECONDS (10-15 minutes of billed, idle nodes) for a live rank 1.

Against moto with the real agent (tests/backends/aws_vm.py), rank 0 booted 3 s late: on EC2 a rank waits
only for every instance of its ``run_instances`` to be listed live, so rank 1 has ended by then.
``check_late_head`` is shared with test_gcp_gang_wait and test_azure_gang_wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from overcast.backends import aws_agent
from overcast.backends.aws import AwsBackend
from overcast.backends.base import EventKind, LaunchRequest
from tests.backends import test_aws
from tests.backends.aws_vm import VmEmulator
from tests.backends.cloud_checks import Gang, agent_tag, ec2_gang, wait_events, wait_exited
from tests.backends.test_cloud_head_ended import JOB, WITHIN, late
from tests.fixtures.moto import MotoEC2, moto_ec2, moto_server  # noqa: F401


class LateHeadEc2(VmEmulator):
    """Rank 0 (launch index 0) boots LATE seconds after rank 1."""

    def _user_data(self, vm: str) -> str | None:
        reply = self.ec2.describe_instances(InstanceIds=[vm])
        (inst,) = [i for r in reply["Reservations"] for i in r["Instances"]]
        found = super()._user_data(vm)
        return late(found) if inst["AmiLaunchIndex"] == 0 else found


def check_late_head(
    backend: Any, gang: Gang, console: Callable[[str], str], code: int, launched: float
) -> None:
    """Rank 1 ran its part and ended first; rank 0, late, still ran the job (exit ``code``), within
    seconds; the gang's outcome is rank 0's."""
    wait_exited(gang, console, WITHIN)  # old agents: rank 0 still waits for a live rank 1 here
    took = time.monotonic() - launched
    by_rank = {int(agent_tag(t, "rank") or vm[-1]): (vm, t) for vm, t in gang().items()}
    (vm0, tags0), (vm1, tags1) = by_rank[0], by_rank[1]
    assert agent_tag(tags1, "exit") == "0" and "ran 1" in console(vm1), console(vm1)
    assert agent_tag(tags0, "exit") == str(code), console(vm0)
    assert "had already ended" not in console(vm0)  # rank 0 is the head: it ran its own part
    wanted = {EventKind.SUCCEEDED} if code == 0 else {EventKind.FAILED}
    (event,) = wait_events(backend, lambda events: {e.kind for e in events} >= wanted, timeout=10)
    assert event.kind in wanted and event.exit_code == code
    assert took < WITHIN


def test_aws_a_late_rank_0_counts_a_rank_whose_quick_job_had_already_ended(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
) -> None:
    vms = LateHeadEc2(moto_ec2, tmp_path / "vms").start()
    try:
        backend = AwsBackend(test_aws.settings(moto_ec2), home=tmp_path)
        pool = test_aws.pool_of(backend, "use1-az2", test_aws.Purchase.ON_DEMAND)
        launched = time.monotonic()
        backend.launch(LaunchRequest("h", 1, pool, 2, test_aws.gpu_job("h", JOB.format(code=0))))
        check_late_head(backend, ec2_gang(vms, "h"), vms.console, 0, launched)
    finally:
        vms.close()


def gang_of_two(moto: MotoEC2) -> tuple[Any, dict[int, str]]:
    """A client and one ``run_instances`` of 2 tagged as gang q/1: launch index -> instance id."""
    ec2 = moto.client()
    tags = [{"Key": "overcast:job", "Value": "q"}, {"Key": "overcast:attempt", "Value": "1"}]
    reply = ec2.run_instances(ImageId=moto.image_id(), MinCount=2, MaxCount=2, InstanceType=test_aws.P5,
                              TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])  # fmt: skip
    return ec2, {i["AmiLaunchIndex"]: i["InstanceId"] for i in reply["Instances"]}


@pytest.mark.parametrize("state", ["shutting-down", "terminated"])
def test_aws_find_gang_counts_an_ended_rank_whatever_its_instance_became(
    moto_ec2: MotoEC2,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    state: str,
) -> None:
    # one look, straight through the SDK: rank 1 tagged its exit and its instance is going or gone
    # (EC2 drops a terminated instance's private IP); rank 0 has its gang all the same
    ec2, ids = gang_of_two(moto_ec2)
    ec2.create_tags(Resources=[ids[1]], Tags=[{"Key": "overcast:exit", "Value": "0"}])
    ec2.terminate_instances(InstanceIds=[ids[1]])
    real = ec2.describe_instances

    def describe(**kw: Any) -> Any:  # moto keeps the IP, and ends at "terminated" at once
        out = real(**kw)
        for inst in [i for r in out["Reservations"] for i in r["Instances"] if i["InstanceId"] == ids[1]]:
            inst["State"]["Name"] = state
            inst.pop("PrivateIpAddress", None)
        return out

    monkeypatch.setattr(ec2, "describe_instances", describe)
    monkeypatch.setattr(aws_agent, "GANG_WAIT_SECONDS", 0.0)  # one look: no waiting in a test
    rank, head = aws_agent.find_gang(ec2, "q", "1", 2, ids[0])
    ip0 = next(i for r in real(InstanceIds=[ids[0]])["Reservations"] for i in r["Instances"])
    assert (rank, head) == (0, ip0["PrivateIpAddress"])


def test_aws_find_gang_stops_looking_when_the_gang_was_stopped(
    moto_ec2: MotoEC2,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the whole gang is there, but stopped (overcast:stop) before this rank looked: the job never starts
    ec2, ids = gang_of_two(moto_ec2)
    ec2.create_tags(Resources=list(ids.values()), Tags=[{"Key": "overcast:stop", "Value": "1"}])
    monkeypatch.setattr(aws_agent, "GANG_WAIT_SECONDS", 0.0)
    assert aws_agent.find_gang(ec2, "q", "1", 2, ids[1]) == (1, None)
