"""The Nebius AI Cloud backend: each gang is N instances in one project (one region) through the official
SDK (``nebius``, gRPC: ``nebius_client``), in a GPU cluster of its own (InfiniBand) when N > 1.

- **Pools.** The bundled catalog's Nebius offers (``<platform>_<preset>``) for the configured region and
  instance types: one pool per (type, on-demand | spot), ``max_nodes`` as capacity and our live
  instances as use. Spot is ``preemptible: {on_preemption: STOP}``.
- **Launch.** The gang's local record first (``launched``: a crash mid-launch is still tracked), then for
  N > 1 (and an ``infiniband_fabric``) the GPU cluster ``oc-<hash>``, then rank 0..N-1 one by one, each
  Create waited for. Nebius has no all-or-nothing create: if any step fails (RESOURCE_EXHAUSTED "not
  enough resources", a quota, an outage), every instance of the gang is deleted before the error is
  raised, and the GPU cluster goes once its instances are gone (the poll's clean-up). Names are fixed by
  (backend, job, attempt, rank), so a replayed launch creates only the ranks that do not run.
- **The end of a job** is labelled on the instance by its agent (``overcast-exit``), which then stops its
  instance (stop, not delete: the label must outlive the job). The backend deletes the gang's instances
  once it has delivered the outcome, then the GPU cluster. An instance stopped without that label (a
  preemption) or no longer listed was lost (see ``nebius_gangs``).
- **Stop.** Label the gang ``overcast-stop``; each agent reads its instance and sends the job SIGTERM.
  Wait up to the grace period for the nodes to end, then delete the instances.
- **Crash safety.** What runs is read from Nebius (the project's instances, filtered by our labels).
  Local state (``$OVERCAST_HOME/nebius/<name>/acked.json``): the acknowledged events and the gangs
  launched (Nebius forgets a deleted instance: a gang deleted whole must still be reported, and its GPU
  cluster deleted). A GPU cluster whose gang that state lost is found by its labels and deleted.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from overcast.backends.base import Allocation, BackendEvent, LaunchRequest, ProviderDown
from overcast.backends.cloud_backend import CloudBackend
from overcast.backends.cloud_gangs import gang_key, split_key
from overcast.backends.nebius_client import TAG, NebiusApi, NebiusError, NebiusSettings, label_value
from overcast.backends.nebius_gangs import Gang, gang_name, group, rank_of
from overcast.backends.nebius_userdata import create_request
from overcast.catalog.offer import Offer

NO_AGENT = "the node agent never started (does the image have python3 and overcast? see the serial console)"


class NebiusBackend(CloudBackend):
    """Backend protocol for one Nebius project (``nebius:<name>``)."""

    provider = "nebius"
    no_agent = NO_AGENT

    def __init__(
        self,
        settings: NebiusSettings,
        *,
        home: Path | None = None,
        offers: list[Offer] | None = None,
        credentials: Any = None,
        api: NebiusApi | None = None,
    ) -> None:
        if settings.max_nodes < 1 or not settings.instance_types or not settings.subnet_id:
            raise ValueError(f"nebius {settings.name!r}: needs instance_types, subnet_id and max_nodes >= 1")
        self._api, self._credentials = api, credentials
        self._listed: set[str] = set()  # the keys of the gangs the latest poll listed instances of
        self._sweep_due = True  # a GPU cluster may be left without its gang (at start: a lost acked.json)
        self._setup(settings, settings.instance_types, home, offers)

    @property
    def api(self) -> NebiusApi:
        """The SDK client, made at first use: without credentials that use raises ProviderDown, so the
        pools are DOWN, not the loop's start."""
        if self._api is None:
            self._api = NebiusApi(self.settings, self._credentials)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    # -- launch -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Allocation:
        pool = self._own_pool(request)
        s, key = self.settings, gang_key(request.job_id, request.attempt)
        with self._lock:
            existing = self._gang(request.job_id, request.attempt)
            live = existing.live if existing is not None else []
            have = {rank_of(i) for i in live}
            if len(have) == request.num_nodes:  # the same attempt again: launching is idempotent
                return self._allocation(live, request)
            state = self._state()
            state["launched"][key] = request.num_nodes  # before any call: a crash mid-launch is tracked
            self._save(state)
            try:
                cluster = ""
                if request.num_nodes > 1 and s.infiniband_fabric:
                    labels = {TAG + "backend": label_value(s.owner), TAG + "job": request.job_id,
                              TAG + "attempt": str(request.attempt)}  # fmt: skip
                    cluster = self.api.create_cluster(
                        gang_name(s.owner, request.job_id, request.attempt), labels
                    )
                for rank in range(request.num_nodes):
                    if rank not in have:  # a replayed launch that had created some ranks: keep them
                        self.api.create(create_request(s, request, pool, rank, cluster))
            except Exception:
                self._roll_back(request)
                raise
            found = self._gang(request.job_id, request.attempt)
            return self._allocation(found.instances if found else [], request)

    def _roll_back(self, request: LaunchRequest) -> None:
        """Delete whatever exists of a failed launch. The gang is marked stopped (no events); its GPU
        cluster goes at the poll's clean-up, once Nebius has let go of the instances."""
        self._silence(request.job_id, request.attempt)
        with contextlib.suppress(NebiusError, ProviderDown):  # what is left is found by label later
            gang = self._gang(request.job_id, request.attempt)
            for inst in gang.instances if gang else []:
                self._delete(inst)

    # -- stop, poll, active -------------------------------------------------------------------------

    def _poll(self, ended: list[tuple[str, int]]) -> list[BackendEvent]:
        """The shared poll (under the lock), then the cluster sweep, still under it; the ended attempts'
        logs are copied by poll() after the lock is released."""
        events = super()._poll(ended)
        if self._sweep_due:
            self._sweep_clusters()
        return events

    def _sweep_clusters(self) -> None:
        """Delete our GPU clusters (by their labels) whose gang is not in ``launched`` (the clean-up's
        charge) and has no instance left: a lost ``acked.json`` would leave them otherwise. The listing
        goes on each poll while such a cluster exists (its instances still leaving it), then stops.
        Under the lock, as launch() is: no launch is between creating its cluster and its first rank."""
        launched = self._state()["launched"]
        left = False
        with contextlib.suppress(NebiusError, ProviderDown):  # the next poll tries again
            for cluster in self.api.list_clusters():
                labels = dict(cluster.metadata.labels)
                if labels.get(TAG + "backend") != label_value(self.settings.owner):
                    continue
                attempt = labels.get(TAG + "attempt", "")
                key = gang_key(labels.get(TAG + "job", ""), int(attempt) if attempt.isdigit() else -1)
                if key in launched:
                    continue
                busy = key in self._listed
                if not busy:
                    try:
                        self.api.delete_cluster(cluster.metadata.name)
                    except NebiusError:  # an instance still leaving it: the next poll tries again
                        busy = True
                left = left or busy
            self._sweep_due = left

    # stop() labels the gang ``overcast-stop``: each agent reads its instance and SIGTERMs the job; at the
    # end of the grace period the gang's instances are deleted.

    def _ask_stop(self, gang: Gang) -> None:
        for inst in gang.live:
            with contextlib.suppress(NebiusError):  # gone since the list: nothing to ask
                self.api.set_labels(inst.metadata.id, {TAG + "stop": "1"})

    def _end(self, gang: Gang) -> None:
        for inst in gang.instances:
            self._delete(inst)

    def _clean_up(self, gang: Gang, state: dict[str, Any]) -> None:
        """Delete the instances that ended (all of a stopped gang), then, once none is listed, the GPU
        cluster, and forget the gang: the agents only stop their instances, so their exit labels outlive
        the job until the outcome is delivered."""
        live = {i.metadata.id for i in gang.live} if gang.key not in state["stopped"] else set()
        for inst in gang.instances:
            if inst.metadata.id not in live:
                self._delete(inst)
        if not gang.instances and gang.key in state["launched"]:
            if gang.nodes > 1:
                try:
                    self.api.delete_cluster(gang_name(self.settings.owner, *split_key(gang.key)))
                except (NebiusError, ProviderDown):  # an instance still leaving it, an outage: next poll
                    return
            state["launched"].pop(gang.key, None)

    # -- internals ----------------------------------------------------------------------------------

    def _gangs(self, state: dict[str, Any] | None = None) -> list[Gang]:
        state = state or self._state()
        gangs = group(self.api.list_instances(), self.settings.owner, self.settings.region, state["launched"])
        self._listed = {g.key for g in gangs if g.instances}
        return gangs

    def _gang(self, job_id: str, attempt: int) -> Gang | None:
        found = group(self.api.list_instances(), self.settings.owner, self.settings.region)
        return next((g for g in found if (g.job_id, g.attempt) == (job_id, attempt)), None)

    def _delete(self, instance: Any) -> None:
        """Delete without waiting (a later listing no longer shows it); one already going is left."""
        from overcast.backends.nebius_client import state_of

        if state_of(instance) != "DELETING":
            # NOT_FOUND: gone already; an outage must not escape the poll (it would lose the events
            # computed before this clean-up): the next poll tries again
            with contextlib.suppress(NebiusError, ProviderDown):
                self.api.delete(instance.metadata.id)

    def _allocation(self, instances: list[Any], request: LaunchRequest) -> Allocation:
        names = ",".join(i.metadata.name for i in sorted(instances, key=rank_of))
        return Allocation(request.job_id, request.attempt, self.name, handle=names)

    def _more_state(self, found: dict[str, Any]) -> dict[str, Any]:
        """The gangs launched (key -> nodes): Nebius forgets a deleted instance."""
        return {"launched": dict(found.get("launched", {}))}
