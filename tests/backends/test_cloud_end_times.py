"""A cloud gang is billed to when its nodes ended, not to when the backend got round to polling: each
node's agent tags ``ended-at`` with its exit code, and the gang's end is the latest of them (never later
than the poll, never before the nodes were launched; the poll's time when any node has no such tag).

Against each provider's fake with the real agents (tests/backends/*_vm.py): a two-node gang whose rank 1
ends ~3 s after rank 0, polled 2.5 s after both ended."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from overcast.backends.aws import AwsBackend
from overcast.backends.base import BackendEvent, EventKind, LaunchRequest
from overcast.backends.cloud_gangs import end_time
from tests.backends import test_aws, test_azure, test_gcp, test_oci
from tests.backends.aws_vm import VmEmulator
from tests.backends.azure_vm import VmEmulator as AzureVms
from tests.backends.cloud_checks import Gang, agent_tag, ec2_gang, gce_gang, oci_gang, wait_exited
from tests.backends.gcp_vm import GceVmEmulator
from tests.backends.oci_vm import OciVmEmulator
from tests.backends.test_aws import vms as aws_vms  # noqa: F401 (fixtures: each module's VM emulator)
from tests.backends.test_azure import vms as azure_vms  # noqa: F401
from tests.backends.test_gcp import vms as gce_vms  # noqa: F401
from tests.backends.test_oci import config  # noqa: F401
from tests.backends.test_oci import vms as oci_vms  # noqa: F401
from tests.fixtures.azure_fake import FakeArm, arm_tls, fake_arm  # noqa: F401 (fixtures)
from tests.fixtures.gcp_fake import FakeGce
from tests.fixtures.gcp_http import gce, gce_server  # noqa: F401
from tests.fixtures.moto import MotoEC2, moto_ec2, moto_server  # noqa: F401
from tests.fixtures.oci_fake import FakeOci, oci_fake, oci_server  # noqa: F401

LATE = 2.5  # how long after the gang ended the backend polls
# rank 1 ends ~3 s after rank 0 (starts may differ by a second); stamps are whole seconds. Rank 0 ends at
# once: a rank that looks for it after that runs its part all the same (test_cloud_head_ended)
JOB = 'sleep $((3 * OVERCAST_NODE_RANK)); echo "END $OVERCAST_NODE_RANK $(date +%s.%N)"'


def test_the_end_is_the_latest_stamp_clamped_and_the_poll_time_when_any_node_has_none() -> None:
    now = 1000.0
    assert end_time(["900", "950"], [100.0, 110.0], lost=False, now=now) == 950.0
    assert end_time(["900", None], [100.0], lost=False, now=now) == now  # a node still runs
    assert end_time(["900", "950"], [100.0], lost=True, now=now) == now  # a node lost: when, unknown
    assert end_time(["900", "x1"], [100.0], lost=False, now=now) == now  # garbage is no time
    assert end_time(["900", "nan"], [100.0], lost=False, now=now) == now
    assert end_time([], [], lost=False, now=now) == now
    assert end_time(["2000"], [100.0], lost=False, now=now) == now  # a node's clock ahead: not later
    assert end_time(["50"], [100.0, 120.0], lost=False, now=now) == 120.0  # behind: not before launch


def late_poll(backend: Any, gang: Gang, console: Callable[[str], str]) -> BackendEvent:
    """Wait (without polling) until every node of the gang has tagged its exit, wait LATE seconds, poll:
    the gang's one event. Checks the event's time against the jobs' own clocks."""
    wait_exited(gang, console, 40)
    machines = gang()
    assert all(agent_tag(t, "ended-at") for t in machines.values())  # every agent stamped its end
    time.sleep(LATE)
    polled = time.time()
    (event,) = backend.poll()
    ends = {}
    for vm in machines:
        m = re.search(r"^END (\d) ([\d.]+)$", console(vm), re.M)
        assert m, console(vm)
        ends[int(m[1])] = float(m[2])
    assert ends[1] - ends[0] > 1.5
    assert event.at == max(float(agent_tag(t, "ended-at")) for t in machines.values())  # type: ignore[arg-type]
    # whole seconds, stamped after the job's last line: within a second of the last rank's end
    assert ends[1] - 1.0 < event.at < ends[1] + 1.0
    assert event.at > ends[0] + 0.5  # the latest node's end, not the first's
    assert polled - event.at >= LATE - 0.01  # not the poll's time
    return event


@pytest.mark.parametrize("code", [0, 3])
def test_aws_a_gang_polled_late_ends_when_its_agents_said(
    moto_ec2: MotoEC2,  # noqa: F811
    aws_vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
    code: int,
) -> None:
    backend = AwsBackend(test_aws.settings(moto_ec2), home=tmp_path)
    pool = test_aws.pool_of(backend, "use1-az2", test_aws.Purchase.ON_DEMAND)
    # only rank 1 fails: after a rank 0 that failed at once, rank 1 would not run the job at all
    failing = f"{JOB}; exit $(({code} * OVERCAST_NODE_RANK))"
    backend.launch(LaunchRequest("e", 1, pool, 2, test_aws.gpu_job("e", failing)))
    event = late_poll(backend, ec2_gang(aws_vms, "e"), aws_vms.console)
    assert event.kind is (EventKind.SUCCEEDED if code == 0 else EventKind.FAILED)


def test_azure_a_gang_polled_late_ends_when_its_agents_said(
    fake_arm: FakeArm,  # noqa: F811
    azure_vms: AzureVms,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = test_azure.backend_of(fake_arm, tmp_path)
    pool = test_azure.pool_of(backend, "1", test_azure.Purchase.ON_DEMAND)
    backend.launch(LaunchRequest("e", 1, pool, 2, test_azure.gpu_job("e", JOB)))

    def gang() -> dict[str, dict[str, str]]:
        return {vm["name"]: dict(vm["tags"]) for vm in test_azure.gang_vms(fake_arm, "e")}

    event = late_poll(backend, gang, azure_vms.console)
    assert event.kind is EventKind.SUCCEEDED


def test_oci_a_gang_polled_late_ends_when_its_agents_said(
    oci_fake: FakeOci,  # noqa: F811
    oci_server: Any,  # noqa: F811
    oci_vms: OciVmEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = test_oci.OciBackend(test_oci.settings(oci_fake, oci_server[1]), home=tmp_path)
    pool = test_oci.pool_of(backend, test_oci.AD1)
    backend.launch(LaunchRequest("e", 1, pool, 2, test_oci.gpu_job("e", JOB)))
    event = late_poll(backend, oci_gang(oci_vms, "e"), oci_vms.console)
    assert event.kind is EventKind.SUCCEEDED


def test_gcp_a_gang_polled_late_ends_when_its_agents_said(
    gce: FakeGce,  # noqa: F811
    gce_vms: GceVmEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = test_gcp.backend_of(gce, tmp_path)
    pool = test_gcp.pool_of(backend, test_gcp.ZB)
    backend.launch(LaunchRequest("e", 1, pool, 2, test_gcp.gpu_job("e", JOB)))
    gang = gce_gang(gce_vms, "e")
    event = late_poll(backend, gang, gce_vms.console)
    assert event.kind is EventKind.SUCCEEDED
    assert all(re.fullmatch(r"[0-9]+", t["overcast-ended-at"]) for t in gang().values())  # a label value
