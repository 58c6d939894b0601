"""Usage through the real control loop and local backends: every attempt billed at its launch's terms,
ends at the backend's event time rather than when the loop got round to it."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from overcast.backends.base import BackendEvent, EventKind
from overcast.backends.local import LocalBackend, LocalCluster
from overcast.control.loop import ControlLoop
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobState, Store
from overcast.store.tables import launches
from tests.control.harness import job, make_loop, run_until, state

ENDS = (EventKind.SUCCEEDED, EventKind.FAILED)


def _launch_rows(store: Store, job_id: str) -> list:
    query = select(launches).where(launches.c.job_id == job_id).order_by(launches.c.attempt)
    with store.engine.connect() as conn:
        return [row._mapping for row in conn.execute(query)]


def test_a_preempted_jobs_two_attempts_are_both_billed_at_their_launch_terms(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    cheap = LocalCluster("azure-local", nodes=2, gpus_per_node=2, price_per_node_hour=2.0)
    dear = LocalCluster("oci-local", nodes=2, gpus_per_node=2, price_per_node_hour=3.0)
    loop = make_loop(tmp_path, store, [cheap, dear])
    two_gpus = Resources(accelerators=(AcceleratorRequest(name="H100", count=2),))
    record = store.submit("ml", JobSpec(name="train", run="sleep 1.5", num_nodes=2, resources=two_gpus))
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING)
    azure = loop.backends["local:azure-local"]
    azure.cluster = dataclasses.replace(cheap, price_per_node_hour=50.0)  # the catalog changes mid-run
    time.sleep(0.5)
    azure.set_down(True)
    run_until(loop, lambda: state(store, record.id).state.terminal)
    assert (state(store, record.id).state, state(store, record.id).attempt) == (JobState.SUCCEEDED, 2)
    first, second = _launch_rows(store, record.id)
    assert (first["outcome"], second["outcome"]) == ("provider-down", "succeeded")
    fields = ("team", "provider", "purchase", "nodes", "gpus_per_node", "price_per_node_hour")
    assert [tuple(r[f] for f in fields) for r in (first, second)] == [
        ("ml", "azure-local", "on-demand", 2, 2, 2.0),
        ("ml", "oci-local", "on-demand", 2, 2, 3.0),
    ]
    seconds = [r["ended_at"] - r["launched_at"] for r in (first, second)]
    assert seconds[0] >= 0.5 and seconds[1] >= 1.5  # the first attempt ran until the provider went down
    [row] = store.usage(first["launched_at"], time.time() + 1, by="job").rows
    assert (row.key, row.launches) == (record.id, 2)
    assert row.gpu_hours * 3600 == pytest.approx((seconds[0] + seconds[1]) * 2 * 2)
    assert row.dollars * 3600 == pytest.approx(seconds[0] * 2 * 2.0 + seconds[1] * 2 * 3.0)  # not at $50
    by_provider = {r.key: r.gpu_hours for r in store.usage(0, time.time() + 1, by="provider").rows}
    assert set(by_provider) == {"azure-local", "oci-local"}
    assert store.usage(0, time.time() + 1, team="other").rows == []
    store.close()


class ExitTimeBackend(LocalBackend):
    """A local backend that reports when its nodes ended (their exit files), not when it was polled,
    as Slurm's accounting or a cloud agent can."""

    def poll(self) -> list[BackendEvent]:
        return [self._at_exit(event) if event.kind in ENDS else event for event in super().poll()]

    def _at_exit(self, event: BackendEvent) -> BackendEvent:
        exits = (self.launches_dir / f"{event.job_id}--{event.attempt}").glob("node-*.exit")
        return dataclasses.replace(event, at=max(path.stat().st_mtime for path in exits))


def test_end_time_is_when_the_nodes_ended_not_when_the_loop_came_back(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    backend = ExitTimeBackend(LocalCluster("a", nodes=1), home=tmp_path)
    loop = ControlLoop(store, [backend], home=tmp_path, grace_seconds=1.0)
    record = store.submit("ml", job("t", "sleep 0.5"))
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING)
    time.sleep(3.0)  # the loop is down; the job ends after ~0.5 s
    run_until(loop, lambda: state(store, record.id).state.terminal)
    really_ended = next(tmp_path.rglob("node-0.exit")).stat().st_mtime
    done = state(store, record.id)
    [launch] = _launch_rows(store, record.id)
    assert done.state is JobState.SUCCEEDED
    assert done.ended_at == launch["ended_at"] == pytest.approx(really_ended, abs=0.01)
    assert launch["ended_at"] - launch["launched_at"] < 2.0  # billed ~0.5 s, not the 3 s the loop was away
    assert [e.at for e in store.events(job_id=record.id) if e.kind == "succeeded"] == [done.ended_at]
    store.close()
