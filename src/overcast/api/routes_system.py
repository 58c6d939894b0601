"""Events, pools, providers, chaos, health and metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import Response

from overcast.api import db, metrics
from overcast.api.auth import Auth, require_admin
from overcast.api.controller import Controller
from overcast.api.errors import ERRORS
from overcast.api.schemas import (
    ChaosIn,
    ChaosOut,
    ErrorOut,
    EventList,
    EventOut,
    Health,
    PoolsOut,
    ProvidersOut,
)
from overcast.api.text import check_model, check_text
from overcast.store import Store

router = APIRouter(responses=ERRORS)
NO_CONTROLLER = {503: {"model": ErrorOut, "description": "no control loop is attached to this server"}}


def _controller(request: Request) -> Controller:
    controller = request.app.state.controller
    if controller is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail="no control loop is attached to this server"
        )
    return controller


@router.get("/v1/events", response_model=EventList, tags=["events"])
async def events(
    request: Request,
    who: Auth,
    job_id: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[int, Query(ge=0, le=2**62, description="only events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> EventList:
    """The timeline, oldest first. A team sees its own jobs' events; an admin sees all (and global ones)."""
    store: Store = request.app.state.store
    if job_id is not None:
        check_text(job_id, "job_id")
        if await db.call(store, store.get, job_id, team=who.scope) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    found = await db.call(store, store.events, job_id=job_id, team=who.scope, after_id=after, limit=limit)
    return EventList(events=[EventOut.of(e) for e in found], last_id=found[-1].id if found else after)


@router.get("/v1/pools", response_model=PoolsOut, responses=NO_CONTROLLER, tags=["capacity"])
def pools(request: Request, who: Auth) -> PoolsOut:
    """Every pool with capacity, use, learned health and price."""
    return PoolsOut(pools=_controller(request).pools())


@router.get("/v1/providers", response_model=ProvidersOut, responses=NO_CONTROLLER, tags=["capacity"])
def providers(request: Request, who: Auth) -> ProvidersOut:
    return ProvidersOut(providers=_controller(request).providers())


@router.post(
    "/v1/chaos",
    response_model=ChaosOut,
    responses={**NO_CONTROLLER, 400: {"model": ErrorOut}, 403: {"model": ErrorOut}},
    tags=["capacity"],
)
def chaos(request: Request, who: Auth, body: ChaosIn) -> ChaosOut:
    """Inject a failure: a provider goes down/up, runs out of capacity, or preempts a job (admin only)."""
    require_admin(who)
    check_model(body, "chaos")
    controller = _controller(request)
    try:
        result = controller.chaos(body.provider, body.action, job_id=body.job_id, duration_s=body.duration_s)
    except (ValueError, KeyError) as err:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail=str(err).strip("'\"")) from None
    return ChaosOut(result=result)


@router.get("/healthz", response_model=Health, tags=["system"])
def healthz(request: Request) -> Health:
    """Liveness: the database answers. No token needed."""
    store: Store = request.app.state.store
    store.ping()  # a read-only round trip; an OperationalError is a 503 (errors.install)
    return Health(status="ok", database=store.dialect)


@router.get("/metrics", response_class=Response, tags=["system"])
def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format: jobs by state, submissions, placements, failovers, decision seconds."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(metrics.render(request.app.state.store), media_type=CONTENT_TYPE_LATEST)
