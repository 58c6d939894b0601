"""GCP settings of one backend, its Compute Engine clients (``google-cloud-compute``, REST transport), and
how Compute errors map onto overcast's.

Retries are chosen on purpose, not left to the SDK (whose per-call default timeout is 600 s):

- ``bulkInsert``: one try. A stockout (``ZONE_RESOURCE_POOL_EXHAUSTED``) is not worth retrying here (GCP
  most likely says the same a second later) and the control loop does better: a cooldown for the pool and
  failover to the next zone. Each bulkInsert carries a ``requestId`` derived from (backend, job, attempt),
  so a replayed launch within GCP's idempotency window gets the first operation back, not a second gang.
- every other call: ``READ_RETRY``, on 429/5xx and dropped connections, with jittered exponential backoff,
  for at most ``RETRY_SECONDS``; ``TIMEOUT`` (30 s) per call. An unreachable endpoint becomes
  ``ProviderDown`` quickly.
- Long-running operations are waited for with ``zoneOperations.wait`` / ``regionOperations.wait`` (the
  server holds the request until the operation is DONE or about two minutes pass), up to a deadline. The
  client listens longer than the server holds (``WAIT_READ_SECONDS``), and a read that times out anyway
  means "not done yet, ask again": the operation goes on on GCP's side whether we listen or not.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from overcast.backends.base import CapacityError, ProviderDown

TIMEOUT = 30.0  # seconds per call
WAIT_READ_SECONDS = 150.0  # one operations.wait call: more than the server's hold (about 120 s)
RETRY_SECONDS = 4.0  # how long a read is retried (about 4 tries): then the provider is down for this tick
LIVE_STATES = frozenset({"PROVISIONING", "STAGING", "RUNNING"})
GONE_STATES = frozenset({"STOPPING", "STOPPED", "SUSPENDING", "SUSPENDED", "TERMINATED", "REPAIRING"})

# Compute Engine's words for "this zone cannot give you the machines now" (operation error codes and
# HTTP error reasons): cooldown and failover.
CAPACITY_CODES = frozenset(
    {
        "ZONE_RESOURCE_POOL_EXHAUSTED",
        "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        "RESOURCE_POOL_EXHAUSTED",
        "QUOTA_EXCEEDED",
        "quotaExceeded",
    }
)
# the API itself is unusable from here (IAM, credentials, its per-minute request quota): every pool is down
DOWN_REASONS = frozenset(
    {"authError", "unauthorized", "forbidden", "backendError", "rateLimitExceeded", "userRateLimitExceeded"}
)

_LABEL = re.compile(r"^[a-z0-9_-]{0,63}$")


class GcpError(RuntimeError):
    """A Compute error that is neither capacity nor an outage (a bad image, network, machine type...)."""

    def __init__(self, operation: str, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"GCP {operation} failed: {status} {code}: {message}")
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class GcpSettings:
    """One GCP project + region that overcast may create instances in.

    ``machine_types`` x ``zones`` (the catalog's zones of the region when empty) x purchase options are
    the pools; each holds at most ``max_nodes`` of our instances at once (our quota, not GCP's)."""

    name: str
    project: str
    region: str
    machine_types: tuple[str, ...]
    image: str  # projects/P/global/images/I (or .../family/F): GPU drivers, python3 and overcast installed
    zones: tuple[str, ...] = ()
    subnetwork: str = ""  # regions/R/subnetworks/S; empty: the project's default network
    service_account: str = ""  # the nodes' service account (get/setLabels/stop instances); "": default
    max_nodes: int = 4
    disk_size_gb: int = 200
    endpoint: str | None = None  # None: https://compute.googleapis.com; a fake server in tests
    credentials_file: str | None = None  # a service account key; None: Application Default Credentials
    purchases: tuple[str, ...] = ("on-demand", "spot")
    python: str = "python3"
    bootstrap: str = ""
    logs_url: str | None = None  # where the agent uploads the job's output (backends/cloud_logs.py)
    agent_poll_seconds: float = 5.0  # the agent reads its stop label through the API
    agent_timeout_seconds: float = 900.0  # boot + bootstrap: after this, a gang without agents has FAILED
    operation_timeout_seconds: float = 300.0  # how long a launch waits for its bulkInsert operation
    scope: str = ""  # see AwsSettings.scope: two backends of one project must not see each other

    @property
    def owner(self) -> str:
        """Which backend launched an instance (metadata ``overcast-backend``; the label is its slug)."""
        return f"gcp:{self.name}" + (f"/{self.scope}" if self.scope else "")


def label_value(text: str) -> str:
    """``text`` as a GCP label value ([a-z0-9_-], at most 63): itself when it is one, else a slug plus a
    hash of the original, so two different values never share a label."""
    if _LABEL.fullmatch(text):
        return text
    slug = re.sub(r"[^a-z0-9_-]+", "-", text.lower())[:54]
    return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def clients(settings: GcpSettings, credentials: Any = None) -> dict[str, Any]:
    """The REST clients the backend uses: instances, zone_ops, policies, region_ops."""
    from google.cloud import compute_v1

    if credentials is None and settings.credentials_file:
        from google.oauth2 import service_account

        credentials = service_account.Credentials.from_service_account_file(
            os.path.expanduser(settings.credentials_file),
            scopes=["https://www.googleapis.com/auth/cloud-platform"],
        )
    kw: dict[str, Any] = {"credentials": credentials, "transport": "rest"}
    if settings.endpoint:
        kw["client_options"] = {"api_endpoint": settings.endpoint}  # http://host:port keeps its scheme
    try:
        return {
            "instances": compute_v1.InstancesClient(**kw),
            "zone_ops": compute_v1.ZoneOperationsClient(**kw),
            "policies": compute_v1.ResourcePoliciesClient(**kw),
            "region_ops": compute_v1.RegionOperationsClient(**kw),
        }
    except Exception as exc:  # no Application Default Credentials, an unreadable key file
        raise translate("client", exc) from exc


def read_retry() -> Any:
    import requests
    from google.api_core import exceptions as gexc
    from google.api_core import retry

    transient = (gexc.TooManyRequests, gexc.InternalServerError, gexc.ServiceUnavailable,
                 gexc.BadGateway, gexc.GatewayTimeout, requests.ConnectionError)  # fmt: skip
    return retry.Retry(
        predicate=retry.if_exception_type(*transient),
        initial=0.5,
        maximum=2.0,
        multiplier=2.0,
        timeout=RETRY_SECONDS,
    )


def _reasons(exc: Any) -> list[str]:
    return [str(e.get("reason", "")) for e in (getattr(exc, "errors", None) or []) if isinstance(e, dict)]


def translate(operation: str, exc: Exception) -> Exception:
    """The overcast exception for a failed Compute call: CapacityError, ProviderDown or GcpError."""
    import google.auth.exceptions
    import requests
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError):
        status, reasons = int(exc.code or 0), _reasons(exc)
        code = reasons[0] if reasons else type(exc).__name__
        if CAPACITY_CODES & set(reasons):
            return CapacityError(f"{code}: {exc.message}")
        # before the quota wording: the API's own request quota says "Quota exceeded for quota metric"
        if status in (401, 429) or status >= 500 or DOWN_REASONS & set(reasons):
            return ProviderDown(f"GCP {operation}: {status} {code}: {exc.message}")
        if "quota" in exc.message.lower() and status == 403:
            return CapacityError(f"{code}: {exc.message}")
        return GcpError(operation, code, exc.message, status)
    if isinstance(exc, gexc.RetryError | requests.RequestException):
        return ProviderDown(f"GCP {operation}: endpoint unreachable ({exc})")
    if isinstance(exc, google.auth.exceptions.GoogleAuthError | OSError):
        return ProviderDown(f"GCP {operation}: no usable credentials ({exc})")
    return exc


def guarded(operation: str, fn: Any, *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)`` with Compute's errors translated (see ``translate``)."""
    try:
        return fn(*args, **kw)
    except Exception as exc:
        translated = translate(operation, exc)
        if translated is exc:
            raise
        raise translated from exc


def call(what: str, fn: Any, /, retry: Any = None, timeout: float = TIMEOUT, **fields: Any) -> Any:
    """An SDK method with its request's ``fields`` (snake_case; the SDK's request types take a dict, and
    only some fields are flattened into keyword arguments), a bounded timeout and, with ``retry``, bounded
    retries; Compute's errors translated."""
    kw: dict[str, Any] = {"request": fields, "timeout": timeout}
    if retry is not None:
        kw["retry"] = retry
    return guarded(what, fn, **kw)


def op_failure(operation: str, op: Any) -> Exception | None:
    """The exception for an operation that ended with an error (``op.error.errors``), else None."""
    errors = list(op.error.errors) if op.error else []
    if not errors:
        return None
    code, message = str(errors[0].code), str(errors[0].message)
    if any(str(e.code) in CAPACITY_CODES for e in errors):
        return CapacityError(f"{code}: {message}")
    status = int(op.http_error_status_code or 0)
    if status in (401, 429) or status >= 500:
        return ProviderDown(f"GCP {operation}: {status} {code}: {message}")
    return GcpError(operation, code, message, status)


def is_done(op: Any) -> bool:
    from google.cloud import compute_v1

    return bool(op.status == compute_v1.Operation.Status.DONE)


def wait(operation: str, ops: Any, op: Any, where: dict[str, str], timeout: float) -> Any:
    """Wait for a zonal or regional operation (``where``: project + zone or region) to be DONE, then raise
    its error, if it has one."""
    op = wait_done(operation, ops, op, where, timeout)
    failure = op_failure(operation, op)
    if failure is not None:
        raise failure
    return op


def wait_done(operation: str, ops: Any, op: Any, where: dict[str, str], timeout: float) -> Any:
    """The operation once DONE, successful or not (ProviderDown: not DONE by ``timeout`` seconds)."""
    import requests

    deadline = time.monotonic() + timeout
    while not is_done(op):
        if time.monotonic() > deadline:
            raise ProviderDown(f"GCP {operation}: operation {op.name} not done after {timeout:.0f} s")
        left = max(1.0, min(WAIT_READ_SECONDS, deadline - time.monotonic()))
        try:
            op = call(operation, ops.wait, **where, operation=op.name, retry=read_retry(), timeout=left)
        except ProviderDown as exc:
            if not isinstance(exc.__cause__, requests.Timeout):
                raise
            continue  # the server held the wait longer than we listened: still running, ask again
    return op


def set_labels(
    client: Any, project: str, zone: str, name: str, labels: dict[str, str], attempts: int = 5
) -> None:
    """Add labels to an instance. setLabels replaces the whole map, so read it and write it back with its
    ``labelFingerprint``: a concurrent writer (the backend's stop label, the agent's exit label) makes
    GCP answer 412 and we read again, instead of one silently undoing the other."""
    from google.api_core import exceptions as gexc

    for _ in range(attempts):
        got = call("get instance", client.get, project=project, zone=zone, instance=name, retry=read_retry())
        body = {"labels": dict(got.labels) | labels, "label_fingerprint": got.label_fingerprint}
        fields = {
            "project": project,
            "zone": zone,
            "instance": name,
            "instances_set_labels_request_resource": body,
        }
        try:
            client.set_labels_unary(request=fields, timeout=TIMEOUT)
            return
        except gexc.PreconditionFailed:
            continue  # someone else labelled it in between: read again
        except Exception as exc:
            raise translate("set labels", exc) from exc
    raise GcpError("set labels", "conditionNotMet", f"{name} kept changing", 412)
