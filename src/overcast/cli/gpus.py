"""``overcast gpus``: what accelerators the catalog offers, who sells them and for how much.

Like ``sky show-gpus``. Catalog and rich are imported inside the command so other commands start fast.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from overcast.catalog.fleet import Fleet
    from overcast.catalog.offer import Offer
    from overcast.catalog.query import AcceleratorSummary, Request
    from overcast.placement.pool import Pool


def _money(value: float | None) -> str:
    return "-" if value is None else f"${value:,.3f}"


def _count(value: float) -> str:
    return f"{value:g}"


def _offer_json(o: Offer) -> dict[str, Any]:
    return {
        **dataclasses.asdict(o),
        "price_per_gpu": o.price_per_gpu,
        "spot_price_per_gpu": o.spot_price_per_gpu,
        "fractional": o.accelerator_count < 1,
    }


def _summary_json(s: AcceleratorSummary) -> dict[str, Any]:
    return {
        "accelerator": s.accelerator,
        "kind": s.kind,
        "memory_gib": s.memory_gib,
        "providers": list(s.providers),
        "counts": list(s.counts),
        "cheapest": _offer_json(s.cheapest) if s.cheapest else None,
        "cheapest_spot": _offer_json(s.cheapest_spot) if s.cheapest_spot else None,
    }


def _console() -> Any:
    from rich.console import Console

    console = Console()
    # piped or captured output: do not squeeze the table into 80 columns
    return console if console.is_terminal else Console(width=220)


def _print_summary(summaries: list[AcceleratorSummary]) -> None:
    from rich.table import Table

    table = Table(title="Accelerators in the catalog ($ per accelerator-hour)", title_justify="left")
    for column in (
        "ACCELERATOR",
        "MEM GiB",
        "COUNTS",
        "PROVIDERS",
        "CHEAPEST",
        "WHERE",
        "SPOT",
        "WHERE (SPOT)",
    ):
        table.add_column(column, justify="right" if column in ("MEM GiB", "CHEAPEST", "SPOT") else "left")
    for s in summaries:
        c, cs = s.cheapest, s.cheapest_spot
        table.add_row(
            s.accelerator,
            "-" if s.memory_gib is None else f"{s.memory_gib:g}",
            ",".join(_count(n) for n in s.counts),
            f"{len(s.providers)}: {', '.join(s.providers)}",
            _money(c.price_per_gpu if c else None),
            f"{c.provider} {c.region}" if c else "-",
            _money(cs.spot_price_per_gpu if cs else None),
            f"{cs.provider} {cs.region}" if cs else "-",
        )
    _console().print(table)


def _print_offers(title: str, offers: list[Offer]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in (
        "PROVIDER",
        "INSTANCE",
        "COUNT",
        "REGION",
        "ZONE",
        "$/GPU-H",
        "SPOT $/GPU-H",
        "$/H",
        "vCPU",
        "MEM GiB",
    ):
        numeric = column in ("COUNT", "$/GPU-H", "SPOT $/GPU-H", "$/H", "vCPU", "MEM GiB")
        table.add_column(column, justify="right" if numeric else "left")
    for o in offers:
        table.add_row(
            o.provider,
            o.instance_type + (" (fractional)" if o.accelerator_count < 1 else ""),
            _count(o.accelerator_count),
            o.region,
            o.zone or "-",
            _money(o.price_per_gpu),
            _money(o.spot_price_per_gpu),
            _money(o.price),
            "-" if o.vcpus is None else f"{o.vcpus:g}",
            "-" if o.memory_gib is None else f"{o.memory_gib:g}",
        )
    _console().print(table)


def gpus(
    name: Annotated[
        str | None, typer.Argument(metavar="NAME[:COUNT]", help="Accelerator, e.g. H100 or H100:8.")
    ] = None,
    provider: Annotated[
        list[str] | None, typer.Option("--provider", "-p", help="Only this provider (repeatable).")
    ] = None,
    region: Annotated[str | None, typer.Option("--region", "-r", help="Only this region.")] = None,
    spot: Annotated[bool, typer.Option("--spot", help="Only offers with a spot price; rank by it.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all", help="With NAME: every offer, not the cheapest per provider. Without: TPUs etc."
        ),
    ] = False,
    fleet_path: Annotated[
        Path | None,
        typer.Option("--fleet", help="Also show this fleet file's reservations and clusters (first)."),
    ] = None,
) -> None:
    """Show accelerators and their prices: a summary, or one accelerator's offers per provider."""
    from overcast.catalog import query
    from overcast.catalog.fleet import FleetError, load_fleet
    from overcast.catalog.load import CatalogMissingError, load_offers
    from overcast.spec.infra import provider_name

    try:
        offers = load_offers()
        providers = provider or []
        fleet = None if fleet_path is None else load_fleet(fleet_path)
        # a filter naming the fleet's own provider or region (a Slurm cluster, say) is no typo
        ours = [] if fleet is None else _fleet_pools(fleet, offers, None, [], None)
        query.check_filters(
            offers,
            [p for p in providers if provider_name(p) not in {provider_name(o.provider) for o in ours}],
            None if region in {o.region for o in ours} else region,
        )
        request = query.parse_request(name) if name else None
        own = [] if fleet is None else _fleet_pools(fleet, offers, request, providers, region)
    except (query.QueryError, CatalogMissingError, FleetError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if fleet_path is not None and not as_json:
        _print_fleet(own, fleet_path)

    def emit(rows: list[dict[str, Any]]) -> None:  # with --fleet, one document: {"fleet", "catalog"}
        data = rows if fleet_path is None else {"fleet": [_pool_json(p) for p in own], "catalog": rows}
        typer.echo(json.dumps(data, indent=1))

    matching = query.filter_offers(offers, request=request, providers=providers, region=region, spot=spot)
    if request is None:
        summaries = query.summarize(matching, include_all=show_all)
        if as_json:
            emit([_summary_json(s) for s in summaries])
        else:
            _print_summary(summaries)
        return

    wanted = f"{request.accelerator}" + (f":{_count(request.count)}" if request.count else "")
    if not matching and not own:
        counts = sorted({o.accelerator_count for o in offers if o.accelerator == request.accelerator})
        offered = ", ".join(_count(c) for c in counts) or "none"
        typer.echo(
            f"no offers for {wanted} with these filters (counts per instance offered: {offered})", err=True
        )
        raise typer.Exit(1)
    if show_all:
        rows = sorted(matching, key=lambda o: query.sort_key(o, spot))
    else:
        rows = query.cheapest_per_provider(matching, spot)
    if as_json:
        emit([_offer_json(o) for o in rows])
        return
    scope = "every offer" if show_all else "cheapest per provider"
    _print_offers(f"{wanted}: {scope}, by {'spot ' if spot else ''}$ per GPU-hour ({len(rows)} rows)", rows)


def _fleet_pools(
    fleet: Fleet, offers: list[Offer], request: Request | None, providers: list[str], region: str | None
) -> list[Pool]:
    """The fleet's active reservations and its clusters that match the same filters as the offers."""
    from overcast.catalog.pools import cluster_pool, reservation_pools
    from overcast.spec.infra import provider_name

    pools = reservation_pools(fleet, offers, time.time()) + [cluster_pool(c) for c in fleet.clusters]
    wanted = {provider_name(p) for p in providers}
    return [
        p for p in pools
        if p.accelerator  # CPU-only clusters sell no accelerator
        and (request is None or (p.accelerator.lower() == request.accelerator.lower()
                                 and (not request.count or p.gpus_per_node == request.count)))
        and (not wanted or provider_name(p.provider) in wanted)
        and (region is None or p.region == region)
    ]  # fmt: skip


def _pool_json(p: Pool) -> dict[str, Any]:
    return {
        "pool": p.id, "provider": p.provider, "region": p.region, "purchase": p.purchase.value,
        "accelerator": p.accelerator, "gpus_per_node": p.gpus_per_node, "nodes": p.capacity_nodes,
        "price_per_gpu": p.price_per_node_hour / p.gpus_per_node, "backend": p.backend,
        "until": p.labels.get("until"),
    }  # fmt: skip


def _print_fleet(pools: list[Pool], source: Path) -> None:
    from rich.table import Table

    table = Table(title=f"Your fleet ({source}): reservations and clusters", title_justify="left")
    for column in ("POOL", "PURCHASE", "ACCELERATOR", "GPUS/NODE", "NODES", "$/GPU-H", "UNTIL"):
        table.add_column(column, justify="right" if column in ("GPUS/NODE", "NODES", "$/GPU-H") else "left")
    for p in pools:
        table.add_row(
            p.id, p.purchase.value, p.accelerator, str(p.gpus_per_node),
            "-" if p.capacity_nodes is None else str(p.capacity_nodes),
            _money(p.price_per_node_hour / p.gpus_per_node), p.labels.get("until", "-"),
        )  # fmt: skip
    if not pools:
        table.add_row("(none matches)", "", "", "", "", "", "")
    _console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``overcast gpus`` to the main app."""
    app.command("gpus")(gpus)
