"""/v1/jobs: submit, list, show, cancel, logs. A team sees only its own jobs (others' are 404)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from overcast.api import db, metrics, specs
from overcast.api.auth import Auth, Principal
from overcast.api.errors import ERRORS
from overcast.api.logs import stream_log
from overcast.api.schemas import ErrorOut, JobList, JobOut, SubmitBody, SubmitYaml
from overcast.api.text import check_model
from overcast.spec.errors import SpecError
from overcast.spec.models import JobSpec
from overcast.store import JobRecord, JobState, Store

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=ERRORS)
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="a job id such as j-4kq2m9x7ab")]
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such job (or another team's)"}}
# log reads wait on the nodes' log store: their own threads, so a store that hangs never takes the
# default limiter's 40, which every PostgreSQL store call shares (api/db.py)
LOG_READS = anyio.CapacityLimiter(8)


def _store(request: Request) -> Store:
    return request.app.state.store


def _json(model: BaseModel, code: int = 200, *, exclude_none: bool = False) -> Response:
    # Serialise once with pydantic's Rust core instead of FastAPI's validate-then-serialise round.
    body = model.model_dump_json(exclude_none=exclude_none)
    return Response(body, status_code=code, media_type="application/json")


async def _visible(request: Request, who: Principal, job_id: str) -> JobRecord:
    store = _store(request)
    job = await db.call(store, store.get, job_id, team=who.scope)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    return job


def _parse_yaml(text: str, env: dict[str, str] | None = None) -> tuple[JobSpec, list[str]]:
    """(spec, loader warnings); raises SpecError for a bad spec (answered as 422 by ``submit``)."""
    loaded = specs.load_text(text, "job.yaml", env)
    if not isinstance(loaded.spec, JobSpec):
        raise HTTPException(
            422,
            detail=f"this is a {type(loaded.spec).__name__}, not a job spec: only jobs can be submitted here",
        )
    return loaded.spec, loaded.warnings


def _spec_error(err: SpecError) -> Response:
    body = ErrorOut(
        detail=str(err), line=err.line, field=err.field, problems=[p.render(err.source) for p in err.problems]
    )
    return _json(body, 422, exclude_none=True)


def _team_error(err: ValueError) -> Response:
    return _json(ErrorOut(detail=f"team: {err}", field="team"), 422, exclude_none=True)


@router.post(
    "",
    status_code=201,
    response_model=JobOut,
    responses={413: {"model": ErrorOut, "description": "request body over limits.MAX_BODY_BYTES"}},
)
async def submit(
    request: Request,
    who: Auth,
    body: Annotated[SubmitBody, Body(description="{'yaml': '<job file text>'} or a JobSpec")],
) -> Response:
    """Submit a job. The job belongs to the caller's team; an admin may name another in ``team``.

    Warnings from the YAML loader (keys overcast does not act on) go to the job's events.
    """
    try:
        if isinstance(body, SubmitYaml):
            spec, warnings = await specs.parse(partial(_parse_yaml, env=body.env), body.yaml)
        else:
            spec, warnings = body, []
    except SpecError as err:
        return _spec_error(err)
    check_model(spec, "spec")
    store = _store(request)
    try:
        team = await specs.owner(store, who, spec.team)
    except ValueError as err:
        return _team_error(err)
    job = await db.call(store, store.submit, team, spec)
    for warning in warnings:  # e.g. "job.yaml:7: file_mounts: not acted on" -> the job's timeline
        await db.call(store, store.add_event, job.id, "spec-warning", warning)
    metrics.SUBMISSIONS.inc()
    return _json(JobOut.of(job), 201)


@router.get("", response_model=JobList)
async def list_jobs(
    request: Request,
    who: Auth,
    state: Annotated[list[JobState] | None, Query(description="only these states (repeatable)")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Response:
    """The caller's jobs (an admin sees all), oldest first."""
    store = _store(request)
    jobs = await db.call(store, store.list, team=who.scope, states=state, limit=limit, offset=offset)
    return _json(JobList(jobs=[JobOut.of(j) for j in jobs], limit=limit, offset=offset))


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND)
async def show(request: Request, who: Auth, job_id: JobId) -> Response:
    return _json(JobOut.of(await _visible(request, who, job_id)))


@router.post("/{job_id}/cancel", response_model=JobOut, responses=NOT_FOUND)
async def cancel(request: Request, who: Auth, job_id: JobId) -> Response:
    """Cancel: a pending job is cancelled at once; a running one is stopped by the control loop."""
    store = _store(request)
    job = await db.call(store, store.request_cancel, job_id, team=who.scope)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    return _json(JobOut.of(job))


@router.get(
    "/{job_id}/logs",
    response_class=StreamingResponse,
    responses={**NOT_FOUND, 200: {"content": {"text/plain": {}}, "description": "the log text"}},
)
async def logs(
    request: Request,
    who: Auth,
    job_id: JobId,
    rank: Annotated[int, Query(ge=0, le=100_000)] = 0,
    attempt: Annotated[int | None, Query(ge=1, le=1_000_000, description="default: the latest")] = None,
    follow: bool = False,
) -> StreamingResponse:
    """The log of one rank of one attempt; with ``follow=true`` it streams until that attempt ends."""
    job = await _visible(request, who, job_id)
    attempt = attempt or job.attempt
    controller = request.app.state.controller
    path = None
    if controller is not None and attempt >= 1:  # a cloud log's copy asks its store: not on the loop
        read = partial(controller.log_path, job_id, attempt, rank, follow=follow)
        path = await anyio.to_thread.run_sync(read, limiter=LOG_READS)
    if path is None or not path.exists():
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no log for job {job_id} attempt {attempt} rank {rank} (yet)"
        )
    done = partial(_store(request).attempt_over, job_id, attempt)
    return StreamingResponse(stream_log(path, follow=follow, done=done), media_type="text/plain")
