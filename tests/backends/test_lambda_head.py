"""The Lambda agent's side of tests/backends/test_cloud_head_ended.py: a rank that looks for rank 0 after
rank 0's job has already ended stops looking at once (rank 0 failed -> HEAD_FAILED without running the
job; rank 0 succeeded -> it runs its part all the same). On Lambda rank 0's instance stays listed after
its job (its agent lingers until the backend terminates it), so the late rank always finds its exit tag.

As on OCI and GCP, rank 0 waits for every rank's ``agent`` tag, so rank 1's is set as its instance boots,
before its 3 s delay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from overcast.backends.base import LaunchRequest
from overcast.backends.lambda_cloud import LambdaBackend
from tests.backends import test_lambda
from tests.backends.cloud_checks import Gang
from tests.backends.lambda_vm import LambdaVmHost
from tests.backends.test_cloud_head_ended import JOB, check, late
from tests.backends.test_lambda import key_file  # noqa: F401 (fixture)
from tests.fixtures.lambda_fake import FakeLambda, lambda_fake, lambda_server  # noqa: F401


class LateLambda(LambdaVmHost):
    def _user_data(self, vm: str) -> str | None:
        with self.fake.lock:
            inst = self.fake.instances[vm]
            if {"key": "overcast-rank", "value": "1"} not in inst.data["tags"]:
                return super()._user_data(vm)
            inst.data["tags"] = [*inst.data["tags"], {"key": "overcast-agent", "value": "up"}]
        return late(super()._user_data(vm))


def lambda_gang(vms: LambdaVmHost, job: str) -> Gang:
    return lambda: {i["id"]: i["tagmap"] for i in vms.instances(job=job)}


@pytest.mark.parametrize("code", [3, 0])
def test_lambda_a_late_rank_does_not_wait_for_a_rank_0_that_had_already_ended(
    lambda_fake: FakeLambda,  # noqa: F811
    key_file: Path,  # noqa: F811
    tmp_path: Path,
    code: int,
) -> None:
    vms = LateLambda(lambda_fake, tmp_path / "vms").start()
    try:
        backend = LambdaBackend(test_lambda.settings(lambda_fake, key_file), home=tmp_path)
        pool = test_lambda.pool_of(backend)
        launched = time.monotonic()
        backend.launch(LaunchRequest("h", 1, pool, 2, test_lambda.gpu_job("h", JOB.format(code=code))))
        check(backend, lambda_gang(vms, "h"), vms.console, code, launched)
    finally:
        vms.close()
