"""The fleet file's cloud accounts (top-level ``aws:``, ``oci:``, ``azure:``, ``gcp:``, ``lambda:`` and
``nebius:`` lists): where overcast may create instances, checked against the bundled catalog (an instance
type the catalog does not offer in that region is an error naming the entry, with the closest names)."""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Annotated, Self
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from overcast.catalog.fleet_base import Name


def _purchase_options(value: list[str]) -> list[str]:
    bad = [p for p in value if p not in ("on-demand", "spot")]
    if bad:
        raise ValueError(f"unknown purchase option {bad[0]!r}: give on-demand and/or spot")
    return value


Purchases = Annotated[list[str], Field(min_length=1), AfterValidator(_purchase_options)]


class _Strict(BaseModel):  # a pydantic model here, so linters see one
    model_config = ConfigDict(extra="forbid", frozen=True)


def _offered(
    names: list[str], info: ValidationInfo, provider: str, what: str, *, fold_case: bool = False
) -> list[str]:
    """Every name must be an instance type the catalog offers for ``provider`` in the entry's region."""
    region = info.data.get("region")
    if region is None:  # the region itself is wrong: reported there
        return names
    from overcast.catalog.load import load_offers

    offered = {o.instance_type for o in load_offers() if o.provider == provider and o.region == region}
    known = {n.lower() for n in offered} if fold_case else offered
    for name in names:
        if (name.lower() if fold_case else name) not in known:
            close = difflib.get_close_matches(name, sorted(offered), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"no {what} {name!r} in {region} in the catalog{hint}")
    return names


class _Account(_Strict):
    """What every cloud account entry has: its name (the backend is ``<cloud>:<name>``), the region, how many
    of our instances each pool may hold, and how a node starts the agent."""

    name: Name
    region: str = Field(min_length=1)
    max_nodes: int = Field(default=4, gt=0)
    python: str = "python3"  # the node's Python that runs the overcast agent
    bootstrap: str = ""  # shell run on the node before the agent
    # an fsspec URL (s3://bucket/prefix, gs://, az://, file:///shared/logs) the nodes upload the jobs'
    # output to and the server copies it from (backends/cloud_logs.py); none: logs stay on the nodes
    logs_url: str | None = None

    @field_validator("logs_url")
    @classmethod
    def _plain_url(cls, value: str | None) -> str | None:
        """A URL without secrets (a user, password or query: keys come from the nodes' identity), never
        echoed: what it holds may be a key all the same."""
        if value is None:
            return None
        try:
            parts = urlsplit(value)
        except ValueError:
            raise ValueError("logs_url is not a URL (protocol://...)") from None
        if not re.fullmatch(r"[a-z][a-z0-9+.-]*://\S+", value):
            raise ValueError("logs_url must be an fsspec URL (s3://bucket/prefix, file:///shared/logs ...)")
        if "@" in parts.netloc or parts.query or "?" in value or "#" in value:
            raise ValueError(
                "logs_url must not hold a user, password, query or fragment (the nodes and the server "
                "reach the store through their own identity)"
            )
        if parts.scheme == "file" and not value.startswith("file:///"):
            raise ValueError("a file:// logs_url needs an absolute path (file:///...)")
        return value


