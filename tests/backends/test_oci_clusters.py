"""OCI gangs in compute clusters (RDMA placement), through the official SDK against the fake
(tests/fixtures/oci_fake.py, oci_fake_clusters.py): one cluster per multi-node gang of an RDMA shape,
created before its first instance, named by every rank's launch, deleted once the gang's instances are
gone, also after a rollback or a crash."""

from __future__ import annotations

import contextlib
from pathlib import Path

import oci
import pytest

from overcast.backends.base import CapacityError, EventKind, LaunchRequest
from overcast.backends.oci import OciBackend
from overcast.placement.pool import Pool
from tests.backends.cloud_checks import eventually
from tests.backends.oci_vm import OciVmEmulator
from tests.backends.test_oci import (  # noqa: F401
    AD1,
    AD2,
    H100,
    config,
    gpu_job,
    poll_until,
    pool_of,
    settings,
    vms,
)
from tests.fixtures.oci_fake import COMPARTMENT, FakeOci, oci_fake, oci_server  # noqa: F401


def cluster_of(fake: FakeOci, job: str) -> set[str | None]:
    """The computeClusterId of each of the job's instances (one id for a gang in one cluster)."""
    with fake.lock:
        found = [i.data for i in fake.instances.values() if i.data["freeformTags"]["overcast-job"] == job]
    return {i["computeClusterId"] for i in found}


def swept(backend: OciBackend, fake: FakeOci) -> bool:
    """Poll until no compute cluster is left ACTIVE in the fake (a bounded wait)."""

    def done() -> bool:
        backend.poll()
        return not fake.clusters.active()

    return eventually(done, timeout=10.0)


def a10_pool(backend: OciBackend) -> Pool:
    return next(p for p in backend.pools() if p.instance_type == "VM.GPU.A10.2" and p.zone == AD1)


