"""The OCI Compute backend: each gang is N ``launch_instance`` calls through the official SDK (``oci``).

- **Pools.** The bundled catalog's OCI offers for the configured region and shapes: one pool per (shape,
  availability domain, purchase), with the catalog's ids, ``max_nodes`` as capacity and our live
  instances as use. The catalog has no OCI preemptible prices today, so in practice pools are on-demand;
  a spot pool (given offers with a spot price) launches with ``preemptible_instance_config`` (terminate).
- **Launch.** OCI has no MinCount: the backend launches rank 0..N-1 one by one in the pool's AD, and if
  any launch fails it terminates every rank it launched and raises (all or none). Each instance carries
  freeform tags (job, attempt, rank, pool, nodes, backend) and a cloud-init user-data that starts the
  node agent (``oci_agent``), which finds the head and runs the job.
- **The end of a job** is written on the instance by the agent (tag ``overcast-exit``) before it
  terminates its own instance. An instance gone without that tag was lost (see ``oci_gangs``).
- **Stop.** Tag the gang ``overcast-stop``; each agent reads its tags and sends the job SIGTERM. Wait
  up to the grace period for the nodes to end by themselves, then terminate the rest.
- **Crash safety.** What runs is read from OCI (``list_instances`` of the compartment, filtered by our
  tags), so a restarted loop reconciles. Only event acknowledgements are kept on local disk
  (``$OVERCAST_HOME/oci/<name>/acked.json``); losing it replays the last outcomes, which the loop
  ignores as stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from oci.core import models

from overcast.backends.base import (
    Allocation,
    BackendEvent,
    CapacityError,
    EventKind,
    LaunchRequest,
    ProviderDown,
)
from overcast.backends.local_runner import write_json_atomic
from overcast.backends.oci_client import (
    LAUNCH_RETRY,
    TAG,
    OciError,
    OciSettings,
    call,
    clients,
    list_instances,
    set_tags,
)
from overcast.backends.oci_gangs import Gang, group, rank_of
from overcast.backends.oci_userdata import user_data
from overcast.catalog.offer import Offer
from overcast.catalog.pools import offer_pools
from overcast.placement.pool import Health, Pool, Purchase
from overcast.store.engine import overcast_home

NO_AGENT = "the node agent never started (does the image have python3 and overcast? see the console)"
STOP_POLL_SECONDS = 0.2  # how often stop() looks whether the gang has ended within its grace period


class OciBackend:
    """Backend protocol for one OCI compartment + region (``oci:<name>``)."""

    def __init__(
        self,
        settings: OciSettings,
        *,
        home: Path | None = None,
        offers: list[Offer] | None = None,
        compute: Any = None,
        identity: Any = None,
    ) -> None:
        if settings.max_nodes < 1 or not settings.shapes:
            raise ValueError(f"oci {settings.name!r}: needs shapes and max_nodes >= 1")
        self.settings = settings
        self.name = f"oci:{settings.name}"
        if compute is None or identity is None:
            compute, identity = clients(settings)
        self.compute, self.identity = compute, identity
        if offers is None:
            from overcast.catalog.load import load_offers

            offers = load_offers()
        self._pools = {p.id: p for p in self._catalog_pools(offers)}
        self.dir = (home or overcast_home()) / "oci" / settings.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._unacked: list[tuple[str, str]] = []  # (what, gang key) delivered by the last poll
        self._ad_names: dict[str, str] | None = None

    # -- pools --------------------------------------------------------------------------------------

    def _catalog_pools(self, offers: list[Offer]) -> list[Pool]:
        s = self.settings
        mine = [
            o for o in offers if o.provider == "oci" and o.region == s.region and o.instance_type in s.shapes
        ]
        missing = sorted(set(s.shapes) - {o.instance_type for o in mine})
        if missing:
            raise ValueError(f"oci {s.name!r}: no catalog offer for {', '.join(missing)} in {s.region}")
        pools = [p for p in offer_pools(mine) if p.purchase.value in s.purchases]
        for pool in pools:
            pool.capacity_nodes = s.max_nodes
            pool.backend = self.name
            pool.labels = {"oci": "true"}
        return pools

    def pools(self) -> list[Pool]:
        try:
            used: dict[str, int] = {}
            for gang in self._gangs():
                used[gang.pool_id] = used.get(gang.pool_id, 0) + len(gang.live)
            ads = self._ads()
            health = Health.OK
        except ProviderDown:
            used, ads, health = {}, {}, Health.DOWN
        cap = self.settings.max_nodes
        return [
            dataclasses.replace(
                p, used_nodes=min(used.get(p.id, 0), cap), health=health, labels=dict(p.labels)
            )
            for p in self._pools.values()
            if health is Health.DOWN or (p.zone or "").upper() in ads  # ADs this tenancy has
        ]

    def _ads(self) -> dict[str, str]:
        """Catalog AD name (US-ASHBURN-AD-1) -> the tenancy's AD name (Uocm:US-ASHBURN-AD-1): OCI prefixes
        AD names per tenancy, and launch_instance wants the prefixed one."""
        if self._ad_names is None:
            found = call(self.identity, "list_availability_domains", self.settings.compartment_id).data
            self._ad_names = {ad.name.split(":")[-1].upper(): ad.name for ad in found}
        return self._ad_names

    # -- launch -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Allocation:
        pool = self._pools.get(request.pool.id)
        if pool is None:
            raise ValueError(f"pool {request.pool.id} does not belong to backend {self.name}")
        with self._lock:
            existing = self._gang(request.job_id, request.attempt)
            live = existing.live if existing is not None else []
            have = {rank_of(i) for i in live}
            if len(have) == request.num_nodes:  # the same attempt again: launching is idempotent
                return self._allocation(live, request)
            ad = self._ads().get((pool.zone or "").upper())
            if ad is None:
                raise CapacityError(f"{pool.zone} is not available to this tenancy in {self.settings.region}")
            launched: list[str] = []
            try:
                for rank in range(request.num_nodes):
                    if rank in have:  # a replayed launch that had started some ranks: keep them
                        continue
                    details = self._details(request, pool, ad, rank)
                    token = _retry_token(self.settings.owner, request.job_id, request.attempt, rank)
                    reply = call(
                        self.compute, "launch_instance", details, opc_retry_token=token,
                        retry_strategy=LAUNCH_RETRY,
                    )  # fmt: skip
                    launched.append(reply.data.id)
            except Exception:  # OCI has no all-or-nothing launch: roll back every rank of this gang
                self._silence(request.job_id, request.attempt)  # the loop has the error: no events
                for iid in launched + [i.id for i in live]:
                    self._terminate(iid)
                raise
            return self._allocation([*live, *launched], request)

    def _details(self, request: LaunchRequest, pool: Pool, ad: str, rank: int) -> Any:
        s = self.settings
        tags = {
            TAG + "backend": s.owner,
            TAG + "job": request.job_id,
            TAG + "attempt": str(request.attempt),
            TAG + "rank": str(rank),
            TAG + "pool": pool.id,
            TAG + "nodes": str(request.num_nodes),
        }
        metadata = {"user_data": user_data(s, request)}
        if s.ssh_authorized_keys:
            metadata["ssh_authorized_keys"] = s.ssh_authorized_keys
        preemptible = None
        if pool.purchase is Purchase.SPOT:
            action = models.TerminatePreemptionAction(type="TERMINATE", preserve_boot_volume=False)
            preemptible = models.PreemptibleInstanceConfigDetails(preemption_action=action)
        return models.LaunchInstanceDetails(
            availability_domain=ad,
            compartment_id=s.compartment_id,
            shape=pool.instance_type,
            display_name=f"overcast-{request.job_id}-{request.attempt}-{rank}",
            freeform_tags=tags,
            metadata=metadata,
            source_details=models.InstanceSourceViaImageDetails(image_id=s.image_id),
            create_vnic_details=models.CreateVnicDetails(subnet_id=s.subnet_id, assign_public_ip=False),
            preemptible_instance_config=preemptible,
        )

    def _terminate(self, instance_id: str) -> None:
        # gone already (404) or the API failing: what is left is found by tag at the next poll / stop
        with contextlib.suppress(OciError, ProviderDown):
            call(self.compute, "terminate_instance", instance_id, preserve_boot_volume=False)

    # -- stop, poll, active -------------------------------------------------------------------------

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        """Ask the agents to SIGTERM the job (tag ``overcast-stop``), wait up to the grace period for the
        nodes to end and terminate themselves, then terminate what is left."""
        self._silence(job_id, attempt)
        gang = self._gang(job_id, attempt)
        if gang is None or not gang.live:
            return
        if grace_seconds > 0:
            for inst in gang.live:
                with contextlib.suppress(OciError):  # it may be terminating already
                    set_tags(self.compute, inst.id, {TAG + "stop": "1"})
            deadline = time.monotonic() + grace_seconds
            while time.monotonic() < deadline:
                time.sleep(STOP_POLL_SECONDS)
                gang = self._gang(job_id, attempt)
                if gang is None or not gang.live:
                    return
        for inst in gang.live:
            self._terminate(inst.id)

    def poll(self) -> list[BackendEvent]:
        with self._lock:
            state = self._state()
            for what, key in self._unacked:  # the loop handled last poll's events: acknowledge them
                if key not in state[what]:
                    state[what].append(key)
            self._unacked = []
            gangs = self._gangs()
            events: list[BackendEvent] = []
            now = time.time()
            for gang in gangs:
                if gang.key in state["stopped"] or gang.key in state["reported"] or gang.stop_requested:
                    continue
                event = gang.terminal_event(now)
                if event is not None:
                    events.append(event)
                    self._unacked.append(("reported", gang.key))
                elif gang.all_running() and gang.key not in state["started"]:
                    events.append(BackendEvent(EventKind.STARTED, gang.job_id, gang.attempt, now))
                    self._unacked.append(("started", gang.key))
                elif self._agent_missing(gang, now):
                    events.append(BackendEvent(EventKind.FAILED, gang.job_id, gang.attempt, now, NO_AGENT))
                    self._unacked.append(("reported", gang.key))
            visible = {gang.key for gang in gangs}  # OCI stops listing terminated instances after a while
            for what in state:
                state[what] = [key for key in state[what] if key in visible]
            self._save(state)
            return events

    def active(self) -> list[tuple[str, int]]:
        """Gangs with a live instance, and ended ones whose outcome has not been delivered yet."""
        with self._lock:
            state = self._state()
            done = set(state["stopped"]) | set(state["reported"])
            return [
                (gang.job_id, gang.attempt)
                for gang in self._gangs()
                if gang.live or not (gang.key in done or gang.stop_requested)
            ]

    def redeliver(self) -> None:
        """The caller could not handle the last poll's events: the next poll reports them again."""
        with self._lock:
            self._unacked = []

    # -- internals ----------------------------------------------------------------------------------

    def _gangs(self) -> list[Gang]:
        """Our gangs: ListInstances has no tag filter, so list the compartment (every page) and keep the
        instances whose ``overcast-backend`` tag is ours."""
        return group(list_instances(self.compute, self.settings.compartment_id), self.settings.owner)

    def _gang(self, job_id: str, attempt: int) -> Gang | None:
        return next((g for g in self._gangs() if (g.job_id, g.attempt) == (job_id, attempt)), None)

    def _silence(self, job_id: str, attempt: int) -> None:
        """No events for this gang any more (stopped by the loop, or rolled back at launch)."""
        with self._lock:  # only the state file: polls and other stops go on while a stop waits
            state = self._state()
            key = f"{job_id}--{attempt}"
            if key not in state["stopped"]:
                state["stopped"].append(key)
                self._save(state)

    def _agent_missing(self, gang: Gang, now: float) -> bool:
        since = gang.agent_missing_since()
        return since is not None and now - since > self.settings.agent_timeout_seconds

    def _allocation(self, instances: list[Any], request: LaunchRequest) -> Allocation:
        ids = [i if isinstance(i, str) else i.id for i in instances]
        return Allocation(request.job_id, request.attempt, self.name, handle=",".join(ids))

    def _state(self) -> dict[str, list[str]]:
        try:
            found = json.loads((self.dir / "acked.json").read_text())
        except (OSError, ValueError):
            found = {}
        return {what: list(found.get(what, [])) for what in ("started", "reported", "stopped")}

    def _save(self, state: dict[str, list[str]]) -> None:
        write_json_atomic(self.dir / "acked.json", state)


def _retry_token(backend: str, job_id: str, attempt: int, rank: int) -> str:
    """OCI's idempotency key (at most 64 characters), unique per (backend, job, attempt, rank)."""
    return hashlib.sha256(f"{backend}/{job_id}/{attempt}/{rank}".encode()).hexdigest()[:64]
