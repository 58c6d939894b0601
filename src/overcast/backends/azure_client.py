"""Azure settings of one backend, its ComputeManagementClient, and how ARM errors map onto overcast's.

Retries are set on purpose, not left at azure-core's defaults (10 retries, 300 s read timeouts):

- 3 attempts in all (``retry_total=2``) for 408/429/5xx and dropped connections, with azure-core's
  exponential backoff (and ``Retry-After`` on 429). A retried VM PUT is safe: ARM's PUT is idempotent by
  resource name, and every VM of a gang has a name derived from (backend, job, attempt, rank).
- Capacity errors are not worth retrying there: Azure most likely says the same a second later, and the
  control loop handles them better (a cooldown for the pool and failover to the next one).
- Short timeouts (connect 5 s, read 30 s): a hung call blocks the loop's tick, and an unreachable
  endpoint must become ``ProviderDown`` quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from overcast.backends.base import CapacityError, ProviderDown

CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 2, "connection_timeout": 5, "read_timeout": 30}

# ARM / Compute error codes that mean "this pool cannot give you the nodes now": cooldown and failover.
# SkuNotAvailable comes back at once (HTTP 409); the allocation failures usually come back through the
# create's long-running operation, after ARM has accepted the VM (it then exists, provisioningState
# Failed, and must be deleted).
CAPACITY_CODES = frozenset(
    {
        "SkuNotAvailable",  # the size is not offered to this subscription in this region/zone right now
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",  # constraints (size + zone + PPG, ...) cannot all be met
        "OverconstrainedZonalAllocationRequest",
        "AllocationFailedVMSeriesNotSupported",
        "QuotaExceeded",
    }
)
# "OperationNotAllowed" is also what Azure says for a bad operation; it is capacity only when it is
# about a quota ("... exceeding approved standardNDSH100v5Family Cores quota ...").
QUOTA_CODES = frozenset({"OperationNotAllowed"})
# The provider cannot be used from here at all: credentials, authorization, or an outage.
DOWN_CODES = frozenset(
    {
        "AuthenticationFailed",
        "InvalidAuthenticationToken",
        "InvalidAuthenticationTokenTenant",
        "ExpiredAuthenticationToken",
        "AuthorizationFailed",
        "SubscriptionNotFound",
        "TooManyRequests",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


class AzureApiError(RuntimeError):
    """An ARM error that is neither capacity nor an outage (a bad image, subnet, parameter...)."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"Azure {operation} failed: {code}: {message}")
        self.code = code


@dataclass(frozen=True, slots=True)
class AzureSettings:
    """One Azure subscription, resource group and region that overcast may create VMs in.

    ``vm_sizes`` x ``zones`` (or the region when no zones are given) x (on-demand, spot) are the pools;
    each may hold at most ``max_nodes`` of our VMs at once (our quota, not Azure's capacity)."""

    name: str
    subscription_id: str
    resource_group: str
    region: str
    vm_sizes: tuple[str, ...]
    image: str  # an image resource id, or "publisher:offer:sku:version" (a GPU image with python3 + overcast)
    subnet_id: str  # /subscriptions/.../virtualNetworks/V/subnets/S: every VM gets a NIC there
    identity_id: str  # a user-assigned managed identity that may tag, deallocate and delete VMs in the RG
    max_nodes: int = 4
    zones: tuple[str, ...] = ()  # ("1", "2", "3"): a pool per zone; none: regional pools
    endpoint: str | None = None  # ARM's base URL; None: https://management.azure.com (a fake in tests)
    purchases: tuple[str, ...] = ("on-demand", "spot")
    admin_username: str = "overcast"
    ssh_public_key: str = ""  # none: no key (the node is reached through the agent only)
    python: str = "python3"  # the interpreter on the node that runs overcast's agent
    bootstrap: str = ""  # shell run on the node before the agent (e.g. pip install overcast)
    logs_url: str | None = None  # where the agent uploads the job's output (backends/cloud_logs.py)
    agent_poll_seconds: float = 2.0  # how often the agent looks for a stop request or a Preempt event
    agent_timeout_seconds: float = 900.0  # boot + bootstrap: after this, a gang without agents has FAILED
    lro_poll_seconds: float = 5.0  # how often the SDK polls a long-running operation (create, delete)
    # Two backends of one subscription must not see each other's VMs (the job loop would stop a
    # service's replicas as orphans): the scope is part of the ownership tag.
    scope: str = ""

    @property
    def owner(self) -> str:
        """The value of the ``overcast-backend`` tag on this backend's VMs."""
        return f"azure:{self.name}" + (f"/{self.scope}" if self.scope else "")


