"""A rank that looks for rank 0 after rank 0's job has already ended (a crash at start-up, a job of a
second) stops looking at once, instead of waiting out GANG_WAIT_SECONDS (10-15 minutes, billed): rank 0
failed -> it exits HEAD_FAILED without running the job, and the gang ends FAILED with rank 0's code;
rank 0 succeeded -> it runs its own part all the same, and the gang SUCCEEDS.

Against each provider's fake with the real agents (tests/backends/*_vm.py), rank 1 booted 3 s late: on
EC2 rank 0 does not wait for the other agents, so it has ended by then. On OCI and GCP rank 0 waits
for every rank's ``agent`` tag (label), so rank 1's is set as it boots, before its delay: what the
race looks like there (rank 1 tagged itself, then its next look came after rank 0 had ended)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from overcast.backends.aws import AwsBackend
from overcast.backends.base import EventKind, LaunchRequest
from overcast.backends.cloud_agent import HEAD_FAILED, STOPPED_BEFORE_START, HeadEnded, head_ended
from tests.backends import test_aws, test_gcp, test_oci
from tests.backends.aws_vm import VmEmulator
from tests.backends.cloud_checks import (
    Gang,
    agent_tag,
    ec2_gang,
    gce_gang,
    oci_gang,
    wait_events,
    wait_exited,
)
from tests.backends.gcp_vm import GceVmEmulator
from tests.backends.oci_vm import OciVmEmulator
from tests.backends.test_oci import config  # noqa: F401 (fixture)
from tests.fixtures.gcp_fake import FakeGce, fingerprint
from tests.fixtures.gcp_http import gce, gce_server  # noqa: F401 (fixtures)
from tests.fixtures.moto import MotoEC2, moto_ec2, moto_server  # noqa: F401
from tests.fixtures.oci_fake import FakeOci, oci_fake, oci_server  # noqa: F401

LATE = 3  # seconds rank 1 boots after the others
JOB = '[ "$OVERCAST_NODE_RANK" = 0 ] && exit {code}; echo "ran $OVERCAST_NODE_RANK"'
WITHIN = 30.0  # every node has tagged its exit by then (GANG_WAIT_SECONDS: 600-900)


def test_what_a_rank_does_when_rank_0_had_already_ended() -> None:
    assert head_ended({"overcast:agent": "up"}, "overcast:", "10.0.0.1") is None  # still running
    ok = head_ended({"overcast-exit": "0", "overcast-ended-at": "1"}, "overcast-", "10.0.0.1")
    assert ok == HeadEnded(0, False, "10.0.0.1") and ok.instead() is None  # runs its part
    assert HeadEnded(3, False, "").instead() == (HEAD_FAILED, False)
    assert HeadEnded(143, True, "").instead() == (STOPPED_BEFORE_START, True)  # a stopped gang
    assert HeadEnded(0, True, "").instead() == (STOPPED_BEFORE_START, True)
    garbage = head_ended({"x-exit": "oops"}, "x-", "")
    assert garbage is not None and garbage.instead() == (HEAD_FAILED, False)
    assert HEAD_FAILED not in (0, 125, 126, 127, STOPPED_BEFORE_START)  # distinct from the others


def late(encoded: str | None) -> str | None:
    """A boot script (base64) that sleeps LATE seconds first."""
    if not encoded:
        return encoded
    first, _, rest = base64.b64decode(encoded).decode().partition("\n")
    return base64.b64encode(f"{first}\nsleep {LATE}\n{rest}".encode()).decode()


class LateEc2(VmEmulator):
    def _user_data(self, vm: str) -> str | None:
        (inst,) = [
            i for r in self.ec2.describe_instances(InstanceIds=[vm])["Reservations"] for i in r["Instances"]
        ]
        found = super()._user_data(vm)
        return late(found) if inst["AmiLaunchIndex"] == 1 else found


class LateOci(OciVmEmulator):
    def _user_data(self, vm: str) -> str | None:
        with self.fake.lock:
            inst = self.fake.instances[vm]
            if inst.data["freeformTags"].get("overcast-rank") != "1":
                return super()._user_data(vm)
            inst.data["freeformTags"] |= {"overcast-agent": "up", "overcast-addr": "10.0.0.99"}
            inst.version += 1  # a new etag, as a tag update makes
        return late(super()._user_data(vm))


class LateGce(GceVmEmulator):
    """Rank ``late_rank`` labels its agent up at once but looks for its gang LATE seconds later."""

    late_rank = 1

    def _user_data(self, vm: str) -> str | None:
        if not vm.endswith(f"-{self.late_rank}"):
            return super()._user_data(vm)
        with self.fake.lock:
            inst = self.fake.find(vm)
            assert inst is not None
            inst["labels"] = inst["labels"] | {"overcast-agent": "up"}
            inst["labelFingerprint"] = fingerprint(inst["labels"])
        return late(super()._user_data(vm))


def check(backend: Any, gang: Gang, console: Callable[[str], str], code: int, launched: float) -> None:
    """Every node tags its exit within seconds; rank 1 ran the job only after a rank 0 that succeeded;
    the gang's outcome is rank 0's."""
    wait_exited(gang, console, WITHIN)
    took = time.monotonic() - launched
    by_rank = {int(agent_tag(t, "rank") or vm[-1]): vm for vm, t in gang().items()}
    rank1 = by_rank[1]
    assert "rank 0 had already ended" in console(rank1), console(rank1)  # the late rank found it ended
    if code == 0:
        assert agent_tag(gang()[rank1], "exit") == "0" and "ran 1" in console(rank1)  # its part, all the same
        wanted = {EventKind.SUCCEEDED}
    else:
        assert agent_tag(gang()[rank1], "exit") == str(HEAD_FAILED) and "ran 1" not in console(rank1)
        wanted = {EventKind.FAILED}
    (event,) = wait_events(backend, lambda events: {e.kind for e in events} >= wanted, timeout=10)
    assert event.kind in wanted and event.exit_code == code
    if code:
        assert event.detail == f"node 0 exited with {code}"
    assert took < WITHIN


@pytest.mark.parametrize("code", [3, 0])
def test_aws_a_late_rank_does_not_wait_for_a_rank_0_that_had_already_ended(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
    code: int,
) -> None:
    vms = LateEc2(moto_ec2, tmp_path / "vms").start()
    try:
        backend = AwsBackend(test_aws.settings(moto_ec2), home=tmp_path)
        pool = test_aws.pool_of(backend, "use1-az2", test_aws.Purchase.ON_DEMAND)
        launched = time.monotonic()
        backend.launch(LaunchRequest("h", 1, pool, 2, test_aws.gpu_job("h", JOB.format(code=code))))
        check(backend, ec2_gang(vms, "h"), vms.console, code, launched)
    finally:
        vms.close()


@pytest.mark.parametrize("code", [3, 0])
def test_oci_a_late_rank_does_not_wait_for_a_rank_0_that_had_already_ended(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,  # noqa: F811
    tmp_path: Path,
    code: int,
) -> None:
    vms = LateOci(oci_fake, config, tmp_path / "vms").start()
    try:
        backend = test_oci.OciBackend(test_oci.settings(oci_fake, config), home=tmp_path)
        pool = test_oci.pool_of(backend, test_oci.AD1)
        launched = time.monotonic()
        backend.launch(LaunchRequest("h", 1, pool, 2, test_oci.gpu_job("h", JOB.format(code=code))))
        check(backend, oci_gang(vms, "h"), vms.console, code, launched)
    finally:
        vms.close()


@pytest.mark.parametrize("code", [3, 0])
def test_gcp_a_late_rank_does_not_wait_for_a_rank_0_that_had_already_ended(
    gce: FakeGce,  # noqa: F811
    tmp_path: Path,
    code: int,
) -> None:
    vms = LateGce(gce, tmp_path / "vms").start()
    try:
        backend = test_gcp.backend_of(gce, tmp_path)
        pool = test_gcp.pool_of(backend, test_gcp.ZB)
        launched = time.monotonic()
        backend.launch(LaunchRequest("h", 1, pool, 2, test_gcp.gpu_job("h", JOB.format(code=code))))
        check(backend, gce_gang(vms, "h"), vms.console, code, launched)
    finally:
        vms.close()
