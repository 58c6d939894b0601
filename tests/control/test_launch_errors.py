"""A launch() error that is neither capacity nor an outage (a missing security group, subnet or image, an
IAM policy) is about provisioning on that pool, not about the job: the pool cools down (longer than after a
capacity error), the job fails over, and it fails only after launch errors on 3 pools or when no pool that
fits it is left. A job a backend rejects before any provider call (``JobRejected``: its script is too large
for the user data) tries another backend and leaves the pool open for other jobs."""

from __future__ import annotations

from pathlib import Path

from overcast.backends.aws import AwsBackend
from overcast.backends.base import Backend
from overcast.backends.local import LocalBackend, LocalCluster
from overcast.control.health import Backoff
from overcast.control.loop import ControlLoop
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobState, Store
from tests.backends.test_aws import gpu_job, settings
from tests.control.harness import run_until, state
from tests.fixtures.moto import MotoEC2, moto_ec2, moto_server  # noqa: F401 (fixtures)

MISSING_SG = ("sg-00000000000dead",)  # EC2: InvalidGroup.NotFound, a client error (HTTP 400)


def loop_over(tmp_path: Path, *backends: Backend) -> tuple[Store, ControlLoop]:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = ControlLoop(store, list(backends), home=tmp_path, grace_seconds=1.0, backoff=Backoff(60, 600))
    return store, loop


def dear_local(tmp_path: Path) -> LocalBackend:
    """A pool that fits the H100 jobs but costs so much that the scheduler tries AWS first."""
    cluster = LocalCluster("dc", nodes=4, gpus_per_node=8, price_per_node_hour=10_000.0)
    return LocalBackend(cluster, home=tmp_path)


def launch_errors(store: Store, job_id: str) -> list[str]:
    return [e.detail for e in store.events(job_id=job_id) if e.kind == "launch-error"]


def test_a_broken_account_fails_over_and_its_pools_cool_down_longer(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
) -> None:
    aws = AwsBackend(settings(moto_ec2, security_group_ids=MISSING_SG), home=tmp_path)
    local = dear_local(tmp_path)
    store, loop = loop_over(tmp_path, aws, local)
    jobs = [store.submit("default", gpu_job(f"t{i}", "true", nodes=1)) for i in range(3)]
    run_until(loop, lambda: all(state(store, j.id).state is JobState.SUCCEEDED for j in jobs))
    for record in jobs:
        final = state(store, record.id)
        assert final.pool_id == local.pool_id and final.failures == 0
        (error,) = launch_errors(store, record.id)  # one try on AWS, then the next provider
        assert "InvalidGroup.NotFound" in error and "trying elsewhere" in error
    cooled = {k: v for k, v in store.pool_health().items() if k.startswith("aws/")}
    assert len(cooled) == 3  # each job tried another AWS pool: the first one was cooling down
    for record in cooled.values():
        assert record.health == "down" and "InvalidGroup.NotFound" in record.detail
        # 4x a capacity error's first cooldown (60 s)
        assert record.until is not None and record.until - loop.rt.clock() > 200


def test_a_job_only_a_broken_pool_fits_fails_at_once_naming_pool_and_error(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
) -> None:
    aws = AwsBackend(settings(moto_ec2, security_group_ids=MISSING_SG), home=tmp_path)
    store, loop = loop_over(tmp_path, aws)
    resources = Resources(accelerators=(AcceleratorRequest(name="H100", count=8),), zones=("use1-az4",))
    spec = JobSpec(name="one-zone", run="true", num_nodes=1, resources=resources)
    record = store.submit("default", spec)
    loop.tick()
    final = state(store, record.id)
    assert final.state is JobState.FAILED and final.attempt == 1
    reason = final.reason or ""
    assert final.pool_id is not None and final.pool_id in reason and "use1-az4" in reason
    assert "InvalidGroup.NotFound" in reason and "no other pool" in reason


def test_launch_errors_on_three_pools_fail_the_job(moto_ec2: MotoEC2, tmp_path: Path) -> None:  # noqa: F811
    aws = AwsBackend(settings(moto_ec2, security_group_ids=MISSING_SG), home=tmp_path)
    store, loop = loop_over(tmp_path, aws)  # six on-demand pools fit: the job gives up after three
    record = store.submit("default", gpu_job("t", "true", nodes=1))
    run_until(loop, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert final.state is JobState.FAILED and final.attempt == 3
    assert "launch errors on 3 pools" in (final.reason or "")
    assert len(launch_errors(store, record.id)) == 2  # the third one is the "failed" event
    assert not moto_ec2.client().describe_instances()["Reservations"]


def test_a_job_too_big_for_user_data_goes_elsewhere_and_leaves_the_pool_open(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
) -> None:
    big = "true # " + "x" * 20_000  # EC2 takes 16 KiB of user data
    aws = AwsBackend(settings(moto_ec2), home=tmp_path)
    store, loop = loop_over(tmp_path, aws, dear_local(tmp_path))
    record = store.submit("default", gpu_job("big", big, nodes=1))
    run_until(loop, lambda: state(store, record.id).state is JobState.SUCCEEDED)
    rejected = [e.detail for e in store.events(job_id=record.id) if e.kind == "launch-rejected"]
    assert len(rejected) == 1 and "user-data is" in rejected[0]
    assert store.pool_health() == {}  # nothing is wrong with the pool: other jobs still go there

    alone = Store(f"sqlite:///{tmp_path / 'alone.sqlite'}")  # AWS only: nothing else can take it
    loop = ControlLoop(alone, [aws], home=tmp_path, grace_seconds=1.0)
    record = alone.submit("default", gpu_job("big", big, nodes=1))
    loop.tick()
    final = state(alone, record.id)
    assert final.state is JobState.FAILED and final.attempt == 1
    assert "user-data is" in (final.reason or "") and "no other pool" in (final.reason or "")
