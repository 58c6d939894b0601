"""The Lambda Cloud backend: each gang is N launch requests (one instance each) through Lambda's public
REST API v1 (``lambda_client``; Lambda has no official Python SDK).

- **Pools.** The bundled catalog's Lambda offers for the configured region and instance types: one
  on-demand pool per type (Lambda has no spot and no zones), ``max_nodes`` as capacity and our live
  instances as use.
- **Launch.** Before launching, ``/instance-types`` must list the region as having capacity for the
  type (else CapacityError at once, nothing launched). Then rank 0..N-1 one by one (each request names
  its rank in its tags and carries its own user-data); if any fails, every rank launched is terminated
  and the error raised (all or none). No placement group or fast interconnect exists: the gang's
  instances share a region only.
- **The end of a job** is tagged on the instance by its agent (``overcast-exit``). An instance gone
  without that tag was lost (see ``lambda_gangs``). Ended instances are terminated by the poll that
  follows the loop's acknowledgement (their agents wait for it, up to ``agent_linger_seconds``).
- **Stop.** Rename the gang's instances ``overcast-stop-...``; each agent reads its instance and sends
  the job SIGTERM. Wait up to the grace period for the nodes to end, then terminate the rest.
- **Crash safety.** What runs is read from Lambda (``/instances``, filtered by our tags), so a restarted
  loop reconciles. Only event acknowledgements and the exits already read (a rank that ended early may
  be gone from Lambda's listing before its gang ends) are kept on local disk
  (``$OVERCAST_HOME/lambda/<name>/acked.json``).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

from overcast.backends.base import Allocation, CapacityError, LaunchRequest, ProviderDown
from overcast.backends.cloud_backend import CloudBackend
from overcast.backends.lambda_client import STOP_NAME, TAG, LambdaApi, LambdaError, LambdaSettings, tag_list
from overcast.backends.lambda_gangs import Gang, group, rank_of, remember_exits
from overcast.backends.lambda_userdata import user_data
from overcast.catalog.offer import Offer
from overcast.placement.pool import Pool

NO_AGENT = "the node agent never started (does the image have python3 and overcast? see the console)"
NAME_LIMIT = 64  # characters in an instance name


class LambdaBackend(CloudBackend):
    """Backend protocol for one Lambda Cloud account + region (``lambda:<name>``)."""

    provider = "lambda"
    no_agent = NO_AGENT

    def __init__(
        self,
        settings: LambdaSettings,
        *,
        home: Path | None = None,
        offers: list[Offer] | None = None,
        api: LambdaApi | None = None,
    ) -> None:
        if settings.max_nodes < 1 or not settings.instance_types or not settings.ssh_key_name:
            raise ValueError(
                f"lambda {settings.name!r}: needs instance_types, ssh_key_name and max_nodes >= 1"
            )
        self.api = api or LambdaApi(settings)
        self._setup(settings, settings.instance_types, home, offers)

    # -- launch -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Allocation:
        pool = self._own_pool(request)
        with self._lock:
            existing = self._gang(request.job_id, request.attempt)
            live = existing.live if existing is not None else []
            have = {rank_of(i) for i in live}
            if len(have) == request.num_nodes:  # the same attempt again: launching is idempotent
                return self._allocation(live, request)
            launched: list[str] = []
            try:
                self._check_capacity(pool)
                key = self.settings.api_key()
                for rank in range(request.num_nodes):
                    if rank in have:  # a replayed launch that had started some ranks: keep them
                        continue
                    launched += self.api.launch(self._body(request, pool, rank, key))
            except Exception as exc:  # Lambda has no all-or-nothing launch: roll back every rank
                self._silence(request.job_id, request.attempt)  # the loop has the error: no events
                ids = launched + [str(i["id"]) for i in live]
                self._terminate(self._rollback_ids(request, exc, ids, (LambdaError,), lambda i: str(i["id"])))
                raise
            return self._allocation([*live, *launched], request)

    def _check_capacity(self, pool: Pool) -> None:
        """CapacityError when Lambda does not list the pool's region as having capacity for its type: a
        gang that cannot start is refused before a launch is spent (launches are rate-limited)."""
        offered = self.api.instance_types().get(pool.instance_type)
        if offered is None:
            raise CapacityError(f"Lambda does not offer {pool.instance_type} to this account")
        regions = {r.get("name") for r in offered.get("regions_with_capacity_available") or []}
        if self.settings.region not in regions:
            raise CapacityError(f"no {pool.instance_type} capacity in {self.settings.region} (Lambda's list)")

    def _body(self, request: LaunchRequest, pool: Pool, rank: int, key: str) -> dict[str, Any]:
        s = self.settings
        nonce = uuid.uuid4().hex[:16]  # the agent finds its instance by it (Lambda has no metadata service)
        tags = {
            TAG + "backend": s.owner,
            TAG + "job": request.job_id,
            TAG + "attempt": str(request.attempt),
            TAG + "rank": str(rank),
            TAG + "pool": pool.id,
            TAG + "nodes": str(request.num_nodes),
            TAG + "launch": nonce,
            TAG + "launched": str(int(time.time())),
        }
        return {
            "region_name": s.region,
            "instance_type_name": pool.instance_type,
            "ssh_key_names": [s.ssh_key_name],
            "file_system_names": list(s.file_system_names),
            "quantity": 1,
            "name": f"overcast-{request.job_id}-{request.attempt}-{rank}"[:NAME_LIMIT],
            "user_data": user_data(s, request, key, nonce),
            "tags": tag_list(tags),
        }

    def _terminate(self, ids: list[str]) -> None:
        """Terminate in one request; if Lambda refuses it (one of them already gone), one by one. Errors
        are left: what is left is found by tag at the next poll or stop."""
        try:
            self.api.terminate(ids)
        except LambdaError:
            for iid in ids:
                with contextlib.suppress(LambdaError, ProviderDown):
                    self.api.terminate([iid])
        except ProviderDown:
            pass

    # -- stop, poll, active -------------------------------------------------------------------------

    # stop() renames the gang's instances ``overcast-stop-...``: each agent reads its instance and SIGTERMs
    # the job; at the end of the grace period what is left is terminated.

    def _ask_stop(self, gang: Gang) -> None:
        for inst in gang.live:
            name = f"{STOP_NAME}-{gang.job_id}-{gang.attempt}-{rank_of(inst)}"[:NAME_LIMIT]
            with contextlib.suppress(LambdaError):  # it may be terminating already
                self.api.rename(str(inst["id"]), name)

    def _end(self, gang: Gang) -> None:
        self._terminate([str(i["id"]) for i in gang.live])

    def _clean_up(self, gang: Gang, state: dict[str, Any]) -> None:
        """A gang that gets no more events: terminate its live instances (ended nodes whose agents wait
        for this, what a stop left), unless a stop() is still within its grace period."""
        if gang.key not in state["stopping"] and gang.live:
            self._terminate([str(i["id"]) for i in gang.live])

    # -- internals ----------------------------------------------------------------------------------

    def _gangs(self, state: dict[str, Any] | None = None) -> list[Gang]:
        """Our gangs: the listing has no tag filter, so list every instance and keep ours. With the poll's
        ``state``, each rank's exit is recorded there the first time it is seen: its instance may be
        forgotten by Lambda while other ranks still run, and must not then count as lost."""
        gangs = group(self.api.list_instances(), self.settings.owner)
        if state is not None:
            state["exits"] = remember_exits(gangs, state["exits"])
        return gangs

    def _more_state(self, found: dict[str, Any]) -> dict[str, Any]:
        exits = found.get("exits")
        return {"exits": exits if isinstance(exits, dict) else {}}

    def _gang(self, job_id: str, attempt: int) -> Gang | None:
        return next((g for g in self._gangs() if (g.job_id, g.attempt) == (job_id, attempt)), None)

    def _allocation(self, instances: list[Any], request: LaunchRequest) -> Allocation:
        ids = [i if isinstance(i, str) else str(i["id"]) for i in instances]
        return Allocation(request.job_id, request.attempt, self.name, handle=",".join(ids))