def compute_client(settings: AzureSettings, credential: Any = None) -> Any:
    """The official SDK's ComputeManagementClient for the settings' subscription and endpoint.

    Without a credential, ``DefaultAzureCredential`` (environment, workload or managed identity, Azure
    CLI login). TLS is verified as usual: a test's self-signed endpoint comes in through
    ``REQUESTS_CA_BUNDLE``, so nothing here differs between the fake and Azure but the URL."""
    from azure.mgmt.compute import ComputeManagementClient

    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    kwargs = dict(CLIENT_OPTIONS, polling_interval=settings.lro_poll_seconds)
    if settings.endpoint:
        kwargs["base_url"] = settings.endpoint
        # the token's audience is ARM's own URL (also right for sovereign clouds' endpoints)
        kwargs["credential_scopes"] = [settings.endpoint.rstrip("/") + "/.default"]
    return ComputeManagementClient(credential, settings.subscription_id, **kwargs)


def error_code(exc: HttpResponseError) -> tuple[str, str]:
    """(code, message) of an ARM error, from the ``{"error": {"code", "message"}}`` body."""
    error = getattr(exc, "error", None)
    code = str(getattr(error, "code", "") or "")
    message = str(getattr(error, "message", "") or exc.message or "")
    return code, message


def translate(operation: str, exc: Exception) -> Exception:
    """The overcast exception for a failed ARM call: CapacityError, ProviderDown or AzureApiError."""
    if isinstance(exc, ClientAuthenticationError):  # 401/403, or no token from any credential
        return ProviderDown(f"Azure {operation}: authentication failed ({exc.message})")
    if isinstance(exc, HttpResponseError):
        code, message = error_code(exc)
        if code in CAPACITY_CODES or (code in QUOTA_CODES and "quota" in message.lower()):
            return CapacityError(f"{code}: {message}")
        if code in DOWN_CODES or (exc.status_code or 0) >= 500 or exc.status_code == 429:
            return ProviderDown(f"Azure {operation}: {code or exc.status_code}: {message}")
        return AzureApiError(operation, code or str(exc.status_code), message)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):  # unreachable, timeouts, TLS
        return ProviderDown(f"Azure {operation}: endpoint unreachable ({exc})")
    if isinstance(exc, AzureError):  # azure-identity's CredentialUnavailableError is one
        return ProviderDown(f"Azure {operation}: {type(exc).__name__}: {exc}")
    return exc


def add_tags(compute: Any, resource_group: str, name: str, extra: dict[str, str], attempts: int = 5) -> None:
    """Add tags to a VM. ARM's PATCH replaces the tags object as a whole, so the current tags are read
    and sent back with the new ones, conditional on the VM's ETag: when the agent (exit code) and the
    backend (stop request) tag one VM at once, neither write can drop the other's tag."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError

    vms = compute.virtual_machines
    for attempt in range(attempts):
        vm = vms.get(resource_group, name)
        tags = dict(vm.tags or {}) | extra
        try:
            vms.begin_update(
                resource_group,
                name,
                {"tags": tags},
                etag=vm.etag,
                match_condition=MatchConditions.IfNotModified,
            ).result()
            return
        except ResourceModifiedError:  # someone else tagged it in between: read again
            if attempt == attempts - 1:
                raise


def call(operation: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with ARM's errors translated (see ``translate``)."""
    try:
        return fn(*args, **kwargs)
    except AzureError as exc:
        raise translate(operation, exc) from exc
