"""The fleet file: the lab's own capacity and rules on top of the public catalog.

```yaml
reservations:            # committed capacity: already paid for, RESERVED pools
  - {provider: oci, region: us-ashburn-1, accelerator: H100, gpus: 512,
     price_per_gpu_hour: 2.10, until: 2027-06-30}
clusters:                # private clusters: a Slurm cluster, a Kubernetes cluster or local processes
  - {name: oci-hpc, slurm: {conf: /etc/slurm/slurm.conf}, nodes: 64, gpus_per_node: 8,
     accelerator: H100, price_per_gpu_hour: 1.20}
  - {name: lab-k8s, kubernetes: {api: lab-context, namespace: training}, nodes: 16, gpus_per_node: 8,
     accelerator: H100, price_per_gpu_hour: 1.00}
  - {name: azure-local, local: {}, nodes: 2, gpus_per_node: 4, accelerator: A100, price_per_gpu_hour: 2.0}
aws:                     # AWS accounts/regions overcast launches EC2 instances in (backend aws:<name>)
  - {name: use1, region: us-east-1, instance_types: [p5.48xlarge], max_nodes: 4, image_id: ami-0abc}
oci:                     # OCI compartments/regions overcast launches instances in (backend oci:<name>)
  - {name: iad, region: us-ashburn-1, compartment_id: ocid1.compartment.oc1..x, shapes: [BM.GPU.H100.8],
     image_id: ocid1.image.oc1..x, subnet_id: ocid1.subnet.oc1..x, max_nodes: 4}
azure:                   # Azure subscriptions/regions overcast creates VMs in (backend azure:<name>)
  - {name: eus, subscription_id: 0000-..., resource_group: rg, region: eastus, zones: ["1", "2"],
     vm_sizes: [Standard_ND96isr_H100_v5], image: /subscriptions/.../gpu, subnet_id: /subscriptions/...,
     identity_id: /subscriptions/.../userAssignedIdentities/overcast-node, max_nodes: 4}
gcp:                     # GCP projects/regions overcast creates instances in (backend gcp:<name>)
  - {name: usc, project: my-project, region: us-central1, zones: [us-central1-a, us-central1-b],
     machine_types: [a3-highgpu-8g], image: projects/my-project/global/images/gpu, max_nodes: 4}
lambda:                  # Lambda Cloud accounts/regions overcast launches in (backend lambda:<name>)
  - {name: tx, region: us-south-1, instance_types: [gpu_8x_h100_sxm5], ssh_key_name: overcast,
     max_nodes: 4}        # API key from $LAMBDA_API_KEY (or api_key_env / api_key_file)
nebius:                  # Nebius AI Cloud projects overcast creates instances in (backend nebius:<name>)
  - {name: fi, project_id: project-e00abc, region: eu-north1, subnet_id: vpcsubnet-e00abc,
     instance_types: [gpu-h100-sxm_8gpu-128vcpu-1600gb], infiniband_fabric: fabric-2,
     service_account_id: serviceaccount-e00abc}  # API credentials: $NEBIUS_IAM_TOKEN, the CLI's
quotas:                  # at most this many GPUs in use at once
  - {provider: aws, region: us-east-1, max_gpus: 256}
disabled_providers: [vast]
spot_preemptions_per_hour: {aws: 0.08}
scheduler: {burst_limit_node_hours: 64, fair_share: true}  # decide()'s options (scheduler/options.py)
```

Every model forbids unknown fields, and ``load_fleet`` reports mistakes as ``file:line: field: problem``
using the YAML node marks, so a typo never silently drops capacity.
"""

from __future__ import annotations

import datetime as dt
import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from overcast.catalog.accelerators import canonical_name, suggest
from overcast.catalog.fleet_base import Name, Provider
from overcast.catalog.fleet_clouds import (
    AwsAccount,
    AzureAccount,
    GcpAccount,
    LambdaAccount,
    NebiusAccount,
    OciAccount,
)
from overcast.scheduler.options import SchedulerOptions
from overcast.spec.errors import SpecError, not_utf8, shown
from overcast.spec.infra import KNOWN_PROVIDERS, provider_name
from overcast.spec.yamldoc import Document, parse_yaml


