"""The live replica manager for one service: launch replicas through backends, probe readiness, replace
failed or preempted replicas, keep the spread, autoscale on the load balancer's request rate, roll out
new versions without dropping traffic.

Each ``tick()`` is the service's own snapshot -> decide -> apply: read backend events and probes (snapshot),
``autoscale`` + ``plan_replicas`` (decide, the same pure functions the serving twin replays), then start and
stop replicas and tell the load balancer which replicas are ready (apply).
"""

from __future__ import annotations

import itertools
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import httpx

from overcast.backends.base import Backend, CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.placement.pool import Pool
from overcast.serve.autoscaler import ScaleState, autoscale
from overcast.serve.lb import LoadBalancer
from overcast.serve.replicas import Replica, ReplicaState, plan_replicas
from overcast.spec.models import JobSpec, ServiceSpec

LOST = {EventKind.FAILED, EventKind.PREEMPTED, EventKind.PROVIDER_DOWN, EventKind.SUCCEEDED}
COOLDOWN_SECONDS = 30.0  # a pool that refused a launch is skipped for this long


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True, slots=True)
class LiveReplica:
    replica: Replica
    backend: str
    job_id: str
    url: str
    launched_at: float


class ServiceController:
    def __init__(
        self,
        spec: ServiceSpec,
        backends: Sequence[Backend],
        lb: LoadBalancer,
        *,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> None:
        self.spec = spec
        self.version = 1
        self.backends = {b.name: b for b in backends}
        self.lb = lb
        self.clock = clock
        self.log = log
        self.scale = ScaleState(spec.replicas.min_replicas)
        self.replicas: dict[str, LiveReplica] = {}
        self._ids = itertools.count()
        self._cooldown: dict[str, float] = {}
        self._http = httpx.Client(timeout=spec.readiness_probe.timeout_seconds)

    # -- public -------------------------------------------------------------------------------------
    def update(self, spec: ServiceSpec) -> None:
        """Roll out a new version: new replicas come up first; old ones go as the new ones become ready."""
        self.spec = spec
        self.version += 1
        self.log(f"rolling update to version {self.version}")

    def ready_count(self) -> int:
        return sum(1 for r in self.replicas.values() if r.replica.state is ReplicaState.READY)

    def tick(self) -> None:
        now = self.clock()
        self._read_events()
        self._probe(now)
        self.scale = autoscale(self.spec.replicas, self.scale, self.lb.rate.rate(now), now)
        replicas = [r.replica for r in self.replicas.values()]
        pools = self._pools(now)
        plan = plan_replicas(self.spec, self.scale.target, self.version, replicas, pools)
        by_id = {pool.id: pool for pool in pools}
        for rid in plan.retire:
            self._retire(rid)
        for launch in plan.launch:
            self._launch(by_id[launch.pool_id], launch.fallback, now)
        self.lb.set_ready(
            {rid: r.url for rid, r in self.replicas.items() if r.replica.state is ReplicaState.READY}
        )

    def shutdown(self) -> None:
        for rid in list(self.replicas):
            self._retire(rid)
        self.lb.set_ready({})
        self._http.close()

    # -- snapshot -----------------------------------------------------------------------------------
    def _read_events(self) -> None:
        by_job = {r.job_id: rid for rid, r in self.replicas.items()}
        for backend in self.backends.values():
            for event in backend.poll():
                rid = by_job.get(event.job_id)
                if rid is not None and event.kind in LOST:
                    self._mark_failed(rid, f"{event.kind}: {event.detail}")

    def _probe(self, now: float) -> None:
        probe = self.spec.readiness_probe
        for rid, live in list(self.replicas.items()):
            state = live.replica.state
            if state is ReplicaState.FAILED:
                continue
            if state is ReplicaState.LAUNCHING and now - live.launched_at < probe.initial_delay_seconds:
                continue
            try:
                ok = self._http.get(live.url + probe.path).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok and state is ReplicaState.LAUNCHING:
                self._set_state(rid, ReplicaState.READY)
                self.log(f"replica {rid} ready on {live.replica.provider}")
            elif not ok and state is ReplicaState.READY:
                self._mark_failed(rid, "readiness probe failed")

    def _pools(self, now: float) -> list[Pool]:
        wanted = {a.name for a in self.spec.resources.accelerators}
        allowed = set(self.spec.resources.providers)
        pools = []
        for backend in self.backends.values():
            for pool in backend.pools():
                if not pool.usable(now) or self._cooldown.get(pool.id, 0) > now:
                    continue
                if wanted and pool.accelerator not in wanted:
                    continue
                if allowed and pool.provider not in allowed:
                    continue
                pools.append(pool)
        return sorted(pools, key=lambda p: (p.price_per_node_hour, p.id))

    # -- apply --------------------------------------------------------------------------------------
    def _launch(self, pool: Pool, fallback: bool, now: float) -> None:
        rid = f"r{next(self._ids)}"
        job_id = f"svc-{self.spec.name}-{rid}"
        port = free_port()
        job = JobSpec(
            name=job_id,
            resources=self.spec.resources,
            setup=self.spec.setup,
            run=self.spec.run,
            env=self.spec.env,
            team=self.spec.team,
        )
        env = {"OVERCAST_REPLICA_PORT": str(port), "OVERCAST_REPLICA_ID": rid, "OVERCAST_JOB_ID": job_id}
        env["OVERCAST_SERVICE_VERSION"] = str(self.version)
        env["OVERCAST_PYTHON"] = sys.executable  # lets a replica's run line use overcast's interpreter
        try:
            self.backends[pool.backend].launch(LaunchRequest(job_id, 1, pool, 1, job, env))
        except (CapacityError, ProviderDown) as exc:
            self._cooldown[pool.id] = now + COOLDOWN_SECONDS
            self.log(f"launch on {pool.id} refused: {exc}")
            return
        replica = Replica(
            rid, pool.id, pool.provider, pool.purchase, ReplicaState.LAUNCHING, self.version, fallback
        )
        self.replicas[rid] = LiveReplica(replica, pool.backend, job_id, f"http://127.0.0.1:{port}", now)
        self.log(f"replica {rid} launching on {pool.provider} (version {self.version})")

    def _retire(self, rid: str) -> None:
        live = self.replicas.pop(rid, None)
        if live is None:
            return
        backend = self.backends.get(live.backend)
        if backend is not None:
            backend.stop(live.job_id, 1, grace_seconds=2.0)
        self.log(f"replica {rid} retired from {live.replica.provider}")

    def _mark_failed(self, rid: str, why: str) -> None:
        if self.replicas[rid].replica.state is not ReplicaState.FAILED:
            self._set_state(rid, ReplicaState.FAILED)
            self.log(f"replica {rid} lost: {why}")

    def _set_state(self, rid: str, state: ReplicaState) -> None:
        live = self.replicas[rid]
        self.replicas[rid] = replace(live, replica=replace(live.replica, state=state))