def test_a_gang_runs_in_a_compute_cluster_of_its_own_deleted_after_the_job_ends(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,  # noqa: F811
    vms: OciVmEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = OciBackend(settings(oci_fake, config), home=tmp_path)
    pool = pool_of(backend, AD2)
    backend.launch(LaunchRequest("g", 1, pool, 2, gpu_job("g", "echo rank $OVERCAST_NODE_RANK")))
    (cluster,) = oci_fake.clusters.active()
    assert cluster["availabilityDomain"] == f"Fake:{AD2}" and cluster["displayName"] == "overcast-g-1"
    tags = cluster["freeformTags"]
    assert (tags["overcast-backend"], tags["overcast-job"], tags["overcast-attempt"]) == ("oci:iad", "g", "1")
    # both ranks were launched into it, after it existed
    assert [b["computeClusterId"] for b in oci_fake.launches] == [cluster["id"]] * 2
    assert cluster_of(oci_fake, "g") == {cluster["id"]}
    # the fake refuses to delete it while the gang's instances live, as OCI does
    with pytest.raises(oci.exceptions.ServiceError) as refused:
        backend.compute.delete_compute_cluster(cluster["id"], retry_strategy=oci.retry.NoneRetryStrategy())
    assert refused.value.status == 409
    poll_until(backend, {("g", EventKind.SUCCEEDED)})
    assert swept(backend, oci_fake)  # deleted once both instances are TERMINATED
    assert oci_fake.clusters.clusters[cluster["id"]]["lifecycleState"] == "DELETED"
    assert backend.active() == [] and len(oci_fake.clusters.created) == 1


def test_a_stopped_gang_loses_its_cluster_and_single_nodes_or_non_rdma_shapes_get_none(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    conf = settings(oci_fake, config, shapes=(H100, "VM.GPU.A10.2"))
    backend = OciBackend(conf, home=tmp_path)
    backend.launch(LaunchRequest("one", 1, pool_of(backend, AD1), 1, gpu_job("one", "true", 1)))
    backend.launch(LaunchRequest("vm", 1, a10_pool(backend), 2, gpu_job("vm", "true")))  # no RDMA fabric
    assert oci_fake.clusters.created == [] and cluster_of(oci_fake, "one") == cluster_of(oci_fake, "vm") == {
        None
    }
    off = OciBackend(settings(oci_fake, config, compute_clusters=False, scope="off"), home=tmp_path / "off")
    off.launch(LaunchRequest("off", 1, pool_of(off, AD1), 2, gpu_job("off", "true")))
    assert oci_fake.clusters.created == [] and cluster_of(oci_fake, "off") == {None}
    backend.launch(LaunchRequest("two", 1, pool_of(backend, AD1), 2, gpu_job("two", "true")))
    assert len(oci_fake.clusters.active()) == 1
    backend.stop("two", 1, grace_seconds=0.0)  # terminates both ranks; OCI takes a while to end them
    assert swept(backend, oci_fake)
    for job in ("one", "vm"):
        backend.stop(job, 1, grace_seconds=0.0)
    off.stop("off", 1, grace_seconds=0.0)
    assert backend.active() == [] and off.active() == []


def test_a_failed_launch_rolls_back_its_instances_and_its_cluster(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = OciBackend(settings(oci_fake, config), home=tmp_path)
    oci_fake.set_capacity(H100, AD1, 1)  # rank 0 launches, rank 1 gets "Out of host capacity."
    with pytest.raises(CapacityError, match="Out of host capacity"):
        backend.launch(LaunchRequest("big", 1, pool_of(backend, AD1), 2, gpu_job("big", "true")))
    assert len(oci_fake.clusters.created) == 1 and len(oci_fake.launches) == 2
    assert {i.data["lifecycleState"] for i in oci_fake.instances.values()} <= {"TERMINATING", "TERMINATED"}
    assert swept(backend, oci_fake)  # once rank 0 is TERMINATED (OCI refuses before)
    assert backend.active() == [] and backend.poll() == []
    # no room for rank 0: the cluster is empty and deleted at once, without waiting for a poll
    oci_fake.set_capacity(H100, AD2, 0)
    with pytest.raises(CapacityError):
        backend.launch(LaunchRequest("none", 1, pool_of(backend, AD2), 2, gpu_job("none", "true")))
    assert len(oci_fake.clusters.created) == 2 and oci_fake.clusters.active() == []


def test_a_crash_between_creating_the_cluster_and_launching_leaves_one_cluster_and_none_for_long(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = OciBackend(settings(oci_fake, config), home=tmp_path)
    real_launch = backend.compute.launch_instance

    def dies(*args: object, **kw: object) -> object:
        raise SystemExit("the loop's process died")  # not an Exception: no rollback ran

    backend.compute.launch_instance = dies
    request = LaunchRequest("c", 1, pool_of(backend, AD1), 2, gpu_job("c", "true"))
    with pytest.raises(SystemExit):
        backend.launch(request)
    (cluster,) = oci_fake.clusters.active()  # made, and no instance in it
    # the replayed launch finds the cluster (by name and tags) and launches both ranks into it
    backend.compute.launch_instance = real_launch
    backend.launch(request)
    assert len(oci_fake.clusters.created) == 1 and cluster_of(oci_fake, "c") == {cluster["id"]}

    # A listing that does not show the cluster (yet): the create's retry token returns the same one.
    with pytest.raises(SystemExit):
        backend.compute.launch_instance = dies
        backend.launch(LaunchRequest("d", 1, pool_of(backend, AD1), 2, gpu_job("d", "true")))
    empty = oci.response.Response(200, {}, oci.core.models.ComputeClusterCollection(items=[]), None)
    backend.compute.list_compute_clusters = lambda *args, **kw: empty
    backend.compute.launch_instance = real_launch
    backend.launch(LaunchRequest("d", 1, pool_of(backend, AD1), 2, gpu_job("d", "true")))
    assert len(oci_fake.clusters.created) == 3 and len(oci_fake.clusters.active()) == 2
    assert len(cluster_of(oci_fake, "d")) == 1 and cluster_of(oci_fake, "d") != cluster_of(oci_fake, "c")

    # A crash after the create, never launched again (the loop requeues as a new attempt): the next
    # process's first poll finds the empty cluster and deletes it; the running gangs keep theirs.
    with pytest.raises(SystemExit):
        backend.compute.launch_instance = dies
        backend.launch(LaunchRequest("e", 1, pool_of(backend, AD2), 2, gpu_job("e", "true")))
    orphan = next(c for c in oci_fake.clusters.active() if c["displayName"] == "overcast-e-1")
    restarted = OciBackend(settings(oci_fake, config), home=tmp_path)
    restarted.poll()
    assert oci_fake.clusters.clusters[orphan["id"]]["lifecycleState"] == "DELETED"
    assert {c["displayName"] for c in oci_fake.clusters.active()} == {"overcast-c-1", "overcast-d-1"}
    for job in ("c", "d"):
        restarted.stop(job, 1, grace_seconds=0.0)
    assert swept(restarted, oci_fake) and restarted.active() == []


def test_the_fake_refuses_launches_into_an_unknown_cluster_or_another_ad(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    compute = OciBackend(settings(oci_fake, config), home=tmp_path).compute
    models = oci.core.models
    details = models.CreateComputeClusterDetails(
        availability_domain=f"Fake:{AD1}", compartment_id=COMPARTMENT, display_name="mine"
    )
    made = compute.create_compute_cluster(details).data
    assert isinstance(made, models.ComputeCluster) and made.lifecycle_state == "ACTIVE"
    assert compute.get_compute_cluster(made.id).data.display_name == "mine"
    listed = compute.list_compute_clusters(COMPARTMENT, availability_domain=f"Fake:{AD1}").data
    assert [c.id for c in listed.items] == [made.id]
    assert compute.list_compute_clusters(COMPARTMENT, availability_domain=f"Fake:{AD2}").data.items == []

    def launch(cluster_id: str, ad: str) -> int:
        body = models.LaunchInstanceDetails(
            availability_domain=f"Fake:{ad}", compartment_id=COMPARTMENT, shape=H100,
            compute_cluster_id=cluster_id, freeform_tags={"overcast-job": "x"},
            source_details=models.InstanceSourceViaImageDetails(image_id="ocid1.image.oc1.iad.fake"),
        )  # fmt: skip
        try:
            compute.launch_instance(body, retry_strategy=oci.retry.NoneRetryStrategy())
        except oci.exceptions.ServiceError as exc:
            return int(exc.status)
        return 200

    assert launch("ocid1.computecluster.oc1.iad.nope", AD1) == 404
    assert launch(made.id, AD2) == 400  # the instance's AD must be the cluster's
    assert launch(made.id, AD1) == 200
    in_cluster = compute.list_instances(COMPARTMENT, compute_cluster_id=made.id).data
    assert len(in_cluster) == 1 and in_cluster[0].availability_domain == f"Fake:{AD1}"
    with pytest.raises(oci.exceptions.ServiceError) as busy:
        compute.delete_compute_cluster(made.id, retry_strategy=oci.retry.NoneRetryStrategy())
    assert (busy.value.status, busy.value.code) == (409, "IncorrectState")
    compute.terminate_instance(in_cluster[0].id)
    assert eventually(lambda: oci_fake.members(made.id) == 0)
    compute.delete_compute_cluster(made.id)
    assert compute.get_compute_cluster(made.id).data.lifecycle_state == "DELETED"
    assert launch(made.id, AD1) == 404  # a deleted cluster takes no instance


def test_a_sweep_that_fails_loses_none_of_the_poll_s_events(
    oci_fake: FakeOci,  # noqa: F811
    config: Path,  # noqa: F811
    vms: OciVmEmulator,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = OciBackend(settings(oci_fake, config), home=tmp_path)
    tried: list[bool] = []

    def down(*args: object) -> bool:
        tried.append(True)
        raise oci.exceptions.ServiceError(503, "ServiceUnavailable", {}, "down for a while")

    monkeypatch.setattr("overcast.backends.oci.oci_clusters.sweep", down)
    backend.launch(LaunchRequest("s", 1, pool_of(backend, AD2), 2, gpu_job("s", "echo hi")))
    backend._sweep_due = True  # each poll sweeps, and each sweep fails
    events: list = []

    def succeeded() -> bool:
        with contextlib.suppress(Exception):  # as the loop does: the next poll goes on
            events.extend(backend.poll())
        return ("s", EventKind.SUCCEEDED) in {(e.job_id, e.kind) for e in events}

    assert eventually(succeeded, timeout=20.0) and tried
