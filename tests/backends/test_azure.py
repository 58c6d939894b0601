"""The Azure backend against a fake ARM on loopback (tests/fixtures/azure_fake.py) through the official
SDK (azure-mgmt-compute), unchanged but for its base_url and a fake credential.

The fake has no machines: ``VmEmulator`` (tests/backends/azure_vm.py) plays the hypervisor and runs each
VM's custom data as local processes, with an instance metadata service, so the agent and job really run.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core import MatchConditions
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceModifiedError

from overcast.backends.azure import NO_AGENT, AzureBackend, vm_name
from overcast.backends.azure_client import AzureApiError, AzureSettings, add_tags, translate
from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.catalog.pools import pool_id
from overcast.placement.pool import Pool, Purchase
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources, SpotPolicy
from overcast.store import JobState, Store
from tests.backends.azure_vm import VmEmulator
from tests.backends.cloud_checks import eventually, fast_loop, run_fleet_job, wait_events
from tests.control.harness import reference_result, run_until, state, train_command
from tests.fixtures.azure_fake import (  # noqa: F401 (fixtures)
    REGION,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    FakeArm,
    arm_tls,
    fake_arm,
)

H100 = "Standard_ND96isr_H100_v5"
RG_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
SUBNET = f"{RG_ID}/providers/Microsoft.Network/virtualNetworks/v/subnets/s"
IDENTITY = f"{RG_ID}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/overcast-node"


class FakeCredential:
    """A TokenCredential that hands out a static token (the fake ARM only checks there is one)."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-controller-token", int(time.time()) + 3600)


def settings(arm: FakeArm, **kw: object) -> AzureSettings:
    base: dict = dict(name="eus", subscription_id=SUBSCRIPTION, resource_group=RESOURCE_GROUP, region=REGION,
                      vm_sizes=(H100,), image="microsoft-dsvm:ubuntu-hpc:2204:latest", subnet_id=SUBNET,
                      identity_id=IDENTITY, zones=("1", "2"), max_nodes=4, endpoint=arm.endpoint,
                      agent_poll_seconds=0.2, lro_poll_seconds=0.05)  # fmt: skip
    return AzureSettings(**(base | kw))


def backend_of(arm: FakeArm, home: Path, **kw: object) -> AzureBackend:
    return AzureBackend(settings(arm, **kw), home=home, credential=FakeCredential())


def gpu_job(name: str, run: str, nodes: int = 2, spot: SpotPolicy = SpotPolicy.NEVER) -> JobSpec:
    resources = Resources(accelerators=(AcceleratorRequest(name="H100", count=8),), spot=spot)
    return JobSpec(name=name, run=run, num_nodes=nodes, resources=resources)


def pool_of(backend: AzureBackend, zone: str, purchase: Purchase) -> Pool:
    wanted = pool_id("azure", REGION, zone, H100, purchase)
    return next(p for p in backend.pools() if p.id == wanted)


def gang_vms(arm: FakeArm, job: str, attempt: int | None = None) -> list[dict]:
    with arm.lock:
        return [
            vm
            for vm in arm.vms.values()
            if vm["tags"].get("overcast-job") == job
            and (attempt is None or vm["tags"].get("overcast-attempt") == str(attempt))
        ]


@pytest.fixture
def vms(fake_arm: FakeArm, tmp_path: Path) -> Iterator[VmEmulator]:  # noqa: F811
    emulator = VmEmulator(fake_arm, tmp_path / "vms").start()
    try:
        yield emulator
    finally:
        emulator.close()


