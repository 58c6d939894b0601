"""``overcast services list | show NAME | delete NAME``: the services a server (`overcast up`) runs, over
the API. ``overcast serve FILE --server URL`` creates or changes one."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

import typer

services_app = typer.Typer(help="Inference services run by an overcast server.", no_args_is_help=True)

TeamOption = Annotated[
    str | None, typer.Option(help="admin: the team whose service this is (when several teams use the name)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON")]


def _service_call(method: str, name: str, team: str | None) -> dict[str, Any]:
    from overcast.cli.jobs import _call, _client

    params = {} if team is None else {"team": team}
    return _call(_client().request, method, f"/v1/services/{quote(name, safe='')}", params=params)


def _ready(svc: dict[str, Any]) -> str:
    status = svc.get("status") or {}
    if "error" in status:
        return "error"
    if "target" not in status:
        return "-"  # the server's controller has not reported yet
    return f"{status.get('ready', 0)}/{status['target']}"


@services_app.command("list")
def list_services(as_json: JsonOption = False) -> None:
    """Your team's services (an admin sees every team's): version, state, ready replicas, URL."""
    from rich.console import Console

    from overcast.cli.jobs import _call, _client, _table

    body = _call(_client().request, "GET", "/v1/services")
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    if not body["services"]:
        typer.echo("no services")
        return
    table = _table("service", "team", "version", "state", "ready", "url", whole=("service", "url"))
    for svc in body["services"]:
        url = (svc.get("status") or {}).get("url", "-")
        table.add_row(svc["name"], svc["team"], str(svc["version"]), svc["state"], _ready(svc), url)
    Console().print(table)


@services_app.command()
def show(
    name: Annotated[str, typer.Argument(help="the service's name")],
    team: TeamOption = None,
    as_json: JsonOption = False,
) -> None:
    """One service: its state, its load balancer's URL and every replica (provider, pool, state)."""
    from rich.console import Console

    from overcast.cli.jobs import _table

    svc = _service_call("GET", name, team)
    if as_json:
        typer.echo(json.dumps(svc, indent=2))
        return
    status = svc.get("status") or {}
    typer.echo(
        f"service {svc['name']} (team {svc['team']}) version {svc['version']}, {svc['state']}; "
        f"ready {_ready(svc)}; url {status.get('url', '-')}"
    )
    if "error" in status:
        typer.secho(f"error: {status['error']}", fg="red")
    replicas = status.get("replicas") or []
    if replicas:
        table = _table(
            "replica", "version", "state", "provider", "pool", "url", whole=("replica", "pool", "url")
        )
        for r in replicas:
            state = r["state"] + (" (fallback)" if r.get("fallback") else "")
            table.add_row(str(r["id"]), str(r["version"]), state, r["provider"], r["pool"], r["url"] or "-")
        Console().print(table)


@services_app.command()
def delete(name: Annotated[str, typer.Argument(help="the service's name")], team: TeamOption = None) -> None:
    """Delete a service: the server stops every replica, then the service is gone."""
    svc = _service_call("DELETE", name, team)
    typer.echo(f"service {svc['name']} (team {svc['team']}): deleting; its replicas are being stopped")


def register(app: typer.Typer) -> None:
    app.add_typer(services_app, name="services")
