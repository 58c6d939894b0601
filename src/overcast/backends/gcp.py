"""The GCP Compute Engine backend: each gang is one ``instances.bulkInsert`` through the official SDK
(``google-cloud-compute``, REST transport).

- **Pools.** The bundled catalog's GCP offers for the configured region, zones and machine types: one
  pool per (machine type, zone, on-demand | spot), with ``max_nodes`` as capacity and our live instances
  as use. Spot is ``provisioningModel: SPOT`` with ``instanceTerminationAction: DELETE``.
- **Launch.** bulkInsert with ``minCount = count`` is all or nothing on GCP's side: it creates every
  instance of the gang in the pool's zone or none. A gang of N > 1 first gets a compact placement policy
  (``groupPlacementPolicy.collocation: COLLOCATED``) that its instances name. If the operation fails
  (a stockout, a quota) or cannot be waited for, whatever exists of the gang is deleted before the error
  is raised. The startup-script metadata starts the node agent (``gcp_agent``).
- **The end of a job** is written on the instance by the agent (label ``overcast-exit``), which then
  stops its instance; the backend deletes the gang once it has delivered the outcome. An instance gone or
  stopped without that label was lost (see ``gcp_gangs``).
- **Stop.** Label the gang ``overcast-stop``; each agent reads its labels and sends the job SIGTERM.
  Wait up to the grace period for the nodes to end, then delete the instances.
- **Crash safety.** What runs is read from Compute (``instances.list`` per zone, filtered by our label).
  Local state (``$OVERCAST_HOME/gcp/<name>/acked.json``): the acknowledged events and the gangs launched,
  because Compute forgets a deleted instance at once and a gang preempted whole must still be reported;
  and each launch's bulkInsert operation (``inflight``: zone, operation name) until it is seen DONE: a
  gang with no instance listed whose operation still runs (the loop restarted, or gave up waiting) is
  neither lost nor forgotten, as its instances may yet appear.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

from overcast.backends.base import Allocation, LaunchRequest, ProviderDown
from overcast.backends.cloud_backend import CloudBackend
from overcast.backends.cloud_gangs import gang_key, split_key
from overcast.backends.gcp_client import (
    GcpError,
    GcpSettings,
    call,
    clients,
    guarded,
    is_done,
    label_value,
    op_failure,
    read_retry,
    set_labels,
    wait,
    wait_done,
)
from overcast.backends.gcp_gangs import TAG, Gang, gang_name, group, instance_name, rank_of
from overcast.backends.gcp_spec import bulk_body, policy_body
from overcast.catalog.offer import Offer

NO_AGENT = "the node agent never started (does the image have python3 and overcast? see the serial console)"


class GcpBackend(CloudBackend):
    """Backend protocol for one GCP project + region (``gcp:<name>``)."""

    provider = "gcp"
    no_agent = NO_AGENT

    def __init__(
        self,
        settings: GcpSettings,
        *,
        home: Path | None = None,
        offers: list[Offer] | None = None,
        credentials: Any = None,
        api: dict[str, Any] | None = None,
    ) -> None:
        if settings.max_nodes < 1 or not settings.machine_types:
            raise ValueError(f"gcp {settings.name!r}: needs machine_types and max_nodes >= 1")
        if any(t.startswith("tpu-") for t in settings.machine_types):
            raise ValueError(f"gcp {settings.name!r}: TPUs are not Compute Engine instances (TPU VM API)")
        self._api, self._credentials = api, credentials
        self._setup(settings, settings.machine_types, home, offers)

    @property
    def api(self) -> dict[str, Any]:
        """The SDK clients, made at first use: without usable credentials (no Application Default
        Credentials here) that use raises ProviderDown, so the pools are DOWN, not the loop's start."""
        if self._api is None:
            self._api = clients(self.settings, self._credentials)
        return self._api

    def _placed(self, offers: list[Offer]) -> list[Offer]:
        zones = self.settings.zones
        return [o for o in offers if not zones or o.zone in zones]

    def _zones(self) -> list[str]:
        return sorted({p.zone for p in self._pools.values() if p.zone})

    # -- launch -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Allocation:
        pool = self._own_pool(request)
        zone, key = str(pool.zone), gang_key(request.job_id, request.attempt)
        with self._lock:
            existing = self._gang(request.job_id, request.attempt)
            if existing is not None and existing.instances:  # a replayed apply: bulkInsert is all or none
                return self._allocation(existing.instances, request)
            state = self._state()
            state["launched"][key] = request.num_nodes  # before any call: a crash mid-launch is tracked
            state["inflight"][key] = {"zone": zone, "since": time.time()}
            self._save(state)
            try:
                policy = self._create_policy(request) if request.num_nodes > 1 else None
                body = bulk_body(self.settings, request, pool, policy)
                request_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.settings.owner}/{key}/bulk"))
                op = call(
                    "bulk insert", self.api["instances"].bulk_insert_unary, project=self.settings.project,
                    zone=zone, bulk_insert_instance_resource_resource=body, request_id=request_id,
                )  # fmt: skip
                self._note_operation(key, op.name)
                op = wait_done("bulk insert", self.api["zone_ops"], op, self._where(zone),
                               self.settings.operation_timeout_seconds)  # fmt: skip
                self._note_operation(key, None)  # DONE: it creates nothing more
                failure = op_failure("bulk insert", op)
                if failure is not None:
                    raise failure
            except Exception:  # GCP rolls a failed bulkInsert back; this covers a lost or timed-out one
                self._roll_back(request, zone)
                raise
            names = [instance_name(self.settings.owner, request.job_id, request.attempt, r)
                     for r in range(request.num_nodes)]  # fmt: skip
            return Allocation(request.job_id, request.attempt, self.name, handle=",".join(names))

    def _create_policy(self, request: LaunchRequest) -> str:
        body = policy_body(self.settings, request)
        where = {"project": self.settings.project, "region": self.settings.region}
        try:
            op = call("create placement policy", self.api["policies"].insert_unary, **where,
                      resource_policy_resource=body)  # fmt: skip
            wait("create placement policy", self.api["region_ops"], op, where, 60.0)
        except GcpError as exc:
            if exc.status != 409 and exc.code not in ("alreadyExists", "RESOURCE_ALREADY_EXISTS"):
                raise  # a replayed launch finds its policy made: use it
        return str(body["name"])

    def _note_operation(self, key: str, op_name: str | None) -> None:
        """Record the launch's bulkInsert operation (None: it is DONE, forget it)."""
        with self._lock:
            state = self._state()
            if op_name is None:
                state["inflight"].pop(key, None)
            elif key in state["inflight"]:
                state["inflight"][key]["op"] = op_name
            self._save(state)

    def _roll_back(self, request: LaunchRequest, zone: str) -> None:
        """Delete whatever exists of a failed launch; the placement policy and any survivor go at the
        poll's clean-up (the gang is marked stopped: no events). An operation not seen DONE stays in
        ``inflight``: what it creates later is deleted by the clean-up, not left running untracked."""
        self._silence(request.job_id, request.attempt)
        for rank in range(request.num_nodes):
            name = instance_name(self.settings.owner, request.job_id, request.attempt, rank)
            with contextlib.suppress(Exception):  # 404: never created, the usual case
                self._delete(zone, name)

    # -- stop, poll, active -------------------------------------------------------------------------

    # stop() labels the gang ``overcast-stop``: each agent reads its labels and SIGTERMs the job; at the
    # end of the grace period the gang's instances are deleted.

    def _ask_stop(self, gang: Gang) -> None:
        for inst in gang.live:
            with contextlib.suppress(GcpError):  # gone since the list: nothing to ask
                set_labels(self.api["instances"], self.settings.project, _zone(inst), inst.name,
                           {TAG + "stop": "1"})  # fmt: skip

    def _end(self, gang: Gang) -> None:
        for inst in gang.instances:
            self._delete(_zone(inst), inst.name)

    def _clean_up(self, gang: Gang, state: dict[str, Any]) -> None:
        """Delete the instances that ended (all of a stopped gang), then forget a gang with none left,
        once its placement policy is deleted: the agents only stop their instances, so their exit labels
        outlive the job until the outcome is delivered."""
        if gang.pending:  # its bulkInsert may still create instances: keep the key until it is DONE
            return
        live = {i.name for i in gang.live} if gang.key not in state["stopped"] else set()
        try:
            for inst in gang.instances:
                if inst.name not in live:
                    self._delete(_zone(inst), inst.name)
        except ProviderDown:  # must not escape the poll (the events computed before it): next poll
            return
        if not gang.instances and gang.key in state["launched"]:
            if gang.nodes > 1:
                name = gang_name(self.settings.owner, *split_key(gang.key))
                try:
                    call("delete placement policy", self.api["policies"].delete_unary,
                         project=self.settings.project, region=self.settings.region,
                         resource_policy=name)  # fmt: skip
                except GcpError:  # 404: deleted already (or never made)
                    pass
                except ProviderDown:  # must not escape the poll (the events before it): next poll
                    return
            state["launched"].pop(gang.key, None)
            state["inflight"].pop(gang.key, None)

    # -- internals ----------------------------------------------------------------------------------

    def _gangs(self, state: dict[str, Any] | None = None) -> list[Gang]:
        state = state or self._state()
        gangs = group(self._list(), self.settings.owner, state["launched"])
        for gang in gangs:
            if not gang.instances and gang.key in state["inflight"]:
                gang.pending = self._in_flight(state["inflight"], gang.key)
        return gangs

    def _in_flight(self, inflight: dict[str, Any], key: str) -> bool:
        """Whether a launched gang with no instance listed may still get them from its bulkInsert. An
        operation seen DONE is forgotten, but the gang waits one more poll: the listing was made before."""
        record = inflight[key]
        if "op" not in record:  # the loop died inside the bulkInsert call: give it the launch's deadline
            if time.time() - float(record.get("since", 0)) < self.settings.operation_timeout_seconds:
                return True
            inflight.pop(key)
            return False
        try:
            op = call("get operation", self.api["zone_ops"].get, **self._where(record["zone"]),
                      operation=record["op"], retry=read_retry())  # fmt: skip
            done = is_done(op)
        except GcpError as exc:
            if exc.status != 404:
                raise
            done = True  # GCP no longer keeps it: long done
        if done:
            inflight.pop(key)
        return True

    def _gang(self, job_id: str, attempt: int) -> Gang | None:
        found = group(self._list(), self.settings.owner)
        return next((g for g in found if (g.job_id, g.attempt) == (job_id, attempt)), None)

    def _list(self) -> list[Any]:
        """Our instances in every zone of our pools (server-side filter on the backend label; every
        page: the pager follows ``nextPageToken``)."""
        wanted = f'labels.{TAG}backend = "{label_value(self.settings.owner)}"'
        found: list[Any] = []
        for zone in self._zones():
            pages = call("list instances", self.api["instances"].list, project=self.settings.project,
                         zone=zone, filter=wanted, max_results=100, retry=read_retry())  # fmt: skip
            found += guarded("list instances", list, pages)  # the next pages are fetched here
        return found

    def _delete(self, zone: str, name: str) -> None:
        """Delete without waiting: Compute carries on and a later poll no longer lists it."""
        with contextlib.suppress(GcpError):  # 404: gone already
            call("delete instance", self.api["instances"].delete_unary, project=self.settings.project,
                 zone=zone, instance=name)  # fmt: skip

    def _where(self, zone: str) -> dict[str, str]:
        return {"project": self.settings.project, "zone": zone}

    def _allocation(self, instances: list[Any], request: LaunchRequest) -> Allocation:
        names = ",".join(i.name for i in sorted(instances, key=rank_of))
        return Allocation(request.job_id, request.attempt, self.name, handle=names)

    def _more_state(self, found: dict[str, Any]) -> dict[str, Any]:
        """The gangs launched (key -> nodes): Compute forgets a deleted instance at once, so a gang
        preempted whole is known only from here."""
        return {"launched": dict(found.get("launched", {})), "inflight": dict(found.get("inflight", {}))}


def _zone(instance: Any) -> str:
    return str(instance.zone).rsplit("/", 1)[-1]
