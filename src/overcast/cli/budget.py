"""``overcast budget TEAM [--set DOLLARS | --clear]``: a team's monthly list-price budget, over the API."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer


def budget(
    team: Annotated[str, typer.Argument(help="the team")],
    set_to: Annotated[
        float | None, typer.Option("--set", help="monthly budget in list-price dollars (admin token)")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="remove the team's budget (admin token)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
) -> None:
    """A team's monthly list-price budget: show it (spend this month, what is left), set or clear it.

    Setting and clearing need an admin token. A team past its budget starts new jobs only on reserved
    capacity (or its own clusters); jobs already running are not stopped."""
    from overcast.cli.jobs import _call, _client

    if set_to is not None and clear:
        raise typer.BadParameter("--set and --clear: choose one")
    if set_to is not None and not (math.isfinite(set_to) and set_to >= 0):
        raise typer.BadParameter(f"--set {set_to}: a budget is a number of dollars >= 0")
    path = f"/v1/teams/{quote(team, safe='')}/budget"  # a name with / or ? stays one segment
    if set_to is None and not clear:
        body = _call(_client().request, "GET", path)
    else:
        body = _call(_client().request, "PUT", path, json={"monthly_dollars": set_to})
    typer.echo(json.dumps(body, indent=2) if as_json else describe(body))


def describe(body: dict[str, Any]) -> str:
    """One line: "team ml: $50,000.00 a month; spent $12.50 since 2026-11-01 (UTC); $49,987.50 left"."""
    since = datetime.fromtimestamp(body["month_start"], UTC).strftime("%Y-%m-%d")
    spent = f"spent ${body['spent']:,.2f} since {since} (UTC)"
    if body["monthly_dollars"] is None:
        return f"team {body['team']}: no budget; {spent}"
    left = body["remaining"]
    over = f"${-left:,.2f} over budget" if left < 0 else f"${left:,.2f} left"
    return f"team {body['team']}: ${body['monthly_dollars']:,.2f} a month; {spent}; {over}"


def register(app: typer.Typer) -> None:
    app.command()(budget)
