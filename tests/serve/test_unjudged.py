"""Adoption when a backend's active() fails: its recorded replicas are "unjudged". They are asked after
again on every tick, are probed and count toward the target meanwhile like adopted replicas (no second set
of GPUs; replaced if no probe passes by the adopted deadline), and a shutdown stops them, blind by their
records if the backend still cannot say what it runs. tests/serve/test_outage.py: routed, retired later."""

from __future__ import annotations

import json
import time
from pathlib import Path

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer
from overcast.spec.models import Autoscaling, ReadinessProbe, ServiceSpec


class FlakyActive:
    """The backend, but its active() fails ``failures`` times (an API hiccup; -1: always)."""

    def __init__(self, real: LocalBackend, failures: int = 1) -> None:
        self.real, self.name, self.failures = real, real.name, failures

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def active(self) -> list[tuple[str, int]]:
        if self.failures:
            self.failures -= 1
            raise OSError("state folder briefly unreadable")
        return self.real.active()


def spec(replicas: int = 2, **probe) -> ServiceSpec:
    return ServiceSpec(
        name="svc", run="exec sleep 600", replicas=Autoscaling(min_replicas=replicas),
        readiness_probe=ReadinessProbe(initial_delay_seconds=60, **probe),
    )  # fmt: skip


def running_set(tmp_path: Path, first_spec: ServiceSpec | None = None) -> LocalBackend:
    """Two replicas left running by a controller that went away (a server restart)."""
    backend = LocalBackend(LocalCluster("a", nodes=8), home=tmp_path / "be")
    first = ServiceController(first_spec or spec(), [backend], LoadBalancer("svc"), home=tmp_path)
    first.tick()
    assert len(backend.active()) == 2
    first.detach()
    return backend


def stop_all(backend: LocalBackend) -> list[tuple[str, int]]:
    left = backend.active()
    for job_id, attempt in left:
        backend.stop(job_id, attempt, 0.0)
    return left


def test_unjudged_replicas_count_toward_the_target_and_are_adopted_on_a_later_tick(tmp_path: Path):
    backend = running_set(tmp_path)
    logs: list[str] = []
    ctl = ServiceController(
        spec(), [FlakyActive(backend)], LoadBalancer("svc"), home=tmp_path, log=logs.append
    )
    try:
        ctl.tick()  # active() fails: the two are unjudged, and no second set is launched
        assert len(backend.active()) == 2, logs
        assert [(r["state"], r["unjudged"]) for r in ctl.status()["replicas"]] == [("launching", True)] * 2
        ctl.tick()  # asked again: adopted
        assert sorted(ctl.replicas) == ["r0", "r1"] and not ctl._unjudged
        assert sum("adopted" in line for line in logs) == 2
        ctl.shutdown()
    finally:
        left = stop_all(backend)
    assert left == []  # before: shutdown left both running for good


def test_a_shutdown_stops_unjudged_replicas_by_their_records(tmp_path: Path):
    backend = running_set(tmp_path)
    ctl = ServiceController(spec(), [FlakyActive(backend, -1)], LoadBalancer("svc"), home=tmp_path)
    try:
        ctl.tick()
        ctl.shutdown()  # active() still fails: each recorded replica is stopped all the same
    finally:
        left = stop_all(backend)
    assert left == []
    assert ServiceController(spec(), [backend], LoadBalancer("svc"), home=tmp_path)._state.replicas == {}


def test_launches_made_while_unjudged_survive_the_judgement(tmp_path: Path):
    backend = running_set(tmp_path)
    ctl = ServiceController(spec(3), [FlakyActive(backend)], LoadBalancer("svc"), home=tmp_path)
    try:
        ctl.tick()  # a new spec (3 replicas): version 2 launches 3 beside the 2 unjudged old ones
        assert len(backend.active()) == 5
        ctl.tick()  # judged: the 2 old ones adopted, this controller's own 3 are not taken for strays
        assert len(backend.active()) == 5 and len(ctl.replicas) == 5 and not ctl._unjudged
        assert {r.replica.version for r in ctl.replicas.values()} == {1, 2}
        ctl.shutdown()
    finally:
        left = stop_all(backend)
    assert left == []


def test_unjudged_replicas_that_never_answer_are_replaced_at_the_adopted_deadline(tmp_path: Path):
    same = spec(timeout_to_ready_seconds=5)  # deadline: launch + 60 s initial delay + 5 s
    backend = running_set(tmp_path, same)
    now = [time.time()]
    ctl = ServiceController(
        same, [FlakyActive(backend, -1)], LoadBalancer("svc"), home=tmp_path, clock=lambda: now[0]
    )
    try:
        ctl.tick()
        assert len(backend.active()) == 2
        now[0] += 30  # not answering, but before the deadline: still counted, nothing launched
        ctl.tick()
        assert len(backend.active()) == 2
        now[0] += 36  # past it: failed and replaced; not stopped through the backend that cannot say
        ctl.tick()
        assert len(backend.active()) == 4 and len(ctl._unjudged) == 2
        assert {r["state"] for r in ctl.status()["replicas"] if r["unjudged"]} == {"failed"}
        ctl.shutdown()
    finally:
        left = stop_all(backend)
    assert left == []


def test_a_spec_saved_before_fields_were_added_rolls_nothing(tmp_path: Path):
    """A ledger written by an older overcast (no proxy, no failure_threshold) holds the same spec: its
    replicas are adopted as they are, not rolled (a new set of GPUs) because the JSON text differs."""
    backend = running_set(tmp_path)
    path = tmp_path / "services" / "svc" / "ledger.json"
    ledger = json.loads(path.read_text())
    old = json.loads(ledger["spec"])
    del (
        old["proxy"],
        old["readiness_probe"]["failure_threshold"],
        old["readiness_probe"]["timeout_to_ready_seconds"],
    )
    path.write_text(json.dumps(ledger | {"spec": json.dumps(old)}))
    ctl = ServiceController(spec(), [backend], LoadBalancer("svc"), home=tmp_path)
    try:
        ctl.tick()
        assert ctl.version == 1 and sorted(ctl.replicas) == ["r0", "r1"]
        assert len(backend.active()) == 2
        ctl.shutdown()
    finally:
        left = stop_all(backend)
    assert left == []
