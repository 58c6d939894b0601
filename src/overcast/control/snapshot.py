"""Step (c) of a tick: the scheduler's input, built from backends (pools, use) and the store (jobs,
services' replicas, learned pool health, what budgeted teams have left this month, what teams' jobs
really ran against their expected_hours: ``estimates.py``)."""

from __future__ import annotations

import logging
from collections import Counter

from overcast.backends.base import is_replica_launch
from overcast.control.estimates import EstimateCache
from overcast.control.health import apply_learned
from overcast.control.runtime import LIVE, Runtime
from overcast.placement.pool import Pool
from overcast.scheduler.snapshot import PendingJob, RunningJob, Snapshot
from overcast.store import JobRecord, JobState, OpenLaunch, PoolHealthRecord, Store, month_start

log = logging.getLogger(__name__)

MAX_JOBS = 1_000_000
BUDGET_CACHE_S = 30.0  # budgets and this month's spend are read at most this often


class TeamBudgetCache:
    """What each budgeted team has left this month (budget - list-price spend), for the scheduler.

    The spend is a sum over the month's launches, too dear to run every tick: budgets and spend are
    read from the store at most every ``ttl`` seconds (and again when a month begins), and in between
    the running jobs' list-price use since that read is added (nodes x price x time), so what is left
    is current every tick, and steady while the team's jobs run within their expected hours (the
    scheduler also takes off what they are still expected to cost). A new budget applies within ``ttl``.
    """

    def __init__(self, ttl: float = BUDGET_CACHE_S) -> None:
        self.ttl = ttl
        self._read_at: float | None = None
        self._month = 0.0
        self._left: dict[str, float] = {}

    def left(
        self, store: Store, now: float, running: list[RunningJob], pools: list[Pool]
    ) -> dict[str, float]:
        month = month_start(now)
        read_at = self._read_at
        if read_at is None or not 0 <= now - read_at < self.ttl or month != self._month:
            budgets = store.budgets()
            spent = store.month_spend(now, budgets) if budgets else {}
            self._left = {team: dollars - spent.get(team, 0.0) for team, dollars in budgets.items()}
            self._read_at = read_at = now
            self._month = month
        left = dict(self._left)
        if left and now > read_at:
            listed = {p.id: p.marginal_price_per_node_hour for p in pools}
            for job in running:
                team = job.spec.team
                # the frozen price bills it even while its pool is not listed (pools() failed)
                price = job.launch_price if job.launch_price is not None else listed.get(job.pool_id, 0.0)
                if team in left and price > 0:
                    since = max(read_at, job.started_at)
                    left[team] -= job.nodes * price * max(now - since, 0.0) / 3600.0
        return left


def backend_pools(rt: Runtime) -> list[Pool]:
    pools: list[Pool] = []
    for name, backend in rt.backends.items():
        try:
            pools.extend(backend.pools())
        except Exception as exc:  # a backend that cannot answer offers nothing this tick
            log.warning("pools() of %s failed: %s", name, exc)
    return pools


def build_snapshot(
    rt: Runtime,
    now: float,
    health: dict[str, PoolHealthRecord],
    budgets: TeamBudgetCache | None = None,
    estimates: EstimateCache | None = None,
) -> Snapshot:
    """``budgets``: the loop's cache of what teams have left; ``estimates``: its cache of the teams'
    estimate factors, which corrects pending and running jobs' expected_hours (None: read now)."""
    pools = backend_pools(rt)
    apply_learned(pools, health, now)
    store = rt.store
    pending = [
        PendingJob(j.id, j.spec, j.submitted_at, j.attempt, frozenset(rt.avoid.get(j.id, ())))
        for j in store.list(states=[JobState.PENDING], limit=MAX_JOBS)
        if not j.cancel_requested
    ]
    launches = store.open_launches()
    live = store.list(states=LIVE, limit=MAX_JOBS)
    running = [_running(j, launches) for j in live if j.pool_id is not None]
    count_replicas(store, pools, running)
    # running jobs too: the budget holds and consolidation weighs what they would be priced at once
    # pending again (a move priced lower than that would strand the job on its budget)
    pending, running = (estimates or EstimateCache(ttl=0.0)).correct(store, now, pending, running)
    left = (budgets or TeamBudgetCache(ttl=0.0)).left(store, now, running, pools)
    return Snapshot(now=now, pools=pools, pending=pending, running=running, team_budgets=left)


