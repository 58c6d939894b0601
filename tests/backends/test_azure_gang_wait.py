"""The Azure agent's gang wait, both ways round, against the fake ARM with the real agent
(tests/backends/azure_vm.py); every rank waits for every rank's ``overcast-agent`` tag, so the late
rank's is set as its VM boots, before its 3 s delay (rank 0's ``overcast-ip`` too: the head's address).

- rank 1 late (tests/backends/test_cloud_head_ended.py): rank 0's job has ended and its VM is
  deallocated when rank 1 looks; rank 1 stops looking at once (rank 0 failed: ``HEAD_FAILED``, without
  running the job; succeeded: it runs its part all the same). A deallocated VM keeps its tags, so the old
  agent took the ended rank 0 for a live head and ran the job whatever rank 0's outcome.
- rank 0 late (tests/backends/test_aws_gang_wait.py): rank 1 has run, tagged its exit and deallocated
  its VM; rank 0 counts it and runs its own part at once. The old agent did too (it counted every VM
  with an agent tag, whatever its power state): this one guards that."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from overcast.backends.base import LaunchRequest
from tests.backends import test_azure
from tests.backends.azure_vm import VmEmulator
from tests.backends.cloud_checks import Gang
from tests.backends.test_aws_gang_wait import check_late_head
from tests.backends.test_cloud_head_ended import JOB, check, late
from tests.fixtures.azure_fake import FakeArm, arm_tls, fake_arm  # noqa: F401 (fixtures)


class LateAzure(VmEmulator):
    """The VM of rank ``late_rank`` tags its agent up at once but looks for its gang LATE seconds later."""

    def __init__(self, arm: FakeArm, root: Path, late_rank: int) -> None:
        super().__init__(arm, root)
        self.late_rank = late_rank

    def _user_data(self, vm: str) -> str | None:
        found = super()._user_data(vm)
        with self.arm.lock:
            machine = self.arm.vm(vm)
            assert machine is not None
            if machine["tags"].get("overcast-rank") != str(self.late_rank):
                return found
            machine["tags"] = machine["tags"] | {"overcast-agent": "up", "overcast-ip": self.ips[vm]}
            self.arm.touch(machine)  # a new ETag, as a tag update makes
        return late(found)


def azure_gang(arm: FakeArm, job: str) -> Gang:
    return lambda: {vm["name"]: dict(vm["tags"]) for vm in test_azure.gang_vms(arm, job)}


def launch(arm: FakeArm, home: Path, code: int) -> object:
    backend = test_azure.backend_of(arm, home)
    pool = test_azure.pool_of(backend, "1", test_azure.Purchase.ON_DEMAND)
    backend.launch(LaunchRequest("h", 1, pool, 2, test_azure.gpu_job("h", JOB.format(code=code))))
    return backend


@pytest.mark.parametrize("code", [3, 0])
def test_azure_a_late_rank_does_not_wait_for_a_rank_0_that_had_already_ended(
    fake_arm: FakeArm,  # noqa: F811
    tmp_path: Path,
    code: int,
) -> None:
    vms = LateAzure(fake_arm, tmp_path / "vms", late_rank=1).start()
    try:
        launched = time.monotonic()
        backend = launch(fake_arm, tmp_path, code)
        check(backend, azure_gang(fake_arm, "h"), vms.console, code, launched)
    finally:
        vms.close()


def test_azure_a_late_rank_0_counts_a_rank_whose_quick_job_had_already_ended(
    fake_arm: FakeArm,  # noqa: F811
    tmp_path: Path,
) -> None:
    vms = LateAzure(fake_arm, tmp_path / "vms", late_rank=0).start()
    try:
        launched = time.monotonic()
        backend = launch(fake_arm, tmp_path, 0)
        check_late_head(backend, azure_gang(fake_arm, "h"), vms.console, 0, launched)
    finally:
        vms.close()
