"""The GCP backend's poll clean-up: an outage while it deletes one gang's instances does not lose another
gang's outcome (the check is shared with Nebius: tests/backends/test_nebius_cleanup.py)."""

from __future__ import annotations

from pathlib import Path

from overcast.backends import gcp
from tests.backends.gcp_vm import GceVmEmulator
from tests.backends.test_gcp import ZA, backend_of, gpu_job, pool_of, vms  # noqa: F401  (vms: the fixture)
from tests.backends.test_nebius_cleanup import an_outcome_outlives_an_outage_in_the_clean_up, failing
from tests.fixtures.gcp_fake import FakeGce
from tests.fixtures.gcp_http import gce, gce_server  # noqa: F401


def test_gcp_an_outage_in_the_clean_up_does_not_lose_another_gangs_outcome(
    gce: FakeGce,  # noqa: F811
    vms: GceVmEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = backend_of(gce, tmp_path)
    outage = failing(gcp, "call", "delete instance")
    flag = tmp_path / "a-may-end"
    an_outcome_outlives_an_outage_in_the_clean_up(backend, pool_of(backend, ZA), gpu_job, flag, outage)
    assert backend.poll() == []  # the deletes go through again
