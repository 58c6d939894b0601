"""Service replicas billed like jobs: every replica launch is a launch record in the store.

A replica is one node on one pool. It is recorded (job id ``svc.<service id>.<rid>``, attempt 1, the
service's team, the pool's terms frozen now) before the backend is asked for it, like a job's attempt,
so usage by team, pool, provider or job counts serving too. Its record ends when the backend reports it
gone (the event's time), else when the controller stops it or finds it gone (now); an end only ever
moves earlier (``Store.end_launch``), so a late event corrects a "gone" seen after a restart. Adoption
records nothing: the launch's record is the one made when it launched.

Without a store (``overcast serve FILE`` run on its own) nothing is billed.
"""

from __future__ import annotations

from collections.abc import Callable

from overcast.backends.base import ProviderDown
from overcast.placement.pool import Pool
from overcast.serve.ledger import replica_job_id
from overcast.store import LaunchTerms, Store
from overcast.store.tables import launches

JOB_ID_LENGTH: int = launches.c.job_id.type.length  # type: ignore[attr-defined]
_WIDEST_RID = "r999999999"  # ledger.py's rid pattern: "r" and at most 9 digits


class ReplicaBilling:
    def __init__(self, store: Store | None, key: str, log: Callable[[str], None]) -> None:
        """Raises ValueError when ``key`` would make replica ids too long for a launch record."""
        if store is not None and len(replica_job_id(key, _WIDEST_RID)) > JOB_ID_LENGTH:
            raise ValueError(
                f"service key {key!r} is too long to bill its replicas (job ids: {JOB_ID_LENGTH})"
            )
        self.store = store
        self.log = log

    def start(self, job_id: str, pool: Pool, team: str) -> None:
        """Record the launch before it is made: a store that cannot record it stops the launch."""
        if self.store is None:
            return
        terms = LaunchTerms(
            pool.provider, str(pool.purchase), 1, pool.gpus_per_node, pool.accelerator,
            pool.price_per_node_hour,
        )  # fmt: skip
        self.store.record_launch(job_id, 1, pool.id, pool.backend, "", team=team, terms=terms)

    def launched(self, job_id: str, handle: str) -> None:
        """The backend's handle, once launched; a store error now must not lose track of the replica."""
        if self.store is not None:
            self._quietly(job_id, lambda store: store.set_launch_handle(job_id, 1, handle))

    def refused(self, job_id: str, exc: Exception) -> None:
        """The backend refused the launch: the record ends as it began, as a job's refused attempt does."""
        self.end(job_id, 1, "provider-down" if isinstance(exc, ProviderDown) else "capacity-error")

    def end(
        self, job_id: str, attempt: int, outcome: str, at: float | None = None, *, strict: bool = False
    ) -> None:
        """Close the record at ``at`` (default now). ``strict``: a store error is raised (the caller
        keeps the replica and ends it again later), else logged (an event read once cannot be put back:
        the record is then closed by the replica's retire, at its time)."""
        if self.store is None:
            return
        if strict:
            self.store.end_launch(job_id, attempt, outcome, at=at)
        else:
            self._quietly(job_id, lambda store: store.end_launch(job_id, attempt, outcome, at=at))

    def _quietly(self, job_id: str, write: Callable[[Store], None]) -> None:
        assert self.store is not None
        try:
            write(self.store)
        except Exception as exc:
            self.log(f"launch record of {job_id} not written: {type(exc).__name__}: {exc}")
