"""The twin's jobs would get no estimate factor: its users state a job's runtime rounded to a power of
two (ratios 0.7-1.4), within the 2x that is trusted as written, so correcting estimates cannot change
a twin report even if the twin fed its finished jobs to ``scheduler.estimates``."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

from overcast.scheduler.estimates import TRUSTED, estimate_factor
from overcast.twin.engine import Engine
from overcast.twin.runner import build_world
from tests.twin.helpers import small_scenario


def test_the_small_scenarios_teams_get_no_factor() -> None:
    scenario = small_scenario()
    world = build_world(scenario, scenario.seed)
    # the engine's own estimate for each job (spec_for only reads these attributes)
    engine = SimpleNamespace(_specs={}, gpus_per_node=scenario.workload.gpus_per_node, accelerator="H100")
    runs: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for job in world.jobs:
        spec = Engine.spec_for(engine, job)  # type: ignore[arg-type]
        hours = job.work / 3600.0
        runs[job.team].append((hours / spec.expected_hours, hours))
    assert set(runs) == {"vision", "speech", "nlp"}
    for team, values in runs.items():
        assert max(ratio for ratio, _ in values) <= TRUSTED, team
        assert estimate_factor(values) == 1.0, team  # the whole run, as if it all fell in one window
