"""Test helpers shared by the cloud backends' tests (test_aws, test_azure, test_oci)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overcast.backends.base import BackendEvent
from overcast.catalog.fleet import parse_fleet
from overcast.control.health import Backoff
from overcast.control.loop import ControlLoop
from overcast.control.setup import backends_from_fleet
from overcast.spec.models import JobSpec
from overcast.store import JobState, Store
from tests.control.harness import run_until, state


def eventually(done: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_events(backend: Any, done: Callable[[list[BackendEvent]], bool], timeout: float = 20.0) -> list:
    """The backend's events, polled until ``done(events)`` or the timeout."""
    events: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done(events):
        events += backend.poll()
        time.sleep(0.1)
    return events


def fast_loop(home: Path, store: Store, backend: Any) -> ControlLoop:
    """A loop over ``backend`` with a 1 s lease: a loop that dies is replaced within a second (15 s by
    default)."""
    backoff = Backoff(60.0, 600.0)
    return ControlLoop(store, [backend], home=home, grace_seconds=2.0, backoff=backoff, lease_ttl=1.0)


def run_fleet_job(text: str, name: str, home: Path, job: JobSpec, started: Callable[[JobState], bool]) -> str:
    """Run ``job`` through a control loop over the one backend (``name``) of the fleet file ``text``;
    the id of the job, which succeeded. While it runs (``started``), the services' backends of the same
    account (under home/serve) do not see its machines, so neither side's reconcile stops the other's."""
    fleet = parse_fleet(text)
    backends = backends_from_fleet(fleet, home)
    assert [b.name for b in backends] == [name]
    store = Store(f"sqlite:///{home / 'db.sqlite'}")
    loop = ControlLoop(store, backends, home=home, grace_seconds=2.0)
    record = store.submit("default", job)
    run_until(loop, lambda: started(state(store, record.id).state))
    (services,) = backends_from_fleet(fleet, home / "serve")
    assert services.active() == [] and backends[0].active() == [(record.id, 1)]
    run_until(loop, lambda: state(store, record.id).state.terminal)
    assert state(store, record.id).state is JobState.SUCCEEDED
    return record.id
