"""The fleet file's ``scheduler:`` section: decide()'s options, read through the one model the twin's
``decide_options`` use too; a mistake names the file, line and field."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from overcast.catalog.fleet import FleetError, load_fleet
from overcast.scheduler.decide import decide
from overcast.scheduler.options import SchedulerOptions, parse_options
from overcast.scheduler.yield_room import YieldRule
from overcast.twin.policies import OvercastPolicy
from tests.catalog.builders import write_fleet

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _error(tmp_path: Path, text: str) -> str:
    path = write_fleet(tmp_path, text)
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    return str(info.value).replace(str(path), "F")


def test_the_model_has_decides_options_and_defaults() -> None:
    """Drift guard: a new decide() option, or a changed default, must reach the fleet file and the twin."""
    params = inspect.signature(decide).parameters
    wanted = {name: p.default for name, p in params.items() if name != "snapshot"}
    assert {name: f.default for name, f in SchedulerOptions.model_fields.items()} == wanted
    assert SchedulerOptions().changed() == {} and SchedulerOptions().decide() is decide


def test_a_fleet_without_the_section_keeps_the_defaults(tmp_path: Path) -> None:
    assert load_fleet(write_fleet(tmp_path, "disabled_providers: [vast]\n")).scheduler == SchedulerOptions()


def test_options_are_read_and_only_the_changed_ones_reach_decide(tmp_path: Path) -> None:
    text = """\
scheduler:
  burst_limit_node_hours: 64
  burst_yield: {min_nodes: 4, min_hours_left: 40}
  fair_share: true
  queue_order: fifo
  consolidate: true
"""
    options = load_fleet(write_fleet(tmp_path, text)).scheduler
    rule = YieldRule(min_nodes=4, min_hours_left=40.0)
    assert options.changed() == {
        "fair_share": True, "queue_order": "fifo", "burst_limit_node_hours": 64.0, "burst_yield": rule,
    }  # fmt: skip
    assert options.decide().keywords == options.changed()  # type: ignore[attr-defined]
    assert options.describe() == (
        "burst_limit_node_hours=64.0, burst_yield={'min_nodes': 4, 'min_hours_left': 40.0, "
        "'min_run_hours': 0.5, 'fill': 0.5, 'max_per_cycle': 1}, fair_share=True, queue_order=fifo"
    )
    # the forms a twin scenario writes (flat) give the same rule
    assert parse_options({"burst_yield": "min_nodes=4 min_hours_left=40"}).burst_yield == rule
    assert parse_options({"burst_yield": True}).burst_yield == YieldRule()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "scheduler:\n  burst_limit_node_hour: 8\n",
            "F:2: scheduler.burst_limit_node_hour: unknown field (did you mean 'burst_limit_node_hours'?)",
        ),
        (
            "scheduler:\n  queue_order: lifo\n",
            "F:2: scheduler.queue_order: Input should be 'slowdown' or 'fifo'",
        ),
        (
            "scheduler:\n  fair_share: yes please\n",
            "F:2: scheduler.fair_share: Input should be a valid boolean",
        ),
        (
            "scheduler:\n  burst_limit_node_hours: -1\n",
            "F:2: scheduler.burst_limit_node_hours: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            "scheduler:\n  time_budget_s: .inf\n",
            "F:2: scheduler.time_budget_s: Input should be a finite number",
        ),
        (
            "scheduler:\n  batch_threshold: 2.5\n",
            "F:2: scheduler.batch_threshold: Input should be a valid integer",
        ),
        (  # before: true was taken for 1 (and 1.0)
            "scheduler:\n  batch_threshold: true\n",
            "F:2: scheduler.batch_threshold: Input should be a valid integer",
        ),
        (
            "scheduler:\n  time_budget_s: true\n",
            "F:2: scheduler.time_budget_s: Input should be a valid number",
        ),
        (
            "scheduler:\n  burst_limit_node_hours: true\n",
            "F:2: scheduler.burst_limit_node_hours: Input should be a valid number",
        ),
        (
            "scheduler:\n  burst_limit_node_hours: 8\n  burst_yield: {min_nodes: eight}\n",
            "F:3: scheduler.burst_yield: min_nodes must be a number, got 'eight'",
        ),
        (
            "scheduler:\n  burst_limit_node_hours: 8\n  burst_yield: min_nodes=8.7\n",
            "F:3: scheduler.burst_yield: min_nodes must be a whole number, got '8.7'",
        ),
        (  # alone, yield would silently do nothing
            "scheduler:\n  burst_yield: true\n",
            "F:2: scheduler.burst_yield: acts only with burst_limit_node_hours: set that too",
        ),
        (
            "scheduler: fast\n",
            "F:1: scheduler: Input should be a valid dictionary or instance of SchedulerOptions",
        ),
    ],
)
def test_a_bad_option_names_the_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    assert _error(tmp_path, text).startswith(expected)


def test_the_twin_reads_decide_options_through_the_same_model() -> None:
    with pytest.raises(
        ValueError, match=r"^decide_options: no option 'fair_shares' \(did you mean 'fair_share'\?\)$"
    ):
        OvercastPolicy({"fair_shares": True})
    with pytest.raises(
        ValueError, match=r"^queue_order: Input should be 'slowdown' or 'fifo' \(got 'lifo'\)$"
    ):
        OvercastPolicy({"queue_order": "lifo"})
    policy = OvercastPolicy({"burst_limit_node_hours": 8, "burst_yield": "min_nodes=4"})
    assert policy.options == parse_options({"burst_limit_node_hours": 8.0, "burst_yield": {"min_nodes": 4}})


def test_the_example_fleet_file_loads() -> None:
    assert load_fleet(EXAMPLES / "fleet.yaml").scheduler == SchedulerOptions()