def test_pools_and_a_two_node_gang_through_the_sdk(fake_arm: FakeArm, tmp_path: Path) -> None:  # noqa: F811
    backend = backend_of(fake_arm, tmp_path)
    pools = backend.pools()
    # the catalog prices Azure per region: one pool per configured zone, size and purchase
    assert {(p.zone, p.purchase) for p in pools} == {
        (z, b) for z in "12" for b in Purchase if b is not Purchase.RESERVED
    }
    assert all(p.capacity_nodes == 4 and p.used_nodes == 0 and p.backend == "azure:eus" for p in pools)
    assert all(p.gpus_per_node == 8 and p.accelerator == "H100" for p in pools)
    spot = pool_of(backend, "2", Purchase.SPOT)
    assert spot.price_per_node_hour < pool_of(backend, "2", Purchase.ON_DEMAND).price_per_node_hour
    with pytest.raises(ValueError, match=r"no catalog offer for standard_nope"):
        backend_of(fake_arm, tmp_path, vm_sizes=("Standard_Nope",))

    env = {"OVERCAST_JOB_ID": "j1", "OVERCAST_ATTEMPT": "1", "OVERCAST_CHECKPOINT_DIR": "az://c/ckpt j1"}
    request = LaunchRequest("j1", 1, spot, 2, gpu_job("j", "echo hi"), env)
    allocation = backend.launch(request)
    names = [vm_name("azure:eus", "j1", 1, r) for r in (0, 1)]
    assert allocation.handle == ",".join(names) and fake_arm.creates() == [names[0][:-2], *names]
    # one proximity placement group per gang, in the pool's zone, made first; both VMs are in it
    (group,) = fake_arm.groups.values()
    assert group["zones"] == ["2"] and group["properties"]["proximityPlacementGroupType"] == "Standard"
    for rank, name in enumerate(names):
        vm = fake_arm.vm(name)
        assert vm is not None and vm["properties"]["proximityPlacementGroup"] == {"id": group["id"]}
        assert (
            vm is not None and vm["zones"] == ["2"] and vm["properties"]["provisioningState"] == "Succeeded"
        )
        props = vm["properties"]
        assert (props["priority"], props["evictionPolicy"]) == ("Spot", "Delete")
        assert props["hardwareProfile"]["vmSize"] == H100
        assert vm["tags"] == {
            "overcast-backend": "azure:eus", "overcast-job": "j1", "overcast-attempt": "1",
            "overcast-pool": spot.id, "overcast-nodes": "2", "overcast-rank": str(rank),
        }  # fmt: skip
        assert list(vm["identity"]["userAssignedIdentities"]) == [IDENTITY]
    script = base64.b64decode(fake_arm.custom_data[f"{RESOURCE_GROUP}/{names[0]}".lower()]).decode()
    assert "export OVERCAST_CHECKPOINT_DIR='az://c/ckpt j1'" in script
    assert "export OVERCAST_NUM_NODES=2" in script and "echo hi" in script
    assert "-m overcast.backends.azure_agent" in script
    # the same attempt again (a replayed apply) creates nothing
    puts = len(fake_arm.creates())
    assert backend.launch(request).handle == allocation.handle and len(fake_arm.creates()) == puts
    assert backend.active() == [("j1", 1)]
    assert pool_of(backend, "2", Purchase.SPOT).used_nodes == 2
    # tags are added with the VM's ETag: a write based on a stale read fails instead of dropping a tag
    stale = backend.compute.virtual_machines.get(RESOURCE_GROUP, names[0])
    add_tags(backend.compute, RESOURCE_GROUP, names[0], {"overcast-exit": "0"})
    with pytest.raises(ResourceModifiedError):
        backend.compute.virtual_machines.begin_update(
            RESOURCE_GROUP, names[0], {"tags": dict(stale.tags) | {"overcast-stop": "1"}},
            etag=stale.etag, match_condition=MatchConditions.IfNotModified,
        ).result()  # fmt: skip
    assert fake_arm.vm(names[0])["tags"]["overcast-exit"] == "0"  # type: ignore[index]
    backend.stop("j1", 1, grace_seconds=0.0)
    assert backend.poll() == [] and backend.active() == []
    assert eventually(lambda: gang_vms(fake_arm, "j1") == [])  # deleted (ARM forgets a deleted VM)
    assert backend.poll() == [] and fake_arm.groups == {}  # then the group, once it is empty


