"""Scenario files: the world the twin simulates (pools and their capacity, traces, outages, workload).

A scenario is YAML validated by these pydantic models; a mistake becomes one readable line naming the
field, never a traceback (see ``load_scenario``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from overcast.placement.pool import Purchase
from overcast.twin.arrivals import HELIOS_DAYS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpotTrace(Strict):
    source: str  # skypilot | sky2022 | skynomad-gcp-h100 | spothedge
    series: str  # file stem or zone, see twin.availability
    offset_hours: float = Field(default=0.0, ge=0)  # start the replay this far into the trace


class Stockouts(Strict):
    """On-demand capacity that runs out now and then: a Poisson process of stock-out windows."""

    per_day: float = Field(default=0.0, ge=0)
    mean_hours: float = Field(default=4.0, gt=0)
    share_left: float = Field(default=0.0, ge=0, le=1)  # capacity left during a stock-out


class PoolSpec(Strict):
    provider: str
    region: str
    instance_type: str
    purchase: Purchase
    nodes: int = Field(ge=0)  # reservation size, quota, or spot capacity at full availability
    zone: str | None = None
    price_per_node_hour: float | None = Field(default=None, gt=0)  # overrides the catalog price
    price_factor: float = Field(default=1.0, gt=0)  # e.g. 0.6 for a reservation at 40% off list
    provision_minutes: float = Field(default=5.0, ge=0)
    spot_trace: SpotTrace | None = None
    stockouts: Stockouts | None = None

    @model_validator(mode="after")
    def _spot_needs_trace(self) -> PoolSpec:
        if self.spot_trace is not None and self.purchase is not Purchase.SPOT:
            raise ValueError("spot_trace is only meaningful for purchase: spot")
        return self


class Outage(Strict):
    provider: str
    start_hour: float = Field(ge=0)
    hours: float = Field(gt=0)


class Arrivals(Strict):
    """Re-time the scaled jobs so their arrival rate follows a real submission series (twin.arrivals)."""

    shape: Literal["helios-venus"]  # SenseTime Venus GPU-job submissions per 10 min, Apr-Aug 2020
    start_day: int = Field(default=0, ge=0, lt=HELIOS_DAYS)  # days after 2020-04-01 (a Wednesday)


class WorkloadSpec(Strict):
    trace: str  # gavel | alibaba | pollux | sia | tiresias
    files: list[str] | None = None
    jobs: int | None = Field(default=None, ge=1)  # resample to this many jobs; None keeps the trace
    accelerator: str = "H100"
    gpus_per_node: int = Field(default=8, ge=1)
    gpu_scale: float = Field(default=8.0, gt=0)  # see twin.workload: old GPUs -> modern GPUs
    speedup: float = Field(default=1.0, gt=0)  # modern GPU speed vs the trace's hardware
    max_job_hours: float | None = Field(default=None, gt=0)
    max_nodes: int | None = Field(default=None, ge=1)  # clip gangs to what one pool can hold
    spot_fraction: float = Field(default=0.0, ge=0, le=1)  # share of jobs that allow spot
    teams: list[str] | None = None  # fold the trace's teams onto these names
    arrivals: Arrivals | None = None  # None: the trace's own arrival times (scaling rule)


class Scenario(Strict):
    name: str
    description: str = ""
    seed: int = 0
    duration_days: float = Field(gt=0)
    cycle_seconds: float = Field(default=60.0, gt=0)
    checkpoint_minutes: float = Field(default=30.0, ge=0)  # 0: no checkpoints, a preemption loses all
    restart_overhead_minutes: float = Field(default=5.0, ge=0)
    capacity_cooldown_minutes: float = Field(default=15.0, gt=0)  # learned out-of-capacity backoff
    drain_days: float = Field(default=30.0, ge=0)  # run on after arrivals stop, to finish the queue
    home_provider: str  # the single-provider baseline stays here
    spillover_order: list[str]  # providers in the fixed-order spillover baseline's order
    policies: list[str] = ["overcast", "overcast-burst", "single-provider", "spillover", "cheapest-first"]
    # overcast-burst: jobs above this many expected node-hours do not start on list-price pools while a
    # reservation they fit exists (decide's burst_limit_node_hours)
    burst_limit_node_hours: float = Field(default=4.0, gt=0)
    # keyword arguments for overcast.scheduler.decide.decide (e.g. batch_threshold, time_budget_s)
    decide_options: dict[str, float | int | bool | str] = {}
    workload: WorkloadSpec
    pools: list[PoolSpec] = Field(min_length=1)
    outages: list[Outage] = []

    @model_validator(mode="after")
    def _providers_known(self) -> Scenario:
        providers = {p.provider for p in self.pools}
        for name in [self.home_provider, *self.spillover_order, *(o.provider for o in self.outages)]:
            if name not in providers:
                raise ValueError(
                    f"provider {name!r} has no pool in this scenario (pools: {sorted(providers)})"
                )
        return self

    @model_validator(mode="after")
    def _arrivals_fit(self) -> Scenario:
        a = self.workload.arrivals
        if a is not None and a.start_day + self.duration_days > HELIOS_DAYS:
            raise ValueError(
                f"workload.arrivals.start_day: the {a.shape} series covers {HELIOS_DAYS} days "
                f"(2020-04-01..2020-08-31); start_day {a.start_day} + duration_days "
                f"{self.duration_days:g} runs past it"
            )
        return self


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the field."""


def parse_scenario(data: object, source: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ScenarioError(f"{source}: {where}: {first['msg']}{more}") from None


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ScenarioError(f"scenario file not found: {path}") from None
    except yaml.YAMLError as err:
        raise ScenarioError(f"{path}: not valid YAML: {err}") from None
    return parse_scenario(data, str(path))
