"""A machine of a gang stopped outside overcast (the console, host maintenance) runs nothing but keeps
billing (its disks; on OCI some shapes whole): it must be terminated, by the stop() that follows its loss
and, failing that, by each poll's clean-up, which sees a gang while any of its machines is listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from overcast.backends.aws import AwsBackend
from overcast.backends.base import EventKind, LaunchRequest
from overcast.backends.oci import OciBackend
from overcast.store import Store
from tests.backends import test_aws, test_gcp, test_oci
from tests.backends.cloud_checks import eventually, fast_loop, wait_events
from tests.control.harness import run_until, state
from tests.fixtures.gcp_fake import FakeGce
from tests.fixtures.gcp_http import gce, gce_server  # noqa: F401
from tests.fixtures.moto import MotoEC2, moto_ec2, moto_server  # noqa: F401
from tests.fixtures.oci_fake import FakeOci, oci_fake, oci_server  # noqa: F401


def ec2_states(moto: MotoEC2) -> dict[str, str]:
    found = moto.client().describe_instances()["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in found for i in r["Instances"]}


def test_aws_a_stopped_instance_of_a_lost_gang_is_terminated(moto_ec2: MotoEC2, tmp_path: Path) -> None:  # noqa: F811
    backend = AwsBackend(test_aws.settings(moto_ec2), home=tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = fast_loop(tmp_path, store, backend)
    job = store.submit("default", test_aws.gpu_job("t", "sleep 600", nodes=2))
    loop.tick()
    first = sorted(ec2_states(moto_ec2))
    moto_ec2.client().stop_instances(InstanceIds=[first[0]])
    run_until(loop, lambda: state(store, job.id).attempt >= 2)  # lost: requeued and launched again
    assert ec2_states(moto_ec2)[first[0]] in ("shutting-down", "terminated")
    assert all(ec2_states(moto_ec2)[i] in ("shutting-down", "terminated") for i in first)


def test_aws_each_poll_terminates_stopped_instances_of_a_gang_nobody_stops(
    moto_ec2: MotoEC2,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = AwsBackend(test_aws.settings(moto_ec2), home=tmp_path)
    pool = test_aws.pool_of(backend, "use1-az1", test_aws.Purchase.ON_DEMAND)
    backend.launch(LaunchRequest("g", 1, pool, 2, test_aws.gpu_job("g", "sleep 600")))
    ids = sorted(ec2_states(moto_ec2))
    moto_ec2.client().stop_instances(InstanceIds=[ids[0]])
    events = wait_events(backend, lambda ev: any(e.kind is EventKind.PREEMPTED for e in ev))
    assert [e.kind for e in events] == [EventKind.PREEMPTED]  # reported lost; the caller stops nothing
    backend.poll()  # acknowledged: no more events, only the clean-up
    assert ec2_states(moto_ec2)[ids[0]] in ("shutting-down", "terminated")
    assert ec2_states(moto_ec2)[ids[1]] == "running"  # the live rank is the loop's to stop, not the poll's


@pytest.fixture
def oci_backend(oci_fake: FakeOci, oci_server: Any, tmp_path: Path) -> OciBackend:  # noqa: F811
    return OciBackend(test_oci.settings(oci_fake, oci_server[1]), home=tmp_path)


def halt(fake: FakeOci, instance_id: str) -> None:
    with fake.lock:  # OCI stops the host (or an operator does)
        inst = fake.instances[instance_id]
        inst.data["lifecycleState"] = "STOPPED"
        inst.version += 1


def oci_states(fake: FakeOci, ids: list[str]) -> list[str]:
    return [fake.instances[i].data["lifecycleState"] for i in ids]


def test_oci_a_stopped_instance_of_a_lost_gang_is_terminated(
    oci_fake: FakeOci,  # noqa: F811
    oci_backend: OciBackend,
    tmp_path: Path,
) -> None:
    backend = oci_backend
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = fast_loop(tmp_path, store, backend)
    job = store.submit("default", test_oci.gpu_job("t", "sleep 600", nodes=2))
    loop.tick()
    first = sorted(oci_fake.instances)
    assert len(first) == 2
    halt(oci_fake, first[0])
    run_until(loop, lambda: state(store, job.id).attempt >= 2)
    assert all(s in ("TERMINATING", "TERMINATED") for s in oci_states(oci_fake, first))


def test_oci_each_poll_terminates_stopped_instances_of_a_gang_nobody_stops(
    oci_fake: FakeOci,  # noqa: F811
    oci_backend: OciBackend,
) -> None:
    backend = oci_backend
    pool = test_oci.pool_of(backend, test_oci.AD1)
    backend.launch(LaunchRequest("g", 1, pool, 2, test_oci.gpu_job("g", "sleep 600")))
    ids = sorted(oci_fake.instances)
    halt(oci_fake, ids[0])
    events = wait_events(backend, lambda ev: any(e.kind is EventKind.PREEMPTED for e in ev))
    assert [e.kind for e in events] == [EventKind.PREEMPTED]
    backend.poll()  # acknowledged: no more events, only the clean-up
    assert oci_states(oci_fake, ids)[0] in ("TERMINATING", "TERMINATED")
    assert oci_states(oci_fake, ids)[1] not in ("TERMINATING", "TERMINATED")


def test_gcp_a_stopped_instance_of_a_lost_gang_is_deleted(gce: FakeGce, tmp_path: Path) -> None:  # noqa: F811
    """GCP already did: TERMINATED (stopped, disks kept) is lost, stop() and the clean-up delete every
    instance of the gang, and the gang is forgotten only once none is listed."""
    backend = test_gcp.backend_of(gce, tmp_path)
    pool = test_gcp.pool_of(backend, test_gcp.ZB)
    backend.launch(LaunchRequest("g", 1, pool, 2, test_gcp.gpu_job("g", "sleep 600")))
    assert eventually(lambda: [i["status"] for i in gce.listed()] == ["RUNNING", "RUNNING"])
    first = sorted(i["name"] for i in gce.listed())
    gce.stop(test_gcp.ZB, first[0])
    events = wait_events(backend, lambda ev: any(e.kind is EventKind.PREEMPTED for e in ev))
    assert [e.kind for e in events] == [EventKind.PREEMPTED]
    backend.poll()  # acknowledged: the clean-up deletes the stopped instance
    gone = gce.find(first[0])
    assert gone is None or gone.get("deleting")