def count_replicas(store: Store, pools: list[Pool], running: list[RunningJob]) -> None:
    """Services' replicas hold nodes of the local pools and Slurm clusters beside the jobs
    (``backends/local_share.py``): one node each, billed as open launches ``svc.<service>.<rid>``. A pool's
    backend counts what runs, but a replica recorded and not yet started (a local one starting, a Slurm job
    still queued) is not there, and decide() counts a pool's use as the larger of the backend's figure and
    its jobs' nodes, so an unlisted job would hide a replica: a pool is used by at least its jobs and its
    replicas' records together (never more than it holds)."""
    if not any(holds_replicas(pool) for pool in pools):
        return  # no pool takes replicas: no need to read every open launch (~20 ms per 10k)
    replicas = replica_records(store)
    if not replicas:
        return
    jobs: Counter[str] = Counter()
    for job in running:
        jobs[job.pool_id] += job.nodes
    hold_recorded(pools, jobs, replicas)


def holds_replicas(pool: Pool) -> bool:
    """A pool services' replicas run on under ``overcast up`` (``split_for_services``)."""
    return pool.labels.get("local") == "true" or pool.backend.startswith("slurm:")


def replica_records(store: Store) -> Counter[str]:
    """Each pool's open replica launch records (a replica's, from before its launch until its end)."""
    return Counter(r.pool_id for r in store.launches(active_only=True) if is_replica_launch(r.job_id))


def hold_recorded(pools: list[Pool], jobs: Counter[str], replicas: Counter[str]) -> None:
    """Raise each pool's use to its jobs' nodes plus its replicas' records (never above what it holds)."""
    for pool in pools:
        used = jobs[pool.id] + replicas[pool.id]
        if used:
            top = pool.capacity_nodes if pool.capacity_nodes is not None else used
            pool.used_nodes = max(pool.used_nodes, min(used, top))


def hold_stored(store: Store, pools: list[Pool]) -> None:
    """For the services' replica plan: a Slurm pool's use (``sinfo``: nodes given) raised to what the store
    holds there, live jobs' nodes and open replica records, so it sees jobs the loop claimed and not yet
    submitted, jobs and other services' replicas Slurm still queues. Local pools count every launch
    already (``local_share.py``). Reads the store only when a Slurm pool is offered (~56 ms per 2,000 live
    jobs in SQLite: the controller asks only before a launch on a Slurm pool)."""
    slurm = [pool for pool in pools if pool.backend.startswith("slurm:")]
    if not slurm:
        return
    jobs: Counter[str] = Counter()
    for job in store.list(states=LIVE, limit=MAX_JOBS):
        if job.pool_id is not None:
            jobs[job.pool_id] += job.nodes or job.spec.num_nodes
    hold_recorded(slurm, jobs, replica_records(store))


def _running(j: JobRecord, launches: dict[tuple[str, int], OpenLaunch]) -> RunningJob:
    """A live job for the scheduler, with the price its attempt's launch record froze. Its start is
    this attempt's: started_at is only reset when an attempt runs, so while a relaunch is launching it
    is the last attempt's, and the budget would see the new attempt's expected hours as spent."""
    launch = launches.get((j.id, j.attempt))
    start = j.started_at
    if launch is not None and (start is None or start < launch.launched_at):
        start = launch.launched_at
    elif start is None or j.state is JobState.LAUNCHING:
        start = j.updated_at  # no open launch record: when it was claimed for this attempt
    return RunningJob(
        j.id, j.spec, j.pool_id or "", j.nodes or j.spec.num_nodes, j.attempt, start,
        None if launch is None else launch.billed_per_node_hour,
    )  # fmt: skip
