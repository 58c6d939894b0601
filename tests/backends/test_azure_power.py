"""The Azure backend's power states (one status-only list of the subscription, read each poll beside the
resource group's VM list), against the fake ARM of tests/fixtures/azure_fake.py: a VM halted outside
overcast is a lost node, and an agent that ends between the two reads is not mistaken for one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from unittest.mock import Mock

import pytest
from azure.core.exceptions import HttpResponseError

from overcast.backends.azure import AzureBackend, vm_name
from overcast.backends.azure_client import add_tags
from overcast.backends.base import EventKind, LaunchRequest
from overcast.placement.pool import Purchase
from tests.backends.cloud_checks import eventually, wait_events
from tests.backends.test_azure import VmEmulator, backend_of, gang_vms, gpu_job, pool_of, vms  # noqa: F401
from tests.fixtures.azure_fake import RESOURCE_GROUP, FakeArm, arm_tls, fake_arm  # noqa: F401


def started_gang(arm: FakeArm, home: Path, nodes: int) -> AzureBackend:
    backend = backend_of(arm, home)
    pool = pool_of(backend, "1", Purchase.ON_DEMAND)
    backend.launch(LaunchRequest("g", 1, pool, nodes, gpu_job("g", "sleep 600", nodes)))
    assert [e.kind for e in wait_events(backend, bool)] == [EventKind.STARTED]
    return backend


@pytest.mark.parametrize("power", ["deallocated", "stopped"])
def test_a_vm_stopped_outside_overcast_is_a_lost_node_and_deleted(
    fake_arm: FakeArm,  # noqa: F811
    vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
    power: str,
) -> None:
    # ARM's VM list shows no power state: without the status-only list the job stayed RUNNING, billing
    backend = started_gang(fake_arm, tmp_path, 2)
    halted = vm_name("azure:eus", "g", 1, 1)
    fake_arm.power_off_from_outside(halted, power)  # the portal, or host maintenance: tags untouched
    (lost,) = wait_events(backend, bool)
    assert (
        lost.kind is EventKind.PREEMPTED and f"{halted} (rank 1) {power} without an exit code" in lost.detail
    )
    assert pool_of(backend, "1", Purchase.ON_DEMAND).used_nodes == 1  # it runs nothing
    backend.poll()  # acknowledged: the clean-up deletes the halted VM, the live rank is the loop's to stop
    assert eventually(
        lambda: [vm["name"] for vm in gang_vms(fake_arm, "g")] == [vm_name("azure:eus", "g", 1, 0)]
    )
    backend.stop("g", 1, grace_seconds=0.0)
    assert eventually(lambda: gang_vms(fake_arm, "g") == [])
    assert backend.poll() == [] and backend.active() == []


def test_vm_states_refused_at_subscription_scope(fake_arm: FakeArm, tmp_path: Path) -> None:  # noqa: F811
    backend = backend_of(fake_arm, tmp_path)
    refused = HttpResponseError(message="AuthorizationFailed: no read at subscription scope")
    refused.status_code = 403  # an identity with a role on the resource group only: not an outage
    backend.compute.virtual_machines.list_all = Mock(side_effect=refused)
    assert {p.health.value for p in backend.pools()} == {"ok"} and backend._powers() == {}


def test_an_agent_ending_between_the_two_reads_is_not_a_lost_node(
    fake_arm: FakeArm,  # noqa: F811
    vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    # whichever of the VM list and the power list a poll reads first, the agent ends right after it, as
    # azure_agent does (tag the exit, then deallocate): only powers-then-list sees the exit code
    backend = started_gang(fake_arm, tmp_path, 1)
    name = vm_name("azure:eus", "g", 1, 0)
    ended: list[str] = []

    def agent_ends_after(read: Callable[[], object], what: str) -> Callable[[], object]:
        def wrapped() -> object:
            found = read()
            if not ended:
                ended.append(what)
                exit_tags = {"overcast-exit": "0", "overcast-ended-at": "1"}
                add_tags(backend.compute, RESOURCE_GROUP, name, exit_tags)
                backend.compute.virtual_machines.begin_deallocate(RESOURCE_GROUP, name).result()
            return found

        return wrapped

    backend._list = agent_ends_after(backend._list, "VM list")  # type: ignore[method-assign]
    backend._powers = agent_ends_after(backend._powers, "power list")  # type: ignore[method-assign]
    (first,) = backend.poll()
    assert first.kind is EventKind.SUCCEEDED and first.exit_code == 0, first  # not PREEMPTED: requeued
    assert ended == ["power list"], ended
    assert fake_arm.vm(name) is not None  # the exit tag outlives the poll until the outcome is delivered


def test_a_vm_missing_from_the_power_list_is_live(
    fake_arm: FakeArm,  # noqa: F811
    vms: VmEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    # the power list is read before the VM list: a VM created (or first listed) since has no entry there,
    # which says nothing about it; only a listed halted state makes a node lost
    backend = started_gang(fake_arm, tmp_path, 2)
    rank1 = vm_name("azure:eus", "g", 1, 1)
    fake_arm.power_off_from_outside(rank1, "deallocated")
    real = backend._powers
    backend._powers = lambda: {k: v for k, v in real().items() if not k.endswith("/" + rank1)}  # type: ignore[method-assign]
    assert backend.poll() == [] and pool_of(backend, "1", Purchase.ON_DEMAND).used_nodes == 2
    backend._powers = real  # type: ignore[method-assign]
    (lost,) = backend.poll()
    assert lost.kind is EventKind.PREEMPTED and f"{rank1} (rank 1) deallocated" in lost.detail
