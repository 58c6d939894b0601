"""The run report: JSON (deterministic, wall-clock figures in their own ``wall`` section), Markdown and
PNG plots (matplotlib Agg: cost over time, queue length, GPUs in use per provider, JCT CDF)."""

from __future__ import annotations

import json
from pathlib import Path

from overcast.twin.jct_bound import MEAN_JCT_RULE
from overcast.twin.metrics import AT_RUN_PACE_RULE
from overcast.twin.runner import PolicyRun
from overcast.twin.scenario import Scenario


def report_data(scenario: Scenario, seed: int, runs: list[PolicyRun]) -> dict:
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "seed": seed,
        "policies": {r.policy: r.metrics for r in runs},
        "series": {r.policy: r.series for r in runs},
        "wall": {r.policy: r.wall for r in runs},  # varies run to run; everything else is reproducible
    }


def deterministic_part(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "wall"}


def write_plots(runs: list[PolicyRun], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90, metadata={"Software": None})
        plt.close(fig)
        names.append(name)

    for key, label, fname in (
        ("cost", "cumulative cost ($)", "cost.png"),
        ("queued", "jobs queued", "queue.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for r in runs:
            ax.plot(r.series["hours"], r.series[key], label=r.policy, lw=1.2)
        ax.set_xlabel("simulated hours")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
        save(fig, fname)

    fig, axes = plt.subplots(len(runs), 1, figsize=(7, 2.2 * len(runs)), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        providers = list(r.series["gpus_by_provider"])
        ax.stackplot(
            r.series["hours"], *[r.series["gpus_by_provider"][p] for p in providers], labels=providers
        )
        ax.set_title(r.policy, fontsize=9)
        ax.set_ylabel("GPUs in use")
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("simulated hours")
    save(fig, "gpus_by_provider.png")

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in runs:
        jct = np.asarray(r.series["jct_hours"])
        if len(jct):
            ax.plot(jct, np.arange(1, len(jct) + 1) / len(jct), label=r.policy, lw=1.2)
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (hours, log)")
    ax.set_ylabel("share of jobs")
    ax.legend(fontsize=8)
    save(fig, "jct_cdf.png")
    return names


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _over(cost: float, bound: float | None) -> float | None:
    return cost / bound if bound else None


def markdown(data: dict, plots: list[str]) -> str:
    pol = data["policies"]
    lines = [f"# Twin report: {data['scenario']} (seed {data['seed']})", "", data["description"], ""]
    lines += [
        "| policy | cost $ | $/useful GPU-h | vs lower bound | vs bound at its pace | vs bound at its JCT "
        "| JCT mean h | JCT p50 h | JCT p99 h | queue mean h | goodput | lost GPU-h | reserved use "
        "| unfinished |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in pol.items():
        lines.append(
            f"| {name} | {m['cost_total']:,.0f} | {m['cost_per_useful_gpu_hour']:.2f} | "
            f"{m['cost_over_lower_bound']:.3f} | {_ratio(m.get('cost_over_bound_at_run_pace'))} | "
            f"{_ratio(_over(m['cost_total'], m.get('cost_lower_bound_at_run_mean_jct')))} | "
            f"{m['jct_hours']['mean']:.2f} | "
            f"{m['jct_hours']['p50']:.2f} | {m['jct_hours']['p99']:.2f} | "
            f"{m['queue_delay_hours']['mean']:.2f} | {m['goodput']:.3f} | "
            f"{m['gpu_hours']['lost_to_preemption']:,.0f} | {m['reserved_utilisation']:.3f} | "
            f"{m['unfinished']} |"
        )
    lines += ["", "Paid GPU-hours by provider:", ""]
    providers = sorted({p for m in pol.values() for p in m["paid_gpu_hours_by_provider"]})
    lines += ["| policy | " + " | ".join(providers) + " |", "|---|" + "---:|" * len(providers)]
    for name, m in pol.items():
        cells = " | ".join(f"{m['paid_gpu_hours_by_provider'].get(p, 0):,.0f}" for p in providers)
        lines.append(f"| {name} | {cells} |")
    first = next(iter(pol.values()))
    lines += ["", f"Lower bound: {first['lower_bound_rule']}.", ""]
    lines += [f"Bound at its pace: {AT_RUN_PACE_RULE}.", ""]
    lines += [f"Bound at its JCT: {MEAN_JCT_RULE}.", ""]
    lines += [
        "## Scheduler timing (wall clock; varies run to run)",
        "",
        "| policy | decide ms/cycle mean | p99 | cycles | events/s | decisions/s | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, w in data["wall"].items():
        d = w["decide_ms_per_cycle"]
        lines.append(
            f"| {name} | {d['mean']:.2f} | {d['p99']:.2f} | {pol[name]['cycles']} | "
            f"{w['events_per_second']:,.0f} | {w['decisions_per_second']:,.0f} | {w['wall_seconds']:.2f} |"
        )
    lines.append("")
    for name in plots:
        lines += [f"![{name}]({name})", ""]
    return "\n".join(lines)


def write_report(scenario: Scenario, seed: int, runs: list[PolicyRun], out: Path, plots: bool = True) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    data = report_data(scenario, seed, runs)
    (out / "report.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    names = write_plots(runs, out) if plots else []
    (out / "report.md").write_text(markdown(data, names))
    return data
