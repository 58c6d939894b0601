"""``overcast up`` (API server + control loop in one process) and ``overcast demo`` (the main demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def _admin_token(store: Any, home: Path) -> str:
    """The admin token in $OVERCAST_HOME/token (mode 600), created at the first ``up``."""
    path = home / "token"
    if path.exists():
        token = path.read_text().strip()
        found = store.team_for_token(token)
        if found is not None and found[1]:
            return token
    token = store.create_team("admin", admin=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(token + "\n")
    return token


def up(
    fleet: Annotated[Path | None, typer.Option(help="fleet file; default: two local providers")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8765,
    grace: Annotated[float, typer.Option(help="seconds between SIGTERM and SIGKILL when stopping")] = 10.0,
    interval: Annotated[float, typer.Option(help="seconds between control-loop ticks")] = 0.5,
) -> None:
    """Run the API server and the control loop (in a thread) in this process."""
    import threading

    import uvicorn

    from overcast.api.app import create_app
    from overcast.backends.local_share import split_for_services
    from overcast.catalog.fleet import FleetError, load_fleet
    from overcast.control.controller import LoopController
    from overcast.control.demo import DEMO_CLUSTERS
    from overcast.control.loop import ControlLoop
    from overcast.control.setup import backends_from_fleet
    from overcast.scheduler.options import SchedulerOptions
    from overcast.serve.supervisor import ServiceSupervisor
    from overcast.serve.upgrade import stop_old_replicas
    from overcast.store import Store, StoreConfigError, StoreUnavailable, overcast_home
    from overcast.store.engine import safe_url

    home = overcast_home()
    home.mkdir(parents=True, exist_ok=True)
    try:
        store = Store()
    except (StoreConfigError, StoreUnavailable) as exc:  # a bad URL, or a database that does not answer
        _fail(str(exc))
    options = SchedulerOptions()  # decide()'s defaults, unless the fleet file's ``scheduler:`` says otherwise
    if fleet is not None:
        try:
            fleet_doc = load_fleet(fleet)
            options = fleet_doc.scheduler
            backends = backends_from_fleet(fleet_doc, home)
        except (FleetError, OSError) as exc:
            _fail(str(exc))
        if not backends:
            _fail(
                f"{fleet}: no clusters to run jobs on "
                "(add one under 'clusters:' with 'local: {}', 'slurm: {conf: ...}' or "
                "'kubernetes: {api: ...}', "
                "or an 'aws:', 'azure:', 'oci:' or 'gcp:' account)"
            )
    else:
        from overcast.backends.local import LocalBackend

        backends = [LocalBackend(cluster, home=home) for cluster in DEMO_CLUSTERS]
    # services' replicas run on the local providers' nodes and Slurm clusters beside the jobs: each side
    # counts the other's launches as used (and the store's records: control/snapshot.py) and never reports
    # them (backends/local_share.py)
    backends, service_backends = split_for_services(backends)
    sock = _listen(host, port)  # before any loop starts: a second `up` on the same port stops here
    _admin_token(store, home)
    stop_old_replicas(service_backends, {s.id for s in store.services()}, typer.echo)
    loop = ControlLoop(store, backends, home=home, grace_seconds=grace, decide=options.decide())
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop, interval), name="control-loop", daemon=True)
    thread.start()
    services = ServiceSupervisor(
        store, service_backends, home / "serve", host=host, interval=interval, log=typer.echo
    )
    services_thread = threading.Thread(target=services.run, args=(stop,), name="services", daemon=True)
    services_thread.start()
    names = ", ".join(b.name for b in backends)
    # the password stays out of the terminal and of whatever collects the server's output
    typer.echo(f"overcast: http://{host}:{port}  store {safe_url(store.url)}  backends {names}")
    if options.describe():  # once, at start: what the scheduler does differently from its defaults
        typer.echo(f"scheduler: {options.describe()}")
    typer.echo(f"admin token in {home / 'token'}")
    try:
        app = create_app(store, LoopController(loop))
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    finally:
        stop.set()
        thread.join(timeout=30)
        services_thread.join(timeout=60)  # services' replicas keep running: the next `up` adopts them


def _listen(host: str, port: int) -> Any:
    """The API's socket, bound now: a port in use is a clear error before anything starts."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another `overcast up`? try --port)")
    return sock


def demo(
    keep: Annotated[bool, typer.Option(help="keep the demo's OVERCAST_HOME (logs, database)")] = False,
) -> None:
    """The main demo: a 2-node training job survives the loss of its provider (about 10 s)."""
    import shutil
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from overcast.control.demo import run_demo

    console = Console(highlight=False)
    home = Path(tempfile.mkdtemp(prefix="overcast-demo-"))
    start_at: list[float] = []

    def on_event(event: Any) -> None:
        start_at.append(start_at[0] if start_at else event.at)
        job = event.job_id or "-"
        console.print(
            f"  [dim]{event.at - start_at[0]:6.2f}s[/] {job:<13} [bold]{event.kind:<15}[/] {event.detail}"
        )

    console.print(f"[bold]overcast demo[/]: OVERCAST_HOME={home} (SQLite, local backend, real processes)")
    try:
        result = run_demo(home, say=lambda text: console.print(f"[cyan]>[/] {text}"), on_event=on_event)
    except (TimeoutError, FileNotFoundError, OSError) as exc:
        _fail(f"demo failed: {exc} (logs under {home})")
    table = Table("", "result")
    table.add_row("uninterrupted reference", result.reference)
    for rank, line in enumerate(result.results):
        table.add_row(f"managed job, node {rank}", line)
    console.print(table)
    moved = " -> ".join(result.pools)
    verdict = "SAME result" if result.same and result.job_state == "succeeded" else "DIFFERENT result"
    if result.resumed:
        console.print(f"last attempt on {result.pools[-1]}: {result.resumed}")
    seconds = f"{result.seconds:.1f}s"
    console.print(f"job {result.job_state} on {moved}: {verdict} as the uninterrupted run ({seconds})")
    bill = Table(
        "pool", "launches", "GPU-hours", "cost $", title="the bill, per pool (what overcast usage sums)"
    )
    for row in result.bill:
        bill.add_row(row.key or "?", str(row.launches), f"{row.gpu_hours:.4f}", f"{row.dollars:.5f}")
    console.print(bill)
    if keep or verdict != "SAME result":  # a failed demo keeps its logs and database for a look
        console.print(f"kept {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)
    if verdict != "SAME result":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    app.command()(up)
    app.command()(demo)
