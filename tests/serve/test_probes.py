"""Readiness probes of a live controller over real replica processes (a manual clock decides when probes
are due): a failure threshold for ready replicas, a deadline for launching ones, and the probe period."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer
from overcast.spec.models import Autoscaling, ReadinessProbe, ServiceSpec

REPLICA = Path(__file__).with_name("health_replica.py")


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def controller(tmp_path: Path, clock: Clock, run: str, **probe) -> tuple[ServiceController, list[str]]:
    backend = LocalBackend(LocalCluster("a", nodes=4, price_per_node_hour=1.0), home=tmp_path)
    spec = ServiceSpec(
        name="svc", run=run, replicas=Autoscaling(min_replicas=1),
        readiness_probe=ReadinessProbe(path="/health", timeout_seconds=2.0, **probe),
    )  # fmt: skip
    logs: list[str] = []
    return ServiceController(spec, [backend], LoadBalancer("svc"), clock=clock, log=logs.append), logs


def wait_ready(ctl: ServiceController, clock: Clock, step: float) -> None:
    deadline = time.monotonic() + 20
    while ctl.ready_count() < 1:
        assert time.monotonic() < deadline, "the replica never became ready"
        clock.t += step
        ctl.tick()
        time.sleep(0.1)


def step(ctl: ServiceController, clock: Clock, seconds: float) -> None:
    clock.t += seconds
    ctl.tick()


def test_a_ready_replica_survives_a_slow_probe_and_goes_after_failure_threshold(tmp_path: Path):
    run = f"exec {sys.executable} {REPLICA} {tmp_path}"
    clock = Clock()
    ctl, logs = controller(tmp_path, clock, run, initial_delay_seconds=0, period_seconds=1)
    try:
        wait_ready(ctl, clock, 1)
        first = set(ctl.replicas)
        (tmp_path / "slow").touch()  # busy for one probe: 3 s against a 2 s probe timeout
        step(ctl, clock, 1)
        assert set(ctl.replicas) == first and ctl.ready_count() == 1, logs  # before: replaced right here
        assert any("readiness probe failed (1 of 3)" in line for line in logs)
        step(ctl, clock, 1)
        assert any("answers its probe again" in line for line in logs)
        (tmp_path / "sick").touch()  # now every probe fails: two failures are not yet three
        step(ctl, clock, 1)
        step(ctl, clock, 1)
        assert set(ctl.replicas) == first and ctl.ready_count() == 1, logs
        step(ctl, clock, 1)
        assert not first & set(ctl.replicas), logs  # replaced after the third failure in a row
        assert any("failed 3 times in a row" in line for line in logs)
    finally:
        ctl.shutdown()


def test_probes_run_every_period_seconds_not_every_tick(tmp_path: Path):
    run = f"exec {sys.executable} {REPLICA} {tmp_path}"
    clock = Clock()
    ctl, _logs = controller(tmp_path, clock, run, initial_delay_seconds=0, period_seconds=10)

    def hits() -> int:
        return len((tmp_path / "hits").read_text().splitlines())

    try:
        wait_ready(ctl, clock, 10)
        before = hits()
        for _ in range(5):  # 7.5 s of ticks: no probe due
            step(ctl, clock, 1.5)
        assert hits() == before  # before: one probe per tick
        step(ctl, clock, 2.5)  # 10 s after the last probe
        assert hits() == before + 1
    finally:
        ctl.shutdown()


def test_a_replica_that_never_gets_ready_is_replaced_after_its_deadline(tmp_path: Path):
    clock = Clock()
    ctl, logs = controller(
        tmp_path,
        clock,
        "exec sleep 600",
        initial_delay_seconds=0.5,
        period_seconds=1,
        timeout_to_ready_seconds=5,
    )  # listens nowhere: every probe is refused
    try:
        ctl.tick()
        assert set(ctl.replicas) == {"r0"}
        for _ in range(5):  # 5 failed probes: more than failure_threshold, but it is still loading
            step(ctl, clock, 1)
        assert set(ctl.replicas) == {"r0"}, logs
        step(ctl, clock, 1)  # the first probe past 5.5 s (initial delay + timeout_to_ready_seconds)
        assert set(ctl.replicas) == {"r1"}, logs  # before: r0 was kept (and counted) forever
        assert any("r0 lost: not ready 5.5 s after its launch" in line for line in logs)
    finally:
        ctl.shutdown()
