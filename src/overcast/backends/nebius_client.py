"""Nebius AI Cloud settings of one backend, a small synchronous face over the official SDK (``nebius``,
gRPC: ``nebius.compute.v1`` InstanceService and GpuClusterService), and how its errors map onto
overcast's.

- A call that fails with RESOURCE_EXHAUSTED ("not enough resources", a quota) is ``CapacityError``: the
  loop's cooldown and failover do better than retrying here. UNAVAILABLE, UNAUTHENTICATED,
  PERMISSION_DENIED, DEADLINE_EXCEEDED and INTERNAL are ``ProviderDown``. Anything else is
  ``NebiusError`` (with the gRPC code: NOT_FOUND and ALREADY_EXISTS are what the backend looks at).
- Every call gets ``CALL_TIMEOUT`` seconds (the SDK retries transient failures within it); a mutating
  call's operation is waited for up to ``operation_timeout_seconds``.
- Labels are replaced as a whole by Update, so ``set_labels`` is a read-modify-write guarded by the
  instance's ``resource_version`` (Nebius refuses a stale version): the backend (its stop request) and
  the node's agent (its state) both write labels, and neither may undo the other's write.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any

from overcast.backends.base import CapacityError, ProviderDown

CALL_TIMEOUT = 30.0  # seconds per call, the SDK's own retries included
LABEL_TRIES = 5  # read-modify-write rounds before a label update gives up
LIVE_STATES = frozenset({"CREATING", "STARTING", "RUNNING", "UPDATING", "UNSPECIFIED"})
GONE_STATES = frozenset({"STOPPING", "STOPPED", "DELETING", "ERROR"})
CAPACITY_CODES = frozenset({"RESOURCE_EXHAUSTED"})
DOWN_CODES = frozenset(
    {"UNAVAILABLE", "UNAUTHENTICATED", "PERMISSION_DENIED", "DEADLINE_EXCEEDED", "INTERNAL"}
)
STALE_CODES = frozenset({"ABORTED", "FAILED_PRECONDITION"})  # a stale resource_version: read again
DEFAULT_TOKEN_ENDPOINT = "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token"
TAG = "overcast-"
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


class NebiusError(RuntimeError):
    """A Nebius API error that is neither capacity nor an outage (a bad subnet, image, preset...)."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"Nebius {operation} failed: {code}: {message}")
        self.code = code


@dataclass(frozen=True, slots=True)
class NebiusSettings:
    """One Nebius project (one region) that overcast may create instances in.

    ``instance_types`` (the catalog's ``<platform>_<preset>`` names) x purchase options are the pools; each
    holds at most ``max_nodes`` of our instances at once (our quota, not Nebius's)."""

    name: str
    project_id: str
    region: str
    instance_types: tuple[str, ...]
    subnet_id: str
    image_family: str = "ubuntu22.04-cuda12"  # boot disk image: python3 and overcast must be installed
    disk_size_gb: int = 200
    infiniband_fabric: str = ""  # the GPU cluster's fabric for gangs of > 1 node; "": no GPU cluster
    service_account_id: str = ""  # the nodes' service account (get/update/stop instances in the project)
    token_endpoint: str = DEFAULT_TOKEN_ENDPOINT  # where a node's agent gets its service account's token
    max_nodes: int = 4
    endpoint: str | None = None  # host:port of the API; None: the SDK's own resolution (api.nebius.cloud)
    insecure: bool = False  # plaintext gRPC to ``endpoint`` (a local fake in tests)
    credentials_file: str | None = None  # a service account credentials JSON; None: the SDK's default
    purchases: tuple[str, ...] = ("on-demand", "spot")
    python: str = "python3"
    bootstrap: str = ""
    logs_url: str | None = None  # where the agent uploads the job's output (backends/cloud_logs.py)
    agent_poll_seconds: float = 5.0
    agent_timeout_seconds: float = 1200.0  # boot + bootstrap: after this, a gang without agents has FAILED
    operation_timeout_seconds: float = 300.0
    scope: str = ""  # see AwsSettings.scope: two backends of one project must not see each other

    @property
    def owner(self) -> str:
        """Which backend created an instance (its ``overcast-backend`` label is ``label_value`` of it)."""
        return f"nebius:{self.name}" + (f"/{self.scope}" if self.scope else "")


