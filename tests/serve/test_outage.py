"""A backend's API down across a restart, over real replica processes: an unjudged replica that answers
its probe is routed to (nothing launched beside it); a rolling update during the outage routes to the new
replica and retires the old one only once its backend answers again; a replica whose stop fails never
stops the tick (nor the load balancer's update) and is retired by a later tick; through the server, a
restart with a changed spec during an outage serves from its load balancer with no failed tick."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer
from overcast.serve.supervisor import ServiceSupervisor
from overcast.spec.models import Autoscaling, ReadinessProbe, ServiceSpec
from overcast.store import Store
from tests.serve.test_adoption import stop_leftovers, wait_for
from tests.serve.test_billing import StopFails
from tests.serve.test_supervisor import replicas_of, spec

REPLICA = Path(__file__).with_name("health_replica.py")
A = LocalCluster("azure-local", nodes=4, price_per_node_hour=1.0)
B = LocalCluster("oci-local", nodes=4, price_per_node_hour=1.5)


class Outage:
    """The backend with an outage switch: while ``down`` its API lists nothing, stops nothing and offers no
    pool (``stop_too`` False: only active() fails, a list call broken on its own)."""

    def __init__(self, real: LocalBackend, stop_too: bool = True) -> None:
        self.real, self.name, self.down, self.stop_too = real, real.name, True, stop_too

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def active(self) -> list[tuple[str, int]]:
        if self.down:
            raise OSError("API unreachable")
        return self.real.active()

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        if self.down and self.stop_too:
            raise OSError("API unreachable")
        self.real.stop(job_id, attempt, grace_seconds)

    def pools(self) -> list[Any]:
        return [] if self.down and self.stop_too else self.real.pools()


def health_spec(tmp_path: Path, **env: str) -> ServiceSpec:
    return ServiceSpec(
        name="svc", run=f"exec {sys.executable} {REPLICA} {tmp_path}", env=env,
        replicas=Autoscaling(min_replicas=1),
        readiness_probe=ReadinessProbe(path="/health", initial_delay_seconds=0, period_seconds=0.2),
    )  # fmt: skip


def tick_until(ctl: ServiceController, cond: Any, what: str, timeout: float = 20) -> None:
    """Tick as the runner does; a tick that raises fails the test (it would skip the LB's update)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        ctl.tick()
        time.sleep(0.2)


def first_run(spec: ServiceSpec, backends: list[Any], home: Path) -> ServiceController:
    """A controller that brings one replica up, then goes away (a server restart) leaving it running."""
    first = ServiceController(spec, backends, LoadBalancer("svc"), home=home)
    tick_until(first, lambda: first.ready_count() == 1, "the first replica")
    first.detach()
    return first


def test_an_unjudged_replica_that_answers_is_routed_to_and_nothing_is_launched(tmp_path: Path):
    a = LocalBackend(A, home=tmp_path / "be")
    spec = health_spec(tmp_path)
    [url] = [r.url for r in first_run(spec, [a], tmp_path / "h").replicas.values()]
    lb = LoadBalancer("svc")
    ctl = ServiceController(spec, [Outage(a, stop_too=False)], lb, home=tmp_path / "h")
    try:
        ctl.tick()  # taken unjudged and probed in this tick: it answers, so it serves
        assert lb.ready == {"r0": url}
        assert [(r["state"], r["unjudged"]) for r in ctl.status()["replicas"]] == [("ready", True)]
        assert len(a.active()) == 1  # no second replica launched beside it
    finally:
        stop_leftovers(tmp_path / "be", [A])


def test_a_rolling_update_during_an_outage_serves_and_retires_the_old_replica_once_judged(tmp_path: Path):
    a, b = Outage(LocalBackend(A, home=tmp_path / "be")), LocalBackend(B, home=tmp_path / "be")
    a.down = False
    (tmp_path / "v1").mkdir()
    first_run(health_spec(tmp_path / "v1"), [a], tmp_path / "h")  # v1 (r0) on a
    (tmp_path / "v1" / "sick").touch()  # it no longer answers: only the new version can serve
    a.down = True
    lb, logs = LoadBalancer("svc"), []
    ctl = ServiceController(
        health_spec(tmp_path, MODEL="v2"), [a, b], lb, home=tmp_path / "h", log=logs.append
    )
    try:
        tick_until(ctl, lambda: ctl.ready_count() == 1, "the version 2 replica")
        for _ in range(3):
            ctl.tick()  # the plan retires r0 each tick: it is kept, not stopped through a down API
        assert set(lb.ready) == {"r1"} and ctl.status()["version"] == 2
        assert len(a.real.active()) == 1 and "r0" in ctl._unjudged
        assert sum("retired once" in line for line in logs) == 1, logs  # said once, not every tick
        a.down = False
        ctl.tick()  # judged: a runs it; then retired through a
        assert a.real.active() == [] and sorted(ctl.replicas) == ["r1"] and set(lb.ready) == {"r1"}
        assert ctl._state.replicas.keys() == {"r1"}
    finally:
        stop_leftovers(tmp_path / "be", [A, B])


def test_a_replica_whose_stop_fails_is_kept_and_retired_by_a_later_tick(tmp_path: Path):
    backend = StopFails(LocalBackend(A, home=tmp_path / "be"))
    backend.failing = True
    lb, logs = LoadBalancer("svc"), []
    ctl = ServiceController(health_spec(tmp_path), [backend], lb, home=tmp_path / "h", log=logs.append)
    try:
        tick_until(ctl, lambda: ctl.ready_count() == 1, "version 1")
        ctl.update(health_spec(tmp_path, MODEL="v2"))
        tick_until(ctl, lambda: ctl.replicas.get("r1") and ctl.ready_count() == 2, "version 2")
        for _ in range(3):
            ctl.tick()  # r0's stop fails: no tick raises, and both still serve
        assert set(lb.ready) == {"r0", "r1"} and len(backend.real.active()) == 2
        assert sum("could not be stopped" in line for line in logs) == 1, logs
        backend.failing = False
        ctl.tick()
        assert set(lb.ready) == {"r1"} and len(backend.real.active()) == 1 and "r0" not in ctl._state.replicas
    finally:
        stop_leftovers(tmp_path / "be", [A])


def test_a_server_restart_with_a_changed_spec_during_an_outage_serves(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'overcast.db'}")
    home = tmp_path / "serve"
    a, b = Outage(LocalBackend(A, home=home)), LocalBackend(B, home=home)
    a.down = False
    record, _ = store.put_service("ml", spec(1))
    logs: list[str] = []

    def start() -> tuple[threading.Event, threading.Thread]:
        sup = ServiceSupervisor(store, [a, b], home, interval=0.2, log=logs.append)
        stop = threading.Event()
        thread = threading.Thread(target=sup.run, args=(stop, 0.2), daemon=True)
        thread.start()
        return stop, thread

    stop, thread = start()
    try:
        wait_for(lambda: store.service(record.id).status.get("ready") == 1, 30, "1 ready replica")
        [old] = replicas_of(home, record.id, [A])
        stop.set()
        thread.join(60)
        store.put_service("ml", spec(1, env={"MODEL": "v2"}))  # changed while the server was down
        a.down = True
        stop, thread = start()
        status = wait_for(
            lambda: (s := store.service(record.id).status).get("version") == 2 and s.get("ready") and s,
            30,
            "v2",
        )
        assert httpx.get(status["url"] + "/health", timeout=5).status_code == 200
        assert replicas_of(home, record.id, [A]) == {old}  # not stopped through the down API
        a.down = False  # back: the old replica is judged and retired
        wait_for(lambda: not replicas_of(home, record.id, [A]), 30, "the old replica retired")
        assert not [line for line in logs if "tick failed" in line]
    finally:
        stop.set()
        thread.join(60)
        a.down = False
        stop_leftovers(home, [A, B])
        store.close()
