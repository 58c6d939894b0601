"""``overcast optimize FILE.yaml``: where would this job run, what would it cost, and why (a dry run).

Like ``sky launch --dryrun``. Everything heavy (spec models, catalog, numpy, rich) is imported inside the
command so the whole process, Python start-up included, stays around half a second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from overcast.placement.single import Candidate, PlacementResult
    from overcast.spec.models import JobSpec, ServiceSpec


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command("optimize")(optimize)


def optimize(
    file: Annotated[Path, typer.Argument(help="Job or service spec (overcast or SkyPilot YAML).")],
    fleet: Annotated[
        Path | None, typer.Option("--fleet", help="Fleet file: reservations, clusters, quotas.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    top: Annotated[int, typer.Option("--top", min=1, help="How many placements to list.")] = 10,
) -> None:
    """Rank where a job would run by expected cost, and explain each choice (dry run: launches nothing).

    Exit code 1 when nothing can take the job (the reason per provider is printed), 2 for a bad file.
    """
    from overcast.spec.errors import SpecError
    from overcast.spec.loader import load_spec

    try:
        loaded = load_spec(file)
    except SpecError as exc:
        _fail(exc.render_all())
    job = as_job(loaded.spec)
    now = time.time()
    result = place(job, fleet, now=now, top=top)
    if as_json:
        typer.echo(json.dumps(to_json(result, loaded.warnings), indent=2))
    else:
        _print(result, loaded.warnings)
    if not result.ranked:
        raise typer.Exit(1)


def as_job(spec: JobSpec | ServiceSpec) -> JobSpec:
    """A service is placed one replica at a time: rank the pools for one replica."""
    from overcast.spec.models import JobSpec

    if isinstance(spec, JobSpec):
        return spec
    return JobSpec(name=spec.name, resources=spec.resources, priority=spec.priority, team=spec.team)


def place(job: JobSpec, fleet_path: Path | None, *, now: float, top: int) -> PlacementResult:
    from overcast.catalog.load import load_offers
    from overcast.catalog.pools import build_pools
    from overcast.placement.index import PoolIndex
    from overcast.placement.single import place_job

    fleet = None
    quotas: list = []
    if fleet_path is not None:
        from overcast.catalog.fleet import FleetError, load_fleet
        from overcast.catalog.pools import quotas as fleet_quotas

        try:
            fleet = load_fleet(fleet_path)
        except FleetError as exc:
            _fail(str(exc))
        quotas = fleet_quotas(fleet)
    # Build pools only from the offers (and fleet capacity) with the accelerators the job asks for:
    # a tenth of the catalog or less. Every provider stays known, so the explanation can still say
    # "no pool offers B200" for the others.
    offers = load_offers()
    wanted = {a.name.lower() for a in job.resources.accelerators} or {""}
    # a reservation of another accelerator still needs its catalog instance to be built (and checked)
    reserved = {r.accelerator.lower() for r in fleet.reservations} if fleet else set()
    try:
        pools = build_pools([o for o in offers if o.accelerator.lower() in wanted | reserved], fleet, now=now)
    except ValueError as exc:  # a reservation the catalog cannot back
        _fail(f"{fleet_path}: {exc}")
    index = PoolIndex.build(
        [p for p in pools if p.accelerator.lower() in wanted],
        quotas=quotas,
        disabled_providers=fleet.disabled_providers if fleet else (),
        providers={o.provider for o in offers} | {p.provider for p in pools},
    )
    return place_job(job, index, now=now, top=top)


def to_json(result: PlacementResult, warnings: list[str]) -> dict[str, Any]:
    return {
        "job": result.job.name,
        "warnings": warnings,
        "placed": bool(result.ranked),
        "feasible_pools": result.feasible,
        "ranked": [_candidate_json(rank, c) for rank, c in enumerate(result.ranked, start=1)],
        "excluded": result.excluded,
    }


def _candidate_json(rank: int, c: Candidate) -> dict[str, Any]:
    p = c.pool
    return {
        "rank": rank,
        "pool": p.id,
        "provider": p.provider,
        "region": p.region,
        "zone": p.zone,
        "instance_type": p.instance_type,
        "accelerator": str(c.accelerator) if c.accelerator else None,
        "purchase": p.purchase.value,
        "nodes": c.nodes,
        "hourly_cost": round(c.hourly_cost, 4),
        "marginal_hourly_cost": round(c.marginal_hourly_cost, 4),
        "expected_cost": round(c.expected_cost, 4),
        "reason": c.reason,
    }


def _print(result: PlacementResult, warnings: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    out, err = Console(), Console(stderr=True)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    job = result.job
    if not result.ranked:
        err.print(f"[red bold]{result.why_not()}[/]", highlight=False)
        return
    from overcast.placement.explain import candidate_note, location

    hours = f"{job.expected_hours:g} h"
    title = f"{job.name}: {job.num_nodes} node(s) x {result.ranked[0].accelerator or 'CPU'}, {hours} expected"
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("where", overflow="fold")
    table.add_column("instance", overflow="fold")
    table.add_column("purchase")
    table.add_column("$/h", justify="right")
    table.add_column(f"$ in {hours}", justify="right")
    table.add_column("note", overflow="fold")
    for rank, c in enumerate(result.ranked, start=1):
        p = c.pool
        table.add_row(
            str(rank),
            location(p),
            p.instance_type + (f" ({c.accelerator})" if len(result._request.alternatives) > 1 else ""),
            p.purchase.value,
            f"{c.marginal_hourly_cost:,.2f}",
            f"{c.expected_cost:,.2f}",
            candidate_note(c, rank),
        )
    out.print(table)
    out.print(
        f"{result.feasible:,} feasible pool(s); best: [bold]{result.ranked[0].pool.id}[/]", highlight=False
    )
    # providers the job's own resources.providers leaves out are its choice, not a failure to list
    missing = sorted(
        p for p, why in result.excluded.items() if not why.startswith("not in resources.providers")
    )
    if missing:
        out.print(f"[dim]no candidate from: {', '.join(missing)} (--json for why)[/]", highlight=False)


def _fail(message: str) -> None:
    typer.echo(message, err=True)
    raise typer.Exit(2)
