"""Request and response bodies of the REST API (these make up /openapi.json)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from overcast.api.controller import ChaosAction
from overcast.spec.models import Env, JobSpec
from overcast.store import BudgetStatus, EventRecord, JobRecord, JobState, UsageRecord, UsageReport


class SubmitYaml(BaseModel):
    """A job spec as YAML text, exactly as in a job file."""

    model_config = ConfigDict(extra="forbid")
    # Long run scripts fit many times over; parsing time grows with the text (200,000 characters of
    # nested lists: about 4 s of a worker thread), so 1,000,000 was only a way to burn CPU.
    yaml: str = Field(max_length=200_000)
    # `overcast launch --env NAME=VALUE`: over the file's env, and filling its null entries
    env: Env = Field(default_factory=dict, max_length=1_000)


def _submit_kind(body: Any) -> str:
    return "yaml" if isinstance(body, dict) and "yaml" in body else "spec"


# A body with a "yaml" key is YAML text, anything else a JobSpec: errors then name the field of the
# one that was meant ("body.num_nodes: ...") instead of listing both readings of the body.
SubmitBody = Annotated[
    Annotated[SubmitYaml, Tag("yaml")] | Annotated[JobSpec, Tag("spec")], Discriminator(_submit_kind)
]
SUBMIT_TAGS = frozenset({"yaml", "spec"})  # dropped from error locations by overcast.api.errors


class JobOut(BaseModel):
    id: str
    team: str
    name: str
    state: JobState
    priority: int
    attempt: int
    pool_id: str | None
    backend: str | None
    nodes: int | None
    restarts: int
    failures: int
    submitted_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    cancel_requested: bool
    reason: str | None
    spec: JobSpec

    @classmethod
    def of(cls, job: JobRecord) -> JobOut:
        return cls.model_construct(**{name: getattr(job, name) for name in cls.model_fields})


class JobList(BaseModel):
    jobs: list[JobOut]
    limit: int
    offset: int


class EventOut(BaseModel):
    id: int
    job_id: str | None
    at: float
    kind: str
    detail: str

    @classmethod
    def of(cls, event: EventRecord) -> EventOut:
        return cls.model_construct(**event._asdict())


class EventList(BaseModel):
    events: list[EventOut]
    last_id: int  # pass as ?after= to get only newer events


class UsageRowOut(BaseModel):
    """One team's, pool's, provider's or job's use in the window (``key`` null: unknown, or the total)."""

    key: str | None
    gpu_hours: float  # every purchase, reserved included
    node_hours: float
    dollars: float  # list-price spend on on-demand and spot pools
    reserved_gpu_hours: float  # the part of gpu_hours on reserved pools: already paid for
    reserved_dollars: float  # reserved use at its recorded list price (not spend)
    launches: int
    unpriced_launches: int  # recorded before launches carried their price: node-hours only

    @classmethod
    def of(cls, record: UsageRecord) -> UsageRowOut:
        return cls.model_construct(**asdict(record))


class UsageOut(BaseModel):
    since: float
    until: float
    by: str
    team: str | None  # null: every team (an admin's view)
    rows: list[UsageRowOut]  # one page: most dollars (spend + reserved value), GPU-hours, key
    total: UsageRowOut  # over every row, not only this page's
    offset: int  # rows before this page
    truncated: bool  # more rows follow: ask again with offset=next_offset and the same until
    next_offset: int | None

    @classmethod
    def of(cls, report: UsageReport) -> UsageOut:
        rows = [UsageRowOut.of(r) for r in report.rows]
        return cls.model_construct(
            since=report.since, until=report.until, by=report.by, team=report.team, rows=rows,
            total=UsageRowOut.of(report.total), offset=report.offset,
            truncated=report.next_offset is not None, next_offset=report.next_offset,
        )  # fmt: skip


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # list-price dollars per UTC calendar month; null clears the budget (the team is unlimited again)
    monthly_dollars: float | None = Field(ge=0, allow_inf_nan=False)


class BudgetOut(BaseModel):
    team: str
    monthly_dollars: float | None  # null: no budget
    month_start: float  # epoch seconds: 00:00 UTC on the first of this month
    spent: float  # list-price dollars since month_start (on-demand and spot; reserved never counts)
    remaining: float | None  # monthly_dollars - spent (negative when over); null without a budget

    @classmethod
    def of(cls, status: BudgetStatus) -> BudgetOut:
        return cls.model_construct(**asdict(status))


class ChaosIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str = Field(min_length=1, max_length=128)
    action: ChaosAction
    job_id: str | None = Field(default=None, max_length=64)
    duration_s: float | None = Field(default=None, ge=0, le=7 * 24 * 3600)


class ChaosOut(BaseModel):
    result: str


class PoolsOut(BaseModel):
    pools: list[dict[str, Any]]


class ProvidersOut(BaseModel):
    providers: list[dict[str, Any]]


class Health(BaseModel):
    status: str
    database: str


class ErrorOut(BaseModel):
    """Every error has this shape: ``detail`` is one readable line; the rest is there when it applies."""

    detail: str  # "job.yaml:12: resources.accelerators: unknown accelerator 'H1OO' (did you mean H100?)"
    line: int | None = None  # spec errors: the line in the YAML text
    field: str | None = None  # spec errors: the dotted field
    problems: list[str] | None = None  # spec errors: every problem, one line each
    errors: list[dict[str, Any]] | None = None  # request validation: pydantic's errors (loc, msg, type)
