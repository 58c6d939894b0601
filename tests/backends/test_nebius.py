"""The Nebius backend against a local fake of the Nebius compute API (tests/fixtures/nebius_fake.py: a real
gRPC server), through the official SDK (``nebius``).

The fake has no machines: ``NebiusVmHost`` (tests/backends/nebius_vm.py) plays the hypervisor and runs
each running instance's user-data as local processes, so the node agent and the job really run; the
agents authenticate with tokens from its token endpoint, as a service account on the instance would.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from overcast.backends.base import CapacityError, EventKind, LaunchRequest
from overcast.backends.nebius import NO_AGENT, NebiusBackend
from overcast.backends.nebius_client import NebiusSettings
from overcast.catalog.pools import pool_id
from overcast.placement.pool import Health, Pool, Purchase
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobState
from tests.backends.cloud_checks import eventually, run_fleet_job, wait_events
from tests.backends.nebius_vm import NebiusVmHost
from tests.fixtures.nebius_fake import (  # noqa: F401  (the fixtures; skips without the SDK)
    PROJECT,
    REGION,
    TOKEN,
    FakeNebius,
    nebius_fake,
    nebius_server,
)

H100 = "gpu-h100-sxm_8gpu-128vcpu-1600gb"
H100_1 = "gpu-h100-sxm_1gpu-16vcpu-200gb"
FABRIC = "fabric-2"


def settings(fake: FakeNebius, vms: NebiusVmHost, **kw: object) -> NebiusSettings:
    base: dict = dict(name="fi", project_id=PROJECT, region=REGION, instance_types=(H100, H100_1),
                      subnet_id="vpcsubnet-e00test", infiniband_fabric=FABRIC, service_account_id="sa-1",
                      token_endpoint=vms.token_url, endpoint=fake.address, insecure=True,
                      agent_poll_seconds=0.2, max_nodes=4)  # fmt: skip
    return NebiusSettings(**(base | kw))


def backend_for(fake: FakeNebius, vms: NebiusVmHost, home: Path, **kw: object) -> NebiusBackend:
    return NebiusBackend(settings(fake, vms, **kw), home=home, credentials=TOKEN)


def gpu_job(name: str, run: str, nodes: int = 2) -> JobSpec:
    resources = Resources(accelerators=(AcceleratorRequest(name="H100", count=8),))
    return JobSpec(name=name, run=run, num_nodes=nodes, resources=resources)


def pool_of(backend: NebiusBackend, kind: str = H100, purchase: Purchase = Purchase.ON_DEMAND) -> Pool:
    wanted = pool_id("nebius", REGION, None, kind, purchase)
    return next(p for p in backend.pools() if p.id == wanted)


def poll_until(backend: NebiusBackend, wanted: set, timeout: float = 20.0) -> list:
    return wait_events(backend, lambda events: wanted <= {(e.job_id, e.kind) for e in events}, timeout)


def labels(inst: object) -> dict[str, str]:
    return dict(inst.metadata.labels)  # type: ignore[attr-defined]


def all_gone(backend: NebiusBackend, fake: FakeNebius, vms: NebiusVmHost) -> None:
    """No more events, no instance and no GPU cluster left (deleted by the polls), no VM running."""
    assert eventually(lambda: backend.poll() == [] and not vms.instances() and not fake.clusters, 10)
    assert backend.active() == []
    vms.wait_gone()


@pytest.fixture
def vms(nebius_fake: FakeNebius, tmp_path: Path) -> Iterator[NebiusVmHost]:  # noqa: F811
    host = NebiusVmHost(nebius_fake, tmp_path / "vms").start()
    try:
        yield host
    finally:
        host.close()


def test_pools_are_the_catalog_offers_per_type_and_purchase_and_a_bad_token_is_down(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,
    tmp_path: Path,
) -> None:
    backend = backend_for(nebius_fake, vms, tmp_path)
    pools = backend.pools()
    assert sorted(p.id for p in pools) == sorted(
        pool_id("nebius", REGION, None, t, p)
        for t in (H100, H100_1)
        for p in (Purchase.ON_DEMAND, Purchase.SPOT)
    )
    assert all(p.health is Health.OK and p.capacity_nodes == 4 and p.used_nodes == 0 for p in pools)
    wrong = NebiusBackend(settings(nebius_fake, vms), home=tmp_path / "w", credentials="not-a-token")
    assert all(p.health is Health.DOWN for p in wrong.pools())
    assert nebius_fake.unauthorized > 0


def test_a_two_node_gang_runs_to_success_in_a_gpu_cluster_of_its_own_deleted_after(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,
    tmp_path: Path,
) -> None:
    backend = backend_for(nebius_fake, vms, tmp_path)
    flag = tmp_path / "may-end"  # the job ends only once the test saw STARTED: a slow poll cannot miss it
    run = 'echo "rank $OVERCAST_NODE_RANK head $OVERCAST_HEAD_ADDR"; '
    run += f"until [ -e {flag} ]; do sleep 0.05; done"
    request = LaunchRequest("ok", 1, pool_of(backend), 2, gpu_job("ok", run))
    first = backend.launch(request)
    assert backend.launch(request) == first  # the same attempt again launches nothing
    assert len(nebius_fake.created) == 2 and len(nebius_fake.clusters) == 1
    (cluster,) = nebius_fake.clusters.values()
    assert cluster.spec.infiniband_fabric == FABRIC
    assert {r.spec.gpu_cluster.id for r in nebius_fake.created} == {cluster.metadata.id}
    assert not any(r.spec.HasField("preemptible") for r in nebius_fake.created)  # on-demand
    assert sorted(cluster.status.instances) == sorted(i.metadata.id for i in vms.instances(job="ok"))
    events = poll_until(backend, {("ok", EventKind.STARTED)})
    flag.touch()
    events += poll_until(backend, {("ok", EventKind.SUCCEEDED)})
    assert [e.kind for e in events] == [EventKind.STARTED, EventKind.SUCCEEDED]
    gang = vms.instances(job="ok")
    assert sorted(labels(i)["overcast-exit"] for i in gang) == ["0", "0"]  # written by the agents
    assert events[-1].at == max(int(labels(i)["overcast-ended-at"]) for i in gang)
    head = next(i for i in gang if labels(i)["overcast-rank"] == "0").status.network_interfaces[0]
    address = head.ip_address.address.split("/")[0]
    assert all(f"head {address}" in vms.console(i.metadata.id) for i in gang)
    # after the loop's acknowledgement: the instances are deleted, then the GPU cluster
    all_gone(backend, nebius_fake, vms)
    assert vms.tokens_issued >= 2  # the agents' tokens came from the instances' service account


def test_a_capacity_error_rolls_the_gang_and_its_gpu_cluster_back(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,
    tmp_path: Path,
) -> None:
    backend = backend_for(nebius_fake, vms, tmp_path)
    nebius_fake.set_capacity("gpu-h100-sxm", "8gpu-128vcpu-1600gb", 1)  # rank 1 does not fit
    with pytest.raises(CapacityError, match="not enough resources"):
        backend.launch(LaunchRequest("big", 1, pool_of(backend), 2, gpu_job("big", "sleep 30")))
    assert len(nebius_fake.created) == 2  # rank 0 was made, rank 1 refused
    assert all(i.status.state == i.status.state.DELETING for i in vms.instances(job="big"))
    # rolled back: no events, nothing active; the GPU cluster goes once Nebius has let go of rank 0
    all_gone(backend, nebius_fake, vms)
    # the same refusal in the Create's operation rather than the call
    nebius_fake.refuse_in_operation = True
    backend.launch(LaunchRequest("one", 1, pool_of(backend), 1, gpu_job("one", "sleep 30", 1)))
    with pytest.raises(CapacityError, match="not enough resources"):
        backend.launch(LaunchRequest("two", 1, pool_of(backend), 1, gpu_job("two", "sleep 30", 1)))
    backend.stop("one", 1, grace_seconds=0.0)
    all_gone(backend, nebius_fake, vms)


def test_stop_gives_the_job_sigterm_and_a_preempted_instance_is_lost(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,
    tmp_path: Path,
) -> None:
    backend = backend_for(nebius_fake, vms, tmp_path)
    saver = "trap 'echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    backend.launch(LaunchRequest("s", 1, pool_of(backend), 2, gpu_job("s", saver)))
    spot = pool_of(backend, H100_1, Purchase.SPOT)
    backend.launch(LaunchRequest("p", 1, spot, 2, gpu_job("p", saver)))
    assert all(r.spec.HasField("preemptible") for r in nebius_fake.created[2:])
    poll_until(backend, {("s", EventKind.STARTED), ("p", EventKind.STARTED)})
    ready = [i.metadata.id for i in vms.instances(job="s") + vms.instances(job="p")]
    assert eventually(lambda: all("ready" in vms.console(vm) for vm in ready), 10)
    backend.stop("s", 1, grace_seconds=15.0)
    gang = vms.instances(gone=True, job="s")  # being deleted by now: as the agents left them
    assert len(gang) == 2 and all(labels(i).get("overcast-exit") == "143" for i in gang)
    assert all(labels(i).get("overcast-sigterm") == "1" for i in gang)
    assert all("saved" in vms.console(i.metadata.id) for i in gang)
    # Nebius stops a preemptible instance when it takes it back: the gang is reported preempted
    rank1 = next(i for i in vms.instances(job="p") if labels(i)["overcast-rank"] == "1")
    nebius_fake.preempt(rank1.metadata.id)
    (lost,) = poll_until(backend, {("p", EventKind.PREEMPTED)})
    assert "node lost" in lost.detail and rank1.metadata.name in lost.detail
    backend.stop("p", 1, grace_seconds=0.0)  # what the loop does with a preempted gang
    all_gone(backend, nebius_fake, vms)


def test_a_gang_deleted_outside_overcast_is_reported_lost(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,
    tmp_path: Path,
) -> None:
    from nebius.api.nebius.compute.v1 import DeleteInstanceRequest

    backend = backend_for(nebius_fake, vms, tmp_path)
    backend.launch(LaunchRequest("gone", 1, pool_of(backend, H100_1), 1, gpu_job("g", "sleep 60", 1)))
    poll_until(backend, {("gone", EventKind.STARTED)})
    (inst,) = vms.instances(job="gone")
    nebius_fake.delete_instance(DeleteInstanceRequest(id=inst.metadata.id))  # a click in the console
    (lost,) = poll_until(backend, {("gone", EventKind.PREEMPTED)})  # Nebius forgets it: no labels left
    assert "no longer listed by Nebius" in lost.detail or "DELETING" in lost.detail
    backend.stop("gone", 1, grace_seconds=0.0)
    all_gone(backend, nebius_fake, vms)


class LateHead(NebiusVmHost):
    """Rank 0's agent is labelled up as its VM boots, but looks for its gang 3 s later: rank 1 sees the
    whole gang, runs a job of a moment and stops its instance before rank 0 looks."""

    def _user_data(self, vm: str) -> str | None:
        found = self.fake.find(vm)
        if found is None or found.inst.metadata.labels.get("overcast-rank") != "0":
            return super()._user_data(vm)
        with self.fake.lock:
            found.inst.metadata.labels["overcast-agent"] = "up"
        return base64.b64encode(b"sleep 3\n" + found.user_data.encode()).decode()


def test_a_rank_that_looks_late_counts_a_rank_whose_job_already_ended(
    nebius_fake: FakeNebius,  # noqa: F811
    tmp_path: Path,
) -> None:
    late = LateHead(nebius_fake, tmp_path / "vms").start()
    try:
        backend = backend_for(nebius_fake, late, tmp_path)
        backend.launch(LaunchRequest("q", 1, pool_of(backend, H100_1), 2, gpu_job("q", "echo quick")))
        events = poll_until(backend, {("q", EventKind.SUCCEEDED)}, timeout=20)
        # STARTED only when a poll saw both ranks up before rank 1 ended: the job is a moment long
        assert [e.kind for e in events][-1:] == [EventKind.SUCCEEDED] and len(events) <= 2
        all_gone(backend, nebius_fake, late)
    finally:
        late.close()


def test_a_gang_whose_agent_never_starts_fails_instead_of_running_forever(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,
    tmp_path: Path,
) -> None:
    backend = backend_for(nebius_fake, vms, tmp_path, python="no-such-python3", agent_timeout_seconds=1.0)
    backend.launch(LaunchRequest("broken", 1, pool_of(backend, H100_1), 1, gpu_job("b", "true", 1)))
    assert not nebius_fake.clusters  # one node: no GPU cluster
    events = poll_until(backend, {("broken", EventKind.FAILED)}, timeout=15)
    assert [(e.kind, e.detail) for e in events] == [(EventKind.FAILED, NO_AGENT)]  # never STARTED
    backend.stop("broken", 1, grace_seconds=0.0)
    assert backend.poll() == [] and backend.active() == []


def test_a_nebius_entry_of_the_fleet_file_runs_a_gang_through_the_loop(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEBIUS_IAM_TOKEN", TOKEN)  # the SDK's own default credentials
    text = f"""\
nebius:
  - name: fi
    project_id: {PROJECT}
    region: {REGION}
    endpoint: "{nebius_fake.address}"
    insecure: true
    instance_types: [{H100}]
    subnet_id: vpcsubnet-e00test
    infiniband_fabric: {FABRIC}
    service_account_id: serviceaccount-e00test
    token_endpoint: {vms.token_url}
    max_nodes: 2
"""
    job = gpu_job("hello", "echo hello from $OVERCAST_NODE_RANK of $OVERCAST_NUM_NODES", 2)
    job_id = run_fleet_job(text, "nebius:fi", tmp_path, job, lambda s: s is not JobState.PENDING)
    consoles = [vms.console(vm) for vm in vms.booted()]
    assert sorted("hello from" in text for text in consoles) == [True, True], consoles
    assert all(r.metadata.labels["overcast-job"] == job_id for r in nebius_fake.created)
