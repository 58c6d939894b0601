"""/v1/usage: GPU-hours and dollars per team, pool, provider or job over a time window.

A team token sees only its own team's launches; an admin sees every team's, or one team's with ``team``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from overcast.api import db
from overcast.api.auth import Auth
from overcast.api.errors import ERRORS
from overcast.api.schemas import ErrorOut, UsageOut
from overcast.store import TEAM_NAME_PATTERN, Store, UsageBy

router = APIRouter(tags=["usage"], responses=ERRORS)
DEFAULT_WINDOW_S = 30 * 24 * 3600.0
_LATEST = 1e11  # epoch seconds in the year 5138: beyond it a number is a mistake (ms, say), not a time
DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000  # rows a page (by=job has one per job: 200k is 30+ MB of JSON)
MAX_OFFSET = 2**31 - 1  # SQL integers on both databases


def _epoch(description: str) -> Any:
    return Query(ge=0, le=_LATEST, allow_inf_nan=False, description=description)


@router.get("/v1/usage", response_model=UsageOut, responses={403: {"model": ErrorOut}})
async def usage(
    request: Request,
    who: Auth,
    since: Annotated[float | None, _epoch("window start, epoch seconds (default: until - 30 days)")] = None,
    until: Annotated[float | None, _epoch("window end (excluded), epoch seconds (default: now)")] = None,
    by: Annotated[UsageBy, Query(description="group by team, pool, provider or job")] = "team",
    team: Annotated[str | None, Query(pattern=TEAM_NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows in this page")] = DEFAULT_LIMIT,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip (a next_offset)")] = 0,
) -> UsageOut:
    """GPU-hours and dollars of every launch overlapping [since, until) (only the overlap; running ones
    up to now), at the nodes, GPUs and list price recorded when each launched. ``dollars`` is spend on
    on-demand and spot pools; reserved pools' use is in ``reserved_gpu_hours`` and ``reserved_dollars``
    (worth at list price, already paid). Rows come a page at a time in a stable order (``truncated``:
    ask again with ``offset=next_offset`` and the same ``until``); ``total`` covers every row."""
    if team is not None and not who.admin and team != who.team:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="a team token sees only its own team's usage")
    store: Store = request.app.state.store
    until = store.clock() if until is None else until
    since = max(0.0, until - DEFAULT_WINDOW_S) if since is None else since
    if not since < until:
        raise HTTPException(422, detail=f"since ({since}) must be before until ({until})")
    scope = who.scope or team
    report = await db.call(store, store.usage, since, until, by=by, team=scope, limit=limit, offset=offset)
    return UsageOut.of(report)
