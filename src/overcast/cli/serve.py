"""``overcast serve FILE``: run one inference service on this machine's providers.

The load balancer listens on --port; the replica manager launches replicas through the fleet's local
backends, replaces lost ones and autoscales on the load balancer's request rate. Runs until Ctrl-C (or
--duration seconds), then stops every replica.

State lives under ``$OVERCAST_HOME/serve`` (the replicas' local providers and each service's ledger), apart
from the jobs' providers, whose reconciler stops every launch that is not a stored job. An ``overcast serve``
that was killed (SIGKILL, a crash) and is started again adopts the replicas its predecessor left running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve(
    file: Annotated[
        Path, typer.Argument(help="service spec (overcast or SkyPilot YAML with a service: section)")
    ],
    fleet: Annotated[Path | None, typer.Option(help="fleet file; default: two local providers")] = None,
    port: Annotated[int, typer.Option(help="load balancer port")] = 8780,
    duration: Annotated[float, typer.Option(help="stop after this many seconds (0: run until Ctrl-C)")] = 0.0,
    server: Annotated[
        str | None,
        typer.Option(help="submit to this overcast server (`overcast up`), which runs it, instead of here"),
    ] = None,
) -> None:
    """Run an inference service: load balancer + replica manager over the local providers."""
    if server is not None:
        _submit(file, server)
        return
    import asyncio
    import contextlib
    import signal
    import threading
    import time

    from aiohttp import web
    from rich.console import Console

    from overcast.backends.local import LocalBackend
    from overcast.catalog.fleet import FleetError, load_fleet
    from overcast.control.demo import DEMO_CLUSTERS
    from overcast.control.setup import local_backends
    from overcast.serve.controller import ServiceController
    from overcast.serve.lb import LoadBalancer
    from overcast.serve.ledger import ServiceBusy
    from overcast.spec.errors import SpecError
    from overcast.spec.loader import load_spec
    from overcast.spec.models import ServiceSpec
    from overcast.store.engine import overcast_home

    console = Console()
    try:
        spec = load_spec(file).spec
        fleet_doc = load_fleet(fleet) if fleet else None
    except (SpecError, FleetError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    except OSError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    if not isinstance(spec, ServiceSpec):
        console.print(f"[red]error:[/] {file} is a job, not a service (add a service: section)")
        raise typer.Exit(2)
    home = overcast_home() / "serve"
    if fleet_doc is None:
        backends = [LocalBackend(cluster, home=home) for cluster in DEMO_CLUSTERS]
    else:
        # local providers only, as `overcast server` runs services: a replica is reached at 127.0.0.1,
        # and a Kubernetes or cloud backend of the job loop's fleet entry here would fight the loop's
        backends = list(local_backends(fleet_doc, overcast_home(), sub="serve"))
    if not backends:
        console.print("[red]error:[/] the fleet has no local providers to run replicas on")
        raise typer.Exit(2)
    lb = LoadBalancer(spec.name)

    def log(msg: str) -> None:
        console.print(f"[dim]{time.strftime('%X')}[/] {msg}")

    try:
        ctl = ServiceController(spec, backends, lb, log=log, home=home)
    except (ServiceBusy, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    stop = threading.Event()

    def tick() -> None:
        try:
            ctl.tick()
        except Exception as exc:  # one bad tick (a backend error) must not end the service
            log(f"tick failed: {type(exc).__name__}: {exc}")

    def control() -> None:
        while not stop.wait(0.5):
            tick()

    async def main() -> None:
        runner = web.AppRunner(lb.app(), access_log=None)
        thread = threading.Thread(target=control, daemon=True)
        try:
            # The first tick (adopting a predecessor's replicas, probing them) runs before the load
            # balancer listens, so a restarted service answers from its first request.
            await asyncio.to_thread(tick)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            console.print(f"service [bold]{spec.name}[/] on http://127.0.0.1:{port} (metrics: /-/metrics)")
            thread.start()
            done = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):  # stop replicas on the way out, never orphan them
                asyncio.get_running_loop().add_signal_handler(sig, done.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=duration or None)
        finally:
            stop.set()
            if thread.is_alive():
                await asyncio.to_thread(thread.join, 10)
            ctl.shutdown()
            await runner.cleanup()

    asyncio.run(main())
    console.print("stopped")


def _submit(file: Path, server: str) -> None:
    """POST the file to the server's /v1/services: a new service, or a new version of the team's one."""
    from overcast.control.client import ApiClient, ClientError
    from overcast.spec.errors import not_utf8

    try:
        text = file.read_text(encoding="utf-8")
        svc = ApiClient(server).request("POST", "/v1/services", json={"yaml": text})
    except UnicodeDecodeError as exc:  # a ValueError, not an OSError: name the file, not a traceback
        typer.secho(f"error: {not_utf8(str(file), exc)}", fg="red", err=True)
        raise typer.Exit(2) from None
    except (OSError, ClientError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"service {svc['name']} (team {svc['team']}) version {svc['version']} on {server}; "
        f"see it with: overcast services show {svc['name']}"
    )


def register(app: typer.Typer) -> None:
    app.command()(serve)
