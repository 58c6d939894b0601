"""/v1/teams/{team}/budget: a team's monthly list-price budget (set by an admin), spend and money left.

An admin sets or clears any team's budget and reads any team's; a team token reads only its own. The
scheduler keeps new list-price launches of the team within what is left (``scheduler/budget.py``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status

from overcast.api import db
from overcast.api.auth import Auth, require_admin
from overcast.api.errors import ERRORS
from overcast.api.schemas import BudgetIn, BudgetOut, ErrorOut
from overcast.store import TEAM_NAME_PATTERN, Store

router = APIRouter(tags=["budgets"], responses=ERRORS)
Team = Annotated[str, Path(pattern=TEAM_NAME_PATTERN, description="the team's name")]
RESPONSES: dict[int | str, dict] = {
    403: {"model": ErrorOut, "description": "not an admin token (or, to read, not the team's own)"},
    404: {"model": ErrorOut, "description": "no such team"},
}


@router.get("/v1/teams/{team}/budget", response_model=BudgetOut, responses=RESPONSES)
async def get_budget(request: Request, who: Auth, team: Team) -> BudgetOut:
    """The team's monthly budget, its list-price spend this UTC calendar month (running launches up to
    now) and what is left."""
    if not who.admin and team != who.team:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="a team token reads only its own team's budget")
    return await _status(request.app.state.store, team)


@router.put("/v1/teams/{team}/budget", response_model=BudgetOut, responses=RESPONSES)
async def put_budget(request: Request, who: Auth, team: Team, body: BudgetIn) -> BudgetOut:
    """Set the team's monthly budget in list-price dollars, or clear it with null (admin only). Jobs
    already running are never stopped when a budget runs out; new list-price launches wait."""
    require_admin(who)
    store: Store = request.app.state.store
    if not await db.call(store, store.set_budget, team, body.monthly_dollars):
        raise _unknown(team)
    return await _status(store, team)


async def _status(store: Store, team: str) -> BudgetOut:
    found = await db.call(store, store.budget_status, team)
    if found is None:
        raise _unknown(team)
    return BudgetOut.of(found)


def _unknown(team: str) -> HTTPException:
    return HTTPException(
        status.HTTP_404_NOT_FOUND,
        detail=f"no team {team!r} (an admin creates it: python -m overcast.api create-team {team})",
    )
