"""The Slurm backend: one overcast job attempt = one Slurm batch job, through Slurm's own commands.

Why the CLI (``sbatch --parsable``, ``squeue``, ``sinfo --json``, ``scancel``) and not slurmrestd: it needs
nothing running beyond slurmctld, no JWT key or extra daemon, and it is what every Slurm site has. The
queue is read with ``squeue -O`` by default (``--json`` costs ~7x more with 1,000 jobs; see docs/slurm.md).
Each call is bounded by a timeout; a cluster that does not answer is "down" (PROVIDER_DOWN for its jobs,
ProviderDown on launch) and is asked again only after ``down_retry_s``, so one dead cluster cannot stall
the control loop on every call.

Naming convention (what makes reconcile after a crash work): the Slurm job name is
``<prefix>.<attempt>.<job id>``, so ``active()`` rebuilds (job id, attempt) from ``squeue`` alone.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overcast.backends.base import (
    Allocation,
    BackendEvent,
    CapacityError,
    EventKind,
    LaunchRequest,
    ProviderDown,
    check_gang,
)
from overcast.backends.slurm_cli import SlurmCommands, SlurmError, SlurmUnreachable
from overcast.backends.slurm_config import SAFE_NAME, SlurmCluster, slurm_cluster_from_fleet
from overcast.backends.slurm_events import Tracked, attempt_events, event, vanished_event
from overcast.backends.slurm_pools import expand_hostlist, members_by_pool, pools_from_nodes
from overcast.backends.slurm_script import job_env, sbatch_args, write_attempt
from overcast.backends.slurm_states import LIVE_STATES, RUNNING_STATES, base_state, is_live
from overcast.placement.pool import Health, Pool

__all__ = ["SlurmBackend", "SlurmCluster", "slurm_cluster_from_fleet"]

log = logging.getLogger(__name__)

_SAFE = SAFE_NAME
_STOPPED_MEMORY = 10_000  # stopped attempts remembered, in case one shows up again (requeue, recovery)


class SlurmBackend:
    """The Backend protocol over one Slurm cluster (make one per cluster)."""

    # a services' replica listens on every interface: it is reached at its node's NodeAddr (``address``)
    replica_host = "0.0.0.0"

    def __init__(
        self, cluster: SlurmCluster, clock: Callable[[], float] = time.time,
        owns: Callable[[str], bool] | None = None,
    ) -> None:  # fmt: skip
        """``owns``: the job ids this object reports, adopts and lists (None: all of this prefix); the
        others' jobs only hold nodes (``local_share.py``: the job loop's side and the services')."""
        self.cluster = cluster
        self.owns = owns
        self.name = f"slurm:{cluster.name}"
        self.cli = SlurmCommands(conf=cluster.conf, timeout_s=cluster.command_timeout_s)
        self.work_dir = Path(cluster.work_dir).expanduser() / cluster.name
        self._clock = clock
        # stop() runs in the control loop's stopper threads, next to poll(), active() and launch(): the
        # bookkeeping below is changed under this lock (never held while waiting out a grace period).
        self._lock = threading.RLock()
        self._jobs: dict[tuple[str, int], Tracked] = {}
        self._abandoned: dict[tuple[str, int], int] = {}  # reported PROVIDER_DOWN; cancel if seen again
        self._stopped: dict[tuple[str, int], None] = {}  # attempts overcast stopped (oldest first)
        self._pools: list[Pool] = []
        self._members: dict[str, set[str]] = {}  # pool id -> its nodes' names (the last sinfo)
        # nodes this prefix's started jobs hold, either side's (the last squeue)
        self._started: set[str] = set()
        self._down_until = 0.0
        self._unreachable_since: float | None = None  # first failed poll of the current outage
        self._down_reason = ""
        self._delivered: list[BackendEvent] = []  # the last poll's events, until the next poll
        self._redeliver: list[BackendEvent] = []
        self._name_re = re.compile(rf"^{re.escape(cluster.job_prefix)}\.(\d+)\.(.+)$")

    # --- naming ---------------------------------------------------------------------------------------

    def job_name(self, job_id: str, attempt: int) -> str:
        return f"{self.cluster.job_prefix}.{attempt}.{job_id}"

    def parse_job_name(self, name: object) -> tuple[str, int] | None:
        """(job id, attempt) from an overcast job name of this prefix; None for any other name."""
        m = self._name_re.match(str(name or ""))
        if m is None or (self.owns is not None and not self.owns(m.group(2))):
            return None
        return m.group(2), int(m.group(1))

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        return self.work_dir / _SAFE.sub("_", job_id) / f"attempt-{attempt}"

    def log_dir(self, job_id: str, attempt: int) -> Path:
        if self.cluster.logs_dir:
            return Path(self.cluster.logs_dir).expanduser() / _SAFE.sub("_", job_id) / str(attempt)
        return self.attempt_dir(job_id, attempt) / "logs"

    def log_path(self, job_id: str, attempt: int, node_rank: int) -> Path:
        return self.log_dir(job_id, attempt) / f"node-{node_rank}.log"

    def slurm_job_id(self, job_id: str, attempt: int) -> int | None:
        tracked = self._jobs.get((job_id, attempt))
        return tracked.slurm_id if tracked else None

    # --- calls to the cluster, with "down" bookkeeping ----------------------------------------------------

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        now = self._clock()
        if now < self._down_until:
            raise SlurmUnreachable(self._down_reason)
        try:
            return fn(*args)
        except SlurmUnreachable as e:
            self._down_until = self._clock() + self.cluster.down_retry_s
            self._down_reason = f"cluster {self.cluster.name} unreachable: {e}"
            raise SlurmUnreachable(self._down_reason) from e

    def _squeue(self) -> list[dict[str, Any]]:
        return self.cli.squeue_text() if self.cluster.queue_query == "text" else self.cli.squeue()

    @property
    def reachable(self) -> bool:
        return self._clock() >= self._down_until

    # --- Backend protocol --------------------------------------------------------------------------------

    def pools(self) -> list[Pool]:
        try:
            nodes = self._call(self.cli.sinfo_nodes)
        except SlurmUnreachable:
            for pool in self._pools:  # keep what we knew, marked down, so placement avoids it
                pool.health = Health.DOWN
            return list(self._pools)
        c = self.cluster
        self._pools = pools_from_nodes(
            nodes,
            cluster=c.name,
            provider=c.provider or c.name,
            region=c.region or c.name,
            price_per_node_hour=c.price_per_node_hour,
            accelerator_names=c.accelerator_names,
            partitions=c.partitions,
        )
        self._members = members_by_pool(nodes, c.name, c.partitions)
        return list(self._pools)

    def _holds_for_store(self, job: dict[str, Any]) -> bool:
        """A started job of this prefix (either side's) whose nodes the store's live records count: not one
        overcast stopped or gave up on (its record has ended) nor one completing. Leaving those out errs
        towards counting a pool fuller, never emptier."""
        m = self._name_re.match(str(job.get("name") or ""))
        if m is None or base_state(job) not in RUNNING_STATES - {"COMPLETING"}:
            return False
        key = (m.group(2), int(m.group(1)))
        return key not in self._stopped and self._abandoned.get(key) != int(job.get("job_id") or -1)

    def started_nodes(self) -> dict[str, int]:
        """Pool id -> how many of its nodes overcast's started jobs of this prefix hold (the job loop's and
        the services' alike), as the last ``squeue`` showed them: the part of sinfo's use that the store's
        records also count (``control/snapshot.hold_recorded``), so queued ones can be added to it."""
        with self._lock:
            started = self._started
            return {pool_id: len(names & started) for pool_id, names in self._members.items()}

    def launch(self, request: LaunchRequest) -> Allocation:
        check_gang(self.name, request)
        pool = request.pool
        key = (request.job_id, request.attempt)
        with self._lock:
            tracked = self._jobs.get(key)
        if tracked is not None and not tracked.finished:
            raise ValueError(f"job {request.job_id} attempt {request.attempt} is already on {self.name}")
        attempt_dir = self.attempt_dir(request.job_id, request.attempt)
        gres_type = pool.labels.get("gres_type") or self._gres_type(pool.accelerator)
        name = self.job_name(request.job_id, request.attempt)
        args = sbatch_args(self.cluster, request, attempt_dir, name, gres_type)  # rejects a wrong GPU first
        log_dir = self.log_dir(request.job_id, request.attempt)
        script = write_attempt(attempt_dir, request.spec, job_env(request, self.name), log_dir)
        try:
            slurm_id = self._call(self.cli.sbatch, str(script), args)
        except SlurmUnreachable as e:
            # The answer was lost, not necessarily the job: if it shows up, it is cancelled on sight (the
            # loop relaunches this job as a new attempt, elsewhere), so it never runs next to its relaunch.
            with self._lock:
                self._stopped[key] = None
            raise ProviderDown(str(e)) from e
        except SlurmError as e:  # slurmctld refused: this pool cannot take the job as asked
            raise CapacityError(f"{self.name}: {e}") from e
        with self._lock:
            self._jobs[key] = Tracked(slurm_id=slurm_id, submitted_at=self._clock())
            self._stopped.pop(key, None)
        return Allocation(request.job_id, request.attempt, self.name, f"{self.cluster.name}:{slurm_id}")

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        """SIGTERM to every task on every node, wait up to the grace period, then cancel (SIGKILL).

        Never raises for a cluster that is down: the job is remembered and cancelled as soon as the
        cluster answers again, so it cannot keep running next to its relaunch."""
        key = (job_id, attempt)
        with self._lock:
            self._stopped[key] = None
            while len(self._stopped) > _STOPPED_MEMORY:
                del self._stopped[next(iter(self._stopped))]  # the oldest
            try:
                tracked = self._jobs.get(key) or self._find(job_id, attempt)
            except SlurmUnreachable:
                return
            if tracked is None:
                return
            tracked.stopping = True
        try:
            state = self._call(self.cli.job_state, tracked.slurm_id)
            if grace_seconds > 0 and state == "RUNNING":
                self._call(self.cli.scancel, [tracked.slurm_id], "TERM")  # the job steps, not the batch shell
                deadline = time.monotonic() + grace_seconds
                while state in ("RUNNING", "COMPLETING") and time.monotonic() < deadline:
                    time.sleep(0.1)
                    state = self._call(self.cli.job_state, tracked.slurm_id)
            if state in LIVE_STATES:
                self._call(self.cli.scancel, [tracked.slurm_id])
        except SlurmUnreachable:
            with self._lock:
                self._abandoned[key] = tracked.slurm_id
        except SlurmError as e:  # it ended between our look and our cancel: nothing left to stop
            log.info("stop of %s attempt %d on %s: %s", job_id, attempt, self.name, e)

    def active(self) -> list[tuple[str, int]]:
        """(job id, attempt) of every overcast job slurmctld has queued or running, ours or not, and of every
        attempt whose end ``poll()`` has not reported yet (as the local backend does): a reconcile that reads
        the queue between a job's end and the next poll must not requeue it as "lost", which would rerun a
        finished job, or relaunch a preempted one without counting the restart or avoiding the pool."""
        with self._lock:
            return self._active()

    def _active(self) -> list[tuple[str, int]]:
        try:
            jobs = self._call(self._squeue)
        except SlurmUnreachable as e:
            raise ProviderDown(str(e)) from e
        found = {key for key, t in self._jobs.items() if not (t.finished or t.stopping)}
        for job in jobs:
            key = self.parse_job_name(job.get("name"))
            if key and (is_live(job) or self._unreported_end(key)):
                found.add(key)
        return sorted(found)

    def address(self, job_id: str, attempt: int) -> str | None:
        """Where an attempt runs (``Addressed``): its first node's NodeAddr once Slurm has started it;
        None while it is queued, once it ended, or while the cluster does not answer."""
        with self._lock:
            tracked = self._jobs.get((job_id, attempt))
        if tracked is None or tracked.finished or tracked.stopping:
            return None
        try:
            return self._call(self.cli.node_address, tracked.slurm_id)
        except (SlurmUnreachable, SlurmError) as e:  # asked again later
            log.info("address of %s attempt %d on %s: %s", job_id, attempt, self.name, e)
            return None

    def redeliver(self) -> None:
        """The caller could not handle the last poll's events: the next poll reports them again."""
        with self._lock:
            self._redeliver = self._delivered

    def poll(self) -> list[BackendEvent]:
        with self._lock:
            events = [*self._redeliver, *self._poll()]
            self._redeliver, self._delivered = [], events
            return events

    def _poll(self) -> list[BackendEvent]:
        try:
            jobs = self._call(self._squeue)
        except SlurmUnreachable as e:
            # A slurmctld restart (upgrade, reconfiguration) is routine and jobs keep running on the
            # nodes: give up on them only once the cluster stayed unreachable for lost_after_s.
            now = self._clock()
            if self._unreachable_since is None:
                self._unreachable_since = now
            if now - self._unreachable_since < self.cluster.lost_after_s:
                return []
            return self._provider_down(str(e))
        self._unreachable_since = None
        self._started = {
            host
            for job in jobs
            if self._holds_for_store(job)
            for host in expand_hostlist(str(job.get("nodes") or ""))
        }
        events: list[BackendEvent] = []
        seen: set[tuple[str, int]] = set()
        to_cancel: list[int] = []
        abandoned_seen: set[tuple[str, int]] = set()
        for job in jobs:
            key = self.parse_job_name(job.get("name"))
            if key is None:
                continue
            slurm_id = int(job["job_id"])
            if self._abandoned.get(key) == slurm_id:
                # Came back after we gave up on it: it must not run next to its relaunch. Kept until
                # slurmctld forgets it: a recovering slurmctld can show it ended, then running again.
                abandoned_seen.add(key)
                if is_live(job) and base_state(job) != "COMPLETING":
                    to_cancel.append(slurm_id)
                continue
            tracked = self._jobs.get(key)
            if tracked is None or tracked.slurm_id != slurm_id:
                if not (is_live(job) or self._unreported_end(key)):
                    continue  # overcast stopped it, or it is an older copy of an attempt we track
                # Launched by an earlier process of ours: adopt it. One that ended meanwhile is reported
                # (again, perhaps: the loop ignores a repeat), so a finished job is not rerun.
                submitted = float(job.get("submit_time") or 0)
                restarts = int(job.get("restart_cnt") or 0)  # requeues before we saw it are not news
                tracked = self._jobs[key] = Tracked(slurm_id, submitted, restarts=restarts)
                if key in self._stopped:  # overcast stopped this attempt before it showed up here
                    tracked.stopping = True
                    to_cancel.append(slurm_id)
            seen.add(key)
            events.extend(attempt_events(self.cluster, key, tracked, job, self._clock(), to_cancel))
        gone = [t.slurm_id for k, t in self._jobs.items() if k not in seen and not (t.finished or t.stopping)]
        accounted = self._accounted(gone)
        for key, tracked in list(self._jobs.items()):
            if key in seen:
                continue
            if not tracked.finished and not tracked.stopping:
                events.append(vanished_event(key, accounted.get(tracked.slurm_id), self._clock()))
            del self._jobs[key]  # slurmctld forgot it (MinJobAge): so do we
        for key in set(self._abandoned) - abandoned_seen:
            del self._abandoned[key]
        if to_cancel:
            try:
                self._call(self.cli.scancel, to_cancel)
            except SlurmUnreachable:
                pass  # the next poll tries again
            except SlurmError as e:  # refused: say so, but the events above must still be delivered
                log.warning("scancel %s on %s: %s", to_cancel, self.name, e)
        return events

    # --- helpers -----------------------------------------------------------------------------------------

    def _unreported_end(self, key: tuple[str, int]) -> bool:
        """An ended overcast job this process neither tracks nor stopped: it ended while no process of
        ours watched (after a restart), so its end is still news."""
        return key not in self._jobs and key not in self._stopped and key not in self._abandoned

    def _accounted(self, slurm_ids: list[int]) -> dict[int, dict[str, Any]]:
        """sacct's records of jobs slurmctld forgot; none where the cluster keeps no accounting."""
        if not slurm_ids:
            return {}
        try:
            return self.cli.sacct(slurm_ids)
        except (SlurmError, SlurmUnreachable) as e:
            log.debug("sacct on %s: %s", self.name, e)
            return {}

    def _provider_down(self, why: str) -> list[BackendEvent]:
        """Every job there is over for us: news for the ones still running, and all are cancelled if the
        cluster comes back with them (without further news)."""
        events = []
        for key, tracked in list(self._jobs.items()):
            if not tracked.finished and not tracked.stopping:
                events.append(event(EventKind.PROVIDER_DOWN, key, self._clock(), why))
            self._abandoned[key] = tracked.slurm_id
            del self._jobs[key]
        return events

    def _find(self, job_id: str, attempt: int) -> Tracked | None:
        """A job we did not launch in this process (after a restart): look it up by name."""
        jobs = self._call(self._squeue)
        for job in jobs:
            if self.parse_job_name(job.get("name")) == (job_id, attempt) and is_live(job):
                tracked = self._jobs[(job_id, attempt)] = Tracked(int(job["job_id"]), self._clock())
                return tracked
        return None

    def _gres_type(self, accelerator: str) -> str:
        """The cluster's GRES type for an accelerator (for pools from a fleet file, which lack it)."""
        for pool in self._pools or self.pools():
            if pool.accelerator == accelerator and pool.labels.get("gres_type"):
                return pool.labels["gres_type"]
        return accelerator.lower()