def label_value(text: str) -> str:
    """``text`` as a conservative label value (lowercase, digits, ``.-_``, at most 63): itself when it is
    one, else a slug plus a hash of the original, so two different values never share a label."""
    if _LABEL.fullmatch(text):
        return text
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:54]
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}".lstrip("-")


def split_type(instance_type: str) -> tuple[str, str]:
    """The catalog's ``<platform>_<preset>`` as (platform, preset)."""
    platform, _, preset = instance_type.partition("_")
    return platform, preset


def state_of(instance: Any) -> str:
    state = instance.status.state if instance.status else None
    return state.name if state is not None else "UNSPECIFIED"


def translate(operation: str, exc: Exception) -> Exception:
    """An SDK exception as overcast's: CapacityError, ProviderDown or NebiusError."""
    status = getattr(exc, "status", None)
    code_obj = getattr(status, "code", None)
    code = getattr(code_obj, "name", "") or ""
    message = str(getattr(status, "message", "") or exc)
    if code in CAPACITY_CODES:
        return CapacityError(f"Nebius {operation}: {message}")
    if code in DOWN_CODES or not code:  # no gRPC status: the SDK could not reach the API at all
        return ProviderDown(f"Nebius {operation}: {code or type(exc).__name__}: {message}")
    return NebiusError(operation, code, message)


def make_sdk(settings: NebiusSettings, credentials: Any = None) -> Any:
    """The SDK channel for ``settings``: ``credentials`` (a token, a bearer) over the settings' file over
    the SDK's own defaults (``NEBIUS_IAM_TOKEN``, the CLI's config). Without the SDK installed, the
    backend's pools are DOWN with a line saying so, and the loop goes on with the other backends."""
    # gRPC's at-fork handlers restart its threads in a forked child (the batch solver forks: background.py);
    # off unless the user set it, and it must be set before grpc is first imported
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    try:
        from nebius.base.options import INSECURE
        from nebius.base.resolver import Constant
        from nebius.sdk import SDK
    except ImportError as exc:
        raise ProviderDown(
            f"Nebius: the SDK is not installed (pip install 'nebius>=0.6,<0.7'): {exc}"
        ) from None

    kw: dict[str, Any] = {"user_agent_prefix": "overcast"}
    if settings.endpoint:
        kw["resolver"] = Constant(settings.endpoint)
        if settings.insecure:
            kw["address_options"] = {settings.endpoint: [(INSECURE, True)]}
    if credentials is not None:
        kw["credentials"] = credentials
    elif settings.credentials_file:
        kw["credentials_file_name"] = os.path.expanduser(settings.credentials_file)
    try:
        return SDK(**kw)
    except Exception as exc:  # no credentials anywhere, an unreadable file
        raise ProviderDown(f"Nebius: cannot make the SDK client: {exc}") from exc


