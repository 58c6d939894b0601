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


Gang = Callable[[], dict[str, dict[str, str]]]  # a gang's machines: id -> tags (labels)


def agent_tag(tags: dict[str, str], key: str) -> str | None:
    """A tag (label) the agents set, under either provider's prefix (``overcast:`` on EC2)."""
    return tags.get("overcast:" + key, tags.get("overcast-" + key))


def ec2_gang(vms: Any, job: str) -> Gang:
    return lambda: {
        i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])}
        for i in vms.instances(overcast_job=job)
    }


def oci_gang(vms: Any, job: str) -> Gang:
    return lambda: {i["id"]: dict(i["freeformTags"]) for i in vms.instances(job=job)}


def gce_gang(vms: Any, job: str) -> Gang:
    return lambda: {i["name"]: dict(i["labels"]) for i in vms.instances(job=job)}


def wait_exited(gang: Gang, console: Callable[[str], str], timeout: float) -> None:
    """Wait until both nodes of the gang have tagged their exit; their consoles if they did not."""
    done = eventually(
        lambda: len(gang()) == 2 and all(agent_tag(t, "exit") for t in gang().values()), timeout
    )
    assert done, {vm: (tags, console(vm)[-800:]) for vm, tags in gang().items()}


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
