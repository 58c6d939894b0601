"""The Azure backend's poll clean-up: an outage while it deletes one gang's VMs does not lose another
gang's outcome (the check is shared with Nebius: tests/backends/test_nebius_cleanup.py)."""

from __future__ import annotations

from pathlib import Path

from overcast.backends import azure
from overcast.placement.pool import Purchase
from tests.backends.azure_vm import VmEmulator
from tests.backends.test_azure import backend_of, gpu_job, pool_of, vms  # noqa: F401  (vms: the fixture)
from tests.backends.test_nebius_cleanup import an_outcome_outlives_an_outage_in_the_clean_up, failing
from tests.fixtures.azure_fake import FakeArm, arm_tls, fake_arm  # noqa: F401  (fixtures)


def test_azure_an_outage_in_the_clean_up_does_not_lose_another_gangs_outcome(
    fake_arm: FakeArm,  # noqa: F811
    vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = backend_of(fake_arm, tmp_path)
    outage = failing(azure, "call", "delete VM")
    flag = tmp_path / "a-may-end"
    an_outcome_outlives_an_outage_in_the_clean_up(
        backend, pool_of(backend, "1", Purchase.ON_DEMAND), gpu_job, flag, outage
    )
    assert backend.poll() == []  # the deletes go through again
