"""Workload specs: what a user asks for, independent of where it runs.

These pydantic models are the contract between the YAML loader (``spec.loader``), the SkyPilot
importer (``spec.skypilot``), the placement engine and the control loop.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from overcast.catalog.accelerators import canonical_name, suggest


class SpotPolicy(StrEnum):
    NEVER = "never"  # on-demand or reserved only
    ALLOWED = "allowed"  # spot if it is cheaper after its preemption risk
    REQUIRED = "required"  # spot only


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_names(env: dict[str, str]) -> dict[str, str]:
    """The same rule YAML files get (spec.document), for specs that arrive as JSON."""
    for name in env:
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid environment variable name (letters, digits and _)")
    return env


Env = Annotated[dict[str, str], AfterValidator(_env_names)]

# The checks below are the models' own, not only the YAML loader's (spec.quantities, spec.accelerators),
# because a spec also arrives as JSON (POST /v1/jobs with a JobSpec body) and must mean the same.
# No machine has more than a few dozen accelerators (the catalog's largest: 16); the bound keeps GPU
# counts, and the hours and dollars multiplied from them, finite and sane.
MAX_ACCELERATORS_PER_NODE = 1024
# A service's replicas are planned one by one each supervisor tick; a target of 10**12 is a typo, and
# far more than any fleet could host (jobs stop at num_nodes <= 4096 for the same reason).
MAX_REPLICAS = 1000


# ``model_validate*(..., context=STORED)``: a spec read back from the store was checked when it was
# submitted; a later catalog that drops or renames an accelerator must not make it unreadable.
STORED = {"stored": True}


def _known_accelerator(name: str, info: ValidationInfo) -> str:
    """The catalog's name for ``name`` ("h100" -> "H100"), as the YAML loader gives it."""
    if info.context and info.context.get("stored"):
        return name
    canonical = canonical_name(name)
    if canonical is None:
        hint = suggest(name)
        raise ValueError(f"unknown accelerator {name!r}" + (f" (did you mean {hint[0]}?)" if hint else ""))
    return canonical


Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    # allow_inf_nan=False: JSON's Infinity and NaN would pass a ge=0 check, then be stored as null
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AcceleratorRequest(Strict):
    """``H100:8`` per node. Names are normalised catalog names (see ``catalog.accelerators``)."""

    name: Annotated[str, AfterValidator(_known_accelerator)]
    count: int = Field(ge=1, le=MAX_ACCELERATORS_PER_NODE)

    def __str__(self) -> str:
        return f"{self.name}:{self.count}"


class Resources(Strict):
    # Acceptable alternatives per node; empty means CPU only. With ``ordered`` the first feasible
    # alternative wins regardless of price (SkyPilot's ``ordered``); otherwise the cheapest wins.
    accelerators: tuple[AcceleratorRequest, ...] = ()
    ordered: bool = False
    cpus: float | None = Field(default=None, ge=0)
    memory_gib: float | None = Field(default=None, ge=0)
    disk_gib: float | None = Field(default=None, ge=0)
    ports: tuple[Port, ...] = ()
    instance_type: str | None = None
    spot: SpotPolicy = SpotPolicy.NEVER
    providers: tuple[str, ...] = ()  # allow list; empty = any
    deny_providers: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()  # allow list; empty = any
    deny_regions: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    max_price_per_hour: float | None = Field(default=None, gt=0)  # whole job, all nodes, $/h


class JobSpec(Strict):
    name: str = Field(min_length=1, max_length=128)
    resources: Resources = Resources()
    num_nodes: int = Field(default=1, ge=1, le=4096)
    setup: str | None = None
    run: str | None = None
    env: Env = Field(default_factory=dict)
    workdir: str | None = None
    checkpoint_dir: str | None = None  # path or fsspec URL that survives moving between providers
    priority: int = Field(default=0, ge=-1000, le=1000)
    team: str = "default"
    max_restarts: int = Field(default=10, ge=0)  # restarts after preemption / node or provider loss
    max_retries_on_failure: int = Field(default=0, ge=0)  # restarts after the job itself fails
    # cost estimates and queue order; SkyPilot assumes 1 h too. Bounded: 3.6 s to ~11 years, finite.
    expected_hours: float = Field(default=1.0, ge=0.001, le=100_000)


class ReadinessProbe(Strict):
    path: str = "/"
    initial_delay_seconds: float = Field(default=5.0, ge=0)
    timeout_seconds: float = Field(default=2.0, gt=0, le=60)  # a probe blocks its service's tick
    period_seconds: float = Field(default=2.0, gt=0, le=3600)
    # consecutive failed probes before a ready replica is replaced (Kubernetes' failureThreshold): one
    # slow probe of a busy replica must not kill it, or a load spike cascades over the whole service
    failure_threshold: int = Field(default=3, ge=1, le=100)
    # after the initial delay, how long a replica may take to pass its first probe (a model load)
    # before it is replaced: a hung load must not hold a slot of the target forever
    timeout_to_ready_seconds: float = Field(default=1200.0, gt=0, le=86_400)


class Proxy(Strict):
    """The load balancer's timeouts for one request to a replica."""

    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # to the response's first byte and between two reads of its body (nginx's proxy_read_timeout)
    read_timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # the whole body; None: no cap, a streamed generation may run as long as it keeps sending
    body_timeout_seconds: float | None = Field(default=None, gt=0, le=86_400)


class Autoscaling(Strict):
    min_replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    target_rps_per_replica: float | None = Field(default=None, gt=0)
    upscale_delay_seconds: float = Field(default=30.0, ge=0)
    downscale_delay_seconds: float = Field(default=300.0, ge=0)


class SpotHedge(Strict):
    """Spot replicas with an on-demand base and on-demand fallback (SkyServe's SpotHedge idea)."""

    base_on_demand: int = Field(default=0, ge=0)
    dynamic_fallback: bool = True


class ServiceSpec(Strict):
    name: str = Field(min_length=1, max_length=128)
    resources: Resources = Resources()
    replicas: Autoscaling = Autoscaling()
    readiness_probe: ReadinessProbe = ReadinessProbe()
    proxy: Proxy = Proxy()
    port: int = Field(default=8080, ge=1, le=65535)
    setup: str | None = None
    run: str | None = None
    env: Env = Field(default_factory=dict)
    max_share_per_provider: float = Field(default=1.0, gt=0, le=1)  # spread across providers
    spot_hedge: SpotHedge | None = None
    team: str = "default"
    priority: int = Field(default=0, ge=-1000, le=1000)