class AwsAccount(_Account):
    """EC2 in one account and region: pools are the catalog's offers of ``instance_types`` there, per AZ
    and purchase option, each holding at most ``max_nodes`` of our instances (see backends/aws.py).

    A top-level list rather than a ``clusters:`` entry: AWS is not a private cluster of fixed size, and
    its pools already exist in the catalog (``overcast optimize`` prices them without this entry)."""

    instance_types: list[str] = Field(min_length=1)
    image_id: str = Field(pattern=r"^ami-[0-9a-zA-Z]+$")
    purchases: Purchases = ["on-demand", "spot"]
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    subnet_ids: dict[str, str] = {}  # AZ name -> subnet id
    security_group_ids: list[str] = []
    iam_instance_profile: str | None = None
    key_name: str | None = None

    @field_validator("instance_types")
    @classmethod
    def _in_catalog(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _offered(value, info, "aws", "AWS offer for")


class OciAccount(_Account):
    """OCI Compute in one compartment and region: pools are the catalog's offers of ``shapes`` there, per
    availability domain (on-demand; preemptible only where the catalog has a price), each holding at most
    ``max_nodes`` of our instances (see backends/oci.py). A top-level list, like ``aws:``."""

    compartment_id: str = Field(pattern=r"^ocid1\.(compartment|tenancy)\.")
    shapes: list[str] = Field(min_length=1)
    image_id: str = Field(pattern=r"^ocid1\.image\.")
    subnet_id: str = Field(pattern=r"^ocid1\.subnet\.")
    endpoint: str | None = Field(default=None, pattern=r"^https?://")
    config_file: str | None = None  # OCI SDK config; default ~/.oci/config
    profile: str = "DEFAULT"
    ssh_authorized_keys: str = ""
    compute_clusters: bool = True  # multi-node gangs of RDMA shapes in a compute cluster of their own

    @field_validator("shapes")
    @classmethod
    def _in_catalog(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _offered(value, info, "oci", "OCI offer for shape")


class AzureAccount(_Account):
    """Azure VMs in one subscription, resource group and region: pools are the catalog's offers of
    ``vm_sizes`` there, per configured zone (or per region) and purchase option, each holding at most
    ``max_nodes`` of our VMs (see backends/azure.py). A top-level list, like ``aws:``."""

    subscription_id: str = Field(min_length=1)
    resource_group: str = Field(min_length=1)
    vm_sizes: list[str] = Field(min_length=1)
    image: str = Field(pattern=r"^(/subscriptions/.+|[^:]+:[^:]+:[^:]+:[^:]+)$")  # resource id or URN
    subnet_id: str = Field(pattern=r"^/subscriptions/.+/subnets/[^/]+$")
    identity_id: str = Field(pattern=r"^/subscriptions/.+/userAssignedIdentities/[^/]+$")
    zones: list[str] = []
    purchases: Purchases = ["on-demand", "spot"]
    endpoint: str | None = Field(default=None, pattern=r"^https?://")
    admin_username: str = "overcast"
    ssh_public_key: str = ""

    @field_validator("vm_sizes")
    @classmethod
    def _in_catalog(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # ARM compares VM sizes case-insensitively
        return _offered(value, info, "azure", "Azure offer for VM size", fold_case=True)


class GcpAccount(_Account):
    """Compute Engine in one project and region: pools are the catalog's offers of ``machine_types`` in
    ``zones`` (all the catalog's zones of the region when empty), per purchase option, each holding at
    most ``max_nodes`` of our instances (see backends/gcp.py). A top-level list, like ``aws:``."""

    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    machine_types: list[str] = Field(min_length=1)
    image: str = Field(pattern=r"^(https://www\.googleapis\.com/compute/v1/)?projects/[^/]+/global/images/.+")
    zones: list[str] = []
    subnetwork: str = ""  # regions/R/subnetworks/S (or a full URL); empty: the default network
    service_account: str = ""
    disk_size_gb: int = Field(default=200, gt=0)
    purchases: Purchases = ["on-demand", "spot"]
    endpoint: str | None = Field(default=None, pattern=r"^https?://")
    credentials_file: str | None = None  # a service account key; default: Application Default Credentials

    @field_validator("machine_types")
    @classmethod
    def _in_catalog(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _offered(value, info, "gcp", "GCP offer for machine type")

    @model_validator(mode="after")
    def _zones_in_region(self) -> Self:
        bad = [z for z in self.zones if not z.startswith(self.region + "-")]
        if bad:
            raise ValueError(f"zone {bad[0]!r} is not in region {self.region!r}")
        return self


class LambdaAccount(_Account):
    """Lambda Cloud in one account and region: pools are the catalog's offers of ``instance_types`` there
    (on-demand: Lambda has no spot), each holding at most ``max_nodes`` of our instances (see
    backends/lambda_cloud.py). A top-level list, like ``aws:``. The API key is never in this file: it is
    read from the environment variable ``api_key_env`` or the file ``api_key_file``."""

    instance_types: list[str] = Field(min_length=1)
    ssh_key_name: str = Field(min_length=1)  # a key registered in the account: Lambda wants one per launch
    api_key_env: str = Field(default="LAMBDA_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key_file: str | None = None
    endpoint: str | None = None  # https (the account-wide key goes there); http to loopback only
    file_system_names: list[str] = []  # persistent file systems (same region) mounted on every node
    key_path: str = Field(default="/run/overcast/lambda-api-key", pattern=r"^/")  # the node's copy (mode 600)

    @field_validator("instance_types")
    @classmethod
    def _in_catalog(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _offered(value, info, "lambda", "Lambda offer for instance type")

    @field_validator("endpoint")
    @classmethod
    def _no_cleartext_key(cls, value: str | None) -> str | None:
        from overcast.backends.lambda_client import endpoint_problem

        problem = None if value is None else endpoint_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class NebiusAccount(_Account):
    """Nebius AI Cloud in one project (a project is in one region): pools are the catalog's offers of
    ``instance_types`` (``<platform>_<preset>``) there, per purchase option, each holding at most
    ``max_nodes`` of our instances (see backends/nebius.py). A top-level list, like ``aws:``. The
    controller's credentials are the SDK's (``NEBIUS_IAM_TOKEN``, the CLI's config) or
    ``credentials_file``; the nodes' are the service account ``service_account_id``."""

    project_id: str = Field(pattern=r"^project-[a-z0-9]+$")
    instance_types: list[str] = Field(min_length=1)
    subnet_id: str = Field(min_length=1)
    image_family: str = Field(default="ubuntu22.04-cuda12", min_length=1)
    disk_size_gb: int = Field(default=200, gt=0)
    infiniband_fabric: str = ""  # the GPU clusters' fabric (e.g. fabric-2) for gangs of more than one node
    service_account_id: str = Field(min_length=1)  # the nodes' identity: without it no agent ever starts
    token_endpoint: str | None = Field(default=None, pattern=r"^https?://")  # the nodes' token service
    purchases: Purchases = ["on-demand", "spot"]
    endpoint: str | None = Field(default=None, pattern=r"^[^/]+:[0-9]+$")  # host:port of the API
    insecure: bool = False  # plaintext gRPC to a loopback ``endpoint`` (a local fake or proxy)
    credentials_file: str | None = None  # a service account credentials JSON for the controller

    @field_validator("instance_types")
    @classmethod
    def _in_catalog(cls, value: list[str], info: ValidationInfo) -> list[str]:
        return _offered(value, info, "nebius", "Nebius offer for instance type")

    @model_validator(mode="after")
    def _insecure_on_loopback_only(self) -> Self:
        """Plaintext gRPC would carry the controller's token in cleartext: only to this machine."""
        if self.insecure and not _loopback(self.endpoint):
            raise ValueError(
                f"insecure: true needs an endpoint on a loopback host (127.0.0.1, [::1], localhost), "
                f"got {self.endpoint!r}: plaintext gRPC would send the token in cleartext"
            )
        return self


def _loopback(endpoint: str | None) -> bool:
    """Whether ``host:port`` names this machine."""
    host = (endpoint or "").rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
