"""The fleet file's ``scheduler:`` options in the live control loop (real store, local backend, real
processes): the burst limit keeps a big job off list price while a reservation fits it, and yield stops
a checkpointed gang on the reservation so the jobs that would pay list price start in its room;
``overcast up --fleet`` hands the options to its loop and says which differ from the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from overcast.catalog.fleet import Fleet, parse_fleet
from overcast.control.loop import ControlLoop
from overcast.control.setup import backends_from_fleet
from overcast.store import JobState, Store
from tests.control.harness import job, run_until, state

CLUSTERS = """
clusters:
  - {name: lab, local: {}, nodes: 2, gpus_per_node: 1, accelerator: H100, price_per_gpu_hour: 2.0}
  - {name: od, local: {}, nodes: %d, gpus_per_node: 1, accelerator: H100, price_per_gpu_hour: 3.0,
     purchase: on-demand}
"""


def _fleet(od_nodes: int, scheduler: str = "") -> Fleet:
    return parse_fleet(CLUSTERS % od_nodes + scheduler, "fleet.yaml")


def _loop(tmp_path: Path, store: Store, fleet: Fleet) -> ControlLoop:
    backends = backends_from_fleet(fleet, tmp_path)
    return ControlLoop(store, backends, home=tmp_path, grace_seconds=2.0, decide=fleet.scheduler.decide())


def _pool_of(store: Store, job_id: str) -> str:
    return state(store, job_id).backend.removeprefix("local:")


def _stop_all(loop: ControlLoop, store: Store, ids: list[str]) -> None:
    for job_id in ids:
        store.request_cancel(job_id)
    run_until(loop, lambda: all(state(store, j).state.terminal for j in ids))
    store.close()


@pytest.mark.parametrize("limited", [True, False], ids=["burst-limit", "defaults"])
def test_the_burst_limit_keeps_a_big_job_off_list_price_while_a_reservation_fits_it(
    tmp_path: Path, limited: bool
) -> None:
    fleet = _fleet(3, "scheduler: {burst_limit_node_hours: 8}\n" if limited else "")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = _loop(tmp_path, store, fleet)
    blocker = store.submit("default", job("blocker", "sleep 60", nodes=2))
    ids = [blocker.id]
    try:
        run_until(loop, lambda: state(store, blocker.id).state is JobState.RUNNING)
        assert _pool_of(store, blocker.id) == "lab"  # the reservation is full now
        big = store.submit("default", job("big", "sleep 60", nodes=2, expected_hours=10.0))  # 20 node-h
        small = store.submit("default", job("small", "sleep 60", expected_hours=1.0))
        ids += [big.id, small.id]
        run_until(loop, lambda: state(store, small.id).state is JobState.RUNNING)
        assert _pool_of(store, small.id) == "od"
        if not limited:  # decide()'s defaults: the big job starts at list price at once
            run_until(loop, lambda: state(store, big.id).state is JobState.RUNNING)
            assert _pool_of(store, big.id) == "od"
            return
        loop.tick()
        waiting = state(store, big.id)
        assert waiting.state is JobState.PENDING  # though od has 2 nodes free
        assert waiting.reason.startswith("burst limit: 20 node-hours > 8")
        store.request_cancel(blocker.id)  # the reservation comes free: the big job starts there
        run_until(loop, lambda: state(store, big.id).state is JobState.RUNNING)
        assert _pool_of(store, big.id) == "lab"
    finally:
        _stop_all(loop, store, ids)


def test_yield_stops_a_gang_on_the_reservation_and_the_jobs_it_yields_to_start_in_its_room(
    tmp_path: Path,
) -> None:
    rule = "min_nodes=2 min_hours_left=1 min_run_hours=0"  # a 2-node gang yields at once
    fleet = _fleet(2, f'scheduler: {{burst_limit_node_hours: 8, burst_yield: "{rule}"}}\n')
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = _loop(tmp_path, store, fleet)
    gang_spec = job("gang", "sleep 60", nodes=2, expected_hours=10.0, checkpoint_dir=str(tmp_path / "ckpt"))
    gang = store.submit("default", gang_spec)
    ids = [gang.id]
    try:
        run_until(loop, lambda: state(store, gang.id).state is JobState.RUNNING)
        assert _pool_of(store, gang.id) == "lab"
        movers = [store.submit("default", job(f"m{i}", "sleep 60", expected_hours=1.0)).id for i in (1, 2)]
        ids += movers
        loop.tick()  # they would start on od at list price: the gang yields, they wait for its nodes
        assert all(state(store, m).state is JobState.PENDING for m in movers)
        assert [state(store, m).reason for m in movers] == [
            f"waiting for local/lab: room yielded by {gang.id}"
        ] * 2
        run_until(loop, lambda: all(state(store, m).state is JobState.RUNNING for m in movers))
        assert [_pool_of(store, m) for m in movers] == ["lab", "lab"]
        assert any(
            e.kind == "preempting" and "yields 2 nodes of local/lab" in e.detail
            for e in store.events(job_id=gang.id)
        )
        loop.tick()
        back = state(store, gang.id)  # above the limit: it waits for the reservation, not on od
        assert back.state is JobState.PENDING and back.attempt == 1
        assert back.reason.startswith("burst limit: ")
        launched = store.launches(active_only=False)
        assert {r.backend for r in launched} == {"local:lab"}  # nothing ever ran at list price
    finally:
        _stop_all(loop, store, ids)


def test_up_hands_the_fleet_files_options_to_its_loop_and_names_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from overcast.cli.main import app

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(CLUSTERS % 2 + "scheduler: {burst_limit_node_hours: 8, queue_order: fifo}\n")
    made: list[ControlLoop] = []

    class Recorded(ControlLoop):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr("overcast.control.loop.ControlLoop", Recorded)
    monkeypatch.setenv("OVERCAST_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: None)  # return at once: the banner is out
    result = CliRunner().invoke(app, ["up", "--fleet", str(fleet), "--port", "0", "--interval", "0.05"])
    assert result.exit_code == 0, result.output
    assert "scheduler: burst_limit_node_hours=8.0, queue_order=fifo" in result.output.splitlines()
    (loop,) = made
    assert loop.decide.keywords == {"queue_order": "fifo", "burst_limit_node_hours": 8.0}  # type: ignore[attr-defined]


def test_a_bad_option_stops_up_with_the_file_line_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from overcast.cli.main import app

    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(CLUSTERS % 2 + "scheduler:\n  burst_limit_node_hour: 8\n")
    monkeypatch.setenv("OVERCAST_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    monkeypatch.setenv("OVERCAST_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["up", "--fleet", str(fleet), "--port", "0"])
    assert result.exit_code == 1
    assert (
        f"{fleet}:7: scheduler.burst_limit_node_hour: unknown field (did you mean 'burst_limit_node_hours'?)"
        in result.output
    )
