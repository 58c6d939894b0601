"""The official Nebius SDK against the local fake (tests/fixtures/nebius_fake.py), without the backend:
the wire format, the operations, Nebius's capacity error and the labels' optimistic locking."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from overcast.backends.nebius_client import NebiusApi, NebiusError, NebiusSettings
from tests.fixtures.nebius_fake import (  # noqa: F401  (the fixtures; skips without the SDK)
    PROJECT,
    TOKEN,
    FakeNebius,
    Refused,
    nebius_fake,
    nebius_server,
)


def create_request(name: str) -> Any:
    from nebius.api.nebius.common.v1 import ResourceMetadata
    from nebius.api.nebius.compute.v1 import (
        AttachedDiskSpec,
        CreateInstanceRequest,
        DiskSpec,
        InstanceSpec,
        ManagedDisk,
        NetworkInterfaceSpec,
        ResourcesSpec,
        SourceImageFamily,
    )

    image = SourceImageFamily(image_family="ubuntu22.04-cuda12")
    disk = AttachedDiskSpec(managed_disk=ManagedDisk(name="boot", spec=DiskSpec(source_image_family=image)))
    spec = InstanceSpec(
        resources=ResourcesSpec(platform="cpu-d3", preset="4vcpu-16gb"),
        boot_disk=disk,
        network_interfaces=[NetworkInterfaceSpec(name="eth0", subnet_id="vpcsubnet-1")],
    )
    meta = ResourceMetadata(parent_id=PROJECT, name=name, labels={"overcast-job": "j"})
    return CreateInstanceRequest(metadata=meta, spec=spec)


def test_the_sdk_creates_gets_and_is_refused_capacity_by_the_fake(nebius_fake: FakeNebius) -> None:  # noqa: F811
    from nebius.aio.service_error import RequestError
    from nebius.aio.token.static import Bearer
    from nebius.aio.token.token import Token
    from nebius.api.nebius.compute.v1 import GetInstanceRequest, InstanceServiceClient
    from nebius.base.options import INSECURE
    from nebius.base.resolver import Constant
    from nebius.sdk import SDK

    address = nebius_fake.address
    sdk = SDK(resolver=Constant(address), address_options={address: [(INSECURE, True)]},
              credentials=Bearer(Token(TOKEN)), user_agent_prefix="overcast-test/1")  # fmt: skip
    try:
        service = InstanceServiceClient(sdk)
        op = service.create(create_request("oc-1")).wait()
        op.sync_wait()
        assert op.successful()
        got = service.get(GetInstanceRequest(id=op.resource_id)).wait()
        assert (got.metadata.name, got.metadata.labels["overcast-job"]) == ("oc-1", "j")
        assert got.spec.resources.preset == "4vcpu-16gb"
        nebius_fake.set_capacity("cpu-d3", "4vcpu-16gb", 1)
        with pytest.raises(RequestError) as err:
            service.create(create_request("oc-2"), retries=1).wait()
        assert err.value.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "not enough resources" in str(err.value.status.message)
    finally:
        sdk.sync_close()


def test_labels_are_read_modified_and_written_on_the_resource_version(nebius_fake: FakeNebius) -> None:  # noqa: F811
    conf = NebiusSettings(name="t", project_id=PROJECT, region="", instance_types=(), subnet_id="",
                          endpoint=nebius_fake.address, insecure=True)  # fmt: skip
    api = NebiusApi(conf, credentials=TOKEN)
    try:
        iid = api.create(create_request("oc-3"))
        # another writer got in between this writer's read and write: its Update is refused, read again
        nebius_fake.fail_next["InstanceService.Update"] = Refused(grpc.StatusCode.ABORTED, "stale version")
        api.set_labels(iid, {"overcast-stop": "1"})
        api.set_labels(iid, {"overcast-agent": "up"})
        found = dict(api.get(iid).metadata.labels)
        assert found == {"overcast-job": "j", "overcast-stop": "1", "overcast-agent": "up"}
        assert api.by_name("oc-3").metadata.id == iid and api.by_name("nothing") is None
        with pytest.raises(NebiusError, match="NOT_FOUND"):
            api.get("computeinstance-missing")
    finally:
        api.close()