class _Strict(BaseModel):  # a pydantic model here, so linters see one
    model_config = ConfigDict(extra="forbid", frozen=True)


def _accelerator(value: str) -> str:
    name = canonical_name(value)
    if name is None:
        hint = suggest(value)
        raise ValueError(
            f"unknown accelerator {value!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else "")
        )
    return name


class Reservation(_Strict):
    """Committed capacity at a provider: ``gpus`` GPUs until ``until`` (inclusive) at a per-GPU-hour price."""

    provider: Provider
    region: str = Field(min_length=1)
    zone: str | None = None
    accelerator: str
    gpus: int = Field(gt=0)
    price_per_gpu_hour: float = Field(ge=0)
    until: dt.date | dt.datetime
    since: dt.date | dt.datetime | None = None
    instance_type: str | None = None  # default: the catalog's largest instance with this accelerator there
    gpus_per_node: int | None = Field(default=None, gt=0)  # default: from the catalog instance

    @field_validator("accelerator")
    @classmethod
    def _known(cls, value: str) -> str:
        return _accelerator(value)

    @model_validator(mode="after")
    def _whole_nodes(self) -> Self:
        if self.gpus_per_node and self.gpus % self.gpus_per_node:
            raise ValueError(f"gpus ({self.gpus}) is not a multiple of gpus_per_node ({self.gpus_per_node})")
        return self

    def active(self, now: float) -> bool:
        start = _epoch(self.since, end_of_day=False) if self.since is not None else float("-inf")
        return start <= now < _epoch(self.until, end_of_day=True)


class SlurmCluster(_Strict):
    conf: Path | None = None  # slurm.conf; None: the default the Slurm tools find
    partition: str | None = None


class KubernetesCluster(_Strict):
    """Where a Kubernetes cluster's API is and how overcast's pods look (see docs/backends/kubernetes.md)."""

    api: str = Field(min_length=1)  # https://host:port of the API server, or a kubeconfig context name
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    kubeconfig: Path | None = None  # for a context; default $KUBECONFIG or ~/.kube/config
    token_file: Path | None = None  # with a URL: a bearer token (a service account's), read, never logged
    ca_file: Path | None = None  # with an https URL: the API server's CA bundle
    image: str = Field(default="python:3.12-slim", min_length=1)  # the pods' image: bash + the job's tools
    node_selector: dict[str, str] = {}  # only nodes with these labels (e.g. a GPU product label)
    service_account: str | None = None  # the pods' service account (never overcast's own credentials)
    volume_claim: str | None = None  # a PersistentVolumeClaim mounted in every pod (checkpoints, data)
    mount_path: str = "/overcast"  # where volume_claim is mounted
    schedule_timeout_s: float = Field(default=300.0, gt=0)  # a pod still unscheduled by then: capacity error
    start_timeout_s: float = Field(default=1800.0, gt=0)  # all scheduled, not all running (image pulls)
    # Job names and owner label; fleet entries sharing a namespace need one each
    job_prefix: str = Field(default="ovc", pattern=r"^[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?$")


class LocalProcesses(_Strict):
    home: Path | None = None  # where the local backend keeps its state; None: $OVERCAST_HOME


