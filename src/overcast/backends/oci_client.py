"""OCI settings of one backend, its SDK clients, and how OCI errors map onto overcast's.

Retries are chosen on purpose, not left to the SDK's default strategy (8 attempts over up to 600 s,
retrying every 5xx): OCI sends "no capacity" as HTTP 500 ``InternalError`` / "Out of host capacity.", so
the default would keep one ``launch_instance`` retrying a sold-out pool for minutes while the control
loop's tick waits. Instead:

- ``launch_instance``: ``oci.retry.NoneRetryStrategy`` — one try. A capacity error is not worth
  retrying here (OCI will most likely say the same a second later) and the loop does better: a cooldown
  for the pool and failover to the next one. Each launch also carries an ``opc-retry-token`` derived from
  (backend, job, attempt, rank), so a replayed launch never starts a second instance of a rank.
- every other call (list, get, update, terminate): ``READ_RETRY``, at most 3 attempts within 20 s, on
  throttling (429) and 5xx, with jittered exponential backoff.
- short timeouts (connect 5 s, read 30 s): an unreachable endpoint becomes ``ProviderDown`` quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import oci
import requests

from overcast.backends.base import CapacityError, ProviderDown

READ_RETRY = oci.retry.RetryStrategyBuilder(
    max_attempts=3,
    total_elapsed_time_seconds=20,
    retry_base_sleep_time_seconds=0.5,
    retry_max_wait_between_calls_seconds=4,
    service_error_retry_on_any_5xx=True,
).get_retry_strategy()
LAUNCH_RETRY = oci.retry.NoneRetryStrategy()
TIMEOUT = (5.0, 30.0)  # (connect, read) seconds

LIVE_STATES = frozenset({"PROVISIONING", "STARTING", "RUNNING", "MOVING", "CREATING_IMAGE"})
GONE_STATES = frozenset({"STOPPING", "STOPPED", "TERMINATING", "TERMINATED"})
# stopped outside overcast (host maintenance, the console): it runs nothing, but its boot volume bills
# (and the whole shape, for shapes billed when stopped), so ending a gang terminates these too
HALTED_STATES = frozenset({"STOPPING", "STOPPED"})

# freeform tag keys (OCI tag keys: no spaces or dots; we keep to [a-z-])
TAG = "overcast-"


class OciError(RuntimeError):
    """An OCI error that is neither capacity nor an outage (a bad image, subnet, shape, parameter...)."""

    def __init__(self, operation: str, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"OCI {operation} failed: {status} {code}: {message}")
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class OciSettings:
    """One OCI tenancy compartment + region that overcast may launch in.

    ``shapes`` x the catalog's availability domains of the region x purchase options are the pools;
    each holds at most ``max_nodes`` of our instances at once (our quota, not OCI's capacity)."""

    name: str
    region: str
    compartment_id: str
    shapes: tuple[str, ...]
    image_id: str  # the image every node boots (GPU drivers, python3 and overcast installed)
    subnet_id: str  # the VCN subnet of the nodes' primary VNIC (a regional subnet: any AD)
    max_nodes: int = 4
    endpoint: str | None = None  # None: the region's public endpoints; a fake server in tests
    config_file: str | None = None  # an OCI SDK config file; None: ~/.oci/config
    profile: str = "DEFAULT"
    purchases: tuple[str, ...] = ("on-demand", "spot")  # spot only exists where the catalog prices it
    ssh_authorized_keys: str = ""
    python: str = "python3"
    bootstrap: str = ""
    logs_url: str | None = None  # where the agent uploads the job's output (backends/cloud_logs.py)
    agent_poll_seconds: float = 5.0  # the agent reads its stop tag through the API (IMDS lags a minute)
    agent_timeout_seconds: float = 1200.0  # BM.GPU shapes boot slowly: after this, no agent = FAILED
    compute_clusters: bool = True  # multi-node gangs of RDMA shapes launch into a compute cluster
    scope: str = ""  # see AwsSettings.scope: two backends of one compartment must not see each other

    @property
    def owner(self) -> str:
        """The value of the ``overcast-backend`` freeform tag on this backend's instances."""
        return f"oci:{self.name}" + (f"/{self.scope}" if self.scope else "")


def sdk_config(settings: OciSettings) -> dict[str, Any]:
    config = oci.config.from_file(settings.config_file or oci.config.DEFAULT_LOCATION, settings.profile)
    return {**config, "region": settings.region}


def clients(settings: OciSettings) -> tuple[Any, Any]:
    """(ComputeClient, IdentityClient) for the backend's region and endpoint."""
    config = sdk_config(settings)
    kw: dict[str, Any] = {"retry_strategy": READ_RETRY, "timeout": TIMEOUT}
    if settings.endpoint:
        kw["service_endpoint"] = settings.endpoint
    return oci.core.ComputeClient(config, **kw), oci.identity.IdentityClient(config, **kw)


def is_capacity(status: int, code: str, message: str) -> bool:
    if status == 500 and code == "InternalError" and "out of host capacity" in message.lower():
        return True
    # service limits / quotas (the tenancy may not run more of this shape): for us a sold-out pool
    return code in ("LimitExceeded", "QuotaExceeded")


def translate(operation: str, exc: Exception) -> Exception:
    """The overcast exception for a failed OCI call: CapacityError, ProviderDown or OciError."""
    if isinstance(exc, oci.exceptions.ServiceError):
        status, code, message = int(exc.status), str(exc.code), str(exc.message)
        if is_capacity(status, code, message):
            return CapacityError(f"{code}: {message}")
        if status in (401, 429) or status >= 500 or code in ("NotAuthenticated", "TooManyRequests"):
            return ProviderDown(f"OCI {operation}: {status} {code}: {message}")
        return OciError(operation, code, message, status)
    connection = (oci.exceptions.RequestException, oci.exceptions.ConnectTimeout, requests.RequestException)
    if isinstance(exc, connection):
        return ProviderDown(f"OCI {operation}: endpoint unreachable ({exc})")
    if isinstance(exc, oci.exceptions.ConfigFileNotFound | oci.exceptions.InvalidConfig):
        return ProviderDown(f"OCI {operation}: no usable OCI credentials ({exc})")
    return exc


def call(client: Any, operation: str, *args: Any, **kw: Any) -> Any:
    """``client.<operation>(...)`` with OCI's errors translated (see ``translate``)."""
    try:
        return getattr(client, operation)(*args, **kw)
    except Exception as exc:
        translated = translate(operation, exc)
        if translated is exc:
            raise
        raise translated from exc


def list_instances(compute: Any, compartment_id: str) -> list[Any]:
    """Every instance of the compartment (``list_all``)."""
    return list_all(compute, "list_instances", compartment_id)


def list_all(client: Any, operation: str, *args: Any, **kw: Any) -> list[Any]:
    """Every item of a list call, page by page (``opc-next-page``); a collection's ``items`` unwrapped.
    Not ``oci.pagination.list_call_get_all_results``: it wraps each page in the SDK's default retry
    strategy (up to 600 s against an unreachable endpoint), on top of the client's own."""
    found: list[Any] = []
    page = None
    while True:
        reply = call(client, operation, *args, page=page, limit=100, **kw)
        found += getattr(reply.data, "items", reply.data)
        page = reply.headers.get("opc-next-page")
        if not page:
            return found


def set_tags(compute: Any, instance_id: str, tags: dict[str, str], attempts: int = 5) -> None:
    """Add freeform tags to an instance. ``update_instance`` replaces the whole map, so read it and write
    it back with ``if-match`` on the etag: a concurrent writer (the backend's stop tag, the agent's exit
    tag) makes OCI answer 412 and we read again, instead of one silently undoing the other."""
    for _ in range(attempts):
        got = call(compute, "get_instance", instance_id)
        merged = dict(got.data.freeform_tags or {}) | tags
        details = oci.core.models.UpdateInstanceDetails(freeform_tags=merged)
        try:
            call(compute, "update_instance", instance_id, details, if_match=got.headers.get("etag"))
            return
        except OciError as exc:
            if exc.status != 412:
                raise
    raise OciError("update_instance", "PreconditionFailed", f"{instance_id} kept changing", 412)
