"""AWS settings of one backend, its boto3 EC2 client, and how EC2 errors map onto overcast's.

Retries are configured on purpose, not left to botocore's defaults ("legacy" mode, 5 attempts, 60 s
timeouts):

- ``standard`` mode, 3 attempts in all: throttling (``RequestLimitExceeded``) and transient 5xx errors are
  retried with jittered exponential backoff. ``run_instances`` carries a ``ClientToken`` derived from
  (job, attempt), so a retried launch can never start a second gang on real EC2.
- Capacity errors are *not* worth retrying here: EC2 will most likely say the same a second later, and
  the control loop already handles them better (a cooldown for the pool and failover to the next one).
  botocore does not retry ``InsufficientInstanceCapacity`` by code; if EC2 sends it as a 5xx, at most two
  quick retries are spent.
- Short timeouts (connect 5 s, read 30 s): a call that hangs blocks the control loop's tick, and an
  unreachable endpoint must become ``ProviderDown`` (a pool cooldown) quickly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from overcast.backends.base import CapacityError, ProviderDown

RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 3}, connect_timeout=5, read_timeout=30)

# EC2 error codes that mean "this pool cannot give you the nodes now": a cooldown and failover.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacityOnHost",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "InstanceLimitExceeded",  # account quota: for us the same as a sold-out pool
        "VcpuLimitExceeded",
        "Unsupported",  # the instance type is not offered in this AZ
    }
)
# The provider cannot be used at all from here: wrong or expired credentials, a region not enabled,
# or an outage that outlasted the retries.
DOWN_CODES = frozenset(
    {
        "AuthFailure",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "RequestExpired",
        "OptInRequired",
        "Blocked",
        "RequestLimitExceeded",
        "InternalError",
        "ServiceUnavailable",
        "Unavailable",
    }
)


class AwsError(RuntimeError):
    """An EC2 error that is neither capacity nor an outage (a bad AMI, subnet, parameter...)."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        super().__init__(f"EC2 {operation} failed: {code}: {message}")
        self.code = code


class ReplyLost(ProviderDown):
    """EC2 got the call but its reply was lost (a read timeout, a dropped connection, after botocore's
    retries): it may have acted, e.g. launched the gang. An outage to the loop, once the caller has looked."""


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """One AWS account and region that overcast may launch in.

    ``instance_types`` x the catalog's AZs of the region x (on-demand, spot) are the pools; each may hold
    at most ``max_nodes`` of our instances at once (our quota, not AWS's capacity)."""

    name: str
    region: str
    instance_types: tuple[str, ...]
    image_id: str  # the AMI every node boots (a GPU AMI with Python and overcast installed)
    max_nodes: int = 4
    endpoint_url: str | None = None  # None: the public EC2 endpoint of the region
    purchases: tuple[str, ...] = ("on-demand", "spot")
    subnet_ids: tuple[tuple[str, str], ...] = ()  # (AZ name, subnet id); none: the default VPC's
    security_group_ids: tuple[str, ...] = ()
    iam_instance_profile: str | None = None  # lets the node agent tag and terminate its own instance
    key_name: str | None = None
    python: str = "python3"  # the interpreter on the node that runs overcast's agent
    bootstrap: str = ""  # shell run on the node before the agent (e.g. pip install overcast)
    logs_url: str | None = None  # where the agent uploads the job's output (backends/cloud_logs.py)
    agent_poll_seconds: float = 2.0  # how often the agent looks for a stop request
    agent_timeout_seconds: float = 900.0  # boot + bootstrap: after this, a gang without agents has FAILED
    # Two backends of one account must not see each other's instances (the job loop would stop a
    # service's replicas as orphans): the scope is part of the ownership tag.
    scope: str = ""

    @property
    def owner(self) -> str:
        """The value of the ``overcast:backend`` tag on this backend's instances."""
        return f"aws:{self.name}" + (f"/{self.scope}" if self.scope else "")


def ec2_client(settings: AwsSettings, **credentials: Any) -> Any:
    """A boto3 EC2 client for the backend's region and endpoint, with the retry policy above."""
    session = boto3.session.Session(region_name=settings.region, **credentials)
    return session.client("ec2", endpoint_url=settings.endpoint_url, config=RETRIES)


def translate(operation: str, exc: Exception) -> Exception:
    """The overcast exception for a failed EC2 call: CapacityError, ProviderDown or AwsError."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code in CAPACITY_CODES:
            return CapacityError(f"{code}: {message}")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in DOWN_CODES or status >= 500:
            return ProviderDown(f"EC2 {operation}: {code}: {message}")
        return AwsError(operation, code, message)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ProviderDown(f"EC2 {operation}: no usable AWS credentials ({exc})")
    if isinstance(exc, BotoConnectionError):  # unreachable endpoint, timeouts, TLS failures
        return ProviderDown(f"EC2 {operation}: endpoint unreachable ({exc})")
    if isinstance(exc, HTTPClientError):  # ReadTimeoutError, ConnectionClosedError: sent, no reply
        return ReplyLost(f"EC2 {operation}: no reply ({exc})")
    if isinstance(exc, BotoCoreError):
        return AwsError(operation, type(exc).__name__, str(exc))
    return exc


def call(client: Any, operation: str, **params: Any) -> Any:
    """``client.<operation>(**params)`` with EC2's errors translated (see ``translate``)."""
    try:
        return getattr(client, operation)(**params)
    except (ClientError, BotoCoreError) as exc:
        raise translate(operation, exc) from exc
