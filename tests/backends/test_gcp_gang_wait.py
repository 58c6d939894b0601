"""The GCP agent's side of tests/backends/test_aws_gang_wait.py: rank 0 looks for its gang late, after
rank 1 has run a job of a moment, labelled its exit and stopped its instance (STOPPING, then TERMINATED).
Rank 0 counts it as there and runs its own part at once, instead of waiting out GANG_WAIT_SECONDS.

On GCP every rank waits for every rank's ``agent`` label, so rank 0's is set as its instance boots,
before its 3 s delay: rank 1 sees the whole gang, runs, and is stopped before rank 0's agent looks."""

from __future__ import annotations

import time
from pathlib import Path

from overcast.backends.base import LaunchRequest
from tests.backends import test_gcp
from tests.backends.cloud_checks import gce_gang
from tests.backends.test_aws_gang_wait import check_late_head
from tests.backends.test_cloud_head_ended import JOB, LateGce
from tests.fixtures.gcp_fake import FakeGce
from tests.fixtures.gcp_http import gce, gce_server  # noqa: F401 (fixtures)


class LateHeadGce(LateGce):
    """Rank 0 is the late one."""

    late_rank = 0


def test_gcp_a_late_rank_0_counts_a_rank_whose_quick_job_had_already_ended(
    gce: FakeGce,  # noqa: F811
    tmp_path: Path,
) -> None:
    vms = LateHeadGce(gce, tmp_path / "vms").start()
    try:
        backend = test_gcp.backend_of(gce, tmp_path)
        pool = test_gcp.pool_of(backend, test_gcp.ZB)
        launched = time.monotonic()
        backend.launch(LaunchRequest("h", 1, pool, 2, test_gcp.gpu_job("h", JOB.format(code=0))))
        check_late_head(backend, gce_gang(vms, "h"), vms.console, 0, launched)
    finally:
        vms.close()
