"""The live replica manager for one service: launch replicas through backends, probe readiness, replace
failed or preempted replicas, keep the spread, autoscale on the load balancer's request rate, roll out
new versions without dropping traffic.

Each ``tick()`` is the service's own snapshot -> decide -> apply: read backend events and probes (snapshot),
``autoscale`` + ``plan_replicas`` (decide, the same pure functions the serving twin replays), then start and
stop replicas and tell the load balancer which replicas are ready (apply).

With a ``home`` the controller keeps a ledger (``serve/ledger.py``) and its first tick adopts the replicas
a previous controller of the same service left running (it crashed, or was killed): they are found in the
backends' ``active()``, probed, and kept instead of launched again; replicas of an older spec are rolled.
A backend whose ``active()`` fails is asked again each tick; its recorded replicas are probed and routed to
meanwhile but never stopped through it, and ``shutdown()`` stops them (``serve/adoption.py``). A replica
whose stop fails is kept and retired again next tick: no failure stops the load balancer's update.

A replica is probed and routed to at the address its backend reports (``Addressed.address``: 127.0.0.1 for
a local provider, the node's NodeAddr for a Slurm job once it runs); until then it is not probed, but its
readiness deadline runs. The full URL is recorded in the ledger, so a restart adopts it there.

Probes run every ``period_seconds``. A ready replica is replaced after ``failure_threshold`` failed probes
in a row (one slow probe of a busy replica is not a dead replica), a launching one if it has not passed a
probe ``timeout_to_ready_seconds`` after its initial delay (a hung model load).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from overcast.backends.base import Backend, CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.control.snapshot import hold_stored, on_slurm
from overcast.placement.pool import Pool
from overcast.serve.adoption import Adoption
from overcast.serve.autoscaler import ScaleState, autoscale
from overcast.serve.billing import ReplicaBilling
from overcast.serve.lb import LoadBalancer
from overcast.serve.ledger import (
    LedgerState,
    ReplicaRecord,
    ServiceLedger,
    check_service_name,
    parse_replica_job_id,
    replica_job_id,
    rid_number,
)
from overcast.serve.replicas import LiveReplica, ReplicaState, plan_replicas
from overcast.serve.shared import address_of, replica_host
from overcast.spec.models import JobSpec, ServiceSpec
from overcast.store import Store

# CAPACITY_ERROR: a cluster gave up on a replica queued too long (Slurm's pending_timeout_s)
LOST = {
    EventKind.FAILED,
    EventKind.PREEMPTED,
    EventKind.PROVIDER_DOWN,
    EventKind.SUCCEEDED,
    EventKind.CAPACITY_ERROR,
}
COOLDOWN_SECONDS = 30.0  # a pool that refused a launch is skipped for this long


def replica_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceController(Adoption):
    def __init__(
        self,
        spec: ServiceSpec,
        backends: Sequence[Backend],
        lb: LoadBalancer,
        *,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda _msg: None,
        home: Path | None = None,
        key: str | None = None,
        store: Store | None = None,
    ) -> None:
        """``home``: keep a ledger under ``home/services/<key>`` and adopt what it finds there (the
        service's lock is taken here: ServiceBusy if another controller runs it). None: no memory.
        ``key`` (default: the spec's name) names the replica launches ``svc.<key>.<rid>``.
        ``store``: bill each replica launch to the spec's team there (serve/billing.py); None: no bill."""
        self.spec = spec
        self.key = key or spec.name
        check_service_name(self.key)
        self.billing = ReplicaBilling(store, self.key, log)
        self.version = 1
        self.ledger = ServiceLedger(home, self.key) if home is not None else None
        if self.ledger is not None:
            self.ledger.lock()
        self._state = LedgerState()
        self._adopted = self.ledger is None
        self.backends = {b.name: b for b in backends}
        self.lb = lb
        self.clock = clock
        self.log = log
        self.scale = ScaleState(spec.replicas.min_replicas)
        self.replicas: dict[str, LiveReplica] = {}
        # recorded replicas (in self.replicas too) on a backend whose active() failed: asked after each tick
        self._unjudged: dict[str, ReplicaRecord] = {}
        self._said: dict[str, str] = {}  # the last word logged about a replica kept for a later retire
        self._cooldown: dict[str, float] = {}
        self._http = httpx.Client()
        lb.configure(spec.proxy)

    # -- public -------------------------------------------------------------------------------------
    def update(self, spec: ServiceSpec) -> None:
        """Roll out a new version: new replicas come up first; old ones go as the new ones become ready."""
        self.spec = spec
        self.lb.configure(spec.proxy)
        self.version += 1
        self.log(f"rolling update to version {self.version}")
        self._persist()

    def ready_count(self) -> int:
        return sum(1 for r in self.replicas.values() if r.replica.state is ReplicaState.READY)

    def tick(self) -> None:
        now = self.clock()
        try:
            if not self._adopted:
                self._adopt(now)  # the same now: adopted replicas are probed in this tick
            elif self._unjudged:
                self._judge_again(now)
            self._read_events(now)
            self._locate()
            self._probe(now)
            scale = autoscale(self.spec.replicas, self.scale, self.lb.rate.rate(now), now)
            moved = scale.target != self.scale.target
            self.scale = scale
            if moved:
                self._persist()  # a restart resumes at this target instead of min_replicas
            pools = self._pools(now)
            replicas = [r.replica for r in self.replicas.values()]
            plan = plan_replicas(self.spec, self.scale.target, self.version, replicas, pools)
            by_id = {pool.id: pool for pool in pools}
            slurm = any(on_slurm(by_id[launch.pool_id]) for launch in plan.launch)
            if slurm and self.billing.store is not None:  # sinfo misses what Slurm queues: the store has it
                hold_stored(self.billing.store, pools, self.backends.values())  # only to launch there
                plan = plan_replicas(self.spec, self.scale.target, self.version, replicas, pools)
            for rid in plan.retire:
                self._retire_or_keep(rid)
            for launch in plan.launch:
                self._launch(by_id[launch.pool_id], launch.fallback, now)
        finally:  # whatever failed, the load balancer routes to the replicas that are ready
            self.lb.set_ready(
                {rid: r.url for rid, r in self.replicas.items() if r.replica.state is ReplicaState.READY}
            )

    def status(self) -> dict[str, Any]:
        """What the API shows: target, ready count, version and every replica."""
        replicas = [
            {"id": rid, "provider": r.provider, "pool": r.pool_id, "state": str(r.state),
             "version": r.version, "fallback": r.fallback, "url": live.url, "unjudged": rid in self._unjudged}
            for rid, live in sorted(self.replicas.items(), key=lambda item: rid_number(item[0]))
            for r in [live.replica]
        ]  # fmt: skip
        return {"target": self.scale.target, "ready": self.ready_count(), "version": self.version} | {
            "replicas": replicas
        }

    def adopt(self) -> None:
        """Adopt a predecessor's replicas now (the first tick does it anyway)."""
        if not self._adopted:
            self._adopt(self.clock())

    def shutdown(self) -> None:
        """Stop every replica, a predecessor's too, unjudged ones by their records: the service ends. A
        replica that cannot be stopped keeps its record; the first such error is raised after the rest."""
        self.adopt()
        if self._unjudged:
            self._judge_again(self.clock())  # one more look; still unjudged ones are stopped blind
        failed: list[Exception] = []
        for rid in list(self.replicas):
            try:
                self._retire(rid)
            except Exception as exc:  # a backend error: stop the others all the same
                self.log(f"replica {rid} could not be stopped: {exc}")
                failed.append(exc)
        self.detach()
        if failed:
            raise failed[0]

    def detach(self) -> None:
        """Stop managing without stopping the replicas: the next controller of the service adopts them."""
        self.lb.set_ready({})
        self._http.close()
        if self.ledger is not None:
            self.ledger.unlock()

    # -- snapshot -----------------------------------------------------------------------------------
    def _read_events(self, now: float) -> None:
        by_job = {r.job_id: rid for rid, r in self.replicas.items()}
        for backend in self.backends.values():
            for event in backend.poll():
                parsed = parse_replica_job_id(event.job_id)
                if event.kind not in LOST or parsed is None or parsed[0] != self.key:
                    continue
                # its bill ends when the backend says it ended, live or already retired or forgotten
                self.billing.end(event.job_id, event.attempt, str(event.kind), at=event.at)
                rid = by_job.get(event.job_id)
                if rid is not None:
                    if event.kind is EventKind.CAPACITY_ERROR:  # the pool has no room for it: skip it
                        self._cooldown[self.replicas[rid].replica.pool_id] = now + COOLDOWN_SECONDS
                    self._mark_failed(rid, f"{event.kind}: {event.detail}")

    def _locate(self) -> None:
        """Give each launching replica whose address was not known yet its url, once its backend says
        where it runs (a Slurm job: once it has a node)."""
        for rid, live in list(self.replicas.items()):
            if not live.url and live.replica.state is ReplicaState.LAUNCHING and rid not in self._unjudged:
                self._place(rid, say=True)

    def _place(self, rid: str, *, say: bool) -> None:
        """Ask ``rid``'s backend where it runs; recorded once known, so a restart adopts it there."""
        live, rec = self.replicas[rid], self._state.replicas.get(rid)
        backend = self.backends.get(live.backend)
        if rec is None or backend is None:
            return
        try:
            host = address_of(backend, live.job_id, rec.attempt)
        except Exception as exc:  # asked again next tick; the readiness deadline still runs
            self._say(rid, f"replica {rid}: where it runs is not known yet: {exc}")
            return
        if host is None:
            return
        url = replica_url(host, rec.port)
        self.replicas[rid] = replace(live, url=url)
        self._state.replicas[rid] = replace(rec, url=url)
        self._persist()
        if say:
            self.log(f"replica {rid} runs at {url}")

    def _probe(self, now: float) -> None:
        probe = self.spec.readiness_probe
        for rid, live in list(self.replicas.items()):
            state = live.replica.state
            if state is ReplicaState.FAILED or now < live.next_probe:
                continue
            if not live.url:  # not placed yet (queued): nothing to probe, but its deadline runs
                if now >= live.ready_by:
                    waited = probe.initial_delay_seconds + probe.timeout_to_ready_seconds
                    self._mark_failed(
                        rid, f"not running {waited:g} s after its launch (timeout_to_ready_seconds)"
                    )
                continue
            try:
                response = self._http.get(live.url + probe.path, timeout=probe.timeout_seconds)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            failures = 0 if ok else live.failures + (state is ReplicaState.READY)
            self.replicas[rid] = replace(live, next_probe=now + probe.period_seconds, failures=failures)
            if ok and state is ReplicaState.LAUNCHING:
                self._set_state(rid, ReplicaState.READY)
                self.log(f"replica {rid} ready on {live.replica.provider}")
            elif ok and live.failures:
                self.log(f"replica {rid} answers its probe again")
            elif not ok and state is ReplicaState.READY and failures >= probe.failure_threshold:
                self._mark_failed(rid, f"readiness probe failed {failures} times in a row")
            elif not ok and state is ReplicaState.READY:
                self.log(f"replica {rid}: readiness probe failed ({failures} of {probe.failure_threshold})")
            elif not ok and now >= live.ready_by:
                waited = probe.initial_delay_seconds + probe.timeout_to_ready_seconds
                self._mark_failed(rid, f"not ready {waited:g} s after its launch (timeout_to_ready_seconds)")

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
        rid = f"r{self._state.next_rid}"
        self._state.next_rid += 1
        job_id = replica_job_id(self.key, rid)
        port = free_port()  # free here; on a node of a cluster a clash fails its readiness: replaced
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
        # where to listen: 0.0.0.0 where it is reached at its node's address (Slurm); the spec may say
        env["OVERCAST_REPLICA_HOST"] = self.spec.env.get("OVERCAST_REPLICA_HOST") or replica_host(
            self.backends[pool.backend]
        )
        record = ReplicaRecord(
            pool.backend, 1, pool.id, pool.provider, str(pool.purchase), "", self.version, fallback, now, port
        )
        self._state.replicas[rid] = record
        self._persist()  # recorded before it runs: a crash right after the launch cannot orphan it
        try:
            self.billing.start(job_id, pool, self.spec.team)  # no bill, no launch: as for jobs
            allocation = self.backends[pool.backend].launch(LaunchRequest(job_id, 1, pool, 1, job, env))
        except (CapacityError, ProviderDown) as exc:
            self._cooldown[pool.id] = now + COOLDOWN_SECONDS
            self.log(f"launch on {pool.id} refused: {exc}")
            self.billing.refused(job_id, exc)
            self._forget(rid)
            return
        except Exception:
            self.billing.end(job_id, 1, "launch-error")
            self._forget(rid)
            raise
        self.billing.launched(job_id, allocation.handle)
        probe = self.spec.readiness_probe
        first = now + probe.initial_delay_seconds
        ready_by = first + probe.timeout_to_ready_seconds
        self.replicas[rid] = LiveReplica(record.replica(rid), pool.backend, job_id, "", now, ready_by, first)
        self.log(f"replica {rid} launching on {pool.provider} (version {self.version})")
        self._place(rid, say=False)  # a local replica's address is known at once

    def _retire_or_keep(self, rid: str) -> None:
        """Retire ``rid`` as the plan says, or keep it for the next tick's plan; never raises."""
        rec = self._unjudged.get(rid)
        if rec is not None:  # its backend cannot say what it runs: a stop through it would fail too
            self._say(rid, f"replica {rid} is retired once {rec.backend} answers again")
            return
        try:
            self._retire(rid)
        except Exception as exc:  # kept (and billed): retired again next tick; the others go on
            self._say(rid, f"replica {rid} could not be stopped, tried again each tick: {exc}")

    def _say(self, rid: str, message: str) -> None:
        if self._said.get(rid) != message:  # once, not every tick
            self._said[rid] = message
            self.log(message)

    def _retire(self, rid: str) -> None:
        """Stop ``rid`` (an unjudged one blind, by its record: a stop of nothing is a no-op); raises."""
        live = self.replicas.get(rid)
        if live is None:
            return
        rec = self._state.replicas.get(rid)
        attempt = rec.attempt if rec is not None else 1
        backend = self.backends.get(live.backend)
        if backend is not None:
            backend.stop(live.job_id, attempt, grace_seconds=2.0)  # raises: kept, retired again later
        outcome = "retired" if backend is not None else "backend-gone"
        self.billing.end(live.job_id, attempt, outcome, strict=True)  # raises: kept, like a failed stop
        del self.replicas[rid]
        self._unjudged.pop(rid, None)
        self._said.pop(rid, None)
        self._forget(rid)  # only once stopped
        self.log(f"replica {rid} retired from {live.replica.provider}")

    def _forget(self, rid: str) -> None:
        if self._state.replicas.pop(rid, None) is not None:
            self._persist()

    def _mark_failed(self, rid: str, why: str) -> None:
        if self.replicas[rid].replica.state is not ReplicaState.FAILED:
            self._set_state(rid, ReplicaState.FAILED)
            self.log(f"replica {rid} lost: {why}")

    def _set_state(self, rid: str, state: ReplicaState) -> None:
        live = self.replicas[rid]
        self.replicas[rid] = replace(live, replica=replace(live.replica, state=state))
