"""``overcast twin run SCENARIO.yaml``: the production scheduler and baselines on the digital twin.

Heavy imports (numpy, scipy, matplotlib, the twin) happen inside the command so other commands start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

twin_app = typer.Typer(
    help="Digital twin: the real scheduler on a virtual clock with real traces.", no_args_is_help=True
)


@twin_app.command("run")
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML (see examples/twin/)")],
    policy: Annotated[
        list[str] | None, typer.Option("--policy", "-p", help="policy to run (repeatable)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed (default: the scenario's)")] = None,
    out: Annotated[
        Path | None, typer.Option(help="report directory (default: twin-report/<scenario>)")
    ] = None,
    plots: Annotated[bool, typer.Option(help="write PNG plots")] = True,
) -> None:
    """Run SCENARIO under each policy with the same seed; write report.md, report.json and plots."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from overcast.twin.datadir import TraceMissing
    from overcast.twin.policies import POLICY_NAMES
    from overcast.twin.report import write_report
    from overcast.twin.runner import run_scenario
    from overcast.twin.scenario import ScenarioError, load_scenario

    console = Console(stderr=True)
    try:
        spec = load_scenario(scenario)
    except ScenarioError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    names = policy or spec.policies
    bad = [n for n in names if n not in POLICY_NAMES]
    if bad:
        console.print(f"[red]error:[/red] unknown policy {bad[0]!r}; choose from {', '.join(POLICY_NAMES)}")
        raise typer.Exit(2)
    used_seed = spec.seed if seed is None else seed
    target = out or Path("twin-report") / spec.name
    with Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        tasks = {n: bar.add_task(n, total=1.0) for n in names}

        def progress(name: str, fraction: float) -> None:
            bar.update(tasks[name], completed=fraction)

        try:
            runs = run_scenario(spec, names, used_seed, progress)
        except (ScenarioError, TraceMissing, ValueError, RuntimeError) as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2) from None
        for n in names:
            bar.update(tasks[n], completed=1.0)
    data = write_report(spec, used_seed, runs, target, plots=plots)
    from rich.table import Table

    table = Table(title=f"{spec.name} (seed {used_seed})")
    for col in ("policy", "cost $", "vs bound", "JCT mean h", "queue mean h", "goodput", "unfinished"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, m in data["policies"].items():
        table.add_row(
            name,
            f"{m['cost_total']:,.0f}",
            f"{m['cost_over_lower_bound']:.3f}",
            f"{m['jct_hours']['mean']:.2f}",
            f"{m['queue_delay_hours']['mean']:.2f}",
            f"{m['goodput']:.3f}",
            str(m["unfinished"]),
        )
    Console().print(table)
    typer.echo(f"report: {target / 'report.md'}")


def register(app: typer.Typer) -> None:
    """Add ``overcast twin ...`` to the main app."""
    app.add_typer(twin_app, name="twin")
