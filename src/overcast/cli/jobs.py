"""Jobs from the command line, over the API: launch, status, logs, cancel, events, pools, chaos."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

TERMINAL = {"succeeded", "failed", "cancelled"}


def _client() -> Any:
    from overcast.control.client import ApiClient

    return ApiClient()


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(code)


def _call(fn: Any, *args: Any, **kw: Any) -> Any:
    from overcast.control.client import ClientError

    try:
        return fn(*args, **kw)
    except ClientError as exc:
        _fail(str(exc))


def _when(at: float | None) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S") if at else "-"


def _table(*headers: str, whole: tuple[str, ...] = ("job", "pool")) -> Any:
    """A rich table whose cells fold rather than being cut short in a narrow terminal or a pipe; the
    ``whole`` columns (ids a user copies into the next command) never break."""
    from rich.table import Table

    table = Table()
    for header in headers:
        table.add_column(header, no_wrap=header in whole, overflow="fold")
    return table


def _print_event(event: dict[str, Any]) -> None:
    job = event.get("job_id") or "-"
    typer.echo(f"{_when(event['at'])}  {job:<13} {event['kind']:<18} {event['detail']}")


def launch(
    file: Annotated[Path, typer.Argument(help="job YAML file")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="follow the job's events until it ends")] = False,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env",
            "-e",
            metavar="NAME[=VALUE]",
            help="set an environment variable of the job, over the file's (NAME alone: your value of it)",
        ),
    ] = None,
) -> None:
    """Submit a job; with --wait, show its progress (placed, started, moved...) until it ends."""
    from overcast.spec.errors import SpecError, not_utf8
    from overcast.spec.loader import load_spec

    given = _env_options(env or [])
    try:
        text = file.read_text(encoding="utf-8")
        loaded = load_spec(file, given)  # checked here first, so errors name the user's file and line
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror or exc}", code=2)
    except UnicodeDecodeError as exc:
        _fail(str(not_utf8(str(file), exc)), code=2)
    except SpecError as exc:
        _fail(str(exc), code=2)  # bad input: exit 2, as `overcast optimize`
    for warning in loaded.warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)
    client = _client()
    job = _call(client.submit_yaml, text, given)
    nodes = job["spec"]["num_nodes"]
    typer.echo(f"submitted {job['id']} ({job['name']}, {nodes} node{'s' if nodes != 1 else ''})")
    if wait:
        final = _follow(client, job["id"])
        why = f" ({final['reason']})" if final.get("reason") else ""
        typer.echo(f"{job['id']}: {final['state']}{why}")
        raise typer.Exit(0 if final["state"] == "succeeded" else 1)


def _env_options(options: list[str]) -> dict[str, str]:
    """``--env NAME=VALUE`` as given; ``--env NAME`` takes this shell's value (SkyPilot's rule). Values
    are stored with the job's spec, which its team can read: not a place for secrets."""
    from overcast.spec.models import ENV_NAME

    env: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not ENV_NAME.fullmatch(name):
            _fail(f"--env {option}: {name!r} is not a valid environment variable name", code=2)
        if not sep:
            if name not in os.environ:
                _fail(f"--env {name}: not set in this shell (give a value: --env {name}=VALUE)", code=2)
            value = os.environ[name]
        env[name] = value
    return env


def _follow(client: Any, job_id: str, timeout_s: float = 7 * 24 * 3600) -> dict[str, Any]:
    after = 0
    deadline = time.monotonic() + timeout_s
    while True:
        page = _call(client.events, job_id, after)
        for event in page["events"]:
            _print_event(event)
        after = page["last_id"]
        job = _call(client.job, job_id)
        if job["state"] in TERMINAL and not page["events"]:
            return job
        if time.monotonic() > deadline:
            _fail(f"gave up waiting for {job_id} after {timeout_s:.0f}s")
        time.sleep(0.5)


def status(job_id: Annotated[str | None, typer.Argument(help="one job; default: all")] = None) -> None:
    """The jobs and their states (or one job in detail)."""
    from rich.console import Console

    client = _client()
    if job_id:
        job = _call(client.job, job_id)
        for key in ("id", "name", "team", "state", "attempt", "pool_id", "nodes", "restarts", "failures"):
            typer.echo(f"{key:<10} {job[key]}")
        typer.echo(f"{'reason':<10} {job.get('reason') or '-'}")
        return
    table = _table("job", "name", "state", "attempt", "pool", "restarts", "reason")
    for job in _call(client.jobs):
        table.add_row(
            job["id"], job["name"], job["state"], str(job["attempt"]), job["pool_id"] or "-",
            str(job["restarts"]), (job.get("reason") or "")[:60],
        )  # fmt: skip
    Console().print(table)


