"""Backends built from a fleet: folders that must not be shared, logs found where a cluster writes them."""

from __future__ import annotations

from pathlib import Path

from overcast.catalog.fleet import parse_fleet
from overcast.control.controller import LoopController
from overcast.control.loop import ControlLoop
from overcast.control.setup import backends_from_fleet, local_backends
from overcast.store import Store
from tests.control.harness import job, run_until, state


def _fleet(home: Path):  # type: ignore[no-untyped-def]
    return parse_fleet(
        f"clusters:\n  - {{name: box, local: {{home: {home}}}, nodes: 2, gpus_per_node: 1, accelerator: H100,"
        " price_per_gpu_hour: 2.0, purchase: on-demand}\n"
    )


def test_services_get_a_folder_apart_from_jobs_even_on_a_cluster_with_its_own_home(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path / "box-home")
    jobs = backends_from_fleet(fleet, tmp_path)[0]
    services = local_backends(fleet, tmp_path, sub="serve")[0]
    assert jobs.dir != services.dir  # else the job loop's poll() takes (and deletes) replicas' launches
    assert services.dir.is_relative_to(tmp_path / "box-home" / "serve")


def test_logs_are_found_under_the_clusters_own_home(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    backends = backends_from_fleet(_fleet(tmp_path / "box-home"), tmp_path / "server-home")
    loop = ControlLoop(store, backends, home=tmp_path / "server-home", grace_seconds=2.0)
    record = store.submit("default", job("hello", "echo hello from the box"))
    run_until(loop, lambda: state(store, record.id).state.terminal)
    path = LoopController(loop).log_path(record.id, 1, 0)
    assert path is not None and path.read_text().strip() == "hello from the box"
