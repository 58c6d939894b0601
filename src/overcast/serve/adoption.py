"""Adoption: a new controller takes over the replicas its predecessor left running (``ServiceController``
mixes this in; it owns every attribute declared below).

The first tick asks every backend's ``active()`` for this service's launches and adopts each one that has
its ledger record; a launch with no record cannot be routed to and is stopped. A backend whose ``active()``
fails leaves its records *unjudged*: they are taken like adopted replicas all the same (probed in this tick,
routed to once a probe passes, replaced when none passes by the adopted deadline), but the plan never stops
them through that backend, and it is asked again every tick: what it runs is confirmed, what it does not
run is forgotten (gone).
"""

from __future__ import annotations

from collections.abc import Callable

from overcast.backends.base import Backend
from overcast.serve.autoscaler import ScaleState
from overcast.serve.billing import ReplicaBilling
from overcast.serve.ledger import (
    LedgerState,
    ReplicaRecord,
    ServiceLedger,
    parse_replica_job_id,
    replica_job_id,
    rid_number,
    same_spec,
)
from overcast.serve.replicas import LiveReplica
from overcast.spec.models import ServiceSpec


class Adoption:
    spec: ServiceSpec
    key: str
    version: int
    scale: ScaleState
    ledger: ServiceLedger | None
    backends: dict[str, Backend]
    billing: ReplicaBilling
    replicas: dict[str, LiveReplica]
    log: Callable[[str], None]
    _state: LedgerState
    _adopted: bool
    # recorded replicas (also in ``replicas``) on a backend whose active() failed: asked after each tick
    _unjudged: dict[str, ReplicaRecord]

    def _adopt(self, now: float) -> None:
        """Take over the replicas a previous controller of this service left running."""
        assert self.ledger is not None
        saved = self.ledger.load()
        if saved.spec is not None:
            self.version = saved.version if same_spec(saved.spec, self.spec) else saved.version + 1
            if self.version != saved.version:
                self.log(f"spec changed since the last run: rolling update to version {self.version}")
        if saved.target is not None:
            policy = self.spec.replicas
            top = policy.max_replicas if policy.max_replicas is not None else policy.min_replicas
            self.scale = ScaleState(max(policy.min_replicas, min(top, saved.target)))
        self._state.next_rid = saved.next_rid
        for name in self.backends:
            self._judge(name, {rid: r for rid, r in saved.replicas.items() if r.backend == name}, now)
        self._adopted = True
        self._persist()

    def _judge_again(self, now: float) -> None:
        """Ask the backends whose active() failed again: confirm what they run, forget what they do not."""
        before = (set(self._unjudged), self._state.next_rid)
        for name in {r.backend for r in self._unjudged.values()}:
            self._judge(name, {rid: r for rid, r in self._unjudged.items() if r.backend == name}, now)
        if (set(self._unjudged), self._state.next_rid) != before:
            self._persist()

    def _judge(self, name: str, records: dict[str, ReplicaRecord], now: float) -> None:
        """Adopt (or confirm, if unjudged) each of ``records`` that backend ``name`` runs, forget the
        others; stop its launches of this service that nobody recorded. If its active() fails, the
        records are taken unjudged."""
        backend = self.backends[name]
        try:
            active = backend.active()
        except Exception as exc:  # unknown truth: take its records on trust, stop nothing through it
            fresh = {rid: rec for rid, rec in records.items() if rid not in self._unjudged}
            if fresh:
                self.log(f"active() of {name} failed: {exc}; its {len(fresh)} replicas are asked after again")
            for rid, rec in fresh.items():
                self._unjudged[rid] = rec
                self._take(rid, rec, name, now, "taken unjudged")
            return
        for job_id, attempt in active:
            parsed = parse_replica_job_id(job_id)
            if parsed is None or parsed[0] != self.key:
                continue  # a job, or another service's replica
            rid = parsed[1]
            self._state.next_rid = max(self._state.next_rid, rid_number(rid) + 1)
            live, rec, unjudged = self.replicas.get(rid), records.get(rid), rid in self._unjudged
            if rec is not None and rec.attempt == attempt and (live is None or unjudged):
                if unjudged:  # kept as it is: its probes so far count
                    del self._unjudged[rid]
                    self.log(f"replica {rid} adopted: {name} answers again and runs it")
                else:
                    self._take(rid, rec, name, now, "adopted")
                continue
            if live is not None and not unjudged and live.backend == name and live.job_id == job_id:
                continue  # known already (launched by this controller since the first look)
            backend.stop(job_id, attempt, grace_seconds=2.0)  # ours, but nobody can reach it
            self.log(f"stopped unrecorded replica launch {job_id} attempt {attempt} on {name}")
            if live is None or unjudged:  # not a live replica's launch record
                self.billing.end(job_id, attempt, "orphan")
        for rid in [rid for rid in records if rid not in self.replicas or rid in self._unjudged]:
            self.billing.end(replica_job_id(self.key, rid), records[rid].attempt, "gone")  # to its event
            self.replicas.pop(rid, None)
            self._unjudged.pop(rid, None)
            self._state.replicas.pop(rid, None)
            self.log(f"replica {rid} is gone from {name}")

    def _take(self, rid: str, rec: ReplicaRecord, name: str, now: float, how: str) -> None:
        """Manage a recorded replica, probed in this tick; one that was loading when its controller
        stopped keeps its deadline, but every adopted replica gets failure_threshold probes to answer."""
        probe = self.spec.readiness_probe
        ready_by = rec.launched_at + probe.initial_delay_seconds + probe.timeout_to_ready_seconds
        ready_by = max(ready_by, now + probe.failure_threshold * probe.period_seconds)
        job_id, at = replica_job_id(self.key, rid), rec.launched_at
        self.replicas[rid] = LiveReplica(rec.replica(rid), name, job_id, rec.url, at, ready_by, now)
        self._state.replicas[rid] = rec
        self.log(f"replica {rid} {how} on {rec.provider} (version {rec.version})")

    def _persist(self) -> None:
        if self.ledger is None:
            return
        self._state.spec = self.spec.model_dump_json()
        self._state.version = self.version
        self._state.target = self.scale.target
        self.ledger.save(self._state)