def logs(
    job_id: str,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep following, across restarts")] = False,
    rank: Annotated[int, typer.Option(help="which node")] = 0,
    attempt: Annotated[int | None, typer.Option(help="default: the latest")] = None,
) -> None:
    """Print a job's log (one node); -f follows it, also into the next attempt after a restart."""
    client = _client()
    job = _call(client.job, job_id)
    current = attempt or job["attempt"]
    if follow and not attempt and job["state"] in ("pending", "launching"):
        started_after = current - 1 if job["state"] == "launching" else current
        current = _wait_for_change(client, job_id, started_after)["attempt"]  # no log before it starts
    while True:
        _call(_copy_log, client, job_id, rank, current, follow)
        if not follow or attempt:
            return
        job = _wait_for_change(client, job_id, current)
        if job["state"] in TERMINAL and job["attempt"] == current:
            return
        current = job["attempt"]
        typer.secho(f"--- attempt {current} ---", fg="cyan")


def _copy_log(client: Any, job_id: str, rank: int, attempt: int, follow: bool) -> None:
    for chunk in client.log_stream(job_id, rank=rank, attempt=attempt, follow=follow):
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()


def _wait_for_change(client: Any, job_id: str, attempt: int) -> dict[str, Any]:
    """The job once it has ended or started a newer attempt with a log (polling, bounded by the job)."""
    while True:
        job = _call(client.job, job_id)
        if job["state"] in TERMINAL or (job["attempt"] > attempt and job["state"] == "running"):
            return job
        time.sleep(0.5)


def cancel(job_id: str) -> None:
    """Cancel a job: pending ones at once, running ones are stopped (SIGTERM, grace, kill)."""
    job = _call(_client().cancel, job_id)
    typer.echo(f"{job['id']}: {job['state']}" + (" (stopping)" if job["state"] not in TERMINAL else ""))


def events(
    job_id: Annotated[str | None, typer.Argument(help="one job; default: everything")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
) -> None:
    """The timeline: what happened, when and why."""
    client = _client()
    after = 0
    while True:
        page = _call(client.events, job_id, after)
        for event in page["events"]:
            _print_event(event)
        after = page["last_id"]
        if not follow:
            return
        time.sleep(0.5)


def pools() -> None:
    """Pools with their capacity, use, price and learned health (cooldowns after capacity errors)."""
    from rich.console import Console

    table = _table("pool", "provider", "accelerator", "used/cap", "$/node-h", "health", "until", "failures")
    for pool in _call(_client().pools):
        cap = "-" if pool.get("capacity") is None else str(pool["capacity"])
        table.add_row(
            pool["id"], pool["provider"], pool.get("accelerator") or "cpu", f"{pool.get('used', 0)}/{cap}",
            f"{pool['price']:.2f}", pool["health"], _when(pool.get("until")), str(pool.get("failures", 0)),
        )  # fmt: skip
    Console().print(table)


chaos_app = typer.Typer(help="Inject failures into local providers (admin).", no_args_is_help=True)


@chaos_app.command("down")
def chaos_down(provider: str) -> None:
    """The provider goes down: its jobs' processes are killed; launches there fail."""
    typer.echo(_call(_client().chaos, provider, "down", None, None))


@chaos_app.command("up")
def chaos_up(provider: str) -> None:
    """The provider comes back (also clears an injected capacity error)."""
    typer.echo(_call(_client().chaos, provider, "up", None, None))


@chaos_app.command("capacity")
def chaos_capacity(
    provider: str,
    duration: Annotated[float | None, typer.Option(help="seconds; default: until `chaos up`")] = None,
) -> None:
    """Launches on the provider fail with "out of capacity"."""
    typer.echo(_call(_client().chaos, provider, "capacity", None, duration))


@chaos_app.command("preempt")
def chaos_preempt(
    provider: str,
    job: Annotated[str | None, typer.Option("--job", help="default: a job running there")] = None,
) -> None:
    """Reclaim a node of a job there (SIGTERM, short notice, SIGKILL), like a spot preemption."""
    typer.echo(_call(_client().chaos, provider, "preempt", job, None))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the main app."""
    for command in (launch, status, logs, cancel, events, pools):
        app.command()(command)
    app.add_typer(chaos_app, name="chaos")
