"""Side-by-side comparison of several scenario reports (e.g. the Azure lab with and without OCI)."""

from __future__ import annotations


def comparison_markdown(reports: list[dict]) -> str:
    """One row per (scenario, policy), with the change against the first scenario for each policy."""
    lines = [
        "# Twin comparison",
        "",
        "| scenario | policy | cost $ | Δ cost vs first | JCT mean h | queue mean h | Δ queue vs first "
        "| $/useful GPU-h | unfinished |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    first = reports[0]["policies"]
    for data in reports:
        for name, m in data["policies"].items():
            base = first.get(name)
            d_cost = _delta(m["cost_total"], base["cost_total"]) if base else "-"
            d_queue = (
                _delta(m["queue_delay_hours"]["mean"], base["queue_delay_hours"]["mean"]) if base else "-"
            )
            lines.append(
                f"| {data['scenario']} | {name} | {m['cost_total']:,.0f} | {d_cost} | "
                f"{m['jct_hours']['mean']:.2f} | {m['queue_delay_hours']['mean']:.2f} | {d_queue} | "
                f"{m['cost_per_useful_gpu_hour']:.2f} | {m['unfinished']} |"
            )
    lines += ["", *(f"- {d['scenario']}: {d['description']}" for d in reports), ""]
    return "\n".join(lines)


def _delta(value: float, base: float) -> str:
    return f"{(value - base) / base:+.1%}" if base else "-"
