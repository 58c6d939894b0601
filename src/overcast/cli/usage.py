"""``overcast usage``: GPU-hours and dollars per team, pool, provider or job, over the API."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from typing import Annotated, Any

import typer

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
_UNIT_S = {"m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_PAGE = 10_000  # the API's largest page
_YEAR_MONTH = re.compile(r"^(\d{4})(?:-(\d{2}))?$")  # 2026, 2026-11 (fromisoformat wants a day)
_EPOCHS = (1e9, 1e11)  # plausible epoch seconds: 2001 to the year 5138 (the API's bound)


def parse_when(text: str, now: float) -> float:
    """Epoch seconds from "7d" / "12h" / "30m" / "2w" (ago), a year, year-month or ISO date or time
    (local unless it names a zone), or epoch seconds (from 2001 on: a smaller number is a mistake,
    e.g. "2026" is the year, not 33 minutes after 1970)."""
    text = text.strip()
    ago = _AGO.match(text)
    if ago:
        return now - float(ago.group(1)) * _UNIT_S[ago.group(2)]
    try:
        number: float | None = float(text)
    except ValueError:
        number = None
    if number is not None and not math.isfinite(number):
        number = None
    if number is not None and _EPOCHS[0] <= number < _EPOCHS[1]:
        return number
    month = _YEAR_MONTH.match(text)
    try:
        if month:
            return datetime(int(month.group(1)), int(month.group(2) or 1), 1).timestamp()
        return datetime.fromisoformat(text).timestamp()
    except (ValueError, OverflowError):
        pass
    if number is not None and number >= _EPOCHS[1]:
        hint = f"{text!r} as epoch seconds is after the year 5000 (milliseconds?)"
    elif number is not None:
        hint = f"{text!r} is not a date, and as epoch seconds it would be before 2001"
    else:
        hint = f"{text!r} is not a time"
    raise typer.BadParameter(
        f"{hint}: use 7d, 12h, 30m, 2w (ago), a date such as 2026-11-01 (or 2026-11-01T09:00, 2026-11, "
        "2026), or epoch seconds such as 1793491200"
    )


def _money(x: float) -> str:
    return f"{x:,.2f}" if x == 0 or abs(x) >= 1 else f"{x:.4f}"  # a small job's cents are not 0.00


def _hours(x: float) -> str:
    return f"{x:,.1f}" if x == 0 or abs(x) >= 1 else f"{x:.4f}"  # nor its GPU-minutes 0.0


def usage(
    since: Annotated[str, typer.Option(help="window start: 7d, 12h (ago), a date, or epoch seconds")] = "30d",
    until: Annotated[str | None, typer.Option(help="window end (excluded; default now)")] = None,
    by: Annotated[str, typer.Option(help="group by team, pool, provider or job")] = "team",
    team: Annotated[str | None, typer.Option(help="only this team (admins; a team sees its own)")] = None,
    limit: Annotated[int, typer.Option(min=1, help="show the top N rows (the total is over all)")] = 100,
    every: Annotated[bool, typer.Option("--all", help="every row, however many (page by page)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
) -> None:
    """GPU-hours and dollars per team, pool, provider or job over a window.

    'spend $' is list price on on-demand and spot pools; reserved pools' use is shown apart (already paid
    for: its worth at list price)."""
    from overcast.cli.jobs import _table

    now = time.time()
    params: dict[str, Any] = {"since": parse_when(since, now), "by": by}
    if until is not None:
        params["until"] = parse_when(until, now)
    if team is not None:
        params["team"] = team
    body = _pages(params, None if every else limit)
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    from rich.console import Console

    window = f"{_stamp(body['since'])} .. {_stamp(body['until'])}"
    table = _table(body["by"], "GPU-h", "spend $", "reserved GPU-h", "reserved $ (paid)", "launches")
    for column in table.columns[1:]:
        column.justify = "right"
    table.title = f"usage {window}" + (f", team {body['team']}" if body["team"] else "")
    for row in body["rows"]:
        table.add_row(row["key"] or "(unknown)", *_cells(row))
    total = body["total"]
    table.add_section()
    table.add_row("total", *_cells(total))
    Console().print(table)
    if body["truncated"]:
        typer.echo(f"the top {len(body['rows'])} rows: more follow (--limit N or --all to see them)")
    if total["unpriced_launches"]:
        typer.echo(
            f"{total['unpriced_launches']} launch(es) were recorded before launches carried their price: "
            f"counted in node-hours ({_hours(total['node_hours'])} in all) but not in GPU-hours or dollars"
        )


def _pages(params: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """The top ``limit`` rows (None: all), page by page, at the first page's window (its until pins
    running launches, so the order holds from page to page): one body, its rows joined."""
    from overcast.cli.jobs import _call, _client

    client, offset = _client(), 0
    rows: list[dict[str, Any]] = []
    while True:
        page = _PAGE if limit is None else min(_PAGE, limit - len(rows))
        body: dict[str, Any] = _call(
            client.request, "GET", "/v1/usage", params=params | {"limit": page, "offset": offset}
        )
        rows += body["rows"]
        if not body["truncated"] or (limit is not None and len(rows) >= limit):
            return body | {"rows": rows, "offset": 0}
        params = params | {"since": body["since"], "until": body["until"]}
        offset = body["next_offset"]


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        _hours(row["gpu_hours"]), _money(row["dollars"]), _hours(row["reserved_gpu_hours"]),
        _money(row["reserved_dollars"]), str(row["launches"]),
    ]  # fmt: skip


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M")


def register(app: typer.Typer) -> None:
    app.command()(usage)