class Cluster(_Strict):
    """A private cluster: exactly one of ``slurm``, ``kubernetes`` or ``local`` says which backend runs it."""

    name: Name
    slurm: SlurmCluster | None = None
    kubernetes: KubernetesCluster | None = None
    local: LocalProcesses | None = None
    nodes: int = Field(gt=0)
    gpus_per_node: int = Field(ge=0)
    accelerator: str = ""  # empty for a CPU-only cluster
    price_per_gpu_hour: float = Field(default=0.0, ge=0)  # the internal cost accounting charges
    price_per_node_hour: float | None = Field(default=None, ge=0)  # instead of the per-GPU price
    purchase: str = Field(default="reserved", pattern="^(reserved|on-demand)$")
    provider: Provider | None = None  # default: the cluster name
    region: str | None = None  # default: "local" for local processes, the cluster name for Slurm

    @field_validator("accelerator")
    @classmethod
    def _known(cls, value: str) -> str:
        return _accelerator(value) if value else value

    @model_validator(mode="after")
    def _one_backend(self) -> Self:
        if sum(kind is not None for kind in (self.slurm, self.kubernetes, self.local)) != 1:
            raise ValueError("give exactly one of 'slurm', 'kubernetes' or 'local'")
        if self.gpus_per_node and not self.accelerator:
            raise ValueError("'accelerator' is required when gpus_per_node > 0")
        return self

    @property
    def kind(self) -> str:
        """The backend kind: "slurm", "kubernetes" or "local"."""
        if self.slurm is not None:
            return "slurm"
        return "kubernetes" if self.kubernetes is not None else "local"

    @property
    def backend(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def node_price(self) -> float:
        if self.price_per_node_hour is not None:
            return self.price_per_node_hour
        return self.price_per_gpu_hour * self.gpus_per_node


class QuotaRule(_Strict):
    provider: Provider
    region: str | None = None  # None: the whole provider
    max_gpus: int = Field(ge=0)


class Fleet(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)  # Fleet(lambda_=[...])

    reservations: list[Reservation] = []
    clusters: list[Cluster] = []
    aws: list[AwsAccount] = []
    oci: list[OciAccount] = []
    azure: list[AzureAccount] = []
    gcp: list[GcpAccount] = []
    lambda_: list[LambdaAccount] = Field(default=[], alias="lambda")  # a Python keyword: the alias is read
    nebius: list[NebiusAccount] = []
    quotas: list[QuotaRule] = []
    disabled_providers: list[Provider] = []
    spot_preemptions_per_hour: dict[Provider, Annotated[float, Field(ge=0)]] = {}
    scheduler: SchedulerOptions = SchedulerOptions()  # the live control loop's decide() options

    @model_validator(mode="after")
    def _unique_cluster_names(self) -> Self:
        for what, names in (
            ("cluster", [c.name for c in self.clusters]),
            ("aws", [a.name for a in self.aws]),
            ("oci", [a.name for a in self.oci]),
            ("azure", [a.name for a in self.azure]),
            ("gcp", [a.name for a in self.gcp]),
            ("lambda", [a.name for a in self.lambda_]),
            ("nebius", [a.name for a in self.nebius]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{what} names must be unique: {', '.join(dupes)}")
        return self


class FleetError(ValueError):
    """A fleet file that cannot be used; the message names the file, line and field of each problem."""


def _epoch(value: dt.date | dt.datetime, *, end_of_day: bool) -> float:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).timestamp()
    day = value + dt.timedelta(days=1) if end_of_day else value
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class whose field ``loc[-1]`` is (for "did you mean" on unknown fields)."""
    model: Any = Fleet
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        fields = {f.alias or name: f for name, f in model.model_fields.items()}  # as written: ``lambda``
        if part not in fields:
            return None
        model = fields[part].annotation
        # unwrap list[X] and X | None to X
        while typing.get_origin(model) in (list, typing.Union, types.UnionType):
            model = next(a for a in typing.get_args(model) if a is not type(None))
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _user_loc(data: Any, loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """``loc`` as the user wrote it: pydantic appends union members past a value ("until.date")."""
    for i, part in enumerate(loc):
        if not isinstance(data, dict | list):
            return loc[:i]
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return loc  # a missing field: the whole path
    return loc


def _dotted(loc: tuple[int | str, ...]) -> str:
    """("clusters", 0, "slurm", "conf") -> "clusters[0].slurm.conf"."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top)"


def _describe(error: Any, doc: Document) -> tuple[int, str, str]:
    """(line, field, problem) of one pydantic error."""
    loc = _user_loc(doc.data, tuple(error["loc"]))
    field = _dotted(loc)
    line = doc.line(loc) or 1
    if error["type"] == "extra_forbidden":
        model = _model_at(loc)
        known = [f.alias or name for name, f in model.model_fields.items()] if model else []
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known fields: {', '.join(known)})"
        return line, field, f"unknown field{hint}"
    if error["type"] == "missing":
        return line, field, "required field is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = "" if error["type"] == "value_error" else f" (got {shown(error.get('input'))})"
    return line, field, f"{message}{got}"


def _unknown_providers(fleet: Fleet) -> list[tuple[tuple[int | str, ...], str]]:
    """(loc, problem) for each provider that is neither one overcast knows nor a cluster's: a typo would
    disable nothing, limit nothing, or reserve capacity that no backend can launch."""
    known = {*KNOWN_PROVIDERS, *(provider_name(c.provider or c.name) for c in fleet.clusters)}
    named: list[tuple[tuple[int | str, ...], str]] = [
        *((("reservations", i, "provider"), r.provider) for i, r in enumerate(fleet.reservations)),
        *((("quotas", i, "provider"), q.provider) for i, q in enumerate(fleet.quotas)),
        *((("disabled_providers", i), name) for i, name in enumerate(fleet.disabled_providers)),
        *((("spot_preemptions_per_hour", name), name) for name in fleet.spot_preemptions_per_hour),
    ]
    out = []
    for loc, name in named:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = (
                f" (did you mean {', '.join(close)}?)"
                if close
                else ": not a provider overcast knows nor a cluster here"
            )
            out.append((loc, f"unknown provider '{name}'{hint}"))
    return out


def _shared_namespaces(fleet: Fleet) -> list[tuple[tuple[int | str, ...], str]]:
    """(loc, problem) for each ``kubernetes:`` entry on the API, namespace and job_prefix of an earlier
    one: their Jobs would have the same names, and each backend would see the other's."""
    first: dict[tuple[str, str, str], str] = {}
    out = []
    for i, cluster in enumerate(fleet.clusters):
        k = cluster.kubernetes
        if k is None:
            continue
        where = (k.api, k.namespace, k.job_prefix)
        if where in first:
            out.append(
                (
                    ("clusters", i, "kubernetes"),
                    f"same api, namespace ({k.namespace}) and job_prefix ({k.job_prefix}) as cluster "
                    f"'{first[where]}': give one of them a job_prefix of its own",
                )
            )
        first.setdefault(where, cluster.name)
    return out


def _idle_yield(fleet: Fleet) -> list[tuple[tuple[int | str, ...], str]]:
    """burst_yield acts only with the burst limit: alone it would silently do nothing."""
    if fleet.scheduler.burst_yield is None or fleet.scheduler.burst_limit_node_hours is not None:
        return []
    return [(("scheduler", "burst_yield"), "acts only with burst_limit_node_hours: set that too")]


def parse_fleet(text: str, path: Path | str = "<fleet>") -> Fleet:
    """Validate fleet YAML text; raise FleetError naming file, line and field of each problem."""
    path = Path(path)
    try:
        doc = parse_yaml(text, str(path))
    except SpecError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise FleetError(f"{where}: not valid YAML: {exc.message.removeprefix('invalid YAML: ')}") from None
    if doc.data is None:
        return Fleet()
    if not isinstance(doc.data, dict):
        got = type(doc.data).__name__
        raise FleetError(f"{path}:1: a fleet file is a mapping (reservations:, clusters:, ...), got {got}")
    # PyYAML keeps the last of two equal keys: a second ``clusters:`` would silently drop the first
    problems = {
        (line, _dotted(key)): f"given twice (first on line {doc.lines[key]}, again on line {line})"
        for key, line in doc.duplicates
    }
    try:
        fleet = Fleet.model_validate(doc.data)
    except ValidationError as exc:
        for error in exc.errors():
            line, field, problem = _describe(error, doc)
            problems.setdefault((line, field), problem)  # one per field: "until" fails date and datetime
    else:
        for loc, problem in [*_unknown_providers(fleet), *_shared_namespaces(fleet), *_idle_yield(fleet)]:
            problems.setdefault((doc.line(loc) or 1, _dotted(loc)), problem)
        if not problems:
            return fleet
    ordered = sorted(problems.items(), key=lambda item: item[0][0])
    raise FleetError("\n".join(f"{path}:{line}: {field}: {text}" for (line, field), text in ordered))


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file (see the module docstring for the format)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FleetError(str(not_utf8(str(path), exc))) from None
    except OSError as exc:
        raise FleetError(f"{path}: cannot read fleet file: {exc.strerror or exc}") from None
    return parse_fleet(text, path)
