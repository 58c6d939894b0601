"""/v1/services: put (create or change), list, show, delete inference services.

A team sees only its own services (another team's is a 404, as for jobs); an admin sees every team's and
may name one with ``?team=`` where two teams use one name. The server's service supervisor runs what is
stored here (``overcast.serve.supervisor``): launches replicas, rolls a changed spec, stops a deleted one.
"""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel

from overcast.api import db, specs
from overcast.api.auth import Auth, Principal
from overcast.api.errors import ERRORS
from overcast.api.routes_jobs import _json, _spec_error, _team_error
from overcast.api.schemas import ErrorOut, SubmitYaml
from overcast.api.text import check_model
from overcast.serve.ledger import check_service_name
from overcast.spec.errors import Problem, SpecError
from overcast.spec.models import ServiceSpec
from overcast.store import ServiceRecord, Store

router = APIRouter(prefix="/v1/services", tags=["services"], responses=ERRORS)
SOURCE = "service.yaml"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ServiceName = Annotated[str, Path(pattern=NAME_PATTERN, description="the service's name, e.g. llm")]
TeamQuery = Annotated[
    str | None, Query(pattern=NAME_PATTERN, description="admin only: the team whose service this is")
]
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such service (or another team's)"}}
AMBIGUOUS = {409: {"model": ErrorOut, "description": "admin: several teams have this name; pass ?team="}}


class ServiceOut(BaseModel):
    id: str
    team: str
    name: str
    version: int
    state: str  # active | deleting
    lb_port: int | None
    status: dict[str, Any]  # ready replicas, target, replicas: what the controller last reported
    submitted_at: float
    updated_at: float
    spec: ServiceSpec

    @classmethod
    def of(cls, svc: ServiceRecord) -> ServiceOut:
        return cls.model_construct(**{name: getattr(svc, name) for name in cls.model_fields})


class ServiceList(BaseModel):
    services: list[ServiceOut]


def _store(request: Request) -> Store:
    return request.app.state.store


def _line_of(text: str, key: str) -> int | None:
    """The line of a top-level key in YAML text that is already known to parse."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if isinstance(node, yaml.MappingNode):
        for k, _ in node.value:
            if getattr(k, "value", None) == key:
                return k.start_mark.line + 1
    return None


def _parse(text: str) -> ServiceSpec:
    spec = specs.load_text(text, SOURCE).spec
    if not isinstance(spec, ServiceSpec):
        why = "this is a job, not a service: add a service: section (or kind: service)"
        raise SpecError(SOURCE, [Problem(why, field="service")])
    try:
        check_service_name(spec.name)
    except ValueError as err:
        raise SpecError(SOURCE, [Problem(str(err), line=_line_of(text, "name"), field="name")]) from None
    return spec


async def _visible(request: Request, who: Principal, name: str, team: str | None) -> ServiceRecord:
    store = _store(request)
    scope = (team or who.scope) if who.admin else who.team
    found = await db.call(store, store.services, team=scope, name=name)
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"service {name} not found")
    if len(found) > 1:
        teams = ", ".join(s.team for s in found)
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"service {name} exists in teams {teams}: pass ?team="
        )
    return found[0]


@router.post(
    "",
    status_code=201,
    response_model=ServiceOut,
    responses={
        200: {"model": ServiceOut, "description": "the service existed: its spec changed (or was the same)"},
        413: {"model": ErrorOut, "description": "request body over limits.MAX_BODY_BYTES"},
    },
)
async def put(
    request: Request,
    who: Auth,
    body: Annotated[SubmitYaml, Body(description="{'yaml': '<service file text>'}")],
) -> Response:
    """Create a service (201), or change the team's service of that name (200): a new version, rolled
    out replica by replica. An admin may name another team in the spec's ``team``."""
    try:
        spec = await specs.parse(_parse, body.yaml)
    except SpecError as err:
        return _spec_error(err)
    check_model(spec, "spec")
    store = _store(request)
    try:
        team = await specs.owner(store, who, spec.team)
    except ValueError as err:
        return _team_error(err)
    svc, created = await db.call(store, store.put_service, team, spec)
    return _json(ServiceOut.of(svc), 201 if created else 200)


@router.get("", response_model=ServiceList)
async def list_services(request: Request, who: Auth) -> Response:
    """The caller's services (an admin sees all), oldest first."""
    store = _store(request)
    found = await db.call(store, store.services, team=who.scope)
    return _json(ServiceList(services=[ServiceOut.of(s) for s in found]))


@router.get("/{name}", response_model=ServiceOut, responses={**NOT_FOUND, **AMBIGUOUS})
async def show(request: Request, who: Auth, name: ServiceName, team: TeamQuery = None) -> Response:
    return _json(ServiceOut.of(await _visible(request, who, name, team)))


@router.delete("/{name}", status_code=202, response_model=ServiceOut, responses={**NOT_FOUND, **AMBIGUOUS})
async def delete(request: Request, who: Auth, name: ServiceName, team: TeamQuery = None) -> Response:
    """Delete: the service's controller stops every replica, then the service is gone (202: accepted)."""
    svc = await _visible(request, who, name, team)
    store = _store(request)
    marked = await db.call(store, store.request_service_delete, svc.id)
    if marked is None:  # removed meanwhile
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"service {name} not found")
    return _json(ServiceOut.of(marked), 202)
