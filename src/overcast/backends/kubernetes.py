"""The Kubernetes backend: one overcast job attempt = one Indexed ``batch/v1`` Job (a gang of N pods).

Through the official client, list/poll only (see kubernetes_client.py). What makes it safe:
  - all or nothing: Kubernetes schedules pods one by one, so a gang whose pods are not all running within
    ``schedule_timeout_s`` is deleted and reported CAPACITY_ERROR (the loop places it elsewhere);
  - nothing lost, nothing twice: Jobs carry (job id, attempt) in labels, ``active()`` is one labelled list,
    and an ended Job is deleted only after the loop took its event (the next poll), so a restarted
    overcast reports the end of a Job that ended while nobody watched;
  - stop: the Job is deleted with foreground propagation and each pod with the stop's grace period
    (the kubelet sends SIGTERM, then SIGKILL after the grace).
A cluster that does not answer is "down" for ``down_retry_s``; after ``lost_after_s`` its jobs are
reported PROVIDER_DOWN and deleted on sight if it comes back with them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overcast.backends.base import (
    Allocation,
    BackendEvent,
    EventKind,
    LaunchRequest,
    ProviderDown,
    check_gang,
)
from overcast.backends.kubernetes_client import KubeApi, KubeRefused, KubeUnreachable, refusal
from overcast.backends.kubernetes_config import KubeCluster, kube_cluster_from_fleet
from overcast.backends.kubernetes_manifest import (
    checkpoint_dir,
    job_manifest,
    job_name,
    owner,
    selector,
    service_manifest,
)
from overcast.backends.kubernetes_pools import cluster_pool
from overcast.backends.kubernetes_status import (
    all_started,
    created_at,
    deleting,
    ended_at,
    job_key,
    meta,
    pending_reason,
    rank,
    terminal_outcome,
    unscheduled,
)
from overcast.backends.slurm_script import gpus_per_node
from overcast.placement.pool import Health, Pool

__all__ = ["KubeCluster", "KubernetesBackend", "kube_cluster_from_fleet"]

log = logging.getLogger(__name__)

_STOPPED_MEMORY = 10_000  # attempts overcast stopped, remembered in case one shows up again
_STOP_POLL_S = 0.2
_LOG_TIMEOUT_S = 3.0  # per pod log read: the kubelet of a lost node does not answer
_SAFE = str.maketrans({c: "_" for c in "/\\:"})

Key = tuple[str, int]


@dataclass(slots=True)
class Tracked:
    name: str  # the Job's name
    nodes: int
    submitted_at: float  # the gang timeout counts from here
    started: bool = False
    finished: bool = False  # its end was reported: deleted once the loop has taken the event
    note: str = ""  # added to the STARTED event (e.g. checkpoints on the pods' own disks)


class KubernetesBackend:
    """The Backend protocol over one namespace of one Kubernetes cluster."""

    def __init__(
        self, cluster: KubeCluster, api: KubeApi | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.cluster = cluster
        self.name = f"kubernetes:{cluster.name}"
        self.api = api or KubeApi(cluster)
        self._clock = clock
        self._lock = threading.RLock()  # stop() runs in the loop's stopper threads, next to poll()
        self._jobs: dict[Key, Tracked] = {}
        self._stopped: dict[Key, int] = {}  # attempts overcast stopped (oldest first) -> the pods' grace
        self._stopping: set[Key] = set()  # stops under way in this process (they delete with grace)
        self._delivered: list[BackendEvent] = []
        self._redeliver: list[BackendEvent] = []
        self._down_until = 0.0
        self._down_reason = ""
        self._unreachable_since: float | None = None
        self._pool = cluster_pool(cluster, self.name, None, 0)
        self._owner = owner(cluster)  # the owner label: this backend's Jobs only

    # --- calls, with "down" bookkeeping ---------------------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._clock() < self._down_until:
            raise KubeUnreachable(self._down_reason)
        try:
            return fn(*args)
        except KubeUnreachable as e:
            self._down_until = self._clock() + self.cluster.down_retry_s
            self._down_reason = f"Kubernetes cluster {self.cluster.name} unreachable: {e}"
            raise KubeUnreachable(self._down_reason) from None

    def job_name(self, job_id: str, attempt: int) -> str:
        return job_name(self.cluster.job_prefix, job_id, attempt)

    def log_path(self, job_id: str, attempt: int, node_rank: int) -> Path | None:
        if not self.cluster.logs_dir:
            return None
        return Path(self.cluster.logs_dir) / job_id.translate(_SAFE) / str(attempt) / f"node-{node_rank}.log"

    # --- Backend protocol ----------------------------------------------------------------------------

    def pools(self) -> list[Pool]:
        """The fleet entry's pool; the node list (if overcast may read it) lowers the capacity to the
        ready, schedulable nodes with enough GPUs, and the gangs of our live Jobs are its use."""
        try:
            nodes = self._call(
                self.api.list_nodes, ",".join(f"{k}={v}" for k, v in self.cluster.node_selector)
            )
            jobs = self._call(self.api.list_jobs, selector(self._owner))
        except (KubeUnreachable, KubeRefused) as e:  # refused: our credentials no longer work here
            if isinstance(e, KubeRefused):
                log.warning("%s: the API refused to list our Jobs: %s", self.name, e)
            self._pool.health = Health.DOWN
            return [self._pool]
        used = sum(int((j.get("spec") or {}).get("parallelism") or 0) for j in jobs if self._holds_nodes(j))
        self._pool = cluster_pool(self.cluster, self.name, nodes, used)
        return [self._pool]

    def _holds_nodes(self, job: dict[str, Any]) -> bool:
        key = job_key(job)
        tracked = self._jobs.get(key) if key else None
        return key is not None and not (tracked is not None and tracked.finished) and not _ended(job)

    def launch(self, request: LaunchRequest) -> Allocation:
        check_gang(self.name, request)
        key = (request.job_id, request.attempt)
        name = self.job_name(*key)
        manifest = job_manifest(self.cluster, request, name, gpus_per_node(request), self.name)
        with self._lock:
            if key in self._jobs and not self._jobs[key].finished:
                raise ValueError(f"job {request.job_id} attempt {request.attempt} is already on {self.name}")
        created: dict[str, Any] | None = None
        try:
            created = self._call(self.api.create_job, manifest)
            uid = str(meta(created).get("uid") or "")
            self._call(self.api.create_service, service_manifest(self.cluster, request, name, uid))
        except KubeUnreachable as e:
            # The answer was lost, not necessarily the Job: if it shows up, it is deleted on sight.
            self._remember_stopped(key, 0)
            raise ProviderDown(str(e)) from None
        except KubeRefused as e:
            if created is not None:  # a Job without its Service has no head address: not kept
                self._delete_quietly(name)  # (a Job of that name we did not create is not ours to delete)
            raise refusal(self.name, e) from None
        note = ""
        if checkpoint_dir(self.cluster, request) is None:
            note = "; checkpoints on the pods' own disks (no volume_claim, no checkpoint_dir): lost with them"
            log.warning("%s: job %s%s", self.name, request.job_id, note)
        with self._lock:
            self._jobs[key] = Tracked(name, request.num_nodes, self._clock(), note=note)
            self._stopped.pop(key, None)
        return Allocation(request.job_id, request.attempt, self.name, f"{self.cluster.namespace}/{name}")

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        """Delete the Job (foreground) and its pods with ``grace_seconds`` (SIGTERM, then SIGKILL); wait for
        the pods to go. Never raises for a cluster that is down: the Job is deleted when it is seen again."""
        key = (job_id, attempt)
        grace = max(0, math.ceil(grace_seconds))
        with self._lock:
            self._remember_stopped(key, grace)
            self._stopping.add(key)
        try:
            self._stop(key, grace)
        finally:
            with self._lock:
                self._stopping.discard(key)

    def _delete_gang(self, key: Key, grace: int) -> None:
        """The pods first, with ``grace`` (a deletion can only shorten a pod's grace: were the Job deleted
        first, its garbage collector would delete them with their terminationGracePeriodSeconds), then
        the Job (foreground) -- only Jobs that carry our owner label, whatever their name."""
        pods_of = selector(self._owner, *key)
        for pod in self._call(self.api.list_pods, pods_of):
            self._call(self.api.delete_pod, meta(pod)["name"], grace)
        for job in self._call(self.api.list_jobs, pods_of):
            self._call(self.api.delete_job, meta(job)["name"])

    def _stop(self, key: Key, grace: int) -> None:
        pods_of = selector(self._owner, *key)
        try:
            deadline = time.monotonic() + grace + 2.0  # the kubelet needs a moment past the grace
            self._delete_gang(key, grace)
            while time.monotonic() < deadline:
                if not self._call(self.api.list_pods, pods_of):
                    return
                time.sleep(_STOP_POLL_S)
            for pod in self._call(self.api.list_pods, pods_of):  # past the grace: force
                self._call(self.api.delete_pod, meta(pod)["name"], 0)
        except KubeUnreachable:
            log.info("stop of %s attempt %d on %s: cluster unreachable; deleted when seen", *key, self.name)
        except KubeRefused as e:
            log.warning("stop of %s attempt %d on %s: %s", *key, self.name, e)

    def active(self) -> list[Key]:
        """Our Jobs that run or wait, and ended ones whose end the loop has not taken yet (a reconcile
        between a Job's end and the next poll must not requeue it as lost)."""
        try:
            jobs = self._call(self.api.list_jobs, selector(self._owner))
        except KubeUnreachable as e:
            raise ProviderDown(str(e)) from None
        with self._lock:
            found = {k for k, t in self._jobs.items() if not t.finished and k not in self._stopped}
            for job in jobs:
                key = job_key(job)
                if key is None or deleting(job) or key in self._stopped:
                    continue
                tracked = self._jobs.get(key)
                if tracked is None or not tracked.finished:
                    found.add(key)
            return sorted(found)

    def redeliver(self) -> None:
        """The caller could not handle the last poll's events: the next poll reports them again."""
        with self._lock:
            self._redeliver = self._delivered

    def poll(self) -> list[BackendEvent]:
        with self._lock:
            acked = [e for e in self._delivered if e not in self._redeliver]
            events = [*self._redeliver, *self._poll(acked)]
            self._redeliver, self._delivered = [], events
            return events

    # --- poll ----------------------------------------------------------------------------------------

    def _poll(self, acked: list[BackendEvent]) -> list[BackendEvent]:
        try:
            jobs = self._call(self.api.list_jobs, selector(self._owner))
            pods = self._call(self.api.list_pods, selector(self._owner))
        except KubeUnreachable as e:
            return self._unreachable(str(e))
        self._unreachable_since = None
        for event in acked:  # the loop took these ends: the Jobs can go (their logs are copied)
            tracked = self._jobs.get((event.job_id, event.attempt))
            if tracked is not None and tracked.finished and event.kind is not EventKind.STARTED:
                self._delete_quietly(tracked.name)
        by_job: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            by_job.setdefault(str((meta(pod).get("labels") or {}).get("job-name")), []).append(pod)
        events: list[BackendEvent] = []
        seen: set[Key] = set()
        for job in jobs:
            key = job_key(job)
            if key is None:
                continue
            seen.add(key)
            name = str(meta(job).get("name"))
            if key in self._stopped:
                if not deleting(job) and key not in self._stopping:  # stopped while the cluster was
                    self._delete_gang_quietly(key)  # away, or the launch's answer was lost
                continue
            if deleting(job):
                continue  # someone is deleting it; when it is gone, "vanished" below says so
            tracked = self._jobs.get(key)
            if tracked is None:  # launched by an earlier process of ours: adopt it
                nodes = int((job.get("spec") or {}).get("parallelism") or 1)
                tracked = self._jobs[key] = Tracked(name, nodes, created_at(job, self._clock()))
            events += self._job_events(key, tracked, job, by_job.get(name, []))
        for key, tracked in list(self._jobs.items()):
            if key not in seen:
                if not tracked.finished and key not in self._stopped:
                    events.append(self._event(EventKind.PREEMPTED, key, "Job deleted outside overcast"))
                del self._jobs[key]
        return events

    def _job_events(
        self, key: Key, tracked: Tracked, job: dict[str, Any], pods: list[dict[str, Any]]
    ) -> list[BackendEvent]:
        if tracked.finished:
            return []
        events = []
        if not tracked.started and all_started(pods, tracked.nodes):
            tracked.started = True
            nodes = sorted({str((p.get("spec") or {}).get("nodeName")) for p in pods})
            events.append(self._event(EventKind.STARTED, key, f"running on {','.join(nodes)}{tracked.note}"))
        outcome = terminal_outcome(job, pods)
        if outcome is not None:
            tracked.finished = True
            self._copy_logs(key, pods)
            at = ended_at(job, pods, self._clock())  # not the poll's time: a loop away is not billed
            return [*events, self._event(outcome.kind, key, outcome.detail, outcome.exit_code, at)]
        if tracked.started:
            return events
        # All or nothing: a gang that cannot all run here must not hold part of the cluster. A pod not
        # yet on a node counts against schedule_timeout_s; one on its node but not running yet (pulling
        # its image) against the longer start_timeout_s.
        waited = self._clock() - tracked.submitted_at
        waiting = unscheduled(pods, tracked.nodes)
        if waited > (self.cluster.schedule_timeout_s if waiting else self.cluster.start_timeout_s):
            tracked.finished = True
            self._remember_stopped(key, 0)
            self._delete_quietly(tracked.name, grace=0)
            what = "scheduled" if waiting else "running"
            why = f"gang not {what} after {waited:.0f}s: {pending_reason(pods)}"
            events.append(self._event(EventKind.CAPACITY_ERROR, key, why))
        return events

    def _unreachable(self, why: str) -> list[BackendEvent]:
        """An API restart is routine and pods keep running: give up on the jobs only after lost_after_s."""
        now = self._clock()
        if self._unreachable_since is None:
            self._unreachable_since = now
        if now - self._unreachable_since < self.cluster.lost_after_s:
            return []
        events = []
        for key, tracked in list(self._jobs.items()):
            if not tracked.finished and key not in self._stopped:
                events.append(self._event(EventKind.PROVIDER_DOWN, key, why))
            self._remember_stopped(key, 0)  # deleted if the cluster comes back with it
            del self._jobs[key]
        return events

    # --- helpers -------------------------------------------------------------------------------------

    def _event(
        self, kind: EventKind, key: Key, detail: str, exit_code: int | None = None, at: float | None = None
    ) -> BackendEvent:
        return BackendEvent(kind, key[0], key[1], self._clock() if at is None else at, detail, exit_code)

    def _remember_stopped(self, key: Key, grace: int) -> None:
        with self._lock:
            self._stopped[key] = grace
            while len(self._stopped) > _STOPPED_MEMORY:
                del self._stopped[next(iter(self._stopped))]

    def _delete_quietly(self, name: str, grace: int | None = None) -> None:
        try:
            self._call(self.api.delete_job, name, grace)
        except (KubeUnreachable, KubeRefused) as e:  # the next poll tries again (or it is gone)
            log.info("delete of Job %s on %s: %s", name, self.name, e)

    def _delete_gang_quietly(self, key: Key) -> None:
        """A gang overcast stopped (or never knew it launched) seen again: its pods get the grace of
        that stop (0 for a launch whose answer was lost: a relaunch may already run elsewhere)."""
        try:
            self._delete_gang(key, self._stopped.get(key, 0))
        except (KubeUnreachable, KubeRefused) as e:  # the next poll tries again (or it is gone)
            log.info("delete of %s attempt %d on %s: %s", *key, self.name, e)

    def _copy_logs(self, key: Key, pods: list[dict[str, Any]]) -> None:
        """Each rank's pod log to <logs_dir>/<job>/<attempt>/node-<rank>.log, before the Job is deleted."""
        for pod in pods:
            node_rank = rank(pod)
            path = self.log_path(key[0], key[1], node_rank) if node_rank is not None else None
            if path is None:
                continue
            try:  # not through _call: a dead node's kubelet is no reason to think the API down
                text = self.api.pod_log(meta(pod)["name"], _LOG_TIMEOUT_S)
            except (KubeUnreachable, KubeRefused) as e:
                log.info("log of pod %s on %s: %s", meta(pod).get("name"), self.name, e)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def _ended(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return deleting(job) or any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions
    )
