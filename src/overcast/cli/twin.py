"""``overcast twin run SCENARIO.yaml [MORE.yaml ...]``: the production scheduler and baselines on the twin.

With several scenarios (say the Azure lab, then the same lab with OCI), each gets its own report under
``--out`` and a ``comparison.md`` puts them side by side. Heavy imports happen inside the command so
other commands start fast.
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
    scenarios: Annotated[list[Path], typer.Argument(help="scenario YAML files (see examples/twin/)")],
    policy: Annotated[
        list[str] | None, typer.Option("--policy", "-p", help="policy to run (repeatable)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="seed (default: each scenario's)")] = None,
    out: Annotated[Path | None, typer.Option(help="report directory (default: twin-report/)")] = None,
    plots: Annotated[bool, typer.Option(help="write PNG plots")] = True,
) -> None:
    """Run each SCENARIO under each policy with the same seed; write report.md, report.json and plots."""
    from rich.console import Console

    from overcast.twin.compare import comparison_markdown
    from overcast.twin.policies import POLICY_NAMES
    from overcast.twin.scenario import ScenarioError, load_scenario

    console = Console(stderr=True)
    try:
        specs = [load_scenario(path) for path in scenarios]
    except ScenarioError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    bad = [n for n in policy or [] if n not in POLICY_NAMES]
    if bad:
        console.print(f"[red]error:[/red] unknown policy {bad[0]!r}; choose from {', '.join(POLICY_NAMES)}")
        raise typer.Exit(2)
    root = out or Path("twin-report")
    single = len(specs) == 1 and out is not None
    reports = []
    for spec in specs:
        target = root if single else root / spec.name
        reports.append(_run_one(spec, policy or spec.policies, seed, target, plots, console))
    if len(reports) > 1:
        (root / "comparison.md").write_text(comparison_markdown(reports))
        typer.echo(f"comparison: {root / 'comparison.md'}")


def _run_one(spec, names: list[str], seed: int | None, target: Path, plots: bool, console) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from overcast.twin.datadir import TraceMissing
    from overcast.twin.report import write_report
    from overcast.twin.runner import run_scenario
    from overcast.twin.scenario import ScenarioError

    used_seed = spec.seed if seed is None else seed
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as bar:
        tasks = {n: bar.add_task(f"{spec.name}: {n}", total=1.0) for n in names}
        try:
            runs = run_scenario(spec, names, used_seed, lambda n, f: bar.update(tasks[n], completed=f))
        except (ScenarioError, TraceMissing, ValueError, RuntimeError) as err:
            console.print(f"[red]error:[/red] {spec.name}: {err}")
            raise typer.Exit(2) from None
        for n in names:
            bar.update(tasks[n], completed=1.0)
    data = write_report(spec, used_seed, runs, target, plots=plots)
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
    return data


@twin_app.command("bound")
def bound(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file (see examples/twin/)")],
    jct: Annotated[list[float], typer.Option("--jct", help="mean JCT in hours (repeatable)")],
    seed: Annotated[int | None, typer.Option(help="seed (default: the scenario's)")] = None,
    slot_hours: Annotated[float, typer.Option(min=0.25, help="LP time slot; longer is faster, looser")] = 1.0,
) -> None:
    """The least any schedule could cost that finishes SCENARIO's workload at each mean JCT (an LP bound,
    no policy run): what completion time costs at best, or proof that a cost/JCT target is out of reach."""
    import time

    from rich.console import Console
    from rich.table import Table

    from overcast.twin.datadir import TraceMissing
    from overcast.twin.job_bound import scenario_jct_bounds
    from overcast.twin.runner import build_world
    from overcast.twin.scenario import ScenarioError, load_scenario

    console = Console(stderr=True)
    try:
        spec = load_scenario(scenario)
        used_seed = spec.seed if seed is None else seed
        world = build_world(spec, used_seed)
    except (ScenarioError, TraceMissing, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    table = Table(title=f"{spec.name} (seed {used_seed}, {len(world.jobs)} jobs, {slot_hours:g} h slots)")
    for col in ("mean JCT h", "cost at least $"):
        table.add_column(col, justify="right")
    started = time.perf_counter()
    found = scenario_jct_bounds(spec, world, used_seed, jct, slot_hours)  # one LP, re-solved per target
    for target, bound in zip(jct, found, strict=True):
        cost = "no schedule reaches it" if bound is None else f"{bound.cost:,.0f}"
        table.add_row(f"{target:g}", cost)
    table.caption = f"{time.perf_counter() - started:.1f} s"
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``overcast twin ...`` to the main app."""
    app.add_typer(twin_app, name="twin")
