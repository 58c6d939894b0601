"""The Azure backend: each gang is N VMs created through the official SDK (azure-mgmt-compute).

- **Pools.** The bundled catalog's Azure offers for the configured region and VM sizes: one pool per
  (size, zone, on-demand | spot), or per (size, region) when no zones are configured, with ``max_nodes``
  as capacity and our VMs as use. Spot is ``priority: Spot`` with eviction policy Delete.
- **Launch.** ARM has no all-or-nothing create (no MinCount): the N VMs are created in parallel, all in
  the pool's zone, and if any fails every one is deleted before the error is raised. VM names derive
  from (backend, job, attempt, rank), so a retried PUT (ARM's PUT is idempotent by name) creates no
  second VM. The custom data starts the node agent (``azure_agent``).
- **The end of a job** is written on the VM by the agent (tag ``overcast-exit``), which then deallocates
  its VM; the backend deletes the gang once it has delivered the outcome. A VM gone without that tag
  was lost (see ``azure_gangs``).
- **Stop.** Tag the gang ``overcast-stop``; the agent sees it in the instance metadata service and
  sends the job SIGTERM. Wait up to the grace period for the nodes to end, then delete the VMs.
- **Crash safety.** What runs is read from ARM by tag (``active()``). Local state
  (``$OVERCAST_HOME/azure/<name>/acked.json``): the acknowledged events and the gangs launched, because
  ARM forgets a deleted VM at once and a gang evicted whole must still be reported lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

from overcast.backends.azure_client import AzureApiError, AzureSettings, add_tags, call, compute_client
from overcast.backends.azure_customdata import custom_data
from overcast.backends.azure_gangs import Gang, group, provisioning
from overcast.backends.azure_vmspec import gang_name, group_body, vm_body, vm_name
from overcast.backends.base import (
    Allocation,
    BackendEvent,
    EventKind,
    LaunchRequest,
    ProviderDown,
)
from overcast.backends.local_runner import write_json_atomic
from overcast.catalog.offer import Offer
from overcast.catalog.pools import offer_pools
from overcast.placement.pool import Health, Pool
from overcast.store.engine import overcast_home

NO_AGENT = "the node agent never started (does the image have python3 and overcast? see the boot diagnostics)"
STOP_POLL_SECONDS = 0.2  # how often stop() looks whether the gang has ended within its grace period


class AzureBackend:
    """Backend protocol for one Azure subscription + resource group + region (``azure:<name>``)."""

    def __init__(
        self,
        settings: AzureSettings,
        *,
        home: Path | None = None,
        offers: list[Offer] | None = None,
        client: Any = None,
        credential: Any = None,
    ) -> None:
        if settings.max_nodes < 1 or not settings.vm_sizes:
            raise ValueError(f"azure {settings.name!r}: needs vm_sizes and max_nodes >= 1")
        self.settings = settings
        self.name = f"azure:{settings.name}"
        self.compute = client if client is not None else compute_client(settings, credential)
        if offers is None:
            from overcast.catalog.load import load_offers

            offers = load_offers()
        self._pools = {p.id: p for p in self._catalog_pools(offers)}
        self.dir = (home or overcast_home()) / "azure" / settings.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._unacked: list[tuple[str, str]] = []  # (what, gang key) delivered by the last poll

    # -- pools --------------------------------------------------------------------------------------

    def _catalog_pools(self, offers: list[Offer]) -> list[Pool]:
        s = self.settings
        sizes = {v.lower(): v for v in s.vm_sizes}
        mine = [
            o
            for o in offers
            if o.provider == "azure" and o.region == s.region and o.instance_type.lower() in sizes
        ]
        missing = sorted(set(sizes) - {o.instance_type.lower() for o in mine})
        if missing:
            raise ValueError(f"azure {s.name!r}: no catalog offer for {', '.join(missing)} in {s.region}")
        if s.zones:  # the catalog prices Azure per region: the same offer in each configured zone
            mine = [dataclasses.replace(o, zone=z) for o in mine for z in s.zones]
        pools = [p for p in offer_pools(mine) if p.purchase.value in s.purchases]
        for pool in pools:
            pool.capacity_nodes = s.max_nodes
            pool.backend = self.name
            pool.labels = {"azure": "true"}
        return pools

    def pools(self) -> list[Pool]:
        try:
            used: dict[str, int] = {}
            for gang in self._gangs():
                used[gang.pool_id] = used.get(gang.pool_id, 0) + len(gang.live)
            health = Health.OK
        except ProviderDown:
            used, health = {}, Health.DOWN
        cap = self.settings.max_nodes
        return [
            dataclasses.replace(
                p, used_nodes=min(used.get(p.id, 0), cap), health=health, labels=dict(p.labels)
            )
            for p in self._pools.values()
        ]

    # -- launch -------------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> Allocation:
        pool = self._pools.get(request.pool.id)
        if pool is None:
            raise ValueError(f"pool {request.pool.id} does not belong to backend {self.name}")
        key = f"{request.job_id}--{request.attempt}"
        with self._lock:
            existing = self._gang(request.job_id, request.attempt)
            if existing is not None and len(existing.live) == request.num_nodes:  # a replayed apply
                return self._allocation(existing)
            state = self._state()
            state["launched"][key] = request.num_nodes  # before any PUT: a crash mid-launch is tracked
            self._save(state)
            names = [
                vm_name(self.settings.owner, request.job_id, request.attempt, r)
                for r in range(request.num_nodes)
            ]
            data = custom_data(self.settings, request)
            vms = self.compute.virtual_machines
            rg = self.settings.resource_group
            try:
                group_id = self._create_group(request, pool) if request.num_nodes > 1 else None
                bodies = [vm_body(self.settings, request, pool, r, data, group_id) for r in range(len(names))]
                # in parallel: creating a GPU VM takes minutes on Azure
                pollers = [
                    call("create VM", vms.begin_create_or_update, rg, name, body)
                    for name, body in zip(names, bodies, strict=True)
                ]
                for poller in pollers:
                    call("create VM", poller.result)
            except Exception:
                self._roll_back(request, names)  # all nodes or none
                raise
            return Allocation(request.job_id, request.attempt, self.name, handle=",".join(names))

    def _roll_back(self, request: LaunchRequest, names: list[str]) -> None:
        """Delete every VM of a failed launch (one that failed allocation exists too, in state Failed)."""
        vms, rg = self.compute.virtual_machines, self.settings.resource_group
        pollers = []
        for name in names:  # best effort: whatever survives is deleted by the next poll's clean-up
            with contextlib.suppress(Exception):
                pollers.append(vms.begin_delete(rg, name))
        for poller in pollers:
            with contextlib.suppress(Exception):
                poller.result()
        state, key = self._state(), f"{request.job_id}--{request.attempt}"
        if key not in state["stopped"]:  # whatever survives (a VM, the group): the poll's clean-up
            state["stopped"].append(key)
        with contextlib.suppress(Exception):
            if self._gang(request.job_id, request.attempt) is None:
                self._drop(state, key, request.num_nodes)
        self._save(state)

    def _create_group(self, request: LaunchRequest, pool: Pool) -> str:
        """The gang's proximity placement group (one network spine), made before its VMs."""
        name = gang_name(self.settings.owner, request.job_id, request.attempt)
        groups = self.compute.proximity_placement_groups
        made = call(
            "create PPG",
            groups.create_or_update,
            self.settings.resource_group,
            name,
            group_body(self.settings, pool),
        )
        return str(made.id)

    def _drop(self, state: dict[str, Any], key: str, nodes: int) -> None:
        """Forget a gang whose VMs are all gone, once its placement group is deleted too."""
        if nodes > 1:
            job_id, _, attempt = key.rpartition("--")
            name = gang_name(self.settings.owner, job_id, int(attempt))
            call(
                "delete PPG",
                self.compute.proximity_placement_groups.delete,
                self.settings.resource_group,
                name,
            )
        state["launched"].pop(key, None)

    # -- stop, poll, active -------------------------------------------------------------------------

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        """Ask the agents to SIGTERM the job (tag ``overcast-stop``), wait up to the grace period for the
        nodes to end, then delete the gang's VMs."""
        with self._lock:  # only the state file: polls and other stops go on while this one waits
            state = self._state()
            key = f"{job_id}--{attempt}"
            if key not in state["stopped"]:
                state["stopped"].append(key)
                self._save(state)
        gang = self._gang(job_id, attempt)
        if gang is None:
            return
        if grace_seconds > 0 and gang.live:
            for vm in gang.live:
                with contextlib.suppress(AzureApiError):  # gone since the list: nothing to ask
                    self._tag(vm, {"overcast-stop": "1"})
            deadline = time.monotonic() + grace_seconds
            while time.monotonic() < deadline:
                time.sleep(STOP_POLL_SECONDS)
                gang = self._gang(job_id, attempt)
                if gang is None or not gang.live:
                    break
        if gang is not None:
            self._delete(gang)

    def poll(self) -> list[BackendEvent]:
        with self._lock:
            state = self._state()
            for what, key in self._unacked:  # the loop handled last poll's events: acknowledge them
                if key not in state[what]:
                    state[what].append(key)
            self._unacked = []
            gangs = self._gangs(state)
            events: list[BackendEvent] = []
            now = time.time()
            for gang in gangs:
                if gang.key in state["stopped"] or gang.key in state["reported"] or gang.stop_requested:
                    self._delete(gang, ended_only=gang.key not in state["stopped"])
                    if not gang.vms and gang.key in state["launched"]:
                        self._drop(state, gang.key, gang.nodes)
                    continue
                event = gang.terminal_event(now)
                if event is not None:
                    events.append(event)
                    self._unacked.append(("reported", gang.key))
                elif gang.all_running() and gang.key not in state["started"]:
                    events.append(BackendEvent(EventKind.STARTED, gang.job_id, gang.attempt, now))
                    self._unacked.append(("started", gang.key))
                elif self._agent_missing(gang, now):
                    # a broken image or custom data: without an agent nothing would ever end these VMs
                    events.append(BackendEvent(EventKind.FAILED, gang.job_id, gang.attempt, now, NO_AGENT))
                    self._unacked.append(("reported", gang.key))
            visible = {gang.key for gang in gangs}
            for what in ("started", "reported", "stopped"):
                state[what] = [key for key in state[what] if key in visible]
            self._save(state)
            return events

    def active(self) -> list[tuple[str, int]]:
        """Gangs with a live VM, and ended or lost ones whose outcome has not been delivered yet."""
        with self._lock:
            state = self._state()
            done = set(state["stopped"]) | set(state["reported"])
            return [
                (gang.job_id, gang.attempt)
                for gang in self._gangs(state)
                if gang.live or not (gang.key in done or gang.stop_requested)
            ]

    def redeliver(self) -> None:
        """The caller could not handle the last poll's events: the next poll reports them again."""
        with self._lock:
            self._unacked = []

    # -- internals ----------------------------------------------------------------------------------

    def _gangs(self, state: dict[str, Any] | None = None) -> list[Gang]:
        launched = (state or self._state())["launched"]
        return group(self._list(), self.settings.owner, launched)

    def _gang(self, job_id: str, attempt: int) -> Gang | None:
        found = [
            g for g in group(self._list(), self.settings.owner) if (g.job_id, g.attempt) == (job_id, attempt)
        ]
        return found[0] if found else None

    def _list(self) -> list[Any]:
        rg = self.settings.resource_group
        return call("list VMs", lambda: list(self.compute.virtual_machines.list(rg)))

    def _tag(self, vm: Any, extra: dict[str, str]) -> None:
        call("tag VM", add_tags, self.compute, self.settings.resource_group, vm.name, extra)

    def _delete(self, gang: Gang, ended_only: bool = False) -> None:
        """Delete the gang's VMs (all, or only those that ended or failed) without waiting: ARM carries on
        and the next poll sees them gone. A VM already being deleted is left alone."""
        vms, rg = self.compute.virtual_machines, self.settings.resource_group
        live = {vm.name for vm in gang.live}
        for vm in gang.vms:
            if provisioning(vm) == "Deleting" or (ended_only and vm.name in live):
                continue
            call("delete VM", vms.begin_delete, rg, vm.name, polling=False)

    def _agent_missing(self, gang: Gang, now: float) -> bool:
        since = gang.agent_missing_since()
        return since is not None and now - since > self.settings.agent_timeout_seconds

    def _allocation(self, gang: Gang) -> Allocation:
        names = ",".join(vm.name for vm in gang.live)
        return Allocation(gang.job_id, gang.attempt, self.name, handle=names)

    def _state(self) -> dict[str, Any]:
        try:
            found = json.loads((self.dir / "acked.json").read_text())
        except (OSError, ValueError):
            found = {}
        state: dict[str, Any] = {
            what: list(found.get(what, [])) for what in ("started", "reported", "stopped")
        }
        state["launched"] = dict(found.get("launched", {}))
        return state

    def _save(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.dir / "acked.json", state)
