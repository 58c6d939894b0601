"""Step (c) of a tick: the scheduler's input, built from backends (pools, use) and the store (jobs,
services' replicas, learned pool health, what budgeted teams have left this month, what teams' jobs
really ran against their expected_hours: ``estimates.py``)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping

from overcast.backends.base import REPLICA_PREFIX
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
    count_replicas(store, pools, running, rt.backends.values())
    # running jobs too: the budget holds and consolidation weighs what they would be priced at once
    # pending again (a move priced lower than that would strand the job on its budget)
    pending, running = (estimates or EstimateCache(ttl=0.0)).correct(store, now, pending, running)
    left = (budgets or TeamBudgetCache(ttl=0.0)).left(store, now, running, pools)
    return Snapshot(now=now, pools=pools, pending=pending, running=running, team_budgets=left)


def count_replicas(
    store: Store, pools: list[Pool], running: list[RunningJob], backends: Iterable[object]
) -> None:
    """Services' replicas hold nodes of the local pools and Slurm clusters beside the jobs
    (``backends/local_share.py``): one node each, billed as open launches ``svc.<service>.<rid>``. A pool's
    backend counts what runs, but a replica recorded and not yet started (a local one starting, a Slurm job
    still queued) is not there, nor is a job claimed and not yet submitted, or one Slurm still queues:
    ``hold_recorded`` adds them. ``running``: the loop's live jobs (their nodes), ``backends``: the loop's."""
    if not any(holds_replicas(pool) for pool in pools):
        return  # no pool takes replicas: no need to ask the store
    _, replicas = store.pool_holds((), REPLICA_PREFIX)
    jobs: Counter[str] = Counter()
    for job in running:
        jobs[job.pool_id] += job.nodes
    hold_recorded(pools, jobs, Counter(replicas), started_nodes(backends))


def holds_replicas(pool: Pool) -> bool:
    """A pool services' replicas run on under ``overcast up`` (``split_for_services``)."""
    return pool.labels.get("local") == "true" or on_slurm(pool)


def on_slurm(pool: Pool) -> bool:
    return pool.backend.startswith("slurm:")


def started_nodes(backends: Iterable[object]) -> dict[str, int]:
    """Pool id -> nodes overcast's started Slurm jobs hold there (``SlurmBackend.started_nodes``)."""
    started: dict[str, int] = {}
    for backend in backends:
        of = getattr(backend, "started_nodes", None)
        if callable(of):
            started.update(of())
    return started


def hold_recorded(
    pools: list[Pool], jobs: Mapping[str, int], replicas: Mapping[str, int], started: Mapping[str, int]
) -> None:
    """Raise each pool's use by its jobs' nodes and its replicas' records, never above what it holds.

    A local pool's backend counts every launch of its own (``local_share.py``): its use is the larger
    figure. A Slurm pool's (sinfo: nodes allocated) counts other users' jobs too, so the larger figure
    would hide overcast's queued work behind theirs: there the records are added, less those whose jobs
    Slurm has started (``started``: already in sinfo's count). What is added is what neither sinfo nor a
    started job shows: jobs and replicas Slurm still queues, and launches claimed and not yet submitted."""
    for pool in pools:
        held = jobs.get(pool.id, 0) + replicas.get(pool.id, 0)
        if not held:
            continue
        if on_slurm(pool):
            used = pool.used_nodes + max(held - started.get(pool.id, 0), 0)
        else:
            used = max(pool.used_nodes, held)
        top = pool.capacity_nodes if pool.capacity_nodes is not None else used
        pool.used_nodes = max(pool.used_nodes, min(used, top))


def hold_stored(store: Store, pools: list[Pool], backends: Iterable[object]) -> None:
    """For the services' replica plan: a Slurm pool's use raised by what the store holds there that Slurm
    does not run yet (``hold_recorded``): live jobs' nodes and open replica records, summed per pool in SQL
    (~1 ms per 2,000 live jobs: the controller asks only before a launch on a Slurm pool). Local pools count
    every launch already (``local_share.py``)."""
    slurm = [pool for pool in pools if on_slurm(pool)]
    if not slurm:
        return
    jobs, replicas = store.pool_holds(LIVE, REPLICA_PREFIX)
    hold_recorded(slurm, jobs, replicas, started_nodes(backends))


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