def test_capacity_errors_roll_back_and_outages_map_to_provider_down(
    fake_arm: FakeArm,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = backend_of(fake_arm, tmp_path)
    pool = pool_of(backend, "1", Purchase.ON_DEMAND)
    # ARM accepts both VMs; the second's allocation fails in its long-running operation: the first is
    # deleted again, and so is the failed one (it exists, provisioningState Failed)
    fake_arm.set_capacity(H100, "1", 1, "ZonalAllocationFailed")
    with pytest.raises(CapacityError, match="ZonalAllocationFailed"):
        backend.launch(LaunchRequest("big", 1, pool, 2, gpu_job("j", "true")))
    assert len(fake_arm.creates()) == 3 and gang_vms(fake_arm, "big") == []  # a group + 2 VMs
    assert fake_arm.groups == {}  # the group is deleted too
    assert backend.active() == [] and backend.poll() == []  # nothing left behind, nothing to report
    for code in (
        "SkuNotAvailable",
        "OperationNotAllowed",
        "AllocationFailed",
        "OverconstrainedAllocationRequest",
    ):
        fake_arm.set_capacity(H100, "1", 0, code)
        with pytest.raises(CapacityError, match=code):
            backend.launch(LaunchRequest(f"x-{code}", 1, pool, 1, gpu_job("j", "true", nodes=1)))
    assert fake_arm.vms == {} and backend.active() == []
    fake_arm.set_capacity(H100, "1", 1)
    backend.launch(LaunchRequest("small", 1, pool, 1, gpu_job("j", "true", nodes=1)))  # 1 node fits
    assert backend.active() == [("small", 1)]

    down = backend_of(fake_arm, tmp_path / "down", endpoint="https://127.0.0.1:9")
    with pytest.raises(ProviderDown, match="unreachable"):
        down.launch(LaunchRequest("x", 1, pool, 1, gpu_job("j", "true", nodes=1)))
    assert {p.health.value for p in down.pools()} == {"down"}

    class NoToken:
        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            raise ClientAuthenticationError("no credential in the chain")

    denied = AzureBackend(settings(fake_arm), home=tmp_path / "denied", credential=NoToken())
    with pytest.raises(ProviderDown, match="authentication"):
        denied.active()

    def error(code: str, status: int, message: str = "m") -> HttpResponseError:
        from azure.core.pipeline.transport import HttpResponse  # noqa: F401 (only the shape matters)

        exc = HttpResponseError(message=f"({code}) {message}")
        exc.status_code = status
        exc.error = type("E", (), {"code": code, "message": message})()  # type: ignore[assignment]
        return exc

    assert isinstance(translate("create VM", error("AuthorizationFailed", 403)), ProviderDown)
    assert isinstance(translate("create VM", error("InternalServerError", 500)), ProviderDown)
    not_quota = translate("create VM", error("OperationNotAllowed", 409, "the VM is being deleted"))
    assert isinstance(not_quota, AzureApiError)
    bad = translate("create VM", error("InvalidParameter", 400))
    assert isinstance(bad, AzureApiError) and "InvalidParameter" in str(bad)


def _result_lines(vms: VmEmulator, names: list[str]) -> list[str]:
    text = "".join(vms.console(name) for name in names)
    return [line for line in text.splitlines() if line.startswith("RESULT")]


def test_loop_fails_over_on_capacity_resumes_after_an_eviction_and_reconciles_after_restart(
    fake_arm: FakeArm,  # noqa: F811
    vms: VmEmulator,
    tmp_path: Path,
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = fast_loop(tmp_path, store, backend_of(fake_arm, tmp_path))
    fake_arm.set_capacity(H100, "1", 0, "ZonalAllocationFailed")  # zone 1 is sold out
    record = store.submit(
        "default", gpu_job("train", train_command(steps=150, step_seconds=0.03), 2, SpotPolicy.REQUIRED)
    )
    ckpt = tmp_path / "checkpoints" / record.id / "checkpoint.npz"
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING and ckpt.exists())
    first = state(store, record.id)
    refused = pool_id("azure", REGION, "1", H100, Purchase.SPOT)
    assert first.pool_id == pool_id("azure", REGION, "2", H100, Purchase.SPOT)
    assert store.pool_health()[refused].health == "out-of-capacity"
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("capacity-error") < kinds.index("started")
    gang = gang_vms(fake_arm, record.id, first.attempt)
    assert len(gang) == 2 and {vm["zones"][0] for vm in gang} == {"2"}

    # The loop dies; a new loop with a new backend (same store and home) finds the gang running in ARM.
    loop = fast_loop(tmp_path, store, backend_of(fake_arm, tmp_path))
    run_until(loop, lambda: loop.leader)
    after = state(store, record.id)
    assert (after.state, after.attempt) == (JobState.RUNNING, first.attempt)
    assert "requeued" not in [e.kind for e in store.events(job_id=record.id)]

    # A spot eviction without notice (policy Delete): rank 1's VM is gone from ARM.
    owner = gang[0]["tags"]["overcast-backend"]
    fake_arm.delete_from_outside(vm_name(owner, record.id, first.attempt, 1))
    run_until(loop, lambda: state(store, record.id).state.terminal, timeout=40)
    final = state(store, record.id)
    assert (final.state, final.restarts, final.attempt) == (JobState.SUCCEEDED, 1, first.attempt + 1)
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("preempted") < kinds.index("requeued") < kinds.index("succeeded")
    final_names = [vm_name(owner, record.id, final.attempt, r) for r in (0, 1)]
    assert _result_lines(vms, final_names) == [reference_result(tmp_path / "ref", steps=150)] * 2
    resumed = [re.search(r"resumed from checkpoint at step (\d+)", vms.console(n)) for n in final_names]
    assert all(m and 0 < int(m[1]) < 150 for m in resumed), resumed  # from mid-run, not from the end
    # every VM of the job is deleted, and both attempts' placement groups once they were empty
    run_until(loop, lambda: gang_vms(fake_arm, record.id) == [] and fake_arm.groups == {})
    backend = loop.backends["azure:eus"]
    assert backend.poll() == [] and backend.active() == []


def test_stop_and_a_preempt_event_give_the_job_sigterm_through_the_agent_and_failures_are_reported(
    fake_arm: FakeArm,  # noqa: F811
    vms: VmEmulator,
    tmp_path: Path,
) -> None:
    backend = backend_of(fake_arm, tmp_path)
    pool = pool_of(backend, "2", Purchase.ON_DEMAND)
    saver = "trap 'echo saved; exit 143' TERM; echo ready; while true; do sleep 0.05; done"
    backend.launch(LaunchRequest("s", 1, pool, 2, gpu_job("s", saver)))
    backend.launch(LaunchRequest("f", 1, pool, 1, gpu_job("f", "exit 3", nodes=1)))
    spot = pool_of(backend, "2", Purchase.SPOT)
    backend.launch(LaunchRequest("n", 1, spot, 1, gpu_job("n", saver, nodes=1)))
    wanted = {("s", EventKind.STARTED), ("f", EventKind.FAILED), ("n", EventKind.STARTED)}
    events = wait_events(backend, lambda evs: wanted <= {(e.job_id, e.kind) for e in evs})
    assert wanted <= {(e.job_id, e.kind) for e in events}
    failed = next(e for e in events if e.kind is EventKind.FAILED)
    assert failed.exit_code == 3 and "exited with 3" in failed.detail
    # STARTED means every agent is up, not that the job has set its trap yet
    ready = [vm_name("azure:eus", "s", 1, r) for r in (0, 1)] + [vm_name("azure:eus", "n", 1, 0)]
    assert eventually(lambda: all("ready" in vms.console(vm) for vm in ready))
    # the failed node tagged its exit and deallocated itself; the backend deletes it after the report
    assert wait_events(backend, lambda _: gang_vms(fake_arm, "f") == []) == []
    # Azure's spot eviction notice (a Preempt scheduled event): the job saves and exits
    noticed = vm_name("azure:eus", "n", 1, 0)
    vms.evict_notice(noticed)
    events = wait_events(backend, lambda evs: any(e.job_id == "n" for e in evs), timeout=15)
    preempted = next(e for e in events if e.job_id == "n")
    assert preempted.kind is EventKind.PREEMPTED and "SIGTERM" in preempted.detail
    assert "saved" in vms.console(noticed) and "scheduled event Preempt" in vms.console(noticed)
    started = time.monotonic()
    backend.stop("s", 1, grace_seconds=15.0)
    assert time.monotonic() - started < 10  # the job saved and the agents ended their VMs
    names = [vm_name("azure:eus", "s", 1, r) for r in (0, 1)]
    assert all("saved" in vms.console(n) and "exit 143" in vms.console(n) for n in names)
    assert eventually(lambda: gang_vms(fake_arm, "s") == [])  # stop() deleted the gang's VMs
    assert backend.poll() == [] and backend.active() == []


def test_a_gang_whose_agent_never_starts_fails_instead_of_running_forever(
    fake_arm: FakeArm,  # noqa: F811
    vms: VmEmulator,
    tmp_path: Path,
) -> None:
    # an image without overcast: the custom data cannot start the agent, and the VM would bill forever
    backend = backend_of(fake_arm, tmp_path, python="no-such-python3", agent_timeout_seconds=1.0)
    pool = pool_of(backend, "1", Purchase.ON_DEMAND)
    backend.launch(LaunchRequest("broken", 1, pool, 1, gpu_job("b", "true", nodes=1)))
    events = wait_events(backend, lambda evs: bool(evs), timeout=15)
    assert [(e.kind, e.detail) for e in events] == [(EventKind.FAILED, NO_AGENT)]  # never STARTED
    assert "no-such-python3" in vms.console(vm_name("azure:eus", "broken", 1, 0))  # command not found
    backend.stop("broken", 1, grace_seconds=0.0)  # what the loop does after a failure
    assert eventually(lambda: fake_arm.vms == {})
    assert backend.poll() == [] and backend.active() == []


def test_an_azure_entry_of_the_fleet_file_runs_jobs_through_the_loop(
    fake_arm: FakeArm,  # noqa: F811
    vms: VmEmulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No credential in code: DefaultAzureCredential finds the controller's managed identity (here the
    # emulator's IMDS, as on an Azure VM that runs `overcast up`)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"{vms.imds_url}/controller")
    text = f"""\
azure:
  - name: eus
    subscription_id: {SUBSCRIPTION}
    resource_group: {RESOURCE_GROUP}
    region: {REGION}
    zones: ["3"]
    endpoint: {fake_arm.endpoint}
    vm_sizes: [{H100}]
    image: microsoft-dsvm:ubuntu-hpc:2204:latest
    subnet_id: {SUBNET}
    identity_id: {IDENTITY}
    max_nodes: 2
"""
    job = gpu_job("hello", "sleep 1; echo hello from $OVERCAST_NODE_RANK", 1)
    job_id = run_fleet_job(text, "azure:eus", tmp_path, job, lambda s: s is JobState.RUNNING)
    (vm,) = [name for name in vms.booted() if job_id.lower() in name]
    assert "hello from 0" in vms.console(vm)


def test_a_poll_during_stops_grace_leaves_the_live_vms_alone(fake_arm: FakeArm, tmp_path: Path) -> None:  # noqa: F811
    backend = backend_of(fake_arm, tmp_path)
    backend.launch(
        LaunchRequest("g", 1, pool_of(backend, "1", Purchase.ON_DEMAND), 1, gpu_job("g", "sleep 60", 1))
    )
    stopper = threading.Thread(target=backend.stop, args=("g", 1, 2.0))  # the loop's Stopper thread
    started = time.monotonic()
    stopper.start()
    while time.monotonic() - started < 1.2:  # within the grace the loop keeps polling: no agent ends it
        assert backend.poll() == []
        assert [vm["properties"]["provisioningState"] for vm in gang_vms(fake_arm, "g")] == ["Succeeded"]
        time.sleep(0.1)
    stopper.join()
    assert eventually(lambda: gang_vms(fake_arm, "g") == [])  # the grace is over: stop() deleted it
    assert backend.poll() == [] and backend.active() == []