class NebiusApi:
    """What the backend and the agent call, synchronously, with errors translated."""

    def __init__(self, settings: NebiusSettings, credentials: Any = None) -> None:
        self.settings = settings
        self.sdk = make_sdk(settings, credentials)
        from nebius.api.nebius.compute.v1 import GpuClusterServiceClient, InstanceServiceClient

        self.instances = InstanceServiceClient(self.sdk)
        self.clusters = GpuClusterServiceClient(self.sdk)

    def close(self) -> None:
        self.sdk.sync_close()

    def call(self, operation: str, method: Any, request: Any, retries: int | None = None) -> Any:
        """One call, within CALL_TIMEOUT; ``retries``: the SDK's attempts (None: its default, 3)."""
        kw: dict[str, Any] = {"timeout": CALL_TIMEOUT} | ({"retries": retries} if retries else {})
        try:
            return method(request, **kw).wait()
        except Exception as exc:
            raise translate(operation, exc) from exc

    def mutate(self, operation: str, method: Any, request: Any, retries: int | None = None) -> str:
        """Call, wait for the operation; the id of the resource it was about."""
        op = self.call(operation, method, request, retries)
        try:
            op.sync_wait(timeout=self.settings.operation_timeout_seconds)
        except Exception as exc:
            raise translate(operation, exc) from exc
        return str(op.resource_id)

    # -- instances ----------------------------------------------------------------------------------

    def list_instances(self) -> list[Any]:
        """Every instance of the project (all pages)."""
        from nebius.api.nebius.compute.v1 import ListInstancesRequest

        return self.pages("list instances", self.instances.list, ListInstancesRequest)

    def pages(self, operation: str, method: Any, request_type: Any) -> list[Any]:
        """Every item of a List of the project, page by page."""
        found: list[Any] = []
        token = ""
        while True:
            req = request_type(parent_id=self.settings.project_id, page_size=100, page_token=token)
            page = self.call(operation, method, req)
            found += list(page.items)
            token = page.next_page_token
            if not token:
                return found

    def get(self, instance_id: str) -> Any:
        from nebius.api.nebius.compute.v1 import GetInstanceRequest

        return self.call("get instance", self.instances.get, GetInstanceRequest(id=instance_id))

    def by_name(self, name: str) -> Any | None:
        from nebius.api.nebius.common.v1 import GetByNameRequest

        req = GetByNameRequest(parent_id=self.settings.project_id, name=name)
        try:
            return self.call("get instance by name", self.instances.get_by_name, req)
        except NebiusError as exc:
            if exc.code == "NOT_FOUND":
                return None
            raise

    def create(self, request: Any) -> str:
        """One try: "not enough resources" now is not worth retrying here (the loop's cooldown and
        failover do better), and a replayed launch finds what an unanswered try made by name."""
        return self.mutate("create instance", self.instances.create, request, retries=1)

    def delete(self, instance_id: str) -> None:
        """Delete, without waiting for the instance to go (a later listing no longer shows it)."""
        from nebius.api.nebius.compute.v1 import DeleteInstanceRequest

        self.call("delete instance", self.instances.delete, DeleteInstanceRequest(id=instance_id))

    def stop(self, instance_id: str) -> None:
        from nebius.api.nebius.compute.v1 import StopInstanceRequest

        self.call("stop instance", self.instances.stop, StopInstanceRequest(id=instance_id))

    def set_labels(self, instance_id: str, labels: dict[str, str]) -> None:
        """Add ``labels`` to the instance's (read-modify-write on its resource version)."""
        from nebius.api.nebius.compute.v1 import UpdateInstanceRequest

        for _ in range(LABEL_TRIES):
            inst = self.get(instance_id)
            meta = inst.metadata
            meta.labels = dict(meta.labels) | labels
            try:
                self.mutate("label instance", self.instances.update,
                            UpdateInstanceRequest(metadata=meta, spec=inst.spec))  # fmt: skip
                return
            except NebiusError as exc:
                if exc.code not in STALE_CODES:
                    raise
        raise NebiusError(
            "label instance", "ABORTED", f"{instance_id} kept changing under {LABEL_TRIES} tries"
        )

    # -- GPU clusters -------------------------------------------------------------------------------

    def create_cluster(self, name: str, labels: dict[str, str]) -> str:
        """The id of the GPU cluster ``name``: created, or found when it exists (a replayed launch)."""
        from nebius.api.nebius.common.v1 import GetByNameRequest, ResourceMetadata
        from nebius.api.nebius.compute.v1 import CreateGpuClusterRequest, GpuClusterSpec

        meta = ResourceMetadata(parent_id=self.settings.project_id, name=name, labels=labels)
        req = CreateGpuClusterRequest(metadata=meta, spec=GpuClusterSpec(
            infiniband_fabric=self.settings.infiniband_fabric))  # fmt: skip
        try:
            return self.mutate("create gpu cluster", self.clusters.create, req)
        except NebiusError as exc:
            if exc.code != "ALREADY_EXISTS":
                raise
        found = self.call("get gpu cluster", self.clusters.get_by_name,
                          GetByNameRequest(parent_id=self.settings.project_id, name=name))  # fmt: skip
        return str(found.metadata.id)

    def list_clusters(self) -> list[Any]:
        """Every GPU cluster of the project (all pages)."""
        from nebius.api.nebius.compute.v1 import ListGpuClustersRequest

        return self.pages("list gpu clusters", self.clusters.list, ListGpuClustersRequest)

    def delete_cluster(self, name: str) -> None:
        """Delete the GPU cluster ``name`` (nothing when there is none); NebiusError FAILED_PRECONDITION
        while an instance is still in it."""
        from nebius.api.nebius.common.v1 import GetByNameRequest
        from nebius.api.nebius.compute.v1 import DeleteGpuClusterRequest

        req = GetByNameRequest(parent_id=self.settings.project_id, name=name)
        try:
            found = self.call("get gpu cluster", self.clusters.get_by_name, req)
        except NebiusError as exc:
            if exc.code == "NOT_FOUND":
                return
            raise
        self.mutate("delete gpu cluster", self.clusters.delete, DeleteGpuClusterRequest(id=found.metadata.id))
